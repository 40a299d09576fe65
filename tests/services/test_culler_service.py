"""The service loop against a fake hub (aiohttp): retries with backoff on 5xx / connection errors,
pagination, schedule crossing with an injected clock, never stopping twice; configure()."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web
from traitlets.config import Config

from apex_hub.services import CULLER_SCOPES, RESTART_SCOPE, configure
from apex_hub.services.culler import CullerService, CullingPolicy, PolicyError
from apex_hub.services.culler.service import HubAPIError, HubClient

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # Monday, 11:00 in Rome
POLICY = CullingPolicy.from_data({
    "defaults": {"idle_timeout": "1d", "schedule": {"cron": "0 20 * * 1-5", "timezone": "Europe/Rome"}},
})


class FakeHub:
    """Just enough of the hub REST API; ``fail`` = statuses to answer the next GET /users with."""

    def __init__(self, n_users=3):
        self.fail: list[int] = []
        self.requests: list[tuple[str, str]] = []
        self.users = {f"u{i}": {"kind": "user", "name": f"u{i}", "groups": [], "servers": {"": {
            "name": "", "ready": True, "pending": None, "stopped": False, "url": f"/user/u{i}/",
            "started": T0.isoformat(), "last_activity": T0.isoformat(),
            "user_options": {"profile": "lab"}}}} for i in range(n_users)}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/hub/api/", self.root)
        app.router.add_get("/hub/api/users", self.list_users)
        app.router.add_get("/hub/api/users/{name}", self.get_user)
        app.router.add_delete("/hub/api/users/{name}/server", self.stop)
        return app

    async def root(self, request):
        return web.json_response({"version": "6.1.1"})

    async def list_users(self, request):
        self.requests.append(("GET", str(request.rel_url)))
        if self.fail:
            return web.Response(status=self.fail.pop(0), text="hub is busy")
        offset, limit = int(request.query.get("offset", 0)), 2
        items = list(self.users.values())
        if request.query.get("state") in ("active", "ready"):
            items = [u for u in items if u["servers"]]
        page = items[offset:offset + limit]
        nxt = {"offset": offset + limit, "limit": limit, "url": f"{request.url.with_query({**request.query, 'offset': offset + limit})}"} \
            if offset + limit < len(items) else None
        if request.headers.get("Accept") == "application/jupyterhub-pagination+json":
            return web.json_response({"items": page, "_pagination": {"offset": offset, "limit": limit,
                                                                     "total": len(items), "next": nxt}})
        return web.json_response(items)

    async def get_user(self, request):
        return web.json_response(self.users[request.match_info["name"]])

    async def stop(self, request):
        name = request.match_info["name"]
        self.requests.append(("DELETE", name))
        self.users[name]["servers"][""]["pending"] = "stop"  # slow to stop: stays pending
        return web.Response(status=202)


@pytest.fixture
async def fake():
    hub = FakeHub()
    runner = web.AppRunner(hub.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    hub.url = f"http://127.0.0.1:{port}/hub/api"
    yield hub
    await runner.cleanup()


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def sleeper(log):
    async def sleep(seconds):
        log.append(seconds)
    return sleep


async def test_retries_with_backoff_then_paginates(fake, tmp_path):
    slept: list[float] = []
    fake.fail = [503, 502, 500]
    svc = CullerService(POLICY, api_url=fake.url, api_token="t", state_dir=tmp_path, clock=Clock(T0),
                        sleep=sleeper(slept), backoff=1.0)
    report = await svc.run_once()
    await svc.close()
    assert len(report.decisions) == 3  # 3 users over 2 pages
    assert len(slept) == 3 and slept[0] <= 1.0 < slept[2] <= 4.0  # exponential (with jitter)
    assert all(d.decision.action == "keep" for d in report.decisions)


async def test_gives_up_on_4xx_and_after_n_tries(fake, tmp_path):
    client = HubClient(fake.url, "t", tries=3, sleep=sleeper([]))
    fake.fail = [403]
    with pytest.raises(HubAPIError, match="403"):
        await client.users()
    fake.fail = [503] * 3
    with pytest.raises(HubAPIError, match="503"):
        await client.users()
    await client.close()
    # connection refused is retried too
    slept: list[float] = []
    client = HubClient("http://127.0.0.1:9/hub/api", "t", tries=2, sleep=sleeper(slept))
    with pytest.raises(OSError):
        await client.users()
    assert len(slept) == 1
    await client.close()


async def test_loop_survives_hub_outage(fake, tmp_path):
    fake.fail = [503] * 10
    slept: list[float] = []
    svc = CullerService(POLICY, api_url=fake.url, api_token="t", state_dir=tmp_path, clock=Clock(T0),
                        sleep=sleeper(slept), tries=2, interval=30)
    await svc.run_forever(iterations=3)  # must not raise
    assert slept.count(30) == 2


async def test_schedule_crossing_with_injected_clock_and_no_double_stop(fake, tmp_path):
    clock = Clock(datetime(2026, 11, 23, 18, 59, 30, tzinfo=UTC))  # 19:59:30 in Rome
    svc = CullerService(POLICY, api_url=fake.url, api_token="t", state_dir=tmp_path, clock=clock,
                        sleep=sleeper([]))
    report = await svc.run_once()
    assert report.stopped == [] and not [r for r in fake.requests if r[0] == "DELETE"]
    clock.now += timedelta(minutes=1)  # 20:00:30 in Rome: the schedule has passed
    report = await svc.run_once()
    assert sorted(c.user for c in report.stopped) == ["u0", "u1", "u2"]
    assert {c.decision.reason for c in report.stopped} == {"schedule"}
    deletes = [r for r in fake.requests if r[0] == "DELETE"]
    assert sorted(deletes) == [("DELETE", "u0"), ("DELETE", "u1"), ("DELETE", "u2")]
    # next round: servers are pending stop -> left alone, no second DELETE, no second record
    clock.now += timedelta(minutes=1)
    report = await svc.run_once()
    await svc.close()
    assert report.stopped == [] and len([r for r in fake.requests if r[0] == "DELETE"]) == 3
    lines = [json.loads(line) for line in (tmp_path / "stop-reasons.jsonl").read_text().splitlines()]
    assert [(r["user"], r["reason"], r["profile"], r["dry_run"]) for r in lines] == \
        [(u, "schedule", "lab", False) for u in ("u0", "u1", "u2")]
    assert all(r["time"] == "2026-11-23T19:00:30+00:00" for r in lines)


async def test_dry_run_stops_nothing_and_records_once(fake, tmp_path):
    clock = Clock(T0 + timedelta(days=2))
    svc = CullerService(POLICY, api_url=fake.url, api_token="t", state_dir=tmp_path, clock=clock,
                        sleep=sleeper([]), dry_run=True)
    for _ in range(2):
        report = await svc.run_once()
        assert len(report.would_stop) == 3
    await svc.close()
    assert not [r for r in fake.requests if r[0] == "DELETE"]
    lines = [json.loads(line) for line in (tmp_path / "stop-reasons.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(r["dry_run"] for r in lines)
    assert {r["reason"] for r in lines} == {"schedule"}


def test_configure(tmp_path):
    policy = tmp_path / "culling.yaml"
    policy.write_text("defaults: {idle_timeout: 1h}\n")
    c = Config()
    c.JupyterHub.services = [{"name": "other", "api_token": "x"}]
    configure(c, culler={"policy": str(policy), "state_dir": "/srv/culler", "dry_run": True})
    svc = c.JupyterHub.services[-1]
    assert svc["name"] == "apex-culler" and c.JupyterHub.services[0]["name"] == "other"
    assert svc["command"][1:] == ["-m", "apex_hub.services.culler", f"--policy={policy}", "--interval=60",
                                  "--dry-run=true", "--state-dir=/srv/culler"]
    [role] = c.JupyterHub.load_roles
    assert role["services"] == ["apex-culler"] and role["scopes"] == CULLER_SCOPES  # no restarts needed
    # always-on somewhere -> may start servers; configure twice -> one service, one role
    policy.write_text("groups: {ops: {session_mode: always-on}}\n")
    configure(c, culler={"policy": str(policy)})
    assert [s["name"] for s in c.JupyterHub.services] == ["other", "apex-culler"]
    assert c.JupyterHub.load_roles[-1]["scopes"] == CULLER_SCOPES + [RESTART_SCOPE]
    # a bad policy fails at hub start-up, naming the field
    policy.write_text("defaults: {schedule: {cron: '0 20 * * 1-5', timezone: Europe/Rom}}\n")
    with pytest.raises(PolicyError, match="defaults.schedule.timezone"):
        configure(Config(), culler={"policy": str(policy)})


def test_scopes_exist_in_jupyterhub():
    from jupyterhub.scopes import scope_definitions
    assert set(CULLER_SCOPES + [RESTART_SCOPE]) <= set(scope_definitions)
