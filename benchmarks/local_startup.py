"""Local mode: how long from the spawn form's submit to JupyterLab answering, and where the seconds go.

Starts ``apex-hub local`` as ``scripts/run.sh`` does (kubesim in this process with its process
kubelet, JupyterHub and its proxy as subprocesses, the three services), signs alice in with the
shared-password login (the login itself is not measured), and then, ``--repeat`` times:

1. ``POST /hub/spawn/alice`` with the form's profile, as the browser submits it (t = 0);
2. follows ``/hub/api/users/alice/server/progress`` as the progress page does, until ``ready``;
3. ``GET /user/alice/lab`` through the single-user server's OAuth hand-shake, until JupyterLab's page
   answers 200: the figure that counts;
4. stops the server and waits until it is gone.

Each run is split into phases, from the hub's and kubesim's own records:

* ``form→pod``: the hub's handler, the spawner's checks and the workspace objects, up to kubesim's
  ``create pods`` request;
* ``pod→process``: kubesim's kubelet starting the pod's process (``localpod`` then
  ``jupyterhub-singleuser``);
* ``process→listening``: the Jupyter server importing and binding its port (polled by this script
  every 10 ms on the pod's address);
* ``listening→ready``: the spawner noticing the pod is Running (KubeSpawner polls its reflector) and
  JupyterHub's own check that the server answers, until the progress stream says ``ready``;
* ``ready→lab``: the browser's redirect, the OAuth hand-shake with the hub and Lab's page.

Prints the median of each phase and of the total, beside the figures of the baseline run when
``--baseline`` is given (``--baseline-env K=V`` sets environment variables for the hub of the
baseline run: e.g. the switches of the speed-ups, to measure with and without them in one run).
Not a test. A few seconds per run.

    python benchmarks/local_startup.py [--repeat 10] [--profile jupyterlab]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apex_hub.local import LocalHub, free_port

USER = "alice"
PHASES = ["form→pod", "pod→process", "process→listening", "listening→ready", "ready→lab", "total"]


async def login(session: aiohttp.ClientSession, base: str, password: str) -> str:
    async with session.get(f"{base}hub/login") as r:
        await r.read()
    xsrf = _xsrf(session)
    async with session.post(
        f"{base}hub/login",
        data={"username": USER, "password": password, "_xsrf": xsrf},
        allow_redirects=False,
    ) as r:
        if r.status not in (302, 303):
            raise SystemExit(f"login failed: {r.status} {await r.text()}")
    return _xsrf(session)


def _xsrf(session: aiohttp.ClientSession) -> str:
    for cookie in session.cookie_jar:
        if cookie.key == "_xsrf":
            return cookie.value
    return ""


async def pod_started(hub: LocalHub) -> tuple[float | None, str | None]:
    """When kubesim started the pod's process, and the pod's address (None until it runs)."""
    store = hub.sim.store
    pods, _, _ = store.list(store._rt("pods"), None)
    for pod in pods:
        if pod["metadata"].get("annotations", {}).get("hub.jupyter.org/username") == USER:
            ip = pod.get("status", {}).get("podIP")
            return (time.monotonic() if ip else None), ip
    return None, None


async def one_run(hub: LocalHub, session: aiohttp.ClientSession, xsrf: str, profile: str) -> dict:
    base = hub.url
    sim = hub.sim
    sim.requests.clear()
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    async with session.post(
        f"{base}hub/spawn/{USER}", data={"profile": profile, "_xsrf": xsrf}, allow_redirects=False
    ) as r:
        if r.status not in (302, 303):
            raise SystemExit(f"spawn form refused: {r.status} {(await r.text())[:500]}")

    async def watch_pod() -> None:
        # the pod's process start and the server binding its port, as seen from outside
        ip = None
        while ip is None:
            started, ip = await pod_started(hub)
            if ip is None:
                await asyncio.sleep(0.01)
        marks["process"] = started
        url = f"http://{ip}:8888/user/{USER}/api"
        async with aiohttp.ClientSession() as probe:
            while True:
                try:
                    async with probe.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                        await resp.read()
                        marks["listening"] = time.monotonic()
                        return
                except (aiohttp.ClientError, TimeoutError):
                    await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch_pod())
    headers = {"X-XSRFToken": xsrf}
    async with session.get(
        f"{base}hub/api/users/{USER}/server/progress",
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=300),
    ) as r:
        async for raw in r.content:
            line = raw.decode().strip()
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("ready"):
                    marks["ready"] = time.monotonic()
                    break
                if event.get("failed"):
                    raise SystemExit(f"spawn failed: {event}")
    async with session.get(f"{base}user/{USER}/lab", timeout=aiohttp.ClientTimeout(total=120)) as r:
        body = await r.text()
        if r.status != 200 or "jupyter-config-data" not in body:
            raise SystemExit(f"JupyterLab did not answer: {r.status} {r.url}")
    marks["lab"] = time.monotonic()
    await watcher
    create = [q for q in sim.requests if q.verb == "create" and q.resource == "pods"]
    marks["pod"] = create[0].started if create else t0  # kubesim's request log: time.monotonic()
    async with session.delete(f"{base}hub/api/users/{USER}/server", headers=headers) as r:
        if r.status not in (202, 204):
            raise SystemExit(f"stop refused: {r.status} {await r.text()}")
    while True:
        async with session.get(f"{base}hub/api/users/{USER}", headers=headers) as r:
            model = await r.json()
        if not model.get("servers", {}).get(""):
            break
        await asyncio.sleep(0.1)
    return {
        "form→pod": marks["pod"] - t0,
        "pod→process": marks["process"] - marks["pod"],
        "process→listening": marks["listening"] - marks["process"],
        "listening→ready": marks["ready"] - marks["listening"],
        "ready→lab": marks["lab"] - marks["ready"],
        "total": marks["lab"] - t0,
    }


async def measure(label: str, repeat: int, profile: str, env: dict[str, str]) -> list[dict]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    hub = LocalHub(port=free_port(), login="password", password="bench-password")
    try:
        hub.check()
        await hub.start()
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            xsrf = await login(session, hub.url, hub.password)
            await one_run(hub, session, xsrf, profile)  # warm-up: the first spawn creates the workspace
            runs = []
            for i in range(repeat):
                runs.append(await one_run(hub, session, xsrf, profile))
                print(f"  {label} run {i + 1}: {runs[-1]['total']:.2f} s", flush=True)
            return runs
    finally:
        await hub.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def medians(runs: list[dict]) -> dict[str, float]:
    return {p: statistics.median(r[p] for r in runs) for p in PHASES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--profile", default="jupyterlab")
    ap.add_argument("--baseline", action="store_true", help="also run a baseline, with --baseline-env")
    ap.add_argument("--baseline-env", action="append", default=[], metavar="K=V")
    args = ap.parse_args()
    results = {}
    if args.baseline:
        env = dict(kv.split("=", 1) for kv in args.baseline_env)
        results["baseline"] = medians(asyncio.run(measure("baseline", args.repeat, args.profile, env)))
    results["apex-hub"] = medians(asyncio.run(measure("apex-hub", args.repeat, args.profile, {})))
    load = os.getloadavg()[0]
    print(f"\nlocal mode, profile {args.profile!r}: median of {args.repeat} spawns (load average {load:.1f})")
    print(f"{'phase':<20}" + "".join(f"{k:>12}" for k in results))
    for p in PHASES:
        print(f"{p:<20}" + "".join(f"{results[k][p]:>11.2f}s" for k in results))


if __name__ == "__main__":
    main()
