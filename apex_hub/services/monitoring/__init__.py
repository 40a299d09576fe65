"""Hub-managed monitoring: a synthetic probe through the proxy, component health, Prometheus
metrics, a JSON status with Nagios codes and an HTML status page.

Run by the hub as ``python -m apex_hub.services.monitoring --public-url URL --profile SLUG``;
added with ``apex_hub.services.configure(c, monitoring={...})``.
"""

from .probe import TOKEN_NOTE, Hub, PhaseFailed, Probe, ProbeSettings
from .service import Metrics, MonitoringService, Settings
from .status import (
    CRITICAL,
    NAMES,
    OK,
    PHASES,
    UNKNOWN,
    WARNING,
    Check,
    ProbeResult,
    overall,
    probe_verdict,
    worst,
)

__all__ = [
    "CRITICAL",
    "NAMES",
    "OK",
    "PHASES",
    "TOKEN_NOTE",
    "UNKNOWN",
    "WARNING",
    "Check",
    "Hub",
    "Metrics",
    "MonitoringService",
    "PhaseFailed",
    "Probe",
    "ProbeResult",
    "ProbeSettings",
    "Settings",
    "overall",
    "probe_verdict",
    "worst",
]
