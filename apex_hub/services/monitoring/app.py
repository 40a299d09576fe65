"""``python -m apex_hub.services.monitoring``: the monitoring service's options, as a traitlets Application.

Run by the hub as a managed service (``apex_hub.services.configure(c, monitoring={...})``): it reads
``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_SERVICE_URL`` (where it listens) and
``JUPYTERHUB_SERVICE_PREFIX`` (its path behind the proxy) from the hub. The metrics token, when set,
comes from ``APEX_MONITORING_METRICS_TOKEN`` or ``--metrics-token-file`` (never from the command line,
which other local users can read).

Every option is a trait of :class:`MonitoringApp` (``--help-all``; a config file sets
``c.MonitoringApp.<option>``); those tagged ``configure`` are also keys of ``configure(c,
monitoring={...})``, and :class:`MonitoringHubOptions` holds the keys of the hub's side.

Tests move the service's clock ahead with the environment variable ``APEX_MONITORING_CLOCK_FILE``: the
file it names holds the seconds the clock runs ahead, re-read at every look at the clock, so that a
test writes a new number (``apex_hub.services.common.clock.advance``) where it would otherwise wait
through a ready timeout or a staleness limit. It is not an option: never set it in production.
"""

from __future__ import annotations

import asyncio
import logging
import os

from traitlets import Dict, Enum, Float, Int, List, Unicode

from ..common.app import HubOptions, ServiceApp
from ..common.clock import Clock, FileOffsetClock
from ..common.listen import listen_address
from ..common.traits import CommaList, JSONDict, Switch
from .probe import DEFAULT_FAIL_FAST, ProbeSettings
from .status import CRITICAL, WARNING

log = logging.getLogger("apex_hub.monitoring")

#: where the service listens when the hub gives it no URL
DEFAULT_SERVICE_URL = "http://127.0.0.1:8190"
#: TEST ONLY, never an option: a file whose number of seconds the service's clock runs ahead by, read at
#: every look at the clock (``apex_hub.services.common.clock``), so that a test moves the time of a
#: running service past a timeout or a staleness limit instead of waiting for it
CLOCK_FILE_ENV = "APEX_MONITORING_CLOCK_FILE"


class MonitoringApp(ServiceApp):
    name = "apex-monitoring"
    label = "apex monitoring"
    description = (
        "The APEx monitoring service: a synthetic probe through the proxy, component health,"
        " Prometheus metrics, a JSON status with Nagios codes and a status page."
    )

    profile = Unicode(
        "",
        help="The profile slug the probe spawns (user_options {'profile': SLUG}). configure() requires it"
        " unless user_options has one.",
    ).tag(config=True, configure=True)

    user_options = JSONDict(
        default_value=None,
        allow_none=True,
        help="The user_options sent with the spawn, as JSON (overrides profile). Default: {'profile': profile}.",
    ).tag(config=True, configure=True)

    public_url = Unicode(
        "",
        help="The hub's public URL, i.e. the proxy (e.g. http://proxy-public). Required; configure()"
        " defaults it from c.JupyterHub (public_url, bind_url, or ip, port and base_url).",
    ).tag(config=True, configure=True)

    probe_user = Unicode("apex-probe", help="The probe user (created if missing).").tag(
        config=True, configure=True
    )

    probe_group = Unicode(
        "apex-probe",
        help="The group that marks probe users, for accounting and quotas (accounting skips it).",
    ).tag(config=True, configure=True)

    interval = Float(300.0, help="Seconds between probe starts.").tag(config=True, configure=True)

    stale_intervals = Float(
        3.0,
        help="A result older than this many intervals plus the longest a probe may take is stale (CRITICAL).",
    ).tag(config=True, configure=True)

    stale_after = Float(
        0.0, help="Seconds after which a result is stale (overrides stale_intervals; 0: the rule)."
    ).tag(config=True, configure=True)

    ready_timeout = Float(300.0, help="Seconds the probe server may take to be ready.").tag(
        config=True, configure=True
    )

    proxy_timeout = Float(15.0, help="Seconds to get the server's status through the proxy.").tag(
        config=True, configure=True
    )

    kernel = Switch(True, help="Start a kernel and run 1+1 in it (--kernel / --no-kernel).").tag(
        config=True, configure=True
    )

    kernel_name = Unicode("python3", help="The kernel to start.").tag(config=True, configure=True)

    kernel_timeout = Float(60.0, help="Seconds for the kernel phase.").tag(config=True, configure=True)

    kernel_failure = Enum(
        ("warning", "critical"),
        "warning",
        help="The verdict when only the kernel fails: warning or critical.",
    ).tag(config=True, configure=True)

    stop_timeout = Float(120.0, help="Seconds the probe server may take to stop.").tag(
        config=True, configure=True
    )

    fail_fast = Unicode(
        DEFAULT_FAIL_FAST,
        help="A regular expression: a spawn progress message matching it fails the probe at once.",
    ).tag(config=True, configure=True)

    check_interval = Float(60.0, help="Seconds between component checks.").tag(config=True, configure=True)

    proxy_routes = Switch(
        False,
        help="Compare running servers with the proxy's routes (configure() then adds the 'proxy',"
        " 'list:users' and 'read:servers' scopes).",
    ).tag(config=True, configure=True)

    kubernetes = Unicode(
        "off",
        help="The Kubernetes API to check (GET /version): off, incluster, a kubeconfig path or an API URL."
        " configure() takes 'auto' (its default): incluster in a pod, else $KUBECONFIG, else off.",
    ).tag(config=True, configure=True, cli="kube-api")

    services = CommaList(
        default_value=None,
        allow_none=True,
        help="The services to check, comma-separated on the command line. Default: every other service"
        " of the hub.",
    ).tag(config=True, configure=True)

    history = Int(50, help="Probes kept for the page and status.json.").tag(config=True, configure=True)

    state_dir = Unicode("", help="Where the probe history is kept across restarts ('': memory only).").tag(
        config=True, configure=True
    )

    pause_file = Unicode("", help="While this file exists no probe starts (results go stale).").tag(
        config=True, configure=True
    )

    metrics_token_file = Unicode("", help="A file holding the bearer token /metrics requires.").tag(
        config=True, configure=True
    )

    page_auth = Enum(
        ("none", "hub"),
        "none",
        help="hub: the page and status.json need a hub login or a token with access:services.",
    ).tag(config=True, configure=True)

    def settings(self):
        """The service's settings (the hub's API URL and token from its environment)."""
        from .service import Settings

        options = (
            self.user_options
            if self.user_options is not None
            else ({"profile": self.profile} if self.profile else {})
        )
        probe = ProbeSettings(
            user=self.probe_user,
            group=self.probe_group,
            user_options=options,
            ready_timeout=self.ready_timeout,
            proxy_timeout=self.proxy_timeout,
            kernel=self.kernel,
            kernel_name=self.kernel_name,
            kernel_timeout=self.kernel_timeout,
            kernel_failure=CRITICAL if self.kernel_failure == "critical" else WARNING,
            stop_timeout=self.stop_timeout,
            fail_fast=self.fail_fast,
        )
        return Settings(
            name=os.environ.get("JUPYTERHUB_SERVICE_NAME", "apex-monitoring"),
            api_url=os.environ["JUPYTERHUB_API_URL"],
            api_token=os.environ["JUPYTERHUB_API_TOKEN"],
            public_url=self.public_url,
            probe=probe,
            interval=self.interval,
            stale_after=self.stale_after,
            stale_intervals=self.stale_intervals,
            check_interval=self.check_interval,
            proxy_routes=self.proxy_routes,
            kube_api=self.kubernetes,
            services=list(self.services) if self.services else None,
            history=self.history,
            state_dir=self.state_dir,
            pause_file=self.pause_file,
        )

    def metrics_token(self) -> str:
        if self.metrics_token_file:
            with open(self.metrics_token_file, encoding="utf-8") as f:
                return f.read().strip()
        return os.environ.get("APEX_MONITORING_METRICS_TOKEN", "")

    async def serve(self) -> None:
        from .service import MonitoringService
        from .web import make_app

        clock = Clock()
        if os.environ.get(CLOCK_FILE_ENV):
            clock = FileOffsetClock(os.environ[CLOCK_FILE_ENV])
            log.warning(
                "TEST ONLY: the clock runs ahead by the seconds in %s (%s)", clock.path, CLOCK_FILE_ENV
            )
        service = MonitoringService(self.settings(), clock=clock.time, monotonic=clock.monotonic)
        app = make_app(
            service,
            os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"),
            metrics_token=self.metrics_token(),
            page_auth=self.page_auth == "hub",
        )
        host, port = listen_address(os.environ.get("JUPYTERHUB_SERVICE_URL") or DEFAULT_SERVICE_URL)
        app.listen(port, address=host)
        log.info(
            "apex monitoring on %s:%s, probing %s as %s every %gs",
            host,
            port,
            self.public_url,
            self.probe_user,
            self.interval,
        )
        try:
            await asyncio.gather(service.probe_loop(), service.check_loop())
        finally:
            await service.close()

    def run(self) -> int:
        if not self.public_url:
            return self.fail("--public-url is required")
        missing = self.missing_hub_environment()
        if missing:
            return self.fail(f"{', '.join(missing)} not set (run it as a JupyterHub service)")
        self.run_until_signalled(self.serve())
        return 0


class MonitoringHubOptions(HubOptions):
    """The hub's side of monitoring: ``configure(c, monitoring={...})`` keys that are not the service's options."""

    url = Unicode(
        "http://127.0.0.1:8183",
        help="Where the service listens; the proxy serves it at /services/<name>/ (Z2JH: http://hub:8183).",
    ).tag(config=True)

    name = Unicode("apex-monitoring", help="The service's name (its role has the same name).").tag(
        config=True
    )

    metrics_token = Unicode(
        None,
        allow_none=True,
        help="The bearer token /metrics requires (passed in the service's environment, never on its"
        " command line).",
    ).tag(config=True)

    extra_args = List(help="More command-line arguments of the service.").tag(config=True)

    environment = Dict(help="More environment variables of the service.").tag(config=True)


def main(argv: list[str] | None = None) -> int:
    return MonitoringApp.main(argv)


__all__ = ["CLOCK_FILE_ENV", "DEFAULT_SERVICE_URL", "MonitoringApp", "MonitoringHubOptions", "main"]
