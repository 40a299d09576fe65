"""Issue 14.1/14.2: one user never lands in another's namespace, nor in the hub's or a system one.

The attacks are played as an attacker would: a namespace that collides with the
attacker's (planted by hand, as a 32-bit hash preimage would have produced it), an
old spawner state that points at the victim's namespace, and user names that equal
the hub's or a system namespace.  Everything runs on kubesim over real HTTP.
"""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client
from tornado.web import HTTPError

from apex_hub.naming import legacy_user_namespace, user_namespace
from apex_hub.spawner import labels as L
from tests.helpers.spawner import make_spawner, obj

WRITES = ("create", "patch", "update", "delete", "deletecollection")


async def plant_namespace(sim, name, owner=None, managed=True, configmap=True):
    """A namespace made outside the hub (owner annotation optional), with a file in it."""
    meta = {"name": name, "labels": {}, "annotations": {}}
    if managed:
        meta["labels"][L.MANAGED_BY] = L.MANAGER
    if owner is not None:
        meta["annotations"][L.USERNAME_ANNOTATION] = owner
    async with sim.api_client() as api:
        v1 = client.CoreV1Api(api)
        await v1.create_namespace({"metadata": meta})
        if configmap:
            await v1.create_namespaced_config_map(
                name,
                {
                    "metadata": {
                        "name": "bashrc",
                        "labels": {
                            L.MANAGED_BY: L.MANAGER,
                            L.USER: "x",
                            L.SERVER: "default",
                            L.PERSIST: "false",
                        },
                    },
                    "data": {".bashrc": "the victim's file\n"},
                },
            )


def writes_in(sim, namespace):
    return [
        r
        for r in sim.requests
        if r.verb in WRITES
        and (r.namespace == namespace or (r.resource == "namespaces" and r.name == namespace))
    ]


async def refused(spawner) -> HTTPError:
    with pytest.raises(HTTPError) as e:
        await spawner.start()
    return e.value


async def test_a_colliding_namespace_of_another_user_is_refused_and_left_untouched(ksim, caplog):
    # mallory's namespace name equals alice's (as a hash preimage used to give): planted by hand
    victim_ns = user_namespace("mallory")
    await plant_namespace(ksim, victim_ns, owner="alice@example.org")
    before = obj(ksim, "namespaces", "", victim_ns)
    ksim.reset_log()
    error = await refused(make_spawner(ksim, "mallory"))
    assert error.status_code == 403
    assert f"the namespace {victim_ns} exists and is not yours" in error.log_message
    assert "alice" not in error.log_message  # the user is not told whose it is
    assert (
        f"SECURITY: refusing namespace {victim_ns} for user 'mallory': it belongs to user 'alice@example.org'"
    ) in caplog.text
    assert not writes_in(ksim, victim_ns), writes_in(ksim, victim_ns)
    after = obj(ksim, "namespaces", "", victim_ns)
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
    assert obj(ksim, "configmaps", victim_ns, "bashrc")["data"] == {".bashrc": "the victim's file\n"}
    assert obj(ksim, "networkpolicies", victim_ns, "apex-default-deny", "networking.k8s.io") is None


async def test_the_hubs_stop_after_a_refused_spawn_deletes_nothing(ksim):
    victim_ns = user_namespace("mallory")
    await plant_namespace(ksim, victim_ns, owner="alice@example.org")
    spawner = make_spawner(ksim, "mallory", delete_namespace_on_user_delete=True)
    await refused(spawner)
    ksim.reset_log()
    await spawner.stop()  # JupyterHub stops a server whose start failed
    await spawner.delete_forever()  # ... and the admin deletes the user
    assert not writes_in(ksim, victim_ns)
    assert obj(ksim, "configmaps", victim_ns, "bashrc") is not None
    assert not obj(ksim, "namespaces", "", victim_ns)["metadata"].get("deletionTimestamp")


async def test_an_old_state_pointing_at_the_victims_namespace_is_refused(ksim, caplog):
    """Before the fix the attacker's spawner state recorded alice's namespace; it must not be used."""
    alice = make_spawner(ksim, "alice")
    await alice.start()
    mallory = make_spawner(ksim, "mallory")
    mallory.load_state(
        {
            "namespace": alice.namespace,
            "pod_name": alice.pod_name,
            "kubespawner_version": "7.0.0",
            "apex_namespace_ready": True,
        }
    )
    ksim.reset_log()
    # the restarted hub polls mallory's "running" server: stopped, so its route to alice's pod goes
    assert await mallory.poll() == 1
    assert await alice.poll() is None
    # a stop of mallory's "running" server (e.g. the culler) must not delete alice's pod or files
    await mallory.stop()
    assert not writes_in(ksim, alice.namespace)
    # a token refresh for mallory does not write a Secret into alice's namespace either
    assert await mallory.publish_oidc_token({"access_token": "mallory's", "expires_at": 2**31}) is False
    assert not writes_in(ksim, alice.namespace)
    error = await refused(mallory)
    assert error.status_code == 403 and "SECURITY: refusing namespace apex-alice" in caplog.text
    assert not writes_in(ksim, alice.namespace)
    assert obj(ksim, "pods", alice.namespace, alice.pod_name) is not None
    await alice.stop()


async def test_a_namespace_not_created_for_a_user_is_refused(ksim, caplog):
    await plant_namespace(ksim, "apex-bob", managed=False)  # an operator's namespace, say
    await plant_namespace(ksim, "apex-carol", managed=True, owner=None, configmap=False)
    for user, namespace in (("bob", "apex-bob"), ("carol", "apex-carol")):
        ksim.reset_log()
        error = await refused(make_spawner(ksim, user))
        assert error.status_code == 403, user
        assert (
            f"refusing namespace {namespace} for user '{user}': it was not created by apex-hub" in caplog.text
        )
        assert not writes_in(ksim, namespace)


@pytest.mark.parametrize(
    "user, prefix, hub_namespace, why",
    [
        ("jhub", "", "jhub", "it is the hub's own namespace"),
        ("hub", "", "hub", "it is the hub's own namespace"),
        ("default", "", "jhub", "system namespace"),
        ("kube-system", "", "jhub", "system namespace"),
        ("public", "kube-", "jhub", "system namespace"),
        ("monitoring", "", "jhub", "APExSpawner.protected_namespaces"),
    ],
)
async def test_the_hubs_and_system_namespaces_are_refused_without_asking(
    ksim, caplog, user, prefix, hub_namespace, why
):
    ksim.reset_log()
    spawner = make_spawner(
        ksim, user, namespace_prefix=prefix, hub_namespace=hub_namespace, protected_namespaces=["monitoring"]
    )
    error = await refused(spawner)
    assert error.status_code == 403 and "is not yours" in error.log_message
    assert why in caplog.text
    assert not [r for r in ksim.requests if r.resource == "namespaces" or r.namespace == spawner.namespace]
    await spawner.stop()
    await spawner.delete_forever()
    assert not [r for r in ksim.requests if r.verb in WRITES]


async def test_a_legacy_namespace_of_this_very_user_is_kept(ksim, caplog):
    name = "Alice@example.org"
    legacy = legacy_user_namespace(name)
    assert legacy != user_namespace(name)
    await plant_namespace(ksim, legacy, owner=name, configmap=False)
    spawner = make_spawner(ksim, name)
    await spawner.start()
    assert spawner.namespace == legacy
    assert "keeping namespace" in caplog.text and legacy in caplog.text
    assert obj(ksim, "pods", legacy, spawner.pod_name) is not None
    assert obj(ksim, "configmaps", legacy, "bashrc")["data"][".bashrc"].endswith(f"@{legacy} $ '\n")
    assert obj(ksim, "namespaces", "", user_namespace(name)) is None
    state = spawner.get_state()
    assert state["namespace"] == legacy and state["apex_namespace_verified"] == legacy
    await spawner.stop()
    assert obj(ksim, "configmaps", legacy, "bashrc") is None  # swept in the namespace in use


async def test_a_legacy_namespace_of_someone_else_is_not_adopted(ksim):
    """Mallory found a 32-bit preimage of alice's legacy name: the new name is used, not hers."""
    name = "mallory@evil.example"
    legacy = legacy_user_namespace(name)
    await plant_namespace(ksim, legacy, owner="alice@example.org")
    ksim.reset_log()
    spawner = make_spawner(ksim, name)
    await spawner.start()
    assert spawner.namespace == user_namespace(name) != legacy
    assert not writes_in(ksim, legacy)
    await spawner.stop()


async def test_objects_labelled_by_the_former_scheme_are_swept_too(ksim):
    name = "Otto.Old"
    spawner = make_spawner(ksim, name)
    await spawner.start()
    from apex_hub.naming import legacy_slugify

    async with ksim.api_client() as api:
        await client.CoreV1Api(api).create_namespaced_config_map(
            spawner.namespace,
            {
                "metadata": {
                    "name": "left-by-old-hub",
                    "labels": {
                        L.MANAGED_BY: L.MANAGER,
                        L.USER: legacy_slugify(name),
                        L.SERVER: "default",
                        L.PERSIST: "false",
                    },
                }
            },
        )
    await spawner.stop()
    assert obj(ksim, "configmaps", spawner.namespace, "left-by-old-hub") is None


async def test_ownership_is_read_once_then_kept_in_state(ksim):
    first = make_spawner(ksim, "olga")
    await first.start()
    await first.stop()
    state = first.get_state()
    assert state["apex_namespace_verified"] == "apex-olga"
    # the hub restarts: a new spawner object from the saved state
    again = make_spawner(ksim, "olga")
    again.load_state(state)
    ksim.reset_log()
    await again.start()
    assert not [r for r in ksim.requests if r.verb == "get" and r.resource == "namespaces"]
    await again.stop()
    assert not [r for r in ksim.requests if r.verb == "get" and r.resource == "namespaces"]
