"""A re-spawn while the user's namespace is still being deleted (Terminating).

Kubernetes refuses new objects in a Terminating namespace (403 "... because it is being
terminated", found against the real API server); the spawn waits, showing why, and
creates the namespace again once it is gone, or fails with a message to try again shortly.
A ConfigMap with a finalizer holds the namespace in Terminating for as long as a test needs.
"""

from __future__ import annotations

import asyncio

from kubernetes_asyncio import client

from tests.helpers.spawner import make_spawner, obj

HOLD = "example.com/hold"


async def hold_and_delete_namespace(sim, namespace):
    """Delete ``namespace`` behind the hub's back, kept Terminating by a finalizer."""
    async with sim.api_client() as api:
        v1 = client.CoreV1Api(api)
        await v1.create_namespaced_config_map(
            namespace, {"metadata": {"name": "held", "finalizers": [HOLD]}, "data": {}}
        )
        await v1.delete_namespace(namespace)


async def release(sim, namespace):
    async with sim.api_client() as api:
        await client.CoreV1Api(api).patch_namespaced_config_map(
            "held",
            namespace,
            [{"op": "remove", "path": "/metadata/finalizers"}],
            _content_type="application/json-patch+json",
        )


async def until(check, attempts=1200):
    for _ in range(attempts):  # up to 2 minutes on a loaded machine
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition never met")


def messages(spawner):
    return [e["message"] for e in spawner._progress_events]


async def test_a_respawn_waits_for_the_terminating_namespace_and_creates_it_again(ksim):
    spawner = make_spawner(ksim, "tess")
    await spawner.start()
    await spawner.stop()
    ns = spawner.namespace
    old_uid = obj(ksim, "namespaces", "", ns)["metadata"]["uid"]
    await hold_and_delete_namespace(ksim, ns)
    assert obj(ksim, "namespaces", "", ns)["status"]["phase"] == "Terminating"

    start = asyncio.ensure_future(spawner.start())
    await until(lambda: any("still being deleted" in m for m in messages(spawner)) or start.done())
    assert not start.done(), start.result()
    assert obj(ksim, "namespaces", "", ns)["metadata"]["uid"] == old_uid  # still the old one
    await release(ksim, ns)
    url = await start
    assert url.startswith("http://127.0.0.")
    namespace = obj(ksim, "namespaces", "", ns)
    assert namespace["metadata"]["uid"] != old_uid and "deletionTimestamp" not in namespace["metadata"]
    assert obj(ksim, "configmaps", ns, "bashrc") is not None
    assert obj(ksim, "pods", ns, spawner.pod_name) is not None
    assert any("creating it again" in m for m in messages(spawner)), messages(spawner)
    await spawner.stop()


async def test_a_namespace_that_stays_terminating_fails_the_spawn_with_a_clear_message(ksim):
    spawner = make_spawner(ksim, "uma", namespace_deletion_wait=0.5)
    await spawner.start()
    await spawner.stop()
    await hold_and_delete_namespace(ksim, spawner.namespace)
    try:
        try:
            await spawner.start()
        except Exception as exc:
            message = str(getattr(exc, "log_message", None) or exc)
        else:
            raise AssertionError("the spawn should have failed")
        assert f"your previous workspace (namespace {spawner.namespace}) is still being deleted" in message
        assert "try again in a minute" in message
        assert obj(ksim, "pods", spawner.namespace, spawner.pod_name) is None
    finally:
        await release(ksim, spawner.namespace)


async def test_a_cold_spawn_into_a_terminating_namespace_waits_too(ksim):
    """Without the spawner state (a new hub), the namespace read shows it Terminating."""
    first = make_spawner(ksim, "vera")
    await first.start()
    await first.stop()
    await hold_and_delete_namespace(ksim, first.namespace)
    spawner = make_spawner(ksim, "vera")  # no state: the cold path
    start = asyncio.ensure_future(spawner.start())
    await until(lambda: any("still being deleted" in m for m in messages(spawner)) or start.done())
    assert not start.done(), start.result()
    writes = [
        r
        for r in ksim.requests
        if r.verb in ("patch", "create")
        and r.namespace == spawner.namespace
        and r.resource != "namespaces"
        and r.status == 403
    ]
    assert writes == [], "the cold path must not write into a Terminating namespace"
    await release(ksim, spawner.namespace)
    assert (await start).startswith("http://127.0.0.")
    await spawner.stop()
