"""The real-lane cluster: an admin identity for the tests, and the hub's own, least-privileged one.

Why: on a real API server the hub must be exactly as powerful as ``helm-values/`` makes it, so the
suite (never the product) installs the chart's namespaced hub Role as Zero-to-JupyterHub 4.4.0
renders it, our ClusterRole and binding (helm-values/rbac.yaml) and the admission policy
(helm-values/admission-policy.yaml), then talks as the hub's ServiceAccount with a bound token.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from apex_hub.spawner.kube import Kube

REPO = Path(__file__).resolve().parents[2]
HELM_VALUES = REPO / "helm-values"
HUB_NAMESPACE = "jhub"  # the placeholders of helm-values/rbac.yaml and admission-policy.yaml
HUB_SERVICE_ACCOUNT = "hub"
HUB_USER = f"system:serviceaccount:{HUB_NAMESPACE}:{HUB_SERVICE_ACCOUNT}"
TOKEN_SECONDS = 24 * 3600
#: The label (and, on a shared cluster, NoSchedule taint) of kubesim's node.
KUBESIM_NODE_LABEL = "apex.esa.int/kubesim"
log = logging.getLogger("tests.cluster")


def chart_hub_rbac(namespace: str = HUB_NAMESPACE) -> list[dict]:
    """The namespaced Role + RoleBinding that Z2JH 4.4.0 gives the hub (templates/hub/rbac.yaml).

    Written from the chart's rules (default values: rbac.create, no fullnameOverride, so both
    are named "hub"), not copied from its template.
    """
    meta = {"name": "hub", "namespace": namespace, "labels": {"app": "jupyterhub", "component": "hub"}}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": dict(meta),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
                    "verbs": ["get", "watch", "list", "create", "delete"],
                },
                {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": dict(meta),
            "subjects": [{"kind": "ServiceAccount", "name": HUB_SERVICE_ACCOUNT, "namespace": namespace}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hub"},
        },
    ]


def helm_manifests(*names: str) -> list[dict]:
    docs = []
    for name in names:
        docs += [d for d in yaml.safe_load_all((HELM_VALUES / name).read_text()) if d]
    return docs


class Cluster:
    """A real API server reached through an admin kubeconfig (ours, or an operator's)."""

    def __init__(self, admin_kubeconfig: Path, workdir: Path, *, name: str = "real", control_plane=None):
        self.admin_kubeconfig = Path(admin_kubeconfig)
        self.workdir = Path(workdir)
        self.name = name
        self.control_plane = control_plane  # a tests.helpers.controlplane.ControlPlane, or None
        raw = yaml.safe_load(self.admin_kubeconfig.read_text())
        context = _named(raw["contexts"], raw["current-context"])["context"]
        self._cluster_entry = _named(raw["clusters"], context["cluster"])
        self.url = self._cluster_entry["cluster"]["server"]
        self.hub_kubeconfig = self.workdir / "hub.kubeconfig"

    @property
    def spawner_traits(self) -> dict:
        """APExSpawner settings the tests add on this cluster: on an operator's cluster the user
        pods select kubesim's node (tainted, so the cluster's scheduler never takes them)."""
        return {} if self.control_plane is not None else {"node_selector": {KUBESIM_NODE_LABEL: "node"}}

    # -- clients ----------------------------------------------------------------------------

    async def admin_configuration(self) -> client.Configuration:
        conf = client.Configuration()
        await config.load_kube_config(config_file=str(self.admin_kubeconfig), client_configuration=conf)
        return conf

    async def admin_client(self) -> client.ApiClient:
        """A new admin ``ApiClient`` (use ``async with``)."""
        return client.ApiClient(await self.admin_configuration())

    async def hub_client(self) -> client.ApiClient:
        """A new ``ApiClient`` that is the hub's ServiceAccount (use ``async with``)."""
        conf = client.Configuration()
        await config.load_kube_config(config_file=str(self.hub_kubeconfig), client_configuration=conf)
        return client.ApiClient(conf)

    def make_default(self) -> None:
        """Make in-process clients that load "the" kubeconfig (KubeSpawner) use the hub's identity."""
        from kubernetes_asyncio.config import kube_config

        os.environ["KUBECONFIG"] = str(self.hub_kubeconfig)
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(self.hub_kubeconfig)

    # -- the hub's identity -----------------------------------------------------------------

    async def install_hub(self) -> None:
        """Hub namespace, ServiceAccount, the chart's Role, helm-values/, and a hub token."""
        async with await self.admin_client() as api:
            kube = Kube(api, log, retry_timeout=60)
            await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": HUB_NAMESPACE}})
            await kube.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": HUB_SERVICE_ACCOUNT, "namespace": HUB_NAMESPACE},
                }
            )
            for doc in chart_hub_rbac() + helm_manifests("rbac.yaml", "admission-policy.yaml"):
                await kube.apply(doc)
            token = await client.CoreV1Api(api).create_namespaced_service_account_token(
                HUB_SERVICE_ACCOUNT,
                HUB_NAMESPACE,
                {"spec": {"audiences": None, "expirationSeconds": TOKEN_SECONDS}},
            )
        self._write_hub_kubeconfig(token.status.token)
        await self._wait_for_controllers()
        await self._wait_for_policy()

    async def _wait_for_controllers(self, timeout: float = 120) -> None:
        """The controller manager is working once it has given kube-system and jhub their "default"
        ServiceAccount (ServiceAccount admission refuses pods until then)."""
        import asyncio
        import time

        deadline = time.monotonic() + timeout
        async with await self.admin_client() as api:
            v1 = client.CoreV1Api(api)
            for namespace in ("kube-system", HUB_NAMESPACE):
                while True:
                    try:
                        await v1.read_namespaced_service_account("default", namespace)
                        break
                    except ApiException as e:
                        if e.status != 404 or time.monotonic() > deadline:
                            raise RuntimeError(
                                f"no default ServiceAccount in {namespace}: is the controller"
                                " manager running?"
                            ) from e
                    await asyncio.sleep(0.5)

    async def _wait_for_policy(self, timeout: float = 120) -> None:
        """The API server loads a new admission policy asynchronously: wait until it is enforced."""
        import asyncio
        import time

        # a dry-run patch of a ConfigMap the API server itself keeps in kube-system ("patch" is
        # all rbac.yaml has ever granted on ConfigMaps)
        path = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
        deadline = time.monotonic() + timeout
        last = ""
        async with await self.hub_client() as api:
            while True:
                try:
                    await api.call_api(
                        path,
                        "PATCH",
                        query_params=[("dryRun", "All")],
                        body={"metadata": {"labels": {"x": "y"}}},
                        header_params={
                            "Content-Type": "application/merge-patch+json",
                            "Accept": "application/json",
                        },
                        auth_settings=["BearerToken"],
                        _preload_content=True,
                        response_types_map={},
                    )
                    last = "the dry-run patch was allowed"
                except ApiException as e:
                    if e.status == 403 and "apex-hub-confinement" in (e.body or ""):
                        return
                    if e.status not in (403, 404):
                        raise
                    last = e.body or str(e)
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the admission policy is not enforced after {timeout:.0f}s; last: {last}"
                    )
                await asyncio.sleep(0.5)

    def _write_hub_kubeconfig(self, token: str) -> None:
        entry = copy.deepcopy(self._cluster_entry)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hub_kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "preferences": {},
                    "clusters": [entry],
                    "users": [{"name": "hub", "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": "hub",
                            "context": {"cluster": entry["name"], "user": "hub", "namespace": HUB_NAMESPACE},
                        }
                    ],
                    "current-context": "hub",
                },
                sort_keys=False,
            )
        )
        self.hub_kubeconfig.chmod(0o600)

    # -- test conveniences ------------------------------------------------------------------

    async def delete_namespace(self, name: str) -> None:
        async with await self.admin_client() as api:
            try:
                await client.CoreV1Api(api).delete_namespace(name)
            except ApiException as e:
                if e.status != 404:
                    raise


def _named(entries: list[dict], name: str) -> dict:
    return next(e for e in entries if e["name"] == name)


class NodeProcess:
    """``python -m apex_hub.kubesim.node`` for the session: kubesim's process kubelet as a real node.

    On our control plane it has a node identity (CN=system:node:<name>, O=system:nodes: the Node
    authorizer and NodeRestriction apply) and binds pods as system:kube-scheduler. On an operator's
    cluster (kubeconfig lane) it uses the admin kubeconfig and schedules only Pending pods of
    ``apex-*`` namespaces, so it never takes that cluster's own pods.
    """

    name = "apex-node-1"

    def __init__(self, cluster: Cluster, workdir: Path):
        import subprocess
        import sys

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = ["--workdir", str(self.workdir / "node")]
        cp = cluster.control_plane
        if cp is not None:
            from tests.helpers.controlplane import write_kubeconfig

            cert, key = cp.client_certificate("node", f"system:node:{self.name}", ("system:nodes",))
            node = write_kubeconfig(
                self.workdir / "node.kubeconfig", cp.url, cp.ca_path, cert=cert, key=key, user="node"
            )
            cert, key = cp.client_certificate("scheduler", "system:kube-scheduler")
            scheduler = write_kubeconfig(
                self.workdir / "scheduler.kubeconfig",
                cp.url,
                cp.ca_path,
                cert=cert,
                key=key,
                user="scheduler",
            )
            args += ["--kubeconfig", str(node), "--scheduler-kubeconfig", str(scheduler)]
        else:
            args += [
                "--kubeconfig",
                str(cluster.admin_kubeconfig),
                "--name",
                "apex-kubesim-node",
                "--namespace-prefix",
                "apex-",
                "--taint",
                f"{KUBESIM_NODE_LABEL}=node:NoSchedule",
            ]
            self.name = "apex-kubesim-node"
        self.log_path = self.workdir / "node.log"
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "apex_hub.kubesim.node", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 120) -> None:
        import time

        deadline = time.monotonic() + timeout
        while f"node {self.name} ready" not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM: the node stops its pods' processes (it has them all in its session group too)."""
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
