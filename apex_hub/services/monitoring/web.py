"""The service's pages under its prefix (``/services/<name>/``), served with tornado.

- ``/``            HTML status page (the last probes with phase timings and messages);
- ``status.json``  the JSON status with Nagios codes;
- ``metrics``      Prometheus text format; with a metrics token, only with ``Authorization: Bearer <token>``;
- ``health``       200 while the process serves (liveness; says nothing about the platform).

With ``page_auth="hub"`` the page and ``status.json`` need a hub login (OAuth) or a hub token with
``access:services!service=<name>``; ``metrics`` and ``health`` never use hub auth.
"""

from __future__ import annotations

import hmac
import json
import os
from functools import lru_cache

import jinja2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado import web

from .service import MonitoringService
from .status import PHASES

COLOURS = {"OK": "#1b7f3b", "WARNING": "#b26a00", "CRITICAL": "#b3261e", "UNKNOWN": "#5f6368"}


class _Base(web.RequestHandler):
    def initialize(self, service: MonitoringService, metrics_token: str = "", page_auth: bool = False):
        self.service, self.metrics_token, self.page_auth = service, metrics_token, page_auth

    def set_default_headers(self):
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def _allowed(self) -> bool:
        """False (after answering) when hub auth is on and the request has no hub identity."""
        if not self.page_auth or self.current_user:
            return True
        if self.request.path.endswith(".json"):
            raise web.HTTPError(403, "hub login or token with access:services needed")
        self.redirect(self.get_login_url())
        return False


class Health(_Base):
    def get(self):
        self.write({"status": "serving"})


class Metrics(_Base):
    def get(self):
        if self.metrics_token:
            given = self.request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.metrics_token}".encode()):
                self.set_header("WWW-Authenticate", 'Bearer realm="apex-monitoring metrics"')
                raise web.HTTPError(401)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.service.metrics.registry))


class StatusJSON(_Base):
    def get(self):
        if self._allowed():
            self.set_header("Content-Type", "application/json")
            self.write(json.dumps(self.service.status(), indent=1))


class StatusPage(_Base):
    def get(self):
        if self._allowed():
            self.write(render(self.service.status()))


@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    """The page templates, shipped in the package (``templates/``), HTML-escaped by default."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("apex_hub.services.monitoring", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )


def render(st: dict) -> str:
    """The HTML page for humans (no script; it reloads itself every 30 s): ``templates/status.html``."""
    return (
        _templates()
        .get_template("status.html")
        .render(st=st, probe=st["probe"], phases=PHASES, colours=COLOURS)
    )


def make_app(service: MonitoringService, prefix: str, *, metrics_token: str = "", page_auth: bool = False):
    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    kw = {"service": service, "metrics_token": metrics_token, "page_auth": page_auth}
    page, status = StatusPage, StatusJSON
    extra = []
    if page_auth:
        from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated

        page = type("StatusPage", (HubOAuthenticated, StatusPage), {})
        status = type("StatusJSON", (HubOAuthenticated, StatusJSON), {})
        extra = [(prefix + "oauth_callback", HubOAuthCallbackHandler)]
    if prefix != "/":
        extra.append((prefix.rstrip("/"), web.RedirectHandler, {"url": prefix}))
    return web.Application(
        [
            (prefix, page, kw),
            (prefix + "status.json", status, kw),
            (prefix + "metrics", Metrics, kw),
            (prefix + "health", Health, kw),
            *extra,
        ],
        cookie_secret=os.urandom(32),
    )
