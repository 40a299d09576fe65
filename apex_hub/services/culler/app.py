"""``python -m apex_hub.services.culler``: the culler's options, as a traitlets Application.

Every option is a trait below (command line ``--policy=FILE``, a config file ``c.CullerApp.policy``,
or ``configure(c, culler={"policy": ...})`` for the ones tagged ``configure``); ``--help-all`` lists
them and the docs' option reference is generated from them. :class:`CullerHubOptions` holds the
``configure()`` keys that shape the hub's side (service name, URL, roles, banner).

Exit code 2 (before anything is stopped) when the policy file is invalid: bad cron expression,
unknown time zone, bad duration, unknown field — the message names the section and the field.
``--check`` validates the policy (and the profiles catalogue given with ``--profiles``) and exits.

When the hub gives the service a ``url`` (``JUPYTERHUB_SERVICE_URL``), it also serves
``api/upcoming`` under its prefix (the stops ahead of the caller's own servers).

Tests move the culler's clock ahead with the environment variable ``APEX_CULLER_CLOCK_OFFSET``
(e.g. ``1h``), so that they see an idle or scheduled stop without waiting for it. It is not an option
(not on the command line, not in a config file): never set it in production, servers would be
stopped early.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from traitlets import Dict, Int, List, Unicode, default

from ..common.app import HubOptions, ServiceApp
from ..common.listen import configured_url
from ..common.traits import Duration, Switch
from .policy import CullingPolicy, PolicyError

CLOCK_OFFSET_ENV = "APEX_CULLER_CLOCK_OFFSET"


class CullerApp(ServiceApp):
    name = "apex-culler"
    label = "apex culler"
    description = (
        "The APEx culling service: per-profile and per-group idle timeouts, max ages, scheduled"
        " shutdowns and session modes, with stop reasons; run by the hub as a managed service."
    )

    policy = Unicode(
        help="The policy file (YAML; see the culling policy reference). Required."
        " Default: environment APEX_CULLER_POLICY.",
    ).tag(config=True, configure=True)

    @default("policy")
    def _policy_default(self):
        return os.environ.get("APEX_CULLER_POLICY", "")

    state_dir = Unicode(
        help="Where stop-reasons.jsonl is appended and upcoming.json written. Default: environment"
        " APEX_CULLER_STATE_DIR, else the working directory (the hub's, for a managed service).",
    ).tag(config=True, configure=True)

    @default("state_dir")
    def _state_dir_default(self):
        return os.environ.get("APEX_CULLER_STATE_DIR", ".")

    interval = Duration(60.0, help="Time between rounds: seconds, or e.g. '1m'.").tag(
        config=True, configure=True
    )

    dry_run = Switch(
        False, help="Log and record what would be stopped, stop nothing (--dry-run or --dry-run=true)."
    ).tag(config=True, configure=True)

    profiles_file = Unicode(
        None,
        allow_none=True,
        help="The profiles catalogue: its profiles' session_mode applies (policy sections override it);"
        " re-read when it changes. Default: environment APEX_CULLER_PROFILES; configure() passes"
        " c.APExSpawner.profiles_file unless this is given ('' for none).",
    ).tag(config=True, configure=True, cli="profiles")

    @default("profiles_file")
    def _profiles_default(self):
        return os.environ.get("APEX_CULLER_PROFILES") or None

    warn_before = Duration(
        0.0,
        help="Record a warning (ledger, hub-page banner, api/upcoming) this long before a schedule or"
        " max-age stop, e.g. '15m'; 0: no warnings.",
    ).tag(config=True, configure=True)

    restart_limit = Int(
        3, help="At most this many always-on restarts of one server per restart_window (at least 1)."
    ).tag(config=True, configure=True)

    restart_window = Duration(3600.0, help="The window of restart_limit, e.g. '1h'.").tag(
        config=True, configure=True
    )

    restart_backoff = Duration(
        60.0, help="Wait after a failed restart, doubled after each further failure (capped at the window)."
    ).tag(config=True, configure=True)

    bind = Unicode(
        None,
        allow_none=True,
        help="[host:]port for api/upcoming. Default: environment APEX_CULLER_BIND, else the port of"
        " JUPYTERHUB_SERVICE_URL.",
    ).tag(config=True)

    @default("bind")
    def _bind_default(self):
        return os.environ.get("APEX_CULLER_BIND") or None

    once = Switch(False, help="Run one round and exit.").tag(config=True)

    check = Switch(False, help="Validate the policy file (and the profiles catalogue) and exit.").tag(
        config=True
    )

    concurrency = Int(10, help="Stop requests in flight at once.").tag(config=True)

    api_page_size = Int(
        0, help="Users per page of the hub's user listing (0: the hub's default page size)."
    ).tag(config=True)

    def clock_offset(self) -> float:
        """Seconds the clock runs ahead: tests only, from APEX_CULLER_CLOCK_OFFSET (never an option)."""
        from ..common.units import parse_duration

        return parse_duration(os.environ.get(CLOCK_OFFSET_ENV) or 0)

    def load(self) -> tuple[CullingPolicy | None, int]:
        """The policy, and 0 — or None and the exit code after saying what is wrong."""
        if not self.policy:
            return None, self.fail("--policy (or APEX_CULLER_POLICY) is required")
        try:
            policy = CullingPolicy.load(self.policy)
        except PolicyError as exc:
            return None, self.fail(f"invalid policy:\n{exc}")
        if self.profiles_file:
            from ...profiles.catalogue import Catalogue
            from ...profiles.errors import CatalogueError

            try:
                Catalogue.from_file(self.profiles_file)
            except CatalogueError as exc:
                return None, self.fail(f"invalid profiles catalogue:\n{exc}")
        if self.restart_limit < 1:
            return None, self.fail("--restart-limit must be at least 1")
        return policy, 0

    def make_service(self, policy: CullingPolicy):
        from .restarts import RestartLimiter
        from .service import CullerService, utcnow

        clock = utcnow
        offset = self.clock_offset()
        if offset:
            logging.getLogger("apex_hub.culler").warning(
                "TEST ONLY: the culler's clock runs %ss ahead (%s)", offset, CLOCK_OFFSET_ENV
            )

            def clock():
                return utcnow() + timedelta(seconds=offset)

        restarts = RestartLimiter(
            self.restart_limit, self.restart_window, self.restart_backoff, backoff_cap=self.restart_window
        )
        return CullerService(
            policy,
            state_dir=self.state_dir,
            interval=self.interval,
            dry_run=self.dry_run,
            concurrency=self.concurrency,
            page_size=self.api_page_size,
            clock=clock,
            catalogue=self.profiles_file,
            warn_before=self.warn_before,
            restarts=restarts,
            service_url=configured_url(os.environ),
            service_prefix=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"),
            bind=self.bind,
        )

    def run(self) -> int:
        policy, code = self.load()
        if policy is None:
            return code
        if self.check:
            print(f"{self.policy}: ok")
            return 0
        missing = self.missing_hub_environment()
        if missing:
            return self.fail(f"{', '.join(missing)} not set (run it as a JupyterHub service)")
        service = self.make_service(policy)
        self.run_until_signalled(service.run_forever(iterations=1 if self.once else None))
        return 0


class CullerHubOptions(HubOptions):
    """The hub's side of the culler: ``configure(c, culler={...})`` keys that are not the service's options."""

    name = Unicode("apex-culler", help="The service's name (its role has the same name).").tag(config=True)

    url = Unicode(
        None,
        allow_none=True,
        help="The service's URL, which the hub proxies at /services/<name>/ (e.g. 'http://127.0.0.1:8182'"
        " locally, 'http://hub:8182' in Kubernetes); enables api/upcoming.",
    ).tag(config=True)

    user_access = Switch(
        True,
        help="With url: add access:services!service=<name> to the 'user' role, so that browsers reach"
        " api/upcoming through the hub's OAuth.",
    ).tag(config=True)

    announcement = Switch(
        True, help="With warn_before: show the warnings as the banner of the hub's pages."
    ).tag(config=True)

    restart = Switch(
        True,
        help="Grant start:servers (servers on JupyterHub 5.5) when the policy or the catalogue makes"
        " something always-on.",
    ).tag(config=True)

    extra_args = List(help="More command-line arguments of the service.").tag(config=True)

    environment = Dict(help="Environment of the service.").tag(config=True)


def main(argv: list[str] | None = None) -> int:
    return CullerApp.main(argv)


__all__ = ["CLOCK_OFFSET_ENV", "CullerApp", "CullerHubOptions", "main"]
