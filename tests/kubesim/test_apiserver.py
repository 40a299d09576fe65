"""Conformance of the kubesim API server, through kubernetes_asyncio over real HTTP."""

import asyncio
import json

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.rest import ApiException

from apex_hub.kubesim import Fault, KubeSim
from tests.helpers.wait import until


def pod(name, labels=None, **spec):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], **spec},
    }


def cm(name, data=None, labels=None):
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data or {"k": "v"}}


async def raw(sim, method, path, **kw):
    async with aiohttp.ClientSession() as s:
        async with s.request(method, sim.url + path, **kw) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text and text[0] in "{[" else text), r.headers


async def new_ns(v1, name):
    await v1.create_namespace({"metadata": {"name": name}})
    return name


# -- discovery ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api", "/api/", "/apis", "/apis/", "/version", "/version/"])
async def test_discovery_roots(sim, path):
    status, body, _ = await raw(sim, "GET", path)
    assert status == 200
    assert body["kind" if "version" not in path else "gitVersion"]


async def test_discovery_lists_every_required_resource(sim, api):
    core = await client.CoreV1Api(api).get_api_resources()
    names = {r.name for r in core.resources}
    assert {
        "namespaces",
        "pods",
        "configmaps",
        "secrets",
        "services",
        "endpoints",
        "events",
        "serviceaccounts",
        "persistentvolumeclaims",
        "resourcequotas",
        "limitranges",
        "pods/status",
        "pods/log",
    } <= names
    groups = {g.name: g for g in (await client.ApisApi(api).get_api_versions()).groups}
    for group, version, plural in [
        ("rbac.authorization.k8s.io", "v1", "roles"),
        ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
        ("networking.k8s.io", "v1", "networkpolicies"),
        ("networking.k8s.io", "v1", "ingresses"),
        ("apps", "v1", "deployments"),
        ("batch", "v1", "jobs"),
    ]:
        assert groups[group].preferred_version.version == version
        status, body, _ = await raw(sim, "GET", f"/apis/{group}/{version}")
        assert plural in {r["name"] for r in body["resources"]}
    version = await client.VersionApi(api).get_code()
    assert version.major == "1"


# -- create / get / list ------------------------------------------------------------------


async def test_create_sets_server_metadata(sim, v1):
    before = sim.store.rv
    created = await v1.create_namespaced_config_map("default", cm("one"))
    m = created.metadata
    assert m.namespace == "default" and m.uid and m.creation_timestamp and m.generation == 1
    assert int(m.resource_version) == before + 1
    second = await v1.create_namespaced_config_map("default", cm("two"))
    assert int(second.metadata.resource_version) == int(m.resource_version) + 1  # one global counter
    got = await v1.read_namespaced_config_map("one", "default")
    assert got.data == {"k": "v"} and got.metadata.uid == m.uid


async def test_generate_name_and_dry_run(sim, v1):
    made = await v1.create_namespaced_config_map(
        "default", {"metadata": {"generateName": "gen-"}, "data": {}}
    )
    assert made.metadata.name.startswith("gen-") and len(made.metadata.name) == 9
    dry = await v1.create_namespaced_config_map("default", cm("dry"), dry_run="All")
    assert dry.metadata.name == "dry"
    with pytest.raises(ApiException) as e:
        await v1.read_namespaced_config_map("dry", "default")
    assert e.value.status == 404


async def test_namespace_in_body_must_match_url(v1):
    body = cm("x")
    body["metadata"]["namespace"] = "kube-system"
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_config_map("default", body)
    assert e.value.status == 400 and "does not match the namespace" in e.value.body


async def test_list_has_collection_resource_version_and_pages(sim, v1):
    for i in range(5):
        await v1.create_namespaced_config_map("default", cm(f"p{i}"))
    full = await v1.list_namespaced_config_map("default")
    assert int(full.metadata.resource_version) == sim.store.rv
    page = await v1.list_namespaced_config_map("default", limit=2)
    names = [i.metadata.name for i in page.items]
    while page.metadata._continue:
        page = await v1.list_namespaced_config_map("default", limit=2, _continue=page.metadata._continue)
        names += [i.metadata.name for i in page.items]
    assert names == ["p0", "p1", "p2", "p3", "p4"]
    again = await v1.list_namespaced_config_map(
        "default", resource_version=full.metadata.resource_version, resource_version_match="NotOlderThan"
    )
    assert len(again.items) == 5


async def test_all_namespaces_list(v1):
    await new_ns(v1, "a1")
    await v1.create_namespaced_config_map("a1", cm("x"))
    await v1.create_namespaced_config_map("default", cm("x"))
    items = (await v1.list_config_map_for_all_namespaces()).items
    assert {(i.metadata.namespace, i.metadata.name) for i in items} >= {("a1", "x"), ("default", "x")}


# -- errors --------------------------------------------------------------------------------


async def test_not_found_and_already_exists_are_status_objects(v1):
    with pytest.raises(ApiException) as e:
        await v1.read_namespaced_pod("nope", "default")
    status = json.loads(e.value.body)
    assert e.value.status == 404 and status["kind"] == "Status" and status["reason"] == "NotFound"
    assert status["message"] == 'pods "nope" not found' and status["details"]["name"] == "nope"
    await v1.create_namespaced_config_map("default", cm("dup"))
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_config_map("default", cm("dup"))
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "AlreadyExists"


async def test_missing_namespace_is_404(v1):
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_config_map("ghost", cm("x"))
    assert e.value.status == 404 and json.loads(e.value.body)["message"] == 'namespaces "ghost" not found'


@pytest.mark.parametrize("name", ["Alice", "a_b", "-x", "x" * 254, "a..b"])
async def test_invalid_names_are_422(v1, name):
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_config_map("default", cm(name))
    body = json.loads(e.value.body)
    assert e.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"


async def test_namespace_names_are_dns_labels(v1):
    with pytest.raises(ApiException) as e:
        await v1.create_namespace({"metadata": {"name": "a.b"}})  # a subdomain, not a label
    assert e.value.status == 422
    with pytest.raises(ApiException) as e:
        await v1.create_namespace({"metadata": {"name": "n" * 64}})
    assert e.value.status == 422 and "63 characters" in e.value.body


async def test_required_fields_and_schema_are_checked(v1):
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": {"containers": []}})
    assert e.value.status == 422 and "spec.containers" in e.value.body
    bad = pod("typo")
    bad["spec"]["containers"][0]["imagee"] = "x"
    with pytest.raises(ApiException) as e:  # caught by the real OpenAPI schema (kubernetes-validate)
        await v1.create_namespaced_pod("default", bad)
    assert e.value.status == 422 and "imagee" in e.value.body


async def test_configmap_over_one_mebibyte_is_refused(v1):
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_config_map("default", cm("big", {"f": "x" * (1024 * 1024 + 1)}))
    assert e.value.status == 422 and "must have at most 1048576 bytes" in e.value.body


async def test_bad_label_selector_is_400(v1):
    with pytest.raises(ApiException) as e:
        await v1.list_namespaced_pod("default", label_selector="a in b")
    assert e.value.status == 400


# -- update / patch -----------------------------------------------------------------------


async def test_replace_checks_resource_version(v1):
    made = await v1.create_namespaced_config_map("default", cm("r"))
    made.data = {"k": "new"}
    updated = await v1.replace_namespaced_config_map("r", "default", made)
    assert updated.data == {"k": "new"}
    assert int(updated.metadata.resource_version) > int(made.metadata.resource_version)
    made.data = {"k": "stale"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as e:
        await v1.replace_namespaced_config_map("r", "default", made)
    body = json.loads(e.value.body)
    assert e.value.status == 409 and body["reason"] == "Conflict" and "has been modified" in body["message"]


async def test_noop_update_keeps_resource_version_and_generation_counts_spec_changes(sim, api):
    apps = client.AppsV1Api(api)
    dep = {
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "x:1"}]},
            },
        },
    }
    made = await apps.create_namespaced_deployment("default", dep)
    same = await apps.patch_namespaced_deployment("d", "default", {"metadata": {"labels": {}}})
    assert same.metadata.resource_version == made.metadata.resource_version
    labelled = await apps.patch_namespaced_deployment("d", "default", {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1
    scaled = await apps.patch_namespaced_deployment("d", "default", {"spec": {"replicas": 3}})
    assert scaled.metadata.generation == 2


async def test_merge_patch(sim, api):
    v1 = client.CoreV1Api(api)
    await v1.create_namespaced_config_map("default", cm("m", {"a": "1", "b": "2"}))
    api.set_default_header("Content-Type", "application/merge-patch+json")
    status, body, _ = await raw(
        sim,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/m",
        data=json.dumps({"data": {"a": None, "c": "3"}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert status == 200 and body["data"] == {"b": "2", "c": "3"}


async def test_json_patch_and_its_errors(sim, v1):
    await v1.create_namespaced_config_map("default", cm("j", {"a": "1"}))
    ops = [{"op": "add", "path": "/data/b", "value": "2"}, {"op": "remove", "path": "/data/a"}]
    patched = await v1.patch_namespaced_config_map("j", "default", ops)  # a list goes as json-patch
    assert patched.data == {"b": "2"}
    status, body, _ = await raw(
        sim,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/j",
        data=json.dumps([{"op": "test", "path": "/data/b", "value": "9"}]),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert status == 422 and body["kind"] == "Status"


async def test_strategic_merge_patch_merges_containers_env_volumes_by_key(v1):
    p = pod("s")
    p["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    p["spec"]["containers"].append({"name": "side", "image": "busybox:1.36"})
    p["spec"]["volumes"] = [{"name": "v1", "emptyDir": {}}]
    await v1.create_namespaced_pod("default", p)
    patched = await v1.patch_namespaced_pod(
        "s",
        "default",
        {
            "spec": {
                "containers": [
                    {"name": "c", "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}]}
                ],
                "volumes": [{"name": "v2", "emptyDir": {}}],
            }
        },
    )
    main = patched.spec.containers[0]
    assert [c.name for c in patched.spec.containers] == ["c", "side"]
    assert main.image == "busybox:1.36"
    assert {e.name: e.value for e in main.env} == {"A": "1", "B": "two", "C": "3"}
    assert {v.name for v in patched.spec.volumes} == {"v1", "v2"}


async def test_server_side_apply_creates_then_updates(sim):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}}
    url = "/api/v1/namespaces/default/configmaps/ssa?fieldManager=test"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    status, made, _ = await raw(sim, "PATCH", url, data=json.dumps(body), headers=headers)
    assert status in (200, 201) and made["data"] == {"a": "1"}
    body["data"]["b"] = "2"
    status, updated, _ = await raw(sim, "PATCH", url, data=json.dumps(body), headers=headers)
    assert updated["data"] == {"a": "1", "b": "2"} and updated["metadata"]["uid"] == made["metadata"]["uid"]


async def test_status_subresource_is_separate(sim, v1):
    await v1.create_namespaced_pod("default", pod("st"))
    cur = await v1.read_namespaced_pod("st", "default")
    patched = await v1.patch_namespaced_pod("st", "default", {"status": {"phase": "Failed"}})
    assert patched.status.phase == cur.status.phase  # the main resource ignores status
    patched = await v1.patch_namespaced_pod_status("st", "default", {"status": {"message": "hi"}})
    assert patched.status.message == "hi"


# -- delete -------------------------------------------------------------------------------


async def test_delete_and_deletecollection_by_label(v1):
    for i, team in enumerate(["a", "a", "b"]):
        await v1.create_namespaced_config_map("default", cm(f"d{i}", labels={"team": team}))
    await v1.delete_collection_namespaced_config_map("default", label_selector="team=a")
    left = [i.metadata.name for i in (await v1.list_namespaced_config_map("default")).items]
    assert "d2" in left and "d0" not in left and "d1" not in left
    await v1.delete_namespaced_config_map("d2", "default")
    with pytest.raises(ApiException) as e:
        await v1.delete_namespaced_config_map("d2", "default")
    assert e.value.status == 404


async def test_delete_precondition_and_dry_run(v1):
    made = await v1.create_namespaced_config_map("default", cm("pre"))
    with pytest.raises(ApiException) as e:
        await v1.delete_namespaced_config_map("pre", "default", body={"preconditions": {"uid": "other"}})
    assert e.value.status == 409
    await v1.delete_namespaced_config_map("pre", "default", dry_run="All")
    assert (await v1.read_namespaced_config_map("pre", "default")).metadata.uid == made.metadata.uid


async def test_owner_references_are_garbage_collected(v1):
    owner = await v1.create_namespaced_config_map("default", cm("owner"))
    ref = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]
    for name in ("dep1", "dep2"):
        body = cm(name)
        body["metadata"]["ownerReferences"] = ref
        await v1.create_namespaced_config_map("default", body)
    orphan = cm("orph-owner")
    orphan_owner = await v1.create_namespaced_config_map("default", orphan)
    kept = cm("kept")
    kept["metadata"]["ownerReferences"] = [{**ref[0], "name": "orph-owner", "uid": orphan_owner.metadata.uid}]
    await v1.create_namespaced_config_map("default", kept)
    await v1.delete_namespaced_config_map("owner", "default", propagation_policy="Background")
    await v1.delete_namespaced_config_map("orph-owner", "default", propagation_policy="Orphan")
    names = {i.metadata.name for i in (await v1.list_namespaced_config_map("default")).items}
    assert "dep1" not in names and "dep2" not in names and "kept" in names
    assert not (await v1.read_namespaced_config_map("kept", "default")).metadata.owner_references


async def test_finalizers_hold_deletion_until_removed(v1):
    body = cm("fin")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await v1.create_namespaced_config_map("default", body)
    await v1.delete_namespaced_config_map("fin", "default")
    held = await v1.read_namespaced_config_map("fin", "default")
    assert held.metadata.deletion_timestamp is not None
    await v1.patch_namespaced_config_map("fin", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as e:
        await v1.read_namespaced_config_map("fin", "default")
    assert e.value.status == 404


async def test_namespace_deletion_terminates_and_cascades(sim, v1):
    await new_ns(v1, "doomed")
    await v1.create_namespaced_config_map("doomed", cm("x"))
    await v1.create_namespaced_pod("doomed", pod("p"))
    await v1.delete_namespace("doomed")
    ns = await v1.read_namespace("doomed")
    assert ns.status.phase == "Terminating" and ns.metadata.deletion_timestamp
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_config_map("doomed", cm("late"))
    assert e.value.status == 403 and "being terminated" in e.value.body

    async def gone():  # after namespace_deletion_delay (1 s) at the least
        try:
            await v1.read_namespace("doomed")
        except ApiException as err:
            assert err.status == 404
            return True
        return False

    await until(gone, interval=0.05)
    assert not (await v1.list_config_map_for_all_namespaces(field_selector="metadata.namespace=doomed")).items
    assert not (await v1.list_pod_for_all_namespaces(field_selector="metadata.namespace=doomed")).items


async def test_new_namespace_gets_default_service_account(v1):
    await new_ns(v1, "fresh")
    sa = await v1.read_namespaced_service_account("default", "fresh")
    assert sa.metadata.namespace == "fresh"
    ns = await v1.read_namespace("fresh")
    assert ns.status.phase == "Active" and ns.metadata.labels["kubernetes.io/metadata.name"] == "fresh"


# -- selectors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "selector,expected",
    [
        ("tier=web", {"w1", "w2"}),
        ("tier==web", {"w1", "w2"}),
        ("tier!=web", {"d1", "none"}),
        ("tier in (web,db)", {"w1", "w2", "d1"}),
        ("tier notin (web)", {"d1", "none"}),
        ("tier", {"w1", "w2", "d1"}),
        ("!tier", {"none"}),
        ("tier=web,env=prod", {"w1"}),
    ],
)
async def test_label_selectors(v1, selector, expected):
    for name, labels in [
        ("w1", {"tier": "web", "env": "prod"}),
        ("w2", {"tier": "web"}),
        ("d1", {"tier": "db"}),
        ("none", {}),
    ]:
        await v1.create_namespaced_config_map("default", cm(name, labels=labels))
    got = {
        i.metadata.name
        for i in (await v1.list_namespaced_config_map("default", label_selector=selector)).items
    }
    assert got == expected


async def test_field_selectors(sim, v1):
    await new_ns(v1, "fs")
    await v1.create_namespaced_pod("fs", pod("a"))
    await v1.create_namespaced_pod("default", pod("b"))
    by_name = await v1.list_pod_for_all_namespaces(field_selector="metadata.name=a")
    assert [p.metadata.name for p in by_name.items] == ["a"]
    by_ns = await v1.list_pod_for_all_namespaces(field_selector="metadata.namespace!=fs")
    assert "a" not in {p.metadata.name for p in by_ns.items}

    async def both_running():
        running = await v1.list_pod_for_all_namespaces(
            field_selector="status.phase=Running,spec.nodeName=kubesim-node"
        )
        return running.items if len(running.items) >= 2 else None

    assert {p.metadata.name for p in await until(both_running)} == {"a", "b"}
    events = await v1.list_namespaced_event(
        "fs", field_selector="involvedObject.kind=Pod,involvedObject.name=a"
    )
    assert events.items and all(e.involved_object.name == "a" for e in events.items)


# -- watch --------------------------------------------------------------------------------


async def collect(gen, n):
    """The first ``n`` events of a watch stream (fewer if the server ends it first: its
    timeoutSeconds, which the tests set far above what the events take)."""
    out = []
    async for event in gen:
        out.append(event)
        if len(out) >= n:
            break
    return out


@pytest.mark.parametrize("flag", ["true", "True", "1"])
async def test_watch_flag_spellings(sim, flag):
    async with aiohttp.ClientSession() as s:
        async with s.get(
            f"{sim.url}/api/v1/namespaces/default/configmaps?watch={flag}&timeoutSeconds=120"
        ) as r:
            assert r.status == 200
            async with aiohttp.ClientSession() as s2:
                await s2.post(f"{sim.url}/api/v1/namespaces/default/configmaps", json=cm("w"))
            line = await r.content.readline()  # the stream stays open until the test leaves
            event = json.loads(line)
            assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "w"


async def test_watch_resumes_after_resource_version(v1):
    await v1.create_namespaced_config_map("default", cm("before"))
    listed = await v1.list_namespaced_config_map("default")
    await v1.create_namespaced_config_map("default", cm("after1"))
    await v1.patch_namespaced_config_map("after1", "default", {"data": {"k": "changed"}})
    await v1.delete_namespaced_config_map("before", "default")
    w = watch.Watch()
    events = await collect(
        w.stream(
            v1.list_namespaced_config_map,
            "default",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=120,
        ),
        3,
    )
    await w.close()
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "after1"),
        ("MODIFIED", "after1"),
        ("DELETED", "before"),
    ]


async def test_watch_without_version_starts_with_current_objects(v1):
    await v1.create_namespaced_config_map("default", cm("existing"))
    w = watch.Watch()
    events = await collect(w.stream(v1.list_namespaced_config_map, "default", timeout_seconds=120), 1)
    await w.close()
    assert events[0]["type"] == "ADDED" and events[0]["object"].metadata.name == "existing"


async def test_watch_too_old_version_is_410_gone(sim, v1):
    await v1.create_namespaced_config_map("default", cm("x"))
    old = str(sim.store.rv)
    await v1.create_namespaced_config_map("default", cm("y"))
    sim.store.compact()
    status, _, _ = await raw(
        sim, "GET", f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={old}"
    )
    assert status == 200  # a real API server reports it as an ERROR event in the stream
    w = watch.Watch()
    with pytest.raises(ApiException) as e:
        async for _ in w.stream(
            v1.list_namespaced_config_map, "default", resource_version=old, timeout_seconds=1
        ):
            pass
    await w.close()
    assert e.value.status == 410


async def test_watch_timeout_seconds_ends_the_stream(sim):
    loop = asyncio.get_running_loop()
    start = loop.time()
    status, body, _ = await raw(sim, "GET", "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1")
    assert status == 200 and body == ""
    assert loop.time() - start >= 0.9


async def test_watch_bookmarks():
    async with KubeSim(kubelet=None, bookmark_interval=0.1) as sim:
        async with aiohttp.ClientSession() as s:
            url = f"{sim.url}/api/v1/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=120"
            async with s.get(url) as r:
                event = json.loads(await r.content.readline())  # the first bookmark, after 0.1 s
    assert event["type"] == "BOOKMARK" and event["object"]["metadata"]["resourceVersion"] == str(sim.store.rv)


async def test_watch_with_selector_reports_transitions(sim, v1):
    await v1.create_namespaced_config_map("default", cm("t", labels={"sel": "no"}))
    rv = (await v1.list_namespaced_config_map("default")).metadata.resource_version
    await v1.patch_namespaced_config_map("t", "default", {"metadata": {"labels": {"sel": "yes"}}})
    await v1.patch_namespaced_config_map("t", "default", {"metadata": {"labels": {"sel": "no"}}})
    w = watch.Watch()
    events = await collect(
        w.stream(
            v1.list_namespaced_config_map,
            "default",
            label_selector="sel=yes",
            resource_version=rv,
            timeout_seconds=120,
        ),
        2,
    )
    await w.close()
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]


async def test_dropped_watch_ends_stream(sim):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{sim.url}/api/v1/pods?watch=1") as r:
            await until(lambda: list(sim.store.watchers()))  # the server has registered the watch
            assert sim.drop_watches() == 1
            rest = await r.content.read()  # ends, as the server closed the stream
    assert rest == b""


# -- events --------------------------------------------------------------------------------


async def test_pod_events_are_recorded(sim, v1):
    await v1.create_namespaced_pod("default", pod("ev"))

    async def reasons_once_started():
        events = (await v1.list_namespaced_event("default", field_selector="involvedObject.name=ev")).items
        reasons = [e.reason for e in sorted(events, key=lambda e: int(e.metadata.resource_version))]
        return reasons if "Started" in reasons else None

    reasons = await until(reasons_once_started)
    assert reasons[:1] == ["Scheduled"] and "Pulled" in reasons and "Started" in reasons


# -- faults and measurement ---------------------------------------------------------------


async def test_injected_500_once_then_success(sim, v1):
    sim.inject(verb="create", resource="configmaps", status=500)
    with pytest.raises(ApiException) as e:
        await v1.create_namespaced_config_map("default", cm("f"))
    assert e.value.status == 500 and json.loads(e.value.body)["reason"] == "InternalError"
    assert (await v1.create_namespaced_config_map("default", cm("f"))).metadata.name == "f"


async def test_injected_429_has_retry_after(sim):
    sim.inject(verb="list", resource="pods", status=429, retry_after=3)
    status, body, headers = await raw(sim, "GET", "/api/v1/pods")
    assert status == 429 and headers["Retry-After"] == "3" and body["details"]["retryAfterSeconds"] == 3


async def test_scripted_sequence(sim):
    sim.inject(Fault(verb="get", resource="namespaces", script=[500, None, 409]))
    statuses = [(await raw(sim, "GET", "/api/v1/namespaces/default"))[0] for _ in range(4)]
    assert statuses == [500, 200, 409, 200]


async def test_fault_rate_is_seeded_and_partial(sim):
    sim.inject(verb="get", resource="namespaces", status=503, rate=0.5, times=None)
    statuses = [(await raw(sim, "GET", "/api/v1/namespaces/default"))[0] for _ in range(40)]
    assert 5 < statuses.count(503) < 35 and statuses.count(200) + statuses.count(503) == 40


async def test_dropped_connection(sim):
    sim.inject(verb="list", resource="configmaps", status=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(b"GET /api/v1/configmaps HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert await reader.read() == b""  # closed, no response at all
    writer.close()
    assert (await raw(sim, "GET", "/api/v1/configmaps"))[0] == 200
    assert [r.status for r in sim.requests if r.verb == "list"] == [0, 200]


async def test_latency_and_slow_responses(sim):
    loop = asyncio.get_running_loop()
    sim.set_latency(0.2)
    start = loop.time()
    await raw(sim, "GET", "/api/v1/namespaces/default")
    assert loop.time() - start >= 0.2
    sim.set_latency(0)
    sim.inject(verb="get", resource="namespaces", status=None, delay=0.3)
    start = loop.time()
    status, _, _ = await raw(sim, "GET", "/api/v1/namespaces/default")
    assert status == 200 and loop.time() - start >= 0.3


async def test_request_log_counts_per_verb_and_resource(sim, v1):
    sim.reset_log()
    await v1.create_namespaced_config_map("default", cm("c1"))
    await v1.read_namespaced_config_map("c1", "default")
    await v1.list_namespaced_config_map("default")
    counts = sim.counts()
    assert (
        counts["create configmaps"] == 1 and counts["get configmaps"] == 1 and counts["list configmaps"] == 1
    )
    rec = next(r for r in sim.requests if r.verb == "create")
    assert rec.namespace == "default" and rec.status == 201


async def test_runtime_admin_endpoints(sim):
    status, _, _ = await raw(
        sim, "POST", "/kubesim/faults", json={"verb": "get", "resource": "namespaces", "status": 500}
    )
    assert status == 200
    assert (await raw(sim, "GET", "/api/v1/namespaces/default"))[0] == 500
    await raw(sim, "POST", "/kubesim/latency", json={"seconds": 0.01})
    assert sim.faults.latency == 0.01
    status, counts, _ = await raw(sim, "GET", "/kubesim/counts")
    assert counts["get namespaces"] == 1
    await raw(sim, "DELETE", "/kubesim/faults")
    assert not sim.faults.rules


# -- custom resources ---------------------------------------------------------------------


async def test_custom_resource_definition_is_served(sim, api):
    ext = client.ApiextensionsV1Api(api)
    await ext.create_custom_resource_definition(
        {
            "metadata": {"name": "workspaces.apex.esa.int"},
            "spec": {
                "group": "apex.esa.int",
                "scope": "Namespaced",
                "names": {"plural": "workspaces", "singular": "workspace", "kind": "Workspace"},
                "versions": [
                    {
                        "name": "v1alpha1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object"}},
                    }
                ],
            },
        }
    )
    custom = client.CustomObjectsApi(api)
    made = await custom.create_namespaced_custom_object(
        "apex.esa.int",
        "v1alpha1",
        "default",
        "workspaces",
        {
            "apiVersion": "apex.esa.int/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "ws"},
            "spec": {"x": 1},
        },
    )
    assert made["metadata"]["uid"]
    got = await custom.list_namespaced_custom_object("apex.esa.int", "v1alpha1", "default", "workspaces")
    assert [i["metadata"]["name"] for i in got["items"]] == ["ws"]
