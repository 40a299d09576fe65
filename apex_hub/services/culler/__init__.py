"""Hub-managed culling service: per-profile / per-group idle timeouts, max ages, scheduled
shutdowns, session modes, dry-run and stop reasons, on top of jupyterhub-idle-culler.

Run by the hub as ``python -m apex_hub.services.culler --policy culling.yaml --state-dir DIR``.
"""

from .decide import Decision, decide
from .policy import (CullingPolicy, PolicyError, ResolvedPolicy, Rule, Schedule, next_shutdown,
                     parse_duration, previous_shutdown)
from .service import STOP_REASONS_FILE, CullerService, HubClient, StopLog

__all__ = [
    "CullerService", "CullingPolicy", "Decision", "HubClient", "PolicyError", "ResolvedPolicy", "Rule",
    "STOP_REASONS_FILE", "Schedule", "StopLog", "decide", "next_shutdown", "parse_duration",
    "previous_shutdown",
]
