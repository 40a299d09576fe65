"""The ledger: SQLAlchemy 2 models and the idempotent writes the service makes.

Two tables hold the history:

* ``sessions`` — one row per server session, keyed by the pod uid. A row is inserted once, when the
  session is first seen; afterwards only fields that were still unknown are filled in (``stop``,
  ``stop_reason``, ``group``, ``pvc_bytes``), so a row never loses what it said.
* ``session_events`` — append-only: every observation that changed something (``opened``,
  ``stopped``, ``reason``, ``group``, ``quota-warning``, ``quota-stop``), with its time, source and data.
  Rows are only ever inserted.

``apel_exports`` remembers which session went into which APEL file (idempotent re-export) and
``service_state`` keeps the service's heartbeat (the last moment it is known to have been watching).

The schema is created and upgraded by the Alembic migrations in ``migrations/`` (``upgrade(url)``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    type_coerce,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import TypeDecorator

from . import usage

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timestamps stored as naive UTC (SQLite has no time zones) and returned as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the ledger stores UTC, give a time zone")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


class epoch_seconds(FunctionElement):
    """Seconds since 1970 of a naive-UTC timestamp column, in SQL (SQLite and PostgreSQL)."""

    type = Float()
    inherit_cache = True


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element, compiler, **kw):
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


@compiles(epoch_seconds, "postgresql")
def _epoch_postgresql(element, compiler, **kw):
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


class period_label(FunctionElement):
    """``YYYY-MM`` (month) or ``YYYY-MM-DD`` (day) of a timestamp column, in SQL."""

    type = String()
    inherit_cache = True

    def __init__(self, column, period: str):
        self.period = period
        super().__init__(column)


@compiles(period_label, "sqlite")
def _label_sqlite(element, compiler, **kw):
    fmt = "%Y-%m" if element.period == "month" else "%Y-%m-%d"
    return f"strftime('{fmt}', {compiler.process(element.clauses, **kw)})"


@compiles(period_label, "postgresql")
def _label_postgresql(element, compiler, **kw):
    fmt = "YYYY-MM" if element.period == "month" else "YYYY-MM-DD"
    return f"to_char({compiler.process(element.clauses, **kw)}, '{fmt}')"


class Base(DeclarativeBase):
    pass


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the pod uid
    user: Mapped[str] = mapped_column(String(255), index=True)  # JupyterHub user name as is
    user_slug: Mapped[str] = mapped_column(String(63), default="")
    server: Mapped[str] = mapped_column(String(255), default="")  # "" = default server
    namespace: Mapped[str] = mapped_column(String(63), default="")
    pod: Mapped[str] = mapped_column(String(253), default="")
    group: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    profile: Mapped[str] = mapped_column(String(255), default="")
    image: Mapped[str] = mapped_column(String(1024), default="")
    cpu: Mapped[float] = mapped_column(Float, default=0.0)  # cores
    memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    gpu: Mapped[float] = mapped_column(Float, default=0.0)
    pvc_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    start: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    stop: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    stop_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | stopped
    recorded: Mapped[datetime] = mapped_column(UTCDateTime)  # when the ledger first saw it


class SessionEvent(Base):
    __tablename__ = "session_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(64), ForeignKey("sessions.id"), index=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime)  # when it happened (or our best estimate)
    recorded: Mapped[datetime] = mapped_column(UTCDateTime)  # when we wrote it
    kind: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))  # pod-watch | backfill | culler | quota | hub
    data: Mapped[str] = mapped_column(Text, default="{}")  # JSON


class ApelExport(Base):
    __tablename__ = "apel_exports"

    session_id: Mapped[str] = mapped_column(String(64), ForeignKey("sessions.id"), primary_key=True)
    file: Mapped[str] = mapped_column(String(255))
    exported: Mapped[datetime] = mapped_column(UTCDateTime)


class ServiceState(Base):
    __tablename__ = "service_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


Index("ix_sessions_user_server_start", Session.user, Session.server, Session.start)
# migration 0002: what Ledger.usage_rows reads, from the index alone
_USAGE = (Session.stop, Session.start, Session.cpu, Session.memory_bytes, Session.gpu)
Index("ix_sessions_user_usage", Session.user, *_USAGE)
Index("ix_sessions_group_usage", Session.group, *_USAGE)

REASON_PRIORITY = {None: 0, "external": 1, "user": 2}  # anything else (culler's, quota) is more specific


@dataclass
class Observation:
    """What one source says about one session (a pod, a backfill listing)."""

    id: str
    user: str
    start: datetime
    user_slug: str = ""
    server: str = ""
    namespace: str = ""
    pod: str = ""
    group: str | None = None
    profile: str = ""
    image: str = ""
    cpu: float = 0.0
    memory_bytes: int = 0
    gpu: float = 0.0
    pvc_bytes: int | None = None
    stop: datetime | None = None
    stop_reason: str | None = None
    detail: dict = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "id",
                "user",
                "user_slug",
                "server",
                "namespace",
                "pod",
                "group",
                "profile",
                "image",
                "cpu",
                "memory_bytes",
                "gpu",
                "pvc_bytes",
                "start",
            )
        }


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
    kw: dict[str, Any] = {"future": True}
    if url.startswith("sqlite:///") and ":memory:" not in url:  # SQLite makes the file, not its directory
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        kw["connect_args"] = {"timeout": 30}
    engine = create_engine(url, **kw)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


def _sqlite_usage_rows(conn, where: tuple) -> list[tuple]:
    """``(start, stop, cpu, memory_bytes, gpu)`` of the sessions ``where`` selects, in one row of
    ``group_concat``: SQLite's module gives up the interpreter's lock for every row it steps, and
    each time it takes it back it may wait for another thread's switch interval — thousands of rows
    would be thousands of waits behind a busy writer. The times as stored (text), the numbers
    printed with 17 significant digits (``%.17g``: the same floats once parsed)."""
    item = func.printf(
        "%s|%s|%.17g|%d|%.17g",
        type_coerce(Session.start, String),
        type_coerce(Session.stop, String),  # NULL prints as ''
        Session.cpu,
        Session.memory_bytes,
        Session.gpu,
    )
    text_ = conn.execute(select(func.group_concat(item, ";")).where(*where)).scalar()
    rows = []
    for part in text_.split(";") if text_ else ():
        start, stop, cpu, mem, gpu = part.split("|")
        rows.append((start, stop or None, float(cpu), int(mem), float(gpu)))
    return rows


def _usage_row(row: dict) -> tuple | None:
    """(user, group, (start, stop, cpu, memory_bytes, gpu)) of a session row as written — the values
    the database gives back (naive UTC, floats) — or None when that is not certain (then it is read)."""
    if type(row["memory_bytes"]) is not int or not all(type(row[k]) in (int, float) for k in ("cpu", "gpu")):
        return None
    stop = row["stop"]
    return (
        row["user"],
        row["group"],
        (
            usage.naive(row["start"]),
            None if stop is None else usage.naive(stop),
            float(row["cpu"]),
            row["memory_bytes"],
            float(row["gpu"]),
        ),
    )


def upgrade(url: str, revision: str = "head") -> None:
    """Run the shipped Alembic migrations up to ``revision``."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, revision)


def _json(data: dict) -> str:
    return json.dumps(data, sort_keys=True, default=str)


class Ledger:
    """Idempotent writes and the reads the service needs. Safe to call with the same facts again."""

    def __init__(self, url: str, *, migrate: bool = True):
        self.url = url
        # called after each commit that wrote sessions, on the writing thread, with (id, events written,
        # (user, group, usage row) as the commit left them — None: read it back) for each
        self.on_usage_change: Callable[[list[tuple[str, list[str], Any]]], None] | None = None
        if migrate:
            upgrade(url)
        self.engine = make_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    # ---- writes ------------------------------------------------------------------------

    def observe(self, obs: Observation, *, source: str, now: datetime | None = None) -> list[str]:
        """Record what ``source`` saw about a session; returns the events written (empty: nothing new)."""
        with self.engine.begin() as conn:
            changed: list = []
            written = self._observe(conn, obs, source, now or utcnow(), changed)
        if changed and self.on_usage_change is not None:
            self.on_usage_change(changed)
        return written

    def observe_many(
        self, observations: Iterable[Observation], *, source: str, now: datetime | None = None
    ) -> list[list[str]]:
        """:meth:`observe` for many sessions in one transaction (a re-list, a backfill): sessions new to
        the ledger are inserted in bulk, known ones go through :meth:`observe`'s rules one by one."""
        now = now or utcnow()
        items = list(observations)
        results: list[list[str]] = [[] for _ in items]
        changed: list = []
        with self.engine.begin() as conn:
            ids = list({o.id for o in items})
            known: set[str] = set()
            for i in range(0, len(ids), 500):
                known.update(
                    conn.execute(select(Session.id).where(Session.id.in_(ids[i : i + 500]))).scalars()
                )
            rows, events, later = [], [], []
            for n, o in enumerate(items):
                if o.id in known:
                    later.append(n)
                    continue
                known.add(o.id)  # a second observation of it in this batch takes the careful path
                row = {**o.fields(), "status": "running", "recorded": now, "stop": None, "stop_reason": None}
                events.append(
                    {
                        "session_id": o.id,
                        "time": o.start,
                        "recorded": now,
                        "kind": "opened",
                        "source": source,
                        "data": _json({k: v for k, v in o.fields().items() if k != "id"}),
                    }
                )
                results[n].append("opened")
                if o.stop is not None:
                    stop = max(o.stop, o.start)
                    row.update(stop=stop, status="stopped", stop_reason=o.stop_reason)
                    events.append(
                        {
                            "session_id": o.id,
                            "time": stop,
                            "recorded": now,
                            "kind": "stopped",
                            "source": source,
                            "data": _json({"stop": stop.isoformat(), "reason": o.stop_reason, **o.detail}),
                        }
                    )
                    results[n].append("stopped")
                rows.append(row)
                changed.append((o.id, results[n], _usage_row(row)))
            if rows:
                conn.execute(insert(Session), rows)
                conn.execute(insert(SessionEvent), events)
            for n in later:
                results[n] = self._observe(conn, items[n], source, now, changed)
        if changed and self.on_usage_change is not None:
            self.on_usage_change(changed)
        return results

    def _observe(
        self, conn, obs: Observation, source: str, now: datetime, changed: list | None = None
    ) -> list[str]:
        written: list[str] = []
        row = conn.execute(select(Session).where(Session.id == obs.id)).mappings().first()
        if row is None:
            values = {**obs.fields(), "status": "running", "recorded": now}
            conn.execute(insert(Session).values(**values))
            self._event(
                conn,
                obs.id,
                obs.start,
                now,
                "opened",
                source,
                {k: v for k, v in obs.fields().items() if k != "id"},
            )
            written.append("opened")
            row = {**values, "stop": None, "stop_reason": None}
        changes: dict[str, Any] = {}
        if row["group"] is None and obs.group is not None:
            changes["group"] = obs.group
            self._event(conn, obs.id, now, now, "group", source, {"group": obs.group})
            written.append("group")
        if row["pvc_bytes"] is None and obs.pvc_bytes is not None:
            changes["pvc_bytes"] = obs.pvc_bytes
        if row["stop"] is None and obs.stop is not None:
            stop = max(obs.stop, row["start"])
            changes.update(stop=stop, status="stopped")
            self._event(
                conn,
                obs.id,
                stop,
                now,
                "stopped",
                source,
                {"stop": stop.isoformat(), "reason": obs.stop_reason, **obs.detail},
            )
            written.append("stopped")
        if obs.stop_reason and REASON_PRIORITY.get(obs.stop_reason, 9) > REASON_PRIORITY.get(
            changes.get("stop_reason", row["stop_reason"]), 9
        ):
            changes["stop_reason"] = obs.stop_reason
            if "stopped" not in written:
                self._event(conn, obs.id, now, now, "reason", source, {"reason": obs.stop_reason})
                written.append("reason")
        if changes:
            conn.execute(update(Session).where(Session.id == obs.id).values(**changes))
        if written and changed is not None:
            changed.append((obs.id, written, _usage_row({**row, **changes})))
        return written

    def set_reason(
        self,
        session_id: str,
        reason: str,
        *,
        source: str,
        detail: dict | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Attach a more specific stop reason (the culler's, ``quota``); never overwrites a specific one."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            current = conn.execute(
                select(Session.stop_reason).where(Session.id == session_id)
            ).scalar_one_or_none()
            if REASON_PRIORITY.get(current, 9) >= REASON_PRIORITY.get(reason, 9) or current == reason:
                return False
            conn.execute(update(Session).where(Session.id == session_id).values(stop_reason=reason))
            self._event(conn, session_id, now, now, "reason", source, {"reason": reason, **(detail or {})})
        return True

    def add_event(
        self,
        session_id: str,
        kind: str,
        *,
        source: str,
        data: dict | None = None,
        time: datetime | None = None,
    ) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            self._event(conn, session_id, time or now, now, kind, source, data or {})

    @staticmethod
    def _event(
        conn, session_id: str, time: datetime, now: datetime, kind: str, source: str, data: dict
    ) -> None:
        conn.execute(
            insert(SessionEvent).values(
                session_id=session_id, time=time, recorded=now, kind=kind, source=source, data=_json(data)
            )
        )

    def set_state(self, key: str, value: str) -> None:
        with self.engine.begin() as conn:
            found = conn.execute(select(ServiceState.key).where(ServiceState.key == key)).first()
            if found:
                conn.execute(update(ServiceState).where(ServiceState.key == key).values(value=value))
            else:
                conn.execute(insert(ServiceState).values(key=key, value=value))

    def get_state(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(ServiceState.value).where(ServiceState.key == key)
            ).scalar_one_or_none()

    # ---- reads -------------------------------------------------------------------------

    def session(self, session_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(Session).where(Session.id == session_id)).mappings().first()
            return dict(row) if row else None

    def known(self, ids: Iterable[str]) -> dict[str, dict]:
        """The sessions among ``ids`` that the ledger has, by id (one query per 500 ids: a listing)."""
        wanted = list(dict.fromkeys(ids))
        out: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                q = select(Session).where(Session.id.in_(wanted[i : i + 500]))
                out.update((r["id"], dict(r)) for r in conn.execute(q).mappings())
        return out

    def sessions(
        self,
        *,
        user: str | None = None,
        running: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        ids: Iterable[str] | None = None,
    ) -> list[dict]:
        """Sessions (as dicts) overlapping ``[since, until)``, oldest first."""
        return list(self.iter_sessions(user=user, running=running, since=since, until=until, ids=ids))

    def iter_sessions(
        self,
        *,
        user: str | None = None,
        running: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        ids: Iterable[str] | None = None,
        groups: Iterable[str] | None = None,
        usage_only: bool = False,
        outside: Any = None,
    ) -> Iterator[dict]:
        """``usage_only``: only the columns reports and quotas need (faster over many rows)."""
        cols = (
            (
                Session.user,
                Session.group,
                Session.profile,
                Session.cpu,
                Session.memory_bytes,
                Session.gpu,
                Session.start,
                Session.stop,
            )
            if usage_only
            else (Session,)
        )
        q = select(*cols).order_by(Session.start, Session.id)
        if user is not None:
            q = q.where(Session.user == user)
        if groups is not None:
            q = q.where(Session.group.in_(list(groups)))
        if running is True:
            q = q.where(Session.stop.is_(None))
        elif running is False:
            q = q.where(Session.stop.is_not(None))
        if since is not None:
            q = q.where((Session.stop.is_(None)) | (Session.stop > since))
        if until is not None:
            q = q.where(Session.start < until)
        if ids is not None:
            q = q.where(Session.id.in_(list(ids)))
        if outside is not None:  # sessions not matched by this condition (usage_split)
            q = q.where(~outside)
        with self.engine.connect() as conn:
            for row in conn.execution_options(stream_results=True, yield_per=5000).execute(q).mappings():
                yield dict(row)

    def usage_total(
        self, since: datetime, until: datetime, *, user: str | None = None, group: str | None = None
    ) -> dict[str, float]:
        """:func:`reports.total` of one user's or one group's sessions overlapping ``[since, until)``
        — the same sums, session by session, oldest first — read as two range scans of a covering
        index (migration 0002): the running sessions and those stopped after ``since``. A quota
        check thus costs the period's sessions, not the whole history's. The sessions are added in
        :func:`.usage.order` (start first), as :class:`.usage.UsageCache` adds them."""
        key = Session.user == user if user is not None else Session.group == group
        sqlite = self.engine.dialect.name == "sqlite"
        rows: list[tuple] = []
        with self.engine.connect() as conn:
            for cond in (Session.stop.is_(None), Session.stop > since):
                where = (key, cond, Session.start < until)
                if sqlite:
                    rows += _sqlite_usage_rows(conn, where)
                else:  # PostgreSQL: naive UTC times, without UTCDateTime's per-row processing
                    q = select(
                        type_coerce(Session.start, DateTime),
                        type_coerce(Session.stop, DateTime),
                        Session.cpu,
                        Session.memory_bytes,
                        Session.gpu,
                    )
                    rows += conn.execute(q.where(*where)).all()
        parse = datetime.fromisoformat if sqlite else (lambda t: t)
        items = [
            (parse(start), parse(stop) if stop is not None else None, c, m, g)
            for start, stop, c, m, g in rows
        ]
        items.sort(key=usage.order)
        lo, hi = usage.naive(since), usage.naive(until)
        return usage.as_usage(usage.accumulate(items, lo, hi, [0, 0.0, 0.0, 0.0, 0.0]))

    def usage_rows(
        self,
        since: datetime | None = None,
        *,
        ids: Iterable[str] | None = None,
        user: str | None = None,
        group: str | None = None,
    ) -> list[tuple[str, str, str | None, tuple]]:
        """``(id, user, group, (start, stop, cpu, memory_bytes, gpu))`` of the sessions overlapping the
        period from ``since`` (running or stopped after it), of ``ids``, of a user or a group — what
        :class:`.usage.UsageCache` holds (times naive UTC)."""
        q = select(
            Session.id,
            Session.user,
            Session.group,
            Session.start,
            Session.stop,
            Session.cpu,
            Session.memory_bytes,
            Session.gpu,
        )
        if since is not None:
            q = q.where(Session.stop.is_(None) | (Session.stop > since))
        if user is not None:
            q = q.where(Session.user == user)
        if group is not None:
            q = q.where(Session.group == group)
        wanted = list(dict.fromkeys(ids)) if ids is not None else None
        out = []
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500) if wanted is not None else (None,):
                part = q if i is None else q.where(Session.id.in_(wanted[i : i + 500]))
                for sid, u, g, start, stop, c, m, gpu in conn.execute(part):
                    row = (usage.naive(start), usage.naive(stop) if stop is not None else None, c, m, gpu)
                    out.append((sid, u, g, row))
        return out

    def usage_split(
        self, since: datetime, until: datetime, period: str, by: str
    ) -> tuple[list[tuple], Iterator[dict]]:
        """Usage of ``[since, until)`` in two parts: SQL sums (``(period label, key, sessions, seconds,
        cpu·s, memory-bytes·s, gpu·s)``) over the stopped sessions that lie inside one period and the
        window, and an iterator over every other overlapping session (running, crossing a period
        boundary or the window's edges) for :func:`reports.usage` to clip in Python."""
        key = {"user": Session.user, "group": Session.group, "profile": Session.profile}[by]
        start_label, stop_label = period_label(Session.start, period), period_label(Session.stop, period)
        inside = (
            (Session.stop.is_not(None))
            & (Session.start >= since)
            & (Session.stop <= until)
            & (start_label == stop_label)
        )
        seconds = epoch_seconds(Session.stop) - epoch_seconds(Session.start)
        q = (
            select(
                start_label,
                key,
                func.count(),
                func.sum(seconds),
                func.sum(Session.cpu * seconds),
                func.sum(Session.memory_bytes * seconds),
                func.sum(Session.gpu * seconds),
            )
            .where(inside)
            .group_by(start_label, key)
        )
        with self.engine.connect() as conn:
            sums = [tuple(r) for r in conn.execute(q)]
        rest = self.iter_sessions(since=since, until=until, usage_only=True, outside=inside)
        return sums, rest

    def events(
        self, session_id: str | None = None, *, after: int = 0, limit: int | None = None
    ) -> list[dict]:
        """Events in the order written; ``after`` (an event id) and ``limit`` page through them."""
        q = select(SessionEvent).where(SessionEvent.id > after).order_by(SessionEvent.id)
        if session_id is not None:
            q = q.where(SessionEvent.session_id == session_id)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [{**dict(r), "data": json.loads(r["data"])} for r in conn.execute(q).mappings()]

    def count(self) -> tuple[int, int]:
        """(sessions, events)."""
        with self.engine.connect() as conn:
            return (
                conn.execute(select(func.count()).select_from(Session)).scalar_one(),
                conn.execute(select(func.count()).select_from(SessionEvent)).scalar_one(),
            )

    def open_sessions(self) -> list[dict]:
        return self.sessions(running=True)

    # ---- APEL bookkeeping --------------------------------------------------------------

    def unexported(self, limit: int | None = None, after: str = "") -> list[dict]:
        """Stopped sessions that no APEL file holds yet, by id (``after``: keyset paging)."""
        q = (
            select(Session)
            .outerjoin(ApelExport, ApelExport.session_id == Session.id)
            .where(ApelExport.session_id.is_(None), Session.stop.is_not(None), Session.id > after)
            .order_by(Session.id)
        )
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def mark_exported(self, session_ids: Iterable[str], file: str, now: datetime | None = None) -> None:
        now = now or utcnow()
        rows = [{"session_id": s, "file": file, "exported": now} for s in session_ids]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(ApelExport), rows)
