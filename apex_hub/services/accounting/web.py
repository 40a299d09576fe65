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
import json
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from tornado import web

from . import apel, reports

ADMIN_SCOPE = "custom:apex-accounting:admin"
log = logging.getLogger("apex_hub.accounting")


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

    async def send(self, rows: Callable[[], list[dict]], fields: list[str], name: str) -> None:
        """The rows ``rows()`` reads, as JSON or CSV: read and encoded on a report thread (a year of
        sessions is seconds of work that the pod watch and the quota checks must not wait for)."""
        if self.get_argument("format", "json") == "csv":
            body = await self.svc.db.report(lambda: reports.to_csv(rows(), fields))
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="{name}.csv"')
        else:
            body = await self.svc.db.report(lambda: json.dumps({"items": rows()}, default=str))
            self.set_header("Content-Type", "application/json")
        self.finish(body)


class SessionsHandler(Base):
    async def get(self) -> None:
        self.require_admin()
        since, until = self.window()
        user = self.get_argument("user", None)
        await self.send(
            lambda: [
                reports.session_json(s)
                for s in self.svc.ledger.iter_sessions(user=user, since=since, until=until)
            ],
            list(reports.SESSION_FIELDS),
            "sessions",
        )


class UsageHandler(Base):
    async def get(self) -> None:
        self.require_admin()
        period, by = self.get_argument("period", "month"), self.get_argument("by", "user")
        if period not in ("day", "month") or by not in reports.KEYS:
            raise web.HTTPError(400, "period must be day or month; by must be user, group or profile")
        since, until = self.window(period)
        await self.send(
            lambda: reports.ledger_usage(self.svc.ledger, since=since, until=until, period=period, by=by),
            ["period", by, *reports.METRICS],
            f"usage-{by}-{period}",
        )


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
        session = self.get_argument("session", None)
        body = await self.svc.db.report(
            lambda: json.dumps(
                {"items": self.svc.ledger.events(session, after=after, limit=limit)}, default=str
            )
        )
        self.set_header("Content-Type", "application/json")
        self.finish(body)


class ApelHandler(Base):
    async def post(self) -> None:
        self.require_admin()
        if self.app.apel is None:
            raise web.HTTPError(404, "APEL export is not configured (--apel-dir, --apel-site)")
        files = await self.svc.db.write(apel.export, self.svc.ledger, self.app.apel)
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
            # from memory, else on a reader thread: a re-list or a report does not make the spawn wait
            status = await self.svc.quota_check(user, groups)
            result = (
                status.as_dict()
                if status
                else {"user": user, "allowed": True, "budgets": [], "message": f"{user} has no budget"}
            )
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(result))


class MetricsHandler(Base):
    async def get(self) -> None:
        auth, token = self.request.headers.get("Authorization", ""), self.app.metrics_token
        by_token = bool(token) and auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), token)
        if not by_token and not self.is_admin(self.get_current_user()):
            raise web.HTTPError(403, f"metrics need the Bearer metrics token or the {ADMIN_SCOPE} scope")
        body = await self.svc.db.read(generate_latest, self.app.registry)  # the collector reads the ledger
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(body)


class Collector:
    """Reads the service's counters and the ledger at scrape time (on a reader thread)."""

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


def chart(days: list[tuple[str, float]], budget: float | None, label: str) -> dict:
    """The geometry of the usage chart (``templates/chart.svg``): cumulative usage per day this
    period, one bar a day, and the budget line."""
    w, h, pad = 640, 220, 40
    cum, total = [], 0.0
    for d, v in days:
        total += v
        cum.append((d, total))
    top = max([total, budget or 0, 1e-9]) * 1.1
    bw = (w - 2 * pad) / max(len(cum), 1)
    bars = []
    for i, (d, v) in enumerate(cum):
        bh = (h - 2 * pad) * v / top
        x = pad + i * bw
        bars.append(
            {"day": d, "value": v, "x": x + 1, "y": h - pad - bh, "width": max(bw - 2, 1), "height": bh}
        )
    return {
        "label": label,
        "width": w,
        "height": h,
        "pad": pad,
        "right": w - pad,
        "base": h - pad,
        "bars": bars,
        "budget": budget,
        "budget_y": h - pad - (h - 2 * pad) * budget / top if budget else None,
    }


TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=True,  # every template, .svg included: names in them come from users and identity providers
    undefined=StrictUndefined,
    keep_trailing_newline=False,
)
TEMPLATES.filters["quote"] = quote


def render(name: str, **context: Any) -> str:
    return TEMPLATES.get_template(name).render(**context)


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
        groups = None
        if svc.quotas is not None:
            groups = svc.groups.get(user)
            if groups is None:
                groups = await svc.user_groups(user)

        def read() -> tuple[list[dict], Any]:  # on a reader thread
            mine = list(svc.ledger.iter_sessions(user=user, since=since, until=now))
            status = None if groups is None else svc.quotas.check(svc.ledger, user, groups, now=now)
            return mine, status

        mine, status = await svc.db.read(read)
        tot = reports.total(mine, since=since, until=now)
        warning = status.warning(svc.quota_warn_fraction, stop=svc.quota_stop) if status else None
        cpu = [lim for lim in status.limits if lim.metric == "cpu_hours"] if status else []
        daily = {
            r["period"]: r["cpu_hours"] for r in reports.usage(mine, since=since, until=now, period="day")
        }
        days, d = [], since
        while d <= now:
            days.append((d.strftime("%Y-%m-%d"), daily.get(d.strftime("%Y-%m-%d"), 0.0)))
            d += timedelta(days=1)
        everyone = None
        if admin:
            everyone = await svc.db.report(
                reports.ledger_usage, svc.ledger, since=since, until=now, period="month", by="user"
            )
        self.finish(
            render(
                "usage.html",
                user=user,
                since=since,
                now=now,
                warning=warning,  # the same sentences as the hub's banner, at the top of the page
                status=status,
                chart=chart(days, cpu[0].budget if cpu else None, "CPU-hours"),
                metrics=reports.METRICS,
                totals=tot,
                everyone=everyone,
                prefix=self.app.prefix,
            )
        )


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
        self._apel_tasks: set[asyncio.Task] = set()
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

    async def export_apel_async(self) -> list:
        """Write the APEL files now (on the ledger's writer thread); returns the files written."""
        if self.apel is None:
            return []

        def export() -> tuple[list, int]:
            files = apel.export(self.service.ledger, self.apel)
            return files, sum(len(apel.parse(f.read_text())) for f in files)

        files, records = await self.service.db.write(export)
        self.apel_records += records
        return files

    def export_apel(self) -> Any:
        """:meth:`export_apel_async` for a caller that does not await (the service's APEL loop): on
        the event loop it is started as a task, which logs its own failure; without a running loop
        it runs here and returns the files."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.export_apel_async())
        task = loop.create_task(self.export_apel_async(), name="apel-export")
        self._apel_tasks.add(task)
        task.add_done_callback(self._apel_done)
        return task

    def _apel_done(self, task: asyncio.Task) -> None:
        self._apel_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("APEL export failed", exc_info=task.exception())
