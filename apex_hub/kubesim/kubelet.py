"""The scheduler and kubelet of kubesim's one node, ``kubesim-node``.

A bare API server leaves pods Pending for ever, yet KubeSpawner (and our own spawner) only
call a server started once a kubelet has scheduled the pod, reported its events and moved
it to Running with a podIP and ready containers. The :class:`Kubelet` watches pods in the
store and does that, in one of two modes:

* ``"instant"``: pods go through the phases at once and nothing runs (API-level tests);
* ``"process"``: each container's command runs as a local process on the pod's own
  loopback address 127.0.0.N, with the pod's volumes materialised under
  ``workdir/pods/<ns>/<name>/root`` (end-to-end tests with a real single-user server).
  ConfigMap and Secret volumes follow their object while the pod runs, as in a cluster:
  each change is written atomically (a new hidden ``..<timestamp>`` directory, then one
  rename swaps the ``..data`` symlink), except where a container mounts them with
  ``subPath`` — that copy stays as it was when the pod started.

Emulation limits: no image exists (image name patterns decide pull failures, and a
container needs a command or args), a ``hostPath`` volume is the host's own directory (seen at
its own path when mounted there), processes run as the kubelet's own user (so as root,
jupyter-server needs ``--allow-root``), mounts are symlinks (read-only is enforced for
ConfigMap and Secret volumes only, and not against root), a readiness probe is awaited
until its first success only, and ``exec`` probes count as ready at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import fnmatch
import hashlib
import logging
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from .errors import ApiError
from .store import NODE_NAME, now_rfc3339

log = logging.getLogger("apex_hub.kubesim.kubelet")

ANY_ADDRESS = re.compile(r"(?<![\d.])0\.0\.0\.0(?![\d.])")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
LABEL_REF = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]")
LOG_TAIL = 1024 * 1024
DEFAULT_HOME = "/home/jovyan"
HOST_IP = "127.0.0.1"


class PodGone(Exception):
    """The pod was deleted, replaced or is terminating: stop working on it quietly."""


class PodStalled(Exception):
    """The pod stays where it is (e.g. ImagePullBackOff) until it is deleted."""


class PodFailed(Exception):
    """The pod cannot run: its phase becomes Failed with this reason and message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


class Missing(PodFailed):
    """Something the pod needs (a ConfigMap, Secret, claim, key) is not there yet: retry."""


class PodRuntime:
    """What the kubelet knows about one pod (by uid) beyond the stored object."""

    def __init__(self, obj: dict):
        meta = obj["metadata"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.obj = obj  # the latest stored version; never mutated
        self.phase, self.reason, self.message = "Pending", None, None
        self.ip: str | None = None
        self.start_time: str | None = None
        self.initialized = False
        self.init: dict[str, dict] = {}  # container name -> containerStatus
        self.main: dict[str, dict] = {}
        self.done: set[str] = set()  # containers that exited and will not restart
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.tasks: set[asyncio.Task] = set()
        self.stopping = False
        self.kill_now = asyncio.Event()
        self.teardown: asyncio.Task | None = None
        self.volume_keys: set[tuple[str, str, str]] = set()  # (namespace, plural, name) its volumes use
        self.pinned: set[Path] = set()  # volume snapshots that subPath mounts point into
        self.resyncs: set[str] = set()  # names of volumes with an update pending

    @property
    def spec(self) -> dict:
        return self.obj.get("spec") or {}

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


class Kubelet:
    retry_interval = 1.0  # FailedMount / CreateContainerConfigError retries
    probe_interval = 0.1
    stop_timeout = 2.0  # SIGTERM -> SIGKILL on stop()

    def __init__(
        self,
        store,
        mode: str = "instant",
        workdir: Path | str | None = None,
        *,
        phase_delay: float = 0.0,
        fail_images: tuple[str, ...] = ("*:broken", "*/broken:*"),
        stuck_images: tuple[str, ...] = ("*:stuck",),
        python: str = sys.executable,
        ip_prefix: str = "127.0.0.",
        first_ip: int = 10,
        env: dict | None = None,
        restart_backoff: float = 1.0,
        volume_sync_delay: float = 0.0,
        node_name: str = NODE_NAME,
    ):
        if mode not in ("instant", "process"):
            raise ValueError(f"mode must be 'instant' or 'process', not {mode!r}")
        self.store, self.mode = store, mode
        self.node_name = node_name  # kubesim's one node, or a node of a real API server (node.py)
        self.workdir = Path(workdir) if workdir is not None else Path.cwd() / "kubesim-node"
        self.phase_delay, self.restart_backoff = phase_delay, restart_backoff
        self.volume_sync_delay = volume_sync_delay  # a ConfigMap/Secret change -> running pods' files
        self.fail_images, self.stuck_images = tuple(fail_images), tuple(stuck_images)
        self.python, self.ip_prefix, self.first_ip = python, ip_prefix, first_ip
        self.env = dict(env or {})
        self._pods: dict[str, PodRuntime] = {}  # by uid
        self._teardowns: dict[tuple[str, str], asyncio.Task] = {}
        self._ips: dict[int, str] = {}  # last octet -> pod uid
        # (namespace, "configmaps"|"secrets", name) -> {(pod uid, volume name)} of mounted volumes
        self._volume_users: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
        self._running = self._subscribed = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._running = True
        self.store.kubelet_attached = True
        if not self._subscribed:
            self.store.subscribe(self._on_event)
            self._subscribed = True
        for obj in self.store.list(self._rt("pods"))[0]:  # adopt pods created before us
            self._on_event("ADDED", self._rt("pods"), obj, None)

    async def stop(self) -> None:
        """Stop watching and end every process we started (SIGTERM, then SIGKILL)."""
        self._running = False
        self.store.kubelet_attached = False
        pods = list(self._pods.values())
        for p in pods:
            p.stopping = True
            p.kill_now.set()
            for task in list(p.tasks):
                task.cancel()
        await asyncio.gather(
            *(t for p in pods for t in list(p.tasks) + [p.teardown] if t), return_exceptions=True
        )
        await asyncio.gather(*(_stop_processes(p.procs.values(), self.stop_timeout) for p in pods))
        self._pods.clear()
        self._ips.clear()
        self._volume_users.clear()
        _make_writable(self.workdir / "pods")  # the pods' files stay for post-mortems

    def pod_root(self, namespace: str, name: str) -> Path:
        return self._pod_dir(namespace, name) / "root"

    def logs(self, namespace: str, name: str, container: str | None = None) -> str:
        """The last 1 MB of a container's output (the first container unless named)."""
        if container is None:
            p = next((p for p in self._pods.values() if p.key == (namespace, name)), None)
            spec = p.spec if p else (self._lookup("pods", namespace, name) or {}).get("spec", {})
            container = (spec.get("containers") or [{}])[0].get("name")
        path = self._pod_dir(namespace, name) / f"{container}.log"
        try:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - LOG_TAIL))
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_path(self, namespace: str, name: str, container: str) -> Path:
        """Where a container's output goes (``pods/log?follow=true`` reads it as it grows)."""
        return self._pod_dir(namespace, name) / f"{container}.log"

    def exec_command(self, namespace: str, name: str, container: str, command: list[str]):
        """``(argv, env, cwd)`` to run ``command`` inside a running container (``pods/exec``).

        As the container's own processes: its environment, working directory and paths under its
        mounts; None when the pod does not run here in process mode, or the container is not running.
        """
        p = next((p for p in self._pods.values() if p.key == (namespace, name) and not p.stopping), None)
        c = (
            next(
                (
                    c
                    for c in p.spec.get("containers", []) + p.spec.get("initContainers", [])
                    if c["name"] == container
                ),
                None,
            )
            if p is not None
            else None
        )
        proc = p.procs.get(container) if p is not None else None
        if self.mode != "process" or c is None or proc is None or proc.returncode is not None:
            return None
        return self._prepare(p, {**c, "command": list(command), "args": []})

    # -- store events ---------------------------------------------------------------------

    def _on_event(self, etype: str, rtype, obj: dict, old: dict | None) -> None:
        if not self._running:
            return
        if rtype.key in ("configmaps", "secrets"):
            if etype != "DELETED":  # a deleted object leaves the files in place, as in a cluster
                self._config_changed(rtype.key, obj, old)
            return
        if rtype.kind != "Pod":
            return
        try:
            self._handle(etype, obj)
        except Exception:  # never break the store's write
            log.exception("kubelet: handling %s of pod %s failed", etype, obj["metadata"].get("name"))

    def _handle(self, etype: str, obj: dict) -> None:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        p = self._pods.get(meta["uid"])
        if etype == "DELETED":
            if p is not None:
                p.kill_now.set()
                self._begin_teardown(p, 0)
            return
        if p is None:
            if spec.get("nodeName") not in (None, "", self.node_name):
                return  # bound to a node that does not exist: stays Pending, as in a cluster
            p = self._pods[meta["uid"]] = PodRuntime(obj)
            if not meta.get("deletionTimestamp"):
                self._spawn(p, self._run(p))
        p.obj = obj
        if meta.get("deletionTimestamp"):
            self._begin_teardown(p, meta.get("deletionGracePeriodSeconds") or 0)

    def _spawn(self, p: PodRuntime, coro) -> asyncio.Task:
        task = self.store.spawn(self._guarded(p, coro))
        p.tasks.add(task)
        task.add_done_callback(p.tasks.discard)
        return task

    async def _guarded(self, p: PodRuntime, coro) -> None:
        try:
            await coro
        except (PodGone, PodStalled):
            pass
        except PodFailed as e:
            self._fail(p, e.reason, e.message)
        except Exception as e:
            log.exception("kubelet: pod %s/%s", p.namespace, p.name)
            self._fail(p, "KubeletError", f"kubesim kubelet error: {e!r}")

    # -- pod lifecycle --------------------------------------------------------------------

    async def _run(self, p: PodRuntime) -> None:
        previous = self._teardowns.get(p.key)
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # a pod of the same name is still being cleaned up
        if p.spec.get("nodeName") != self.node_name:

            def bind(obj):
                obj["spec"]["nodeName"] = self.node_name
                self._render(p, obj.setdefault("status", {}))

            self._write(p, bind)
            self._event(
                p,
                "Scheduled",
                f"Successfully assigned {p.namespace}/{p.name} to {self.node_name}",
                component="default-scheduler",
            )
        await asyncio.sleep(self.phase_delay)
        self._allocate_ip(p)
        p.start_time = now_rfc3339()
        first = "PodInitializing" if p.spec.get("initContainers") else "ContainerCreating"
        p.init = {c["name"]: _waiting(c, "PodInitializing") for c in p.spec.get("initContainers", [])}
        p.main = {c["name"]: _waiting(c, first) for c in p.spec.get("containers", [])}
        self._sync(p)
        await asyncio.sleep(self.phase_delay)
        await (self._run_instant(p) if self.mode == "instant" else self._run_processes(p))

    async def _run_instant(self, p: PodRuntime) -> None:
        # Nothing runs, but references are resolved as a kubelet resolves them (found by users: a
        # profile whose env reads a missing ConfigMap "ran" here and stays Pending on a cluster).
        await self._retry(p, lambda: self._resolve_volumes(p))
        for c in p.spec.get("initContainers", []):
            await self._pull(p, c, p.init[c["name"]])
            await self._retry(p, lambda c=c: self._container_env(p, c), p.init[c["name"]])
            self._created_and_started(p, c)
            _set_terminated(p.init[c["name"]], 0, now_rfc3339())
            self._sync(p)
        p.initialized = True
        for c in p.spec.get("containers", []):
            await self._pull(p, c, p.main[c["name"]])
            await self._retry(p, lambda c=c: self._container_env(p, c), p.main[c["name"]])
            self._created_and_started(p, c)
            _set_running(p.main[c["name"]])
            p.main[c["name"]]["ready"] = True
        p.phase = "Running"
        self._sync(p)

    async def _run_processes(self, p: PodRuntime) -> None:
        await self._retry(p, lambda: self._mount_volumes(p))
        for c in p.spec.get("initContainers", []):
            await self._run_init_container(p, c)
        p.initialized = True
        self._sync(p)
        containers = p.spec.get("containers", [])
        for c in containers:
            await self._pull(p, c, p.main[c["name"]])
        procs = {c["name"]: await self._start(p, c, p.main[c["name"]]) for c in containers}
        p.phase = "Running"
        self._sync(p)
        for c in containers:
            self._spawn(p, self._supervise(p, c, procs[c["name"]]))

    async def _pull(self, p: PodRuntime, c: dict, cs: dict) -> None:
        image = c.get("image", "")
        self._event(p, "Pulling", f'Pulling image "{image}"')
        await asyncio.sleep(self.phase_delay)
        if any(fnmatch.fnmatchcase(image, pat) for pat in self.fail_images):
            error = f'Failed to pull image "{image}": rpc error: code = NotFound desc = {image}: not found'
            self._event(p, "Failed", error, type="Warning")
            cs["state"] = {"waiting": {"reason": "ErrImagePull", "message": error}}
            self._sync(p)
            await asyncio.sleep(self.phase_delay)
            self._event(p, "BackOff", f'Back-off pulling image "{image}"', type="Warning")
            cs["state"] = {
                "waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
            }
            self._sync(p)
            raise PodStalled
        if any(fnmatch.fnmatchcase(image, pat) for pat in self.stuck_images):
            cs["state"] = {"waiting": {"reason": "ContainerCreating"}}
            self._sync(p)
            raise PodStalled
        self._event(p, "Pulled", f'Successfully pulled image "{image}" in 0.1s')
        cs["imageID"] = f"{image.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"

    def _created_and_started(self, p: PodRuntime, c: dict) -> None:
        self._event(p, "Created", f"Created container {c['name']}")
        self._event(p, "Started", f"Started container {c['name']}")

    async def _run_init_container(self, p: PodRuntime, c: dict) -> None:
        cs = p.init[c["name"]]
        await self._pull(p, c, cs)
        policy = "Never" if p.spec.get("restartPolicy") == "Never" else "OnFailure"
        code = await self._keep_running(p, c, cs, await self._start(p, c, cs), policy, init=True)
        if code != 0:
            raise PodFailed("InitContainerFailed", f"init container {c['name']} exited with code {code}")
        self._sync(p)

    async def _supervise(self, p: PodRuntime, c: dict, proc) -> None:
        await self._keep_running(p, c, p.main[c["name"]], proc, p.spec.get("restartPolicy", "Always"))
        p.done.add(c["name"])
        if len(p.done) == len(p.main):
            ok = all(s["state"]["terminated"]["exitCode"] == 0 for s in p.main.values())
            p.phase = "Succeeded" if ok else "Failed"
        self._sync(p)

    async def _keep_running(self, p: PodRuntime, c: dict, cs: dict, proc, policy: str, init=False) -> int:
        """Wait for a container's process, restarting it as ``policy`` says; the last exit code."""
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            self._sync(p)
            started = cs["state"].get("running", {}).get("startedAt", now_rfc3339())
            probe = self._spawn(p, self._await_ready(p, c, cs)) if proc and not init else None
            ran_from = loop.time()
            code = await proc.wait() if proc else 128
            if probe is not None:
                probe.cancel()
            _set_terminated(cs, code, started, None if proc else "StartError")
            if not (policy == "Always" or (policy == "OnFailure" and code != 0)):
                return code
            if loop.time() - ran_from >= max(2 * self.restart_backoff * BACKOFF_CAP, BACKOFF_RESET_MIN):
                failures = 0  # as a kubelet forgets a back-off once the container ran long enough
            failures = failures + 1 if code else 0
            delay = crash_backoff(self.restart_backoff, failures)
            if failures >= (1 if init else 2):  # a crash loop, or any failed init container
                self._event(
                    p,
                    "BackOff",
                    f"Back-off restarting failed container {c['name']} in pod "
                    f"{p.name}_{p.namespace}({p.uid})",
                    type="Warning",
                )
                cs["lastState"] = cs["state"]
                cs["state"] = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {go_duration(delay)} "
                        f"restarting failed container={c['name']} pod={p.name}_{p.namespace}"
                        f"({p.uid})",
                    }
                }
            self._sync(p)
            await asyncio.sleep(delay)
            cs["restartCount"] += 1
            proc = await self._start(p, c, cs)

    async def _await_ready(self, p: PodRuntime, c: dict, cs: dict) -> None:
        probe = c.get("readinessProbe") or {}
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        check = _probe_check(c, probe, p.ip)
        while check is not None and not await check():  # noqa: ASYNC110 - a probe polls by design
            await asyncio.sleep(self.probe_interval)
        cs["ready"] = True
        self._sync(p)

    # -- processes ------------------------------------------------------------------------

    async def _start(self, p: PodRuntime, c: dict, cs: dict):
        """Start a container's process; None when it could not be executed."""
        argv, env, cwd = await self._retry(p, lambda: self._prepare(p, c), cs)
        if p.stopping:
            raise PodGone
        self._event(p, "Created", f"Created container {c['name']}")
        # opening a local file for append returns at once; the subprocess writes to it, not the loop
        with open(self._pod_dir(*p.key) / f"{c['name']}.log", "ab") as out:  # noqa: ASYNC230
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    env=env,
                    cwd=cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:
                out.write(f"kubesim: cannot start {argv[0]!r}: {e}\n".encode())
                self._event(
                    p, "Failed", f"Error: failed to start container {c['name']!r}: {e}", type="Warning"
                )
                return None
        p.procs[c["name"]] = proc
        if "terminated" in cs["state"]:
            cs["lastState"] = cs["state"]
        _set_running(cs)
        self._event(p, "Started", f"Started container {c['name']}")
        return proc

    def _prepare(self, p: PodRuntime, c: dict) -> tuple[list[str], dict, Path]:
        pod_env = self._container_env(p, c)
        argv = [
            VAR_REF.sub(lambda m: pod_env.get(m[1], m[0]), a)
            for a in list(c.get("command") or []) + list(c.get("args") or [])
        ]
        if not argv:
            raise Missing(
                "CreateContainerError",
                f"container {c['name']} has no command or args (kubesim cannot run an image's entrypoint)",
            )
        argv = [ANY_ADDRESS.sub(p.ip, a) for a in argv]
        if argv[0] in ("python", "python3"):
            argv[0] = self.python
        root = self.pod_root(*p.key)
        home = pod_env.get("HOME", DEFAULT_HOME)
        to_host = _mount_translator(
            root, [m["mountPath"] for m in c.get("volumeMounts") or [] if not _at_home(p, m)]
        )
        argv = [argv[0]] + [to_host(a) for a in argv[1:]]
        path = os.pathsep.join([str(Path(self.python).parent), os.environ.get("PATH", os.defpath)])
        env = {k: to_host(v) for k, v in {**pod_env, **self.env}.items()}
        env = {**env, "PATH": path, "HOME": str(_inside(root, home)), "KUBESIM_ROOT": str(root)}
        env = {k: ANY_ADDRESS.sub(p.ip, str(v)) for k, v in env.items()}
        cwd = _inside(root, c.get("workingDir") or home)
        cwd.mkdir(parents=True, exist_ok=True)
        return argv, env, cwd

    def _container_env(self, p: PodRuntime, c: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in c.get("envFrom") or []:
            plural = "configmaps" if "configMapRef" in source else "secrets"
            ref = source.get("configMapRef") or source.get("secretRef") or {}
            data = self._config_data(p, plural, ref)
            env.update({source.get("prefix", "") + k: v for k, v in data.items()})
        for var in c.get("env") or []:
            if "valueFrom" in var:
                value = self._value_from(p, var["valueFrom"])
                if value is None:
                    continue
            else:
                value = VAR_REF.sub(lambda m: env.get(m[1], m[0]), var.get("value", ""))
            env[var["name"]] = value
        return env

    def _value_from(self, p: PodRuntime, source: dict) -> str | None:
        for kind, plural in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
            if kind in source:
                ref = source[kind]
                data = self._config_data(p, plural, ref)
                if ref["key"] not in data:
                    if ref.get("optional"):
                        return None
                    raise Missing(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref['key']} in {plural[:-1]} {p.namespace}/{ref['name']}",
                    )
                return data[ref["key"]]
        if "fieldRef" in source:
            return self._field(p, source["fieldRef"]["fieldPath"])
        log.warning("kubelet: pod %s/%s: env source %s not emulated", p.namespace, p.name, list(source))
        return ""

    def _field(self, p: PodRuntime, path: str) -> str:
        meta = p.obj["metadata"]
        m = LABEL_REF.fullmatch(path)
        if m:
            return (meta.get(m[1]) or {}).get(m[2], "")
        return {
            "metadata.name": p.name,
            "metadata.namespace": p.namespace,
            "metadata.uid": p.uid,
            "status.podIP": p.ip,
            "status.podIPs": p.ip,
            "status.hostIP": HOST_IP,
            "spec.nodeName": self.node_name,
            "spec.serviceAccountName": p.spec.get("serviceAccountName", "default"),
        }.get(path, "")

    def _config_data(self, p: PodRuntime, plural: str, ref: dict) -> dict[str, str]:
        obj = self._lookup(plural, p.namespace, ref.get("name", ""))
        if obj is None:
            if ref.get("optional"):
                return {}
            raise Missing("CreateContainerConfigError", f'{plural[:-1]} "{ref.get("name")}" not found')
        return {k: v.decode("utf-8", "replace") for k, v in _decoded(plural, obj).items()}

    # -- volumes --------------------------------------------------------------------------

    def _mount_volumes(self, p: PodRuntime) -> None:
        """Build the pod's volumes and link each mount into its rootfs (retried while Missing)."""
        pod_dir = self._pod_dir(*p.key)
        pod_dir.mkdir(parents=True, exist_ok=True)
        volumes = {v["name"]: v for v in p.spec.get("volumes") or []}
        sources = {name: self._volume_source(p, v, pod_dir) for name, v in volumes.items()}
        mounts = [
            m
            for c in p.spec.get("initContainers", []) + p.spec.get("containers", [])
            for m in c.get("volumeMounts") or []
        ]
        p.pinned = set()
        for m in sorted(mounts, key=lambda m: m["mountPath"].rstrip("/").count("/")):  # parents first
            if m["name"] not in sources:
                raise PodFailed("FailedMount", f"volume mount {m['name']!r} names no volume of the pod")
            source = sources[m["name"]]
            if m.get("subPath"):
                if _config_source(volumes[m["name"]]):  # the start-time snapshot: updates never reach it
                    source = (source / "..data").resolve()
                    p.pinned.add(source)
                source = _inside(source, m["subPath"])
                if not source.exists():
                    source.mkdir(parents=True)
            _link(_inside(self.pod_root(*p.key), m["mountPath"]), source)
        self._index_volumes(p, volumes.values())

    def _resolve_volumes(self, p: PodRuntime) -> None:
        """What mounting checks, without writing files (the instant kubelet): Missing when absent."""
        for volume in p.spec.get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if self._lookup("persistentvolumeclaims", p.namespace, claim) is None:
                    raise Missing(
                        "FailedMount",
                        f'MountVolume.SetUp failed for volume "{volume["name"]}" : '
                        f'persistentvolumeclaim "{claim}" not found',
                    )
            elif _config_source(volume):
                self._volume_files(p, volume)

    def _volume_source(self, p: PodRuntime, volume: dict, pod_dir: Path) -> Path:
        target = pod_dir / "volumes" / volume["name"]
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if self._lookup("persistentvolumeclaims", p.namespace, claim) is None:
                raise Missing(
                    "FailedMount",
                    f'MountVolume.SetUp failed for volume "{volume["name"]}" : '
                    f'persistentvolumeclaim "{claim}" not found',
                )
            target = self.workdir / "pvcs" / p.namespace / claim
            target.mkdir(parents=True, exist_ok=True)
        elif _config_source(volume):
            files = self._volume_files(p, volume)
            _fresh_dir(target)
            _write_files(target, files)
        elif "hostPath" in volume:  # the node's own directory, shared by every pod that mounts it
            target = Path(volume["hostPath"]["path"])
            if not target.is_dir():
                if volume["hostPath"].get("type") not in (None, "", "DirectoryOrCreate"):
                    raise Missing(
                        "FailedMount",
                        f'MountVolume.SetUp failed for volume "{volume["name"]}" : hostPath type check'
                        f" failed: {target} is not a directory",
                    )
                target.mkdir(parents=True, exist_ok=True)
        else:
            if "emptyDir" not in volume:
                log.warning("kubelet: volume %s: type not emulated, using an empty directory", volume["name"])
            _fresh_dir(target)
        return target

    def _volume_files(self, p: PodRuntime, volume: dict) -> list[tuple[str, bytes, int]]:
        kind, plural, source, name = _config_source(volume)
        obj = self._lookup(plural, p.namespace, name)
        if obj is None:
            if source.get("optional"):
                return []
            raise Missing(
                "FailedMount",
                f'MountVolume.SetUp failed for volume "{volume["name"]}" : {kind.lower()} "{name}" not found',
            )
        data, mode = _decoded(plural, obj), source.get("defaultMode", 0o444)
        items = source.get("items")
        if not items:
            return [(key, value, mode) for key, value in data.items()]
        missing = [i["key"] for i in items if i["key"] not in data]
        if missing and not source.get("optional"):
            raise Missing(
                "FailedMount",
                f'MountVolume.SetUp failed for volume "{volume["name"]}" : '
                f"{kind.lower()} references non-existent config key: {missing[0]}",
            )
        return [(i["path"], data[i["key"]], i.get("mode", mode)) for i in items if i["key"] in data]

    # -- ConfigMap and Secret updates -----------------------------------------------------

    def _index_volumes(self, p: PodRuntime, volumes) -> None:
        """Remember which objects the pod's mounted ConfigMap/Secret volumes follow."""
        for volume in volumes:
            source = _config_source(volume)
            if source:
                key = (p.namespace, source[1], source[3])
                self._volume_users.setdefault(key, set()).add((p.uid, volume["name"]))
                p.volume_keys.add(key)

    def _unindex_volumes(self, p: PodRuntime) -> None:
        for key in p.volume_keys:
            users = self._volume_users.get(key, set())
            users -= {user for user in users if user[0] == p.uid}
            if not users:
                self._volume_users.pop(key, None)
        p.volume_keys.clear()

    def _config_changed(self, plural: str, obj: dict, old: dict | None) -> None:
        """A ConfigMap/Secret was written: schedule an update of the running pods' volumes."""
        if old is not None and all(old.get(f) == obj.get(f) for f in ("data", "binaryData")):
            return  # only its metadata changed
        meta = obj["metadata"]
        for uid, volume in list(
            self._volume_users.get((meta.get("namespace", ""), plural, meta["name"]), ())
        ):
            p = self._pods.get(uid)
            if p is not None and not p.stopping and volume not in p.resyncs:  # one pending update is enough
                p.resyncs.add(volume)
                self._spawn(p, self._resync_volume(p, volume))

    async def _resync_volume(self, p: PodRuntime, name: str) -> None:
        """Rewrite a mounted ConfigMap/Secret volume from its object's current content."""
        await asyncio.sleep(self.volume_sync_delay)  # the real kubelet takes up to about a minute
        p.resyncs.discard(name)
        volume = next((v for v in p.spec.get("volumes") or [] if v["name"] == name), None)
        if p.stopping or volume is None:
            return
        _, plural, _, obj_name = _config_source(volume)
        if self._lookup(plural, p.namespace, obj_name) is None:
            return  # deleted in the meantime: the last files stay
        try:
            _write_files(self._pod_dir(*p.key) / "volumes" / name, self._volume_files(p, volume), p.pinned)
        except (Missing, OSError) as e:  # e.g. an item's key was removed: keep the last files
            log.warning("kubelet: pod %s/%s: volume %s not updated: %s", p.namespace, p.name, name, e)

    # -- deletion -------------------------------------------------------------------------

    def _begin_teardown(self, p: PodRuntime, grace: float) -> None:
        if p.teardown is None:
            p.stopping = True
            p.teardown = self._teardowns[p.key] = self.store.spawn(self._teardown(p, grace))

    async def _teardown(self, p: PodRuntime, grace: float) -> None:
        try:
            for task in list(p.tasks):
                task.cancel()
            await asyncio.gather(*p.tasks, return_exceptions=True)
            for name, cs in p.main.items():
                if "running" in cs["state"]:
                    self._event(p, "Killing", f"Stopping container {name}")
            if self.mode == "instant":
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(p.kill_now.wait(), min(grace, self.phase_delay))
            await _stop_processes(p.procs.values(), grace, p.kill_now)
            self._release_ip(p)
            if self.mode == "process":
                _rmtree(self._pod_dir(*p.key))
            self.store.finish_pod_deletion(p.namespace, p.name, p.uid)
        finally:
            self._unindex_volumes(p)
            self._pods.pop(p.uid, None)
            if self._teardowns.get(p.key) is p.teardown:
                del self._teardowns[p.key]

    # -- helpers --------------------------------------------------------------------------

    def _rt(self, plural: str):
        return self.store.registry.get("", "v1", plural)

    def _pod_dir(self, namespace: str, name: str) -> Path:
        return self.workdir / "pods" / namespace / name

    def _lookup(self, plural: str, namespace: str, name: str) -> dict | None:
        try:
            return self.store.get(self._rt(plural), namespace, name)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def _allocate_ip(self, p: PodRuntime) -> None:
        old = (p.obj.get("status") or {}).get("podIP", "")  # an adopted pod keeps its address
        suffix = old[len(self.ip_prefix) :] if old.startswith(self.ip_prefix) else ""
        wanted = [int(suffix)] if suffix.isdigit() else []
        ports = (
            [
                port["containerPort"]
                for c in p.spec.get("containers", [])
                for port in c.get("ports") or []
                if port.get("protocol", "TCP") == "TCP"
            ]
            if self.mode == "process"
            else []
        )
        # start at a random address: kubesims in other processes (parallel test runs) then rarely
        # pick the same one between the port check and the server binding it
        candidates = list(range(self.first_ip, 255))
        start = random.randrange(len(candidates)) if candidates else 0
        for n in wanted + candidates[start:] + candidates[:start]:
            # skip addresses whose ports another program (e.g. a second kubesim) already uses
            if (
                n not in self._ips
                and self.first_ip <= n <= 254
                and _ports_free(f"{self.ip_prefix}{n}", ports)
            ):
                self._ips[n], p.ip = p.uid, f"{self.ip_prefix}{n}"
                return
        raise PodFailed(
            "FailedCreatePodSandBox",
            "Failed to create pod sandbox: no IP addresses available "
            f"in range {self.ip_prefix}{self.first_ip}-{self.ip_prefix}254",
        )

    def _release_ip(self, p: PodRuntime) -> None:
        if p.ip is not None and self._ips.get(int(p.ip.rsplit(".", 1)[1])) == p.uid:
            del self._ips[int(p.ip.rsplit(".", 1)[1])]

    async def _retry(self, p: PodRuntime, fn, cs: dict | None = None):
        """Call ``fn`` until nothing it needs is Missing, reporting each new reason once."""
        reported = None
        while True:
            try:
                return fn()
            except Missing as e:
                if e.message != reported:
                    reported = e.message
                    if e.reason == "FailedMount":
                        self._event(p, "FailedMount", e.message, type="Warning")
                    else:
                        self._event(p, "Failed", f"Error: {e.message}", type="Warning")
                        if cs is not None:
                            cs["state"] = {"waiting": {"reason": e.reason, "message": e.message}}
                            self._sync(p)
            await asyncio.sleep(self.retry_interval)

    def _event(
        self, p: PodRuntime, reason: str, message: str, *, type: str = "Normal", component: str = "kubelet"
    ) -> None:
        try:
            self.store.record_event(p.obj, reason, message, type=type, component=component)
        except ApiError as e:
            log.debug("kubelet: event %s for %s/%s not recorded: %s", reason, p.namespace, p.name, e)

    def _fail(self, p: PodRuntime, reason: str, message: str) -> None:
        p.phase, p.reason, p.message = "Failed", reason, message
        self._event(p, reason, message, type="Warning")
        try:
            self._sync(p)
        except PodGone:
            pass

    def _write(self, p: PodRuntime, mutate) -> None:
        """Update the stored pod, unless it is gone, replaced or terminating (then PodGone)."""
        if p.stopping:
            raise PodGone

        def guarded(obj):
            if obj["metadata"]["uid"] != p.uid:
                raise PodGone
            mutate(obj)

        try:
            p.obj = self.store.update(self._rt("pods"), p.namespace, p.name, guarded)
        except ApiError as e:
            if e.code == 404:
                raise PodGone from None
            raise

    def _sync(self, p: PodRuntime) -> None:
        """Write the pod's status from what the kubelet knows."""
        self._write(p, lambda obj: self._render(p, obj.setdefault("status", {})))

    def _render(self, p: PodRuntime, status: dict) -> None:
        ready = p.phase == "Running" and all(cs["ready"] for cs in p.main.values())
        old = {c["type"]: c for c in status.get("conditions") or []}
        status["conditions"] = []
        for ctype, ok in (
            ("PodScheduled", True),
            ("Initialized", p.initialized),
            ("ContainersReady", ready),
            ("Ready", ready),
        ):
            value, prev = ("True" if ok else "False"), old.get(ctype, {})
            since = prev.get("lastTransitionTime") if prev.get("status") == value else None
            status["conditions"].append(
                {"type": ctype, "status": value, "lastTransitionTime": since or now_rfc3339()}
            )
        status["phase"] = p.phase
        for key, value in (("reason", p.reason), ("message", p.message)):
            if value:
                status[key] = value
        if p.ip:
            status.update(
                podIP=p.ip,
                podIPs=[{"ip": p.ip}],
                hostIP=HOST_IP,
                hostIPs=[{"ip": HOST_IP}],
                startTime=p.start_time,
            )
        if p.init:
            status["initContainerStatuses"] = copy.deepcopy(list(p.init.values()))
        if p.main:
            status["containerStatuses"] = copy.deepcopy(list(p.main.values()))


# -- restarts ---------------------------------------------------------------------------

BACKOFF_CAP = 30  # a kubelet's CrashLoopBackOff: 10 s doubling to 5 min, i.e. 30 times the base
# the back-off is forgotten once a container ran twice the cap (10 min), never after less than this
BACKOFF_RESET_MIN = 10.0


def crash_backoff(base: float, failures: int) -> float:
    """Seconds before restarting a container after ``failures`` consecutive failures (0: a clean exit)."""
    return min(base * 2 ** max(0, failures - 1), base * BACKOFF_CAP)


def go_duration(seconds: float) -> str:
    """A duration as Go prints it (``10s``, ``2m40s``, ``5m0s``, ``200ms``), as in the kubelet's message."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60)
    secs_text = f"{secs:g}s"
    return f"{int(minutes)}m{secs_text}" if minutes else secs_text


# -- container statuses -------------------------------------------------------------------


def _waiting(c: dict, reason: str) -> dict:
    return {
        "name": c["name"],
        "image": c.get("image", ""),
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": reason}},
    }


def _set_running(cs: dict) -> None:
    cs.update(state={"running": {"startedAt": now_rfc3339()}}, started=True, ready=False)


def _set_terminated(cs: dict, code: int, started_at: str, reason: str | None = None) -> None:
    reason = reason or ("Completed" if code == 0 else "Error")
    cs.update(
        ready=False,
        started=False,
        state={
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": started_at,
                "finishedAt": now_rfc3339(),
            }
        },
    )


# -- readiness ----------------------------------------------------------------------------


def _probe_check(c: dict, probe: dict, ip: str):
    """An async check for the container's readiness, or None when it is ready at once."""

    def port_of(port):
        if isinstance(port, str) and not port.isdigit():
            return next((p["containerPort"] for p in c.get("ports") or [] if p.get("name") == port), 0)
        return int(port)

    if "httpGet" in probe:
        get = probe["httpGet"]
        return lambda: _http_ok(ip, port_of(get.get("port", 80)), get.get("path", "/"))
    if "tcpSocket" in probe:
        return lambda: _tcp_ok(ip, port_of(probe["tcpSocket"].get("port")))
    ports = c.get("ports") or []
    if probe or not ports:
        return None
    return lambda: _tcp_ok(ip, ports[0]["containerPort"])


def _ports_free(ip: str, ports: list[int]) -> bool:
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((ip, port))
            except OSError:
                return False
    return True


async def _tcp_ok(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1)
    except (TimeoutError, OSError):
        return False
    writer.close()
    return True


async def _http_ok(host: str, port: int, path: str) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1)
        try:
            writer.write(
                f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/kubesim\r\n\r\n".encode()
            )
            line = await asyncio.wait_for(reader.readline(), 1)
        finally:
            writer.close()
        return 200 <= int(line.split()[1]) < 400
    except (TimeoutError, OSError, ValueError, IndexError):
        return False


# -- processes and files ------------------------------------------------------------------


def _signal(proc, sig: int) -> None:
    """Signal the container's whole process group (it is its own session)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(pids) -> list[int]:
    """Every process below ``pids`` (from /proc; empty where there is none).

    Why: a container's children may leave its process group — Jupyter starts each kernel in a
    session of its own — and would outlive the pod once their parent is gone.
    """
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


async def _stop_processes(procs, grace: float, kill_now: asyncio.Event | None = None) -> None:
    """SIGTERM, up to ``grace`` seconds (or until ``kill_now``), then SIGKILL; reap them all.

    The signals reach each container's process group and every process below it, also those
    in sessions of their own.
    """
    procs = [proc for proc in procs if proc is not None and proc.returncode is None]
    below = _descendants([proc.pid for proc in procs])
    _kill(below, signal.SIGTERM)
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    waiting = asyncio.ensure_future(asyncio.gather(*(proc.wait() for proc in procs)))
    stop = asyncio.ensure_future(kill_now.wait()) if kill_now is not None else None
    await asyncio.wait([t for t in (waiting, stop) if t], timeout=grace, return_when=asyncio.FIRST_COMPLETED)
    if stop is not None:
        stop.cancel()
    for proc in procs:  # also whatever the container left behind in its process group
        _signal(proc, signal.SIGKILL)
    _kill(below, signal.SIGKILL)
    await waiting


def _decoded(plural: str, obj: dict) -> dict[str, bytes]:
    if plural == "secrets":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def _config_source(volume: dict) -> tuple[str, str, dict, str] | None:
    """``(kind, plural, source, object name)`` of a ConfigMap or Secret volume, else None."""
    if "configMap" in volume:
        return "configMap", "configmaps", volume["configMap"], volume["configMap"].get("name", "")
    if "secret" in volume:
        return "secret", "secrets", volume["secret"], volume["secret"].get("secretName", "")
    return None


def _write_files(target: Path, files: list[tuple[str, bytes, int]], keep=frozenset()) -> None:
    """Write (or rewrite) a ConfigMap/Secret volume atomically and leave it read-only.

    As the real kubelet's atomic writer: the files go to a new hidden ``..<timestamp>``
    directory, one rename points the ``..data`` symlink at it, and each top-level entry is a
    symlink through ``..data`` — a reader sees the old files or the new ones, never a mix or a
    half-written file. The previous directory goes, unless in ``keep`` (a subPath snapshot).
    """
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o755)
    try:
        data = target / "..data"
        old = data.resolve() if data.is_symlink() else None
        snapshot = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S."), dir=target))
        try:
            for rel, content, mode in files:
                path = _inside(snapshot, rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
                path.chmod(mode)
        except BaseException:
            _rmtree(snapshot)  # nothing half-written is left behind; ..data still names the old files
            raise
        for dirpath, _, _ in os.walk(snapshot):
            os.chmod(dirpath, 0o555)
        swap = target / "..data_tmp"
        swap.unlink(missing_ok=True)
        swap.symlink_to(snapshot.name)
        os.replace(swap, data)
        top = {Path(rel.lstrip("/")).parts[0] for rel, _, _ in files}
        for name in top - {entry.name for entry in target.iterdir() if entry.is_symlink()}:
            _link(target / name, Path("..data") / name)
        for entry in target.iterdir():
            if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in top:
                entry.unlink()  # its key was removed from the object
        if old is not None and old not in keep:
            _rmtree(old)
    finally:
        target.chmod(0o555)


def _mount_translator(root: Path, mount_paths: list[str]):
    """A function that rewrites pod paths under a mount to their host paths under ``root``.

    A process pod has no mount namespace, so ``/home/jovyan/x`` in an argument or an
    environment value (alone, in a ``:``-separated list, or after ``=``) must become
    ``<root>/home/jovyan/x`` to reach the mounted volume, as it would inside a container.
    """
    prefixes = sorted({m.rstrip("/") for m in mount_paths if m.rstrip("/")}, key=len, reverse=True)
    if not prefixes:
        return lambda value: value
    pattern = re.compile(r"(?:(?<=^)|(?<=[:=]))(" + "|".join(map(re.escape, prefixes)) + r")(?=$|[/:])")
    return lambda value: pattern.sub(lambda m: str(root) + m[1], value)


def _at_home(p: PodRuntime, mount: dict) -> bool:
    """A hostPath volume mounted at its own path: the process sees that very path, as a container
    does (what a Conda prefix, which is not relocatable, needs when pods share it)."""
    volume = next((v for v in p.spec.get("volumes") or [] if v["name"] == mount["name"]), {})
    host = (volume.get("hostPath") or {}).get("path", "")
    return bool(host) and host.rstrip("/") == mount["mountPath"].rstrip("/") and not mount.get("subPath")


def _inside(base: Path, path: str) -> Path:
    """``base/path`` for a path from the pod spec (absolute ones are taken as relative)."""
    if ".." in Path(path).parts:
        raise PodFailed("InvalidPath", f"path {path!r} must not contain '..'")
    return base / path.lstrip("/")


def _link(link: Path, source: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        log.warning("kubelet: %s exists, mount not replaced", link)
        return
    link.symlink_to(source)


def _fresh_dir(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        _rmtree(path)
    path.mkdir(parents=True)


def _make_writable(path: Path) -> None:
    for dirpath, _, _ in os.walk(path):  # does not follow symlinks (PVCs are left alone)
        os.chmod(dirpath, 0o755)


def _rmtree(path: Path) -> None:
    _make_writable(path)
    shutil.rmtree(path, ignore_errors=True)
