"""Usage reports: CPU-, memory- and GPU-hours per user, group and profile per day or month.

Units (requested resources × wall time, clipped to each period; running sessions count up to now):

* ``cpu_hours`` — requested CPU cores × hours (a session requesting 2 cores for 30 minutes: 1.0);
* ``memory_gib_hours`` — requested memory in GiB (2³⁰ bytes) × hours;
* ``gpu_hours`` — requested GPUs × hours;
* ``wall_hours`` — hours; ``sessions`` — sessions overlapping the period.

Periods are UTC calendar days (``2026-11-23``) or months (``2026-11``).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

GIB = 1024**3
KEYS = ("user", "group", "profile")
METRICS = ("sessions", "wall_hours", "cpu_hours", "memory_gib_hours", "gpu_hours")


def period_start(t: datetime, period: str) -> datetime:
    t = t.astimezone(UTC)
    if period == "day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"period must be 'day' or 'month', not {period!r}")


def next_period(t: datetime, period: str) -> datetime:
    if period == "day":
        return t + timedelta(days=1)
    return (t.replace(day=28) + timedelta(days=4)).replace(day=1)


def period_label(t: datetime, period: str) -> str:
    return t.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


def session_usage(s: dict, since: datetime, until: datetime) -> dict[str, float]:
    """One session's usage inside ``[since, until)``."""
    start, stop = max(s["start"], since), min(s["stop"] or until, until)
    hours = max((stop - start).total_seconds(), 0.0) / 3600.0
    return {
        "wall_hours": hours,
        "cpu_hours": s["cpu"] * hours,
        "memory_gib_hours": s["memory_bytes"] / GIB * hours,
        "gpu_hours": s["gpu"] * hours,
    }


def ledger_usage(
    ledger, *, since: datetime, until: datetime, period: str = "month", by: str = "user"
) -> list[dict]:
    """:func:`usage` over the ledger: stopped sessions inside one period are summed in SQL, the rest
    (running, crossing a period boundary or the window's edges) are clipped here."""
    if by not in KEYS or period not in ("day", "month"):
        raise ValueError(
            f"by must be one of {', '.join(KEYS)} and period day or month, not {by!r}, {period!r}"
        )
    sums, rest = ledger.usage_split(since, until, period, by)
    acc: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0])
    for label, key, n, seconds, cpu_s, mem_s, gpu_s in sums:
        row = acc[(label, key or "")]
        row[0] += n
        row[1] += (seconds or 0) / 3600.0
        row[2] += (cpu_s or 0) / 3600.0
        row[3] += (mem_s or 0) / GIB / 3600.0
        row[4] += (gpu_s or 0) / 3600.0
    return usage(rest, since=since, until=until, period=period, by=by, acc=acc)


def usage(
    sessions: Iterable[dict],
    *,
    since: datetime,
    until: datetime,
    period: str = "month",
    by: str = "user",
    acc: dict | None = None,
) -> list[dict]:
    """Rows ``{period, <by>, sessions, wall_hours, cpu_hours, memory_gib_hours, gpu_hours}``, sorted.
    ``acc``: sums to add to (from :func:`ledger_usage`)."""
    if by not in KEYS:
        raise ValueError(f"by must be one of {', '.join(KEYS)}, not {by!r}")
    if acc is None:
        acc = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0])
    for s in sessions:
        lo, hi = max(s["start"], since), min(s["stop"] or until, until)
        if hi < lo or (hi == lo and not since <= s["start"] < until):
            continue
        p = period_start(lo, period)
        while True:
            end = next_period(p, period)
            u = session_usage(s, max(p, lo), min(end, hi))
            row = acc[(period_label(p, period), s[by] or "")]
            row[0] += 1
            row[1] += u["wall_hours"]
            row[2] += u["cpu_hours"]
            row[3] += u["memory_gib_hours"]
            row[4] += u["gpu_hours"]
            p = end
            if p >= hi:
                break
    return [
        {
            "period": k[0],
            by: k[1],
            **{m: (v if m == "sessions" else round(v, 6)) for m, v in zip(METRICS, vals)},
        }
        for k, vals in sorted(acc.items())
    ]


def total(sessions: Iterable[dict], *, since: datetime, until: datetime) -> dict[str, float]:
    out = dict.fromkeys(METRICS[1:], 0.0)
    n = 0
    for s in sessions:
        n += 1
        for k, v in session_usage(s, since, until).items():
            out[k] += v
    return {"sessions": n, **out}


SESSION_FIELDS = (
    "id",
    "user",
    "group",
    "profile",
    "server",
    "namespace",
    "pod",
    "image",
    "cpu",
    "memory_bytes",
    "gpu",
    "pvc_bytes",
    "start",
    "stop",
    "stop_reason",
    "status",
)


def session_json(s: dict) -> dict:
    out = {k: s.get(k) for k in SESSION_FIELDS}
    for k in ("start", "stop"):
        out[k] = s[k].isoformat() if s.get(k) else None
    return out


#: What a spreadsheet takes as the start of a formula in a text cell (OWASP "CSV injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text value a spreadsheet shows as text: a leading formula character gets a ``'`` in front.

    User names, groups and profiles come from users and identity providers: ``=HYPERLINK(...)`` as a
    user name must not become a live formula in an operator's spreadsheet. Numbers stay numbers.
    """
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(rows: list[dict], fields: Iterable[str]) -> str:
    buf = io.StringIO()
    # CRLF (RFC 4180): a field holding a lone CR or LF is then quoted, so it cannot split a row
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(v) for k, v in r.items()})
    return buf.getvalue()


def parse_when(text: str | None, default: datetime) -> datetime:
    """``2026-11``, ``2026-11-23`` or an ISO time (UTC when no zone) → aware datetime."""
    if not text:
        return default
    if len(text) == 7:
        text += "-01"
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)
