"""A month of a busy hub in minutes: does the culler's memory stay flat? Prints figures; not a test.

    python benchmarks/soak.py [--users 2000] [--days 30] [--rounds-per-day 24]

A hub REST API emulator runs in a process of its own (real HTTP on 127.0.0.1) with ``--users`` users
on a fake clock. Every simulated day each user starts a server in the morning (a random hour between
07:00 and 11:00), works on it (``last_activity`` moves with the clock) until an afternoon hour, and
then either stops it (one in three) or leaves it idle. The culler is the real ``CullerService`` (its
listing, decisions, stop log and bookkeeping) on the same fake clock, ``--rounds-per-day`` rounds a
day, with the policy of a production hub: 2 h idle timeout, 12 h max age, a 20:00 weekday shutdown
with a 15 min warning.

After each simulated day: a full garbage collection, then the culler process's resident set size
(``/proc/self/statm``), the objects Python tracks, the culler's own bookkeeping (servers seen running,
servers it stopped, restart records, upcoming warnings, stop-log dedup keys) and the stop log's size
on disk. Printed: day 1 (the baseline the issue measures against), every ``--every`` days, and the
last day, with the growth from day 1 in per cent.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from culler_scale import paged_response  # the same hub API emulator's paging

from apex_hub.local import free_port

START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # a Monday
POLICY = {
    "defaults": {
        "idle_timeout": "2h",
        "max_age": "12h",
        "schedule": {"cron": "0 20 * * 1-5", "timezone": "UTC"},
    },
}
PAGE = 200


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


# ---- the hub API emulator (its own process) ---------------------------------------------------


def serve_hub(port: int, users: int, seed: int, ready) -> None:
    from aiohttp import web

    rng = random.Random(seed)
    names = [f"user{i:05d}" for i in range(users)]
    servers: dict[str, dict] = {}  # name -> {"started", "last_activity", "until", "stops_self"}
    plan: dict[str, tuple[datetime, datetime, bool]] = {}
    state = {"now": START, "day": None}

    def advance(now: datetime) -> None:
        day = now.date()
        if state["day"] != day:  # a new day: everybody's plan for it
            state["day"] = day
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
            for name in names:
                start = midnight + timedelta(hours=7 + 4 * rng.random())
                end = start + timedelta(hours=2 + 6 * rng.random())
                plan[name] = (start, end, rng.random() < 1 / 3)
        for name in names:
            start, end, stops_self = plan[name]
            if name not in servers and start <= now < start + timedelta(hours=1):
                servers[name] = {"started": start, "last_activity": start}
            srv = servers.get(name)
            if srv is None:
                continue
            srv["last_activity"] = min(now, end)
            if stops_self and now >= end:
                del servers[name]  # the user stopped it from the hub's page
        state["now"] = now

    def model(name: str) -> dict:
        srv = servers.get(name)
        out: dict = {"kind": "user", "name": name, "admin": False, "groups": ["apex-small"], "servers": {}}
        if srv:
            out["servers"][""] = {
                "name": "",
                "ready": True,
                "pending": None,
                "stopped": False,
                "started": _iso(srv["started"]),
                "last_activity": _iso(srv["last_activity"]),
                "url": f"/user/{name}/",
                "user_options": {"profile": "jupyterlab"},
                "state": {},
            }
            out["last_activity"] = _iso(srv["last_activity"])
        return out

    async def root(request):
        return web.json_response({"version": "5.5.0"})

    async def list_users(request):
        chosen = sorted(servers) if request.query.get("state") == "active" else names
        return paged_response(request, chosen, model, PAGE, PAGE)

    async def get_user(request):
        return web.json_response(model(request.match_info["name"]))

    async def stop(request):
        servers.pop(request.match_info["name"], None)
        return web.Response(status=204)

    async def control(request):
        body = await request.json()
        advance(datetime.fromisoformat(body["now"]))
        return web.json_response({"running": len(servers)})

    async def running(request):  # the pod source of benchmarks/soak_accounting.py: who runs since when
        return web.json_response({name: _iso(srv["started"]) for name, srv in servers.items()})

    app = web.Application()
    app.router.add_get("/_soak/servers", running)
    app.router.add_get("/hub/api/", root)
    app.router.add_get("/hub/api/users", list_users)
    app.router.add_get("/hub/api/users/{name}", get_user)
    app.router.add_delete("/hub/api/users/{name}/server", stop)
    app.router.add_post("/_soak/now", control)
    ready.set()
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=False)


# ---- the culler on the fake clock ---------------------------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bookkeeping(svc) -> dict[str, int]:
    restart_records = sum(len(v) for v in vars(svc.restarts).values() if isinstance(v, dict))
    return {
        "running": len(svc._running),
        "stopped_by_us": len(svc._stopped_by_us),
        "restart_records": restart_records,
        "upcoming": sum(len(v) for v in svc._upcoming.values()),
        "stoplog_keys": len(svc.stop_log),
    }


async def soak(args, url: str, state_dir: Path) -> list[dict]:
    import aiohttp

    from apex_hub.services.culler.policy import CullingPolicy
    from apex_hub.services.culler.service import CullerService

    policy_path = state_dir / "policy.json"
    policy_path.write_text(json.dumps(POLICY))
    now = [START]
    svc = CullerService(
        CullingPolicy.load(str(policy_path)),
        api_url=f"{url}/hub/api",
        api_token="soak",
        state_dir=state_dir,
        clock=lambda: now[0],
        warn_before=900,
        page_size=PAGE,
    )
    step = timedelta(days=1) / args.rounds_per_day
    rows = []
    stopped = 0
    async with aiohttp.ClientSession() as control:
        for day in range(1, args.days + 1):
            for _ in range(args.rounds_per_day):
                now[0] += step
                async with control.post(f"{url}/_soak/now", json={"now": now[0].isoformat()}) as r:
                    running = (await r.json())["running"]
                report = await svc.run_once()
                stopped += len(report.stopped)
            gc.collect()
            log_bytes = sum(p.stat().st_size for p in state_dir.glob("stop-reasons.jsonl*"))
            rows.append(
                {
                    "day": day,
                    "rss_mib": rss_mib(),
                    "objects": len(gc.get_objects()),
                    "running": running,
                    "stop_log_mib": log_bytes / 2**20,
                    **bookkeeping(svc),
                }
            )
    await svc.close()
    return rows


def print_days(rows: list[dict], cols: list[str], every: int, width: int) -> str:
    """Print the day table (day 1, every ``every``-th day, the last) with RSS growth; the summary line."""
    base = rows[0]
    print(f"{'day':>4} " + " ".join(f"{c:>{width}}" for c in cols) + f" {'RSS vs day 1':>13}")
    for row in rows:
        if row["day"] in (1, len(rows)) or row["day"] % every == 0:
            growth = 100 * (row["rss_mib"] / base["rss_mib"] - 1)
            cells = " ".join(
                f"{row[c]:>{width}.1f}" if isinstance(row[c], float) else f"{row[c]:>{width}}" for c in cols
            )
            print(f"{row['day']:>4} {cells} {growth:>+12.1f}%")
    last = rows[-1]
    growth = 100 * (last["rss_mib"] / base["rss_mib"] - 1)
    verdict = "within" if abs(growth) <= 10 else "NOT within"
    return (
        f"\nRSS day 1 {base['rss_mib']:.1f} MiB -> day {last['day']} {last['rss_mib']:.1f} MiB: {growth:+.1f}%"
        f" ({verdict} the 10% target)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--rounds-per-day", type=int, default=24)
    ap.add_argument("--every", type=int, default=5, help="print every N days")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    port = free_port()
    ready = multiprocessing.Event()
    hub = multiprocessing.Process(target=serve_hub, args=(port, args.users, args.seed, ready), daemon=True)
    hub.start()
    ready.wait(30)
    url = f"http://127.0.0.1:{port}"
    import time
    import urllib.request

    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/hub/api/", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = asyncio.run(soak(args, url, Path(tmp)))
    finally:
        hub.terminate()
    print(
        f"\nculler soak: {args.users} users, {args.days} simulated days, {args.rounds_per_day} rounds a day"
        f" (one session per user per day)"
    )
    cols = [
        "rss_mib",
        "objects",
        "running",
        "stopped_by_us",
        "restart_records",
        "upcoming",
        "stoplog_keys",
        "stop_log_mib",
    ]
    print(print_days(rows, cols, args.every, width=15))


if __name__ == "__main__":
    main()
