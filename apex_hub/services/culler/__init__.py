"""Hub-managed culling service: per-profile / per-group idle timeouts, max ages, scheduled
shutdowns, session modes, dry-run and stop reasons; one listing of the hub's users per round.

Run by the hub as ``python -m apex_hub.services.culler --policy culling.yaml --state-dir DIR`` (a managed
service that ``apex_hub.services.configure(c, culler={...})`` sets up).
"""

from .announce import UPCOMING_FILE, UpcomingAnnouncement
from .decide import Decision, Upcoming, decide, upcoming_stops
from .policy import (
    CullingPolicy,
    PolicyError,
    ResolvedPolicy,
    Rule,
    Schedule,
    next_shutdown,
    parse_duration,
    previous_shutdown,
)
from .restarts import RestartLimiter
from .service import STOP_REASONS_FILE, CullerService, HubClient, StopLog

__all__ = [
    "STOP_REASONS_FILE",
    "UPCOMING_FILE",
    "CullerService",
    "CullingPolicy",
    "Decision",
    "HubClient",
    "PolicyError",
    "ResolvedPolicy",
    "RestartLimiter",
    "Rule",
    "Schedule",
    "StopLog",
    "Upcoming",
    "UpcomingAnnouncement",
    "decide",
    "next_shutdown",
    "parse_duration",
    "previous_shutdown",
    "upcoming_stops",
]
