"""HTTP side of the accounting service (tornado, behind the hub's proxy at ``/services/<name>/``).

* ``GET /`` — the usage page (hub OAuth): the caller's quota warning on top when they are at
  ``quota_warn_fraction`` of a budget (the hub banner's sentences), their usage this period against
  their budget, with an inline SVG chart; holders of :data:`ADMIN_SCOPE` see every user (``?user=``
  for one of them).
* ``GET /api/sessions`` — the ledger's sessions (``user``, ``since``, ``until``, ``format=csv``).
* ``GET /api/usage`` — CPU-/memory-/GPU-hours ``by=user|group|profile`` per ``period=day|month``
  (``since``, ``until``, ``format=csv``).
* ``GET /api/events`` — the append-only events (``session`` for one session; ``after`` an event id
  and ``limit``, default 10000, to page).
* ``POST /api/apel`` — write the APEL files now (also done every ``apel_interval``).
  All of these need :data:`ADMIN_SCOPE` on the caller's hub token (``Authorization: token …`` or
  the OAuth cookie).
* ``GET /api/quota/<user>`` — ``{allowed, budgets[{scope, name, metric, budget, usage}], reset,
  message}``: for :data:`ADMIN_SCOPE`, the user themself, or the spawner's quota token
  (``Authorization: Bearer <APEX_ACCOUNTING_QUOTA_TOKEN>``).
* ``GET /metrics`` — Prometheus text format, for ``Authorization: Bearer <APEX_ACCOUNTING_METRICS_TOKEN>``
  (when the operator set one) or a hub token / login with :data:`ADMIN_SCOPE`; anyone else gets 403: the
  service sits behind the hub's public proxy, and the metrics name users' activity.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from tornado import web

from . import apel, quota, reports

ADMIN_SCOPE = "custom:apex-accounting:admin"


class Base(HubOAuthenticated, web.RequestHandler):
    def initialize(self, app: Any) -> None:
        self.app = app

    @property
    def svc(self):
        return self.app.service

    def is_admin(self, model: dict | None) -> bool:
        return bool(model) and bool(self.hub_auth.check_scopes({ADMIN_SCOPE}, model))

    def api_user(self) -> dict:
        model = self.get_current_user()
        if not model:
            raise web.HTTPError(401, "a hub token (Authorization: token ...) or login is required")
        return model

    def require_admin(self) -> dict:
        model = self.api_user()
        if not self.is_admin(model):
            raise web.HTTPError(403, f"needs the {ADMIN_SCOPE} scope")
        return model

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        msg = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": msg}))

    def window(self, period: str | None = None) -> tuple[datetime, datetime]:
        now = self.svc.clock()
        since = self._when("since", reports.period_start(now, period or "month"))
        until = self._when("until", now)
        if since > until:
            raise web.HTTPError(400, "since must not be after until")
        return since, min(until, now)

    def _when(self, name: str, default: datetime) -> datetime:
        text = self.get_argument(name, None)
        try:
            return reports.parse_when(text, default)
        except (TypeError, ValueError):
            raise web.HTTPError(
                400,
                f"{name} must be a date or time such as 2026-11, 2026-11-23 or"
                f" 2026-11-23T08:00:00Z, not {text[:40]!r}",
            ) from None

    def send(self, rows: list[dict], fields: list[str], name: str) -> None:
        if self.get_argument("format", "json") == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="{name}.csv"')
            self.finish(reports.to_csv(rows, fields))
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"items": rows}, default=str))


class SessionsHandler(Base):
    async def get(self) -> None:
        self.require_admin()
        since, until = self.window()
        user = self.get_argument("user", None)
        rows = await asyncio.to_thread(  # off the event loop: the pod watch keeps going
            lambda: [
                reports.session_json(s)
                for s in self.svc.ledger.iter_sessions(user=user, since=since, until=until)
            ]
        )
        self.send(rows, list(reports.SESSION_FIELDS), "sessions")


class UsageHandler(Base):
    async def get(self) -> None:
        self.require_admin()
        period, by = self.get_argument("period", "month"), self.get_argument("by", "user")
        if period not in ("day", "month") or by not in reports.KEYS:
            raise web.HTTPError(400, "period must be day or month; by must be user, group or profile")
        since, until = self.window(period)
        rows = await asyncio.to_thread(
            reports.ledger_usage, self.svc.ledger, since=since, until=until, period=period, by=by
        )
        self.send(rows, ["period", by, *reports.METRICS], f"usage-{by}-{period}")


class EventsHandler(Base):
    async def get(self) -> None:
        self.require_admin()
        try:
            after, limit = (
                int(self.get_argument("after", "0")),
                min(int(self.get_argument("limit", "10000")), 100000),
            )
        except ValueError:
            raise web.HTTPError(400, "after and limit must be integers") from None
        rows = await asyncio.to_thread(
            self.svc.ledger.events, self.get_argument("session", None), after=after, limit=limit
        )
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"items": rows}, default=str))


class ApelHandler(Base):
    def post(self) -> None:
        self.require_admin()
        if self.app.apel is None:
            raise web.HTTPError(404, "APEL export is not configured (--apel-dir, --apel-site)")
        files = apel.export(self.svc.ledger, self.app.apel)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"files": [str(f) for f in files]}))


class QuotaHandler(Base):
    def get_current_user(self):
        auth = self.request.headers.get("Authorization", "")
        token = self.app.quota_token
        if token and auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), token):
            return {"kind": "quota-token", "name": "spawner", "scopes": []}
        return super().get_current_user()

    async def get(self, user: str) -> None:
        model = self.api_user()
        if not (
            model.get("kind") == "quota-token"
            or self.is_admin(model)
            or (model.get("kind") == "user" and model.get("name") == user)
        ):
            raise web.HTTPError(403, f"only {user}, an accounting admin or the spawner may read this quota")
        if self.svc.quotas is None:
            result = {"user": user, "allowed": True, "budgets": [], "message": "no quotas configured"}
        else:
            groups = self.svc.groups.get(user)
            if groups is None:
                groups = await self.svc.user_groups(user)
            status = self.svc.quotas.check(self.svc.ledger, user, groups, now=self.svc.clock())
            result = (
                status.as_dict()
                if status
                else {"user": user, "allowed": True, "budgets": [], "message": f"{user} has no budget"}
            )
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(result))


class MetricsHandler(Base):
    def get(self) -> None:
        auth, token = self.request.headers.get("Authorization", ""), self.app.metrics_token
        by_token = bool(token) and auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), token)
        if not by_token and not self.is_admin(self.get_current_user()):
            raise web.HTTPError(403, f"metrics need the Bearer metrics token or the {ADMIN_SCOPE} scope")
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(generate_latest(self.app.registry))


class Collector:
    """Reads the service's counters and the ledger at scrape time."""

    def __init__(self, app: Any):
        self.app = app

    def collect(self):
        svc = self.app.service
        st = svc.stats
        for name, value, doc in (
            ("pod_events", st.pod_events, "pod watch events handled"),
            ("relists", st.relists, "pod listings (start-up, 410 Gone, errors)"),
            ("sessions_opened", st.sessions_opened, "sessions added to the ledger"),
            ("sessions_closed", st.sessions_closed, "sessions closed in the ledger"),
            ("stop_reasons_attached", st.reasons_attached, "culler stop reasons attached to sessions"),
            ("excluded_sessions", st.excluded, "sessions not recorded (excluded groups)"),
            ("quota_warnings", st.quota_warnings, "quota warnings"),
            ("quota_stops", st.quota_stops, "servers stopped over budget"),
            ("hub_errors", st.hub_errors, "failed hub API rounds"),
            ("kube_errors", st.kube_errors, "failed pod list/watch calls"),
            ("apel_records", self.app.apel_records, "APEL records written"),
        ):
            c = CounterMetricFamily(f"apex_accounting_{name}", doc)
            c.add_metric([], value)
            yield c
        g = GaugeMetricFamily("apex_accounting_watching", "1 while the pod watch is connected")
        g.add_metric([], 1 if st.watching.is_set() else 0)
        yield g
        g = GaugeMetricFamily("apex_accounting_last_round_timestamp_seconds", "time of the last hub round")
        g.add_metric([], st.last_hub_round.timestamp() if st.last_hub_round else 0)
        yield g
        running = GaugeMetricFamily(
            "apex_accounting_running_sessions", "open sessions by profile", labels=["profile"]
        )
        by_profile: dict[str, int] = {}
        for s in svc.ledger.open_sessions():
            by_profile[s["profile"]] = by_profile.get(s["profile"], 0) + 1
        for profile, n in sorted(by_profile.items()):
            running.add_metric([profile], n)
        yield running
        sessions, events = svc.ledger.count()
        g = GaugeMetricFamily("apex_accounting_ledger_rows", "rows in the ledger", labels=["table"])
        g.add_metric(["sessions"], sessions)
        g.add_metric(["session_events"], events)
        yield g


def _chart(days: list[tuple[str, float]], budget: float | None, label: str) -> str:
    """An inline SVG: cumulative usage per day this period, and the budget line."""
    w, h, pad = 640, 220, 40
    cum, total = [], 0.0
    for d, v in days:
        total += v
        cum.append((d, total))
    top = max([total, budget or 0, 1e-9]) * 1.1
    n = max(len(cum), 1)
    bw = (w - 2 * pad) / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{html.escape(label)}" '
        f'width="{w}" height="{h}" viewBox="0 0 {w} {h}" class="chart">',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#555"/>',
    ]
    for i, (d, v) in enumerate(cum):
        bh = (h - 2 * pad) * v / top
        x = pad + i * bw
        parts.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{h - pad - bh:.1f}" width="{max(bw - 2, 1):.1f}" '
            f'height="{bh:.1f}" fill="#3b7dd8"><title>{d}: {v:.2f}</title></rect>'
        )
    if budget:
        y = h - pad - (h - 2 * pad) * budget / top
        parts.append(
            f'<line class="budget" x1="{pad}" y1="{y:.1f}" x2="{w - pad}" y2="{y:.1f}" stroke="#c0392b" '
            f'stroke-dasharray="6 4"/><text x="{w - pad}" y="{y - 4:.1f}" text-anchor="end" '
            f'font-size="12" fill="#c0392b">budget {budget:g}</text>'
        )
    if cum:
        parts.append(
            f'<text x="{pad}" y="{h - pad + 16}" font-size="11">{cum[0][0]}</text>'
            f'<text x="{w - pad}" y="{h - pad + 16}" font-size="11" text-anchor="end">{cum[-1][0]}</text>'
        )
    parts.append(
        f'<text x="{pad}" y="{pad - 12}" font-size="12">{html.escape(label)} (cumulative)</text></svg>'
    )
    return "".join(parts)


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>APEx usage</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child,th:first-child{{text-align:left}}
.over{{color:#c0392b;font-weight:bold}}
.warning{{background:#fff3cd;border:2px solid #e0a800;border-radius:4px;padding:.8em 1em;font-weight:bold}}</style>
</head><body>{body}</body></html>"""


class PageHandler(Base):
    @web.authenticated
    async def get(self) -> None:
        model = self.get_current_user()
        admin = self.is_admin(model)
        user = self.get_argument("user", None) if admin else None
        user = user or model["name"]
        svc = self.svc
        now = svc.clock()
        period = svc.quotas.period if svc.quotas else "month"
        since = (
            reports.period_start(now, "month")
            if period == "month"
            else now.replace(hour=0, minute=0, second=0, microsecond=0)
            - timedelta(days=now.weekday() if period == "week" else 0)
        )
        body = [
            f"<h1>Usage of {html.escape(user)}</h1>",
            f"<p>Period: {since.date()} to now ({now.strftime('%Y-%m-%d %H:%M')} UTC). Units: requested "
            "resources × wall time.</p>",
        ]
        mine = list(svc.ledger.iter_sessions(user=user, since=since, until=now))
        tot = reports.total(mine, since=since, until=now)
        status = None
        if svc.quotas is not None:
            groups = svc.groups.get(user)
            if groups is None:
                groups = await svc.user_groups(user)
            status = svc.quotas.check(svc.ledger, user, groups, now=now)
        budget = None
        warning = status.warning(svc.quota_warn_fraction, stop=svc.quota_stop) if status else None
        if warning:  # the same sentences as the hub's banner, at the top of the page
            body.insert(
                1,
                '<div id="quota-warning" class="warning" role="alert">'
                + "<br>".join(quota.warning_html(warning))
                + "</div>",
            )
        if status:
            cpu = [lim for lim in status.limits if lim.metric == "cpu_hours"]
            budget = cpu[0].budget if cpu else None
            rows = "".join(
                f'<tr class="{"over" if lim.over else ""}"><td>{html.escape(lim.scope)} {html.escape(lim.name)}</td>'
                f"<td>{html.escape(lim.metric)}</td><td>{lim.usage:.2f}</td><td>{lim.budget:g}</td></tr>"
                for lim in status.limits
            )
            body.append(
                f'<h2>Budget</h2><p id="quota-message">{html.escape(status.message)}</p>'
                f"<table id=budget><tr><th>budget</th><th>metric</th><th>used</th><th>limit</th></tr>"
                f"{rows}</table>"
            )
        else:
            body.append('<p id="quota-message">No budget applies.</p>')
        daily = {
            r["period"]: r["cpu_hours"] for r in reports.usage(mine, since=since, until=now, period="day")
        }
        days, d = [], since
        while d <= now:
            days.append((d.strftime("%Y-%m-%d"), daily.get(d.strftime("%Y-%m-%d"), 0.0)))
            d += timedelta(days=1)
        body.append("<h2>CPU-hours</h2>" + _chart(days, budget, "CPU-hours"))
        body.append(
            "<table id=totals><tr>"
            + "".join(f"<th>{m}</th>" for m in reports.METRICS)
            + "</tr><tr>"
            + "".join(
                f"<td>{tot[m]:.2f}</td>" if m != "sessions" else f"<td>{tot[m]}</td>" for m in reports.METRICS
            )
            + "</tr></table>"
        )
        if admin:
            rows = await asyncio.to_thread(
                reports.ledger_usage, svc.ledger, since=since, until=now, period="month", by="user"
            )
            prefix = self.app.prefix
            body.append(
                "<h2>All users</h2><table id=everyone><tr><th>user</th><th>sessions</th><th>cpu_hours</th>"
                "<th>memory_gib_hours</th><th>gpu_hours</th></tr>"
                + "".join(
                    f'<tr><td><a href="{prefix}?user={quote(r["user"])}">{html.escape(r["user"])}</a></td>'
                    f"<td>{r['sessions']}</td><td>{r['cpu_hours']:.2f}</td>"
                    f"<td>{r['memory_gib_hours']:.2f}</td><td>{r['gpu_hours']:.2f}</td></tr>"
                    for r in rows
                )
                + "</table>"
            )
        self.finish(PAGE.format(body="".join(body)))


class App:
    """Builds the tornado application around an :class:`AccountingService`."""

    def __init__(
        self,
        service: Any,
        *,
        prefix: str = "/",
        apel_settings: apel.ApelSettings | None = None,
        quota_token: str = "",
        metrics_token: str = "",
        cookie_secret: bytes | None = None,
    ):
        self.service, self.prefix, self.apel, self.quota_token = service, prefix, apel_settings, quota_token
        self.metrics_token = metrics_token
        self.apel_records = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(self))
        kw = {"app": self}
        routes = [
            ("", PageHandler, kw),
            ("oauth_callback", HubOAuthCallbackHandler, None),
            ("api/sessions", SessionsHandler, kw),
            ("api/usage", UsageHandler, kw),
            ("api/events", EventsHandler, kw),
            ("api/apel", ApelHandler, kw),
            ("api/quota/([^/]+)", QuotaHandler, kw),
            ("metrics", MetricsHandler, kw),
        ]
        handlers = [(url_path_join(prefix, path), h, *([a] if a else [])) for path, h, a in routes]
        self.tornado = web.Application(handlers, cookie_secret=cookie_secret or secrets.token_bytes(32))

    def export_apel(self) -> list:
        if self.apel is None:
            return []
        files = apel.export(self.service.ledger, self.apel)
        for f in files:
            self.apel_records += len(apel.parse(f.read_text()))
        return files
