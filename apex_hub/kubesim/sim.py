"""``KubeSim``: the API server, the store and the kubelet, started together.

async with KubeSim(kubelet="process") as sim:
    os.environ["KUBECONFIG"] = sim.kubeconfig_path
    ...
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import yaml
from aiohttp import web

from .faults import Fault, Faults, Hold
from .jobs import JobController
from .registry import Registry
from .server import ApiServer
from .store import Store
from .validation import schema_validator


class KubeSim:
    """A local Kubernetes: real HTTP on loopback, one global store, optional kubelet.

    ``kubelet`` is ``"instant"`` (pods become Running at once, no process), ``"process"``
    (each pod's command runs as a local process on its own ``127.0.0.N``) or ``None`` (an
    API server only: pods stay Pending, as with no node). ``validate_schemas`` checks
    every write against the real Kubernetes OpenAPI schemas (default: on when
    kubernetes-validate is installed). ``faults`` are active from the start
    (:class:`Fault` objects or their dicts). ``namespace_deletion_delay`` is the least time a
    deleted namespace stays Terminating (refusing new content), as on a real cluster.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        kubelet: str | None = "instant",
        workdir: str | os.PathLike | None = None,
        kubeconfig_path: str | os.PathLike | None = None,
        validate_schemas: bool | None = None,
        history_limit: int = 10000,
        bookmark_interval: float = 60.0,
        latency: float = 0.0,
        seed: int | None = 0,
        kubelet_options: dict | None = None,
        faults: list | None = None,
        namespace_deletion_delay: float = 1.0,
    ):
        if kubelet not in (None, "instant", "process"):
            raise ValueError(f"kubelet must be None, 'instant' or 'process', not {kubelet!r}")
        self.host, self.port = host, port
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kubesim-"))
        self.kubeconfig_path = str(kubeconfig_path or self.workdir / "kubeconfig")
        validator = None
        if validate_schemas or validate_schemas is None:
            validator = schema_validator()
            if validator is None and validate_schemas:
                raise RuntimeError(
                    "validate_schemas=True needs kubernetes-validate (pip install kubernetes-validate)"
                )
        self.store = Store(
            Registry(),
            history_limit=history_limit,
            schema_validator=validator,
            namespace_deletion_delay=namespace_deletion_delay,
        )
        self.faults = Faults(seed)
        self.faults.latency = latency
        for fault in faults or ():
            self.faults.add(fault if isinstance(fault, Fault) else Fault.from_dict(fault))
        self.api = ApiServer(self.store, self.faults, bookmark_interval=bookmark_interval)
        self.jobs = JobController(self.store)  # batch/v1 Jobs get their pod (jobs.py)
        self.kubelet_mode = kubelet
        self.kubelet = None
        self._kubelet_options = kubelet_options or {}
        self._runner: web.AppRunner | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> KubeSim:
        self._runner = web.AppRunner(
            self.api.app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.write_kubeconfig(self.kubeconfig_path)
        self.jobs.start()
        if self.kubelet_mode:
            from .kubelet import Kubelet

            self.kubelet = Kubelet(
                self.store, mode=self.kubelet_mode, workdir=self.workdir / "node", **self._kubelet_options
            )
            self.api.pod_logs = self.kubelet.logs
            self.api.kubelet = self.kubelet  # what pods/log follow and pods/exec talk to
            await self.kubelet.start()
        return self

    async def stop(self) -> None:
        if self.kubelet is not None:
            await self.kubelet.stop()
        self.api.drop_watches()
        await self.store.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> KubeSim:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # -- clients --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def kubeconfig(self) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": "kubesim", "cluster": {"server": self.url}}],
            "users": [{"name": "kubesim", "user": {"username": "kubesim"}}],
            "contexts": [
                {
                    "name": "kubesim",
                    "context": {"cluster": "kubesim", "user": "kubesim", "namespace": "default"},
                }
            ],
            "current-context": "kubesim",
        }

    def write_kubeconfig(self, path: str | os.PathLike) -> str:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        return str(path)

    def make_default(self) -> None:
        """Point in-process clients that load "the" kubeconfig (KubeSpawner does) at this kubesim.

        Sets ``KUBECONFIG`` and kubernetes_asyncio's default location, which that library reads
        from the environment only once, at import.
        """
        from kubernetes_asyncio.config import kube_config

        os.environ["KUBECONFIG"] = self.kubeconfig_path
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = self.kubeconfig_path

    def client_configuration(self):
        """A kubernetes_asyncio ``Configuration`` pointing at this kubesim."""
        from kubernetes_asyncio.client import Configuration

        conf = Configuration()
        conf.host = self.url
        return conf

    def api_client(self):
        """A new kubernetes_asyncio ``ApiClient`` (use ``async with``)."""
        from kubernetes_asyncio.client import ApiClient

        return ApiClient(self.client_configuration())

    # -- faults and measurement -----------------------------------------------------------

    def inject(self, fault: Fault | None = None, **kw) -> Fault:
        """Add a fault, e.g. ``sim.inject(verb="create", resource="pods", status=429, retry_after=1)``."""
        return self.faults.add(fault, **kw)

    def hold(self, holds, until, timeout: float = 30.0) -> Hold:
        """Hold the requests ``holds`` matches until one ``until`` matches arrives (:class:`Hold`)."""
        hold = Hold(holds, until, timeout)
        self.faults.holds.append(hold)
        return hold

    def set_latency(self, seconds: float, **by_verb: float) -> None:
        self.faults.latency = seconds
        self.faults.latency_by_verb = dict(by_verb)

    def drop_watches(self, resource: str | None = None, abrupt: bool = False) -> int:
        return self.api.drop_watches(resource, abrupt)

    @property
    def requests(self):
        return self.faults.log

    def counts(self, since: float = 0.0):
        return self.faults.counts(since)

    def reset_log(self) -> None:
        self.faults.reset_log()
