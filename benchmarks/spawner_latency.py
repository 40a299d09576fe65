"""How long a spawn takes when every Kubernetes API call costs a round trip, and what it costs the hub.

APExSpawner (an APEx-like profile: 2 mounted ConfigMaps, the workspace claim and a second
claim, a Role + RoleBinding, an init container, an env var from a ConfigMap, plus the guard
rails every workspace gets) is driven in process against kubesim over real HTTP (kubesim in a
process of its own, as an API server is; ``--sim-in-process`` for the former set-up), side by
side with APExSpawner with ``pod_with_workspace = False`` (the pod waits for the workspace, as
before issue 19) and with unmodified KubeSpawner (user namespaces, namespace + pod only, no
storage: the baseline), for several injected per-request latencies. Prints, per latency:

* cold spawn (a new user's first spawn, reflectors already running as in a live hub): time
  from ``start()`` to the ``create pods`` request reaching the API server, to the pod being
  created, and to ``start()`` returning (kubelet "instant": the pod is Running at once);
* warm spawn (the same user, same spawner object, after a stop) and the stop itself;
* API calls per spawn by verb and resource (reflector list/watch calls happen once per hub
  and are reported on their own);
* the critical path in round trips, computed from kubesim's request log: the longest chain of
  requests each of which reached the server after the previous one had been answered, up to
  and including ``create pods``; cross-checked with (time to pod created) / latency, and the
  three spawners' figures side by side;
* the hub's CPU time per start().

Then the hub event-loop lag (a ticker sleeping 10 ms and recording how late it wakes) during N
concurrent APExSpawner spawns (new users) and the N stops after them. First with kubesim serving
from the hub's own event loop, so its CPU work counts as lag: an upper bound. Then with kubesim
in a process of its own (``apex-hub kubesim``), twice: with ``gc_freeze``, ``lean_reflectors``
and ``pod_with_workspace`` off (the before), and with APExSpawner's defaults (the after).

Not a test. Every scenario gets a fresh kubesim and a fresh event loop (KubeSpawner caches its
API client per loop) and stops KubeSpawner's reflectors at its end. About a minute on 2 cores.

    python benchmarks/spawner_latency.py [--latency-ms 0,20,50] [--repeat 5] [--concurrent 100]
                                         [--concurrent-latency-ms 20] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import itertools
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from jupyterhub.objects import Hub, Server
from kubespawner import KubeSpawner
from traitlets.config import Config

from apex_hub.spawner import APExSpawner, lean

IMAGE = "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0"
#: An APEx-like profile. The workspace claim (10Gi at /home/jovyan) is APExSpawner's
#: ``workspace_volume`` default; with it the workspace is: ServiceAccount, NetworkPolicy,
#: Role, RoleBinding, 2 ConfigMaps and 2 PersistentVolumeClaims in the namespace apex-<user>.
CATALOGUE = {
    "profiles": [
        {
            "slug": "apex",
            "display_name": "APEx",
            "default": True,
            "cpu_limit": 1,
            "cpu_guarantee": 0.1,
            "mem_limit": "1G",
            "mem_guarantee": "256M",
            "config_maps": [
                {
                    "name": "bashrc",
                    "key": ".bashrc",
                    "mount_path": "/home/jovyan/.bashrc",
                    "content": "export PS1='{username}@{namespace} $ '\n",
                },
                {
                    "name": "settings",
                    "key": "settings.json",
                    "mount_path": "/etc/apex/settings.json",
                    "content": '{"user": "{username}", "theme": "dark"}',
                },
            ],
            "volumes": [{"name": "data", "size": "5Gi", "mount_path": "/data"}],
            "env": {"APEX_SETTINGS": {"from_config_map": {"name": "settings", "key": "settings.json"}}},
            "init_containers": [{"name": "prepare", "image": "busybox:1.36", "command": ["true"]}],
            "role_bindings": [
                {
                    "name": "pod-reader",
                    "role": {"rules": [{"resources": ["pods"], "verbs": ["get", "list"]}]},
                    "subjects": [{"kind": "ServiceAccount", "name": "workspace"}],
                }
            ],
        }
    ]
}


class HubUser:
    """The attributes of ``jupyterhub.user.User`` that the spawners read outside a hub."""

    def __init__(self, name, uid):
        self.name, self.id = name, uid
        self.server = Server(base_url=f"/user/{name}/")
        self.url = self.server.base_url
        self.progress_url = f"/hub/api/users/{name}/server/progress"
        self.groups = []


def apex_spawner(url: str, name: str, uid: int, start_timeout: int = 60, **traits) -> APExSpawner:
    c = Config()
    c.APExSpawner.k8s_api_host = url
    c.APExSpawner.image = IMAGE
    c.APExSpawner.start_timeout = start_timeout
    c.APExSpawner.hub_namespace = "jhub"
    c.APExSpawner.k8s_api_request_retry_timeout = start_timeout
    c.APExSpawner.profiles_catalogue = CATALOGUE
    for key, value in traits.items():
        setattr(c.APExSpawner, key, value)
    spawner = APExSpawner(hub=Hub(), user=HubUser(name, uid), config=c, api_token="t", oauth_client_id="c")
    spawner.user_options = {"profile": "apex"}
    return spawner


def kube_spawner(url: str, name: str, uid: int, start_timeout: int = 60) -> KubeSpawner:
    c = Config()
    c.KubeSpawner.k8s_api_host = url
    c.KubeSpawner.enable_user_namespaces = True
    c.KubeSpawner.user_namespace_template = "ks-{username}"
    c.KubeSpawner.image = IMAGE
    c.KubeSpawner.start_timeout = start_timeout
    c.KubeSpawner.events_enabled = True
    return KubeSpawner(hub=Hub(), user=HubUser(name, uid), config=c, api_token="t", oauth_client_id="c")


def apex_two_rounds(url: str, name: str, uid: int, start_timeout: int = 60) -> APExSpawner:
    """APExSpawner as it was: the pod always waits for the workspace."""
    return apex_spawner(url, name, uid, start_timeout, pod_with_workspace=False)


FACTORIES = {
    "apex": apex_spawner,
    "apex-client0": apex_spawner,  # run under client_path_before()
    "apex-2rt": apex_two_rounds,
    "kubespawner": kube_spawner,
}
LABELS = {
    "apex": "APExSpawner",
    "apex-client0": "APExSpawner, client path before",
    "apex-2rt": "APExSpawner, pod_with_workspace off",
    "kubespawner": "KubeSpawner",
}
#: The switches of the hub-never-stalls work, off: the "before" of the lag runs.
SWITCHES_OFF = {"gc_freeze": False, "lean_reflectors": False, "pod_with_workspace": False}


async def _request_via_call_api(self, method, path, query, body, content_type, timeout):
    """``Kube``'s requests as they were made before (kubernetes_asyncio's ``call_api``)."""
    return await self.api_client.call_api(
        path,
        method,
        query_params=query,
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        response_types_map={200: "object", 201: "object", 202: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        _preload_content=True,
        _request_timeout=timeout,
    )


@contextmanager
def client_path_before(active: bool = True):
    """APExSpawner's API client as it was before the client-CPU work of issue 19: every
    request through ``ApiClient.call_api``, and aiohttp looking up proxies and ``.netrc`` in
    a thread before each one (``trust_env``). The baseline of that work, in the same run."""
    if not active:
        yield
        return
    from apex_hub.spawner import kube, spawner

    saved = kube.Kube._request, spawner.skip_env_lookups
    kube.Kube._request, spawner.skip_env_lookups = _request_via_call_api, lambda client: False
    try:
        yield
    finally:
        kube.Kube._request, spawner.skip_env_lookups = saved


# -- kubesim, in this process or in one of its own ----------------------------------------


@dataclass
class Sim:
    """A running kubesim as the benchmark uses it: its URL, its request log, its CPU."""

    url: str
    where: str
    latency: float
    get_log: Callable[[], Awaitable[list]]
    reset_log: Callable[[], Awaitable[None]]
    cpu: Callable[[], float | None] = lambda: None


@asynccontextmanager
async def sim_in_process(latency: float, validate: bool):
    from apex_hub.kubesim import KubeSim  # here only: soak_hub.py's hub process must not hold it

    os.environ["KUBECONFIG"] = ""
    async with KubeSim(kubelet="instant", validate_schemas=validate) as sim:
        sim.make_default()
        sim.set_latency(latency)

        async def get_log():
            return list(sim.requests)

        async def reset_log():
            sim.reset_log()

        try:
            yield Sim(sim.url, "in the hub's process", latency, get_log, reset_log)
        finally:
            await KubeSpawner._stop_all_reflectors()


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


@asynccontextmanager
async def sim_own_process(latency: float, validate: bool):
    """kubesim in a process of its own (``apex-hub kubesim``), as an API server is."""
    from kubernetes_asyncio.config import kube_config
    from kubespawner.clients import load_config

    load_config.cache_clear()  # cached by host: a new kubesim may reuse an old one's port
    workdir = tempfile.mkdtemp(prefix="spawner-latency-")
    kubeconfig = os.path.join(workdir, "kubeconfig")
    cmd = [
        sys.executable,
        "-m",
        "apex_hub.cli",
        "--log-level",
        "WARNING",
        "kubesim",
        "--kubelet",
        "instant",
        "--kubeconfig",
        kubeconfig,
        "--latency",
        str(latency),
        "--workdir",
        workdir,
    ]
    if not validate:
        cmd.append("--no-validate")
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    try:
        url = None
        while url is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            if not line:
                raise RuntimeError("kubesim did not start")
            if "API server at " in line:
                url = line.split("API server at ")[1].split(",")[0].strip()
        os.environ["KUBECONFIG"] = kubeconfig
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = kubeconfig

        def admin(method):
            req = urllib.request.Request(f"{url}/kubesim/log", method=method)
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())

        async def get_log():
            return [SimpleNamespace(**r) for r in await asyncio.to_thread(admin, "GET")]

        async def reset_log():
            await asyncio.to_thread(admin, "DELETE")

        try:
            yield Sim(
                url, "in a process of its own", latency, get_log, reset_log, lambda: process_cpu(proc.pid)
            )
        finally:
            await KubeSpawner._stop_all_reflectors()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# -- the request log ----------------------------------------------------------------------


def is_reflector(r) -> bool:
    """KubeSpawner's shared pod and event reflectors: once per hub, not per spawn."""
    return r.verb == "watch" or (r.verb == "list" and r.resource in ("pods", "events"))


def end(r) -> float:
    return r.started + r.duration


def longest_chain(reqs) -> int:
    """Sequential round trips: the longest chain of requests where each one reached the server
    after the previous one had been answered (server-side times, so client work in between
    does not count). Requests in flight together never chain."""
    reqs = sorted(reqs, key=lambda r: r.started)
    best: list[int] = []
    for i, r in enumerate(reqs):
        best.append(1 + max((best[j] for j in range(i) if end(reqs[j]) <= r.started), default=0))
    return max(best, default=0)


def breakdown(reqs, t0: float, last, latency: float) -> tuple[float, float, float]:
    """Where the time from ``start()`` to ``last`` answered goes beyond one latency per round
    trip, along the time-based critical path (walked back from ``last``: each request's
    predecessor is the last one answered before it arrived): (hub before the first request,
    hub between an answer and the next request's arrival, server time beyond the latency)."""
    hops, r = [last], last
    while True:
        before = [q for q in reqs if end(q) <= r.started]
        if not before:
            break
        r = max(before, key=end)
        hops.append(r)
    hops.reverse()
    first = hops[0].started - t0
    between = sum(b.started - end(a) for a, b in itertools.pairwise(hops))
    server = sum(h.duration - latency for h in hops)
    return first, between, server


def max_in_flight(reqs) -> int:
    marks = sorted([(r.started, 1) for r in reqs] + [(end(r), -1) for r in reqs])
    now = peak = 0
    for _, delta in marks:
        now += delta
        peak = max(peak, now)
    return peak


@dataclass
class Step:
    """One measured start() or stop()."""

    total: float
    counts: Counter
    reflector: Counter
    to_create: float | None = None  # start() -> ``create pods`` reaches the API server
    to_created: float | None = None  # start() -> ``create pods`` answered
    chain: int = 0
    cpu: float = 0.0  # CPU time of this process (the hub's side) during the call
    extra: tuple[float, float, float] | None = None  # see breakdown()


async def measure(sim: Sim, call, spawn: bool) -> Step:
    await sim.reset_log()
    t0, cpu0 = time.monotonic(), time.process_time()
    await call()
    total, cpu = time.monotonic() - t0, time.process_time() - cpu0
    reqs = [r for r in await sim.get_log() if r.started >= t0]
    ours = [r for r in reqs if not is_reflector(r)]
    step = Step(
        total,
        Counter(f"{r.verb} {r.resource}" for r in ours),
        Counter(f"{r.verb} {r.resource}" for r in reqs if is_reflector(r)),
        cpu=cpu,
    )
    if spawn:
        creates = sorted((r for r in ours if r.verb == "create" and r.resource == "pods"), key=end)
        if creates:
            last = creates[-1]  # the successful one (after retries, if any)
            step.to_create = last.started - t0
            step.to_created = end(last) - t0
            step.chain = longest_chain([r for r in ours if r.started <= last.started])
            step.extra = breakdown([r for r in ours if r.started <= last.started], t0, last, sim.latency)
    return step


async def start_reflectors(sim: Sim, spawner) -> tuple[float, Counter]:
    """What a hub does once: start the shared reflectors and wait until both watches are open."""
    await sim.reset_log()
    t0 = time.monotonic()
    await asyncio.gather(spawner._start_watching_pods(), spawner._start_watching_events())
    deadline = t0 + 30
    while True:
        log = await sim.get_log()
        if {("watch", "pods"), ("watch", "events")} <= {(r.verb, r.resource) for r in log}:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the reflectors' watches did not open in time")
        await asyncio.sleep(0.005)
    return time.monotonic() - t0, Counter(f"{r.verb} {r.resource}" for r in log)


# -- causal depth, traced in the client ----------------------------------------------------


class _Cell:
    """The depth of what one task has seen answered so far (shared by the contexts copied
    from it, replaced in every new task)."""

    __slots__ = ("depth",)

    def __init__(self, depth: int = 0):
        self.depth = depth


_CELL: contextvars.ContextVar[_Cell] = contextvars.ContextVar("benchmark_causal_cell")


class _TracedTask(asyncio.tasks._PyTask):
    """A task with a cell of its own, starting at its creator's depth; whoever takes its
    result (``await``, ``gather``) takes its depth too. Joins only: a task that merely
    finished earlier passes nothing on."""

    def __init__(self, coro, *, loop=None, name=None, context=None):
        parent = _CELL.get(None)
        context = (context or contextvars.copy_context()).copy()
        self._cell = _Cell(parent.depth if parent is not None else 0)
        context.run(_CELL.set, self._cell)
        super().__init__(coro, loop=loop, name=name, context=context)

    def _join(self):
        cell = _CELL.get(None)
        if cell is not None and cell is not self._cell:
            cell.depth = max(cell.depth, self._cell.depth)

    def result(self):
        self._join()
        return super().result()

    def exception(self):
        self._join()
        return super().exception()


@dataclass
class Traced:
    """One API request as the client sent it."""

    method: str
    url: str
    causal: int  # 1 + the depth of what its own code path had awaited (task lineage and joins)
    received: int  # 1 + the depth of every answer the client had received before it was sent
    sent: float


class CausalTrace:
    """Client-side causal depth of every API request (``aiohttp.ClientSession._request``,
    which every request goes through: KubeSpawner's, APExSpawner's, the reflectors').

    * **causal**: 1 + the largest depth among the answers this request's own code path
      waited for: earlier requests of the same task, and those of the tasks it awaited or
      gathered (each task starts at its creator's depth). Requests merely answered earlier,
      by tasks nobody awaited, do not count: CPU time cannot add a level, only a dependency.
    * **received**: 1 + the largest depth among all answers the client had received before
      sending it (whoever asked): a request sent late because the hub was busy counts one
      level more. An upper bound.

    A wait through something other than a request or a task join (an ``asyncio.Event``, a
    future set by a reflector) is not followed by ``causal``; ``received`` and the server-side
    chain still show it. Tracing uses the pure-Python task: slower, so traced spawns are
    not timed.
    """

    def __init__(self):
        self.records: list[Traced] = []
        self.received_max = 0

    def reset(self):
        self.records, self.received_max = [], 0

    @asynccontextmanager
    async def installed(self):
        import aiohttp

        trace, original = self, aiohttp.ClientSession._request

        async def request(session, method, url, *args, **kwargs):
            if "watch=" in str(url) or "watch" in dict(kwargs.get("params") or {}):
                return await original(session, method, url, *args, **kwargs)
            cell = _CELL.get(None)
            causal = (cell.depth if cell is not None else 0) + 1
            received = trace.received_max + 1
            trace.records.append(Traced(method, str(url), causal, received, time.monotonic()))
            token = _CELL.set(_Cell())  # the request's own futures and tasks do not count
            try:
                response = await original(session, method, url, *args, **kwargs)
                await response.read()  # the answer, as the client takes it
                return response
            finally:
                _CELL.reset(token)
                if cell is not None:
                    cell.depth = max(cell.depth, causal)
                trace.received_max = max(trace.received_max, received)

        loop = asyncio.get_running_loop()
        factory = loop.get_task_factory()
        aiohttp.ClientSession._request = request
        loop.set_task_factory(lambda lp, coro, **kw: _TracedTask(coro, loop=lp, **kw))
        try:
            yield self
        finally:
            aiohttp.ClientSession._request = original
            loop.set_task_factory(factory)

    async def depths(self, call) -> tuple[int, int]:
        """Run ``call()`` in a task of depth 0; the (causal, received) depth of its pod create
        (the last one, after any retry)."""
        self.reset()
        await asyncio.ensure_future(call())
        pods = [r for r in self.records if r.method == "POST" and r.url.split("?")[0].endswith("/pods")]
        return (pods[-1].causal, pods[-1].received) if pods else (0, 0)


async def check_trace(latency: float) -> list[tuple[str, tuple[int, int], int]]:
    """The tracer against spawns with one dependent request more, each where the pod's path
    would have one: (what, (causal, received) depth found, depth expected)."""
    out = []
    async with sim_own_process(latency, False) as sim:
        first = apex_spawner(sim.url, "warmup", 10_000)
        await asyncio.gather(first._start_watching_pods(), first._start_watching_events())
        await first.start()
        await first.stop()
        claim, manifest = APExSpawner._claim_namespace, APExSpawner.get_pod_manifest

        async def read_first(self, kube):  # a GET before the namespace create
            await kube.read("v1", "Namespace", self.namespace)
            return await claim(self, kube)

        async def read_in_a_task(self):  # a read-after-write, in a task the pod waits for
            await asyncio.ensure_future(self.kube().read("v1", "Namespace", self.namespace))
            return await manifest(self)

        async with CausalTrace().installed() as trace:
            for i, (what, patch, expected) in enumerate(
                [
                    ("as it is", {}, (3, 1)),
                    ("a GET before the namespace create", {"_claim_namespace": read_first}, (4, 1)),
                    ("a read before the pod manifest", {"get_pod_manifest": read_in_a_task}, (4, 2)),
                ]
            ):
                for name, fn in patch.items():
                    setattr(APExSpawner, name, fn)
                try:
                    spawner = apex_spawner(sim.url, f"check{i}", 30_000 + i)
                    out.append((f"cold, {what}", await trace.depths(spawner.start), expected[0]))
                    await spawner.stop()
                    out.append((f"warm, {what}", await trace.depths(spawner.start), expected[1]))
                    await spawner.stop()
                finally:
                    APExSpawner._claim_namespace, APExSpawner.get_pod_manifest = claim, manifest
    return out


# -- scenario 1 and 2: one spawn at a time ------------------------------------------------


@dataclass
class Series:
    kind: str
    latency: float
    reflector_time: float = 0.0
    reflector_counts: Counter = field(default_factory=Counter)
    cold: list[Step] = field(default_factory=list)
    warm: list[Step] = field(default_factory=list)
    stop: list[Step] = field(default_factory=list)
    #: (causal, received) depth of the pod create in a traced (untimed) spawn
    causal: dict = field(default_factory=dict)


async def spawn_series(kind: str, latency: float, repeat: int, validate: bool, own: bool) -> Series:
    make = FACTORIES[kind]
    out = Series(kind, latency)
    with client_path_before(kind == "apex-client0"):
        return await _spawn_series(make, out, repeat, validate, own)


async def _spawn_series(make, out: Series, repeat: int, validate: bool, own: bool) -> Series:
    latency = out.latency
    async with (sim_own_process if own else sim_in_process)(latency, validate) as sim:
        first = make(sim.url, "warmup", 10_000)
        out.reflector_time, out.reflector_counts = await start_reflectors(sim, first)
        # One unmeasured spawn: kubesim loads the schemas of each kind on first use, the
        # client opens its connections.
        await first.start()
        await first.stop()
        for i in range(repeat):
            spawner = make(sim.url, f"user{i}", i + 1)
            out.cold.append(await measure(sim, spawner.start, True))
            out.stop.append(await measure(sim, spawner.stop, False))
            out.warm.append(await measure(sim, spawner.start, True))  # the hub keeps the object
            await spawner.stop()
        # One more user, traced: the causal depth does not depend on timing, one spawn tells.
        spawner = make(sim.url, "traced", repeat + 1)
        async with CausalTrace().installed() as trace:
            out.causal["cold"] = await trace.depths(spawner.start)
            await spawner.stop()
            out.causal["warm"] = await trace.depths(spawner.start)
            await spawner.stop()
    return out


# -- scenario 3: many spawns at once ------------------------------------------------------


class Ticker:
    """Sleeps ``period`` over and over and records how late each wake-up is; also records the
    garbage collector's pauses and the CPU time used meanwhile (this process, and kubesim's
    when it runs in a process of its own)."""

    def __init__(self, period: float, sim_cpu=None):
        self.period = period
        self.sim_cpu = sim_cpu or (lambda: None)
        self.lags: list[float] = []
        self.gc_pauses: list[tuple[int, float]] = []
        self._task = None
        self._gc_started = None

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.period)
            self.lags.append(max(0.0, loop.time() - t - self.period))

    def _gc(self, phase, info):
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self.gc_pauses.append((info["generation"], time.perf_counter() - self._gc_started))
            self._gc_started = None

    def __enter__(self):
        self.lags, self.gc_pauses = [], []
        self._cpu, self._sim_cpu = time.process_time(), self.sim_cpu()
        gc.callbacks.append(self._gc)
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc):
        self._task.cancel()
        gc.callbacks.remove(self._gc)
        self.cpu = time.process_time() - self._cpu
        sim_cpu = self.sim_cpu()
        self.sim_cpu_used = None if sim_cpu is None else sim_cpu - self._sim_cpu

    def summary(self) -> dict:
        lags = sorted(self.lags) or [0.0]
        full = [d for g, d in self.gc_pauses if g == 2]
        return {
            "max": lags[-1],
            "p99": lags[int(0.99 * (len(lags) - 1))],
            "p50": lags[(len(lags) - 1) // 2],
            "ticks": len(self.lags),
            "full_gc": len(full),
            "gc_max": max((d for _, d in self.gc_pauses), default=0.0),
            "cpu": self.cpu,
            "sim_cpu": self.sim_cpu_used,
        }


@dataclass
class Crowd:
    where: str
    n: int
    latency: float
    idle: dict = field(default_factory=dict)
    spawning: dict = field(default_factory=dict)
    spawn_wall: float = 0.0
    spawn_times: list = field(default_factory=list)
    pods_created: list = field(default_factory=list)  # seconds from the common start
    failures: list = field(default_factory=list)
    stopping: dict = field(default_factory=dict)
    stop_wall: float = 0.0
    spawn_requests: int = 0
    spawn_in_flight: int = 0


async def crowd(sim: Sim, n: int, latency: float, tick: float, where: str, traits: dict) -> Crowd:
    out = Crowd(where, n, latency)
    lean.forget_freeze()  # each column starts as a new hub would: nothing frozen yet
    gc.collect()
    # The first APExSpawner the "hub" makes: with gc_freeze on (the default) it freezes here.
    first = apex_spawner(sim.url, "warmup", 10_000, start_timeout=120, **traits)
    await asyncio.gather(first._start_watching_pods(), first._start_watching_events())
    await first.start()
    await first.stop()
    spawners = [apex_spawner(sim.url, f"crowd{i}", 20_000 + i, start_timeout=120, **traits) for i in range(n)]
    ticker = Ticker(tick, sim.cpu)
    with ticker:
        await asyncio.sleep(1.0)
    out.idle = ticker.summary()
    await sim.reset_log()

    async def one(spawner):
        t0 = time.monotonic()
        await spawner.start()
        out.spawn_times.append(time.monotonic() - t0)

    with ticker:
        t0 = time.monotonic()
        results = await asyncio.gather(*(one(s) for s in spawners), return_exceptions=True)
        out.spawn_wall = time.monotonic() - t0
    out.spawning = ticker.summary()
    out.failures = [r for r in results if isinstance(r, BaseException)]
    reqs = [r for r in await sim.get_log() if not is_reflector(r)]
    out.pods_created = sorted(
        end(r) - t0 for r in reqs if r.verb == "create" and r.resource == "pods" and r.status == 201
    )
    out.spawn_requests = len(reqs)
    out.spawn_in_flight = max_in_flight(reqs)
    with ticker:
        t0 = time.monotonic()
        await asyncio.gather(*(s.stop() for s in spawners), return_exceptions=True)
        out.stop_wall = time.monotonic() - t0
    out.stopping = ticker.summary()
    lean.forget_freeze()
    return out


async def crowd_run(
    n: int, latency: float, tick: float, validate: bool, own: bool, traits: dict, client0: bool = False
) -> Crowd:
    async with (sim_own_process if own else sim_in_process)(latency, validate) as sim:
        switches = "switches off (before)" if traits else "defaults"
        if client0:
            switches += ", client before"
        where = "own process" if own else "hub's process"
        with client_path_before(client0):
            return await crowd(sim, n, latency, tick, f"{where}, {switches}", traits)


# -- printing -----------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def med(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values) -> str:
    """One number when all spawns agree, ``min-max`` when they differ."""
    values = list(values)
    lo, hi = min(values, default=0), max(values, default=0)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def calls(counters: list[Counter], key: str | None = None) -> str:
    """The number of calls of one spawn (all of them, or of one ``verb resource``)."""
    return spread(sum(c.values()) if key is None else c.get(key, 0) for c in counters)


def print_latency_table(series: list[Series], repeat: int) -> None:
    latencies = sorted({s.latency for s in series})
    head = f"{'injected latency per API request:':44}" + "".join(
        f"{f'{lat * 1000:g} ms':>10}" for lat in latencies
    )
    print(
        f"Spawn time against injected API latency (median of {repeat} spawn(s) per cell; kubelet"
        " 'instant'; times in ms)"
    )
    print("=" * len(head))
    print(head)
    by = {(s.kind, s.latency): s for s in series}
    for kind in FACTORIES:
        if not any(k == kind for k, _ in by):
            continue
        print(f"\n{DESCRIPTIONS[kind]}")
        for phase in ("cold", "warm"):

            def steps(s, p=phase):
                return getattr(s, p)

            rows = [
                (f"{phase}: start() -> create pods sent", lambda s: ms(med(x.to_create for x in steps(s)))),
                (f"{phase}: start() -> pod created", lambda s: ms(med(x.to_created for x in steps(s)))),
                (f"{phase}: start() returned", lambda s: ms(med(x.total for x in steps(s)))),
                (
                    f"{phase}: critical path, round trips",
                    lambda s: "-" if not s.latency else spread(x.chain for x in steps(s)),
                ),
                (
                    f"{phase}: ~ (pod created) / latency",
                    lambda s: (
                        "-" if not s.latency else f"{med(x.to_created for x in steps(s)) / s.latency:.1f}"
                    ),
                ),
                (f"{phase}: API calls", lambda s: calls([x.counts for x in steps(s)])),
                (f"{phase}: hub CPU for the whole start()", lambda s: ms(med(x.cpu for x in steps(s)))),
            ]
            for label, fn in rows:
                print(f"  {label:42}" + "".join(f"{fn(by[(kind, lat)]):>10}" for lat in latencies))
        print(
            f"  {'stop(): returned':42}"
            + "".join(f"{ms(med(x.total for x in by[(kind, lat)].stop)):>10}" for lat in latencies)
        )
        print(
            f"  {'stop(): API calls':42}"
            + "".join(f"{calls([x.counts for x in by[(kind, lat)].stop]):>10}" for lat in latencies)
        )
        print(
            f"  {'once per hub: reflectors listed+watching':42}"
            + "".join(f"{ms(by[(kind, lat)].reflector_time):>10}" for lat in latencies)
        )


DESCRIPTIONS = {
    "apex": "APExSpawner, APEx-like profile (namespace + 8 objects + pod)",
    "apex-client0": "APExSpawner, its API client as before (call_api, proxy/.netrc look-ups per request)",
    "apex-2rt": "APExSpawner, pod_with_workspace = False (the pod always waits for the workspace, as before)",
    "kubespawner": "KubeSpawner 7, user namespaces (namespace + pod): the baseline",
}


def print_round_trips(series: list[Series]) -> None:
    """The round trips up to the pod, side by side: what issue 19 item 1 is about."""
    latencies = sorted({s.latency for s in series if s.latency})
    by = {(s.kind, s.latency): s for s in series}
    kinds = [k for k in FACTORIES if any(kk == k for kk, _ in by)]
    print(
        "\nRound trips up to the pod: causal depth (client-traced) | received-before depth (client) |"
        " server-side chain | (pod created) / latency"
    )
    print(f"  {'':14}" + "".join(f"{LABELS[k][:36]:>38}" for k in kinds))
    for phase in ("cold", "warm"):

        def depth(kind, p=phase):
            found = [by[(kind, lat)].causal.get(p) for lat in sorted({s.latency for s in series})]
            found = [d for d in found if d]
            return (spread(d[0] for d in found), spread(d[1] for d in found)) if found else ("-", "-")

        print(f"  {f'{phase}, traced':14}" + "".join(f"{' | '.join(depth(k)):>38}" for k in kinds))
    for lat in latencies:
        for phase in ("cold", "warm"):

            def cell(kind, p=phase, lat=lat):
                steps = getattr(by[(kind, lat)], p)
                ratio = med(x.to_created for x in steps) / lat
                return f"{spread(x.chain for x in steps)} | {ratio:.2f}"

            print(f"  {f'{lat * 1000:g} ms, {phase}':14}" + "".join(f"{cell(k):>38}" for k in kinds))

            def extra(kind, p=phase, lat=lat):
                parts = [x.extra for x in getattr(by[(kind, lat)], p) if x.extra]
                return " + ".join(ms(med(e[i] for e in parts)) for i in range(3)) if parts else "-"

            print(f"  {'  beyond N x':14}" + "".join(f"{extra(k):>38}" for k in kinds))
    print(
        "  causal: 1 + the depth of the answers the pod create's own code path waited for (its task's"
        " earlier requests,\n  the tasks it awaited or gathered): CPU time cannot add to it, only a"
        " dependency can. received-before:\n  1 + the depth of every answer the client had"
        " received before it (an upper bound: a request sent late\n  counts one more). Both from"
        " one traced spawn per cell (tracing slows the client, so those are not timed);\n  the"
        " server-side chain and the ratio from the timed spawns, one figure or min-max. 'beyond N x':"
        " the time\n  to 'pod created' above one latency per round trip of the time-based critical"
        " path, in ms (medians):\n  hub before its first request + hub between an answer and the"
        " next request + kubesim beyond the latency."
    )


def print_calls_table(series: list[Series]) -> None:
    top = max(s.latency for s in series)
    by = {s.kind: s for s in series if s.latency == top}
    columns = [
        ("APEx cold", by.get("apex"), "cold"),
        ("APEx warm", by.get("apex"), "warm"),
        ("APEx stop", by.get("apex"), "stop"),
        ("KS cold", by.get("kubespawner"), "cold"),
        ("KS warm", by.get("kubespawner"), "warm"),
        ("KS stop", by.get("kubespawner"), "stop"),
    ]
    columns = [(label, getattr(s, phase)) for label, s, phase in columns if s is not None]
    keys = sorted(
        {k for _, steps in columns for step in steps for k in step.counts},
        key=lambda k: (k.split()[0] != "patch", k.split()[0], k.split()[1]),
    )
    print(
        f"\nAPI calls per spawn / stop by verb and resource (reflectors excluded; at {top * 1000:g} ms;"
        " 'create' of an existing PVC is answered 409)"
    )
    head = f"  {'':34}" + "".join(f"{label:>11}" for label, _ in columns)
    print(head)
    for key in keys:
        print(f"  {key:34}" + "".join(f"{calls([s.counts for s in steps], key):>11}" for _, steps in columns))
    print(f"  {'total':34}" + "".join(f"{calls([s.counts for s in steps]):>11}" for _, steps in columns))
    statuses = sorted({k for _, steps in columns for step in steps for k in step.reflector})
    during = ", ".join(statuses) or "none"
    print(f"  reflector requests during the measured spawns/stops: {during}")
    for s in sorted(series, key=lambda s: (s.kind, s.latency)):
        if s.latency == top:
            refl = ", ".join(f"{k} {v}" for k, v in sorted(s.reflector_counts.items()))
            print(f"  once per hub ({LABELS[s.kind]}, shared pod + event reflectors): {refl}")


def print_crowd_table(crowds: list[Crowd], tick: float) -> None:
    c0 = crowds[0]
    print(
        f"\nHub event-loop lag during {c0.n} concurrent APExSpawner spawns (different users) at"
        f" {c0.latency * 1000:g} ms API latency"
    )
    print(
        f"(a ticker sleeps {tick * 1000:g} ms again and again; lag = how late it wakes up; reflectors"
        " already running; ms unless marked)"
    )
    width = 38
    print(f"  {'kubesim runs':44}" + "".join(f"{c.where:>{width}}" for c in crowds))

    def row(label, fn):
        print(f"  {label:44}" + "".join(f"{fn(c):>{width}}" for c in crowds))

    def cpu(d):
        hub = f"{d['cpu']:.1f}"
        return f"{hub} (incl. kubesim)" if d["sim_cpu"] is None else f"{hub} / {d['sim_cpu']:.1f}"

    row("idle hub (1 s): lag max / p99", lambda c: f"{ms(c.idle['max'])} / {ms(c.idle['p99'])}")
    row(
        "spawning: lag max / p99 / median",
        lambda c: " / ".join(ms(c.spawning[k]) for k in ("max", "p99", "p50")),
    )
    row("spawning: ticks recorded", lambda c: str(c.spawning["ticks"]))
    row(
        "spawning: full GCs / longest GC pause",
        lambda c: f"{c.spawning['full_gc']} / {ms(c.spawning['gc_max'])}",
    )
    row("spawning: CPU s, hub / kubesim process", lambda c: cpu(c.spawning))
    row(
        f"all {c0.n} pods created (median pod)",
        lambda c: f"{ms(max(c.pods_created, default=None))} ({ms(med(c.pods_created))})",
    )
    row(f"wall time until all {c0.n} start() returned", lambda c: ms(c.spawn_wall))
    row(
        "one start(): median / max",
        lambda c: f"{ms(med(c.spawn_times))} / {ms(max(c.spawn_times, default=0))}",
    )
    row("failed spawns", lambda c: str(len(c.failures)))
    row("API requests (server-side max in flight)", lambda c: f"{c.spawn_requests} ({c.spawn_in_flight})")
    row(
        f"stopping all {c0.n}: lag max / p99 / median",
        lambda c: " / ".join(ms(c.stopping[k]) for k in ("max", "p99", "p50")),
    )
    row(
        "stopping: full GCs / longest GC pause",
        lambda c: f"{c.stopping['full_gc']} / {ms(c.stopping['gc_max'])}",
    )
    row(f"wall time until all {c0.n} stop() returned", lambda c: ms(c.stop_wall))
    for c in crowds:
        if c.failures:
            print(f"  first failure ({c.where}): {type(c.failures[0]).__name__}: {c.failures[0]}")
    print("  Note: with kubesim in the hub's process it serves every request from the hub's event loop,")
    print("  so its own CPU work (routing, body parsing, the store, watch fan-out, the instant kubelet)")
    print("  counts as lag there: that column is an UPPER BOUND for the hub. In a process of its own,")
    print("  kubesim only shares the machine's cores with the hub, so those columns are closer to the")
    print("  hub's own cost (spawner code, API client, reflectors). A full (generation 2) garbage")
    print("  collection walks every object the hub imported (kubernetes_asyncio's models alone are")
    print("  ~190k objects) and blocks the loop for its whole length; with its defaults APExSpawner")
    print("  freezes them when the first spawner is made (gc_freeze). Requests in flight cannot exceed")
    print("  98: the hub's one shared API client pools 100 connections (kubernetes_asyncio's default)")
    print("  and the two reflector watches hold two of them. After its pod is created, a start() waits")
    print("  for the reflector to see it Running, polling with jupyterhub's exponential_backoff (random")
    print("  waits of up to 0.2, 0.4, 0.8, 1.6 s...): under load that, not the API, sets when it returns.")
    print("  One run per column: expect +-50% between runs, the max lag most (it is one GC pause or")
    print("  one burst of callbacks).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--latency-ms",
        default="0,20,50",
        help="comma-separated latencies added to every API request (default %(default)s)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="cold+warm spawns per spawner and latency (new user each; default %(default)s)",
    )
    parser.add_argument(
        "--concurrent", type=int, default=100, help="spawns at once for the lag run (0: skip)"
    )
    parser.add_argument(
        "--concurrent-latency-ms",
        type=float,
        default=20.0,
        help="API latency of the lag run (default %(default)s)",
    )
    parser.add_argument("--tick-ms", type=float, default=10.0, help="ticker period (default %(default)s)")
    parser.add_argument(
        "--validate-schemas",
        action="store_true",
        help="let kubesim check every write against the Kubernetes OpenAPI schemas"
        " (off by default: it is kubesim's CPU, not the spawner's)",
    )
    parser.add_argument(
        "--sim-in-process",
        action="store_true",
        help="serve the one-at-a-time spawns from kubesim in the benchmark's own process (its CPU"
        " then adds to every round trip: the figures before issue 19 were measured so)",
    )
    parser.add_argument(
        "--no-own-process", action="store_true", help="skip the lag runs with kubesim in a process of its own"
    )
    parser.add_argument(
        "--no-in-process", action="store_true", help="skip the lag run with kubesim in the hub's process"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 spawn per cell, 10 concurrent spawns"
    )
    parser.add_argument(
        "--check-trace",
        action="store_true",
        help="first check the causal tracer on spawns given one dependent request more",
    )
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
        args.concurrent = min(args.concurrent, 10)
    latencies = [float(x) / 1000 for x in args.latency_ms.split(",") if x.strip()]
    logging.basicConfig(level=logging.WARNING)
    # Stopping the reflectors between scenarios is expected; any other warning (retries) shows.
    logging.getLogger("traitlets").addFilter(lambda rec: "watcher finished" not in rec.getMessage())
    for name in ("traitlets", "kubespawner", "apex_hub", "JupyterHub"):
        logging.getLogger(name).setLevel(logging.WARNING)
    tick = args.tick_ms / 1000

    began = time.monotonic()
    if args.check_trace:
        print("Causal tracer check (APExSpawner with one dependent request added; depth of the pod create):")
        for what, (causal, received), expected in asyncio.run(check_trace(max(latencies or [0.02]))):
            verdict = "ok" if causal == expected else "WRONG"
            print(f"  {what:46} causal {causal} (expected {expected}: {verdict}), received-before {received}")
        print()
    series = []
    for latency in latencies:
        for kind in FACTORIES:
            series.append(
                asyncio.run(
                    spawn_series(kind, latency, args.repeat, args.validate_schemas, not args.sim_in_process)
                )
            )
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s); kubesim schema validation"
        f" {'on' if args.validate_schemas else 'off'}; one-at-a-time spawns served by kubesim"
        f" {'in this process' if args.sim_in_process else 'in a process of its own'}\n"
    )
    print_latency_table(series, args.repeat)
    print_round_trips(series)
    print_calls_table(series)
    print("\n  Critical path = the longest chain of API requests in which each request reached kubesim")
    print("  after the previous one had been answered, from start() up to and including 'create pods'")
    print("  (kubesim's request log; requests in flight together count once). At 0 ms it means")
    print("  nothing (requests last well under a millisecond), hence '-'. The row below it divides the")
    print("  time to 'pod created' by the latency: the round trips plus CPU time (the spawner's, the")
    print("  API client's and kubesim's, all on one event loop; at 0 ms that CPU is all there is).")
    print("  'start() returned' also holds KubeSpawner's wait for the reflector to see the pod Running:")
    print("  jupyterhub's exponential_backoff polls with random waits of up to 0.2 s, 0.4 s, ..., so it")
    print("  varies by ~100 ms between runs whatever the latency.")

    if args.concurrent > 0:
        lat = args.concurrent_latency_ms / 1000
        runs = [] if args.no_in_process else [(False, {}, False)]
        if not args.no_own_process:
            runs += [(True, SWITCHES_OFF, True), (True, {}, True), (True, {}, False)]
        crowds = [
            asyncio.run(crowd_run(args.concurrent, lat, tick, args.validate_schemas, own, traits, client0))
            for own, traits, client0 in runs
        ]
        print_crowd_table(crowds, tick)
    print(f"\n(benchmark ran for {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
