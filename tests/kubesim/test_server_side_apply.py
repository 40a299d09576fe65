"""Server-side apply with field ownership (found against the real API server: dropped fields stayed).

Over real HTTP, as kubectl --server-side and our spawner send it.
"""

import json

import aiohttp
import pytest

from apex_hub.kubesim import managed

APPLY = {"Content-Type": "application/apply-patch+yaml"}
URL = "/api/v1/namespaces/default/configmaps/cfg"


async def apply(sim, body, manager, force=False, url=URL):
    query = f"?fieldManager={manager}" + ("&force=true" if force else "")
    async with aiohttp.ClientSession() as s:
        async with s.patch(sim.url + url + query, data=json.dumps(body), headers=APPLY) as r:
            return r.status, await r.json()


def cfg(labels=None, data=None):
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", **({"labels": labels} if labels is not None else {})},
        **({"data": data} if data is not None else {}),
    }


async def test_apply_removes_fields_the_manager_no_longer_sends(sim):
    status, made = await apply(sim, cfg({"a": "1", "b": "2"}, {"x": "1", "y": "2"}), "hub")
    assert status == 201
    status, out = await apply(sim, cfg({"a": "1"}, {"x": "1"}), "hub")
    assert status == 200
    assert out["metadata"]["labels"] == {"a": "1"} and out["data"] == {"x": "1"}
    status, out = await apply(sim, cfg(), "hub")
    assert status == 200 and "labels" not in out["metadata"]
    assert out["metadata"]["uid"] == made["metadata"]["uid"]


async def test_other_managers_fields_are_kept(sim):
    await apply(sim, cfg({"a": "1"}), "hub")
    status, _ = await apply(sim, cfg({"c": "3"}), "operator")
    assert status == 200
    _, out = await apply(sim, cfg({}), "hub")  # hub drops "a", never owned "c"
    assert out["metadata"]["labels"] == {"c": "3"}


async def test_shared_field_stays_until_its_last_manager_drops_it(sim):
    await apply(sim, cfg({"a": "1"}), "hub")
    assert (await apply(sim, cfg({"a": "1"}), "operator"))[0] == 200  # same value: shared, no conflict
    _, out = await apply(sim, cfg({}), "hub")
    assert out["metadata"]["labels"] == {"a": "1"}
    _, out = await apply(sim, cfg({}), "operator")
    assert "labels" not in out["metadata"]


async def test_conflict_between_managers_is_409_unless_forced(sim):
    await apply(sim, cfg({"a": "1"}, {"x": "1"}), "hub")
    status, body = await apply(sim, cfg({"a": "2"}), "operator")
    assert status == 409 and body["reason"] == "Conflict"
    assert body["message"] == 'Apply failed with 1 conflict: conflict with "hub": .metadata.labels.a'
    assert body["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "hub"', "field": ".metadata.labels.a"}
    ]
    status, body = await apply(sim, cfg({"a": "2"}, {"x": "2"}), "operator")
    assert status == 409 and body["message"] == (
        'Apply failed with 2 conflicts: conflicts with "hub":\n- .data.x\n- .metadata.labels.a'
    )
    status, out = await apply(sim, cfg({"a": "2"}), "operator", force=True)
    assert status == 200 and out["metadata"]["labels"] == {"a": "2"}
    _, out = await apply(sim, cfg(data={"x": "1"}), "hub")  # "a" now belongs to operator: kept
    assert out["metadata"]["labels"] == {"a": "2"}


async def test_a_non_apply_write_takes_the_fields_it_changes(sim, v1):
    await apply(sim, cfg({"a": "1", "b": "1"}), "hub")
    await v1.patch_namespaced_config_map("cfg", "default", {"metadata": {"labels": {"a": "edited"}}})
    _, out = await apply(sim, cfg({}), "hub")
    assert out["metadata"]["labels"] == {"a": "edited"}  # "b" was still hub's


async def test_keyed_list_elements_dropped_from_apply_are_removed(sim):
    def deployment(*env):
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "image": "nginx:1.27",
                                **({"env": [{"name": n, "value": "1"} for n in env]} if env else {}),
                            }
                        ]
                    },
                },
            },
        }

    url = "/apis/apps/v1/namespaces/default/deployments/web"
    assert (await apply(sim, deployment("A", "B"), "hub", url=url))[0] == 201
    _, out = await apply(sim, deployment("A"), "hub", url=url)
    assert [e["name"] for e in out["spec"]["template"]["spec"]["containers"][0]["env"]] == ["A"]
    _, out = await apply(sim, deployment(), "hub", url=url)
    assert "env" not in out["spec"]["template"]["spec"]["containers"][0]


async def test_apply_without_field_manager_is_invalid(sim):
    async with aiohttp.ClientSession() as s:
        async with s.patch(sim.url + URL, data=json.dumps(cfg()), headers=APPLY) as r:
            assert r.status == 422
            body = await r.json()
            assert body["message"] == (
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                "is required for apply patch"
            )
            assert body["details"]["causes"][0]["field"] == "fieldManager"


async def test_recreated_object_starts_without_owners(sim, v1):
    await apply(sim, cfg({"a": "1"}), "hub")
    await v1.delete_namespaced_config_map("cfg", "default")
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "cfg", "labels": {"a": "9"}}})
    status, out = await apply(sim, cfg({"b": "2"}), "operator")  # nobody owns "a" any more: no conflict
    assert status == 200 and out["metadata"]["labels"] == {"a": "9", "b": "2"}


# -- the pure functions ---------------------------------------------------------------------


def test_field_set_and_removal():
    config = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
        "spec": {"containers": [{"name": "c", "args": ["1", "2"]}]},
    }
    fields = managed.field_set(config)
    c = ("k", "name", "c")
    assert fields == {
        ("metadata", "labels", "a"),
        ("metadata", "finalizers", ("v", '"x"')),
        ("spec", "containers", c),
        ("spec", "containers", c, "name"),
        ("spec", "containers", c, "args"),
    }
    live = json.loads(json.dumps(config))
    managed.remove_fields(live, {("spec", "containers", c, "args"), ("metadata", "labels", "a")}, set())
    assert live["spec"]["containers"] == [{"name": "c"}] and "labels" not in live["metadata"]
    managed.remove_fields(live, {("spec", "containers", c)}, {("spec", "containers", c, "name")})
    assert live["spec"]["containers"] == [{"name": "c"}]  # still owned inside: kept


@pytest.mark.parametrize(
    "path, text",
    [
        (("metadata", "labels", "a"), ".metadata.labels.a"),
        (("spec", "containers", ("k", "name", "c"), "image"), '.spec.containers[name="c"].image'),
    ],
)
def test_render_path(path, text):
    assert managed.render_path(path) == text
