"""Conda environments built once per cluster (``conda_cache_volume``) against per-user builds.

APExSpawner in process against a process-mode kubesim over real HTTP: the real init container
script builds (``venv`` builder: no Conda channel is reachable here) into each user's claim, or,
with the cache on, the real build Job builds once into a hostPath cache that every workspace
mounts read-only. The profile has one environment with a ``pip:`` list (installed from a local
wheel directory with ``--no-index``: a build that does real work, as a solver and a download
would, without the network). In the same run, cache off (the baseline) then on, each with a fresh
kubesim and cache:

* **second user's first start**: the first user starts (and, with the cache, the Job builds);
  then a second user's first start of the same profile is timed, ``start()`` to return;
* **build CPU for N users**: the CPU time (user + system) of every process the kubelet ran to
  completion for the environments (init containers and build Jobs, with what they ran: venv,
  pip, the ipykernel check), from ``getrusage(RUSAGE_CHILDREN)`` before any server is stopped
  (the servers are still running, so their CPU is not in it); N users start ``--concurrency`` at
  a time.

Not a test. About two minutes on 2 cores for 50 users.

    python benchmarks/conda_cache.py [--users 50] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes_asyncio import client
from kubespawner import KubeSpawner

from apex_hub.kubesim import KubeSim
from tests.helpers.spawner import make_spawner

SERVER = ["python3", "-m", "http.server", "--bind", "0.0.0.0", "8888"]


def wheel_dir(tmp: Path) -> Path:
    """A local wheel of a small pure-Python package (written by hand: no build backend needed),
    for a ``pip:`` list that installs offline."""
    import zipfile

    wheels = tmp / "wheels"
    wheels.mkdir()
    dist = "apexbench-1.0.dist-info"
    files = {
        "apexbench/__init__.py": "VALUE = 42\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: apexbench\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(wheels / "apexbench-1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return wheels


def catalogue(wheels: Path) -> dict:
    yml = (
        "name: bench\ndependencies:\n  - python\n  - pip:\n"
        f"    - --no-index\n    - --find-links={wheels}\n    - apexbench\n"
    )
    return {
        "profiles": [
            {
                "slug": "eo",
                "display_name": "EO",
                "default": True,
                "conda_environments": [{"name": "bench", "display_name": "Bench", "environment_yml": yml}],
            }
        ]
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def scenario(users: int, concurrency: int, cached: bool, wheels: Path) -> dict:
    from kubespawner.clients import load_config

    load_config.cache_clear()
    tmp = Path(tempfile.mkdtemp(prefix="conda-cache-bench-"))
    cache = tmp / "cache"
    traits = {
        "catalogue": catalogue(wheels),
        "user_options": {"profile": "eo"},
        "cmd": SERVER,
        "server_ready_poll": 0,
        "start_timeout": 900,
        "conda_builder": "venv",
    }
    if cached:
        traits |= {
            "conda_cache_volume": {"hostPath": {"path": str(cache), "type": "DirectoryOrCreate"}},
            "conda_cache_path": str(cache),
        }
    try:
        async with KubeSim(kubelet="process", workdir=tmp / "sim") as sim:
            sim.make_default()
            async with sim.api_client() as api:
                await client.CoreV1Api(api).create_namespace({"metadata": {"name": "jhub"}})
            spawners = [make_spawner(sim, f"user{i}", uid=i + 1, **traits) for i in range(users)]
            cpu0 = children_cpu()
            t0 = time.perf_counter()
            await spawners[0].start()
            first = time.perf_counter() - t0
            if cached:  # the Job runs on after the first start (it waited for it, or built itself)
                await until_jobs_done(sim)
            t0 = time.perf_counter()
            await spawners[1].start()
            second = time.perf_counter() - t0
            rest = spawners[2:]
            t0 = time.perf_counter()
            for i in range(0, len(rest), concurrency):
                await asyncio.gather(*(s.start() for s in rest[i : i + concurrency]))
            others = time.perf_counter() - t0
            cpu = children_cpu() - cpu0
            shared = sum(
                "using the shared build" in sim.kubelet.logs(s.namespace, s.pod_name, "conda-environments")
                for s in spawners
            )
            jobs = len(sim.store.list(sim.store._rt("jobs", "batch"), "jhub")[0])
            for i in range(0, len(spawners), concurrency):
                await asyncio.gather(*(s.stop() for s in spawners[i : i + concurrency]))
            await KubeSpawner._stop_all_reflectors()
        return {
            "first": first,
            "second": second,
            "others": others,
            "cpu": cpu,
            "shared": shared,
            "jobs": jobs,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def until_jobs_done(sim) -> None:
    rtype = sim.store._rt("jobs", "batch")
    while True:
        found = sim.store.list(rtype, "jhub")[0]
        if found and all((j.get("status") or {}).get("completionTime") for j in found):
            return
        await asyncio.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = wheel_dir(Path(tmp))
        base = asyncio.run(scenario(args.users, args.concurrency, False, wheels))
        cached = asyncio.run(scenario(args.users, args.concurrency, True, wheels))
    print(
        f"\n{args.users} users of one profile (one venv environment with a pip: list), {args.concurrency} at a time"
    )
    print(f"{'':44}{'per-user (off)':>16}{'shared cache':>16}")
    rows = [
        ("first user's first start (s)", "first", "{:.2f}"),
        ("second user's first start (s)", "second", "{:.2f}"),
        (f"the other {args.users - 2} users' starts, wall (s)", "others", "{:.1f}"),
        (f"build CPU, all {args.users} users (s)", "cpu", "{:.1f}"),
        ("starts that used the shared build", "shared", "{}"),
        ("build Jobs", "jobs", "{}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:44}{fmt.format(base[key]):>16}{fmt.format(cached[key]):>16}")
    print(f"build CPU per user: {base['cpu'] / args.users:.2f} s -> {cached['cpu'] / args.users:.2f} s")


if __name__ == "__main__":
    main()
