"""Accounting ledger at scale (SQLite): ingest rate and report time for N ledger rows.

    python benchmarks/accounting_scale.py                 # 1,000,000 sessions
    python benchmarks/accounting_scale.py --sessions 100000 --db /tmp/ledger.sqlite

Prints (never asserts):

* bulk ingest — ``Ledger.observe_many`` (what a pod re-list / backfill uses), batches of
  ``--batch`` closed sessions, each an upsert keyed by the pod uid plus its ``opened`` and
  ``stopped`` events: sessions/s;
* live ingest — ``Ledger.observe`` one transaction per pod watch event (open, then stop) on a sample
  of ``--live`` sessions: events/s;
* re-ingest of a batch already in the ledger (a re-list after 410 Gone): sessions/s, and that it
  added nothing;
* report time over the whole ledger — month × user, day × group, month × profile — and one quota
  check (a user's budget this month, a group's);
* APEL export of ``--apel`` sessions.

The sessions: 5,000 users in 50 groups, 5 profiles, one to eight hours each, spread over a year.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta

from apex_hub.services.accounting import apel, reports
from apex_hub.services.accounting.db import Ledger, Observation
from apex_hub.services.accounting.quota import Quotas

YEAR = datetime(2026, 1, 1, tzinfo=UTC)


def session(i: int, rng: random.Random, users: int = 5000, groups: int = 50) -> Observation:
    """A stopped session of ``YEAR`` (also benchmarks/accounting_loop.py's ledger)."""
    start = YEAR + timedelta(seconds=rng.randrange(365 * 86400))
    u = rng.randrange(users)
    user = f"user{u}"
    return Observation(
        id=f"{i:08d}-0000-4000-8000-{i:012d}",
        user=user,
        user_slug=user,
        server="",
        namespace=f"apex-{user}",
        pod=f"jupyter-{user}",
        group=f"group{u % groups}",
        profile=f"profile{rng.randrange(5)}",
        image="registry.example.org/apex/singleuser:1",
        cpu=rng.choice([0.5, 1, 2, 4]),
        memory_bytes=rng.choice([2, 4, 8, 16]) * 2**30,
        gpu=rng.choice([0, 0, 0, 1]),
        pvc_bytes=10 * 2**30,
        start=start,
        stop=start + timedelta(seconds=rng.randrange(3600, 8 * 3600)),
        stop_reason="user",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--live", type=int, default=5000)
    p.add_argument("--apel", type=int, default=100_000)
    p.add_argument("--db", default="", help="SQLite file (default: a temporary one, deleted)")
    args = p.parse_args()
    tmp = None
    path = args.db
    if not path:
        tmp = tempfile.mkdtemp(prefix="apex-accounting-bench-")
        path = os.path.join(tmp, "ledger.sqlite")
    ledger = Ledger(f"sqlite:///{path}")
    rng = random.Random(7)
    now = datetime(2027, 1, 1, tzinfo=UTC)

    t0 = time.perf_counter()
    n = 0
    while n < args.sessions:
        batch = [session(i, rng) for i in range(n, min(n + args.batch, args.sessions))]
        ledger.observe_many(batch, source="backfill", now=now)
        n += len(batch)
    bulk = time.perf_counter() - t0
    rows = ledger.count()
    print(
        f"bulk ingest (observe_many, batches of {args.batch}): {args.sessions:,} sessions in {bulk:.1f} s "
        f"= {args.sessions / bulk:,.0f} sessions/s ({rows[0]:,} sessions, {rows[1]:,} events)"
    )

    rng2 = random.Random(7)
    replay = [session(i, rng2) for i in range(args.batch)]
    t0 = time.perf_counter()
    ledger.observe_many(replay, source="relist", now=now)
    dt = time.perf_counter() - t0
    assert ledger.count() == rows, "a replay must add nothing"
    print(
        f"re-ingest of {args.batch:,} known sessions (a re-list): {args.batch / dt:,.0f} sessions/s, nothing added"
    )

    t0 = time.perf_counter()
    for i in range(args.sessions, args.sessions + args.live):
        s = session(i, rng)
        stop, s.stop, s.stop_reason = s.stop, None, None
        ledger.observe(s, source="pod-watch", now=now)
        s.stop, s.stop_reason = stop, "user"
        ledger.observe(s, source="pod-watch", now=now)
    live = time.perf_counter() - t0
    print(
        f"live ingest (observe, one transaction per watch event): {2 * args.live / live:,.0f} events/s "
        f"({args.live:,} sessions opened and stopped)"
    )

    since, until = YEAR, now
    for period, by in (("month", "user"), ("day", "group"), ("month", "profile")):
        t0 = time.perf_counter()
        out = reports.ledger_usage(ledger, since=since, until=until, period=period, by=by)
        print(
            f"report {period} × {by} over {rows[0] + args.live:,} sessions: {time.perf_counter() - t0:.1f} s "
            f"({len(out):,} rows)"
        )
    quotas = Quotas.from_dict(
        {"period": "month", "groups": {"group7": {"cpu_hours": 500}}, "users": {"user42": {"cpu_hours": 50}}}
    )
    t0 = time.perf_counter()
    st = quotas.check(ledger, "user42", ["group7"], now=datetime(2026, 6, 15, tzinfo=UTC))
    print(
        f"quota check (user42 + group7, one month): {1000 * (time.perf_counter() - t0):.0f} ms "
        f"({'allowed' if st.allowed else 'over budget'})"
    )
    directory = os.path.join(tmp or os.path.dirname(os.path.abspath(path)), "apel")
    t0 = time.perf_counter()
    files = apel.export(ledger, apel.ApelSettings(directory, "BENCH-SITE"), limit=args.apel)
    dt = time.perf_counter() - t0
    print(
        f"APEL export of {args.apel:,} sessions: {len(files):,} files in {dt:.1f} s "
        f"= {args.apel / dt:,.0f} records/s"
    )
    ledger.close()
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
