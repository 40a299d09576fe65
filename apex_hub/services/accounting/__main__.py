"""``python -m apex_hub.services.accounting --db-url URL [options]`` — run as a JupyterHub service.

Reads ``JUPYTERHUB_API_URL`` / ``JUPYTERHUB_API_TOKEN`` / ``JUPYTERHUB_SERVICE_URL`` /
``JUPYTERHUB_SERVICE_PREFIX`` (set by the hub for a managed service). Exit code 2 on bad options
or an invalid quota file. ``--check`` validates the quota file and the database URL (migrating it)
and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from ..common.traits import parse_bool


def _bool(text: str) -> bool:
    """true/false (also yes/no, on/off), as every service's switches read it."""
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m apex_hub.services.accounting",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--db-url",
        default=env("APEX_ACCOUNTING_DB_URL", "sqlite:///accounting.sqlite"),
        help="SQLAlchemy URL of the ledger (sqlite:///path, postgresql+psycopg://...); "
        "env APEX_ACCOUNTING_DB_URL (use it for passwords)",
    )
    p.add_argument(
        "--stop-reasons",
        default=env("APEX_ACCOUNTING_STOP_REASONS", ""),
        help="the culler's stop-reasons.jsonl",
    )
    p.add_argument(
        "--exclude-groups",
        default="apex-probe",
        help="comma-separated JupyterHub groups whose members are not recorded",
    )
    p.add_argument("--interval", type=float, default=60.0, help="seconds between hub rounds (default 60)")
    p.add_argument("--watch-timeout", type=int, default=300, help="seconds per pod watch request")
    p.add_argument("--quotas", default="", help="quota YAML file (budgets per user/group/period)")
    p.add_argument(
        "--quota-stop",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="stop running servers over budget (needs delete:servers)",
    )
    p.add_argument("--quota-warn", type=float, default=0.9, help="warn at this fraction of a budget")
    p.add_argument(
        "--state-dir",
        default=env("APEX_ACCOUNTING_STATE_DIR", "."),
        help="where quota-warnings.json goes (read by the hub's banner; default: the working directory)",
    )
    p.add_argument("--apel-dir", default="", help="directory of APEL files for ssmsend")
    p.add_argument("--apel-site", default="", help="APEL SiteName (GOCDB)")
    p.add_argument("--apel-service", default="", help="APEL CloudComputeService")
    p.add_argument("--apel-cloud-type", default="apex-hub", help="APEL CloudType")
    p.add_argument("--apel-benchmark-type", default="", help="APEL BenchmarkType (e.g. HEPSPEC)")
    p.add_argument("--apel-benchmark", type=float, default=None, help="APEL Benchmark per core")
    p.add_argument("--apel-interval", type=float, default=3600.0, help="seconds between APEL exports")
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig (default: in-cluster)")
    p.add_argument("--k8s-api-host", default="", help="Kubernetes API URL (tests; overrides kubeconfig)")
    p.add_argument("--port", type=int, default=0, help="listen port (default from JUPYTERHUB_SERVICE_URL)")
    p.add_argument(
        "--check",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="validate the quota file, migrate the database, exit",
    )
    p.add_argument("--log-level", default="INFO")
    return p


async def run(args, quotas) -> None:
    from ..common.listen import listen_address, listen_early, serve

    # on the URL's host when it is an IP (127.0.0.1 locally), on all interfaces for a name (http://hub:8184);
    # answering (503) before the imports and the migration below: JupyterHub 5.5 waits only ~10 s
    host, port = listen_address(
        os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"),
        str(args.port) if args.port else None,
    )
    server = listen_early(host, port)
    from ..common.hub import HubClient
    from .apel import ApelSettings
    from .db import Ledger
    from .service import AccountingService, kube_factory
    from .web import App

    ledger = Ledger(args.db_url)
    hub = HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
    svc = AccountingService(
        ledger,
        hub=hub,
        kube=kube_factory(args.kubeconfig, args.k8s_api_host or None),
        stop_reasons=args.stop_reasons or None,
        exclude_groups=[g.strip() for g in args.exclude_groups.split(",") if g.strip()],
        interval=args.interval,
        watch_timeout=args.watch_timeout,
        quotas=quotas,
        quota_stop=args.quota_stop,
        quota_warn_fraction=args.quota_warn,
        state_dir=args.state_dir,
    )
    apel_settings = None
    if args.apel_dir:
        apel_settings = ApelSettings(
            args.apel_dir,
            args.apel_site,
            args.apel_service,
            args.apel_cloud_type,
            args.apel_benchmark_type,
            args.apel_benchmark,
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
            await asyncio.sleep(args.apel_interval)
            try:
                app.export_apel()
            except Exception:
                logging.getLogger("apex_hub.accounting").exception("APEL export failed")

    apel_task = asyncio.create_task(apel_loop()) if apel_settings else None
    logging.getLogger("apex_hub.accounting").info(
        "accounting service listening on %s:%s (prefix %s)", host, port, prefix
    )
    await stop.wait()
    if apel_task:
        apel_task.cancel()
    server.stop()
    await svc.stop()
    ledger.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="[%(levelname).1s %(asctime)s %(name)s] %(message)s"
    )
    from .quota import QuotaError, Quotas

    quotas = None
    if args.quotas:
        try:
            quotas = Quotas.load(args.quotas)
        except (QuotaError, OSError) as exc:
            print(f"apex accounting: invalid quotas: {exc}", file=sys.stderr)
            return 2
    if args.apel_dir and not args.apel_site:
        print("apex accounting: --apel-dir needs --apel-site (the GOCDB site name)", file=sys.stderr)
        return 2
    if args.check:
        from .db import upgrade

        upgrade(args.db_url)
        print("ok")
        return 0
    missing = [v for v in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN") if not os.environ.get(v)]
    if missing:
        print(
            f"apex accounting: {', '.join(missing)} not set (run it as a JupyterHub service)", file=sys.stderr
        )
        return 2
    asyncio.run(run(args, quotas))
    return 0


if __name__ == "__main__":
    sys.exit(main())
