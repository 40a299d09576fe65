"""Nagios-compatible status codes, probe results, staleness and the overall verdict (pure, no I/O)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# how bad a code is when codes are combined: CRITICAL > WARNING > UNKNOWN > OK
_SEVERITY = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}

PHASES = ("spawn_request", "server_ready", "proxy", "kernel", "stop")


def worst(codes) -> int:
    """The most severe of ``codes`` (OK when there are none)."""
    return max(codes, key=_SEVERITY.__getitem__, default=OK)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclass
class ProbeResult:
    """One synthetic probe: when, the verdict, the phase that failed and how long each phase took."""

    id: int
    started: float
    finished: float | None = None
    code: int = UNKNOWN
    message: str = ""
    failed_phase: str | None = None
    phases: dict[str, float] = field(default_factory=dict)  # seconds, in PHASES order
    profile: str = ""
    events: list[str] = field(default_factory=list)  # the spawn's progress messages (last few)

    @property
    def status(self) -> str:
        return NAMES[self.code]

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(status=self.status, started_at=iso(self.started), finished_at=iso(self.finished))
        return data

    @classmethod
    def from_json(cls, data: dict) -> ProbeResult:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Check:
    """The last result of one component check."""

    code: int
    message: str
    checked: float

    def to_json(self) -> dict:
        return {
            "code": self.code,
            "status": NAMES[self.code],
            "message": self.message,
            "checked_at": iso(self.checked),
        }


def probe_verdict(last: ProbeResult | None, now: float, stale_after: float, since: float) -> Check:
    """The probe's part of the status: its last result, CRITICAL once that is older than ``stale_after``.

    ``since`` is when the service started: with no result at all the probe is UNKNOWN for
    ``stale_after`` seconds, then CRITICAL (a probe that never finishes must not stay unknown).
    """
    if last is None or last.finished is None:
        age = now - since
        if age > stale_after:
            return Check(CRITICAL, f"no probe result in {age:.0f}s (stale after {stale_after:g}s)", now)
        return Check(UNKNOWN, "no probe result yet", now)
    age = now - last.finished
    if age > stale_after:
        return Check(
            CRITICAL,
            f"last probe result is stale: {age:.0f}s old (stale after {stale_after:g}s); "
            f"it was {last.status}: {last.message}",
            now,
        )
    return Check(last.code, last.message, last.finished)


def overall(probe: Check, components: dict[str, Check]) -> tuple[int, str]:
    """The service's verdict: the worst code; the message names every part that is not OK."""
    parts = {"probe": probe, **components}
    code = worst(c.code for c in parts.values())
    bad = [f"{name}: {c.message}" for name, c in parts.items() if c.code != OK]
    return code, "; ".join(bad) if bad else "all checks OK"
