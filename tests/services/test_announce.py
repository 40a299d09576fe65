"""The hub-page banner: one announcement with the culler's warned stops and the accounting service's
quota warnings for the current user, the operator's text as fallback; and how the service writes
its quota-warnings.json."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

from traitlets.config import Config

from apex_hub.services import configure
from apex_hub.services.accounting.db import Ledger, Observation
from apex_hub.services.accounting.quota import WARNINGS_FILE, Limit, Quotas, QuotaStatus, warning_lines
from apex_hub.services.accounting.service import AccountingService
from apex_hub.services.announce import HubAnnouncement, write_json
from apex_hub.services.culler.announce import UPCOMING_FILE, UpcomingAnnouncement, upcoming_lines

UTC = UTC
DEC = datetime(2026, 12, 1, tzinfo=UTC)
JAN = datetime(2027, 1, 1, tzinfo=UTC)


class User:
    def __init__(self, name):
        self.name = name


def upcoming(user: str, detail: str = "max_age 1:30:00") -> dict:
    return {
        "time": "2026-12-02T10:00:00+00:00",
        "warn_before": 900,
        "users": {
            user: [
                {
                    "server": "",
                    "profile": "long",
                    "stops": [
                        {
                            "reason": "max-age",
                            "at": "2026-12-02T10:10:00+00:00",
                            "timezone": "UTC",
                            "detail": detail,
                            "warning": True,
                        },
                        {
                            "reason": "idle",
                            "at": "2026-12-02T12:00:00+00:00",
                            "timezone": "UTC",
                            "detail": "idle",
                            "warning": False,
                        },
                    ],
                }
            ]
        },
    }


def status(user: str, *limits: Limit) -> QuotaStatus:
    return QuotaStatus(user, "month", DEC, JAN, list(limits))


def quota_file(*warnings: dict) -> dict:
    return {
        "time": "2026-12-02T10:00:00+00:00",
        "warn_fraction": 0.9,
        "users": {w["user"]: w for w in warnings},
    }


def test_quota_warning_text():
    near = status(
        "erin",
        Limit("group", "apex-small", "cpu_hours", 500, 460.4),
        Limit("user", "erin", "gpu_hours", 10, 1),
    )
    w = near.warning(0.9, stop=True)
    assert [b["metric"] for b in w["budgets"]] == ["cpu_hours"]  # only the budget at 90 % or more
    assert w["message"] == (
        "You have used 92% of your CPU-hour budget for December (460 of 500 CPU-hours, group"
        " apex-small); servers are stopped when it is used up. It resets on 2027-01-01 00:00 UTC."
    )
    assert (w["user"], w["allowed"], w["fraction"], w["reset"]) == ("erin", True, 0.9208, JAN.isoformat())
    assert near.warning(0.95, stop=True) is None
    over = status(
        "dave",
        Limit("user", "dave", "cpu_hours", 0.01, 0.0123),
        Limit("default", "dave", "gpu_hours", 2, 1.9),
    )
    w = over.warning(0.9, stop=False)
    assert [b["metric"] for b in w["budgets"]] == ["cpu_hours", "gpu_hours"]  # the worst first
    assert w["allowed"] is False
    assert w["budgets"][0]["message"] == (
        "You have used up your CPU-hour budget for December (0.0123 of 0.01"
        " CPU-hours): new servers cannot be started. It resets on 2027-01-01"
        " 00:00 UTC."
    )
    assert w["budgets"][1]["message"].startswith(
        "You have used 95% of your GPU-hour budget for December (1.9 of 2 "
    )
    assert "new servers cannot be started when it is used up" in w["budgets"][1]["message"]
    week = QuotaStatus(
        "erin",
        "week",
        datetime(2026, 11, 30, tzinfo=UTC),
        DEC + timedelta(days=6),
        [Limit("user", "erin", "wall_hours", 10, 9.5)],
    )
    assert (
        "server-hour budget for the week of 2026-11-30 (9.5 of 10 server-hours)"
        in week.warning(0.9, stop=True)["message"]
    )


def test_one_banner_for_both_sources(tmp_path):
    culler, accounting = tmp_path / "culler", tmp_path / "accounting"
    culler.mkdir()
    accounting.mkdir()
    banner = HubAnnouncement(fallback="Maintenance on <b>Friday</b>")
    banner.add_source("culler", culler / UPCOMING_FILE, upcoming_lines)
    banner.add_source("quota", accounting / WARNINGS_FILE, warning_lines)
    # no files yet: the operator's text for everyone, as is (it is the operator's HTML)
    assert banner(User("erin")) == banner(None) == "Maintenance on <b>Friday</b>"

    # one source: the culler's warned stop (not the idle one), then the operator's text
    write_json(culler / UPCOMING_FILE, upcoming("erin", detail="max_age <script>x</script>"))
    text = banner(User("erin"))
    lines = text.split("<br>")
    assert lines == [
        "Your server will be stopped at 10:10 UTC (max-age: max_age &lt;script&gt;x&lt;/script&gt;)."
        " Save your work.",
        "Maintenance on <b>Friday</b>",
    ]
    assert banner(User("frank")) == "Maintenance on <b>Friday</b>"

    # both sources: the stop first, then the quota warning, escaped
    near = status("erin", Limit("group", "<i>g</i>", "cpu_hours", 100, 93)).warning(0.9, stop=True)
    write_json(accounting / WARNINGS_FILE, quota_file(near))
    lines = banner(User("erin")).split("<br>")
    assert len(lines) == 3 and lines[0].startswith("Your server will be stopped at 10:10 UTC")
    assert lines[1] == (
        "You have used 93% of your CPU-hour budget for December (93 of 100 CPU-hours, group"
        " &lt;i&gt;g&lt;/i&gt;); servers are stopped when it is used up. It resets on 2027-01-01"
        " 00:00 UTC."
    )
    assert lines[2] == "Maintenance on <b>Friday</b>"

    # the quota source only (the culler's file now has nobody): no operator text → just the warning
    write_json(culler / UPCOMING_FILE, {"users": {}})
    banner.fallback = None
    assert banner(User("erin")) == lines[1]
    assert banner(User("frank")) is None and banner(None) is None

    # a broken or half-written file keeps the last good content; a malformed one breaks no page
    (accounting / WARNINGS_FILE).write_text('{"users": {"erin": ')
    assert banner(User("erin")) == lines[1]
    write_json(accounting / WARNINGS_FILE, {"users": {"erin": {"budgets": [{"no message": 1}]}}})
    assert banner(User("erin")) is None
    write_json(accounting / WARNINGS_FILE, quota_file())
    assert banner(User("erin")) is None

    # the culler-only banner is the same class with one source
    legacy = UpcomingAnnouncement(culler, fallback="x")
    assert isinstance(legacy, HubAnnouncement) and list(legacy.sources) == ["culler"]


def test_configure_installs_one_announcement(tmp_path):
    policy, quotas = tmp_path / "culling.yaml", tmp_path / "quotas.yaml"
    policy.write_text("defaults: {idle_timeout: 1h}\n")
    quotas.write_text("default: {cpu_hours: 10}\n")
    culler = {
        "policy": str(policy),
        "state_dir": str(tmp_path / "c"),
        "warn_before": "15m",
        "profiles_file": "",
    }
    accounting = {"quotas": str(quotas), "state_dir": str(tmp_path / "a")}

    # both services: one callable, both files; the operator's string stays as the fallback
    c = Config()
    c.JupyterHub.template_vars = {"announcement": "Maintenance on Friday", "other": 1}
    configure(c, culler=culler, accounting=accounting)
    banner = c.JupyterHub.template_vars["announcement"]
    assert isinstance(banner, HubAnnouncement) and banner.fallback == "Maintenance on Friday"
    assert {k: v[0].path for k, v in banner.sources.items()} == {
        "culler": tmp_path / "c" / UPCOMING_FILE,
        "quota": tmp_path / "a" / WARNINGS_FILE,
    }
    assert c.JupyterHub.template_vars["other"] == 1
    [acct] = [s for s in c.JupyterHub.services if s["name"] == "apex-accounting"]
    assert f"--state-dir={tmp_path / 'a'}" in acct["command"]
    # configuring again replaces the sources, it does not nest announcements
    configure(c, culler=culler, accounting=accounting)
    again = c.JupyterHub.template_vars["announcement"]
    assert (
        again is banner
        and list(again.sources) == ["culler", "quota"]
        and again.fallback == "Maintenance on Friday"
    )

    # accounting with quotas alone installs it; without quotas, or with announcement False, nothing
    c = Config()
    configure(c, accounting=accounting)
    assert list(c.JupyterHub.template_vars["announcement"].sources) == ["quota"]
    for options in ({"state_dir": str(tmp_path)}, {**accounting, "announcement": False}):
        c = Config()
        configure(c, accounting=options)
        assert "announcement" not in (c.JupyterHub.get("template_vars") or {})
    # culler warnings off, quotas on: the quota source only
    c = Config()
    configure(c, culler={**culler, "warn_before": None}, accounting=accounting)
    assert list(c.JupyterHub.template_vars["announcement"].sources) == ["quota"]

    # an operator's own callable is left alone
    def mine(user):
        return "mine"

    c = Config()
    c.JupyterHub.template_vars = {"announcement": mine}
    configure(c, culler=culler, accounting=accounting)
    assert c.JupyterHub.template_vars["announcement"] is mine


async def test_the_service_writes_the_current_quota_warnings(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    since = now.replace(day=1, hour=0, minute=0, second=0)
    span = max(now - since, timedelta(seconds=2))
    url = f"sqlite:///{tmp_path / 'acct.sqlite'}"
    ledger = Ledger(url)

    def session(uid, user, cpu_hours, *, running):
        # cpu × (now - the period's start) = cpu_hours this month (running: up to now, a little more)
        ledger.observe(
            Observation(
                id=uid,
                user=user,
                start=since,
                stop=None if running else since + span,
                cpu=cpu_hours / (span.total_seconds() / 3600),
                group="apex-small",
            ),
            source="test",
            now=now,
        )

    session("e1", "erin", 92.3, running=True)  # 92 % of 100: warned
    session("f1", "frank", 50, running=True)  # 50 %: not warned
    session("g1", "gina", 11, running=False)  # over 10, but not running: not checked
    quotas = Quotas.from_dict(
        {"users": {"erin": {"cpu_hours": 100}, "frank": {"cpu_hours": 100}, "gina": {"cpu_hours": 10}}}
    )
    svc = AccountingService(
        ledger,
        hub=None,
        kube=None,
        quotas=quotas,
        quota_warn_fraction=0.9,
        state_dir=tmp_path / "state",
        clock=lambda: now + timedelta(seconds=1),
    )
    await svc.enforce_quotas()
    data = json.loads((tmp_path / "state" / WARNINGS_FILE).read_text())
    assert list(data["users"]) == ["erin"] and data["warn_fraction"] == 0.9
    [budget] = data["users"]["erin"]["budgets"]
    assert (budget["scope"], budget["budget"], round(budget["usage"])) == ("user", 100, 92)
    assert budget["message"].startswith("You have used 92% of your CPU-hour budget for ")
    assert [e["kind"] for e in ledger.events("e1")].count("quota-warning") == 1
    assert not [f for f in os.listdir(tmp_path / "state") if f != WARNINGS_FILE]  # no temporary file left

    assert svc._warned == {"e1"}
    # erin's server stops: she is still at 92 %, so the warning stays (checked again every round)
    ledger.observe(Observation(id="e1", user="erin", start=since, stop=now), source="test", now=now)
    await svc.enforce_quotas()
    assert svc._warned == set()  # a closed session is forgotten: the service runs for months
    assert list(json.loads((tmp_path / "state" / WARNINGS_FILE).read_text())["users"]) == ["erin"]

    # a restarted service with a larger budget reads the file back, checks erin again, and clears it
    bigger = Quotas.from_dict({"users": {"erin": {"cpu_hours": 1000}}})
    svc2 = AccountingService(
        ledger,
        hub=None,
        kube=None,
        quotas=bigger,
        state_dir=tmp_path / "state",
        clock=lambda: now + timedelta(seconds=2),
    )
    assert list(svc2.quota_warnings) == ["erin"]
    await svc2.enforce_quotas()
    assert json.loads((tmp_path / "state" / WARNINGS_FILE).read_text())["users"] == {}
    ledger.close()
