"""How long one culler round takes for 10,000 users of whom 1,000 have a running server, and how many
hub API requests it makes — the service as it is, beside the baseline (the stops through
jupyterhub-idle-culler's ``cull_idle`` and a confirming listing) in the same run. Prints figures; not
a test.

    python benchmarks/culler_scale.py [--users 10000] [--running 1000] [--idle 100] [--page-limit 200]

The hub is a hub REST API emulator in a separate process (real HTTP on 127.0.0.1): ``GET /hub/api/``,
``GET /hub/api/users`` with JupyterHub 6's pagination (``offset``/``limit``, default and maximum page
size 200, the ``application/jupyterhub-pagination+json`` envelope with ``_pagination.next``, the
``state`` filter and ``include_stopped_servers``), ``GET /hub/api/users/{name}`` and
``DELETE /hub/api/users/{name}/server``. It counts every request. The culler is the real
``CullerService``; each variant runs against freshly restored hub data:

* a policy without always-on servers: the culler lists the active users only (``state=active``);
* the same policy with an always-on group: it lists every user, stopped servers included (what it
  needs to restart always-on servers) — N/200 pages for N users.

Target (issue 19): a round in < 2 s with at most N/200 + 5 requests besides the stops themselves
(one DELETE per stopped server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apex_hub.local import free_port

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # Monday 16:00 in Rome
POLICY = {
    "defaults": {
        "idle_timeout": "2h",
        "max_age": "1d",
        "schedule": {"cron": "0 20 * * 1-5", "timezone": "Europe/Rome"},
    },
    "profiles": {"gpu": {"idle_timeout": "30m", "max_age": "8h"}},
    "groups": {"students": {"idle_timeout": "1h"}},
}


# ---- the hub API emulator (runs in its own process) ------------------------------------------


def paged_response(request, names: list[str], to_model, page_default: int, page_max: int):
    """JupyterHub 6's answer to ``GET /users`` over ``names``: ``offset``/``limit`` (at most
    ``page_max``), and the pagination envelope with ``_pagination.next`` when the client asks for it."""
    from aiohttp import web

    paginated = request.headers.get("Accept") == "application/jupyterhub-pagination+json"
    offset = abs(int(request.query.get("offset", 0)))
    limit = abs(int(request.query.get("limit", page_default if paginated else page_max)))
    limit = max(1, min(limit, page_max))
    page = [to_model(name) for name in names[offset : offset + limit]]
    if not paginated:
        return web.json_response(page)
    nxt = None
    if offset + limit < len(names):
        query = {**request.query, "offset": str(offset + limit), "limit": str(limit)}
        nxt = {
            "offset": offset + limit,
            "limit": limit,
            "url": f"{request.url.with_query(None)}?{urlencode(query)}",
        }
    return web.json_response(
        {"items": page, "_pagination": {"offset": offset, "limit": limit, "total": len(names), "next": nxt}}
    )


def _users(n: int, running: int, idle: int) -> dict[str, dict]:
    """The first ``running`` users have a running server; ``idle`` of those run the gpu profile and have
    been idle for 45 minutes (over its 30m). The others have a stopped default server."""
    users = {}
    for i in range(n):
        name = f"user{i:05d}"
        profile = "gpu" if i < idle else ("lab", "conda-sentinel", "desktop")[i % 3]
        last = NOW - (timedelta(minutes=45) if i < idle else timedelta(minutes=i % 25))
        users[name] = {
            "kind": "user",
            "name": name,
            "admin": False,
            "roles": ["user"],
            "groups": ["students"] if i % 10 == 5 else ["apex-users"],
            "created": (NOW - timedelta(days=30)).isoformat(),
            "last_activity": last.isoformat(),
            "pending": None,
            "auth_state": None,
            "servers": {
                "": {
                    "name": "",
                    "ready": True,
                    "stopped": False,
                    "pending": None,
                    "url": f"/user/{name}/",
                    "progress_url": f"/hub/api/users/{name}/server/progress",
                    "started": (NOW - timedelta(hours=3)).isoformat(),
                    "last_activity": last.isoformat(),
                    "state": {"pod_name": f"jupyter-{name}", "namespace": f"apex-{name}"},
                    "user_options": {"profile": profile},
                }
            },
        }
        if i >= running:
            users[name]["servers"][""].update(
                ready=False, stopped=True, url=None, started=None, progress_url=None, state={}
            )
    return users


def serve_hub(port: int, n: int, running: int, idle: int, page_default: int, page_max: int, ready) -> None:
    from aiohttp import web

    users = _users(n, running, idle)
    order = sorted(users)
    counts: Counter = Counter()

    def model(user: dict, include_stopped: bool) -> dict:
        servers = {k: v for k, v in user["servers"].items() if include_stopped or not v.get("stopped")}
        return {**user, "servers": servers}

    async def root(request):
        counts["GET /hub/api/"] += 1
        return web.json_response({"version": "6.1.1"})

    async def list_users(request):
        counts["GET /hub/api/users"] += 1
        state = request.query.get("state")
        include_stopped = request.query.get("include_stopped_servers") is not None
        names = order
        if state in ("active", "ready"):
            names = [
                u
                for u in order
                if any(
                    not s.get("stopped") and (state == "active" or s["ready"])
                    for s in users[u]["servers"].values()
                )
            ]
        elif state == "inactive":
            names = [u for u in order if all(s.get("stopped") for s in users[u]["servers"].values())]
        elif state:
            return web.json_response(
                {"status": 400, "message": f"Unrecognized state filter: {state!r}"}, status=400
            )
        return paged_response(
            request, names, lambda u: model(users[u], include_stopped), page_default, page_max
        )

    async def get_user(request):
        counts["GET /hub/api/users/{name}"] += 1
        user = users.get(request.match_info["name"])
        return web.json_response(model(user, False)) if user else web.json_response({}, status=404)

    async def stop(request):
        counts["DELETE /hub/api/users/{name}/server"] += 1
        srv = users[request.match_info["name"]]["servers"][""]
        srv.update(stopped=True, ready=False, url=None, started=None)
        return web.Response(status=204)

    async def stats(request):
        return web.json_response(dict(counts))

    async def reset(request):
        counts.clear()
        if request.query.get("restore"):
            users.clear()
            users.update(_users(n, running, idle))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/hub/api/", root)
    app.router.add_get("/hub/api/users", list_users)
    app.router.add_get("/hub/api/users/{name}", get_user)
    app.router.add_delete("/hub/api/users/{name}/server", stop)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    ready.set()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ---- the culler ------------------------------------------------------------------------------


async def _stats(url: str, reset: bool = False, restore: bool = False) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        if reset:
            await (await s.post(f"{url}/_reset" + ("?restore=1" if restore else ""))).read()
            return {}
        async with s.get(f"{url}/_stats") as r:
            return await r.json()


BULK_VERIFY = 20  # the baseline: more stops than this were confirmed with one listing


def baseline_culler():
    """The culler as it was before one listing per round (for the figures beside the new ones): its
    stops went through jupyterhub-idle-culler's ``cull_idle`` (which lists every user again, with a
    ``cull_arbiter`` that approves our decisions), then a third listing (or a GET per user, up to 20
    stops) confirmed them; a transient failure re-ran all of ``cull_idle``."""
    from jupyterhub_idle_culler import cull_idle

    from apex_hub.services.common.retry import with_retries
    from apex_hub.services.culler.service import CullerService, log

    class BaselineCuller(CullerService):
        async def _stop(self, cands, now, report) -> None:
            by_url = {c.server.get("url"): c for c in cands}
            attempted = {}

            def arbiter(*, inactive, inactive_limit, server, **_kw) -> bool:
                cand = by_url.get(server.get("url"))
                if cand is None or cand.server.get("started") != server.get("started"):
                    return False
                attempted[cand.key] = cand
                return True

            async def run():
                await cull_idle(
                    url=self.api_url,
                    api_token=self.api_token,
                    inactive_limit=1,
                    logger=log,
                    cull_users=False,
                    remove_named_servers=False,
                    max_age=0,
                    concurrency=self.concurrency,
                    api_page_size=self.page_size,
                    cull_arbiter=arbiter,
                )

            try:
                await with_retries(
                    run, what="cull_idle", tries=self.tries, base=self.backoff, cap=60.0, sleep=self.sleep
                )
            except Exception as exc:
                report.errors.append(f"cull_idle: {exc}")
            models = {}
            if len(attempted) > BULK_VERIFY:
                models = {u["name"]: u for u in await self.hub.users(state="active")}
            for key, cand in attempted.items():
                if len(attempted) <= BULK_VERIFY:
                    models[cand.user] = await self.hub.user(cand.user)
                srv = ((models.get(cand.user) or {}).get("servers") or {}).get(cand.name)
                if (
                    srv is None
                    or srv.get("stopped")
                    or srv.get("pending") == "stop"
                    or not srv.get("started")
                ):
                    self._stopped_by_us.add(key)
                    self._record(cand, now)
                    report.stopped.append(cand)

    return BaselineCuller


async def _rounds(
    label: str, culler_cls, policy, base: str, state: str, concurrency: int, target: int
) -> None:
    svc = culler_cls(
        policy,
        api_url=f"{base}/hub/api",
        api_token="bench",
        state_dir=state,
        clock=lambda: NOW,
        concurrency=concurrency,
    )
    await _stats(base, reset=True, restore=True)
    try:
        for round_label in ("round 1 (stops the idle servers)", "round 2 (nothing left to stop)"):
            await _stats(base, reset=True)
            t0 = time.perf_counter()
            report = await svc.run_once()
            elapsed = time.perf_counter() - t0
            counts = await _stats(base)
            stops = sum(v for k, v in counts.items() if k.startswith("DELETE"))
            others = sum(counts.values()) - stops
            verdict = "meets" if elapsed < 2 and others <= target else "misses"
            print(
                f"  {label:<9} {round_label}: {elapsed:5.2f} s, {sum(counts.values()):5d} hub API requests"
                f" ({stops} DELETE + {others} others; target < 2 s and <= {target} others: {verdict}),"
                f" {len(report.stopped)} stopped, {len(report.errors)} errors"
            )
            for key, value in sorted(counts.items()):
                print(f"{'':16}{value:6d}  {key}")
    finally:
        await svc.close()


async def main_async(args) -> None:
    from apex_hub.services.culler import CullerService, CullingPolicy, decide

    port = free_port()
    ready = multiprocessing.Event()
    hub = multiprocessing.Process(
        target=serve_hub,
        args=(port, args.users, args.running, args.idle, args.page_limit, args.page_limit, ready),
        daemon=True,
    )
    hub.start()
    ready.wait(30)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            await _stats(base)
            break
        except OSError:
            await asyncio.sleep(0.1)
    target = args.users // 200 + 5
    print(
        f"{args.users} users, {args.running} with a running server, {args.idle} of those idle past their"
        f" profile's timeout; hub API page size {args.page_limit} (JupyterHub 6's default and maximum: 200)"
    )
    try:
        with tempfile.TemporaryDirectory() as state:
            policy = CullingPolicy.from_data(POLICY)
            svc = CullerService(policy, api_url=f"{base}/hub/api", api_token="bench", state_dir=state)
            await _stats(base, reset=True)
            t0 = time.perf_counter()
            users = await svc.hub.users(include_stopped_servers="1")
            t_list = time.perf_counter() - t0
            listing = await _stats(base)
            await svc.close()
            t0 = time.perf_counter()
            decisions = [
                decide(srv, u["groups"], NOW, policy) for u in users for srv in u["servers"].values()
            ]
            t_decide = time.perf_counter() - t0
            print(
                f"  listing all {len(users)} users: {t_list:.2f} s, {sum(listing.values())} requests;"
                f" policy decisions for {len(decisions)} servers: {t_decide * 1000:.0f} ms"
                f" ({t_decide / len(decisions) * 1e6:.0f} µs each)"
            )
            always_on = CullingPolicy.from_data(
                {**POLICY, "groups": {**POLICY["groups"], "ops": {"session_mode": "always-on"}}}
            )
            for title, pol in (
                ("policy without always-on (lists the active users):", policy),
                ("policy with an always-on group (lists every user, stopped servers included):", always_on),
            ):
                print(title)
                for label, cls in (("baseline", baseline_culler()), ("now", CullerService)):
                    with tempfile.TemporaryDirectory() as state_dir:
                        await _rounds(label, cls, pol, base, state_dir, args.concurrency, target)
                        lines = (Path(state_dir) / "stop-reasons.jsonl").read_text().splitlines()
                        reasons = Counter(json.loads(line)["reason"] for line in lines)
                        print(f"{'':16}stop-reasons.jsonl: {len(lines)} lines {dict(reasons)}")
    finally:
        hub.terminate()
        hub.join(5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--running", type=int, default=1_000, help="users with a running server")
    p.add_argument("--idle", type=int, default=100, help="running servers idle past their timeout")
    p.add_argument("--page-limit", type=int, default=200)
    p.add_argument(
        "--concurrency", type=int, default=10, help="stops in flight at once (cull_idle's default)"
    )
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
