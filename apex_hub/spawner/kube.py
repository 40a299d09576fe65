"""Kubernetes I/O for workspaces: server-side apply, deletion by label, retries.

Why one small generic layer instead of the typed client methods: a workspace is
a list of manifests of many kinds (ConfigMaps, Roles, NetworkPolicies, operator
manifests); each is written with **server-side apply** (one ``PATCH`` that
creates the object or updates the fields we own, so configuration changes reach
existing objects in one round trip and no 409 can occur), and every call is
retried on the transient failures of a busy API server (429 with
``Retry-After``, 5xx, timeouts, dropped connections) until a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from .lean import take_turn

FIELD_MANAGER = "apex-hub"
#: HTTP statuses worth another try: throttling and server-side trouble.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})

T = TypeVar("T")


class KubeError(RuntimeError):
    """A Kubernetes call failed for good; the message says what, where and why."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ResourceType:
    """Where a kind lives in the API: ``/api/v1`` or ``/apis/<group>/<version>``."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def base(self) -> str:
        return f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        path = self.base
        if self.namespaced and namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{self.plural}"
        return f"{path}/{name}" if name else path


_KNOWN = [
    ResourceType("v1", "Namespace", "namespaces", False),
    ResourceType("v1", "ConfigMap", "configmaps"),
    ResourceType("v1", "Secret", "secrets"),
    ResourceType("v1", "ServiceAccount", "serviceaccounts"),
    ResourceType("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ResourceType("v1", "ResourceQuota", "resourcequotas"),
    ResourceType("v1", "LimitRange", "limitranges"),
    ResourceType("v1", "Service", "services"),
    ResourceType("v1", "Pod", "pods"),
    ResourceType("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ResourceType("networking.k8s.io/v1", "Ingress", "ingresses"),
    ResourceType("rbac.authorization.k8s.io/v1", "Role", "roles"),
    ResourceType("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    ResourceType("apps/v1", "Deployment", "deployments"),
    ResourceType("batch/v1", "Job", "jobs"),
    ResourceType("batch/v1", "CronJob", "cronjobs"),
]
KNOWN_TYPES = {(t.api_version, t.kind): t for t in _KNOWN}


#: How the API server words its refusal to write into a namespace being deleted (403).
NAMESPACE_TERMINATING = "because it is being terminated"


def is_namespace_terminating(exc: BaseException) -> bool:
    """True for the 403 of a write into a namespace that is still being deleted."""
    return isinstance(exc, ApiException) and exc.status == 403 and NAMESPACE_TERMINATING in describe(exc)


def terminating(obj: dict | None) -> bool:
    """True when ``obj`` (a Namespace, a claim) is being deleted."""
    return bool(obj) and (
        (obj.get("status") or {}).get("phase") == "Terminating"
        or bool((obj.get("metadata") or {}).get("deletionTimestamp"))
    )


def retry_after(exc: ApiException) -> float | None:
    """The ``Retry-After`` seconds of a 429/503, if the server sent one."""
    headers = getattr(exc, "headers", None) or {}
    try:
        return float(headers.get("Retry-After"))
    except (TypeError, ValueError):
        return None


def describe(exc: BaseException) -> str:
    """A one-line reason from an API error (the Status message), a timeout or a socket error."""
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body).get("message")
        except (TypeError, ValueError, AttributeError):
            message = None
        return f"{exc.status} {message or exc.reason}"
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """True for failures that another try may cure."""
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUSES or exc.status == 0
    return isinstance(exc, asyncio.TimeoutError | aiohttp.ClientError | ConnectionError)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    budget: float,
    log: logging.Logger,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
) -> T:
    """``await call()`` until it succeeds, retrying transient failures for ``budget`` s.

    Backoff is exponential with full jitter; a ``Retry-After`` is honoured. A
    permanent error (403, 404, 422, ...) is raised at once; at the deadline the
    last transient error becomes a ``KubeError`` that names ``what``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            wait = retry_after(exc) if isinstance(exc, ApiException) else None
            wait = wait if wait is not None else random.uniform(0, delay)
            if loop.time() + wait > deadline:
                raise KubeError(
                    f"Kubernetes kept failing to {what} for {budget:g} s"
                    f" ({attempt} attempts; last: {describe(exc)})",
                    getattr(exc, "status", None),
                ) from exc
            log.warning("%s failed (%s); retrying in %.2f s", what, describe(exc), wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, max_delay)


class Kube:
    """Generic, retried Kubernetes calls over a kubernetes_asyncio ``ApiClient``."""

    def __init__(
        self,
        api_client: ApiClient,
        log: logging.Logger,
        *,
        request_timeout: float = 10,
        retry_timeout: float = 60,
    ):
        self.api_client = api_client
        self.log = log
        self.request_timeout = request_timeout
        self.retry_timeout = retry_timeout
        self._types = dict(KNOWN_TYPES)

    # -- discovery ------------------------------------------------------------------------

    async def resource_type(self, api_version: str, kind: str) -> ResourceType:
        """The REST location of ``kind``; unknown kinds (CRDs) are looked up once by discovery."""
        key = (api_version, kind)
        if key not in self._types:
            base = ResourceType(api_version, kind, "-").base
            found = await self._call("GET", base, what=f"discover {api_version}")
            for res in found.get("resources", []):
                if res.get("kind") == kind and "/" not in res.get("name", ""):
                    self._types[key] = ResourceType(
                        api_version, kind, res["name"], bool(res.get("namespaced"))
                    )
                    break
            else:
                raise KubeError(f"the cluster does not serve {kind} in {api_version}", 404)
        return self._types[key]

    # -- calls ----------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query=None,
        body=None,
        content_type: str = "application/json",
    ) -> Any:
        async def once():
            return await self.send_once(method, path, query=query, body=body, content_type=content_type)

        return await with_retries(once, what, budget=self.retry_timeout, log=self.log)

    async def send_once(
        self,
        method: str,
        path: str,
        *,
        query=None,
        body=None,
        content_type: str = "application/json",
        seconds: float | None = None,
    ) -> Any:
        """One request, no retry; the answer as plain JSON (never a typed model: building a
        ``V1Pod`` from a response costs milliseconds of the event loop that nobody reads).

        Raises ``ApiException`` for an error status and ``TimeoutError`` after ``seconds``
        (default ``request_timeout``).
        """
        timeout = seconds or self.request_timeout
        await take_turn()  # many requests at once: they go out in turns, not in one burst
        return await asyncio.wait_for(
            self.api_client.call_api(
                path,
                method,
                query_params=list(query or []),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=True,
                _request_timeout=timeout,
            ),
            timeout,
        )

    async def apply(self, obj: dict, namespace: str | None = None) -> dict:
        """Create or update ``obj`` with server-side apply (we own the fields we set)."""
        rtype = await self.resource_type(obj["apiVersion"], obj["kind"])
        name = obj["metadata"]["name"]
        ns = (namespace or obj["metadata"].get("namespace")) if rtype.namespaced else None
        what = f"apply {obj['kind']} {ns + '/' if ns else ''}{name}"
        return await self._call(
            "PATCH",
            rtype.path(ns, name),
            what=what,
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    async def create_if_absent(self, obj: dict, namespace: str | None = None) -> bool:
        """Create ``obj`` unless an object of that name exists; True when it was created.

        For objects whose spec Kubernetes will not change later (PersistentVolumeClaims):
        an existing claim is left exactly as it is.
        """
        rtype = await self.resource_type(obj["apiVersion"], obj["kind"])
        ns = (namespace or obj["metadata"].get("namespace")) if rtype.namespaced else None
        try:
            await self._call(
                "POST", rtype.path(ns), body=obj, what=f"create {obj['kind']} {obj['metadata']['name']}"
            )
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    async def read(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The object, or None when it does not exist."""
        rtype = await self.resource_type(api_version, kind)
        try:
            return await self._call("GET", rtype.path(namespace, name), what=f"read {kind} {name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        propagation: str = "Background",
    ) -> bool:
        """Delete one object; False when it was already gone."""
        rtype = await self.resource_type(api_version, kind)
        try:
            await self._call(
                "DELETE",
                rtype.path(namespace, name),
                what=f"delete {kind} {name}",
                body={"propagationPolicy": propagation},
            )
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    async def delete_collection(self, api_version: str, kind: str, namespace: str, selector: str) -> None:
        """Delete every ``kind`` in ``namespace`` matching the label ``selector``."""
        rtype = await self.resource_type(api_version, kind)
        try:
            await self._call(
                "DELETE",
                rtype.path(namespace),
                query=[("labelSelector", selector)],
                what=f"delete {rtype.plural} in {namespace} with {selector}",
                body={"propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status != 404:  # the namespace (or the kind) is gone: nothing left
                raise
