"""decide(): one server model + groups + now + policy -> keep / stop(reason) / restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apex_hub.services.culler.decide import decide
from apex_hub.services.culler.policy import CullingPolicy

UTC = UTC
POLICY = CullingPolicy.from_data(
    {
        "defaults": {
            "idle_timeout": "2h",
            "max_age": "1d",
            "schedule": {"cron": "0 20 * * 1-5", "timezone": "Europe/Rome"},
        },
        "profiles": {
            "gpu": {"idle_timeout": "30m", "max_age": "8h"},
            "svc": {"session_mode": "always-on"},
            "nosched": {"schedule": "never"},
            "inherit": {"schedule": None},
        },
        "groups": {
            "students": {"idle_timeout": "1h"},
            "ops": {"session_mode": "always-on"},
            "banned": {"session_mode": "off"},
            "trial": {"dry_run": True},
        },
    }
)
# Monday 23 Nov 2026, 10:00 UTC (11:00 in Rome)
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def server(profile="lab", started=T0, last_activity=None, **kw):
    model = {
        "name": "",
        "ready": True,
        "pending": None,
        "stopped": False,
        "url": "/user/alice/",
        "started": started.isoformat(),
        "last_activity": (last_activity or started).isoformat(),
        "user_options": {"profile": profile} if profile else {},
    }
    model.update(kw)
    return model


def test_idle_by_profile_timeout():
    s = server("gpu")
    assert decide(s, [], T0 + timedelta(minutes=29), POLICY).action == "keep"
    d = decide(s, [], T0 + timedelta(minutes=30), POLICY)
    assert (d.action, d.reason, d.profile) == ("stop", "idle", "gpu")
    assert "idle_timeout 0:30:00" in d.detail
    # the same idle time on the default profile: kept (2h)
    assert decide(server("lab"), [], T0 + timedelta(minutes=45), POLICY).action == "keep"
    # ... unless the user is in a group with a shorter timeout
    assert decide(server("lab"), ["students"], T0 + timedelta(minutes=61), POLICY).reason == "idle"
    # activity resets the clock
    s = server("gpu", last_activity=T0 + timedelta(minutes=20))
    assert decide(s, [], T0 + timedelta(minutes=40), POLICY).action == "keep"


def test_max_age_even_when_active():
    s = server("gpu", last_activity=T0 + timedelta(hours=8))
    d = decide(s, [], T0 + timedelta(hours=8, seconds=1), POLICY)
    assert (d.action, d.reason) == ("stop", "max-age")


def test_schedule_crossing_its_time():
    s = server("nosched"), server("lab")
    before = datetime(2026, 11, 23, 18, 59, tzinfo=UTC)  # 19:59 Rome
    after = datetime(2026, 11, 23, 19, 0, 30, tzinfo=UTC)  # 20:00:30 Rome
    busy = server("lab", started=T0, last_activity=after)
    assert decide(busy, [], before, POLICY).action == "keep"
    d = decide(busy, [], after, POLICY)
    assert (d.action, d.reason) == ("stop", "schedule")
    assert "Europe/Rome" in d.detail
    # a missed tick still stops it: the culler was down until 23:00
    assert decide(busy, [], datetime(2026, 11, 23, 22, 0, tzinfo=UTC), POLICY).reason == "schedule"
    # started after 20:00: not stopped until the next occurrence (Tuesday 20:00)
    late = server(
        "lab",
        started=datetime(2026, 11, 23, 19, 30, tzinfo=UTC),
        last_activity=datetime(2026, 11, 24, 18, 0, tzinfo=UTC),
    )
    assert decide(late, [], datetime(2026, 11, 24, 18, 59, tzinfo=UTC), POLICY).action == "keep"
    assert decide(late, [], datetime(2026, 11, 24, 19, 0, tzinfo=UTC), POLICY).reason == "schedule"
    # a profile that switches the schedule off; null = inherit (still scheduled)
    assert decide(server("nosched", last_activity=after), [], after, POLICY).action == "keep"
    assert decide(server("inherit", last_activity=after), [], after, POLICY).reason == "schedule"
    del s


def test_always_on_is_kept_and_restarted():
    old = server("svc", started=T0 - timedelta(days=30), last_activity=T0 - timedelta(days=30))
    assert decide(old, [], T0, POLICY).action == "keep"
    assert decide(server("lab", started=T0 - timedelta(days=3)), ["ops"], T0, POLICY).action == "keep"
    stopped = {
        "name": "",
        "ready": False,
        "pending": None,
        "stopped": True,
        "started": None,
        "last_activity": T0.isoformat(),
        "user_options": {"profile": "svc"},
        "url": "/user/a/",
    }
    d = decide(stopped, [], T0, POLICY)
    assert (d.action, d.reason) == ("restart", "always-on")
    # on-demand stopped servers and never-started ones are left alone
    assert decide({**stopped, "user_options": {"profile": "lab"}}, [], T0, POLICY).action == "keep"
    assert decide({**stopped, "user_options": {}}, ["ops"], T0, POLICY).action == "keep"


def test_pending_and_not_ready_are_never_stopped():
    s = server("gpu", pending="stop")
    assert decide(s, [], T0 + timedelta(days=9), POLICY).action == "keep"
    s = server("gpu", pending="spawn", ready=False)
    assert decide(s, [], T0 + timedelta(days=9), POLICY).action == "keep"
    s = server("gpu", ready=False)
    assert decide(s, [], T0 + timedelta(days=9), POLICY).action == "keep"


def test_session_off_and_dry_run():
    d = decide(server("lab"), ["banned"], T0, POLICY)
    assert (d.action, d.reason) == ("stop", "session-off")
    d = decide(server("gpu"), ["trial"], T0 + timedelta(hours=1), POLICY)
    assert (d.action, d.reason, d.dry_run) == ("stop", "idle", True)


def test_no_profile_and_naive_times():
    s = server(None, started=T0.replace(tzinfo=None), last_activity=None)
    s["last_activity"] = None
    assert decide(s, [], T0 + timedelta(hours=2), POLICY).reason == "idle"
    assert decide(s, [], (T0 + timedelta(hours=1)).replace(tzinfo=None), POLICY).action == "keep"


def test_upcoming_stops_soonest_first():
    from apex_hub.services.culler.decide import upcoming_stops

    now = datetime(2026, 11, 23, 18, 40, tzinfo=UTC)  # 19:40 in Rome
    s = server("lab", started=T0, last_activity=now - timedelta(minutes=30))
    stops = upcoming_stops(s, now, POLICY.resolve("lab", []))
    assert [u.reason for u in stops] == ["schedule", "idle", "max-age"]
    assert stops[0].at == datetime(2026, 11, 23, 20, 0, tzinfo=ZoneInfo("Europe/Rome"))
    assert stops[1].at == now + timedelta(hours=1, minutes=30)  # 2h idle_timeout, 30 min already idle
    assert stops[2].at == T0 + timedelta(days=1)
    # always-on, off and servers not running have none
    assert upcoming_stops(s, now, POLICY.resolve("svc", [])) == []
    assert upcoming_stops(s, now, POLICY.resolve("lab", ["banned"])) == []
    assert upcoming_stops(server("lab", pending="stop"), now, POLICY.resolve("lab", [])) == []
    # no schedule here: the max age is next
    assert [u.reason for u in upcoming_stops(s, now, POLICY.resolve("nosched", []))] == ["idle", "max-age"]


def test_catalogue_mode_reaches_the_decision():
    s = server("svc2", stopped=True, ready=False)
    s["started"] = None
    assert decide(s, [], T0, POLICY).action == "keep"
    d = decide(s, [], T0, POLICY, catalogue_mode="always-on")
    assert (d.action, d.reason) == ("restart", "always-on")
    d = decide(server("svc2"), ["ops"], T0, POLICY, catalogue_mode="off")
    assert (d.action, d.reason) == ("stop", "session-off")
