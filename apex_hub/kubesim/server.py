"""The HTTP face of kubesim: Kubernetes REST paths, watch streams, discovery, Table output.

Clients (kubernetes_asyncio, kubectl, KubeSpawner) talk to it exactly as to a real API
server on plain HTTP. Admin endpoints under ``/kubesim/`` change faults and latency at
run time and return the request log, so a kubesim in another process can be steered too.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import time

import yaml
from aiohttp import web

from . import errors
from .errors import ApiError
from .faults import Fault, Faults, RequestRecord, now
from .patch import APPLY_PATCH
from .podio import PodIO
from .store import Store

log = logging.getLogger("apex_hub.kubesim")

KUBE_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-kubesim",
    "gitCommit": "kubesim",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22",
    "compiler": "gc",
    "platform": "linux/amd64",
}
TRUE = ("true", "True", "1")


def _json(body, status=200, headers=None) -> web.Response:
    return web.Response(
        text=json.dumps(body), status=status, content_type="application/json", headers=headers
    )


class Route:
    """A parsed resource path: ``/api/v1/namespaces/ns/pods/name/status`` and the like."""

    def __init__(self, rtype, namespace, name, subresource):
        self.rtype, self.namespace, self.name, self.subresource = rtype, namespace, name, subresource

    @property
    def resource(self) -> str:
        return self.rtype.plural + (f"/{self.subresource}" if self.subresource else "")


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ApiServer:
    """aiohttp application serving a :class:`Store`."""

    def __init__(
        self, store: Store, faults: Faults, *, bookmark_interval: float = 60.0, pod_logs=None, kubelet=None
    ):
        self.store = store
        self.faults = faults
        self.bookmark_interval = bookmark_interval
        self.pod_logs = pod_logs  # callable(namespace, name) -> str, set by the process kubelet
        # pods/log follow and pods/exec need the kubelet itself: KubeSim sets it when it starts one
        self.kubelet = kubelet
        self.podio = PodIO(store, lambda: self.kubelet)
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/kubesim/{what}", self.admin)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    # -- routing --------------------------------------------------------------------------

    def _route(self, parts: list[str]) -> tuple[str, str, list[str]] | None:
        if parts[:1] == ["api"] and len(parts) >= 2:
            return "", parts[1], parts[2:]
        if parts[:1] == ["apis"] and len(parts) >= 3:
            return parts[1], parts[2], parts[3:]
        return None

    def _resolve(self, group: str, version: str, rest: list[str]) -> Route:
        reg = self.store.registry
        if len(rest) >= 3 and rest[0] == "namespaces":
            rtype = reg.get(group, version, rest[2])
            if rtype is not None and rtype.namespaced:
                if len(rest) > 5:
                    raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
                return Route(
                    rtype, rest[1], rest[3] if len(rest) > 3 else None, rest[4] if len(rest) > 4 else None
                )
        rtype = reg.get(group, version, rest[0]) if rest else None
        if rtype is None or len(rest) > 3:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        return Route(rtype, None, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None)

    def _discovery(self, parts: list[str]):
        reg = self.store.registry
        if parts == ["version"]:
            return KUBE_VERSION
        if parts == ["api"]:
            return reg.api_versions()
        if parts == ["apis"]:
            return reg.api_group_list()
        if len(parts) == 2 and parts[0] == "api":
            return reg.resource_list("", parts[1])
        if len(parts) == 2 and parts[0] == "apis":
            return reg.api_group(parts[1])
        if len(parts) == 3 and parts[0] == "apis":
            return reg.resource_list(parts[1], parts[2])
        if parts == ["openapi", "v3"]:
            return reg.openapi_v3_index()
        if parts[:2] == ["openapi", "v3"] and len(parts) in (4, 5):
            return reg.openapi_v3_doc(parts[3] if parts[2] == "apis" else "", parts[-1])
        if parts in (["healthz"], ["livez"], ["readyz"]):
            return "ok"
        return None

    # -- request handling -----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        rec = RequestRecord(request.method, request.path, "", "", None, None, started=now())
        try:
            if request.method == "GET" and (doc := self._discovery(parts)) is not None:
                rec.verb, rec.resource = "discovery", "/" + "/".join(parts)
                return await self._finish(rec, web.Response(text=doc) if isinstance(doc, str) else _json(doc))
            gv = self._route(parts)
            if gv is None:
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            route = self._resolve(*gv)
            rec.verb = self._verb(request, route)
            rec.resource, rec.namespace, rec.name = route.resource, route.namespace, route.name
            delay = self.faults.delay_for(rec)
            if delay:
                await asyncio.sleep(delay)
            if self.faults.holds:
                await self.faults.wait_holds(rec)
            fault = self.faults.pick(rec)
            status = fault.next_status() if fault is not None else None
            if status == 0:
                rec.fault = True
                request.transport.abort()  # the client sees the connection closed with no response
                return await self._finish(rec, web.Response(status=499), status=0)
            if status is not None:
                rec.fault = True
                raise self._fault_error(status, fault)
            if rec.verb == "watch":
                return await self._watch(request, route, rec)
            resp = await self._dispatch(request, route, rec.verb)
            if fault is not None and fault.delay:
                # A slow response: the work is done (as a real server finishes it even when
                # the client has given up), the answer comes late.
                rec.fault = True
                await self._finish(rec, resp)
                await asyncio.sleep(fault.delay)
                return resp
            return await self._finish(rec, resp)
        except ApiError as e:
            headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
            return await self._finish(rec, _json(e.status(), e.code, headers))

    async def _finish(self, rec: RequestRecord, resp: web.StreamResponse, status: int | None = None):
        rec.status = resp.status if status is None else status
        rec.duration = now() - rec.started
        self.faults.record(rec)
        return resp

    def _fault_error(self, status: int, fault: Fault) -> ApiError:
        reason = {
            409: "Conflict",
            429: "TooManyRequests",
            500: "InternalError",
            503: "ServiceUnavailable",
            504: "Timeout",
            403: "Forbidden",
            404: "NotFound",
            410: "Expired",
        }.get(status, "InternalError")
        msg = fault.message or f"kubesim: injected {status} {reason}"
        retry = fault.retry_after if fault.retry_after is not None else (1 if status == 429 else None)
        return ApiError(
            status, reason, msg, details={"retryAfterSeconds": retry} if retry else None, retry_after=retry
        )

    @staticmethod
    def _verb(request: web.Request, route: Route) -> str:
        m = request.method
        if m == "GET":
            if request.query.get("watch") in TRUE:
                return "watch"
            return "get" if route.name else "list"
        if m == "POST":
            return "create"
        if m == "PUT":
            return "update"
        if m == "PATCH":
            return "patch"
        if m == "DELETE":
            return "delete" if route.name else "deletecollection"
        raise errors.method_not_allowed()

    async def _body(self, request: web.Request):
        raw = await request.read()
        if not raw:
            return None
        try:
            if "yaml" in (request.content_type or ""):
                try:  # clients send JSON (a subset of YAML) as apply bodies: 100x faster to parse
                    return json.loads(raw)
                except ValueError:
                    return yaml.load(raw, Loader=_YAML_LOADER)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise errors.bad_request(f"the body of the request could not be decoded: {e}") from None

    async def _dispatch(self, request: web.Request, route: Route, verb: str) -> web.StreamResponse:
        q = request.query
        st, rt = self.store, route.rtype
        ns = route.namespace or ""
        dry_run = q.get("dryRun") == "All"
        if route.subresource and route.subresource not in ("status", "log", "binding", "exec"):
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if route.subresource == "binding":
            return _json(self._bind(rt, ns, route.name, await self._body(request)), 201)
        if route.subresource == "exec":
            return await self.podio.exec(request, rt, ns, route.name)
        if route.subresource == "log":
            if verb != "get":
                raise errors.method_not_allowed()
            return await self.podio.log(request, rt, ns, route.name, self.pod_logs)
        if verb == "get":
            obj = st.get(rt, ns, route.name)
            if _wants_table(request):
                return _json(_table(rt, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}))
            return _json(obj)
        if verb == "list":
            limit = int(q["limit"]) if q.get("limit", "").isdigit() and int(q["limit"]) > 0 else None
            items, rv, cont = st.list(
                rt,
                route.namespace,
                label_selector_expr=q.get("labelSelector"),
                field_selector_expr=q.get("fieldSelector"),
                limit=limit,
                continue_token=q.get("continue"),
            )
            meta = {"resourceVersion": rv}
            if cont:
                meta["continue"] = cont
            if _wants_table(request):
                return _json(_table(rt, items, meta))
            return _json(
                {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": items}
            )
        body = await self._body(request)
        if verb == "create":
            if route.name:
                raise errors.method_not_allowed()
            obj = st.create(rt, ns, body, dry_run=dry_run)
            return _json(obj, 201)
        if verb == "update":
            return _json(st.replace(rt, ns, route.name, body, subresource=route.subresource, dry_run=dry_run))
        if verb == "patch":
            content_type = request.headers.get("Content-Type", "")
            # found against the real API server: an apply that creates answers 201 (and is
            # authorised as "create" there), one that updates 200
            creates = (
                content_type.split(";")[0].strip() == APPLY_PATCH and st._raw(rt, ns, route.name) is None
            )
            return _json(
                st.patch(
                    rt,
                    ns,
                    route.name,
                    content_type,
                    body,
                    subresource=route.subresource,
                    dry_run=dry_run,
                    field_manager=q.get("fieldManager"),
                    force=q.get("force") in TRUE,
                ),
                201 if creates else 200,
            )
        opts = body if isinstance(body, dict) else {}
        grace = q.get("gracePeriodSeconds", opts.get("gracePeriodSeconds"))
        grace = int(grace) if grace is not None else None
        propagation = q.get("propagationPolicy", opts.get("propagationPolicy"))
        if opts.get("orphanDependents") is True or q.get("orphanDependents") in TRUE:
            propagation = "Orphan"
        if verb == "delete":
            dry_run = dry_run or opts.get("dryRun") == ["All"]
            return _json(
                st.delete(
                    rt,
                    ns,
                    route.name,
                    grace_period=grace,
                    propagation=propagation,
                    preconditions=opts.get("preconditions"),
                    dry_run=dry_run,
                )
            )
        items = st.delete_collection(
            rt,
            route.namespace,
            label_selector_expr=q.get("labelSelector"),
            field_selector_expr=q.get("fieldSelector"),
            grace_period=grace,
            propagation=propagation,
        )
        return _json(
            {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(st.rv)},
                "items": items,
            }
        )

    def _bind(self, rtype, namespace: str, name: str, body) -> dict:
        """``POST pods/<name>/binding``: what a scheduler does (kubesim's node in node.py uses it)."""
        if rtype.kind != "Pod":
            raise errors.method_not_allowed()
        target = ((body or {}).get("target") or {}).get("name")
        if not target:
            raise ApiError(422, "Invalid", f'Binding.core "{name}" is invalid: target.name: Required value')

        def bind(pod):
            current = pod.setdefault("spec", {}).get("nodeName")
            if current:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on pods/binding "{name}": pod '
                    f'{name} is already assigned to node "{current}"',
                )
            pod["spec"]["nodeName"] = target

        self.store.update(rtype, namespace, name, bind)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    async def _watch(self, request: web.Request, route: Route, rec: RequestRecord) -> web.StreamResponse:
        q = request.query
        labels, fields = q.get("labelSelector"), q.get("fieldSelector")
        if route.name:
            fields = ",".join(f for f in (fields, f"metadata.name={route.name}") if f)
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        )
        try:
            watcher = self.store.watch(
                route.rtype,
                route.namespace,
                label_selector_expr=labels,
                field_selector_expr=fields,
                resource_version=q.get("resourceVersion"),
            )
        except ApiError as e:
            if e.code != 410:
                raise
            await resp.prepare(request)
            await resp.write(json.dumps({"type": "ERROR", "object": e.status()}).encode() + b"\n")
            await resp.write_eof()
            return await self._finish(rec, resp)
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        bookmarks = q.get("allowWatchBookmarks") in TRUE
        deadline = time.monotonic() + timeout if timeout else None
        await resp.prepare(request)
        rec.status = 200
        self.faults.record(rec)  # logged when it opens; the duration is filled in when it ends
        try:
            while True:
                wait = self.bookmark_interval if bookmarks else None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wait = min(wait, left) if wait else left
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if bookmarks and (deadline is None or deadline - time.monotonic() > 0):
                        await resp.write(
                            json.dumps(
                                {
                                    "type": "BOOKMARK",
                                    "object": {
                                        "kind": route.rtype.kind,
                                        "apiVersion": route.rtype.api_version,
                                        "metadata": {"resourceVersion": str(self.store.rv)},
                                    },
                                }
                            ).encode()
                            + b"\n"
                        )
                    continue
                if item is None:
                    if getattr(watcher, "abrupt", False):
                        request.transport.abort()
                        return resp
                    break
                etype, obj = item
                await resp.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(watcher)
            rec.duration = now() - rec.started
        return resp

    def drop_watches(self, resource: str | None = None, abrupt: bool = False) -> int:
        """End open watch streams (as an API server restart or a load balancer would)."""
        n = 0
        for w in self.store.watchers():
            if resource is None or w.rtype.plural == resource:
                w.abrupt = abrupt
                w.close()
                n += 1
        return n

    # -- run-time control -----------------------------------------------------------------

    async def admin(self, request: web.Request) -> web.Response:
        what = request.match_info["what"]
        if what == "log" and request.method == "GET":
            return _json([r.to_dict() for r in self.faults.log])
        if what == "log" and request.method == "DELETE":
            self.faults.reset_log()
            return _json({})
        if what == "counts":
            return _json(dict(self.faults.counts()))
        if what == "faults" and request.method == "POST":
            body = await request.json()
            for f in body if isinstance(body, list) else [body]:
                self.faults.add(Fault.from_dict(f))
            return _json({"faults": len(self.faults.rules)})
        if what == "faults" and request.method == "DELETE":
            self.faults.clear()
            return _json({})
        if what == "latency" and request.method in ("POST", "PUT"):
            body = await request.json()
            self.faults.latency = float(body.get("seconds", 0))
            self.faults.latency_by_verb = {k: float(v) for k, v in (body.get("by_verb") or {}).items()}
            return _json({"seconds": self.faults.latency})
        if what == "drop-watches" and request.method == "POST":
            body = await request.json() if request.can_read_body else {}
            return _json({"dropped": self.drop_watches(body.get("resource"), bool(body.get("abrupt")))})
        if what == "compact" and request.method == "POST":
            self.store.compact()
            return _json({"compacted": self.store.rv})
        raise web.HTTPNotFound()


def _wants_table(request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _age(stamp: str | None) -> str:
    if not stamp:
        return ""
    secs = max(0, int(time.time() - calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def _column(name: str, priority: int = 0, fmt: str = "") -> dict:
    return {"name": name, "type": "string", "format": fmt, "description": name, "priority": priority}


def _pod_cells(o) -> list:
    cs = o.get("status", {}).get("containerStatuses") or []
    ready = sum(1 for c in cs if c.get("ready"))
    status = "Terminating" if o["metadata"].get("deletionTimestamp") else o.get("status", {}).get("phase", "")
    return [
        f"{ready}/{len(o.get('spec', {}).get('containers', []))}",
        status,
        sum(c.get("restartCount", 0) for c in cs),
    ]


_ACCESS_MODES = {
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}


def _pvc_cells(o) -> list:
    spec, status = o.get("spec", {}), o.get("status", {})
    bound = status.get("phase") == "Bound"
    return [
        status.get("phase", ""),
        spec.get("volumeName", "") if bound else "",
        (status.get("capacity") or {}).get("storage", "") if bound else "",
        ",".join(_ACCESS_MODES.get(m, m) for m in status.get("accessModes") or []) if bound else "",
        spec.get("storageClassName", ""),
        spec.get("volumeAttributesClassName") or "<unset>",
    ]


def _data_count(o) -> int:
    return len(o.get("data") or {}) + len(o.get("binaryData") or {})


# kind -> (columns after Name, their cells): the columns a real API server's table printer sends,
# so that ``kubectl get`` prints what it prints against a cluster (found by local mode users)
_COLUMNS = {
    "Pod": ([_column(n) for n in ("Ready", "Status", "Restarts")], _pod_cells),
    "Namespace": ([_column("Status")], lambda o: [o.get("status", {}).get("phase", "")]),
    "PersistentVolumeClaim": (
        [
            _column(n)
            for n in ("Status", "Volume", "Capacity", "Access Modes", "StorageClass", "VolumeAttributesClass")
        ],
        _pvc_cells,
    ),
    "ConfigMap": ([_column("Data")], lambda o: [_data_count(o)]),
    "Secret": ([_column("Type"), _column("Data")], lambda o: [o.get("type", ""), _data_count(o)]),
}


def _event_row(o) -> list:
    inv, src = o.get("involvedObject") or {}, o.get("source") or {}
    return [
        _age(o.get("lastTimestamp") or o.get("firstTimestamp")),
        o.get("type", ""),
        o.get("reason", ""),
        f"{(inv.get('kind') or '').lower()}/{inv.get('name', '')}",
        inv.get("fieldPath", ""),
        ", ".join(x for x in (src.get("component"), src.get("host")) if x),
        o.get("message", ""),
        _age(o.get("firstTimestamp")),
        o.get("count", 1),
        o["metadata"]["name"],
    ]


_EVENT_COLUMNS = [
    _column("Last Seen"),
    _column("Type"),
    _column("Reason"),
    _column("Object"),
    _column("Subobject", 1),
    _column("Source", 1),
    _column("Message"),
    _column("First Seen", 1),
    _column("Count", 1),
    _column("Name", 1, "name"),
]


def _table(rtype, items, meta) -> dict:
    """A meta.k8s.io Table, which kubectl asks for to print ``kubectl get`` columns."""
    if rtype.kind == "Event":
        columns, cells = _EVENT_COLUMNS, _event_row
    else:
        extra, extra_cells = _COLUMNS.get(rtype.kind, ([], lambda o: []))
        columns = [_column("Name", fmt="name"), *extra, _column("Age")]

        def cells(o):
            return [o["metadata"]["name"], *extra_cells(o), _age(o["metadata"].get("creationTimestamp"))]

    rows = [
        {
            "cells": cells(o),
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            },
        }
        for o in items
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    }
