"""Health of the parts: hub API, proxy, proxy routes (optional), Kubernetes API (optional), other services.

Each check returns a :class:`Check` and never raises.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import aiohttp

from ..common.hub import HubClient
from .probe import hub_message
from .status import CRITICAL, OK, UNKNOWN, WARNING, Check


class Checks:
    def __init__(
        self,
        hub: HubClient,
        public_url: str,
        *,
        self_name: str,
        proxy_routes: bool = False,
        kube_api: str = "off",
        services: list[str] | None = None,
        timeout: float = 10,
        clock: Callable[[], float] = time.time,
    ):
        self.hub, self.public_url, self.self_name = hub, public_url.rstrip("/"), self_name
        self.with_routes, self.kube_api, self.service_names = proxy_routes, kube_api, services
        self.timeout, self.clock = aiohttp.ClientTimeout(total=timeout), clock

    async def run(self) -> dict[str, Check]:
        names = (
            ["hub_api", "proxy"]
            + (["proxy_routes"] if self.with_routes else [])
            + (["kubernetes"] if self.kube_api != "off" else [])
            + ["services"]
        )
        results = await asyncio.gather(*(self._guarded(getattr(self, name)) for name in names))
        return dict(zip(names, results))

    async def _guarded(self, check) -> Check:
        try:
            async with asyncio.timeout(self.timeout.total):
                code, message = await check()
        except TimeoutError:
            code, message = CRITICAL, f"no answer in {self.timeout.total:g}s"
        except Exception as exc:
            code, message = CRITICAL, f"{type(exc).__name__}: {exc}"
        return Check(code, message, self.clock())

    async def hub_api(self) -> tuple[int, str]:
        t = time.monotonic()
        status, body = await self.hub.call("GET", "/")
        if status == 200 and isinstance(body, dict):
            return OK, f"JupyterHub {body.get('version')} answered in {time.monotonic() - t:.2f}s"
        return CRITICAL, f"GET /hub/api/ answered HTTP {status}: {hub_message(body)}"

    async def proxy(self) -> tuple[int, str]:
        """The proxy answers and routes to the hub (its public URL, as users reach it)."""
        url = f"{self.public_url}/hub/api/"
        async with self.hub.session.get(url, timeout=self.timeout, allow_redirects=False) as r:
            if r.status == 200:
                return OK, f"{url} answered through the proxy"
            return CRITICAL, f"{url} answered HTTP {r.status} through the proxy"

    async def proxy_routes(self) -> tuple[int, str]:
        """The hub's running servers against the proxy's routing table (needs the ``proxy`` scope)."""
        status, routes = await self.hub.call("GET", "/proxy")
        if status != 200:
            return UNKNOWN, f"cannot read the routing table: HTTP {status} {hub_message(routes)}"
        status, users = await self.hub.call("GET", "/users?state=ready")
        if status != 200:
            return UNKNOWN, f"cannot list running servers: HTTP {status} {hub_message(users)}"
        expected = {}
        for user in users:
            for name, srv in (user.get("servers") or {}).items():
                if srv.get("ready") and srv.get("url"):
                    expected[srv["url"].rstrip("/") + "/"] = f"{user['name']}/{name}"
        # path-based routespecs are "/user/alice/"; host-based ones "host/user/alice/"
        routed = {
            "/" + spec.split("/", 1)[-1] if not spec.startswith("/") else spec: r
            for spec, r in routes.items()
        }
        missing = sorted(who for url, who in expected.items() if url not in routed)
        stale = sorted(
            p for p, r in routed.items() if (r.get("data") or {}).get("user") and p not in expected
        )
        if missing:
            return CRITICAL, f"running servers without a proxy route: {', '.join(missing)}"
        if stale:
            return WARNING, f"proxy routes for servers the hub does not run: {', '.join(stale)}"
        return OK, f"{len(expected)} running server(s), all routed"

    async def kubernetes(self) -> tuple[int, str]:
        from kubernetes_asyncio import client, config

        api = client.ApiClient(await self._kube_config(config))
        try:
            info = await client.VersionApi(api).get_code()
        finally:
            await api.close()
        return OK, f"Kubernetes API {info.git_version} at {api.configuration.host}"

    async def _kube_config(self, config):
        from kubernetes_asyncio.client import Configuration

        conf = Configuration()
        if self.kube_api == "incluster":
            config.load_incluster_config(client_configuration=conf)
        elif self.kube_api.startswith(("http://", "https://")):
            conf.host = self.kube_api
        else:
            await config.load_kube_config(config_file=self.kube_api, client_configuration=conf)
        return conf

    async def services(self) -> tuple[int, str]:
        """Other hub services alive: a service with a URL answers HTTP, a managed one has a live process."""
        status, body = await self.hub.call("GET", "/services")
        if status != 200:
            return UNKNOWN, f"cannot list services: HTTP {status} {hub_message(body)}"
        found = {s["name"]: s for s in (body.values() if isinstance(body, dict) else body)}
        names = (
            self.service_names
            if self.service_names is not None
            else sorted(n for n in found if n != self.self_name)
        )
        bad, good = [], []
        for name in names:
            svc = found.get(name)
            problem = "not configured in the hub" if svc is None else await self._service_problem(svc)
            if problem is None:
                good.append(name)
            elif problem:
                bad.append(f"{name} {problem}")
        if bad:
            return CRITICAL, "; ".join(bad)
        return OK, f"alive: {', '.join(good)}" if good else "no other services to check"

    async def _service_problem(self, svc: dict) -> str | None:
        """None when alive, a message when not, "" when there is nothing to check (external, no URL)."""
        if svc.get("url"):
            url = svc["url"].rstrip("/") + (svc.get("prefix") or "/")
            try:
                async with self.hub.session.get(url, timeout=self.timeout, allow_redirects=False) as r:
                    return None if r.status < 500 else f"answered HTTP {r.status} at {url}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                return f"does not answer at {url}: {type(exc).__name__}"
        if svc.get("command"):
            pid = svc.get("pid") or 0
            if not pid:
                return "is not running (no process)"
            try:
                os.kill(pid, 0)  # managed services are the hub's children, on this host
            except ProcessLookupError:
                return f"process {pid} is gone"
            except PermissionError:
                pass
            return None
        return ""
