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
import re
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.rest import RESTResponse
from yarl import URL

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


#: The API clients' HTTP sessions already checked by :func:`skip_env_lookups`.
_CHECKED_SESSIONS: weakref.WeakSet = weakref.WeakSet()


def env_lookups_matter(url: str) -> bool:
    """True when the environment changes how a request to ``url`` is made: a proxy for it
    (``HTTPS_PROXY`` and the like, not bypassed by ``NO_PROXY``) or ``.netrc`` credentials for
    its host. What aiohttp looks up, with ``trust_env``, before every request."""
    from aiohttp.helpers import basicauth_from_netrc, get_env_proxy_for_url, netrc_from_env

    target = URL(url)
    try:
        get_env_proxy_for_url(target)
        return True
    except LookupError:
        pass
    netrc_obj = netrc_from_env()
    if netrc_obj is None or target.host is None:
        return False
    try:
        basicauth_from_netrc(netrc_obj, target.host)
        return True
    except LookupError:
        return False


def skip_env_lookups(api_client: ApiClient) -> bool:
    """Stop the API client's HTTP session from looking up proxies and ``.netrc`` before each
    request when, for the API server's URL, there is nothing to find; True when it stopped.

    kubernetes_asyncio opens its session with ``trust_env=True``, so aiohttp reads the
    proxy variables and the ``.netrc`` file in the default thread pool before *every*
    request: two hops to a thread and back on the hub's loop (and a thread taking the GIL
    from it) per request, answered the same way each time. Checked once per session, at
    the hub's start; an environment with a proxy or ``.netrc`` entry for the API server
    keeps aiohttp's behaviour as it is.
    """
    session = getattr(getattr(api_client, "rest_client", None), "pool_manager", None)
    if session is None or session in _CHECKED_SESSIONS:
        return False
    _CHECKED_SESSIONS.add(session)
    if not getattr(session, "_trust_env", False) or env_lookups_matter(api_client.configuration.host):
        return False
    session._trust_env = False
    return True


_CHARSET = re.compile(r"charset=([a-zA-Z\-\d]+)[\s;]?")


def _charset(content_type: str | None) -> str:
    match = _CHARSET.search(content_type or "")
    return match.group(1) if match else "utf-8"


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
        answer = await asyncio.wait_for(
            self._request(method, path, list(query or []), body, content_type, timeout), timeout
        )
        # ... and what the caller does with the answer, up to its next wait, takes a turn too:
        # a hundred answers arriving together do not all run on in one loop iteration.
        await take_turn()
        return answer

    async def _request(
        self, method: str, path: str, query: list, body: Any, content_type: str, timeout: float
    ) -> Any:
        """The request ``ApiClient.call_api`` would make, with less work on the hub's loop.

        The same headers (the client's defaults, the bearer token as its configuration gives
        it, refreshed when it says so), URL, JSON body and errors (``ApiException`` with the
        decoded body). What it skips is the generic machinery built for typed models: a
        recursive copy of every header, query parameter and body (``sanitize_for_serialization``,
        hundreds of calls for a pod) before ``json.dumps`` walks it again. Here ``json.dumps``
        walks the body once and hands the models it meets (KubeSpawner's ``V1Pod``,
        ``V1DeleteOptions``) to the client's serialiser.
        """
        client = self.api_client
        headers = {"Accept": "application/json", "Content-Type": content_type, **client.default_headers}
        if client.cookie:
            headers["Cookie"] = client.cookie
        await client.update_params_for_auth(headers, query, ["BearerToken"])
        url = client.configuration.host + path
        if query:
            url += "?" + urlencode(query)
        rest = client.rest_client
        args: dict[str, Any] = {
            "method": method,
            "url": url,
            "timeout": aiohttp.ClientTimeout(total=timeout),
            "headers": headers,
        }
        if body is not None:
            args["data"] = json.dumps(body, default=client.sanitize_for_serialization)
        if rest.proxy:
            args["proxy"] = rest.proxy
        if rest.proxy_headers:
            args["proxy_headers"] = rest.proxy_headers
        if rest.server_hostname:
            args["server_hostname"] = rest.server_hostname
        response = await rest.pool_manager.request(**args)
        data = await response.read()
        if not 200 <= response.status <= 299:
            exc = ApiException(http_resp=RESTResponse(response, data))
            exc.body = data.decode("utf-8")
            raise exc
        text = data.decode(_charset(response.headers.get("Content-Type")))
        try:
            return json.loads(text)
        except ValueError:
            return text

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
