"""A warm spawn sends its pod in the same round as the workspace (``pod_with_workspace``).

Round trips are read from kubesim's request log (server-side times, with latency injected into
the writes): two requests are in one round when the second reached the server before the first
was answered. No wall-clock bound is asserted anywhere.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import itertools

import pytest
from kubespawner import reflector
from tornado.web import HTTPError

from apex_hub.spawner import lean
from tests.helpers.spawner import CATALOGUE, make_spawner, obj

#: Added to every write (server-side apply, create) where a test shows that the pod WAITS for the
#: workspace: a pod sent only after the answers is after them at any speed; reads, deletes and
#: watches stay fast, so stops do not slow the tests down.
WRITES_DELAYED = {"patch": 0.3, "create": 0.3}


def delay_writes(sim) -> None:
    sim.set_latency(0, **WRITES_DELAYED)


def hold_writes_until_the_pod(sim):
    """Where a test shows that the pod is sent in the SAME round as the workspace: no write is answered
    before the pod create has arrived (a spawner that waited for the answers would never send it:
    the hold then times out and the order shows it), so no margin of time is involved."""
    return sim.hold(
        holds=lambda r: r.verb in ("create", "patch") and r.resource != "pods",
        until=lambda r: r.verb == "create" and r.resource == "pods",
        timeout=30,
    )


def end(r):
    return r.started + r.duration


def writes(sim):
    """The spawn's writes (reflector lists and watches left out), in the order they arrived."""
    return sorted((r for r in sim.requests if r.verb in ("create", "patch")), key=lambda r: r.started)


def pod_request(sim):
    return [r for r in writes(sim) if r.resource == "pods" and r.verb == "create"][-1]


def with_pod_in_same_round(sim) -> bool:
    """True when the pod create reached the server before any workspace write was answered."""
    pod = pod_request(sim)
    others = [r for r in writes(sim) if r.resource != "pods"]
    assert others, "the spawn wrote no workspace"
    return pod.started < min(end(r) for r in others)


def after_the_workspace(sim) -> bool:
    pod = pod_request(sim)
    return all(end(r) <= pod.started for r in writes(sim) if r.resource != "pods")


async def warm(spawner, sim, *, same_round: bool):
    """A cold start and a stop, then the log of the warm start that follows (its writes held until
    the pod arrives when the pod is expected in the same round, else delayed)."""
    await spawner.start()
    await spawner.stop()
    hold = None
    if same_round:
        hold = hold_writes_until_the_pod(sim)
    else:
        delay_writes(sim)
    sim.reset_log()
    await spawner.start()
    if hold is not None:
        assert not hold.timed_out and hold.held, "the pod was not sent with the workspace"


async def test_a_warm_spawn_sends_everything_pod_included_in_one_round(ksim):
    spawner = make_spawner(ksim, "ona")
    await warm(spawner, ksim, same_round=True)
    try:
        assert with_pod_in_same_round(ksim)
        kinds = {r.resource for r in writes(ksim)}
        assert {"namespaces", "serviceaccounts", "networkpolicies", "configmaps", "pods"} <= kinds
        pod = obj(ksim, "pods", "apex-ona", spawner.pod_name)
        assert pod["status"]["phase"] == "Running"
        assert obj(ksim, "configmaps", "apex-ona", "bashrc") is not None
        # the ConfigMaps went out before the pod: the kubelet finds them at once
        pod_sent = pod_request(ksim).started
        assert all(r.started < pod_sent for r in writes(ksim) if r.resource == "configmaps")
    finally:
        await spawner.stop()


async def test_a_cold_spawn_is_namespace_then_workspace_then_pod(ksim):
    delay_writes(ksim)
    spawner = make_spawner(ksim, "cole")
    await spawner.start()
    try:
        ws = writes(ksim)
        namespace = next(r for r in ws if r.resource == "namespaces")
        workspace = [r for r in ws if r.resource not in ("namespaces", "pods")]
        assert all(end(namespace) <= r.started for r in workspace)
        assert after_the_workspace(ksim)
        assert spawner.get_state()["apex_pod_prerequisites"]
    finally:
        await spawner.stop()


async def test_the_switch_off_makes_the_pod_wait(ksim):
    spawner = make_spawner(ksim, "otis", pod_with_workspace=False)
    await warm(spawner, ksim, same_round=False)
    try:
        assert after_the_workspace(ksim)
    finally:
        await spawner.stop()


@pytest.mark.parametrize(
    "change",
    [
        {"resource_quota": {"hard": {"requests.cpu": "8"}}},
        {"limit_range": {"limits": [{"type": "Container", "default": {"cpu": "1"}}]}},
        {"namespace_labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        {"egress_blocked_cidrs": ["169.254.169.254/32", "10.0.0.0/8"]},
    ],
    ids=["quota", "limit-range", "namespace-labels", "network-policy"],
)
async def test_a_changed_prerequisite_makes_the_pod_wait_once(ksim, change):
    spawner = make_spawner(ksim, "cara")
    await spawner.start()
    await spawner.stop()
    for name, value in change.items():
        setattr(spawner, name, value)
    delay_writes(ksim)
    ksim.reset_log()
    await spawner.start()
    try:
        assert after_the_workspace(ksim)  # admission must see the new object first
        await spawner.stop()
        ksim.faults.clear()
        hold = hold_writes_until_the_pod(ksim)
        ksim.reset_log()
        await spawner.start()
        assert not hold.timed_out and with_pod_in_same_round(ksim)  # written now: known
    finally:
        await spawner.stop()


async def test_scratch_claims_make_the_pod_wait(ksim):
    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"][0]["volumes"] = [
        {"name": "tmp", "size": "1Gi", "mount_path": "/tmp/scratch", "scratch": True, "persist": False}
    ]
    spawner = make_spawner(ksim, "sami", catalogue=catalogue)
    await warm(spawner, ksim, same_round=False)
    try:
        assert after_the_workspace(ksim)
    finally:
        await spawner.stop()


async def test_the_prerequisites_survive_a_hub_restart(ksim):
    first = make_spawner(ksim, "rhea")
    await first.start()
    await first.stop()
    state = first.get_state()
    second = make_spawner(ksim, "rhea")
    second.load_state(state)
    hold = hold_writes_until_the_pod(ksim)
    ksim.reset_log()
    await second.start()
    try:
        assert not hold.timed_out and with_pod_in_same_round(ksim)
    finally:
        await second.stop()


async def test_a_workspace_that_fails_takes_its_pod_down(ksim):
    spawner = make_spawner(ksim, "fay")
    await spawner.start()
    await spawner.stop()
    ksim.inject(
        verb="patch", resource="configmaps", status=422, times=None, message="ConfigMap is invalid: data"
    )
    ksim.reset_log()
    with pytest.raises(HTTPError) as info:
        await spawner.start()
    assert info.value.status_code == 500
    assert "Could not prepare your workspace in namespace apex-fay" in info.value.log_message
    assert "422 ConfigMap is invalid" in info.value.log_message
    assert [r.status for r in ksim.requests if r.verb == "create" and r.resource == "pods"] == [201]
    assert [r.status for r in ksim.requests if r.verb == "delete" and r.resource == "pods"] == [200]
    for _ in range(200):  # the instant kubelet finishes the deletion in the background
        if obj(ksim, "pods", "apex-fay", spawner.pod_name) is None:
            break
        await asyncio.sleep(0.01)
    assert obj(ksim, "pods", "apex-fay", spawner.pod_name) is None


async def test_a_pod_refused_in_the_round_is_sent_again_after_the_workspace(ksim):
    spawner = make_spawner(ksim, "pia")
    await spawner.start()
    await spawner.stop()
    # e.g. the ServiceAccount was deleted behind the hub's back: admission refuses the pod
    ksim.inject(
        verb="create",
        resource="pods",
        status=403,
        message='pods "x" is forbidden: error looking up service account apex-pia/workspace',
    )
    ksim.reset_log()
    await spawner.start()
    try:
        assert [r.status for r in ksim.requests if r.verb == "create" and r.resource == "pods"] == [403, 201]
        assert obj(ksim, "pods", "apex-pia", spawner.pod_name)["status"]["phase"] == "Running"
    finally:
        await spawner.stop()


async def test_a_pod_left_by_an_earlier_hub_is_replaced_in_the_one_round_path(ksim):
    first = make_spawner(ksim, "xia")
    await first.start()  # and the hub restarts, forgetting it: the pod still runs
    second = make_spawner(ksim, "xia")
    second.load_state(first.get_state())
    ksim.reset_log()
    await second.start()
    try:
        assert [r.status for r in ksim.requests if r.verb == "create" and r.resource == "pods"] == [
            409,
            409,
            201,
        ]
        assert obj(ksim, "configmaps", "apex-xia", "bashrc") is not None  # the replacement kept it
    finally:
        await second.stop()


async def test_a_start_that_fails_before_its_pod_lets_the_workspace_land_before_the_sweep(ksim, caplog):
    spawner = make_spawner(ksim, "tia")
    await spawner.start()
    await spawner.stop()

    def refuse(spawner, pod):
        raise RuntimeError("the hook refuses")

    spawner.modify_pod_hook = refuse
    delay_writes(ksim)
    with pytest.raises(RuntimeError, match="the hook refuses"):
        await spawner.start()
    await spawner.stop()  # as the hub does after a failed start
    assert obj(ksim, "configmaps", "apex-tia", "bashrc") is None  # swept after it was written
    assert obj(ksim, "pods", "apex-tia", spawner.pod_name) is None


# -- the loop: frozen objects, lean watches --------------------------------------------


async def test_the_first_spawner_freezes_the_import_time_objects_unless_switched_off(ksim):
    lean.forget_freeze()
    try:
        make_spawner(ksim, "gia", gc_freeze=False)
        assert gc.get_freeze_count() == 0
        make_spawner(ksim, "gia")
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the imported modules' objects
        make_spawner(ksim, "gia")
        assert gc.get_freeze_count() == frozen  # once per process
    finally:
        lean.forget_freeze()


async def test_the_reflectors_use_the_lean_watch_unless_switched_off(ksim):
    try:
        make_spawner(ksim, "lia", lean_reflectors=False)
        assert not lean.lean_watch_in_use()
        make_spawner(ksim, "lia")
        assert lean.lean_watch_in_use()
        assert reflector.watch.Watch is lean.LeanWatch
    finally:
        lean.use_lean_watch(True)


async def test_the_lean_watch_hands_out_raw_objects_and_follows_the_resource_version(ksim):
    from kubernetes_asyncio import client

    async with ksim.api_client() as api:
        v1 = client.CoreV1Api(api)
        await v1.create_namespace({"metadata": {"name": "lw"}})
        await v1.create_namespaced_config_map("lw", {"metadata": {"name": "a"}, "data": {"k": "v"}})
        w = lean.LeanWatch()
        seen = []
        async with w.stream(v1.list_namespaced_config_map, namespace="lw", timeout_seconds=1) as stream:
            async for event in stream:
                seen.append(event)
                break
    assert seen[0]["type"] == "ADDED"
    assert seen[0]["object"] is seen[0]["raw_object"]
    assert isinstance(seen[0]["object"], dict) and seen[0]["object"]["data"] == {"k": "v"}
    assert w.resource_version == seen[0]["object"]["metadata"]["resourceVersion"]


async def test_bursts_take_turns_first_come_first_served_one_per_loop_iteration():
    iteration = 0

    async def count():
        nonlocal iteration
        while True:
            iteration += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count())
    order = []

    async def burst(i):
        await lean.take_turn()
        order.append((i, iteration))

    await asyncio.gather(*(burst(i) for i in range(6)))
    counter.cancel()
    assert [i for i, _ in order] == list(range(6))
    seen = [it for _, it in order]
    assert all(later > earlier for earlier, later in itertools.pairwise(seen)), seen


async def test_a_task_cancelled_with_the_turn_in_hand_passes_it_on():
    turns = lean._Turns(asyncio.get_running_loop())
    turns.busy = True  # someone has the turn
    a = asyncio.ensure_future(turns.take())
    b = asyncio.ensure_future(turns.take())
    await asyncio.sleep(0)
    assert len(turns.waiters) == 2
    turns._next()  # the turn goes to a ...
    a.cancel()  # ... which is cancelled before it wakes up
    for _ in range(5):
        await asyncio.sleep(0)
    assert a.cancelled() and b.done() and not b.cancelled()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not turns.busy  # and nobody keeps it
