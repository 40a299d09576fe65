"""End to end: a real JupyterHub with APExSpawner on kubesim (process kubelet); the culler runs
in-process against the hub's REST API with a token that has exactly the culler's role, and a fake
clock an hour ahead."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
import yaml

from apex_hub.kubesim import KubeSim
from apex_hub.services import CULLER_SCOPES, restart_scope
from apex_hub.services.culler import CullerService, CullingPolicy
from tests.helpers.hub import HubProcess, apex_hub_config
from tests.helpers.wait import until

pytestmark = [pytest.mark.process]

CATALOGUE = {
    "profiles": [
        {"slug": "lab", "display_name": "JupyterLab", "default": True},
        {"slug": "long", "display_name": "Long runs"},
    ]
}
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


async def wait_stopped(hub: HubProcess, user: str) -> None:
    async def stopped():
        _, model = await hub.api("GET", f"/users/{user}")
        return "" not in (model.get("servers") or {})

    await until(stopped, 0.2)


async def start_servers(hub: HubProcess, profiles: dict[str, str]) -> None:
    """Ask for the servers of ``{user: profile}`` at once (each request lasts as long as its spawn)."""

    async def start(name: str, profile: str) -> None:
        status, body = await hub.api("POST", f"/users/{name}/server", json={"profile": profile})
        assert status in (201, 202), (body, hub.log()[-3000:])

    await asyncio.gather(*(start(name, profile) for name, profile in profiles.items()))


def records(state) -> list[dict]:
    path = state / "stop-reasons.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_culler_against_a_real_hub(tmp_path):
    profiles, policy_file, state = tmp_path / "profiles.yml", tmp_path / "culling.yaml", tmp_path / "state"
    profiles.write_text(yaml.safe_dump(CATALOGUE))
    policy_file.write_text(yaml.safe_dump(POLICY))
    token = secrets.token_hex(16)
    async with KubeSim(kubelet="process", workdir=tmp_path / "sim") as sim:
        config = apex_hub_config(sim.url, profiles) + CONFIG.format(
            policy=policy_file, state=state, token=token
        )
        async with HubProcess(tmp_path / "hub", config, env={"KUBECONFIG": sim.kubeconfig_path}) as hub:
            for name, groups in (("alice", ()), ("bob", ("ops",)), ("carol", ())):
                assert (await hub.api("POST", f"/users/{name}"))[0] == 201
                for g in groups:
                    assert (await hub.api("POST", f"/groups/{g}"))[0] in (201, 409)
                    assert (await hub.api("POST", f"/groups/{g}/users", json={"users": [name]}))[0] == 200
            await start_servers(hub, {"alice": "lab", "bob": "lab", "carol": "long"})
            for name in ("alice", "bob", "carol"):
                await hub.wait_ready(name)

            policy = CullingPolicy.load(policy_file)
            later = datetime.now(UTC) + timedelta(hours=1)  # past lab's 30m, not the default 2h
            api_url = f"{hub.url}/hub/api"

            # 1. dry-run: logs and records, stops nothing
            dry = CullerService(
                policy, api_url=api_url, api_token=token, state_dir=state, dry_run=True, clock=lambda: later
            )
            report = await dry.run_once()
            await dry.close()
            assert report.errors == []
            assert [(c.user, c.decision.reason) for c in report.would_stop] == [("alice", "idle")]
            assert report.stopped == [] and report.restarted == []
            for name in ("alice", "bob", "carol"):
                _, model = await hub.api("GET", f"/users/{name}")
                assert model["servers"][""]["ready"], model
            [rec] = records(state)
            assert (rec["user"], rec["server"], rec["profile"], rec["reason"], rec["dry_run"]) == (
                "alice",
                "",
                "lab",
                "idle",
                True,
            )

            # 2. for real: alice (lab, idle 30m) is stopped through jupyterhub-idle-culler; bob (ops:
            # always-on) and carol (default 2h) are kept
            svc = CullerService(
                policy,
                api_url=api_url,
                api_token=token,
                state_dir=state,
                clock=lambda: later,
                sleep=_no_sleep,
            )
            report = await svc.run_once()
            assert report.errors == [], report.errors
            assert [(c.user, c.decision.reason) for c in report.stopped] == [("alice", "idle")]
            await wait_stopped(hub, "alice")
            recs = records(state)
            assert len(recs) == 2
            real = recs[1]
            assert (real["user"], real["server"], real["profile"], real["reason"], real["dry_run"]) == (
                "alice",
                "",
                "lab",
                "idle",
                False,
            )
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
            srv = await hub.wait_ready("bob")
            assert srv["user_options"] == {"profile": "lab"}
            await svc.close()
            assert [r["reason"] for r in records(state)] == ["idle", "idle", "external"]

            # the token really is limited to the culler's scopes
            status, _ = await _api(hub, token, "POST", "/users/mallory")
            assert status == 403
            _, me = await _api(hub, token, "GET", "/user")
            assert set(me["scopes"]) >= set(CULLER_SCOPES) | {restart_scope()}
            assert not any(s.startswith("admin") for s in me["scopes"]), me["scopes"]


async def _no_sleep(_seconds):
    return None


async def _api(hub: HubProcess, token: str, method: str, path: str):
    async with aiohttp.ClientSession() as s:
        async with s.request(
            method, f"{hub.url}/hub/api{path}", headers={"Authorization": f"token {token}"}
        ) as r:
            return r.status, await r.json(content_type=None)


HUB_CATALOGUE = {
    "profiles": [
        {"slug": "lab", "display_name": "JupyterLab", "default": True},
        {"slug": "long", "display_name": "Long runs"},
        {"slug": "svc", "display_name": "Service", "session_mode": "always-on"},
    ]
}
HUB_POLICY = {
    "defaults": {"idle_timeout": "2h"},
    "profiles": {"lab": {"idle_timeout": "30m"}, "long": {"max_age": "1h30m"}},
}
HUB_STARTED = """
c.JupyterHub.load_roles[0]["scopes"].append("tokens")
from apex_hub.services import configure
# the hub starts the culler itself; its clock runs 1h ahead (test only) and it runs every second
configure(c, culler={{"policy": "{policy}", "state_dir": "{state}", "interval": 1, "warn_before": "45m",
                     "url": "http://127.0.0.1:{port}",
                     "environment": {{"APEX_CULLER_CLOCK_OFFSET": "1h"}}}})
"""


async def wait_for(predicate):
    return await until(predicate, 0.3)


async def test_culler_started_by_the_hub(tmp_path):
    """The hub runs ``python -m apex_hub.services.culler`` from configure(): it stops an idle server and
    writes the reason, restarts an always-on (by the catalogue) server, warns before a max-age stop,
    and serves each user their own upcoming stops."""
    from tests.helpers.hub import free_port

    profiles, policy_file, state = tmp_path / "profiles.yml", tmp_path / "culling.yaml", tmp_path / "state"
    profiles.write_text(yaml.safe_dump(HUB_CATALOGUE))
    policy_file.write_text(yaml.safe_dump(HUB_POLICY))
    async with KubeSim(kubelet="process", workdir=tmp_path / "sim") as sim:
        config = apex_hub_config(sim.url, profiles) + HUB_STARTED.format(
            policy=policy_file, state=state, port=free_port()
        )
        async with HubProcess(tmp_path / "hub", config, env={"KUBECONFIG": sim.kubeconfig_path}) as hub:
            for name in ("alice", "bob", "carol"):
                assert (await hub.api("POST", f"/users/{name}"))[0] == 201
            await start_servers(hub, {"alice": "lab", "bob": "svc", "carol": "long"})

            # alice (lab: idle 30m; the culler's clock is 1h ahead) is stopped once ready, with a reason
            async def alice_stopped():
                return [r for r in records(state) if r["user"] == "alice" and r.get("event") == "stop"]

            [rec] = await wait_for(alice_stopped)
            assert (rec["server"], rec["profile"], rec["reason"], rec["dry_run"]) == (
                "",
                "lab",
                "idle",
                False,
            )
            assert "idle_timeout 0:30:00" in rec["detail"]
            await wait_stopped(hub, "alice")
            assert "Starting managed service apex-culler" in hub.log()

            # carol (long: max_age 1h30m, 30 minutes to go on the culler's clock) is kept and warned
            await hub.wait_ready("carol")

            async def carol_warned():
                return [r for r in records(state) if r["user"] == "carol" and r.get("event") == "warning"]

            [warning] = await wait_for(carol_warned)
            assert warning["reason"] == "max-age" and warning["profile"] == "long"

            # carol sees the warning as the banner of the hub's pages (template_vars "announcement")
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                await hub.login(s, "carol")  # not following the redirect to her server
                async with s.get(f"{hub.url}/hub/home") as r:
                    page = await r.text()
                assert "Your server will be stopped at" in page and "max-age" in page, page[:3000]
                # a browser reaches api/upcoming through the hub's OAuth (no token, the hub login)
                async with s.get(
                    f"{hub.url}/services/apex-culler/api/upcoming",
                    headers={"Accept": "text/html,application/json"},
                ) as r:
                    assert r.status == 200 and "/hub/api/oauth2/authorize" in str(
                        r.history[0].headers["Location"]
                    )
                    assert (await r.json())["user"] == "carol"

            # the upcoming stops at /services/apex-culler/api/upcoming: each user sees only their own
            tokens = {}
            for name in ("alice", "carol"):
                status, body = await hub.api("POST", f"/users/{name}/tokens", json={"note": "test"})
                assert status == 201, body
                tokens[name] = body["token"]
            async with aiohttp.ClientSession() as s:
                url = f"{hub.url}/services/apex-culler/api/upcoming"
                async with s.get(url, headers={"Authorization": f"token {tokens['carol']}"}) as r:
                    assert r.status == 200, await r.text()
                    mine = await r.json()
                assert mine["user"] == "carol" and mine["warn_before"] == 2700
                [srv] = mine["servers"]
                assert srv["profile"] == "long"
                assert [(x["reason"], x["warning"]) for x in srv["stops"]] == [
                    ("max-age", True),
                    ("idle", False),
                ]
                async with s.get(url, headers={"Authorization": f"token {tokens['alice']}"}) as r:
                    assert (r.status, (await r.json())["servers"]) == (200, [])
                async with s.get(url, allow_redirects=False) as r:
                    assert r.status == 403

            # bob's profile is always-on in the catalogue: stopped by an admin, restarted by the culler
            await hub.wait_ready("bob")
            assert (await hub.api("DELETE", "/users/bob/server"))[0] in (202, 204)
            await wait_stopped(hub, "bob")
            srv = await hub.wait_ready("bob")
            assert srv["user_options"] == {"profile": "svc"}
            assert [(r["user"], r["reason"]) for r in records(state) if r["user"] == "bob"] == [
                ("bob", "external")
            ]
            _, carol = await hub.api("GET", "/users/carol")
            assert carol["servers"][""]["ready"]
