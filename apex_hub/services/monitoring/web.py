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
from html import escape

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


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{COLOURS[status]}">{escape(status)}</span>'


def render(st: dict) -> str:
    """The HTML page for humans (no script; it reloads itself every 30 s)."""
    probe = st["probe"]
    comp_rows = (
        "".join(
            f'<tr data-component="{escape(n)}"><td>{escape(n)}</td><td>{_badge(c["status"])}</td>'
            f"<td>{escape(c['message'])}</td><td>{escape(c['checked_at'] or '')}</td></tr>"
            for n, c in st["components"].items()
        )
        or '<tr><td colspan="4">not checked yet</td></tr>'
    )
    head = "".join(f"<th>{escape(p.replace('_', ' '))}</th>" for p in PHASES)
    rows = []
    for r in st["history"]:
        cells = "".join(
            f'<td class="num">{r["phases"][p]:.2f}s</td>'
            if p in r["phases"]
            else ('<td class="failed">failed</td>' if p == r["failed_phase"] else "<td>–</td>")
            for p in PHASES
        )
        rows.append(
            f'<tr class="probe" data-id="{r["id"]}"><td>{r["id"]}</td>'
            f"<td>{escape(r['started_at'] or '')}</td><td>{_badge(r['status'])}</td>{cells}"
            f'<td class="msg">{escape(r["message"])}</td></tr>'
        )
    history = "".join(rows) or f'<tr><td colspan="{len(PHASES) + 4}">no probe yet</td></tr>'
    running = probe.get("running")
    now_line = (
        f"probe {running['id']} running since {escape(running['started_at'])}"
        if running
        else ("paused (pause file present)" if probe["paused"] else "idle")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<title>{escape(st["service"])}: {escape(st["status"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #202124; }}
.badge {{ color: #fff; padding: .15rem .5rem; border-radius: .3rem; font-weight: 600; font-size: .85rem; }}
.overall .badge {{ font-size: 1.4rem; }}
table {{ border-collapse: collapse; margin: 1rem 0 2rem; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .35rem .6rem; text-align: left; vertical-align: top; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.failed {{ color: {COLOURS["CRITICAL"]}; font-weight: 600; }}
td.msg {{ max-width: 40rem; }}
</style></head><body>
<h1>APEx workspaces: monitoring</h1>
<p class="overall" id="overall">{_badge(st["status"])} <span id="overall-message">{escape(st["message"])}</span></p>
<p>Checked {escape(st["time"])}. Probe user <code>{escape(probe["user"])}</code>, profile
<code>{escape(probe["profile"] or "default")}</code>, every {probe["interval_seconds"]:g}s; a result older
than {probe["stale_after_seconds"]:g}s is CRITICAL. Last success: {escape(probe["last_success_at"] or "never")}.
Now: {now_line}. Nagios codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
(<a href="status.json">status.json</a>, <a href="metrics">metrics</a>).</p>
<h2>Probe</h2>
<p id="probe">{_badge(probe["status"])} {escape(probe["message"])}</p>
<h2>Components</h2>
<table id="components"><tr><th>component</th><th>status</th><th>message</th><th>checked</th></tr>{comp_rows}</table>
<h2>Recent probes</h2>
<table id="history"><tr><th>#</th><th>started (UTC)</th><th>result</th>{head}<th>message</th></tr>{history}</table>
</body></html>"""


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
