"""The service loop against a fake hub (aiohttp): retries with backoff on 5xx / connection errors,
pagination, schedule crossing with an injected clock, never stopping twice; configure()."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from traitlets.config import Config

from apex_hub.services import CULLER_SCOPES, RESTART_SCOPE, configure, restart_scope
from apex_hub.services.culler import CullerService, CullingPolicy, PolicyError
from apex_hub.services.culler.service import HubAPIError, HubClient

UTC = UTC
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # Monday, 11:00 in Rome
POLICY = CullingPolicy.from_data(
    {
        "defaults": {"idle_timeout": "1d", "schedule": {"cron": "0 20 * * 1-5", "timezone": "Europe/Rome"}},
    }
)


class FakeHub:
    """Just enough of the hub REST API; ``fail`` = statuses to answer the next GET /users with."""

    def __init__(self, n_users=3):
        self.fail: list[int] = []
        self.requests: list[tuple[str, str]] = []
        self.users = {
            f"u{i}": {
                "kind": "user",
                "name": f"u{i}",
                "groups": [],
                "servers": {
                    "": {
                        "name": "",
                        "ready": True,
                        "pending": None,
                        "stopped": False,
                        "url": f"/user/u{i}/",
                        "started": T0.isoformat(),
                        "last_activity": T0.isoformat(),
                        "user_options": {"profile": "lab"},
                    }
                },
            }
            for i in range(n_users)
        }

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/hub/api/", self.root)
        app.router.add_get("/hub/api/users", self.list_users)
        app.router.add_get("/hub/api/users/{name}", self.get_user)
        app.router.add_delete("/hub/api/users/{name}/server", self.stop)
        app.router.add_post("/hub/api/users/{name}/server", self.start)
        return app

    #: POST /users/x/server: answer with this status; "spawn fails" = the server stays stopped
    start_status = 202
    spawn_fails = True

    def stopped_server(self, name: str, profile: str = "svc") -> None:
        self.users[name]["servers"][""] = {
            "name": "",
            "ready": False,
            "pending": None,
            "stopped": True,
            "url": f"/user/{name}/",
            "started": None,
            "last_activity": None,
            "user_options": {"profile": profile},
        }

    async def start(self, request):
        name = request.match_info["name"]
        self.requests.append(("POST", name))
        if self.start_status >= 400:
            return web.Response(status=self.start_status, text="spawner says no")
        if not self.spawn_fails:
            srv = self.users[name]["servers"][""]
            srv.update(ready=True, stopped=False, started=T0.isoformat(), last_activity=T0.isoformat())
        return web.Response(status=self.start_status)

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
        page = items[offset : offset + limit]
        nxt = (
            {
                "offset": offset + limit,
                "limit": limit,
                "url": f"{request.url.with_query({**request.query, 'offset': offset + limit})}",
            }
            if offset + limit < len(items)
            else None
        )
        if request.headers.get("Accept") == "application/jupyterhub-pagination+json":
            return web.json_response(
                {
                    "items": page,
                    "_pagination": {"offset": offset, "limit": limit, "total": len(items), "next": nxt},
                }
            )
        return web.json_response(items)

    async def get_user(self, request):
        self.requests.append(("GET user", request.match_info["name"]))
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
    svc = CullerService(
        POLICY,
        api_url=fake.url,
        api_token="t",
        state_dir=tmp_path,
        clock=Clock(T0),
        sleep=sleeper(slept),
        backoff=1.0,
    )
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
    svc = CullerService(
        POLICY,
        api_url=fake.url,
        api_token="t",
        state_dir=tmp_path,
        clock=Clock(T0),
        sleep=sleeper(slept),
        tries=2,
        interval=30,
    )
    await svc.run_forever(iterations=3)  # must not raise
    assert slept.count(30) == 2


async def test_schedule_crossing_with_injected_clock_and_no_double_stop(fake, tmp_path):
    clock = Clock(datetime(2026, 11, 23, 18, 59, 30, tzinfo=UTC))  # 19:59:30 in Rome
    svc = CullerService(
        POLICY, api_url=fake.url, api_token="t", state_dir=tmp_path, clock=clock, sleep=sleeper([])
    )
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
    assert report.stopped == [] and len([r for r in fake.requests if r[0] == "DELETE"]) == 3
    lines = [json.loads(line) for line in (tmp_path / "stop-reasons.jsonl").read_text().splitlines()]
    assert [(r["user"], r["reason"], r["profile"], r["dry_run"]) for r in lines] == [
        (u, "schedule", "lab", False) for u in ("u0", "u1", "u2")
    ]
    assert all(r["time"] == "2026-11-23T19:00:30+00:00" for r in lines)
    # the servers are gone: told apart from external stops once, then forgotten (months of rounds)
    assert len(svc._stopped_by_us) == 3
    for user in fake.users.values():
        user["servers"] = {}
    report = await svc.run_once()
    assert report.external == [] and svc._stopped_by_us == set()
    assert len((tmp_path / "stop-reasons.jsonl").read_text().splitlines()) == 3
    await svc.close()


async def test_dry_run_stops_nothing_and_records_once(fake, tmp_path):
    clock = Clock(T0 + timedelta(days=2))
    svc = CullerService(
        POLICY,
        api_url=fake.url,
        api_token="t",
        state_dir=tmp_path,
        clock=clock,
        sleep=sleeper([]),
        dry_run=True,
    )
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
    assert svc["command"][1:] == [
        "-m",
        "apex_hub.services.culler",
        f"--policy={policy}",
        "--interval=60",
        "--dry-run=true",
        "--state-dir=/srv/culler",
    ]
    [role] = c.JupyterHub.load_roles
    assert role["services"] == ["apex-culler"] and role["scopes"] == CULLER_SCOPES  # no restarts needed
    # always-on somewhere -> may start servers; configure twice -> one service, one role
    policy.write_text("groups: {ops: {session_mode: always-on}}\n")
    configure(c, culler={"policy": str(policy)})
    assert [s["name"] for s in c.JupyterHub.services] == ["other", "apex-culler"]
    assert c.JupyterHub.load_roles[-1]["scopes"] == CULLER_SCOPES + [restart_scope()]
    # a bad policy fails at hub start-up, naming the field
    policy.write_text("defaults: {schedule: {cron: '0 20 * * 1-5', timezone: Europe/Rom}}\n")
    with pytest.raises(PolicyError, match=r"defaults.schedule.timezone"):
        configure(Config(), culler={"policy": str(policy)})


def test_scopes_exist_in_jupyterhub():
    from jupyterhub.scopes import scope_definitions

    from apex_hub.hubconfig import jupyterhub_version

    assert set(CULLER_SCOPES + [restart_scope()]) <= set(scope_definitions)
    # JupyterHub 5.5 (the Z2JH 4.4 image) has no start:servers: the culler falls back to servers
    assert restart_scope() == (RESTART_SCOPE if jupyterhub_version() >= (6, 0) else "servers")


ALWAYS_ON = CullingPolicy.from_data({"defaults": {"session_mode": "always-on"}})


def ledger(state) -> list[dict]:
    path = state / "stop-reasons.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_always_on_restarts_are_rate_limited_with_backoff(fake, tmp_path):
    from apex_hub.services.culler.restarts import RestartLimiter

    for name in ("u1", "u2"):
        del fake.users[name]
    fake.stopped_server("u0")
    clock = Clock(T0)
    svc = CullerService(
        ALWAYS_ON,
        api_url=fake.url,
        api_token="t",
        state_dir=tmp_path,
        clock=clock,
        sleep=sleeper([]),
        restarts=RestartLimiter(limit=3, window=3600, backoff=60),
    )

    async def round_at(seconds: float):
        clock.now = T0 + timedelta(seconds=seconds)
        return await svc.run_once()

    def posts() -> int:
        return len([r for r in fake.requests if r[0] == "POST"])

    assert [c.user for c in (await round_at(0)).restarted] == ["u0"] and posts() == 1
    # the spawn failed (still stopped): back off 60s after the restart, then 120s, ...
    assert [c.user for c in (await round_at(30)).held_back] == ["u0"] and posts() == 1
    assert (await round_at(61)).restarted and posts() == 2
    assert (await round_at(120)).held_back and posts() == 1 + 1
    assert (await round_at(180)).held_back and posts() == 2  # 61 + 120 = 181
    assert (await round_at(182)).restarted and posts() == 3
    assert [r for r in ledger(tmp_path) if r["event"] == "restart-limit"] == []
    # three restarts within the hour: give up, one ledger line, no more restarts
    report = await round_at(900)
    assert report.held_back and posts() == 3
    [gave_up] = [r for r in ledger(tmp_path) if r["event"] == "restart-limit"]
    assert (gave_up["user"], gave_up["reason"], gave_up["failures"]) == ("u0", "always-on", 3)
    assert (
        "3 restarts within 1:00:00, the limit is 3: giving up until 2026-11-23T11:00:00+00:00"
        in gave_up["detail"]
    )
    await round_at(1800)
    assert posts() == 3 and len([r for r in ledger(tmp_path) if r["event"] == "restart-limit"]) == 1
    # an hour after the first restart one slot is free again; this time the spawn works
    fake.spawn_fails = False
    assert (await round_at(3601)).restarted and posts() == 4
    report = await round_at(3630)
    assert report.restarted == [] and report.held_back == [] and svc.restarts.failures(("u0", "")) == 0
    # an hour without a restart: the server's bookkeeping is dropped (the culler runs for months)
    assert len(svc.restarts) == 1
    await round_at(3601 + 3600)
    assert len(svc.restarts) == 0
    await svc.close()


async def test_a_refused_restart_backs_off_at_once(fake, tmp_path):
    from apex_hub.services.culler.restarts import RestartLimiter

    fake.stopped_server("u0")
    fake.start_status = 500
    clock = Clock(T0)
    svc = CullerService(
        ALWAYS_ON,
        api_url=fake.url,
        api_token="t",
        state_dir=tmp_path,
        clock=clock,
        sleep=sleeper([]),
        tries=1,
        restarts=RestartLimiter(limit=5, window=3600, backoff=60),
    )
    report = await svc.run_once()
    assert report.restarted == [] and "restart u0/" in report.errors[0] and "500" in report.errors[0]
    assert svc.restarts.failures(("u0", "")) == 1
    clock.now += timedelta(seconds=59)
    assert [c.user for c in (await svc.run_once()).held_back] == ["u0"]
    clock.now += timedelta(seconds=2)
    fake.start_status = 202
    assert [c.user for c in (await svc.run_once()).restarted] == ["u0"]
    await svc.close()


async def test_session_mode_from_the_catalogue(fake, tmp_path):
    profiles = tmp_path / "profiles.yml"
    profiles.write_text(
        "profiles:\n"
        "  - {slug: lab, display_name: Lab, default: true}\n"
        "  - {slug: svc, display_name: Service, session_mode: always-on}\n"
        "  - {slug: retired, display_name: Retired, session_mode: off}\n"
    )
    fake.stopped_server("u0", "svc")  # always-on in the catalogue: restarted
    fake.users["u1"]["servers"][""]["user_options"] = {"profile": "retired"}  # off: stopped
    fake.stopped_server("u2", "lab")  # on-demand: left stopped
    policy = CullingPolicy.from_data({"defaults": {"idle_timeout": "1d"}})
    svc = CullerService(
        policy,
        api_url=fake.url,
        api_token="t",
        state_dir=tmp_path,
        clock=Clock(T0),
        sleep=sleeper([]),
        catalogue=profiles,
    )
    report = await svc.run_once()
    assert [c.user for c in report.restarted] == ["u0"]
    assert [(c.user, c.decision.reason) for c in report.stopped] == [("u1", "session-off")]
    assert "include_stopped_servers=1" in fake.requests[0][1]  # always-on comes from the catalogue only
    assert report.stopped[0].decision.policy.sources == ("catalogue.retired",)
    # the policy file's profile section overrides the catalogue; the catalogue is re-read when it changes
    policy = CullingPolicy.from_data({"profiles": {"svc": {"session_mode": "on-demand"}}})
    svc2 = CullerService(
        policy,
        api_url=fake.url,
        api_token="t",
        state_dir=tmp_path / "2",
        clock=Clock(T0),
        sleep=sleeper([]),
        catalogue=profiles,
    )
    fake.stopped_server("u0", "svc")
    assert (await svc2.run_once()).restarted == []
    profiles.write_text(
        "profiles:\n  - {slug: lab, display_name: Lab, default: true, session_mode: always-on}\n"
    )
    report = await svc2.run_once()
    assert [c.user for c in report.restarted] == ["u2"]  # lab is always-on now
    await svc.close()
    await svc2.close()
    # a catalogue that cannot be read at start is refused
    (tmp_path / "bad.yml").write_text("profiles: [{slug: x}]\n")
    from apex_hub.profiles.errors import CatalogueError

    with pytest.raises(CatalogueError, match="display_name"):
        CullerService(
            policy, api_url=fake.url, api_token="t", state_dir=tmp_path, catalogue=tmp_path / "bad.yml"
        )


async def test_warning_before_a_scheduled_stop(fake, tmp_path):
    from apex_hub.services.culler.announce import UpcomingAnnouncement

    clock = Clock(datetime(2026, 11, 23, 18, 40, tzinfo=UTC))  # 19:40 in Rome, the stop is at 20:00
    svc = CullerService(
        POLICY,
        api_url=fake.url,
        api_token="t",
        state_dir=tmp_path,
        clock=clock,
        sleep=sleeper([]),
        warn_before=900,
    )
    await svc.run_once()
    upcoming = svc.upcoming_for("u0")
    [srv] = upcoming["servers"]
    assert srv["server"] == "" and srv["profile"] == "lab"
    assert srv["stops"][0] == {
        "reason": "schedule",
        "at": "2026-11-23T20:00:00+01:00",
        "warning": False,
        "timezone": "Europe/Rome",
        "detail": "scheduled shutdown '0 20 * * 1-5' Europe/Rome",
    }
    assert ledger(tmp_path) == []
    banner = UpcomingAnnouncement(tmp_path, fallback=None)
    assert banner(HubUserName("u0")) is None
    clock.now += timedelta(minutes=6)  # 19:46: within 15 minutes
    await svc.run_once()
    warnings = [r for r in ledger(tmp_path) if r["event"] == "warning"]
    assert sorted(r["user"] for r in warnings) == ["u0", "u1", "u2"]
    assert all(r["reason"] == "schedule" and r["at"] == "2026-11-23T20:00:00+01:00" for r in warnings)
    assert svc.upcoming_for("u0")["servers"][0]["stops"][0]["warning"] is True
    assert svc.upcoming_for("nobody")["servers"] == []
    text = banner(HubUserName("u0"))
    assert "will be stopped at 20:00 Europe/Rome" in text and "scheduled shutdown" in text
    assert banner(HubUserName("nobody")) is None and banner(None) is None
    clock.now += timedelta(minutes=4)  # once per server session and stop time
    await svc.run_once()
    assert len([r for r in ledger(tmp_path) if r["event"] == "warning"]) == 3
    clock.now += timedelta(minutes=11)  # 20:01: stopped; the stop lines follow the warnings
    report = await svc.run_once()
    await svc.close()
    assert len(report.stopped) == 3
    assert [r["event"] for r in ledger(tmp_path)] == ["warning"] * 3 + ["stop"] * 3


class HubUserName:
    def __init__(self, name):
        self.name = name


async def test_one_listing_per_round_and_one_delete_per_stop(tmp_path):
    """A round lists the users once (paged) and stops each server with one DELETE, whose answer
    (202: pending stop) confirms it: no second listing, no GET per user."""
    hub = FakeHub(n_users=25)
    runner = web.AppRunner(hub.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hub/api"
    try:
        svc = CullerService(
            POLICY,
            api_url=url,
            api_token="t",
            state_dir=tmp_path,
            sleep=sleeper([]),
            clock=Clock(datetime(2026, 11, 23, 19, 0, 30, tzinfo=UTC)),
        )
        report = await svc.run_once()
        await svc.close()
    finally:
        await runner.cleanup()
    assert len(report.stopped) == 25 and report.errors == []
    assert [c.user for c in report.stopped] == [f"u{i}" for i in range(25)]  # recorded in listing order
    listings = [r for r in hub.requests if r[0] == "GET"]
    pages = (25 + 1) // 2  # the fake hub's pages hold 2 users
    assert len(listings) == pages and all("state=active" in r[1] for r in listings)
    assert sorted(r for r in hub.requests if r[0] == "DELETE") == sorted(
        ("DELETE", f"u{i}") for i in range(25)
    )
    assert not [r for r in hub.requests if r[0] == "GET user"]
    assert [r["user"] for r in ledger(tmp_path)] == [f"u{i}" for i in range(25)]


async def test_a_failing_stop_is_retried_alone_and_an_error_is_not_recorded(tmp_path):
    """A transient failure repeats that one request, not the round; a refused stop is an error of the
    round, not a stop line (the next round decides again)."""
    answers = {"u0": [503, 202], "u1": [403], "u2": [404]}

    class FlakyHub(FakeHub):
        async def stop(self, request):
            name = request.match_info["name"]
            self.requests.append(("DELETE", name))
            status = answers[name].pop(0)
            if status == 202:
                self.users[name]["servers"][""]["pending"] = "stop"
            return web.Response(status=status, text="" if status < 400 else "no")

    hub = FlakyHub(n_users=3)
    runner = web.AppRunner(hub.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hub/api"
    slept: list[float] = []
    try:
        svc = CullerService(
            POLICY,
            api_url=url,
            api_token="t",
            state_dir=tmp_path,
            sleep=sleeper(slept),
            clock=Clock(datetime(2026, 11, 23, 19, 0, 30, tzinfo=UTC)),
        )
        report = await svc.run_once()
        await svc.close()
    finally:
        await runner.cleanup()
    assert [c.user for c in report.stopped] == ["u0", "u2"]  # u2: 404, already gone
    assert len(report.errors) == 1 and report.errors[0].startswith(
        "stop u1/: DELETE /users/u1/server: HTTP 403"
    )
    assert sorted(r[1] for r in hub.requests if r[0] == "DELETE") == ["u0", "u0", "u1", "u2"]
    assert len(slept) == 1  # one backoff, for u0's 503
    assert len([r for r in hub.requests if r[0] == "GET"]) == 2  # the listing was not repeated
    assert [r["user"] for r in ledger(tmp_path)] == ["u0", "u2"]


def test_configure_options(tmp_path):
    from apex_hub.services.announce import HubAnnouncement

    policy, profiles = tmp_path / "culling.yaml", tmp_path / "profiles.yml"
    policy.write_text("defaults: {idle_timeout: 1h}\n")
    profiles.write_text(
        "profiles:\n  - {slug: lab, display_name: Lab}\n"
        "  - {slug: svc, display_name: Svc, session_mode: always-on}\n"
    )
    c = Config()
    c.APExSpawner.profiles_file = str(profiles)
    c.JupyterHub.template_vars = {"announcement": "Maintenance on Friday"}
    configure(
        c,
        culler={
            "policy": str(policy),
            "state_dir": str(tmp_path),
            "warn_before": "15m",
            "url": "http://127.0.0.1:8182",
            "restart_limit": 2,
            "restart_window": "30m",
            "restart_backoff": "10s",
        },
    )
    [svc] = c.JupyterHub.services
    # the spawner's catalogue is read by default; always-on in it -> the role may start servers
    assert f"--profiles={profiles}" in svc["command"]
    assert {"--warn-before=900", "--restart-limit=2", "--restart-window=1800", "--restart-backoff=10"} <= set(
        svc["command"]
    )
    assert svc["url"] == "http://127.0.0.1:8182" and svc["display"] is False
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["apex-culler"]["scopes"] == CULLER_SCOPES + [restart_scope()]
    # with a url, every user may reach the service (the default user role plus that one scope)
    assert roles["user"]["scopes"] == ["self", "access:services!service=apex-culler"]
    banner = c.JupyterHub.template_vars["announcement"]
    assert isinstance(banner, HubAnnouncement) and banner.fallback == "Maintenance on Friday"
    assert list(banner.sources) == ["culler"]
    assert banner(None) == "Maintenance on Friday"  # the operator's announcement stays
    # no catalogue when asked for none; mistakes are named
    c = Config()
    c.APExSpawner.profiles_file = str(profiles)
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "custom:x!user"]}]
    configure(c, culler={"policy": str(policy), "profiles_file": "", "url": "http://127.0.0.1:8182"})
    assert not any(a.startswith("--profiles") for a in c.JupyterHub.services[0]["command"])
    assert c.JupyterHub.load_roles[-1]["scopes"] == CULLER_SCOPES
    assert c.JupyterHub.load_roles[0]["scopes"] == [
        "self",
        "custom:x!user",
        "access:services!service=apex-culler",
    ]
    with pytest.raises(ValueError, match=r"unknown key.*warn_befor"):
        configure(Config(), culler={"policy": str(policy), "warn_befor": "15m"})
    with pytest.raises(PolicyError, match="warn_before: '15 minutes' is not a duration"):
        configure(Config(), culler={"policy": str(policy), "warn_before": "15 minutes"})
    profiles.write_text("profiles:\n  - {slug: lab, display_name: Lab, session_mode: sometimes}\n")
    from apex_hub.profiles.errors import CatalogueError

    with pytest.raises(CatalogueError, match="session_mode"):
        configure(Config(), culler={"policy": str(policy), "profiles_file": str(profiles)})


def test_where_the_api_listens():
    from apex_hub.services.startup import configured_url, listen_address

    # JupyterHub hands every managed service JUPYTERHUB_SERVICE_URL; one without a url gets port 0
    assert configured_url({"JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:0/"}) is None
    assert configured_url({}) is None
    assert configured_url({"JUPYTERHUB_SERVICE_URL": "http://hub:8182/"}) == "http://hub:8182/"

    assert listen_address("http://127.0.0.1:8182") == ("127.0.0.1", 8182)  # local: that address
    assert listen_address("http://hub:8182") == ("0.0.0.0", 8182)  # Kubernetes: a Service name
    assert listen_address("http://hub:8182", bind="9000") == ("0.0.0.0", 9000)
    assert listen_address("http://hub:8182", bind="10.1.2.3:9000") == ("10.1.2.3", 9000)


async def test_a_service_answers_503_while_starting_then_its_application():
    """JupyterHub 5.5 waits ~10 s for a managed service: the accounting service answers at once."""
    import socket

    import aiohttp
    from tornado import web

    from apex_hub.services.startup import listen_early, serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = listen_early("127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/services/x/") as r:
                assert (r.status, r.headers["Retry-After"], await r.json()) == (
                    503,
                    "1",
                    {"status": "starting"},
                )

            class Ready(web.RequestHandler):
                def get(self):
                    self.finish("ready")

            serve(server, web.Application([(r"/services/x/", Ready)]))
            async with http.get(f"http://127.0.0.1:{port}/services/x/") as r:
                assert (r.status, await r.text()) == (200, "ready")
    finally:
        server.stop()
