"""Hub-managed services. ``configure(c, culler={...})`` from ``jupyterhub_config.py``."""

from __future__ import annotations

from typing import Any

from ..hubconfig import current_list as _current_list

CULLER_SCOPES = [
    "list:users",  # GET /users
    "read:users:name",
    "read:users:groups",  # group policies
    "read:users:activity",
    "read:servers",  # server models: started, last_activity, pending, user_options
    "delete:servers",  # stop
]
RESTART_SCOPE = "start:servers"  # restart always-on servers (JupyterHub 6; 5.5 has only "servers")


def restart_scope() -> str:
    """The scope that lets the culler restart always-on servers on the installed JupyterHub."""
    from .culler.config import restart_scope as resolve

    return resolve(RESTART_SCOPE, quiet=True)


def configure(
    c: Any, culler: dict | None = None, monitoring: dict | None = None, accounting: dict | None = None
) -> None:
    """Add the APEx services to a JupyterHub config ``c``.

    ``culler``: the culling service's options (``policy`` is required). The keys are the traits of
    :class:`apex_hub.services.culler.app.CullerApp` tagged ``configure`` (passed on the service's
    command line) and those of :class:`~apex_hub.services.culler.app.CullerHubOptions` (the hub's
    side); each value is checked by its trait, and an unknown key is refused with the known ones
    named. The docs' services reference lists them, generated from the traits.

    The policy (and the profiles catalogue it reads) is validated here too, so that a bad cron
    expression / time zone stops the hub from starting with a clear message instead of a service
    crash loop.

    ``monitoring``: the monitoring service's options (``profile`` is required), in the same way from
    :class:`apex_hub.services.monitoring.app.MonitoringApp` and ``MonitoringHubOptions``.

    ``accounting``: the accounting service's options, in the same way from
    :class:`apex_hub.services.accounting.app.AccountingApp` and ``AccountingHubOptions``.

    The culler's stop warnings (``warn_before``) and the accounting service's quota warnings
    (``quotas``) reach the user through one ``c.JupyterHub.template_vars["announcement"]``
    (:class:`apex_hub.services.announce.HubAnnouncement`, one source per service; an operator's
    announcement text is kept and shown after them).
    """
    if culler is not None:
        from .culler.config import configure_culler

        configure_culler(
            c, culler, scopes=CULLER_SCOPES, restart_scope_name=RESTART_SCOPE, current_list=_current_list
        )
    if monitoring is not None:
        from .monitoring.config import configure_monitoring

        configure_monitoring(c, monitoring, current_list=_current_list)
    if accounting is not None:
        from .accounting.config import configure_accounting

        configure_accounting(c, accounting, current_list=_current_list)
