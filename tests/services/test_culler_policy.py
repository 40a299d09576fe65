"""The policy file: durations, cron and time zones validated at load, resolution order."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from apex_hub.services.culler.__main__ import main
from apex_hub.services.culler.policy import (
    CullingPolicy,
    PolicyError,
    Schedule,
    next_shutdown,
    parse_duration,
    previous_shutdown,
)

ROME = ZoneInfo("Europe/Rome")


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("90s", 90),
        ("1h30m", 5400),
        (600, 600),
        ("600", 600),
        ("0", 0),
        ("never", 0),
        ("1w", 604800),
        (" 2 h ", 7200),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["3x", "h", "", "-5", "1h-2m", True, [1]])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_bad_duration_names_path_and_field():
    with pytest.raises(PolicyError) as e:
        CullingPolicy.from_data({"groups": {"ops": {"max_age": "3 fortnights"}}}, "culling.yaml")
    assert "culling.yaml: groups.ops.max_age: '3 fortnights' is not a duration" in str(e.value)


def test_bad_cron_names_path_and_field():
    with pytest.raises(PolicyError) as e:
        CullingPolicy.from_data({"profiles": {"gpu": {"schedule": {"cron": "0 25 * * 1-5"}}}}, "p.yml")
    assert str(e.value) == "p.yml: profiles.gpu.schedule.cron: invalid cron expression '0 25 * * 1-5'"
    with pytest.raises(PolicyError, match=r"defaults.schedule.cron: invalid cron expression .*need 5 fields"):
        CullingPolicy.from_data({"defaults": {"schedule": {"cron": "weekdays at 8pm"}}})


def test_bad_timezone_names_path_and_field():
    with pytest.raises(PolicyError) as e:
        CullingPolicy.from_data(
            {"groups": {"it": {"schedule": {"cron": "0 20 * * *", "timezone": "Europe/Roma"}}}}, "p.yml"
        )
    assert "p.yml: groups.it.schedule.timezone: unknown time zone 'Europe/Roma'" in str(e.value)


def test_unknown_fields_and_modes():
    with pytest.raises(PolicyError, match=r"defaults.idle: unknown field"):
        CullingPolicy.from_data({"defaults": {"idle": "1h"}})
    with pytest.raises(PolicyError, match=r"profiles.lab.session_mode"):
        CullingPolicy.from_data({"profiles": {"lab": {"session_mode": "sometimes"}}})
    # YAML's bare `off`
    assert (
        CullingPolicy.from_data({"profiles": {"lab": {"session_mode": False}}}).profiles["lab"].session_mode
        == "off"
    )


def test_load_yaml(tmp_path):
    path = tmp_path / "culling.yaml"
    path.write_text(
        textwrap.dedent("""
        defaults: {idle_timeout: 2h, max_age: 1d, schedule: {cron: "0 20 * * 1-5", timezone: Europe/Rome}}
        profiles:
          gpu: {idle_timeout: 30m, max_age: 8h}
          service: {session_mode: always-on}
        groups:
          students: {idle_timeout: 1h}
          night-owls: {idle_timeout: 4h}
          ops: {session_mode: off}
    """)
    )
    policy = CullingPolicy.load(path)
    assert policy.defaults.idle_timeout == 7200
    assert policy.groups["ops"].session_mode == "off"
    assert policy.may_restart


def test_resolution_order():
    policy = CullingPolicy.from_data(
        {
            "defaults": {"idle_timeout": "2h", "max_age": "1d", "session_mode": "on-demand"},
            "profiles": {"gpu": {"idle_timeout": "30m"}, "svc": {"session_mode": "always-on"}},
            "groups": {
                "students": {"idle_timeout": "1h", "max_age": "0"},
                "owls": {"idle_timeout": "4h", "max_age": "12h"},
                "ops": {"session_mode": "always-on", "schedule": {"cron": "0 20 * * *"}},
                "lab-b": {"schedule": {"cron": "0 18 * * *", "timezone": "Europe/Rome"}, "dry_run": True},
            },
        }
    )
    r = policy.resolve(None, [])
    assert (r.idle_timeout, r.max_age, r.session_mode, r.schedules, r.dry_run) == (
        7200,
        86400,
        "on-demand",
        (),
        False,
    )
    # groups override defaults; several groups: the strictest limit ("0" = no limit loses to a limit)
    r = policy.resolve("lab", ["owls", "students"])
    assert (r.idle_timeout, r.max_age) == (3600, 12 * 3600)
    assert r.sources == ("groups.owls", "groups.students")
    # profile overrides groups, field by field
    r = policy.resolve("gpu", ["owls", "students"])
    assert (r.idle_timeout, r.max_age) == (1800, 12 * 3600)
    # session modes: off > on-demand > always-on; schedules of all groups apply; dry_run if any
    r = policy.resolve("lab", ["ops", "lab-b"])
    assert r.session_mode == "always-on" and len(r.schedules) == 2 and r.dry_run
    assert policy.resolve("svc", []).session_mode == "always-on"
    assert policy.resolve("lab", []).session_mode == "on-demand"
    # unknown profile / group -> defaults
    assert policy.resolve("nope", ["nobody"]).idle_timeout == 7200


def test_schedule_occurrences_in_zone():
    s = Schedule(cron="0 20 * * 1-5", timezone="Europe/Rome")
    # Monday 23 Nov 2026, 18:59 UTC = 19:59 in Rome
    monday = datetime(2026, 11, 23, 18, 59, tzinfo=UTC)
    assert next_shutdown(s, monday) == datetime(2026, 11, 23, 20, 0, tzinfo=ROME)
    assert previous_shutdown(s, monday) == datetime(2026, 11, 20, 20, 0, tzinfo=ROME)  # the Friday before
    at = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)  # exactly 20:00 in Rome: counts as "<= now"
    assert previous_shutdown(s, at) == datetime(2026, 11, 23, 20, 0, tzinfo=ROME)
    # Friday 20:00 -> next is Monday 20:00 (weekend skipped)
    assert next_shutdown(s, datetime(2026, 11, 27, 19, 0, tzinfo=UTC)) == datetime(
        2026, 11, 30, 20, 0, tzinfo=ROME
    )
    # summer time: 20:00 in Rome is 18:00 UTC
    assert next_shutdown(s, datetime(2026, 7, 1, 12, 0, tzinfo=UTC)).astimezone(UTC).hour == 18


def test_cli_exits_2_on_bad_policy(tmp_path, capsys):
    path = tmp_path / "culling.yaml"
    path.write_text('profiles: {gpu: {schedule: {cron: "0 20 * * 1-5", timezone: Mars/Olympus}}}\n')
    assert main(["--policy", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert "profiles.gpu.schedule.timezone: unknown time zone 'Mars/Olympus'" in err
    path.write_text('defaults: {schedule: {cron: "0 20 * * 1-5", timezone: Europe/Rome}}\n')
    assert main(["--policy", str(path), "--check"]) == 0
    assert main(["--policy", str(tmp_path / "missing.yaml")]) == 2


def test_cli_as_a_process_exits_2(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "culling.yaml"
    path.write_text('groups: {it: {schedule: {cron: "61 20 * * *"}}}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "apex_hub.services.culler", f"--policy={path}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api",
            "JUPYTERHUB_API_TOKEN": "x",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert proc.returncode == 2
    assert "groups.it.schedule.cron: invalid cron expression '61 20 * * *'" in proc.stderr


def test_catalogue_session_mode_precedence():
    policy = CullingPolicy.from_data(
        {
            "defaults": {"session_mode": "on-demand"},
            "profiles": {"pinned": {"session_mode": "on-demand"}},
            "groups": {"ops": {"session_mode": "always-on"}, "banned": {"session_mode": "off"}},
        }
    )
    # the catalogue beats the policy's defaults ...
    r = policy.resolve("svc", [], catalogue_mode="always-on")
    assert r.session_mode == "always-on" and "catalogue.svc" in r.sources
    assert policy.resolve("svc", []).session_mode == "on-demand"  # (without it: defaults)
    # ... policy groups and the policy's profile section beat the catalogue
    assert policy.resolve("svc", ["ops"], catalogue_mode="on-demand").session_mode == "always-on"
    assert policy.resolve("pinned", [], catalogue_mode="always-on").session_mode == "on-demand"
    # ... but a catalogue "off" always wins (the spawner refuses such a profile)
    r = policy.resolve("pinned", ["ops"], catalogue_mode="off")
    assert r.session_mode == "off" and r.sources[-1] == "catalogue.pinned"
    assert policy.resolve(None, [], catalogue_mode="always-on").sources == ("catalogue.default",)


def test_cli_checks_the_catalogue_too(tmp_path, capsys):
    policy, profiles = tmp_path / "culling.yaml", tmp_path / "profiles.yml"
    policy.write_text("defaults: {idle_timeout: 1h}\n")
    profiles.write_text("profiles:\n  - {slug: lab, display_name: Lab, session_mode: sometimes}\n")
    assert main([f"--policy={policy}", f"--profiles={profiles}", "--check"]) == 2
    err = capsys.readouterr().err
    assert "profiles catalogue" in err and "session_mode" in err and str(profiles) in err
    profiles.write_text("profiles:\n  - {slug: lab, display_name: Lab, session_mode: always-on}\n")
    assert main([f"--policy={policy}", f"--profiles={profiles}", "--check"]) == 0


BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "defaults: {idle_timeout: 1h}\n"
)


def test_a_yaml_alias_bomb_is_refused_not_expanded(tmp_path):
    """A few hundred bytes of nested aliases would expand to millions of items: refused at the first alias."""
    from apex_hub.services.accounting.quota import QuotaError, Quotas

    path = tmp_path / "policy.yaml"
    path.write_text(BOMB)
    with pytest.raises(PolicyError, match=r"alias \*a: YAML aliases are not allowed"):
        CullingPolicy.load(path)
    with pytest.raises(QuotaError, match=r"alias \*a: YAML aliases are not allowed"):
        Quotas.load(path)
