"""``python -m apex_hub.services.accounting``: the accounting service's options, as a traitlets Application.

Every option is a trait below (command line ``--db-url=URL``, a config file ``c.AccountingApp.db_url``,
or ``configure(c, accounting={...})`` for the ones tagged ``configure``); ``--help-all`` lists them and
the docs' option reference is generated from them. :class:`AccountingHubOptions` holds the
``configure()`` keys that shape the hub's side (service name, URL, roles, the quota hook, the banner).

Run by the hub as a managed service, it reads ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN``,
``JUPYTERHUB_SERVICE_URL`` and ``JUPYTERHUB_SERVICE_PREFIX``. Exit code 2 on bad options or an invalid
quota file; ``--check`` validates the quota file and the database URL (migrating it) and exits.

Tests move the service's clock with the environment variable ``APEX_ACCOUNTING_CLOCK_OFFSET``: a
duration ahead (``5m``), or ``@<file>``, a file holding the seconds it runs ahead (``-600``: behind),
read at every look (:class:`~apex_hub.services.common.clock.FileOffsetClock`: a test holds the clock
back while a server starts, then lets it go). It is
not an option (not on the command line, not in a config file): never set it in production, usage
would be overcounted and servers stopped early.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from traitlets import Dict, Float, Int, List, Unicode, default

from ..common.app import HubOptions, ServiceApp
from ..common.traits import CommaList, Switch

log = logging.getLogger("apex_hub.accounting")
CLOCK_OFFSET_ENV = "APEX_ACCOUNTING_CLOCK_OFFSET"


class AccountingApp(ServiceApp):
    name = "apex-accounting"
    label = "apex accounting"
    description = (
        "The APEx accounting service: a ledger of sessions from the pods, usage reports, APEL cloud"
        " records and quotas; run by the hub as a managed service."
    )

    db_url = Unicode(
        help="SQLAlchemy URL of the ledger (sqlite:///path, postgresql+psycopg://...). Default: environment"
        " APEX_ACCOUNTING_DB_URL (where a password belongs: the command line is readable by other local"
        " users), else sqlite:///accounting.sqlite. configure() defaults it to"
        " sqlite:///<state_dir>/accounting.sqlite and passes it in the environment.",
    ).tag(config=True, configure=True)

    @default("db_url")
    def _db_url_default(self):
        return os.environ.get("APEX_ACCOUNTING_DB_URL", "sqlite:///accounting.sqlite")

    state_dir = Unicode(
        help="Where quota-warnings.json (for the hub's banner) and, by configure()'s default, the SQLite"
        " ledger go. Default: environment APEX_ACCOUNTING_STATE_DIR, else the working directory.",
    ).tag(config=True, configure=True)

    @default("state_dir")
    def _state_dir_default(self):
        return os.environ.get("APEX_ACCOUNTING_STATE_DIR", ".")

    stop_reasons = Unicode(
        help="The culler's stop-reasons.jsonl, whose reasons are attached to the sessions ('': none)."
        " Default: environment APEX_ACCOUNTING_STOP_REASONS.",
    ).tag(config=True, configure=True)

    @default("stop_reasons")
    def _stop_reasons_default(self):
        return os.environ.get("APEX_ACCOUNTING_STOP_REASONS", "")

    exclude_groups = CommaList(
        default_value=["apex-probe"],
        help="JupyterHub groups whose members are never recorded (comma-separated on the command line).",
    ).tag(config=True, configure=True)

    interval = Float(
        60.0, help="Seconds between hub rounds: groups, stop reasons, quota checks, heartbeat."
    ).tag(config=True, configure=True)

    watch_timeout = Int(300, help="Seconds per pod watch request.").tag(config=True)

    quotas = Unicode(
        "", help="The quota file (YAML): budgets per user, group and period; enables the quota API."
    ).tag(config=True, configure=True)

    quota_stop = Switch(
        False,
        help="Stop running servers over budget, with reason 'quota' (configure() then grants delete:servers).",
    ).tag(config=True, configure=True)

    quota_warn = Float(0.9, help="Warn at this fraction of a budget.").tag(config=True, configure=True)

    apel_dir = Unicode(
        "", help="The directory APEL cloud records are written to, for ssmsend ('': none)."
    ).tag(config=True)
    apel_site = Unicode("", help="APEL SiteName (the GOCDB site name); required with apel_dir.").tag(
        config=True
    )
    apel_service = Unicode("", help="APEL CloudComputeService.").tag(config=True)
    apel_cloud_type = Unicode("apex-hub", help="APEL CloudType.").tag(config=True)
    apel_benchmark_type = Unicode("", help="APEL BenchmarkType (e.g. HEPSPEC).").tag(config=True)
    apel_benchmark = Float(None, allow_none=True, help="APEL Benchmark, per core.").tag(config=True)
    apel_interval = Float(3600.0, help="Seconds between APEL exports.").tag(config=True)

    kubeconfig = Unicode(
        help="The kubeconfig to reach Kubernetes with. Default: environment KUBECONFIG, else in-cluster."
    ).tag(config=True)

    @default("kubeconfig")
    def _kubeconfig_default(self):
        return os.environ.get("KUBECONFIG", "")

    k8s_api_host = Unicode("", help="The Kubernetes API URL (overrides the kubeconfig's server).").tag(
        config=True
    )

    port = Int(0, help="The port to listen on (0: the port of JUPYTERHUB_SERVICE_URL).").tag(config=True)

    check = Switch(False, help="Validate the quota file, migrate the database, and exit.").tag(config=True)

    def clock(self):
        """The service's clock: UTC now, ahead by APEX_ACCOUNTING_CLOCK_OFFSET in tests (never an option)."""
        from datetime import timedelta

        from ..common.clock import FileOffsetClock
        from ..common.units import parse_duration
        from .db import utcnow

        value = os.environ.get(CLOCK_OFFSET_ENV) or ""
        if not value.startswith("@"):
            offset = parse_duration(value or 0)
            if not offset:
                return utcnow
            log.warning(
                "TEST ONLY: the accounting service's clock runs %ss ahead (%s)", offset, CLOCK_OFFSET_ENV
            )
            ahead = timedelta(seconds=offset)
            return lambda: utcnow() + ahead
        file_clock = FileOffsetClock(value[1:])
        log.warning(
            "TEST ONLY: the accounting service's clock runs ahead by the seconds in %s (%s)",
            file_clock.path,
            CLOCK_OFFSET_ENV,
        )
        return lambda: utcnow() + timedelta(seconds=file_clock.offset())

    def load_quotas(self):
        """The quotas (None without a file) and 0 — or None and the exit code after saying what is wrong."""
        from .quota import QuotaError, Quotas

        if self.apel_dir and not self.apel_site:
            return None, self.fail("--apel-dir needs --apel-site (the GOCDB site name)")
        if not self.quotas:
            return None, 0
        try:
            return Quotas.load(self.quotas), 0
        except (QuotaError, OSError) as exc:
            return None, self.fail(f"invalid quotas: {exc}")

    def run(self) -> int:
        quotas, code = self.load_quotas()
        if code:
            return code
        if self.check:
            from .db import upgrade

            upgrade(self.db_url)
            print("ok")
            return 0
        missing = self.missing_hub_environment()
        if missing:
            return self.fail(f"{', '.join(missing)} not set (run it as a JupyterHub service)")
        asyncio.run(self.serve(quotas))
        return 0

    async def serve(self, quotas) -> None:
        from ..common.listen import listen_address, listen_early, serve

        # on the URL's host when it is an IP (127.0.0.1 locally), on all interfaces for a name
        # (http://hub:8184); answering (503) before the imports and the migration below: JupyterHub 5.5
        # waits only ~10 s
        host, port = listen_address(
            os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"),
            str(self.port) if self.port else None,
        )
        server = listen_early(host, port)
        from ..common.hub import HubClient
        from .apel import ApelSettings
        from .db import Ledger
        from .service import AccountingService, kube_factory
        from .web import App

        ledger = Ledger(self.db_url)
        hub = HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
        svc = AccountingService(
            ledger,
            hub=hub,
            kube=kube_factory(self.kubeconfig or None, self.k8s_api_host or None),
            stop_reasons=self.stop_reasons or None,
            exclude_groups=list(self.exclude_groups),
            interval=self.interval,
            watch_timeout=self.watch_timeout,
            quotas=quotas,
            quota_stop=self.quota_stop,
            quota_warn_fraction=self.quota_warn,
            state_dir=self.state_dir,
            clock=self.clock(),
        )
        apel_settings = None
        if self.apel_dir:
            apel_settings = ApelSettings(
                self.apel_dir,
                self.apel_site,
                self.apel_service,
                self.apel_cloud_type,
                self.apel_benchmark_type,
                self.apel_benchmark,
            )
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        app = App(
            svc,
            prefix=prefix,
            apel_settings=apel_settings,
            quota_token=os.environ.get("APEX_ACCOUNTING_QUOTA_TOKEN", ""),
            metrics_token=os.environ.get("APEX_ACCOUNTING_METRICS_TOKEN", ""),
        )
        serve(server, app.tornado)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await svc.start()

        async def apel_loop():
            while True:
                await asyncio.sleep(self.apel_interval)
                try:
                    await app.export_apel_async()  # on the ledger's writer thread
                except Exception:
                    log.exception("APEL export failed")

        apel_task = asyncio.create_task(apel_loop()) if apel_settings else None
        log.info("accounting service listening on %s:%s (prefix %s)", host, port, prefix)
        await stop.wait()
        if apel_task:
            apel_task.cancel()
        server.stop()
        await svc.stop()
        ledger.close()


class AccountingHubOptions(HubOptions):
    """The hub's side of accounting: ``configure(c, accounting={...})`` keys that are not the service's options."""

    name = Unicode("apex-accounting", help="The service's name (its role has the same name).").tag(
        config=True
    )

    url = Unicode(
        "http://127.0.0.1:10101",
        help="The service's own URL, proxied at /services/<name>/ (in Kubernetes e.g. http://hub:10101); it"
        " listens on the URL's host when that is an IP address, else on all interfaces, at the URL's port.",
    ).tag(config=True)

    culler_state_dir = Unicode(
        "", help="The culler's state_dir: sets stop_reasons to its stop-reasons.jsonl when that is not given."
    ).tag(config=True)

    quota_check = Switch(
        True, help="With quotas: install the pre-spawn quota check as c.Spawner.pre_spawn_hook."
    ).tag(config=True)

    announcement = Switch(
        True, help="With quotas: show quota warnings as the banner of the hub's pages."
    ).tag(config=True)

    fail_open = Switch(
        True,
        help="Allow spawns when the accounting service cannot be reached (False: refuse them, 503).",
    ).tag(config=True)

    apel = Dict(
        default_value=None,
        allow_none=True,
        help="APEL cloud records: {dir, site (required), service, cloud_type, benchmark_type, benchmark,"
        " interval (seconds)}.",
    ).tag(config=True)

    metrics_token = Unicode(
        "",
        help="The bearer token Prometheus sends for /metrics (passed in the service's environment); without"
        " one, /metrics needs a hub token with the accounting admin scope.",
    ).tag(config=True)

    admin_users = List(Unicode(), help="Users given the accounting admin scope (every user's usage).").tag(
        config=True
    )
    admin_groups = List(Unicode(), help="Groups given the accounting admin scope.").tag(config=True)
    admin_services = List(Unicode(), help="Services given the accounting admin scope.").tag(config=True)

    extra_args = List(help="More command-line arguments of the service.").tag(config=True)

    environment = Dict(help="Environment of the service.").tag(config=True)


def main(argv: list[str] | None = None) -> int:
    return AccountingApp.main(argv)


__all__ = ["CLOCK_OFFSET_ENV", "AccountingApp", "AccountingHubOptions", "main"]
