"""Budgets per user or group per period, from a YAML file, checked against the ledger.

```yaml
period: month            # day | week (from Monday) | month — UTC calendar periods
groups:                  # usage of the sessions charged to the group (all its members together)
  apex-small: {cpu_hours: 500}
  gpu-users: {gpu_hours: 40, cpu_hours: 2000}
users:                   # usage of the user's own sessions
  alice: {cpu_hours: 50}
default: {cpu_hours: 100}  # users with no budget of their own (optional)
```

Metrics: ``cpu_hours``, ``memory_gib_hours``, ``gpu_hours``, ``wall_hours`` (as in the reports). A user
may start a server while every budget that applies to them (their own — or ``default`` — and each of
their groups') is below its limit; running sessions count up to now.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from ...profiles.yamlsafe import load as load_yaml
from .db import Ledger
from .reports import next_period, period_start

METRICS = {
    "cpu_hours": "CPU-hours",
    "memory_gib_hours": "GiB-hours of memory",
    "gpu_hours": "GPU-hours",
    "wall_hours": "server-hours",
}
BUDGET_NAMES = {
    "cpu_hours": "CPU-hour",
    "memory_gib_hours": "memory (GiB-hour)",
    "gpu_hours": "GPU-hour",
    "wall_hours": "server-hour",
}
PERIODS = ("day", "week", "month")
#: the current quota warnings, written by the service every round, read by the hub's banner
WARNINGS_FILE = "quota-warnings.json"


class QuotaError(ValueError):
    pass


def _budget(where: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise QuotaError(f"{where}: expected a mapping such as {{cpu_hours: 500}}, got {value!r}")
    out = {}
    for k, v in value.items():
        if k not in METRICS:
            raise QuotaError(f"{where}.{k}: unknown metric; use one of {', '.join(METRICS)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise QuotaError(f"{where}.{k}: expected a number ≥ 0, got {v!r}")
        out[k] = float(v)
    return out


def _start(t: datetime, period: str) -> datetime:
    if period == "week":
        day = period_start(t, "day")
        return day - timedelta(days=day.weekday())
    return period_start(t, period)


def period_since(t: datetime, period: str) -> datetime:
    """The start of the quota period (``day``, ``week``, ``month``) that ``t`` is in."""
    return _start(t, period)


def _next(t: datetime, period: str) -> datetime:
    return t + timedelta(days=7) if period == "week" else next_period(t, period)


@dataclass
class Limit:
    scope: str  # "user" | "group" | "default"
    name: str
    metric: str
    budget: float
    usage: float

    @property
    def over(self) -> bool:
        return self.usage >= self.budget

    @property
    def fraction(self) -> float:
        return self.usage / self.budget if self.budget else (1.0 if self.usage else 0.0)

    def describe(self, period: str) -> str:
        who = f"group {self.name}'s" if self.scope == "group" else f"{self.name}'s"
        unit = METRICS[self.metric]
        used = f"{self.usage:.2f}" if self.usage >= 0.1 or self.usage == 0 else f"{self.usage:.2g}"
        return f"{who} budget of {self.budget:g} {unit} per {period}, used {used}"


def _amount(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.3g}"


def period_label(period: str, since: datetime) -> str:
    """``December`` (month), ``the week of 2026-11-30`` (week), ``2026-12-02`` (day)."""
    if period == "month":
        return since.strftime("%B")
    return f"the week of {since.date()}" if period == "week" else str(since.date())


@dataclass
class QuotaStatus:
    user: str
    period: str
    since: datetime
    reset: datetime
    limits: list[Limit] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not any(lim.over for lim in self.limits)

    @property
    def fraction(self) -> float:
        return max((lim.fraction for lim in self.limits), default=0.0)

    @property
    def message(self) -> str:
        if not self.limits:
            return f"{self.user} has no budget"
        worst = max(self.limits, key=lambda lim: lim.fraction)
        reset = self.reset.strftime("%Y-%m-%d %H:%M UTC")
        if self.allowed:
            return f"within budget: {worst.describe(self.period)}; resets {reset}"
        over = [lim for lim in self.limits if lim.over]
        return (
            "Usage budget exhausted: "
            + "; ".join(lim.describe(self.period) for lim in over)
            + f". It resets on {reset}."
        )

    def warning_text(self, lim: Limit, *, stop: bool) -> str:
        """What the user reads about one budget near or over its limit."""
        used = f"{_amount(lim.usage)} of {lim.budget:g} {METRICS[lim.metric]}" + (
            f", group {lim.name}" if lim.scope == "group" else ""
        )
        what = f"your {BUDGET_NAMES[lim.metric]} budget for {period_label(self.period, self.since)} ({used})"
        reset = f"It resets on {self.reset.strftime('%Y-%m-%d %H:%M UTC')}."
        if lim.over:
            then = "new servers cannot be started" + (" and running servers are stopped" if stop else "")
            return f"You have used up {what}: {then}. {reset}"
        then = "servers are stopped" if stop else "new servers cannot be started"
        return f"You have used {int(lim.fraction * 100)}% of {what}; {then} when it is used up. {reset}"

    def warning(self, fraction: float, *, stop: bool) -> dict | None:
        """The user's quota warning (the budgets at ``fraction`` of their limit or over it), or None."""
        near = sorted(
            (lim for lim in self.limits if lim.over or lim.fraction >= fraction),
            key=lambda lim: -lim.fraction,
        )
        if not near:
            return None
        budgets = [
            {
                "scope": lim.scope,
                "name": lim.name,
                "metric": lim.metric,
                "budget": lim.budget,
                "usage": round(lim.usage, 6),
                "fraction": round(lim.fraction, 4),
                "message": self.warning_text(lim, stop=stop),
            }
            for lim in near
        ]
        return {
            "user": self.user,
            "allowed": self.allowed,
            "period": self.period,
            "since": self.since.isoformat(),
            "reset": self.reset.isoformat(),
            "fraction": budgets[0]["fraction"],
            "message": " ".join(b["message"] for b in budgets),
            "budgets": budgets,
        }

    def as_dict(self) -> dict:
        return {
            "user": self.user,
            "allowed": self.allowed,
            "period": self.period,
            "since": self.since.isoformat(),
            "reset": self.reset.isoformat(),
            "message": self.message,
            "budgets": [
                {
                    "scope": lim.scope,
                    "name": lim.name,
                    "metric": lim.metric,
                    "budget": lim.budget,
                    "usage": round(lim.usage, 6),
                }
                for lim in self.limits
            ],
        }


@dataclass
class Quotas:
    period: str = "month"
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    users: dict[str, dict[str, float]] = field(default_factory=dict)
    default: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str = "quotas") -> Quotas:
        if not isinstance(data, dict):
            raise QuotaError(f"{source}: expected a mapping with period, groups, users, default")
        unknown = set(data) - {"period", "groups", "users", "default"}
        if unknown:
            raise QuotaError(
                f"{source}: unknown field(s) {', '.join(sorted(unknown))}; use period, groups, users, default"
            )
        period = data.get("period", "month")
        if period not in PERIODS:
            raise QuotaError(f"{source}: period: {period!r} is not one of {', '.join(PERIODS)}")
        sections = {}
        for sec in ("groups", "users"):
            value = data.get(sec) or {}
            if not isinstance(value, dict):
                raise QuotaError(f"{source}: {sec}: expected a mapping of names to budgets")
            sections[sec] = {str(k): _budget(f"{source}: {sec}.{k}", v) for k, v in value.items()}
        default = _budget(f"{source}: default", data["default"]) if data.get("default") else {}
        return cls(period, sections["groups"], sections["users"], default)

    @classmethod
    def load(cls, path: str | Path) -> Quotas:
        path = Path(path)
        try:
            data = load_yaml(path.read_text()) or {}  # no aliases: a small file cannot expand without bound
        except yaml.YAMLError as exc:
            raise QuotaError(f"{path.name}: not valid YAML: {exc}") from None
        return cls.from_dict(data, path.name)

    def check(
        self, ledger: Ledger, user: str, groups: list[str], *, now: datetime, cache: dict | None = None
    ) -> QuotaStatus | None:
        """The user's budgets and usage this period; None when no budget applies.

        ``cache``: the groups' usage already computed at this ``now`` (:meth:`check_many` passes one,
        so that a group's usage is read once however many of its members are checked)."""
        since = _start(now, self.period)
        reset = _next(since, self.period)
        status = QuotaStatus(user, self.period, since, reset)
        own = self.users.get(user)
        scopes = (
            [("user", user, own, {"user": user})]
            if own
            else ([("default", user, self.default, {"user": user})] if self.default else [])
        )
        scopes += [("group", g, self.groups[g], {"group": g}) for g in groups if g in self.groups]
        for scope, name, budget, query in scopes:
            used = cache.get(name) if cache is not None and scope == "group" else None
            if used is None:
                used = ledger.usage_total(since, now, **query)
                if cache is not None and scope == "group":
                    cache[name] = used
            status.limits += [
                Limit(scope, name, metric, limit, used[metric]) for metric, limit in budget.items()
            ]
        return status if status.limits else None

    def check_many(
        self, ledger: Ledger, users: dict[str, list[str]], *, now: datetime
    ) -> dict[str, QuotaStatus | None]:
        """:meth:`check` for many users (user → groups) at one ``now``: each group's usage once."""
        cache: dict[str, dict[str, float]] = {}
        return {
            user: self.check(ledger, user, groups, now=now, cache=cache) for user, groups in users.items()
        }


def warning_html(warning: dict) -> list[str]:
    """A user's quota warning (:meth:`QuotaStatus.warning`) as HTML lines, one per budget."""
    return [html.escape(b["message"]) for b in warning.get("budgets", [])]


def warning_lines(data: dict, name: str) -> list[str]:
    """``name``'s quota warning in the service's quota-warnings.json, as lines of the hub's banner."""
    return warning_html((data.get("users") or {}).get(name) or {})
