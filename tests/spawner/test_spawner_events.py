"""APExSpawner's ``events`` is KubeSpawner's list, without sorting every event of the hub."""

from __future__ import annotations

import asyncio

from kubespawner import KubeSpawner

from tests.helpers.spawner import make_spawner


def event(namespace: str, pod: str, n: int, stamp: str, reason: str = "Started") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{pod}.{n:x}", "namespace": namespace},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace, "apiVersion": "v1"},
        "reason": reason,
        "message": f"{reason} {n}",
        "type": "Normal",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def test_events_are_kubespawners_list_of_this_pods_events(ksim):
    ada, bob = make_spawner(ksim, "ada"), make_spawner(ksim, "bob", uid=2)
    await ada.start()
    await bob.start()
    async with ksim.api_client() as api:
        from kubernetes_asyncio.client import CoreV1Api

        core = CoreV1Api(api)
        # out of time order on purpose, interleaved with another user's pod and ties
        stamps = ["2026-12-02T10:00:05Z", "2026-12-02T10:00:01Z", "2026-12-02T10:00:03Z"] * 4
        for n, stamp in enumerate(stamps):
            for spawner in (ada, bob):
                await core.create_namespaced_event(
                    spawner.namespace, event(spawner.namespace, spawner.pod_name, n, stamp)
                )
    reflector = ada.event_reflector
    for _ in range(200):  # the reflector's watch takes them in
        names = {e["metadata"]["name"] for e in reflector.resources.values()}
        if all(f"{s.pod_name}.{n:x}" in names for s in (ada, bob) for n in range(len(stamps))):
            break
        await asyncio.sleep(0.02)
    for spawner in (ada, bob):
        expected = KubeSpawner.events.fget(spawner)
        assert spawner.events == expected
        assert {e["involvedObject"]["name"] for e in expected} == {spawner.pod_name}
        assert len(expected) >= len(stamps)
        assert [e["lastTimestamp"] for e in expected] == sorted(e["lastTimestamp"] for e in expected)
        # with a marker in the middle: only the events after it, as KubeSpawner has it
        spawner._last_event = expected[len(expected) // 2]["metadata"]["uid"]
        after = KubeSpawner.events.fget(spawner)
        assert spawner.events == after == expected[len(expected) // 2 + 1 :]
        spawner._last_event = "no-such-uid"
        assert spawner.events == KubeSpawner.events.fget(spawner) == expected
    await ada.stop()
    await bob.stop()


async def test_a_spawners_progress_events_are_its_last_spawns_only(ksim):
    """A hub keeps a user's spawner for months: each start begins a new list of progress events."""
    spawner = make_spawner(ksim, "cy")
    await spawner.start()
    first = list(spawner._progress_events)
    await spawner.stop()
    for _ in range(3):
        await spawner.start()
        await spawner.stop()
    assert first and len(spawner._progress_events) <= len(first)
    assert [e["message"] for e in spawner._progress_events][-1].startswith("Workspace ready")
