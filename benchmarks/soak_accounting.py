"""A month of a busy hub for the accounting service: does its memory stay flat? Prints figures; not a test.

    python benchmarks/soak_accounting.py [--users 2000] [--days 30] [--rounds-per-day 24]

The hub API emulator of ``soak.py`` (its own process, real HTTP, a fake clock: each user starts a
server every morning, works until an afternoon hour, then stops it or leaves it idle) and the real
``CullerService`` in a second process on the same clock (2 h idle timeout, 12 h max age, a 20:00
weekday shutdown; it stops idle servers and appends to ``stop-reasons.jsonl``). This process runs the
real ``AccountingService`` on the same fake clock, with its ledger threads and a SQLite ledger:

* **pod events** — after each step of the clock, the servers the emulator runs are compared with the
  last step's: a new server is first checked against its user's quota (``quota_check``, the spawner's
  pre-spawn request; a refusal stops it on the emulator, as the hub would refuse the spawn) and
  then becomes a pod watch event (``handle_pod``, a pod started at the server's start); a server gone
  becomes the pod's DELETED event with its deletionTimestamp;
* **hub rounds** — ``hub_round`` after each step: the users and groups from the emulator, the
  culler's stop reasons, the quota round (warnings written to quota-warnings.json; stops over budget
  through the emulator's API), the heartbeat.

Budgets: ``--cpu-hours`` per user per month (default 100: users who work long days are warned in
the third week and stopped over budget, then refused at spawn until the month ends), the group's
budget out of reach. The month changes on day 30 (the emulator starts on 2026-11-02).

After each simulated day: a full garbage collection, then the resident set size of this process
(the accounting service), of the hub emulator's and of the culler's, and the service's state that
could grow per user-day: sessions warned and stop requested, current quota warnings, the usage
cache (keys, sessions not folded), culler records and unmatched ones, pods waiting for groups,
claim sizes cached. Printed: day 1, every ``--every`` days and the last day, with the growth of
each RSS from day 1 in per cent.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak import PAGE, POLICY, START, rss_mib, serve_hub  # the culler soak's emulator and policy

from apex_hub.local import free_port


def rss_of(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pod(user: str, started: str, *, deleted_at: datetime | None = None) -> dict:
    """The server pod of ``user``'s server started at ``started`` (one uid per server start)."""
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"soak/{user}/{started}"))
    meta = {
        "uid": uid,
        "name": f"jupyter-{user}",
        "namespace": f"apex-{user}",
        "resourceVersion": "1",
        "labels": {
            "component": "singleuser-server",
            "app.kubernetes.io/part-of": "apex-workspace",
            "apex.esa.int/user": user,
            "apex.esa.int/profile": "jupyterlab",
        },
        "annotations": {"apex.esa.int/username": user},
    }
    if deleted_at is not None:
        meta["deletionTimestamp"] = deleted_at.isoformat()
    return {
        "metadata": meta,
        "spec": {
            "containers": [
                {
                    "name": "notebook",
                    "image": "img:1",
                    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
                }
            ]
        },
        "status": {"phase": "Running", "startTime": started},
    }


# ---- the culler in a process of its own, on the clock it is sent ---------------------------------


def culler_process(conn, url: str, state_dir: str) -> None:
    from apex_hub.services.culler.policy import CullingPolicy
    from apex_hub.services.culler.service import CullerService

    async def run() -> None:
        path = Path(state_dir) / "policy.json"
        path.write_text(json.dumps(POLICY))
        now = [START]
        svc = CullerService(
            CullingPolicy.load(str(path)),
            api_url=f"{url}/hub/api",
            api_token="soak",
            state_dir=state_dir,
            clock=lambda: now[0],
            warn_before=900,
            page_size=PAGE,
        )
        loop = asyncio.get_running_loop()
        while True:
            msg = await loop.run_in_executor(None, conn.recv)
            if msg is None:
                break
            now[0] = datetime.fromisoformat(msg)
            report = await svc.run_once()
            conn.send(len(report.stopped))
        await svc.close()

    asyncio.run(run())


# ---- the accounting service on the fake clock -------------------------------------------------------


def state(svc) -> dict[str, int]:
    keys, unfolded = svc.usage.size() if svc.usage is not None else (0, 0)
    return {
        "warned": len(svc._warned),
        "stop_requested": len(svc._stop_requested),
        "warnings": len(svc.quota_warnings),
        "cache_keys": keys,
        "cache_rows": unfolded,
        "culler_records": len(svc._culler_records),
        "unmatched": len(svc._unmatched),
        "deferred": len(svc._deferred),
        "pvc_cache": len(svc._pvc_cache),
    }


async def soak(args, url: str, tmp: Path, culler, pids: dict[str, int]) -> tuple[list[dict], dict]:
    import aiohttp

    from apex_hub.services.accounting.db import Ledger
    from apex_hub.services.accounting.quota import Quotas
    from apex_hub.services.accounting.service import AccountingService
    from apex_hub.services.common.hub import HubClient

    culler_dir = tmp / "culler"
    ledger = Ledger(f"sqlite:///{tmp / 'ledger.sqlite'}")
    quotas = Quotas.from_dict(
        {
            "period": "month",
            "groups": {"apex-small": {"cpu_hours": 1e9}},
            "default": {"cpu_hours": args.cpu_hours},
        }
    )
    now = [START]
    svc = AccountingService(
        ledger,
        hub=HubClient(f"{url}/hub/api", "soak", page_size=PAGE),
        kube=None,
        stop_reasons=culler_dir / "stop-reasons.jsonl",
        interval=3600,
        quotas=quotas,
        quota_stop=True,
        state_dir=tmp / "accounting",
        clock=lambda: now[0],
    )
    await svc.fill_usage()
    gc.freeze()  # as start() does
    step = timedelta(days=1) / args.rounds_per_day
    rows: list[dict] = []
    totals = {"started": 0, "refused": 0, "stopped": 0, "culled": 0}
    running: dict[str, str] = {}  # user -> start time of their server, as last seen
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as control:
        for day in range(1, args.days + 1):
            for _ in range(args.rounds_per_day):
                now[0] += step
                async with control.post(f"{url}/_soak/now", json={"now": now[0].isoformat()}) as r:
                    await r.read()
                culler.send(now[0].isoformat())
                totals["culled"] += await loop.run_in_executor(None, culler.recv)
                async with control.get(f"{url}/_soak/servers") as r:
                    servers = await r.json()
                for user, started in sorted(running.items()):
                    if servers.get(user) != started:  # stopped (by the user, the culler or a quota stop)
                        await svc.handle_pod(pod(user, started, deleted_at=now[0]), deleted=True)
                        totals["stopped"] += 1
                        del running[user]
                for user, started in sorted(servers.items()):
                    if user in running:
                        continue
                    groups = svc.groups.get(user) or await svc.user_groups(user)
                    status = await svc.quota_check(user, groups)
                    if status is not None and not status.allowed:  # the spawner refuses the spawn
                        async with control.delete(f"{url}/hub/api/users/{user}/server") as r:
                            await r.read()
                        totals["refused"] += 1
                        continue
                    await svc.handle_pod(pod(user, started))
                    running[user] = started
                    totals["started"] += 1
                await svc.hub_round()
            gc.collect()
            rows.append(
                {
                    "day": day,
                    "date": now[0].date().isoformat(),
                    "service_mib": rss_mib(),
                    "hub_mib": rss_of(pids["hub"]),
                    "culler_mib": rss_of(pids["culler"]),
                    "objects": len(gc.get_objects()),
                    "running": len(running),
                    **state(svc),
                }
            )
            print(
                f"day {day:>2} {rows[-1]['date']}: service {rows[-1]['service_mib']:.1f} MiB, "
                f"{rows[-1]['running']} running, {rows[-1]['warnings']} warnings",
                flush=True,
            )
    totals["sessions"], totals["events"] = ledger.count()
    totals["stats"] = {k: v for k, v in vars(svc.stats).items() if isinstance(v, int)}
    await svc.hub.close()
    svc.db.close()
    ledger.close()
    return rows, totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--rounds-per-day", type=int, default=24)
    ap.add_argument("--cpu-hours", type=float, default=100.0, help="each user's budget per month")
    ap.add_argument("--every", type=int, default=5, help="print every N days")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    random.seed(args.seed)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ready = multiprocessing.Event()
    hub = multiprocessing.Process(target=serve_hub, args=(port, args.users, args.seed, ready), daemon=True)
    hub.start()
    ready.wait(30)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/hub/api/", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "culler").mkdir()
        here, there = multiprocessing.Pipe()
        culler = multiprocessing.Process(
            target=culler_process, args=(there, url, str(Path(tmp) / "culler")), daemon=True
        )
        culler.start()
        try:
            rows, totals = asyncio.run(
                soak(args, url, Path(tmp), here, {"hub": hub.pid, "culler": culler.pid})
            )
        finally:
            here.send(None)
            culler.join(30)
            hub.terminate()
    base, last = rows[0], rows[-1]
    print(
        f"\naccounting soak: {args.users} users, {args.days} simulated days ({base['date']} to {last['date']}),"
        f" {args.rounds_per_day} steps a day, {time.monotonic() - t0:.0f} s; budget {args.cpu_hours:g}"
        f" CPU-hours per user per month"
    )
    print(
        f"servers started {totals['started']:,}, refused at spawn {totals['refused']:,}, stopped {totals['stopped']:,}"
        f" (culler {totals['culled']:,}); ledger {totals['sessions']:,} sessions, {totals['events']:,} events;"
        f" service counters {totals['stats']}"
    )
    cols = [
        "service_mib",
        "hub_mib",
        "culler_mib",
        "objects",
        "running",
        "warned",
        "stop_requested",
        "warnings",
        "cache_keys",
        "cache_rows",
        "culler_records",
        "unmatched",
        "deferred",
        "pvc_cache",
    ]
    print(f"{'day':>4} " + " ".join(f"{c:>14}" for c in cols))
    for row in rows:
        if row["day"] in (1, len(rows)) or row["day"] % args.every == 0:
            cells = " ".join(
                f"{row[c]:>14.1f}" if isinstance(row[c], float) else f"{row[c]:>14}" for c in cols
            )
            print(f"{row['day']:>4} {cells}")
    print()
    for name in ("service", "hub", "culler"):
        a, b = base[f"{name}_mib"], last[f"{name}_mib"]
        growth = 100 * (b / a - 1)
        verdict = "within" if abs(growth) <= 10 else "NOT within"
        print(
            f"{name:<8} RSS day 1 {a:.1f} MiB -> day {last['day']} {b:.1f} MiB: {growth:+.1f}% ({verdict} 10%)"
        )
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
