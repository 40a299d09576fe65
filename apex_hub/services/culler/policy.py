"""The culling and session policy file: model, validation at load, resolution, schedules.

The file (YAML) has three sections, all optional::

    defaults:                      # applies to every server
      idle_timeout: 2h             # "90s", "30m", "2h", "1d", "1h30m", or seconds; 0 / never: no idle culling
      max_age: 1d                  # same format; 0 / never: no limit
      schedule:                    # scheduled shutdown (optional)
        cron: "0 20 * * 1-5"       # weekdays at 20:00 ...
        timezone: Europe/Rome      # ... in Rome (IANA name; default UTC)
      session_mode: on-demand      # off | on-demand | always-on
                                   # (a section can switch a schedule off with `schedule: never`)
      dry_run: false               # log and record what would be stopped, stop nothing
    profiles:
      gpu: {idle_timeout: 30m, max_age: 8h}
    groups:
      operations: {session_mode: always-on}

Resolution, field by field (a field left out or ``null`` is "not set" and inherits):

1. the server's **profile** section (``user_options["profile"]``), if it sets the field;
2. else the sections of the user's **groups** that set the field, combined *strictly*:
   the shortest ``idle_timeout`` and ``max_age`` (a ``0`` — "no limit" — only wins when no other
   group sets a limit), every group's ``schedule`` applies, ``session_mode`` off > on-demand >
   always-on, ``dry_run`` true if any group says so;
3. else ``defaults``; else the built-in defaults (no idle timeout, no max age, no schedule,
   on-demand, not dry-run).

``session_mode`` can also come from the **profiles catalogue** (a profile's ``session_mode``, when the
catalogue writes one for it, directly or through its ``defaults``). It sits between the groups and
``defaults``: policy ``profiles.<slug>`` > policy ``groups`` > catalogue > policy ``defaults``. A
catalogue ``off`` always wins: the spawner refuses to start such a profile, so no policy section
can make it always-on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ...profiles.fields import SessionMode
from ...profiles.yamlsafe import load as load_yaml
from ..common.units import parse_duration

_MODE_STRICTNESS = {"off": 0, "on-demand": 1, "always-on": 2}


class PolicyError(ValueError):
    """An invalid policy file: the message names the file, the section path and the field."""


class Schedule(BaseModel):
    """A scheduled shutdown: servers started before the most recent occurrence are stopped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        value = value.strip()
        if len(value.split()) != 5:
            raise ValueError(
                f"invalid cron expression {value!r}: need 5 fields (minute hour day-of-month month day-of-week),"
                " e.g. '0 20 * * 1-5'"
            )
        if not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as 'Europe/Rome' or 'UTC'"
            ) from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe(self) -> str:
        return f"{self.cron!r} {self.timezone}"


class Rule(BaseModel):
    """One section (defaults, a profile, a group). ``None`` means "not set here"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    idle_timeout: float | None = None
    max_age: float | None = None
    schedule: Schedule | Literal[False] | None = None  # false / "never": no scheduled shutdown here
    session_mode: SessionMode | None = None
    dry_run: bool | None = None

    @field_validator("schedule", mode="before")
    @classmethod
    def _no_schedule(cls, value: Any) -> Any:
        if value is False or (isinstance(value, str) and value.strip().lower() in ("never", "none", "off")):
            return False
        return value

    @field_validator("idle_timeout", "max_age", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)


@dataclass(frozen=True)
class ResolvedPolicy:
    """The policy that applies to one server. Durations in seconds; 0 = no limit."""

    idle_timeout: float = 0.0
    max_age: float = 0.0
    schedules: tuple[Schedule, ...] = ()
    session_mode: SessionMode = "on-demand"
    dry_run: bool = False
    sources: tuple[str, ...] = ()  # which sections contributed, e.g. ("profiles.gpu", "groups.ops")


def _strictest_limit(values: list[float]) -> float | None:
    if not values:
        return None
    limits = [v for v in values if v > 0]
    return min(limits) if limits else 0.0


class CullingPolicy(BaseModel):
    """The whole policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: Rule = Field(default_factory=Rule)
    profiles: dict[str, Rule] = Field(default_factory=dict)
    groups: dict[str, Rule] = Field(default_factory=dict)

    # ---- loading ----------------------------------------------------------------------

    @classmethod
    def from_data(cls, data: Any, source: str = "policy") -> CullingPolicy:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise PolicyError(f"{source}: the policy must be a mapping with defaults/profiles/groups")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                parts = [str(p) for p in err["loc"]]
                if "literal[False]" in parts:  # the `schedule: never` alternative: not what was meant
                    if len(exc.errors()) > 1:
                        continue
                    err = {**err, "msg": "write a mapping {cron, timezone} or 'never'"}
                loc = ".".join(p for p in parts if p not in ("Schedule", "literal[False]"))
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    msg = "unknown field"
                lines.append(f"{source}: {loc}: {msg}")
            raise PolicyError("\n".join(lines)) from None

    @classmethod
    def load(cls, path: str | Path) -> CullingPolicy:
        path = Path(path)
        try:
            data = load_yaml(path.read_text())  # no aliases: a small file cannot expand without bound
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read the policy file: {exc}") from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_data(data, source=str(path))

    # ---- resolution -------------------------------------------------------------------

    @property
    def may_restart(self) -> bool:
        """Whether any section makes servers always-on (then stopped servers must be listed too)."""
        rules = [self.defaults, *self.profiles.values(), *self.groups.values()]
        return any(r.session_mode == "always-on" for r in rules)

    _resolved: dict = PrivateAttr(default_factory=dict)  # (profile, groups, catalogue_mode) -> ResolvedPolicy

    def resolve(
        self, profile: str | None, groups: Iterable[str] = (), catalogue_mode: SessionMode | None = None
    ) -> ResolvedPolicy:
        """The policy for one server; ``catalogue_mode``: the profile's session_mode in the catalogue
        (only when the catalogue sets it), see the module docstring for its precedence. Memoised:
        thousands of servers share a few (profile, groups) combinations."""
        key = (profile, tuple(sorted(g for g in set(groups) if g in self.groups)), catalogue_mode)
        found = self._resolved.get(key)
        if found is None:
            if len(self._resolved) > 10_000:
                self._resolved.clear()
            found = self._resolved[key] = self._resolve(profile, key[1], catalogue_mode)
        return found

    def _resolve(
        self, profile: str | None, groups: tuple[str, ...], catalogue_mode: SessionMode | None
    ) -> ResolvedPolicy:
        prof = self.profiles.get(profile) if profile else None
        grules = [(g, self.groups[g]) for g in groups]
        sources: list[str] = []
        if prof is not None:
            sources.append(f"profiles.{profile}")
        sources += [f"groups.{g}" for g, _ in grules]

        def pick(field: str, combine):
            if prof is not None and getattr(prof, field) is not None:
                return getattr(prof, field)
            values = [getattr(r, field) for _, r in grules if getattr(r, field) is not None]
            if values:
                return combine(values)
            return getattr(self.defaults, field)

        idle = pick("idle_timeout", _strictest_limit)
        max_age = pick("max_age", _strictest_limit)
        schedules = pick("schedule", lambda v: tuple(dict.fromkeys(x for x in v if x)))
        if isinstance(schedules, Schedule):
            schedules = (schedules,)
        elif not schedules:
            schedules = ()
        mode = pick("session_mode", lambda v: min(v, key=_MODE_STRICTNESS.__getitem__))
        if catalogue_mode is not None:
            policy_set = (prof is not None and prof.session_mode is not None) or any(
                r.session_mode is not None for _, r in grules
            )
            if catalogue_mode == "off" or not policy_set:
                mode = catalogue_mode
                sources.append(f"catalogue.{profile or 'default'}")
        dry = pick("dry_run", any)
        return ResolvedPolicy(
            idle_timeout=idle or 0.0,
            max_age=max_age or 0.0,
            schedules=tuple(schedules or ()),
            session_mode=mode or "on-demand",
            dry_run=bool(dry),
            sources=tuple(sources) or ("defaults",),
        )


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@lru_cache(maxsize=1024)  # one round asks the same (schedule, now) for every server
def next_shutdown(schedule: Schedule, after: datetime) -> datetime:
    """The first scheduled time strictly after ``after`` (aware, in the schedule's zone)."""
    local = _aware(after).astimezone(schedule.zone)
    return croniter(schedule.cron, local).get_next(datetime)


@lru_cache(maxsize=1024)
def previous_shutdown(schedule: Schedule, at: datetime) -> datetime:
    """The most recent scheduled time ``<= at`` (aware, in the schedule's zone)."""
    local = _aware(at).astimezone(schedule.zone)
    # croniter's get_prev is strictly before; nudge by a second so that "exactly at" counts.
    return croniter(schedule.cron, local + timedelta(seconds=1)).get_prev(datetime)
