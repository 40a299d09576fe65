"""Monitoring without a hub: Nagios codes, staleness with an injected clock, configure() and its role,
the page's escaping, the service's metrics with an injected clock."""

from __future__ import annotations

import sys

import pytest
from traitlets.config import Config

from apex_hub.services import configure
from apex_hub.services.common.listen import listen_address
from apex_hub.services.monitoring import (
    CRITICAL,
    OK,
    UNKNOWN,
    WARNING,
    Check,
    MonitoringService,
    ProbeResult,
    ProbeSettings,
    Settings,
    overall,
    probe_verdict,
    worst,
)
from apex_hub.services.monitoring.app import MonitoringApp
from apex_hub.services.monitoring.web import render


def result(code=OK, finished=1000.0, message="fine", **kw) -> ProbeResult:
    return ProbeResult(id=1, started=finished - 10, finished=finished, code=code, message=message, **kw)


def test_worst_orders_critical_warning_unknown_ok():
    assert worst([]) == OK
    assert worst([OK, UNKNOWN]) == UNKNOWN
    assert worst([UNKNOWN, WARNING, OK]) == WARNING
    assert worst([WARNING, CRITICAL, UNKNOWN]) == CRITICAL


def test_staleness_with_an_injected_clock():
    last = result(OK, finished=1000.0)
    assert probe_verdict(last, now=1000 + 60, stale_after=60, since=0).code == OK
    stale = probe_verdict(last, now=1000 + 61, stale_after=60, since=0)
    assert stale.code == CRITICAL
    assert stale.message.startswith("last probe result is stale: 61s old (stale after 60s)"), stale.message
    # a failed result keeps its own code until it is stale too
    assert probe_verdict(result(WARNING), now=1030, stale_after=60, since=0).code == WARNING
    # no result: UNKNOWN at first, CRITICAL once the service has waited longer than the limit
    assert probe_verdict(None, now=50, stale_after=60, since=0).code == UNKNOWN
    never = probe_verdict(None, now=61, stale_after=60, since=0)
    assert never.code == CRITICAL and "no probe result in 61s" in never.message


def test_overall_names_every_part_that_is_not_ok():
    probe = Check(OK, "fine", 0)
    assert overall(probe, {"hub_api": Check(OK, "up", 0)}) == (OK, "all checks OK")
    code, message = overall(
        probe,
        {
            "hub_api": Check(OK, "up", 0),
            "kubernetes": Check(CRITICAL, "refused", 0),
            "services": Check(WARNING, "slow", 0),
        },
    )
    assert code == CRITICAL
    assert message == "kubernetes: refused; services: slow"


def test_default_staleness_covers_the_longest_probe():
    s = Settings(
        interval=300,
        stale_intervals=3,
        probe=ProbeSettings(ready_timeout=300, proxy_timeout=15, kernel_timeout=60, stop_timeout=120),
    )
    assert s.staleness() == 3 * 300 + 300 + 15 + 60 + 120
    assert Settings(stale_after=42).staleness() == 42


async def test_metrics_and_status_follow_the_injected_clock():
    now = [10_000.0]
    service = MonitoringService(
        Settings(api_url="http://127.0.0.1:1/hub/api", api_token="t", interval=10, stale_after=30),
        clock=lambda: now[0],
    )
    try:
        assert service.status()["probe"]["status"] == "UNKNOWN"
        ok = result(
            OK,
            finished=now[0],
            phases={"spawn_request": 0.1, "server_ready": 3.0, "proxy": 0.02, "kernel": 1.0, "stop": 2.0},
        )
        service.history.append(ok)
        service.metrics.probe(ok)
        from prometheus_client import generate_latest

        text = generate_latest(service.metrics.registry).decode()
        assert "apex_monitoring_probe_success 1.0" in text
        assert "apex_monitoring_probe_stale 0.0" in text
        assert 'apex_monitoring_probe_phase_seconds_count{phase="server_ready"} 1.0' in text
        assert service.status()["code"] == OK
        now[0] += 31  # no probe for longer than stale_after
        st = service.status()
        assert st["code"] == CRITICAL and "stale" in st["probe"]["message"]
        text = generate_latest(service.metrics.registry).decode()
        assert "apex_monitoring_probe_stale 1.0" in text
        assert "apex_monitoring_probe_seconds_since_last_success 31.0" in text
        assert "apex_monitoring_status 2.0" in text
    finally:
        await service.close()


def test_the_page_escapes_messages():
    st = {
        "service": "apex-monitoring",
        "status": "CRITICAL",
        "code": CRITICAL,
        "message": "<script>x</script>",
        "time": "now",
        "components": {"hub_api": Check(OK, "<b>up</b>", 0).to_json()},
        "probe": {
            **Check(CRITICAL, "<img src=x>", 0).to_json(),
            "user": "apex-probe",
            "profile": "probe",
            "interval_seconds": 300,
            "stale_after_seconds": 900,
            "last_success_at": None,
            "running": None,
            "paused": False,
        },
        "history": [
            result(
                CRITICAL, message="<i>bad</i>", failed_phase="proxy", phases={"spawn_request": 0.5}
            ).to_json()
        ],
    }
    html = render(st)
    for raw in ("<script>x</script>", "<b>up</b>", "<img src=x>", "<i>bad</i>"):
        assert raw not in html
    assert "&lt;script&gt;" in html and '<td class="failed">failed</td>' in html


def test_configure_adds_the_service_its_role_and_the_probe_group(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", "/etc/kube/config")
    c = Config()
    c.JupyterHub.ip, c.JupyterHub.port = "0.0.0.0", 8000
    c.JupyterHub.services = [{"name": "other"}]
    c.JupyterHub.load_groups = {"apex-probe": {"users": ["old-probe"]}}
    configure(
        c,
        monitoring={
            "profile": "probe",
            "interval": 60,
            "kernel": False,
            "metrics_token": "m3tr1cs",
            "services": ["apex-culler", "apex-accounting"],
        },
    )
    [other, svc] = c.JupyterHub.services
    assert other == {"name": "other"}
    assert svc["name"] == "apex-monitoring" and svc["url"] == "http://127.0.0.1:8183"
    cmd = svc["command"]
    assert cmd[:3] == [sys.executable, "-m", "apex_hub.services.monitoring"]
    assert {
        "--public-url=http://127.0.0.1:8000",
        "--profile=probe",
        "--interval=60",
        "--no-kernel",
        "--kube-api=/etc/kube/config",
        "--services=apex-culler,apex-accounting",
    } <= set(cmd), cmd
    assert not any("m3tr1cs" in a for a in cmd)  # the token is not on the command line ...
    assert svc["environment"] == {"APEX_MONITORING_METRICS_TOKEN": "m3tr1cs"}  # ... but in the environment
    [role] = c.JupyterHub.load_roles
    assert role["services"] == ["apex-monitoring"]
    from apex_hub.hubconfig import jupyterhub_version

    expected = [
        "admin:users!user=apex-probe",
        "servers!user=apex-probe",
        "tokens!user=apex-probe",
        "list:services",
        "read:services",
        "admin:groups!group=apex-probe",
        "groups!group=apex-probe",
    ]
    if jupyterhub_version() < (6, 1):  # 5.5 checks tokens!user= of a service as if the user were a service
        expected.append("tokens!service=apex-probe")
    assert role["scopes"] == expected
    # the operator's groups are left alone; no probe group is loaded: with an authenticator that manages
    # groups (the APEx one) JupyterHub refuses load_groups, so the service makes the group through the API
    assert c.JupyterHub.load_groups == {"apex-probe": {"users": ["old-probe"]}}
    # the command line parses back into the same settings
    app = MonitoringApp()
    app.initialize(cmd[3:])
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://hub:8081/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "x")
    s = app.settings()
    assert s.probe.user_options == {"profile": "probe"} and s.interval == 60 and s.probe.kernel is False
    assert s.services == ["apex-culler", "apex-accounting"]


def test_configure_with_proxy_routes_adds_only_what_that_check_reads():
    c = Config()
    configure(
        c,
        monitoring={
            "profile": "probe",
            "proxy_routes": True,
            "probe_user": "probe-bot",
            "public_url": "https://hub.example.org",
        },
    )
    [role] = c.JupyterHub.load_roles
    assert {"proxy", "list:users", "read:servers"} <= set(role["scopes"])
    assert "servers!user=probe-bot" in role["scopes"]
    assert not any(s in ("admin:users", "admin:servers", "tokens", "servers") for s in role["scopes"])
    assert "--public-url=https://hub.example.org" in c.JupyterHub.services[0]["command"]


@pytest.mark.parametrize(
    "options, error",
    [
        ({}, "'profile' (the profile slug the probe spawns) is required"),
        ({"profile": "p", "intervall": 5}, "unknown option(s) intervall"),
        ({"profile": "p", "kernel_failure": "fatal"}, "'kernel_failure' must be 'warning' or 'critical'"),
    ],
)
def test_configure_refuses_bad_options(options, error):
    with pytest.raises(ValueError) as info:
        configure(Config(), monitoring=options)
    assert error in str(info.value)


def test_listen_address():
    assert listen_address("http://127.0.0.1:8183") == ("127.0.0.1", 8183)
    assert listen_address("http://hub:8183") == ("0.0.0.0", 8183)
    assert listen_address("https://hub") == ("0.0.0.0", 443)


async def test_page_auth_hub_guards_the_page_and_status_but_not_metrics(monkeypatch):
    """page_auth="hub": no hub identity → the page redirects to the hub's OAuth, status.json is 403;
    /metrics keeps its own bearer token, /health is open."""
    import aiohttp

    from apex_hub.services.monitoring.web import make_app
    from tests.helpers.hub import free_port

    for var, value in {
        "JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api",
        "JUPYTERHUB_API_TOKEN": "t",
        "JUPYTERHUB_CLIENT_ID": "service-apex-monitoring",
        "JUPYTERHUB_SERVICE_NAME": "apex-monitoring",
        "JUPYTERHUB_SERVICE_PREFIX": "/services/apex-monitoring/",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/apex-monitoring/oauth_callback",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_HOST": "",
    }.items():
        monkeypatch.setenv(var, value)
    service = MonitoringService(Settings(api_url="http://127.0.0.1:1/hub/api", api_token="t"))
    app = make_app(service, "/services/apex-monitoring/", metrics_token="m", page_auth=True)
    port = free_port()
    server = app.listen(port, address="127.0.0.1")
    base = f"http://127.0.0.1:{port}/services/apex-monitoring/"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(base, allow_redirects=False) as r:
                assert r.status == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"], r.headers
            async with s.get(base + "status.json", allow_redirects=False) as r:
                assert r.status == 403
            async with s.get(base + "metrics") as r:
                assert r.status == 401
            async with s.get(base + "metrics", headers={"Authorization": "Bearer m"}) as r:
                assert r.status == 200 and "apex_monitoring_status" in await r.text()
            async with s.get(base + "health") as r:
                assert r.status == 200
    finally:
        server.stop()
        await service.close()


async def test_proxy_answers_are_told_apart():
    from apex_hub.services.common.hub import HubClient
    from apex_hub.services.monitoring.probe import Probe

    hub = HubClient("http://127.0.0.1:1/hub/api", "t")
    try:
        probe = Probe(hub, "http://127.0.0.1:8000", ProbeSettings())
        problem = probe._proxy_problem
        assert problem(200, "", '{"started": "x", "last_activity": "y", "kernels": 0}') is None
        assert "answered 200 but not the server's status" in problem(200, "", "<html><title>Hub</title>")
        assert problem(302, "/hub/user/apex-probe/api/status?redirects=1", "").startswith(
            "no proxy route to the probe's server"
        )
        assert "not running (HTTP 424)" in problem(424, "", "")
        assert "token was refused (HTTP 403)" in problem(403, "", "")
        dead = problem(503, "", "<!DOCTYPE HTML><html><head><title>JupyterHub</title></head><body>...")
        assert dead == (
            "dead proxy route: GET /user/apex-probe/api/status answered HTTP 503 from the proxy "
            "(the route's target does not answer): an HTML page (JupyterHub)"
        )
    finally:
        await hub.close()


def test_a_file_offset_clock_runs_ahead_by_what_its_file_says(tmp_path):
    import time

    from apex_hub.services.common.clock import FileOffsetClock, advance

    clock = FileOffsetClock(tmp_path / "clock")
    assert clock.offset() == 0  # no file yet
    before = time.time()
    assert advance(tmp_path / "clock", 40) == 40
    assert advance(tmp_path / "clock", 2.5) == 42.5  # moves on from where it is
    assert clock.offset() == 42.5
    assert clock.time() >= before + 42.5
    assert clock.monotonic() >= time.monotonic() + 42
    (tmp_path / "clock").write_text("not a number")
    assert clock.offset() == 0


async def test_a_phase_wait_ends_when_the_injected_clock_passes_its_deadline():
    import asyncio

    from apex_hub.services.common.hub import HubClient
    from apex_hub.services.monitoring.probe import Probe

    now = [100.0]
    hub = HubClient("http://127.0.0.1:1/hub/api", "t")
    try:
        probe = Probe(hub, "http://127.0.0.1:8000", ProbeSettings(), monotonic=lambda: now[0])
        assert await probe._until(now[0] + 30, asyncio.sleep(0, "done")) == "done"  # in time: its result
        never = asyncio.Event()
        wait = asyncio.ensure_future(probe._until(now[0] + 30, never.wait()))
        await asyncio.sleep(0.3)
        assert not wait.done()  # 0.3 s real, none on the clock
        now[0] += 30  # the clock reaches the deadline: the wait ends without the 30 s
        with pytest.raises(TimeoutError):
            await wait
    finally:
        await hub.close()
