"""Issue 14.7 (spawner side) and 14.6: a stop during the pod create, state across a hub restart,
and the token URL of a user name with URL metacharacters."""

from __future__ import annotations

import asyncio
import json
import time

from apex_hub.spawner import labels as L
from apex_hub.spawner.oidc_token import SECRET
from tests.helpers.spawner import make_spawner, obj

AUTH_STATE = {
    "access_token": "token-1",
    "expires_at": int(time.time()) + 600,
    "token_response": {"token_type": "Bearer"},
}


async def eventually(predicate, what, tries=400, pause=0.05):
    for _ in range(tries):  # generous: 20 s on a loaded machine
        if predicate():
            return
        await asyncio.sleep(pause)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_stop_during_the_pod_create_window_still_sweeps(ksim):
    spawner = make_spawner(ksim, "rita")
    await spawner.run_auth_state_hook(AUTH_STATE)
    # the pod is stored at once, but the create's answer takes 5 s: the window a stop can hit
    ksim.inject(verb="create", resource="pods", status=None, delay=5)
    start = asyncio.ensure_future(spawner.start())
    try:
        await eventually(
            lambda: obj(ksim, "pods", "apex-rita", spawner.pod_name) is not None, "the pod to be created"
        )
        assert not start.done()
        assert obj(ksim, "secrets", "apex-rita", SECRET) is not None
        await spawner.stop(now=True)  # the user (or the culler) stops meanwhile
    finally:
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)
    assert obj(ksim, "secrets", "apex-rita", SECRET) is None  # the token does not outlive the stop
    assert obj(ksim, "configmaps", "apex-rita", "bashrc") is None
    assert obj(ksim, "persistentvolumeclaims", "apex-rita", "workspace") is not None


async def test_kubespawners_own_replacement_stop_still_keeps_the_workspace(ksim):
    first = make_spawner(ksim, "sven")
    await first.start()
    second = make_spawner(ksim, "sven")  # the hub forgot; create answers 409 and replaces the pod
    await second.run_auth_state_hook(AUTH_STATE)
    await second.start()
    assert 409 in [r.status for r in ksim.requests if r.verb == "create" and r.resource == "pods"]
    assert obj(ksim, "secrets", "apex-sven", SECRET) is not None
    assert obj(ksim, "configmaps", "apex-sven", "bashrc") is not None
    await second.stop()


async def test_after_a_hub_restart_the_republished_token_keeps_its_profile_label(ksim):
    spawner = make_spawner(ksim, "tess")
    await spawner.run_auth_state_hook(AUTH_STATE)
    await spawner.start()
    assert obj(ksim, "secrets", "apex-tess", SECRET)["metadata"]["labels"][L.PROFILE] == "lab"
    saved = json.loads(json.dumps(spawner.get_state()))  # as the hub's database keeps it
    restarted = make_spawner(ksim, "tess")
    restarted.load_state(saved)
    # what the restarted hub sends must carry the label itself (on a real API server, apply
    # drops labels the manager no longer sets): start from no Secret to see only what is sent
    ksim.store.delete(ksim.store._rt("secrets"), "apex-tess", SECRET)
    ksim.reset_log()
    assert await restarted.publish_oidc_token({**AUTH_STATE, "access_token": "token-2"})
    secret = obj(ksim, "secrets", "apex-tess", SECRET)
    assert secret["metadata"]["labels"][L.PROFILE] == "lab"
    assert secret["metadata"]["labels"][L.SERVER] == "default"
    # ownership was verified by the first spawn and kept in state: no extra read
    assert not [r for r in ksim.requests if r.resource == "namespaces"]
    await restarted.stop()
    assert obj(ksim, "secrets", "apex-tess", SECRET) is None


async def test_the_token_url_quotes_the_user_name(ksim):
    name = "ann#1?x=%2F/../y"
    spawner = make_spawner(ksim, name)
    await spawner.run_auth_state_hook(AUTH_STATE)
    await spawner.start()
    pod = obj(ksim, "pods", spawner.namespace, spawner.pod_name)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["APEX_OIDC_TOKEN_URL"].endswith("/apex/users/ann%231%3Fx%3D%252F%2F..%2Fy/oidc-token")
    await spawner.stop()
