"""An API server that throttles, fails, conflicts or drops connections during a spawn."""

from __future__ import annotations

import asyncio

import pytest
from tornado.web import HTTPError

from tests.helpers.spawner import make_spawner, obj


def statuses(sim, verb, resource):
    return [r.status for r in sim.requests if r.verb == verb and r.resource == resource]


@pytest.mark.parametrize(
    "verb, resource, status",
    [
        ("create", "namespaces", 500),
        ("patch", "configmaps", 429),
        ("patch", "networkpolicies", 503),
        ("patch", "serviceaccounts", 0),  # connection dropped
        ("create", "persistentvolumeclaims", 500),
        ("create", "pods", 500),
        ("create", "pods", 429),
    ],
)
async def test_a_transient_failure_is_retried_and_the_spawn_succeeds(ksim, verb, resource, status):
    ksim.inject(
        verb=verb,
        resource=resource,
        status=status,
        times=2,
        retry_after=0 if status == 429 else None,
        message="etcdserver: request timed out",
    )
    spawner = make_spawner(ksim, "walt")
    url = await spawner.start()
    assert url.startswith("http://127.0.0.")
    seen = statuses(ksim, verb, resource)
    assert seen[:2] == [status, status] and seen[-1] in (200, 201), seen
    assert obj(ksim, "configmaps", spawner.namespace, "bashrc") is not None
    await spawner.stop()


async def test_a_dropped_connection_on_the_pod_delete_is_retried_and_the_stop_succeeds(ksim):
    """KubeSpawner gives up on a connection error in its pod DELETE (found against a real API
    server behind a connection-cutting proxy: tests/realcluster/test_faults_real.py)."""
    spawner = make_spawner(ksim, "vera")
    await spawner.start()
    ksim.inject(verb="delete", resource="pods", status=0, times=2)
    await spawner.stop()
    seen = statuses(ksim, "delete", "pods")
    assert seen[:2] == [0, 0] and seen[-1] == 200, seen
    assert obj(ksim, "pods", spawner.namespace, spawner.pod_name) is None


async def test_a_pod_left_by_an_earlier_hub_is_replaced_and_the_workspace_kept(ksim):
    first = make_spawner(ksim, "xena")
    await first.start()
    # the hub restarts and forgets; the old pod still runs: create answers 409
    second = make_spawner(ksim, "xena")
    await second.start()
    assert 409 in statuses(ksim, "create", "pods")
    assert obj(ksim, "configmaps", "apex-xena", "bashrc") is not None  # not swept by the replacement
    await second.stop()


async def test_a_slow_write_that_times_out_is_retried_idempotently(ksim):
    # the first apply is done but answered 3 s late, well past the client's 1 s: it gives up, retries
    ksim.inject(verb="patch", resource="configmaps", status=None, delay=3)
    spawner = make_spawner(ksim, "yuri", k8s_api_request_timeout=1)
    await spawner.start()
    assert len(statuses(ksim, "patch", "configmaps")) >= 2  # the late one, then its retry (or more)
    assert obj(ksim, "configmaps", "apex-yuri", "bashrc")["data"][".bashrc"].startswith("export PS1")
    await spawner.stop()


async def test_dropped_watches_during_a_spawn_do_not_fail_it(ksim):
    warm = make_spawner(ksim, "zed")
    await warm.start()  # reflectors are running
    await warm.stop()
    ksim.set_latency(0.05)
    spawner = make_spawner(ksim, "zed")
    start = asyncio.ensure_future(spawner.start())
    await asyncio.sleep(0.1)
    assert ksim.drop_watches(abrupt=True) >= 1
    url = await start  # pytest-timeout is the hang guard
    assert url.startswith("http://127.0.0.")
    await spawner.stop()


async def test_a_persistent_failure_fails_with_a_clear_message_and_a_retry_converges(ksim):
    ksim.inject(
        verb="patch", resource="configmaps", status=500, times=None, message="etcdserver: leader changed"
    )
    spawner = make_spawner(ksim, "ada", k8s_api_request_retry_timeout=2)
    with pytest.raises(HTTPError) as e:
        await spawner.start()
    message = e.value.log_message
    assert "Could not prepare your workspace in namespace apex-ada" in message
    assert "apply ConfigMap apex-ada/bashrc" in message and "500 etcdserver: leader changed" in message
    assert obj(ksim, "pods", "apex-ada", spawner.pod_name) is None  # no pod without its workspace
    assert any("Could not prepare your workspace" in e["message"] for e in spawner._progress_events)

    ksim.faults.clear()
    again = make_spawner(ksim, "ada")
    await again.start()
    assert obj(ksim, "configmaps", "apex-ada", "bashrc") is not None
    assert len(list(ksim.store.list(ksim.store._rt("persistentvolumeclaims"), "apex-ada")[0])) == 1
    await again.stop()


async def test_a_forbidden_write_is_not_retried(ksim):
    ksim.inject(
        verb="patch",
        resource="networkpolicies",
        status=403,
        times=None,
        message="networkpolicies is forbidden: User cannot patch",
    )
    spawner = make_spawner(ksim, "bea")
    with pytest.raises(HTTPError) as e:
        await spawner.start()
    assert "403 networkpolicies is forbidden" in e.value.log_message
    assert statuses(ksim, "patch", "networkpolicies") == [403]
