"""The accounting service's event loop under load: the pre-spawn quota check and the loop's lag while
the service ingests pod events, re-lists and runs its quota round, over a large ledger.

    python benchmarks/accounting_loop.py                          # 1,000,000 sessions, 10,000 users
    python benchmarks/accounting_loop.py --db /tmp/ledger.sqlite  # keep (and reuse) the ledger file
    python benchmarks/accounting_loop.py --sessions 100000        # a quicker run

The ledger: ``--sessions`` closed sessions of ``--users`` users in ``--groups`` groups (users share
a group round-robin), spread over 2026, built in bulk with ``Ledger.observe_many`` as
``accounting_scale.py`` does; a ``--db`` file that already holds them is reused. The service's clock
is 2026-12-31 23:00 UTC: the month's budgets then cover the most sessions. Every group and the
default have a (large) CPU-hour budget, so a check reads the user's and the group's usage.

The service runs in this process with its real tornado application on a loopback port; a client
process asks ``GET /api/quota/<user>`` (the spawner's request, with the quota token) every 10 ms, for
users picked at random, in each phase:

* **idle** — nothing else happens;
* **watch** — ``--running`` pods start (one watch event each) and stop again (another);
* **relist** — a listing of ``--running`` running pods, twice (new sessions, then known ones), and the
  sessions of the pods gone closed;
* **quota round** — ``enforce_quotas`` over the users of the running sessions.

The service as it is calls ``gc.freeze()`` when it starts (the benchmark does so before the phases);
the longest garbage collection of each run is printed too.

Printed (never asserted) for the baseline — the same service with ``ledger_threads=False``, every
database call on the event loop, each member's group usage read again and a quota check's sessions
read through the general query (what the service did before; its listings still go in one
transaction and in slices that let the loop run, which flatters the baseline) — for the ledger's
writer and reader threads with every check reading the ledger on a reader thread (``usage_cache=False``,
each group's usage once per round), and for the service as it is (the same threads, the checks answered
from the usage kept in memory, accounting/usage.py, filled once before the phases as ``start()``
does): quota-check latency p50 / p99 / max per phase, event-loop lag p99 / max (a 5 ms ticker's
overshoot) per phase, and how long each phase took. ``--skip-baseline`` leaves out the first.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from accounting_scale import session  # the same sessions as the scale benchmark's ledger
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from apex_hub.services.accounting.db import Ledger
from apex_hub.services.accounting.quota import Quotas
from apex_hub.services.accounting.reports import total
from apex_hub.services.accounting.service import AccountingService
from apex_hub.services.accounting.web import App

NOW = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)  # the end of the month: the most sessions in it
TOKEN = "bench-" + "0" * 32
PHASES = ("idle", "watch", "relist", "quota round")


def build(ledger: Ledger, n: int, users: int, groups: int) -> None:
    have = ledger.count()[0]
    if have >= n:
        print(f"ledger: reusing {have:,} sessions")
        return
    rng = random.Random(7)
    t0 = time.perf_counter()
    for i in range(0, n, 5000):
        batch = [session(k, rng, users, groups) for k in range(i, min(i + 5000, n))]
        if i + len(batch) > have:
            ledger.observe_many(batch, source="backfill", now=NOW)
    print(
        f"ledger: {n:,} sessions of {users:,} users in {groups} groups built in {time.perf_counter() - t0:.0f} s"
    )


def pod(uid: str, user: str, group: str, *, deleted_at: datetime | None = None) -> dict:
    meta = {
        "uid": uid,
        "name": f"jupyter-{user}-{uid[:8]}",
        "namespace": f"apex-{user}",
        "resourceVersion": "1",
        "labels": {
            "component": "singleuser-server",
            "app.kubernetes.io/part-of": "apex-workspace",
            "apex.esa.int/user": user,
            "apex.esa.int/profile": "lab",
        },
        "annotations": {"apex.esa.int/username": user, "apex.esa.int/group": group},
    }
    if deleted_at:
        meta["deletionTimestamp"] = deleted_at.isoformat()
    return {
        "metadata": meta,
        "spec": {
            "containers": [{"name": "notebook", "image": "img:1", "resources": {"requests": {"cpu": "1"}}}]
        },
        "status": {"phase": "Running", "startTime": (NOW - timedelta(hours=2)).isoformat()},
    }


class PerMember(Quotas):
    """The baseline's quota round: every member's check reads the group's usage again."""

    def check_many(self, ledger, users, *, now):
        return {user: self.check(ledger, user, groups, now=now) for user, groups in users.items()}


class BaselineLedger(Ledger):
    """The baseline's quota check: the sessions through the general query (before migration 0002)."""

    def usage_total(self, since, until, *, user=None, group=None):
        query = {"user": user} if user is not None else {"groups": [group]}
        return total(
            self.iter_sessions(since=since, until=until, usage_only=True, **query), since=since, until=until
        )


def client(port: int, users: int) -> None:
    """(the client process) ``GET /api/quota/<user>`` every 10 ms until SIGTERM; prints the
    (start, end) monotonic times of each request as JSON."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rng = random.Random(3)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    out = []
    while not stop.is_set():
        t0 = time.monotonic()
        conn.request("GET", f"/api/quota/user{rng.randrange(users)}", headers=headers)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"quota check: HTTP {r.status} {body[:200]!r}")
        out.append((t0, time.monotonic()))
        if len(out) == 1:
            print("ready", flush=True)
        time.sleep(0.01)
    print(json.dumps(out))


async def ticker(out: list, stop: asyncio.Event) -> None:
    """How late a 5 ms sleep wakes up: (start, end) of each, in monotonic time."""
    while not stop.is_set():
        t0 = time.monotonic()
        await asyncio.sleep(0.005)
        out.append((t0, time.monotonic()))


async def run(url: str, args, *, threads: bool, memory: bool = False) -> dict:
    ledger = (Ledger if threads else BaselineLedger)(url, migrate=False)
    groups = {f"group{g}": {"cpu_hours": 1e9} for g in range(args.groups)}
    quotas = (Quotas if threads else PerMember)(period="month", groups=groups, default={"cpu_hours": 1e9})
    state = tempfile.mkdtemp(prefix="apex-accounting-loop-")
    svc = AccountingService(
        ledger,
        hub=None,
        kube=None,
        quotas=quotas,
        state_dir=state,
        clock=lambda: NOW,
        ledger_threads=threads,
        usage_cache=memory,
    )
    svc.groups = {f"user{u}": [f"group{u % args.groups}"] for u in range(args.users)}
    svc._first_list = False  # a re-list of a service that has been running: sessions of gone pods close now
    app = App(svc, prefix="/", quota_token=TOKEN)
    [sock] = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app.tornado)
    server.add_sockets([sock])
    port = sock.getsockname()[1]

    t_fill = time.monotonic()
    await svc.fill_usage()  # as start() does (a no-op without the cache), before the collector is timed
    fill = time.monotonic() - t_fill
    lags, took, pauses = [], {}, []
    started: list[float] = []

    def gc_timer(event: str, info: dict) -> None:  # how long the collector stops every thread
        if event == "start":
            started[:] = [time.monotonic()]
        elif started:
            pauses.append((info["generation"], time.monotonic() - started[0]))

    gc.callbacks.append(gc_timer)
    if threads:
        gc.freeze()  # as AccountingService.start() does (the baseline: as the service did before)
    stop_ticker = asyncio.Event()
    # the spawner's side in its own process, as the hub is: it takes nothing from this one's GIL
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", str(port), str(args.users), stdout=asyncio.subprocess.PIPE
    )
    tick = asyncio.create_task(ticker(lags, stop_ticker))
    run_id = uuid.uuid4().hex[:8]
    users = random.Random(5).sample(range(args.users), args.running)
    running = [pod(f"{run_id}-r-{i:06d}", f"user{u}", f"group{u % args.groups}") for i, u in enumerate(users)]

    async def phase_of(name, work):
        t0 = time.monotonic()
        await work()
        took[name] = (t0, time.monotonic())

    async def idle():
        await asyncio.sleep(args.idle)

    async def watch_events():
        for i, u in enumerate(users):
            await svc.handle_pod(pod(f"{run_id}-w-{i:06d}", f"user{u}", f"group{u % args.groups}"))
        for i, u in enumerate(users):
            p = pod(f"{run_id}-w-{i:06d}", f"user{u}", f"group{u % args.groups}", deleted_at=NOW)
            await svc.handle_pod(p, deleted=True)

    async def relist():
        await svc.apply_listing(running)  # new sessions
        await svc.apply_listing(running)  # known ones: nothing new
        await svc.apply_listing(running[: len(running) // 2])  # half the pods gone: their sessions close

    async def quota_round():
        await svc.enforce_quotas()

    await proc.stdout.readline()  # the client's first answer
    await asyncio.sleep(1.0)  # and a few more (connection, caches)
    for name, work in zip(PHASES, (idle, watch_events, relist, quota_round)):
        await phase_of(name, work)
    await asyncio.sleep(0.2)
    proc.terminate()
    out, _ = await proc.communicate()
    checks = json.loads(out)
    stop_ticker.set()
    await tick
    gc.callbacks.remove(gc_timer)
    gc.unfreeze()
    server.stop()
    svc.db.close()
    ledger.close()
    held = svc.usage.size() if svc.usage is not None else None
    return {
        "checks": checks,
        "lags": lags,
        "took": took,
        "opened": svc.stats.sessions_opened,
        "gc": pauses,
        "fill": fill,
        "held": held,
    }


def during(a: float, b: float, lo: float, hi: float) -> bool:
    """A check or a tick (a, b) counts for a phase (lo, hi) when it spent half its time in it or
    spans the whole phase: a stall of the loop counts for every phase it blocked."""
    overlap = min(b, hi) - max(a, lo)
    return overlap > 0 and (2 * overlap >= b - a or (a <= lo and b >= hi))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


def main() -> None:
    if sys.argv[1:2] == ["--client"]:
        return client(int(sys.argv[2]), int(sys.argv[3]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--groups", type=int, default=100)
    p.add_argument("--running", type=int, default=1000, help="pods in the watch and relist phases")
    p.add_argument("--idle", type=float, default=3.0, help="seconds of the idle phase")
    p.add_argument("--db", default="", help="SQLite file (default: a temporary one, deleted)")
    p.add_argument("--db-url", default="", help="a SQLAlchemy URL instead of --db (e.g. PostgreSQL)")
    p.add_argument("--skip-baseline", action="store_true", help="leave out the (slow) on-the-loop baseline")
    args = p.parse_args()
    tmp = None
    url = args.db_url
    if not url:
        path = args.db
        if not path:
            tmp = tempfile.mkdtemp(prefix="apex-accounting-loop-")
            path = os.path.join(tmp, "ledger.sqlite")
        url = f"sqlite:///{path}"
    ledger = Ledger(url)
    build(ledger, args.sessions, args.users, args.groups)
    rows = ledger.count()[0]
    ledger.close()

    results = {}
    configs = (
        ("baseline (on the loop)", False, False),
        ("ledger threads", True, False),
        ("threads + usage in memory", True, True),
    )
    for label, threads, memory in configs:
        if args.skip_baseline and not threads:
            continue
        results[label] = asyncio.run(run(url, args, threads=threads, memory=memory))
    print(
        f"\n{rows:,} sessions, {args.users:,} users, {args.groups} groups; {args.running:,} pods per phase; "
        "quota check = GET /api/quota/<user> over HTTP, every 10 ms"
    )
    head = f"{'phase':<12} {'':<26} {'checks':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    head += f" {'lag p99':>8} {'lag max':>8} {'took s':>7}"
    print(head)
    for name in PHASES:
        for label, res in results.items():
            lo, hi = res["took"][name]
            ms = [1000 * (b - a) for a, b in res["checks"] if during(a, b, lo, hi)]
            lag = [1000 * (b - a - 0.005) for a, b in res["lags"] if during(a, b, lo, hi)]
            print(
                f"{name:<12} {label:<26} {len(ms):>6} {pct(ms, 50):>8.1f} {pct(ms, 99):>8.1f} "
                f"{max(ms, default=float('nan')):>8.1f} {pct(lag, 99):>8.1f} "
                f"{max(lag, default=float('nan')):>8.1f} {hi - lo:>7.2f}"
            )
    for label, res in results.items():
        lo, hi = res["took"][PHASES[0]][0], res["took"][PHASES[-1]][1]
        every = [1000 * (b - a) for a, b in res["checks"] if a < hi and b > lo]
        lag = [1000 * (b - a - 0.005) for a, b in res["lags"] if a < hi and b > lo]
        print(
            f"all phases, {label}: quota check p99 {pct(every, 99):.1f} ms, max {max(every):.1f} ms "
            f"({len(every)} checks); loop lag p99 {pct(lag, 99):.1f} ms, max {max(lag):.1f} ms; "
            f"sessions opened {res['opened']:,}; longest garbage collection "
            f"{1000 * max((dt for _, dt in res['gc']), default=0):.1f} ms ({len(res['gc'])} collections)"
        )
        if res["held"] is not None:
            print(
                f"  usage in memory: filled in {res['fill']:.2f} s; holds {res['held'][0]:,} users and groups, "
                f"{res['held'][1]:,} sessions not folded"
            )
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
