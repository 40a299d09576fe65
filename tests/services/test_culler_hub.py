"""End to end: a real JupyterHub with APExSpawner on kubesim (process kubelet); the culler runs
in-process against the hub's REST API with a token that has exactly the culler's role, and a fake
clock an hour ahead."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from apex_hub.kubesim import KubeSim
from apex_hub.services import CULLER_SCOPES, RESTART_SCOPE
from apex_hub.services.culler import CullerService, CullingPolicy
from tests.helpers.hub import HubProcess, apex_hub_config

pytestmark = [pytest.mark.process]

CATALOGUE = {"profiles": [{"slug": "lab", "display_name": "JupyterLab", "default": True},
                          {"slug": "long", "display_name": "Long runs"}]}
POLICY = {
    "defaults": {"idle_timeout": "2h"},
    "profiles": {"lab": {"idle_timeout": "30m"}},
    "groups": {"ops": {"session_mode": "always-on"}},
}
CONFIG = """
from apex_hub.services import configure
configure(c, culler={{"policy": "{policy}", "state_dir": "{state}", "interval": 30}})
# the culler runs in the test process (fake clock): keep the role and give it a known token
culler = c.JupyterHub.services[-1]
assert culler["command"][1:3] == ["-m", "apex_hub.services.culler"], culler
culler.pop("command")
culler["api_token"] = "{token}"
"""


async def wait_stopped(hub: HubProcess, user: str, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        _, model = await hub.api("GET", f"/users/{user}")
        if "" not in (model.get("servers") or {}):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{user}'s server still there: {model}")


def records(state) -> list[dict]:
    path = state / "stop-reasons.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_culler_against_a_real_hub(tmp_path):
    profiles, policy_file, state = tmp_path / "profiles.yml", tmp_path / "culling.yaml", tmp_path / "state"
    profiles.write_text(yaml.safe_dump(CATALOGUE))
    policy_file.write_text(yaml.safe_dump(POLICY))
    token = secrets.token_hex(16)
    async with KubeSim(kubelet="process", workdir=tmp_path / "sim") as sim:
        config = apex_hub_config(sim.url, profiles) + CONFIG.format(policy=policy_file, state=state,
                                                                    token=token)
        async with HubProcess(tmp_path / "hub", config, env={"KUBECONFIG": sim.kubeconfig_path}) as hub:
            for name, groups, profile in (("alice", (), "lab"), ("bob", ("ops",), "lab"), ("carol", (), "long")):
                assert (await hub.api("POST", f"/users/{name}"))[0] == 201
                for g in groups:
                    assert (await hub.api("POST", f"/groups/{g}"))[0] in (201, 409)
                    assert (await hub.api("POST", f"/groups/{g}/users", json={"users": [name]}))[0] == 200
                status, body = await hub.api("POST", f"/users/{name}/server", json={"profile": profile})
                assert status in (201, 202), (body, hub.log()[-3000:])
            for name in ("alice", "bob", "carol"):
                await hub.wait_ready(name, timeout=90)

            policy = CullingPolicy.load(policy_file)
            later = datetime.now(timezone.utc) + timedelta(hours=1)  # past lab's 30m, not the default 2h
            api_url = f"{hub.url}/hub/api"

            # 1. dry-run: logs and records, stops nothing
            dry = CullerService(policy, api_url=api_url, api_token=token, state_dir=state, dry_run=True,
                                clock=lambda: later)
            report = await dry.run_once()
            await dry.close()
            assert report.errors == []
            assert [(c.user, c.decision.reason) for c in report.would_stop] == [("alice", "idle")]
            assert report.stopped == [] and report.restarted == []
            for name in ("alice", "bob", "carol"):
                _, model = await hub.api("GET", f"/users/{name}")
                assert model["servers"][""]["ready"], model
            [rec] = records(state)
            assert (rec["user"], rec["server"], rec["profile"], rec["reason"], rec["dry_run"]) == \
                ("alice", "", "lab", "idle", True)

            # 2. for real: alice (lab, idle 30m) is stopped through jupyterhub-idle-culler; bob (ops:
            # always-on) and carol (default 2h) are kept
            svc = CullerService(policy, api_url=api_url, api_token=token, state_dir=state, clock=lambda: later,
                                sleep=_no_sleep)
            report = await svc.run_once()
            assert report.errors == [], report.errors
            assert [(c.user, c.decision.reason) for c in report.stopped] == [("alice", "idle")]
            await wait_stopped(hub, "alice")
            recs = records(state)
            assert len(recs) == 2
            real = recs[1]
            assert (real["user"], real["server"], real["profile"], real["reason"], real["dry_run"]) == \
                ("alice", "", "lab", "idle", False)
            assert real["time"] == later.isoformat() and "idle_timeout 0:30:00" in real["detail"]
            for name in ("bob", "carol"):
                _, model = await hub.api("GET", f"/users/{name}")
                assert model["servers"][""]["ready"], model

            # 3. nothing is stopped twice
            report = await svc.run_once()
            assert report.stopped == [] and report.errors == []
            assert len(records(state)) == 2

            # 4. an admin stops bob's always-on server: recorded as an external stop, restarted
            assert (await hub.api("DELETE", "/users/bob/server"))[0] in (202, 204)
            await wait_stopped(hub, "bob")
            report = await svc.run_once()
            assert report.errors == [], report.errors
            assert [c.user for c in report.restarted] == ["bob"]
            assert [(r["user"], r["reason"]) for r in report.external] == [("bob", "external")]
            srv = await hub.wait_ready("bob", timeout=90)
            assert srv["user_options"] == {"profile": "lab"}
            await svc.close()
            assert [r["reason"] for r in records(state)] == ["idle", "idle", "external"]

            # the token really is limited to the culler's scopes
            status, _ = await _api(hub, token, "POST", "/users/mallory")
            assert status == 403
            _, me = await _api(hub, token, "GET", "/user")
            assert set(me["scopes"]) >= set(CULLER_SCOPES) | {RESTART_SCOPE}
            assert not any(s.startswith("admin") for s in me["scopes"]), me["scopes"]


async def _no_sleep(_seconds):
    return None


async def _api(hub: HubProcess, token: str, method: str, path: str):
    import aiohttp
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"{hub.url}/hub/api{path}", headers={"Authorization": f"token {token}"}) as r:
            return r.status, await r.json(content_type=None)
