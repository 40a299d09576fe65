"""kubesim's kubelet as the node of ANY API server (a real kube-apiserver, k3s, kind, or kubesim).

Why: a real control plane has no node here, so pods stay Pending for ever. :class:`RemoteNode`
registers a Node, is the scheduler of that one node (it binds Pending pods to itself), and runs
them with kubesim's own :class:`~apex_hub.kubesim.kubelet.Kubelet` — the same code as in
kubesim (process mode: real local processes on 127.0.0.N, volumes, ConfigMap/Secret refresh, init
containers, restarts, graceful deletion). The kubelet talks to a store; :class:`RemoteStore` is
that store over HTTPS with kubernetes_asyncio:

* reads come from caches: a watch of pods, and one watch per ConfigMap/Secret a pod uses (by
  ``metadata.name``, which is all the Node authorizer lets a node list or watch); an object not
  cached yet reads as absent once (the kubelet retries every second, as for a missing object);
* writes are queued per pod and sent in order: the binding (``pods/binding``, as the
  scheduler), then the latest status (``pods/<name>/status``), then, once the containers have
  stopped, the final delete (grace 0, uid precondition); Events are posted as the node.

The node's identity should be a client certificate ``CN=system:node:<name>, O=system:nodes`` so
that the Node authorizer and NodeRestriction apply; binding needs the scheduler's rights
(``system:kube-scheduler``), so it may use a second kubeconfig.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
import uuid
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from .errors import ApiError
from .kubelet import HOST_IP, Kubelet
from .registry import Registry
from .store import now_rfc3339

log = logging.getLogger("apex_hub.kubesim.node")
WATCH_SECONDS = 240
LEASE_SECONDS = 40
RETRY_DELAY = 1.0


async def api_client_from(kubeconfig: str | Path) -> client.ApiClient:
    conf = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=conf)
    return client.ApiClient(conf)


async def call(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body=None,
    query=(),
    content_type: str = "application/json",
    timeout: float = 30,
):
    """One raw request; the decoded JSON answer (dict)."""
    return await api.call_api(
        path,
        method,
        query_params=list(query),
        body=body,
        header_params={"Accept": "application/json", "Content-Type": content_type},
        response_types_map={200: "object", 201: "object", 202: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        _preload_content=True,
        _request_timeout=timeout,
    )


def _pod_path(namespace: str, name: str = "", sub: str = "") -> str:
    path = f"/api/v1/namespaces/{namespace}/pods"
    return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


class RemoteStore:
    """The part of kubesim's ``Store`` the kubelet uses, backed by a remote API server."""

    def __init__(
        self,
        node_api: client.ApiClient,
        scheduler_api: client.ApiClient,
        node_name: str,
        *,
        schedule_pending: bool = True,
        namespace_prefix: str = "",
    ):
        self.registry = Registry()
        self.node_api, self.scheduler_api = node_api, scheduler_api
        self.node_name, self.schedule_pending = node_name, schedule_pending
        self.namespace_prefix = namespace_prefix  # on a shared cluster: schedule only these pods
        self.kubelet_attached = False
        self._listeners: list = []
        self._pods: dict[tuple[str, str], dict] = {}
        self._objects: dict[tuple[str, str, str], dict] = {}  # (plural, namespace, name)
        self._followed: dict[tuple[str, str, str], asyncio.Task] = {}
        self._writers: dict[str, _PodWriter] = {}  # by pod uid
        self._tasks: set[asyncio.Task] = set()
        self._rvs: dict[str, str] = {}  # field selector -> resourceVersion of its first list
        self._pods_rv = ""

    # -- the Store interface the kubelet uses -------------------------------------------------

    def subscribe(self, listener) -> None:
        self._listeners.append(listener)

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def list(self, rtype, namespace=None, **_):
        if rtype.key != "pods":
            return [], "", None
        return [copy.deepcopy(p) for p in self._pods.values() if self._mine(p)], self._pods_rv, None

    def get(self, rtype, namespace: str, name: str) -> dict:
        if rtype.key == "pods":
            obj = self._pods.get((namespace, name))
        else:
            key = (rtype.key, namespace, name)
            obj = self._objects.get(key)
            if obj is None:
                self._follow(key)  # absent for now: the kubelet asks again in a second
        if obj is None:
            raise ApiError(404, "NotFound", f'{rtype.key} "{name}" not found')
        return copy.deepcopy(obj)

    def update(self, rtype, namespace: str, name: str, mutate) -> dict:
        """Change the cached pod now; send the binding and the status to the server in order."""
        cur = self._pods.get((namespace, name))
        if cur is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        new = copy.deepcopy(cur)
        mutate(new)
        self._pods[(namespace, name)] = new
        writer = self._writer(new)
        if new["spec"].get("nodeName") and not cur["spec"].get("nodeName"):
            writer.bind = True
        writer.status = copy.deepcopy(new.get("status") or {})
        writer.kick()
        return copy.deepcopy(new)

    def finish_pod_deletion(self, namespace: str, name: str, uid: str | None = None) -> None:
        cur = self._pods.get((namespace, name))
        if cur is not None and uid in (None, cur["metadata"]["uid"]):
            writer = self._writer(cur)
            writer.delete = True
            writer.kick()

    def record_event(
        self, involved: dict, reason: str, message: str, *, type: str = "Normal", component: str = "kubelet"
    ) -> None:
        meta = involved["metadata"]
        stamp = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": component, "host": self.node_name},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": self.node_name,
        }
        self.spawn(self._post_event(meta["namespace"], event))

    # -- lifecycle ------------------------------------------------------------------------

    async def load(self) -> None:
        """The first lists of pods: ours (the kubelet adopts them) and the Pending ones.

        A node may list only pods with ``spec.nodeName=<itself>`` (Node authorizer); the Pending
        ones (``spec.nodeName=``) are listed with the scheduler's identity.
        """
        self._pods_rv = ""
        for api, selector in self._pod_sources():
            data = await call(api, "GET", "/api/v1/pods", query=[("fieldSelector", selector)])
            self._pods.update(
                {
                    (p["metadata"]["namespace"], p["metadata"]["name"]): _typed(p, "Pod")
                    for p in data.get("items", [])
                }
            )
            self._rvs[selector] = data["metadata"]["resourceVersion"]

    def _pod_sources(self):
        sources = [(self.node_api, f"spec.nodeName={self.node_name}")]
        if self.schedule_pending:
            sources.append((self.scheduler_api, "spec.nodeName="))
        return sources

    def run(self) -> None:
        """Start following pods (after the kubelet has subscribed)."""
        for api, selector in self._pod_sources():
            self.spawn(self._watch_pods(api, selector))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self, timeout: float = 30) -> None:
        """Wait until every queued pod write has been sent (for an orderly stop)."""
        deadline = time.monotonic() + timeout
        while any(w.busy for w in self._writers.values()) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    # -- pods -------------------------------------------------------------------------------

    def _mine(self, pod: dict) -> bool:
        node = pod.get("spec", {}).get("nodeName")
        if node:
            return node == self.node_name
        spec = pod.get("spec", {})
        return (
            self.schedule_pending
            and not spec.get("schedulingGates")
            and pod["metadata"]["namespace"].startswith(self.namespace_prefix)
            and spec.get("schedulerName", "default-scheduler") == "default-scheduler"
        )

    async def _watch_pods(self, api, selector: str) -> None:
        pending = selector == "spec.nodeName="
        async for etype, obj in self._list_watch(
            "/api/v1/pods", (("fieldSelector", selector),), api, initial_rv=self._rvs.get(selector, "")
        ):
            if pending and etype == "DELETED":
                # leaving "Pending" is mostly being bound (the node's own watch reports it next):
                # only a pod that is really gone, or bound elsewhere, is dropped
                self.spawn(self._check_gone(obj))
                continue
            self._apply_pod_event(etype, obj)

    def _apply_pod_event(self, etype: str, obj: dict) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        old = self._pods.get(key)
        if etype == "DELETED":
            if old is None or old["metadata"]["uid"] != obj["metadata"]["uid"]:
                return
            del self._pods[key]
        else:
            self._pods[key] = obj
        if self._mine(obj) or etype == "DELETED":
            self._dispatch(etype, self.registry.get("", "v1", "pods"), obj, old)

    async def _check_gone(self, obj: dict) -> None:
        meta = obj["metadata"]
        try:
            current = await call(self.scheduler_api, "GET", _pod_path(meta["namespace"], meta["name"]))
        except ApiException as e:
            if e.status != 404:
                log.warning("node: pod %s/%s: %s", meta["namespace"], meta["name"], e.reason)
                return
            current = None
        if (
            current is None
            or current["metadata"]["uid"] != meta["uid"]
            or current["spec"].get("nodeName") not in (None, "", self.node_name)
        ):
            self._apply_pod_event("DELETED", obj)

    def _dispatch(self, etype, rtype, obj, old) -> None:
        for listener in self._listeners:
            try:
                listener(etype, rtype, copy.deepcopy(obj), old)
            except Exception:
                log.exception("node: handling %s of %s %s failed", etype, rtype.key, obj["metadata"]["name"])

    def _writer(self, pod: dict) -> _PodWriter:
        uid = pod["metadata"]["uid"]
        writer = self._writers.get(uid)
        if writer is None:
            writer = self._writers[uid] = _PodWriter(
                self, pod["metadata"]["namespace"], pod["metadata"]["name"], uid
            )
        return writer

    # -- ConfigMaps, Secrets, claims ----------------------------------------------------------

    def _follow(self, key: tuple[str, str, str]) -> None:
        if key not in self._followed:
            coro = self._fetch_claim(key) if key[0] == "persistentvolumeclaims" else self._watch_object(key)
            self._followed[key] = self.spawn(coro)
            self._followed[key].add_done_callback(lambda _: self._followed.pop(key, None))

    async def _fetch_claim(self, key) -> None:
        plural, namespace, name = key
        try:
            self._objects[key] = await call(
                self.node_api, "GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}"
            )
        except ApiException as e:
            log.debug("node: %s %s/%s not readable yet (%s)", plural, namespace, name, e.status)
            await asyncio.sleep(RETRY_DELAY)  # one try per second at most

    async def _watch_object(self, key) -> None:
        """Follow one ConfigMap/Secret while a pod of ours in its namespace may use it."""
        plural, namespace, name = key
        rtype = self.registry.get("", "v1", plural)
        path = f"/api/v1/namespaces/{namespace}/{plural}"
        query = (("fieldSelector", f"metadata.name={name}"),)
        async for etype, obj in self._list_watch(
            path, query, self.node_api, give_up=lambda: not any(ns == namespace for ns, _ in self._pods)
        ):
            old = self._objects.get(key)
            if etype == "DELETED":
                self._objects.pop(key, None)
            else:
                self._objects[key] = obj
            self._dispatch(etype, rtype, obj, old)

    # -- watch machinery ----------------------------------------------------------------------

    async def _list_watch(self, path: str, query, api, *, initial_rv: str = "", give_up=lambda: False):
        """(type, object) for every object listed, then every change; relists after a 410.

        The first list reports each object as ADDED (except with ``initial_rv``, already loaded).
        Errors (403 while the Node authorizer does not yet know the pod uses the object, dropped
        connections) are retried every second until ``give_up()``.
        """
        rv = initial_rv
        while True:
            try:
                if not rv:
                    data = await call(api, "GET", path, query=query)
                    rv = data["metadata"]["resourceVersion"]
                    for item in data.get("items", []):
                        yield "ADDED", _typed(item, _kind(path))
                response = await api.call_api(
                    path,
                    "GET",
                    query_params=list(query)
                    + [
                        ("watch", "true"),
                        ("resourceVersion", rv),
                        ("allowWatchBookmarks", "true"),
                        ("timeoutSeconds", str(WATCH_SECONDS)),
                    ],
                    header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _request_timeout=WATCH_SECONDS + 30,
                )
                try:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            if obj.get("code") == 410:
                                rv = ""  # history compacted: list again
                            break
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if event.get("type") != "BOOKMARK":
                            yield event["type"], _typed(obj, _kind(path))
                finally:
                    response.release()
            except asyncio.CancelledError:
                raise
            except (TimeoutError, ApiException, aiohttp.ClientError, ValueError, KeyError) as e:
                if give_up():
                    return
                log.debug("node: watch %s failed (%s); again in %.0fs", path, e, RETRY_DELAY)
                rv = rv if not isinstance(e, ApiException) or e.status != 410 else ""
                await asyncio.sleep(RETRY_DELAY)

    async def _post_event(self, namespace: str, event: dict) -> None:
        try:
            await call(self.node_api, "POST", f"/api/v1/namespaces/{namespace}/events", body=event)
        except (TimeoutError, ApiException, aiohttp.ClientError) as e:
            log.debug("node: event %s not recorded: %s", event["reason"], e)


class _PodWriter:
    """One pod's writes, in order and coalesced: binding, then the latest status, then delete."""

    def __init__(self, store: RemoteStore, namespace: str, name: str, uid: str):
        self.store, self.namespace, self.name, self.uid = store, namespace, name, uid
        self.bind = self.delete = False
        self.status: dict | None = None
        self._task: asyncio.Task | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def kick(self) -> None:
        if not self.busy:
            self._task = self.store.spawn(self._run())

    async def _run(self) -> None:
        while self.bind or self.status is not None or self.delete:
            try:
                if self.bind:
                    await self._bind()
                    self.bind = False
                elif self.status is not None:
                    status = self.status
                    await call(
                        self.store.node_api,
                        "PATCH",
                        _pod_path(self.namespace, self.name, "status"),
                        body={"metadata": {"uid": self.uid}, "status": status},
                        content_type="application/merge-patch+json",
                    )
                    if self.status is status:  # else a newer one came meanwhile: send that too
                        self.status = None
                else:
                    await call(
                        self.store.node_api,
                        "DELETE",
                        _pod_path(self.namespace, self.name),
                        body={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                    )
                    self.delete = False
                    self.store._writers.pop(self.uid, None)
            except ApiException as e:
                if e.status in (404, 409):  # gone or replaced: nothing left to write for this pod
                    self.bind, self.status, self.delete = False, None, False
                    self.store._writers.pop(self.uid, None)
                    break
                log.warning(
                    "node: writing pod %s/%s failed (%s %s); retrying",
                    self.namespace,
                    self.name,
                    e.status,
                    e.reason,
                )
                await asyncio.sleep(RETRY_DELAY)
            except (TimeoutError, aiohttp.ClientError) as e:
                log.warning("node: writing pod %s/%s failed (%s); retrying", self.namespace, self.name, e)
                await asyncio.sleep(RETRY_DELAY)

    async def _bind(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": self.name, "uid": self.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.store.node_name},
        }
        try:
            await call(
                self.store.scheduler_api, "POST", _pod_path(self.namespace, self.name, "binding"), body=body
            )
        except ApiException as e:
            if e.status != 409:  # 409: already bound (by us, before a restart)
                raise


class RemoteNode:
    """A node of a remote API server: registration, heartbeats, and kubesim's kubelet.

    async with RemoteNode("node.kubeconfig", scheduler_kubeconfig="sched.kubeconfig",
                          workdir=tmp, mode="process") as node:
        ...   # pods created anywhere on that server now run here
    """

    def __init__(
        self,
        kubeconfig: str | Path,
        *,
        scheduler_kubeconfig: str | Path | None = None,
        name: str | None = None,
        workdir: str | Path,
        mode: str = "process",
        schedule_pending: bool = True,
        namespace_prefix: str = "",
        capacity: dict | None = None,
        taints: list[dict] | None = None,
        **kubelet_options,
    ):
        self.kubeconfig, self.scheduler_kubeconfig = kubeconfig, scheduler_kubeconfig or kubeconfig
        self.name, self.workdir, self.mode = name, Path(workdir), mode
        self.schedule_pending, self.namespace_prefix = schedule_pending, namespace_prefix
        self.capacity = capacity or {
            "cpu": "16",
            "memory": "64Gi",
            "pods": "110",
            "ephemeral-storage": "100Gi",
        }
        self.kubelet_options = kubelet_options
        # on a shared cluster: a NoSchedule taint keeps the cluster's own scheduler away
        self.taints = list(taints or [])
        self.store: RemoteStore | None = None
        self.kubelet: Kubelet | None = None
        self._apis: list[client.ApiClient] = []
        self._lease: asyncio.Task | None = None

    async def start(self) -> RemoteNode:
        node_api = await api_client_from(self.kubeconfig)
        scheduler_api = (
            node_api
            if self.scheduler_kubeconfig == self.kubeconfig
            else await api_client_from(self.scheduler_kubeconfig)
        )
        self._apis = list({id(a): a for a in (node_api, scheduler_api)}.values())
        if self.name is None:  # the identity names the node: CN=system:node:<name>
            review = await call(
                node_api,
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
            user = review["status"]["userInfo"]["username"]
            if not user.startswith("system:node:"):
                raise ValueError(
                    f"the node's kubeconfig authenticates as {user!r}, not system:node:<name>; pass name="
                )
            self.name = user[len("system:node:") :]
        await self._register(node_api)
        self.store = RemoteStore(
            node_api,
            scheduler_api,
            self.name,
            schedule_pending=self.schedule_pending,
            namespace_prefix=self.namespace_prefix,
        )
        await self.store.load()
        self.kubelet = Kubelet(
            self.store, mode=self.mode, workdir=self.workdir, node_name=self.name, **self.kubelet_options
        )
        await self.kubelet.start()
        self.store.run()
        self._lease = asyncio.get_running_loop().create_task(self._heartbeat(node_api))
        return self

    async def stop(self) -> None:
        """Stop every pod process, send what is queued, stop heartbeats (the Node object stays)."""
        if self._lease is not None:
            self._lease.cancel()
            await asyncio.gather(self._lease, return_exceptions=True)
        if self.kubelet is not None:
            await self.kubelet.stop()
        if self.store is not None:
            await self.store.drain(5)
            await self.store.close()
        for api in self._apis:
            await api.close()
        self._apis = []

    async def __aenter__(self) -> RemoteNode:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _register(self, api: client.ApiClient) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "apex.esa.int/kubesim": "node",
                },
            },
            "spec": {"taints": self.taints} if self.taints else {},
        }
        try:
            await call(api, "POST", "/api/v1/nodes", body=node)
        except ApiException as e:
            if e.status != 409:
                raise
        await call(
            api,
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            content_type="application/merge-patch+json",
            body={"status": self._node_status()},
        )

    def _node_status(self) -> dict:
        stamp = now_rfc3339()
        return {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": self.name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubesim kubelet is posting ready status",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ],
            "nodeInfo": {
                "kubeletVersion": "kubesim",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "kubesim://process",
                "osImage": "kubesim",
                "kernelVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    async def _heartbeat(self, api: client.ApiClient) -> None:
        """Renew the node's Lease (the node lifecycle controller's heartbeat) every 10 s."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        while True:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": self.name,
                    "leaseDurationSeconds": LEASE_SECONDS,
                    "renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                },
            }
            try:
                try:
                    await call(
                        api,
                        "PUT",
                        path,
                        body={
                            **lease,
                            "metadata": {
                                **lease["metadata"],
                                "resourceVersion": (await call(api, "GET", path))["metadata"][
                                    "resourceVersion"
                                ],
                            },
                        },
                    )
                except ApiException as e:
                    if e.status != 404:
                        raise
                    await call(api, "POST", path.rsplit("/", 1)[0], body=lease)
            except (TimeoutError, ApiException, aiohttp.ClientError) as e:
                log.warning("node %s: lease renewal failed: %s", self.name, e)
            await asyncio.sleep(10)


def _taint(text: str) -> dict:
    """``key=value:Effect`` (or ``key:Effect``) as a Node taint."""
    key_value, _, effect = text.rpartition(":")
    key, _, value = key_value.partition("=")
    if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise SystemExit(f"--taint {text!r}: expected KEY[=VALUE]:NoSchedule|PreferNoSchedule|NoExecute")
    return {"key": key, "value": value, "effect": effect} if value else {"key": key, "effect": effect}


def _kind(path: str) -> str:
    return {"pods": "Pod", "configmaps": "ConfigMap", "secrets": "Secret"}[path.rsplit("/", 1)[1]]


def _typed(obj: dict, kind: str) -> dict:
    obj.setdefault("apiVersion", "v1")
    obj.setdefault("kind", kind)
    return obj


def main(argv=None) -> int:
    """``python -m apex_hub.kubesim.node --kubeconfig NODE.kubeconfig [...]``: run until SIGTERM/Ctrl-C."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="kubesim's kubelet as a node of any API server")
    parser.add_argument("--kubeconfig", required=True, help="the node's identity (CN=system:node:<name>)")
    parser.add_argument("--scheduler-kubeconfig", help="who binds pods (default: --kubeconfig)")
    parser.add_argument("--name", help="node name (default: from the identity)")
    parser.add_argument("--workdir", required=True, help="pods' root filesystems, logs and claims")
    parser.add_argument("--mode", choices=("process", "instant"), default="process")
    parser.add_argument(
        "--namespace-prefix",
        default="",
        help="schedule only Pending pods of namespaces with this prefix (a shared cluster)",
    )
    parser.add_argument("--no-schedule", action="store_true", help="run only pods bound to this node")
    parser.add_argument(
        "--taint",
        action="append",
        default=[],
        metavar="KEY=VALUE:EFFECT",
        help="a taint of the Node (repeatable), e.g. apex.esa.int/kubesim=true:NoSchedule",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with RemoteNode(
            args.kubeconfig,
            scheduler_kubeconfig=args.scheduler_kubeconfig,
            name=args.name,
            workdir=args.workdir,
            mode=args.mode,
            schedule_pending=not args.no_schedule,
            namespace_prefix=args.namespace_prefix,
            taints=[_taint(t) for t in args.taint],
        ) as node:
            print(f"node {node.name} ready", flush=True)
            await stop.wait()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
