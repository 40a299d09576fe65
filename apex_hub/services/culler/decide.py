"""What to do with one server: a pure function of the server model, the user's groups, now and the policy.

Order of the checks (the first that applies gives the reason):

- a server with a pending action (spawn or stop) is left alone — never stopped twice;
- a stopped server is restarted when its resolved session mode is ``always-on`` (it must have been
  started once: its ``user_options`` say which profile), else left alone;
- a running but not ready server is left alone;
- ``always-on``: never stopped;
- ``off``: stopped (reason ``session-off``; the spawner refuses new starts, this catches servers
  started before the policy changed);
- ``schedule``: started before the most recent scheduled time that is ``<= now`` (a missed tick
  still stops it; a server started after 20:00 runs until the next occurrence);
- ``max-age``: running for ``max_age`` or longer;
- ``idle``: no activity for ``idle_timeout`` or longer (no activity recorded: time since start).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ...profiles.fields import SessionMode
from ..common.units import parse_time
from .policy import CullingPolicy, ResolvedPolicy, next_shutdown, previous_shutdown

Action = Literal["keep", "stop", "restart"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str | None = None  # stop: idle / max-age / schedule / session-off; restart: always-on
    detail: str = ""
    profile: str | None = None
    dry_run: bool = False
    policy: ResolvedPolicy | None = None

    @property
    def stop(self) -> bool:
        return self.action == "stop"


def server_profile(server: dict[str, Any]) -> str | None:
    options = server.get("user_options") or {}
    profile = options.get("profile") if isinstance(options, dict) else None
    return profile if isinstance(profile, str) and profile else None


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def decide(
    server: dict[str, Any],
    groups: Iterable[str],
    now: datetime,
    policy: CullingPolicy | ResolvedPolicy,
    catalogue_mode: SessionMode | None = None,
) -> Decision:
    """``catalogue_mode``: the server's profile's ``session_mode`` in the profiles catalogue, when the
    catalogue sets one (see :meth:`CullingPolicy.resolve` for the precedence)."""
    profile = server_profile(server)
    resolved = (
        policy if isinstance(policy, ResolvedPolicy) else policy.resolve(profile, groups, catalogue_mode)
    )
    now = now if now.tzinfo else now.replace(tzinfo=UTC)

    def result(action: Action, reason: str | None = None, detail: str = "") -> Decision:
        return Decision(action, reason, detail, profile, resolved.dry_run, resolved)

    if server.get("pending"):
        return result("keep", detail=f"pending {server['pending']}")
    if server.get("stopped") or not (server.get("ready") or server.get("started")):
        if resolved.session_mode == "always-on" and server.get("user_options"):
            return result("restart", "always-on", "always-on server is not running")
        return result("keep", detail="not running")
    if not server.get("ready"):
        return result("keep", detail="not ready")
    if resolved.session_mode == "always-on":
        return result("keep", detail="always-on")
    if resolved.session_mode == "off":
        return result("stop", "session-off", "session mode is off")

    started = parse_time(server.get("started"))
    last_activity = parse_time(server.get("last_activity")) or started

    if started is not None:
        for schedule in resolved.schedules:
            tick = previous_shutdown(schedule, now)
            if started < tick:
                return result(
                    "stop",
                    "schedule",
                    f"scheduled shutdown {schedule.describe()} at {tick.isoformat()}, started {started.isoformat()}",
                )
        age = (now - started).total_seconds()
        if resolved.max_age and age >= resolved.max_age:
            return result("stop", "max-age", f"age {_fmt(age)} >= max_age {_fmt(resolved.max_age)}")
    if last_activity is not None and resolved.idle_timeout:
        inactive = (now - last_activity).total_seconds()
        if inactive >= resolved.idle_timeout:
            return result(
                "stop", "idle", f"inactive {_fmt(inactive)} >= idle_timeout {_fmt(resolved.idle_timeout)}"
            )
    return result("keep")


@dataclass(frozen=True)
class Upcoming:
    """A stop the policy will make if nothing changes: ``reason`` schedule / max-age / idle, at ``at``."""

    reason: str
    at: datetime
    detail: str
    timezone: str = "UTC"  # the schedule's zone, for telling the user


def upcoming_stops(server: dict[str, Any], now: datetime, resolved: ResolvedPolicy) -> list[Upcoming]:
    """The stops ahead of a running, on-demand server, soonest first (empty for always-on, off, dry-run
    aside: a dry run still predicts). ``idle`` assumes no further activity."""
    if server.get("pending") or not server.get("ready") or resolved.session_mode != "on-demand":
        return []
    started = parse_time(server.get("started"))
    last_activity = parse_time(server.get("last_activity")) or started
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    found: list[Upcoming] = []
    if started is not None:
        for schedule in resolved.schedules:
            tick = next_shutdown(schedule, now)
            found.append(
                Upcoming("schedule", tick, f"scheduled shutdown {schedule.describe()}", schedule.timezone)
            )
        if resolved.max_age:
            found.append(
                Upcoming(
                    "max-age",
                    started + timedelta(seconds=resolved.max_age),
                    f"max_age {_fmt(resolved.max_age)}",
                )
            )
    if last_activity is not None and resolved.idle_timeout:
        found.append(
            Upcoming(
                "idle",
                last_activity + timedelta(seconds=resolved.idle_timeout),
                f"idle_timeout {_fmt(resolved.idle_timeout)} if there is no more activity",
            )
        )
    return sorted(found, key=lambda u: u.at)
