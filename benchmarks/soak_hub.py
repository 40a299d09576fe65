"""A month of a 2,000-user hub's spawner side in minutes: does its memory stay flat? Prints figures.

    python benchmarks/soak_hub.py [--users 2000] [--days 30] [--active 100] [--concurrency 150]

kubesim runs in a process of its own (``apex-hub kubesim``, instant kubelet, real HTTP on loopback),
as the API server does. This process is the hub's spawner side, as long-lived as a hub: one
``APExSpawner`` per user, made when the user first appears and kept (JupyterHub keeps a user's
spawner objects for the life of the process), the shared pod and event reflectors, the shared
kubernetes_asyncio client, and one ``APExOIDCAuthenticator`` whose per-user refresh locks every
spawn goes through (``refresh_user`` with a fresh token: the lock, the auth state, no provider).

A simulated day (no sleeping and no waiting for the clock: a day is as long as its work takes): ``--active``
users (all of them on day 1, so day 1 has made every per-user object) each refresh their tokens,
start a server with the APEx-like profile of ``spawner_latency.py`` and their auth state (so the
token Secret goes into the workspace), follow the spawn's progress as the spawn page does, are
polled while they work (the hub's ``poll_interval``), save the spawner state, and stop it;
``--concurrency`` at a time. kubesim records the pods' Events (Scheduled, Started, Killing, ...);
each night they are deleted, as the API server's ``--event-ttl`` (1 h) would have done by then, so
the event reflector sees them go.

After each day: a full collection, then this process's resident set size, the objects Python
tracks, and the sizes of everything per user or per spawn the hub keeps (reflector caches, the
authenticator's locks, the spawners' progress lists, the API client's connections). Printed: day 1,
every ``--every`` days and the last, with the growth from day 1.

Why the spawner objects and not a whole JupyterHub: the hub's memory per user beyond JupyterHub's
own (its ORM objects and ``User`` wrappers, bounded by the number of users, and upstream's) is what
APExSpawner, KubeSpawner's reflectors, the kubernetes_asyncio client and the authenticator's locks
hold, and those are exactly the objects driven here, through the calls JupyterHub makes (``start``,
``progress``, ``poll``, ``get_state``, ``stop``, ``refresh_user``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak import print_days  # the culler soak's day table
from spawner_latency import HubUser, apex_spawner, sim_own_process  # the same profile and kubesim

from apex_hub.auth.authenticator import APExOIDCAuthenticator
from apex_hub.spawner import APExSpawner


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class User(HubUser):
    """The hub's user as the authenticator's refresh sees it (its auth state, stored)."""

    def __init__(self, name: str, uid: int):
        super().__init__(name, uid)
        self.auth_state = {
            "access_token": f"token-of-{name}",
            "refresh_token": f"refresh-of-{name}",
            "expires_at": time.time() + 10 * 365 * 86400,  # fresh: refresh_user returns at once
            "oauth_user": {"sub": name, "preferred_username": name},
            "primary_group": "apex-small",
        }

    async def get_auth_state(self):
        return self.auth_state

    async def save_auth_state(self, state):
        self.auth_state = state


class EventTTL:
    """The API server's ``--event-ttl`` on the fake clock: the Events kubesim records for the
    pods (Scheduled, Started, Killing, ...) go an hour after they were made. A simulated day is
    ten hours of spawns; after each tenth of the day's cycles, the namespaces used since the last
    time are cleared of their Events."""

    def __init__(self, url: str):
        import aiohttp

        self.url = url
        self.session = aiohttp.ClientSession()
        self.namespaces: set[str] = set()
        self.deleted = 0

    async def expire(self) -> None:
        namespaces, self.namespaces = sorted(self.namespaces), set()
        for namespace in namespaces:
            async with self.session.delete(f"{self.url}/api/v1/namespaces/{namespace}/events") as r:
                r.raise_for_status()
                self.deleted += len((await r.json()).get("items") or [])

    async def close(self) -> None:
        await self.session.close()


def kept(spawners: dict, authenticator) -> dict[str, int]:
    """What the hub holds per user or per spawn, by kind."""
    any_spawner = next(iter(spawners.values()))
    pods = any_spawner.pod_reflector.resources if any_spawner.pod_reflector else {}
    events = any_spawner.event_reflector.resources if any_spawner.event_reflector else {}
    connector = any_spawner.api.api_client.rest_client.pool_manager.connector
    return {
        "spawners": len(spawners),
        "reflected_pods": len(pods),
        "reflected_events": len(events),
        "refresh_locks": len(authenticator._refresh_locks),
        "progress_events": sum(len(s._progress_events) for s in spawners.values()),
        "connections": sum(len(v) for v in connector._conns.values()),
        "reflectors": len(APExSpawner.reflectors),
    }


async def cycle(spawner, user, authenticator, ttl: EventTTL, polls: int) -> None:
    """One user's day: refresh, start (following the progress), work, stop."""
    await asyncio.gather(authenticator.refresh_user(user), authenticator.refresh_user(user))
    await spawner.run_auth_state_hook(await user.get_auth_state())
    spawner.user_options = {"profile": "apex"}
    start = asyncio.ensure_future(spawner.start())
    seen = [event async for event in spawner.progress()]  # the spawn page's event stream
    await start
    assert seen, "no progress events"
    ttl.namespaces.add(spawner.namespace)
    for _ in range(polls):  # the hub polls running servers while the user works
        status = await spawner.poll()
        assert status is None, f"{user.name}: server not running ({status})"
    json.dumps(spawner.get_state())  # the hub stores it after a start and after a stop
    await spawner.stop()
    json.dumps(spawner.get_state())


async def soak(args) -> tuple[list[dict], dict]:
    rng = random.Random(args.seed)
    async with sim_own_process(0.0, False) as sim:
        authenticator = APExOIDCAuthenticator(
            oidc_issuer="https://idp.invalid", client_id="c", client_secret="s", enable_auth_state=True
        )
        users = [User(f"user{i:05d}", i + 1) for i in range(args.users)]
        spawners: dict[str, APExSpawner] = {}
        first = apex_spawner(sim.url, "warmup", 10**6)  # the hub starts its reflectors once
        await asyncio.gather(first._start_watching_pods(), first._start_watching_events())
        ttl = EventTTL(sim.url)
        limit = asyncio.Semaphore(args.concurrency)
        rows = []
        failures = []

        done = [0, 1]  # cycles finished, cycles per simulated hour
        expiring = asyncio.Lock()

        async def one(user):
            async with limit:
                spawner = spawners.get(user.name)
                if spawner is None:  # the user's first login: the hub makes its spawner
                    spawner = spawners[user.name] = apex_spawner(sim.url, user.name, user.id)
                    spawner.user = user
                try:
                    await cycle(spawner, user, authenticator, ttl, args.polls)
                except Exception as exc:  # counted and shown; the soak goes on
                    failures.append(f"{user.name}: {type(exc).__name__}: {exc}")
            done[0] += 1
            if done[0] % done[1] == 0 and not expiring.locked():
                async with expiring:  # an hour of fake time has gone by
                    await ttl.expire()

        began = time.monotonic()
        for day in range(1, args.days + 1):
            active = users if day == 1 else rng.sample(users, min(args.active, len(users)))
            done[1] = max(1, len(active) // 10)
            await asyncio.gather(*(one(u) for u in active))  # the day's work, its order by chance
            await ttl.expire()  # tonight, an hour after the last of them
            await asyncio.sleep(0.2)  # the reflectors take in the deletions
            gc.collect()
            rows.append(
                {
                    "day": day,
                    "rss_mib": rss_mib(),
                    "objects": len(gc.get_objects()),
                    "spawns": len(active),
                    "elapsed_s": time.monotonic() - began,
                    **kept(spawners, authenticator),
                }
            )
            print(
                f"  day {day:>2}: {len(active)} spawns, RSS {rows[-1]['rss_mib']:.1f} MiB"
                f" ({rows[-1]['elapsed_s']:.0f} s)",
                flush=True,
            )
        await ttl.close()
        totals = {"failures": failures, "spawns": sum(r["spawns"] for r in rows)}
        return rows, totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--active", type=int, default=100, help="users spawning on each day after the first")
    ap.add_argument("--concurrency", type=int, default=150, help="spawns in progress at once")
    ap.add_argument("--polls", type=int, default=2, help="hub polls of each running server")
    ap.add_argument("--every", type=int, default=5, help="print every N days")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for name in ("traitlets", "kubespawner", "apex_hub", "JupyterHub", "asyncio"):
        logging.getLogger(name).setLevel(logging.ERROR)
    rows, totals = asyncio.run(soak(args))
    base = rows[0]
    print(
        f"\nhub (spawner side) soak: {args.users} users, {args.days} simulated days, {totals['spawns']} spawns"
        f" + stops (every user on day 1, then {args.active} a day), {args.concurrency} at a time,"
        " kubesim in its own process"
    )
    cols = [
        "rss_mib",
        "objects",
        "spawners",
        "reflected_pods",
        "reflected_events",
        "refresh_locks",
        "progress_events",
        "connections",
    ]
    last = rows[-1]
    print(
        print_days(rows, cols, args.every, width=16) + f"; objects {base['objects']} -> {last['objects']};"
        f" {len(totals['failures'])} failed cycles; {last['elapsed_s']:.0f} s"
    )
    for failure in totals["failures"][:5]:
        print(f"  failed: {failure}")


if __name__ == "__main__":
    main()
