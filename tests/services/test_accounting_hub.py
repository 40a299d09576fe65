"""End to end: a real JupyterHub + proxy with APExSpawner on kubesim (process kubelet) and the
accounting service started *by the hub* from ``configure(c, accounting={...})`` — its own process,
its own token with exactly its role. The test reads the ledger through the service's REST API
(through the hub's proxy, with a token holding the accounting admin scope).

Covered: sessions recorded with the right fields; a hub restart mid-session; the probe group excluded; the quota refusal at
spawn with its message; a running server stopped over budget (reason ``quota``); the service
killed mid-session and restarted by the hub → the session that stopped and the one that started
while it was down are both there, once; the culler's stop reason attached; APEL files parsed back
field by field; CSV and JSON reports; metrics. Run on SQLite and on a throwaway PostgreSQL.

No wall-clock waits: the servers start together; dave's budget is used up by fake time (the service's
clock held back while his server starts, then let go: ``APEX_ACCOUNTING_CLOCK_OFFSET``, test only);
the hub looks after its services every second, so the killed service is back at once.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import yaml

from apex_hub.kubesim import KubeSim
from apex_hub.services.accounting import apel
from apex_hub.services.common.clock import FileOffsetClock, advance
from tests.helpers import wait
from tests.helpers.hub import SERVICES_POLLED_EVERY_SECOND, HubProcess, apex_hub_config, free_port
from tests.services.test_accounting_ledger import postgres, postgres_database  # noqa: F401 - fixtures

pytestmark = [pytest.mark.process]

CATALOGUE = {"profiles": [{"slug": "lab", "display_name": "JupyterLab", "default": True}]}
QUOTAS = {"period": "month", "users": {"carol": {"cpu_hours": 0}, "dave": {"cpu_hours": 0.0001}}}
CONFIG = (
    SERVICES_POLLED_EVERY_SECOND
    + """
c.JupyterHub.load_roles[0]["scopes"].append("tokens")  # the tester makes alice a token
c.JupyterHub.cleanup_servers = False  # servers outlive the hub restart at the end
c.APExSpawner.cpu_guarantee = 0.5
c.APExSpawner.mem_guarantee = "256M"
c.APExSpawner.workspace_volume = {{"name": "workspace", "size": "1Gi", "mount_path": "/home/jovyan"}}
from apex_hub.services import configure
configure(c, accounting={{
    "url": "http://127.0.0.1:{port}",
    "db_url": "{db_url}",
    "stop_reasons": "{state}/stop-reasons.jsonl",
    "interval": 1,
    "quotas": "{quotas}",
    "quota_stop": True,
    "apel": {{"dir": "{apel}", "site": "APEX-TEST", "service": "hub.example.org", "interval": 3600}},
    "admin_services": ["tester"],
    "admin_users": ["ada"],
    "metrics_token": "{metrics_token}",
    "environment": {{"KUBECONFIG": "{kubeconfig}", "APEX_ACCOUNTING_CLOCK_OFFSET": "@{state}/clock-offset"}},
    "extra_args": ["--watch-timeout=20"],
}})
"""
)
PREFIX = "/services/apex-accounting"
METRICS_TOKEN = "prometheus-" + "0123456789abcdef"


async def until(what: str, check):
    """``check()`` (async) until it returns something truthy — ``what`` says what is awaited; an
    answer not there yet (the service restarting behind the proxy: an error status, a missing key)
    is "not yet". No deadline: tests.helpers.wait.until."""

    async def attempt():
        try:
            return await check()
        except (AssertionError, KeyError, ValueError):
            return None

    return await wait.until(attempt, interval=0.1)


async def sessions(hub: HubProcess, **params) -> list[dict]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    status, body = await hub.get(f"{PREFIX}/api/sessions?since=2000-01-01&{query}")
    assert status == 200, (status, body)
    return json.loads(body)["items"]


def service_pids(marker: str) -> list[int]:
    """The accounting service process(es) of this test (found by their unique command line)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"apex_hub.services.accounting" in cmd and any(marker.encode() in a for a in cmd):
            pids.append(int(entry.name))
    return pids


def set_clock(state: Path, seconds: float) -> None:
    """The accounting service's clock offset (APEX_ACCOUNTING_CLOCK_OFFSET=@<state>/clock-offset), at once."""
    path = state / "clock-offset"
    advance(path, seconds - FileOffsetClock(path).offset())


async def wait_ready(hub: HubProcess, user: str) -> dict:
    async def ready():
        status, model = await hub.api("GET", f"/users/{user}")
        srv = (model.get("servers") or {}).get("") if status == 200 else None
        return srv if srv and srv.get("ready") else None

    return await until(f"{user}'s server ready", ready)


async def wait_stopped(hub: HubProcess, user: str) -> None:
    async def gone():
        _, model = await hub.api("GET", f"/users/{user}")
        return "" not in (model.get("servers") or {})

    await until(f"{user}'s server stopped", gone)


@pytest.fixture
def e2e_db_url(request, tmp_path):
    """One backend for the end-to-end test (it is the suite's most expensive): PostgreSQL, the
    production one, where the machine has it; else SQLite. Both backends are tested case by case at
    the ledger level (tests/services/test_accounting_ledger.py) and SQLite end to end below (quotas)."""
    try:
        base = request.getfixturevalue("postgres")
    except pytest.skip.Exception:
        yield f"sqlite:///{tmp_path}/ledger.sqlite"
        return
    with postgres_database(base) as url:
        yield url


async def test_accounting_with_a_real_hub(tmp_path, e2e_db_url):
    db_url = e2e_db_url
    profiles, quotas, state, apel_dir = (
        tmp_path / "profiles.yml",
        tmp_path / "quotas.yaml",
        tmp_path / "state",
        tmp_path / "apel",
    )
    state.mkdir()
    profiles.write_text(yaml.safe_dump(CATALOGUE))
    quotas.write_text(yaml.safe_dump(QUOTAS))
    async with KubeSim(kubelet="process", workdir=tmp_path / "sim") as sim:
        config = apex_hub_config(sim.url, profiles) + CONFIG.format(
            port=free_port(),
            db_url=db_url,
            state=state,
            quotas=quotas,
            apel=apel_dir,
            kubeconfig=sim.kubeconfig_path,
            metrics_token=METRICS_TOKEN,
        )
        # fake time (APEX_ACCOUNTING_CLOCK_OFFSET names this file): the service's clock is held 10 minutes
        # back while the servers start — dave's session uses nothing of his budget yet, so no quota stop
        # interrupts his spawn — and let go once they are ready.
        set_clock(state, -600)
        async with HubProcess(tmp_path / "hub", config, env={"KUBECONFIG": sim.kubeconfig_path}) as hub:
            for name, group in (
                ("alice", "apex-small"),
                ("bob", "apex-probe"),
                ("carol", None),
                ("dave", None),
                ("ada", None),
            ):
                assert (await hub.api("POST", f"/users/{name}"))[0] in (201, 409)  # ada: made by her role
                if group:
                    assert (await hub.api("POST", f"/groups/{group}"))[0] in (201, 409)
                    assert (await hub.api("POST", f"/groups/{group}/users", json={"users": [name]}))[0] == 200
            spawners = ("alice", "bob", "dave")
            spawns = [hub.api("POST", f"/users/{n}/server", json={"profile": "lab"}) for n in spawners]
            for status, body in await asyncio.gather(*spawns):  # all at once
                assert status in (201, 202), (body, hub.log()[-3000:])
            for name in spawners:
                await wait_ready(hub, name)
            set_clock(state, 0)  # let go (the service's now bounds what its API lists): see 2.

            # 1. alice's session, with the requested resources; bob (apex-probe) is never recorded
            async def alice_recorded():
                return [s for s in await sessions(hub) if s["user"] == "alice"]

            [first] = await until("alice's session recorded", alice_recorded)
            ns = sim.store._table(sim.store._rt("pods"))
            pod = next(
                o
                for (n, _), o in ns.items()
                if o["metadata"]["annotations"].get("apex.esa.int/username") == "alice"
            )
            assert first["id"] == pod["metadata"]["uid"]
            assert (first["user"], first["server"], first["group"], first["profile"], first["status"]) == (
                "alice",
                "",
                "apex-small",
                "lab",
                "running",
            )
            assert (first["cpu"], first["memory_bytes"], first["gpu"], first["pvc_bytes"]) == (
                0.5,
                256 * 2**20,
                0.0,
                2**30,
            )
            assert first["image"] == pod["spec"]["containers"][0]["image"]
            assert (first["namespace"], first["pod"]) == (
                pod["metadata"]["namespace"],
                pod["metadata"]["name"],
            )
            assert first["stop"] is None and first["stop_reason"] is None

            async def metrics():
                status, text = await hub.get(f"{PREFIX}/metrics")
                assert status == 200, text
                return text

            text = await until(
                "bob excluded",
                lambda: _metric(metrics, "apex_accounting_excluded_sessions_total", at_least=1),
            )
            assert "apex_accounting_watching 1.0" in text
            assert [s for s in await sessions(hub) if s["user"] == "bob"] == []

            # 2. dave's budget (0.0001 CPU-hours = 0.72 s at 0.5 cores) runs out while his server runs: once
            # the service's clock is let go, the seconds his session has run are over budget
            await wait_stopped(hub, "dave")

            async def dave_closed():
                got = [s for s in await sessions(hub, user="dave") if s["stop"]]
                return got

            [dave] = await until("dave's session closed", dave_closed)
            assert dave["stop_reason"] == "quota" and dave["status"] == "stopped"
            status, body = await hub.get(f"{PREFIX}/api/events?session={dave['id']}")
            kinds = [e["kind"] for e in json.loads(body)["items"]]
            assert kinds[0] == "opened" and "quota-stop" in kinds and "stopped" in kinds, kinds

            # 3. quota: carol's budget is 0 → refused before spawn, with the budget and the reset time
            status, body = await hub.api("POST", "/users/carol/server", json={"profile": "lab"})
            assert status == 403, (status, body)
            message = body["message"] if isinstance(body, dict) else body
            assert "carol's budget of 0 CPU-hours per month, used 0.00" in message, message
            assert "It resets on" in message and " 00:00 UTC" in message, message
            status, body = await hub.get(f"{PREFIX}/api/quota/carol")
            quota = json.loads(body)
            assert status == 200 and quota["allowed"] is False
            assert quota["budgets"] == [
                {"scope": "user", "name": "carol", "metric": "cpu_hours", "budget": 0.0, "usage": 0.0}
            ]
            reset = datetime.fromisoformat(quota["reset"])
            assert reset.day == 1 and reset > datetime.now(UTC)

            # 4. the service is killed mid-session; while it is down alice's server stops (the culler
            # records why) and a new one starts; the hub restarts the service
            marker = str(state / "stop-reasons.jsonl")
            [pid] = service_pids(marker)
            os.kill(pid, signal.SIGKILL)
            assert (await hub.api("DELETE", "/users/alice/server"))[0] in (202, 204)
            await wait_stopped(hub, "alice")
            culler_line = {
                "event": "stop",
                "time": datetime.now(UTC).isoformat(),
                "user": "alice",
                "server": "",
                "profile": "lab",
                "reason": "idle",
                "detail": "idle for 2h",
                "dry_run": False,
                "started": first["start"],
            }
            with open(state / "stop-reasons.jsonl", "a") as f:
                f.write(json.dumps({**culler_line, "dry_run": True}) + "\n")  # ignored
                f.write(json.dumps(culler_line) + "\n")
            status, body = await hub.api("POST", "/users/alice/server", json={"profile": "lab"})
            assert status in (201, 202), (body, hub.log()[-3000:])
            await wait_ready(hub, "alice")

            async def both_alice():
                got = list(await sessions(hub, user="alice"))
                return got if len(got) == 2 and got[0]["stop"] else None

            old, new = await until("service restarted by the hub with both of alice's sessions", both_alice)
            assert service_pids(marker) and service_pids(marker) != [pid]
            assert old["id"] == first["id"] and old["stop_reason"] == "idle" and old["status"] == "stopped"
            assert old["stop"] >= old["start"]
            assert new["id"] != old["id"] and new["stop"] is None and new["group"] == "apex-small"
            await rounds(metrics, 3)  # a few more rounds: still one row each, one "opened" each
            assert [s["id"] for s in await sessions(hub, user="alice")] == [old["id"], new["id"]]
            status, body = await hub.get(f"{PREFIX}/api/events")
            events = json.loads(body)["items"]
            opened = [e["session_id"] for e in events if e["kind"] == "opened"]
            assert sorted(opened) == sorted([old["id"], new["id"], dave["id"]])
            old_events = [(e["kind"], e["source"]) for e in events if e["session_id"] == old["id"]]
            assert old_events[0][0] == "opened" and ("stopped", "backfill") in old_events, old_events

            # 5. reports: JSON and CSV
            status, body = await hub.get(f"{PREFIX}/api/usage?by=user&period=month&since=2000-01-01")
            rows = {r["user"]: r for r in json.loads(body)["items"]}
            assert set(rows) == {"alice", "dave"} and rows["alice"]["sessions"] == 2
            # 0.5 cores: to within the rounding of both figures to 6 decimals
            assert abs(rows["dave"]["cpu_hours"] - 0.5 * rows["dave"]["wall_hours"]) <= 0.75e-6 + 1e-12
            assert rows["dave"]["cpu_hours"] > 0.0001  # over budget
            status, body = await hub.get(
                f"{PREFIX}/api/usage?by=group&period=day&format=csv&since=2000-01-01"
            )
            assert status == 200
            table = list(csv.DictReader(io.StringIO(body)))
            assert {r["group"] for r in table} == {"apex-small", ""}

            # 6. APEL: the two stopped sessions, parsed back field by field; a second export writes nothing
            status, body = await hub.request("POST", f"{PREFIX}/api/apel")
            assert status == 200, body
            files = json.loads(body)["files"]
            records = {r["VMUUID"]: r for f in files for r in apel.parse(Path(f).read_text())}
            assert set(records) == {old["id"], dave["id"]}
            for s in (old, dave):
                r = records[s["id"]]
                start, stop = (int(datetime.fromisoformat(s[k]).timestamp()) for k in ("start", "stop"))
                assert r == {
                    "VMUUID": s["id"],
                    "SiteName": "APEX-TEST",
                    "CloudComputeService": "hub.example.org",
                    "MachineName": f"{s['namespace']}/{s['pod']}",
                    "LocalUserId": s["user"],
                    **({"LocalGroupId": s["group"]} if s["group"] else {}),
                    "GlobalUserName": s["user"],
                    "FQAN": f"/{s['group']}/Role=NULL/Capability=NULL" if s["group"] else "None",
                    "Status": "completed",
                    "StartTime": str(start),
                    "EndTime": str(stop),
                    "SuspendDuration": "0",
                    "WallDuration": str(stop - start),
                    "CpuDuration": str(round(0.5 * (stop - start))),
                    "CpuCount": "1",
                    "PublicIPCount": "0",
                    "Memory": "256",
                    "Disk": "2",
                    "ImageId": s["image"],
                    "CloudType": "apex-hub",
                }
            status, body = await hub.request("POST", f"{PREFIX}/api/apel")
            assert json.loads(body)["files"] == []

            # 7. only admins: a user token sees its own quota but not the reports
            status, body = await hub.api("POST", "/users/alice/tokens", json={"note": "t"})
            assert status == 201, body
            user_token = body["token"]
            async with aiohttp.ClientSession(headers={"Authorization": f"token {user_token}"}) as s:
                async with s.get(f"{hub.url}{PREFIX}/api/sessions") as r:
                    assert r.status == 403, await r.text()
                async with s.get(f"{hub.url}{PREFIX}/api/quota/alice") as r:
                    assert r.status == 200 and (await r.json())["budgets"] == []
                async with s.get(f"{hub.url}{PREFIX}/api/quota/dave") as r:
                    assert r.status == 403
                # /metrics names users' activity: not for a plain user, nor for anyone through the proxy
                async with s.get(f"{hub.url}{PREFIX}/metrics") as r:
                    assert r.status == 403, await r.text()
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{hub.url}{PREFIX}/metrics") as r:
                    assert r.status == 403, await r.text()
                async with s.get(
                    f"{hub.url}{PREFIX}/metrics", headers={"Authorization": "Bearer wrong"}
                ) as r:
                    assert r.status == 403
                async with s.get(
                    f"{hub.url}{PREFIX}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
                ) as r:
                    assert r.status == 200 and "apex_accounting_watching" in await r.text()

            # 7b. malformed query arguments are the caller's error (400, naming the argument), not a 500
            for query, word in (
                ("since=yesterday", "since"),
                ("until=2026-13-45", "until"),
                ("since=2026-12-01&until=2026-11-01", "since must not be after until"),
            ):
                status, body = await hub.request("GET", f"{PREFIX}/api/sessions?{query}")
                assert status == 400 and word in body, (query, status, body)

            # 8. the usage page in a real browser: dave sees his own usage against his budget, ada (an
            # accounting admin) sees everyone
            await usage_pages(hub, {"dave", "alice"})

            # 9. the hub restarts (and with it the service) while alice's server runs: still one session,
            # still open; after the restart her stop is recorded
            await hub.stop()
            await hub.start()

            async def watching_again():
                text = await _metric(metrics, "apex_accounting_relists_total", at_least=1)
                return text if text and "apex_accounting_watching 1.0" in text else None

            await until("the service back after the hub restart", watching_again)
            assert [(s["id"], s["stop"]) for s in await sessions(hub, user="alice")] == [
                (old["id"], old["stop"]),
                (new["id"], None),
            ]
            assert (await hub.api("DELETE", "/users/alice/server"))[0] in (202, 204)

            async def new_closed():
                got = await sessions(hub, user="alice")
                return got if got[-1]["stop"] else None

            *_, last = await until("alice's stop after the hub restart", new_closed)
            assert (last["id"], last["stop_reason"]) == (new["id"], "user")
            assert len(await sessions(hub)) == 3


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "accounting"


async def usage_pages(hub: HubProcess, users: set[str]) -> None:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        print("usage page not checked in a browser: pip install playwright (the test extra)")
        return
    if not os.path.exists(CHROMIUM):
        print(f"usage page not checked in a browser: {CHROMIUM} is missing (apt-get install chromium)")
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for user in ("dave", "ada"):
                context = await browser.new_context()
                page = await context.new_page()
                await page.goto(f"{hub.url}/hub/login")
                await page.fill("#username_input", user)
                await page.fill("#password_input", "any")
                await page.click("#login_submit")
                await page.wait_for_url("**/hub/**")
                await page.goto(f"{hub.url}{PREFIX}/")  # hub OAuth, no confirmation page
                await page.wait_for_selector("h1", timeout=30000)
                text = await page.inner_text("body")
                assert f"Usage of {user}" in text, text
                await page.screenshot(path=str(SHOTS / f"usage-{user}.png"), full_page=True)
                if user == "dave":
                    message = await page.inner_text("#quota-message")
                    assert "Usage budget exhausted: dave's budget of 0.0001 CPU-hours per month" in message, (
                        message
                    )
                    # over budget: the warning box on top, as in the hub's banner
                    warning = await page.inner_text("#quota-warning")
                    assert warning.startswith("You have used up your CPU-hour budget for "), warning
                    assert "new servers cannot be started and running servers are stopped" in warning, warning
                    assert await page.locator("svg.chart").count() == 1
                    assert await page.locator("svg.chart rect.bar").count() >= 1
                    assert await page.locator("svg.chart line.budget").count() == 1
                    assert await page.locator("#everyone").count() == 0  # not an admin
                    # a user cannot look at someone else's usage
                    await page.goto(f"{hub.url}{PREFIX}/?user=alice")
                    assert "Usage of dave" in await page.inner_text("h1")
                else:
                    rows = await page.locator("#everyone tr td:first-child").all_inner_texts()
                    assert set(rows) == users, rows
                await context.close()
        finally:
            await browser.close()


async def rounds(fetch, n: int) -> None:
    """Until the service has done ``n`` more hub rounds (its last-round time moved ``n`` times)."""
    name = "apex_accounting_last_round_timestamp_seconds "

    async def last() -> float:
        text = await fetch()
        return float(next(line for line in text.splitlines() if line.startswith(name)).split()[-1])

    seen = await until("a hub round", last)
    for _ in range(n):
        seen = await until("the next hub round", lambda t=seen: _later(last, t))


async def _later(last, than: float) -> float | None:
    t = await last()
    return t if t > than else None


async def _metric(fetch, name: str, at_least: float):
    text = await fetch()
    for line in text.splitlines():
        if line.startswith(name + " ") and float(line.split()[-1]) >= at_least:
            return text
    return None


WARN_CATALOGUE = {
    "profiles": [
        {"slug": "lab", "display_name": "JupyterLab", "default": True},
        {"slug": "long", "display_name": "Long runs"},
    ]
}
WARN_CONFIG = """
from apex_hub.services import configure
c.JupyterHub.template_vars = {{"announcement": "Maintenance on Friday"}}  # the operator's own text
# the culler warns before max-age stops (its clock 1h ahead: test only); the accounting service
# writes the quota warnings; one banner shows both
configure(c, culler={{"policy": "{policy}", "state_dir": "{culler}", "interval": 1, "warn_before": "45m",
                     "environment": {{"APEX_CULLER_CLOCK_OFFSET": "1h"}}}},
          accounting={{"url": "http://127.0.0.1:{port}", "db_url": "{db_url}", "state_dir": "{state}",
                      "interval": 1, "quotas": "{quotas}", "quota_stop": True,
                      "environment": {{"KUBECONFIG": "{kubeconfig}"}}, "extra_args": ["--watch-timeout=20"]}})
"""


async def test_quota_warning_on_the_hub_pages_and_the_usage_page(tmp_path):
    """erin's group has used 92 % of its CPU-hour budget (a session earlier this month) and her server
    runs: the hub's pages show her the quota warning beside the culler's stop warning and the
    operator's text, the usage page shows it at the top; frank (no budget used) sees neither."""
    from apex_hub.services.accounting.db import Ledger, Observation
    from apex_hub.services.accounting.reports import period_start

    profiles, quotas, policy, state = (
        tmp_path / "profiles.yml",
        tmp_path / "quotas.yaml",
        tmp_path / "culling.yaml",
        tmp_path / "state",
    )
    profiles.write_text(yaml.safe_dump(WARN_CATALOGUE))
    quotas.write_text(
        yaml.safe_dump({"groups": {"apex-small": {"cpu_hours": 100}}, "default": {"cpu_hours": 1000}})
    )
    policy.write_text(
        yaml.safe_dump({"defaults": {"idle_timeout": "2h"}, "profiles": {"long": {"max_age": "1h30m"}}})
    )
    db_url = f"sqlite:///{tmp_path / 'acct.sqlite'}"
    # earlier this month: 92.3 CPU-hours charged to apex-small (92 %, and her server adds a little)
    now = datetime.now(UTC)
    since = period_start(now, "month")
    hours = max((now - since).total_seconds(), 60) / 3600
    ledger = Ledger(db_url)
    ledger.observe(
        Observation(
            id="earlier",
            user="erin",
            start=since,
            stop=since + (now - since) / 2,
            cpu=2 * 92.3 / hours,
            group="apex-small",
            profile="lab",
        ),
        source="test",
        now=now,
    )
    ledger.close()
    async with KubeSim(kubelet="process", workdir=tmp_path / "sim") as sim:
        config = apex_hub_config(sim.url, profiles) + WARN_CONFIG.format(
            policy=policy,
            culler=tmp_path / "culler",
            port=free_port(),
            db_url=db_url,
            state=state,
            quotas=quotas,
            kubeconfig=sim.kubeconfig_path,
        )
        async with HubProcess(tmp_path / "hub", config, env={"KUBECONFIG": sim.kubeconfig_path}) as hub:
            for name in ("erin", "frank"):
                assert (await hub.api("POST", f"/users/{name}"))[0] == 201
            assert (await hub.api("POST", "/groups/apex-small"))[0] == 201
            assert (await hub.api("POST", "/groups/apex-small/users", json={"users": ["erin"]}))[0] == 200
            spawns = [
                hub.api("POST", f"/users/{n}/server", json={"profile": "long"}) for n in ("erin", "frank")
            ]
            for status, body in await asyncio.gather(*spawns):  # both at once
                assert status in (201, 202), (body, hub.log()[-3000:])
            for name in ("erin", "frank"):
                await wait_ready(hub, name)
            quota_line = (
                "You have used 92% of your CPU-hour budget for "
                + since.strftime("%B")
                + " (92 of 100 CPU-hours, group apex-small); servers are stopped when it is used up. It resets on "
            )

            async def page(session, path):
                async with session.get(f"{hub.url}{path}") as r:
                    assert r.status == 200, (r.status, await r.text())
                    return await r.text()

            async with (
                aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as erin,
                aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as frank,
            ):
                await hub.login(erin, "erin")
                await hub.login(frank, "frank")

                # the banner of /hub/home: both warnings (the culler's stop first), then the operator's text
                async def erin_banner():
                    html = await page(erin, "/hub/home")
                    banner = html.split('class="container text-center announcement alert alert-warning">', 1)[
                        -1
                    ]
                    banner = banner.split("</div>", 1)[0]
                    return banner if quota_line in banner and "will be stopped at" in banner else None

                banner = await until("erin's banner with both warnings", erin_banner)
                # a culler without a url serves no API (JupyterHub still passes it a port-0 URL)
                assert "api/upcoming on" not in hub.log()
                lines = [line.strip() for line in banner.split("<br>")]
                assert len(lines) == 3, lines
                assert lines[0].startswith("Your server will be stopped at") and "max-age" in lines[0], lines
                assert lines[1].startswith(quota_line), lines
                assert lines[2] == "Maintenance on Friday", lines
                # also on the spawn page; frank sees the operator's text only
                assert quota_line in await page(erin, "/hub/token")
                home = await page(frank, "/hub/home")
                assert "Maintenance on Friday" in home and "CPU-hour budget" not in home, home[:3000]

                # the usage page (through the hub's OAuth): the same sentence at the top, for erin only
                usage = await page(erin, f"{PREFIX}/")
                warning = usage.split('<div id="quota-warning" class="warning" role="alert">', 1)
                assert len(warning) == 2, usage[:3000]
                assert warning[1].split("</div>", 1)[0].startswith(quota_line)
                assert usage.index('id="quota-warning"') < usage.index("<h2>Budget</h2>")
                usage = await page(frank, f"{PREFIX}/")
                assert "Usage of frank" in usage and 'id="quota-warning"' not in usage

            data = json.loads((state / "quota-warnings.json").read_text())
            assert list(data["users"]) == ["erin"]
            [budget] = data["users"]["erin"]["budgets"]
            assert (budget["scope"], budget["name"], budget["budget"]) == ("group", "apex-small", 100)
            assert 0.92 <= budget["fraction"] < 0.93
