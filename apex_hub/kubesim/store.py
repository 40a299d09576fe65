"""The object store: etcd and the API server's registry logic, in memory.

Semantics kept close to a real cluster because our spawner and KubeSpawner depend on them:
one global resourceVersion counter; watch history with 410 Gone once compacted; watches
that turn selector transitions into ADDED/DELETED; namespaces that go Terminating and
cascade; ownerReference garbage collection; finalizers; graceful pod deletion finished
by the kubelet. Stored objects are never mutated in place: every write stores a new dict,
so history entries and watch events can share them safely.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable

from . import errors, managed
from .errors import ApiError
from .patch import APPLY_PATCH, PatchError, apply_by_content_type
from .registry import Registry, ResourceType
from .selectors import SelectorError, field_selector, label_selector
from .validation import validate

log = logging.getLogger("apex_hub.kubesim")

SERVER_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "namespace",
    "name",
    "generation",
    "selfLink",
)
GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
BOOTSTRAP_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NODE_NAME = "kubesim-node"


def now_rfc3339(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def _selector(factory, expr):
    try:
        return factory(expr)
    except SelectorError as e:
        raise errors.bad_request(f"unable to parse requirement: {e}") from None


class Watcher:
    """One open watch: a queue of ``(type, object)`` events filtered by namespace and selectors."""

    def __init__(self, rtype: ResourceType, namespace: str | None, labels: str | None, fields: str | None):
        self.rtype = rtype
        self.namespace = namespace
        self._labels = _selector(label_selector, labels)
        self._fields = _selector(field_selector, fields)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.closed = False

    def matches(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        return self._labels(meta.get("labels")) and self._fields(obj)

    def offer(self, etype: str, obj: dict, old: dict | None) -> None:
        """Queue ``obj`` if this watch sees it; a selector transition becomes ADDED or DELETED."""
        if self.closed:
            return
        now, before = self.matches(obj), self.matches(old)
        if etype == "MODIFIED":
            if now and not before:
                etype = "ADDED"
            elif before and not now:
                etype = "DELETED"
            elif not now:
                return
        elif not now:
            return
        self.queue.put_nowait((etype, obj))

    def close(self) -> None:
        """End the stream (the HTTP layer sees ``None`` and closes the response)."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class Store:
    """All objects of all types, with the verbs of the Kubernetes API."""

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        history_limit: int = 10000,
        schema_validator: Callable | None = None,
        namespace_grace_timeout: float = 60.0,
        namespace_deletion_delay: float = 1.0,
    ):
        self.registry = registry or Registry()
        # the least time a deleted namespace stays Terminating, as a namespace controller takes
        # (found against the real API server: a re-spawn right after a deletion then fails)
        self.namespace_deletion_delay = namespace_deletion_delay
        self.schema_validator = schema_validator
        self.history_limit = history_limit
        self.namespace_grace_timeout = namespace_grace_timeout
        # Set by the kubelet simulator: pods on a node are then deleted gracefully (the kubelet
        # finishes them). Without a kubelet, pod deletion is immediate.
        self.kubelet_attached = False
        self.rv = 0
        self._objects: dict[str, dict[tuple[str, str], dict]] = {}
        self._history: deque = deque()  # (rv, rtype.key, etype, obj, old)
        self._compacted = 0  # events with rv <= this are no longer available
        self._watchers: set[Watcher] = set()
        self._listeners: list[Callable] = []
        self._owned: dict[str, set[tuple[str, str, str]]] = {}  # owner uid -> dependents
        self._tasks: set[asyncio.Task] = set()
        self._clusterip = 0
        self._last_event_ns = 0
        self._applied: dict[str, dict[str, set[tuple]]] = {}  # uid -> apply manager -> fields (managed.py)
        for ns in BOOTSTRAP_NAMESPACES:
            self.create(self._rt("namespaces"), "", {"metadata": {"name": ns}})
        self.create(
            self._rt("nodes"),
            "",
            {
                "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME}},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                },
            },
        )

    # -- helpers --------------------------------------------------------------------------

    def _rt(self, plural: str, group: str = "", version: str = "v1") -> ResourceType:
        return self.registry.get(group, version, plural)

    def _table(self, rtype: ResourceType) -> dict[tuple[str, str], dict]:
        return self._objects.setdefault(rtype.key, {})

    def _raw(self, rtype: ResourceType, namespace: str, name: str) -> dict | None:
        return self._table(rtype).get((namespace if rtype.namespaced else "", name))

    def _must(self, rtype, namespace, name) -> dict:
        obj = self._raw(rtype, namespace, name)
        if obj is None:
            raise errors.not_found(rtype, name)
        return obj

    def subscribe(self, listener: Callable[[str, ResourceType, dict, dict | None], None]) -> None:
        """In-process observers (the kubelet) get every event synchronously."""
        self._listeners.append(listener)

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for w in list(self._watchers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _emit(self, rtype: ResourceType, etype: str, obj: dict, old: dict | None) -> None:
        self._history.append((self.rv, rtype.key, etype, obj, old))
        while len(self._history) > self.history_limit:
            self._compacted = self._history.popleft()[0]
        for w in list(self._watchers):
            if w.rtype.key == rtype.key:
                w.offer(etype, obj, old)
        for listener in self._listeners:
            try:
                listener(etype, rtype, obj, old)
            except Exception:  # an observer must never break a write
                log.exception("kubesim listener failed")

    def _index_owners(self, rtype, obj, add: bool) -> None:
        meta = obj["metadata"]
        ref = (rtype.key, meta.get("namespace", ""), meta["name"])
        for owner in meta.get("ownerReferences") or []:
            deps = self._owned.setdefault(owner.get("uid", ""), set())
            (deps.add if add else deps.discard)(ref)

    def _put(self, rtype: ResourceType, obj: dict, etype: str, old: dict | None = None) -> dict:
        self.rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.rv)
        if old is not None:
            self._index_owners(rtype, old, add=False)
        self._table(rtype)[(meta.get("namespace", ""), meta["name"])] = obj
        self._index_owners(rtype, obj, add=True)
        self._emit(rtype, etype, obj, old)
        return obj

    def compact(self) -> None:
        """Drop all watch history, as etcd compaction does (watches from older versions get 410)."""
        self._history.clear()
        self._compacted = self.rv

    # -- reads ----------------------------------------------------------------------------

    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict:
        return copy.deepcopy(self._must(rtype, namespace, name))

    def list(
        self,
        rtype: ResourceType,
        namespace: str | None = None,
        *,
        label_selector_expr: str | None = None,
        field_selector_expr: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> tuple[list[dict], str, str | None]:
        """Matching objects sorted by (namespace, name), the collection resourceVersion and a continue token."""
        labels = _selector(label_selector, label_selector_expr)
        fields = _selector(field_selector, field_selector_expr)
        start = None
        if continue_token:
            try:
                start = tuple(json.loads(base64.urlsafe_b64decode(continue_token.encode()))["start"])
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request("invalid continue token") from None
        items = []
        more = None
        last_key: tuple | None = None
        for key in sorted(self._table(rtype)):
            if start is not None and key <= start:
                continue
            obj = self._table(rtype)[key]
            if namespace and key[0] != namespace:
                continue
            if not (labels(obj["metadata"].get("labels")) and fields(obj)):
                continue
            if limit and len(items) >= limit:
                more = base64.urlsafe_b64encode(json.dumps({"start": list(last_key or ())}).encode()).decode()
                break
            items.append(obj)
            last_key = key
        return items, str(self.rv), more

    def watch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        *,
        label_selector_expr: str | None = None,
        field_selector_expr: str | None = None,
        resource_version: str | None = None,
    ) -> Watcher:
        """Open a watch; events after ``resource_version`` are replayed, or current objects as ADDED."""
        w = Watcher(rtype, namespace, label_selector_expr, field_selector_expr)
        if resource_version not in (None, "", "0"):
            try:
                since = int(resource_version)
            except ValueError:
                raise errors.bad_request(f"invalid resource version: {resource_version}") from None
            if since < self._compacted:
                raise errors.gone(f"too old resource version: {since} ({self._compacted + 1})")
            for rv, key, etype, obj, old in self._history:
                if rv > since and key == rtype.key:
                    w.offer(etype, obj, old)
        else:
            for obj in self.list(rtype, namespace)[0]:
                w.offer("ADDED", obj, None)
        self._watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        self._watchers.discard(w)
        w.closed = True

    def watchers(self) -> list[Watcher]:
        return list(self._watchers)

    # -- writes ---------------------------------------------------------------------------

    def _check_kind(self, rtype: ResourceType, obj: dict) -> None:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if (kind and kind != rtype.kind) or (api_version and api_version != rtype.api_version):
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({rtype.api_version})"
                if kind == rtype.kind
                else f'{kind} in version "{api_version}" cannot be handled as a {rtype.kind}'
            )
        obj["kind"], obj["apiVersion"] = rtype.kind, rtype.api_version

    def _check_namespace(self, rtype: ResourceType, namespace: str, name: str) -> None:
        ns = self._raw(self._rt("namespaces"), "", namespace)
        if ns is None:
            raise errors.not_found(self._rt("namespaces"), namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(
                rtype,
                name,
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )

    def create(self, rtype: ResourceType, namespace: str, body: dict, *, dry_run: bool = False) -> dict:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        self._check_kind(rtype, obj)
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(10):
                meta["name"] = meta["generateName"] + "".join(random.choices(GENERATE_ALPHABET, k=5))
                if self._raw(rtype, namespace, meta["name"]) is None:
                    break
        for key in SERVER_METADATA[:4] + ("resourceVersion", "managedFields"):
            meta.pop(key, None)
        _drop_empty_maps(meta)
        validate(rtype, obj, self.schema_validator)
        name = meta["name"]
        if rtype.namespaced:
            self._check_namespace(rtype, namespace, name)
        if rtype.kind == "Pod":
            self._admit_service_account(rtype, namespace, obj)
        if self._raw(rtype, namespace, name) is not None:
            raise errors.already_exists(rtype, name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        self._default(rtype, obj)
        if dry_run:
            return obj
        self._put(rtype, obj, "ADDED")
        self._after_create(rtype, obj)
        return copy.deepcopy(obj)

    def _admit_service_account(self, rtype: ResourceType, namespace: str, pod: dict) -> None:
        """The ServiceAccount admission plugin: a pod may only name a ServiceAccount that exists.

        Found against the real API server: a spawn that creates the pod before its ServiceAccount
        works on a lenient simulator and fails on every cluster.
        """
        spec = pod.get("spec") or {}
        account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        if self._raw(self._rt("serviceaccounts"), namespace, account) is None:
            raise errors.forbidden(
                rtype,
                pod["metadata"].get("name", ""),
                f"error looking up service account {namespace}/{account}: "
                f'serviceaccount "{account}" not found',
            )

    def _default(self, rtype: ResourceType, obj: dict) -> None:
        """Fill the fields that the API server and its controllers set on a new object."""
        kind, meta = rtype.kind, obj["metadata"]
        spec = obj.setdefault("spec", {}) if kind in _WITH_SPEC else None
        if kind == "Namespace":
            spec.setdefault("finalizers", ["kubernetes"])
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        elif kind == "Pod":
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                image = c.get("image", "")
                latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
                c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
                c.setdefault("terminationMessagePath", "/dev/termination-log")
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
        elif kind == "PersistentVolumeClaim":
            spec.setdefault("storageClassName", "standard")
            spec.setdefault("volumeMode", "Filesystem")
            spec.setdefault("volumeName", f"pvc-{meta['uid']}")
            obj["status"] = {
                "phase": "Bound",
                "accessModes": spec.get("accessModes", []),
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            }
        elif kind == "Service":
            spec.setdefault("type", "ClusterIP")
            if spec.get("clusterIP") != "None":
                # Loopback addresses: a cluster IP here is only data, and nothing may be sent off-host.
                self._clusterip += 1
                spec["clusterIP"] = f"127.96.{self._clusterip // 250}.{self._clusterip % 250 + 1}"
                spec["clusterIPs"] = [spec["clusterIP"]]
            for p in spec.get("ports", []):
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
        elif kind == "Secret":
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {})
            for k, v in string_data.items():
                data[k] = base64.b64encode(v.encode()).decode()
        elif kind == "CustomResourceDefinition":
            obj["status"] = {
                "conditions": [{"type": "Established", "status": "True"}],
                "acceptedNames": spec.get("names", {}),
            }

    def _after_create(self, rtype: ResourceType, obj: dict) -> None:
        if rtype.kind == "Namespace":  # the serviceaccount controller's job
            self.create(
                self._rt("serviceaccounts"), obj["metadata"]["name"], {"metadata": {"name": "default"}}
            )
        elif rtype.kind == "CustomResourceDefinition":
            self.registry.register_crd(obj)

    def replace(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        body: dict,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was in an unknown format")
        cur = self._must(rtype, namespace, name)
        new = copy.deepcopy(body)
        self._check_kind(rtype, new)
        meta = new.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        rv = meta.get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise errors.conflict(rtype, name)
        return self._update(rtype, cur, new, subresource, dry_run)

    def patch(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        body,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
        force: bool = False,
    ) -> dict:
        cur = self._raw(rtype, namespace, name)
        is_apply = content_type.split(";")[0].strip() == APPLY_PATCH
        if is_apply and not field_manager:
            raise ApiError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                "is required for apply patch",
                details={
                    "group": "meta.k8s.io",
                    "kind": "PatchOptions",
                    "causes": [
                        {
                            "reason": "FieldValueRequired",
                            "field": "fieldManager",
                            "message": "Required value: is required for apply patch",
                        }
                    ],
                },
            )
        if cur is None:
            if is_apply:  # server-side apply creates
                body = dict(body or {}) if isinstance(body, dict) else body
                if isinstance(body, dict):
                    body.setdefault("metadata", {}).setdefault("name", name)
                made = self.create(rtype, namespace, body, dry_run=dry_run)
                if not dry_run and subresource is None:
                    self._applied[made["metadata"]["uid"]] = {field_manager: managed.field_set(body)}
                return made
            raise errors.not_found(rtype, name)
        if is_apply and subresource is None and isinstance(body, dict):
            return self._apply(rtype, cur, body, field_manager, force, dry_run)
        try:
            new = apply_by_content_type(content_type, copy.deepcopy(cur), body)
        except PatchError as e:
            reason = {400: "BadRequest", 415: "UnsupportedMediaType"}.get(e.code, "Invalid")
            raise ApiError(e.code, reason, str(e)) from None
        if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
            raise errors.bad_request("the patch would remove the object's metadata")
        rv = new["metadata"].get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise errors.conflict(rtype, name)
        return self._update(rtype, cur, new, subresource, dry_run)

    def _apply(
        self, rtype: ResourceType, cur: dict, config: dict, manager: str, force: bool, dry_run: bool
    ) -> dict:
        """Server-side apply onto a live object, with field ownership (see managed.py)."""
        owners = self._applied.get(cur["metadata"]["uid"], {})
        fields = managed.field_set(config)
        others = {m: f for m, f in owners.items() if m != manager}
        clashes = managed.conflicts(cur, config, fields, others)
        if clashes and not force:
            causes = [
                {
                    "reason": "FieldManagerConflict",
                    "message": f'conflict with "{m}"',
                    "field": managed.render_path(p),
                }
                for m, p in clashes
            ]
            raise ApiError(409, "Conflict", managed.conflict_message(clashes), details={"causes": causes})
        others = {m: f - fields if force else f for m, f in others.items()}
        still_owned = set().union(fields, *others.values())
        base = copy.deepcopy(cur)
        managed.remove_fields(base, owners.get(manager, set()) - fields, still_owned)
        try:
            new = apply_by_content_type(APPLY_PATCH, base, config)
        except PatchError as e:
            raise ApiError(e.code, {400: "BadRequest"}.get(e.code, "Invalid"), str(e)) from None
        if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
            raise errors.bad_request("the patch would remove the object's metadata")
        rv = new["metadata"].get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise errors.conflict(rtype, cur["metadata"]["name"])
        out = self._update(rtype, cur, new, None, dry_run, applied_by=manager)
        if not dry_run:
            self._applied[cur["metadata"]["uid"]] = {
                **{m: f for m, f in others.items() if f},
                manager: fields,
            }
        return out

    def update(self, rtype: ResourceType, namespace: str, name: str, mutate: Callable[[dict], None]) -> dict:
        """In-process write with no restrictions (the kubelet and controllers use it)."""
        cur = self._must(rtype, namespace, name)
        new = copy.deepcopy(cur)
        mutate(new)
        return self._update(rtype, cur, new, "internal", False)

    def _disown_changed(self, cur: dict, new: dict) -> None:
        """A non-apply write takes the fields whose value it changes away from apply managers."""
        owners = self._applied.get(cur["metadata"]["uid"])
        if not owners:
            return
        for _manager, fields in owners.items():
            fields -= managed.changed(cur, new, fields)

    def _update(self, rtype, cur, new, subresource, dry_run, applied_by: str | None = None) -> dict:
        meta = new.setdefault("metadata", {})
        _drop_empty_maps(meta)
        if subresource != "internal":
            for key in SERVER_METADATA:
                if key in cur["metadata"]:
                    meta[key] = cur["metadata"][key]
                else:
                    meta.pop(key, None)
        meta.pop("managedFields", None)
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(cur)
            new["status"] = status
        elif subresource != "internal" and rtype.has_status:
            if "status" in cur:
                new["status"] = copy.deepcopy(cur["status"])
            else:
                new.pop("status", None)
        meta = new["metadata"]
        meta["resourceVersion"] = cur["metadata"]["resourceVersion"]
        if new == cur:
            return copy.deepcopy(cur)  # a no-op write does not bump resourceVersion
        validate(rtype, new, self.schema_validator)
        if {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
            k: v for k, v in cur.items() if k not in ("metadata", "status")
        }:
            meta["generation"] = cur["metadata"].get("generation", 1) + 1
        if dry_run:
            return new
        if applied_by is None:
            self._disown_changed(cur, new)
        if meta.get("deletionTimestamp") and cur["metadata"].get("finalizers") and not meta.get("finalizers"):
            self._remove(rtype, new, "Background")  # the last finalizer is gone: deletion completes
            return copy.deepcopy(new)
        self._put(rtype, new, "MODIFIED", cur)
        return copy.deepcopy(new)

    # -- deletion -------------------------------------------------------------------------

    def delete(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        *,
        grace_period: int | None = None,
        propagation: str | None = None,
        preconditions: dict | None = None,
        dry_run: bool = False,
    ) -> dict:
        cur = self._must(rtype, namespace, name)
        meta = cur["metadata"]
        for key in ("uid", "resourceVersion"):
            want = (preconditions or {}).get(key)
            if want and want != meta.get(key):
                raise errors.conflict(
                    rtype, name, f"Precondition failed: {key}: {want}, {key} in object meta: {meta.get(key)}"
                )
        if dry_run:
            return copy.deepcopy(cur)
        propagation = propagation or "Background"
        if meta.get("deletionTimestamp"):
            if rtype.kind == "Pod" and grace_period == 0:
                self._remove(rtype, cur, propagation)
            return copy.deepcopy(cur)
        if rtype.kind == "Namespace":
            terminating = self.update(rtype, "", name, _mark_terminating(0, phase=True))
            self.spawn(self._terminate_namespace(name))
            return terminating
        if rtype.kind == "Pod":
            if grace_period is None:
                grace_period = cur.get("spec", {}).get("terminationGracePeriodSeconds", 30)
            if grace_period > 0 and self.kubelet_attached and cur.get("spec", {}).get("nodeName"):
                # The kubelet stops the containers and then calls finish_pod_deletion().
                pod = self.update(rtype, namespace, name, _mark_terminating(grace_period))
                self.spawn(self._force_after(rtype, namespace, name, meta["uid"], grace_period + 2))
                return pod
        if meta.get("finalizers"):
            return self.update(rtype, namespace, name, _mark_terminating(0))
        self._remove(rtype, cur, propagation)
        return copy.deepcopy(cur)

    def finish_pod_deletion(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Called by the kubelet once a terminating pod's containers have stopped."""
        cur = self._raw(self._rt("pods"), namespace, name)
        if cur is not None and (uid is None or cur["metadata"]["uid"] == uid):
            self._remove(self._rt("pods"), cur, "Background")

    async def _force_after(self, rtype, namespace, name, uid, seconds) -> None:
        await asyncio.sleep(seconds)
        cur = self._raw(rtype, namespace, name)
        if cur is not None and cur["metadata"]["uid"] == uid:
            self._remove(rtype, cur, "Background")

    def _remove(self, rtype: ResourceType, obj: dict, propagation: str) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if self._table(rtype).get(key) is None:
            return
        old = self._table(rtype).pop(key)
        self._applied.pop(old["metadata"].get("uid", ""), None)
        self._index_owners(rtype, old, add=False)
        self.rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(rtype, "DELETED", gone, None)
        if rtype.kind == "CustomResourceDefinition":
            self.registry.unregister_crd(old)
        self._collect_dependents(meta["uid"], propagation)

    def _collect_dependents(self, owner_uid: str, propagation: str) -> None:
        """ownerReferences garbage collection (Background/Foreground delete, Orphan strips the reference)."""
        for key, namespace, name in sorted(self._owned.pop(owner_uid, set())):
            rtype = next((rt for rt in self.registry.types() if rt.key == key), None)
            if rtype is None or self._raw(rtype, namespace, name) is None:
                continue
            if propagation == "Orphan":
                self.update(
                    rtype,
                    namespace,
                    name,
                    lambda o: o["metadata"].__setitem__(
                        "ownerReferences",
                        [r for r in o["metadata"]["ownerReferences"] if r.get("uid") != owner_uid],
                    ),
                )
            else:
                self.delete(rtype, namespace, name, propagation="Background")

    def delete_collection(
        self,
        rtype: ResourceType,
        namespace: str | None,
        *,
        label_selector_expr=None,
        field_selector_expr=None,
        grace_period=None,
        propagation=None,
    ) -> list[dict]:
        items, _, _ = self.list(
            rtype, namespace, label_selector_expr=label_selector_expr, field_selector_expr=field_selector_expr
        )
        return [
            self.delete(
                rtype,
                o["metadata"].get("namespace", ""),
                o["metadata"]["name"],
                grace_period=grace_period,
                propagation=propagation,
            )
            for o in items
        ]

    async def _terminate_namespace(self, name: str) -> None:
        """The namespace controller: delete everything inside, then the namespace itself."""
        loop = asyncio.get_running_loop()
        done_at = loop.time() + self.namespace_deletion_delay
        deadline = loop.time() + self.namespace_grace_timeout
        while True:
            left: dict[str, int] = {}
            finalizers: dict[str, int] = {}
            for rtype in self.registry.types():
                if not rtype.namespaced:
                    continue
                for (ns, obj_name), obj in list(self._table(rtype).items()):
                    if ns != name:
                        continue
                    if not obj["metadata"].get("deletionTimestamp"):
                        self.delete(rtype, ns, obj_name)
                    elif asyncio.get_running_loop().time() > deadline:
                        self._remove(rtype, obj, "Background")
                    obj = self._raw(rtype, ns, obj_name)
                    if obj is None:
                        continue
                    resource = f"{rtype.plural}.{rtype.group}"  # "pods." for the core group, as printed
                    left[resource] = left.get(resource, 0) + 1
                    for f in obj["metadata"].get("finalizers") or []:
                        finalizers[f] = finalizers.get(f, 0) + 1
            self._report_remaining(name, left, finalizers)
            if not left and loop.time() >= done_at:
                break
            await asyncio.sleep(0.05)
        ns_obj = self._raw(self._rt("namespaces"), "", name)
        if ns_obj is not None:
            self._remove(self._rt("namespaces"), ns_obj, "Background")

    def _report_remaining(self, name: str, left: dict[str, int], finalizers: dict[str, int]) -> None:
        """The namespace controller's status conditions while content remains (as a real one writes them)."""
        ns_rt = self._rt("namespaces")
        if self._raw(ns_rt, "", name) is None:
            return
        remaining = ", ".join(f"{key} has {n} resource instances" for key, n in sorted(left.items()))
        content = (
            (
                "NamespaceContentRemaining",
                "True",
                "SomeResourcesRemain",
                f"Some resources are remaining: {remaining}",
            )
            if left
            else ("NamespaceContentRemaining", "False", "ContentRemoved", "All content successfully removed")
        )
        wanted = [
            (
                "NamespaceDeletionDiscoveryFailure",
                "False",
                "ResourcesDiscovered",
                "All resources successfully discovered",
            ),
            (
                "NamespaceDeletionGroupVersionParsingFailure",
                "False",
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed",
            ),
            (
                "NamespaceDeletionContentFailure",
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization",
            ),
            content,
            (
                "NamespaceFinalizersRemaining",
                "True",
                "SomeFinalizersRemain",
                "Some content in the namespace has finalizers remaining: "
                + ", ".join(f"{f} in {n} resource instances" for f, n in sorted(finalizers.items())),
            )
            if finalizers
            else (
                "NamespaceFinalizersRemaining",
                "False",
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished",
            ),
        ]

        def mutate(obj):
            old = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
            conditions = []
            for ctype, status, reason, message in wanted:
                prev = old.get(ctype, {})
                since = prev.get("lastTransitionTime") if prev.get("status") == status else None
                conditions.append(
                    {
                        "type": ctype,
                        "status": status,
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": since or now_rfc3339(),
                    }
                )
            obj.setdefault("status", {})["conditions"] = conditions

        self.update(ns_rt, "", name, mutate)

    # -- events ---------------------------------------------------------------------------

    def record_event(
        self, involved: dict, reason: str, message: str, *, type: str = "Normal", component: str = "kubelet"
    ) -> dict | None:
        """Create a core/v1 Event about ``involved``, as kubelet and scheduler do."""
        meta = involved["metadata"]
        namespace = meta.get("namespace", "default")
        ns = self._raw(self._rt("namespaces"), "", namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return None
        stamp = now_rfc3339()
        # named as a real kubelet names events (<object>.<hex nanoseconds>): a list, sorted by
        # name, then shows each object's events in the order they happened (found by users)
        stamp_ns = max(time.time_ns(), self._last_event_ns + 1)
        self._last_event_ns = stamp_ns
        event = {
            "metadata": {"name": f"{meta['name']}.{stamp_ns:016x}", "namespace": namespace},
            "involvedObject": {
                "kind": involved.get("kind"),
                "apiVersion": involved.get("apiVersion"),
                "namespace": namespace,
                "name": meta["name"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": component, "host": NODE_NAME},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": NODE_NAME,
        }
        return self.create(self._rt("events"), namespace, event)


_WITH_SPEC = {"Namespace", "Pod", "PersistentVolumeClaim", "Service", "CustomResourceDefinition"}


def _drop_empty_maps(meta: dict) -> None:
    """Empty labels/annotations/finalizers are the same as none (the real server omits them)."""
    for key in ("labels", "annotations", "finalizers", "ownerReferences"):
        if key in meta and not meta[key]:
            del meta[key]


def _mark_terminating(grace: int, phase: bool = False):
    def mutate(obj):
        obj["metadata"]["deletionTimestamp"] = now_rfc3339(time.time() + grace)
        obj["metadata"]["deletionGracePeriodSeconds"] = grace
        if phase:
            obj.setdefault("status", {})["phase"] = "Terminating"

    return mutate


def _qos_class(spec: dict) -> str:
    containers = spec.get("containers", [])
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k) and (r.get("requests") or {}).get(k, r["limits"][k]) == r["limits"][k]
        for r in resources
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"
