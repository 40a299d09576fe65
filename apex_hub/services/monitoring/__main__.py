"""``python -m apex_hub.services.monitoring --public-url URL --profile SLUG [options]``

Run by the hub as a managed service (``apex_hub.services.configure(c, monitoring={...})``): it reads
``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_SERVICE_URL`` (where it listens) and
``JUPYTERHUB_SERVICE_PREFIX`` (its path behind the proxy) from the hub. The metrics token, when set,
comes from ``APEX_MONITORING_METRICS_TOKEN`` or ``--metrics-token-file`` (never from the command line,
which other local users can read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from ipaddress import ip_address
from urllib.parse import urlparse

from .probe import DEFAULT_FAIL_FAST, ProbeSettings
from .status import CRITICAL, WARNING

log = logging.getLogger("apex_hub.monitoring")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m apex_hub.services.monitoring",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--public-url", required=True, help="the hub's public URL (the proxy), e.g. http://proxy-public")
    a("--profile", default="", help="profile slug the probe spawns (user_options {'profile': SLUG})")
    a("--user-options", type=json.loads, default=None, help="JSON user_options (overrides --profile)")
    a("--probe-user", default="apex-probe", help="the probe user (created if missing)")
    a("--probe-group", default="apex-probe", help="group that marks the probe user (accounting skips it)")
    a("--interval", type=float, default=300.0, help="seconds between probe starts (default 300)")
    a(
        "--stale-intervals",
        type=float,
        default=3.0,
        help="a result older than this many intervals plus the longest a probe may take is CRITICAL",
    )
    a(
        "--stale-after",
        type=float,
        default=0.0,
        help="seconds after which a result is stale (overrides the rule)",
    )
    a("--ready-timeout", type=float, default=300.0, help="seconds the server may take to be ready")
    a(
        "--proxy-timeout",
        type=float,
        default=15.0,
        help="seconds to get the server's status through the proxy",
    )
    a("--kernel", action=argparse.BooleanOptionalAction, default=True, help="start a kernel and run 1+1")
    a("--kernel-name", default="python3")
    a("--kernel-timeout", type=float, default=60.0)
    a(
        "--kernel-failure",
        choices=("warning", "critical"),
        default="warning",
        help="the verdict when only the kernel fails (default warning)",
    )
    a("--stop-timeout", type=float, default=120.0)
    a(
        "--fail-fast",
        default=DEFAULT_FAIL_FAST,
        help="regular expression: a spawn progress message matching it fails the probe at once",
    )
    a("--check-interval", type=float, default=60.0, help="seconds between component checks")
    a(
        "--proxy-routes",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="compare running servers with the proxy's routes (the role needs the 'proxy' scope)",
    )
    a("--kube-api", default="off", help="off | incluster | a kubeconfig path | an API URL (GET /version)")
    a("--services", default=None, help="comma-separated services to check (default: all others)")
    a("--history", type=int, default=50, help="probes kept for the page and status.json")
    a("--state-dir", default="", help="where the probe history is kept across restarts")
    a("--pause-file", default="", help="while this file exists no probe starts (results go stale)")
    a("--metrics-token-file", default="", help="file with the bearer token /metrics requires")
    a(
        "--page-auth",
        choices=("none", "hub"),
        default="none",
        help="hub: the page and status.json need a hub login or token (access:services)",
    )
    a("--log-level", default="INFO")
    return p


def settings_from(args: argparse.Namespace):
    from .service import Settings

    options = (
        args.user_options
        if args.user_options is not None
        else ({"profile": args.profile} if args.profile else {})
    )
    probe = ProbeSettings(
        user=args.probe_user,
        group=args.probe_group,
        user_options=options,
        ready_timeout=args.ready_timeout,
        proxy_timeout=args.proxy_timeout,
        kernel=args.kernel,
        kernel_name=args.kernel_name,
        kernel_timeout=args.kernel_timeout,
        kernel_failure=CRITICAL if args.kernel_failure == "critical" else WARNING,
        stop_timeout=args.stop_timeout,
        fail_fast=args.fail_fast,
    )
    return Settings(
        name=os.environ.get("JUPYTERHUB_SERVICE_NAME", "apex-monitoring"),
        api_url=os.environ["JUPYTERHUB_API_URL"],
        api_token=os.environ["JUPYTERHUB_API_TOKEN"],
        public_url=args.public_url,
        probe=probe,
        interval=args.interval,
        stale_after=args.stale_after,
        stale_intervals=args.stale_intervals,
        check_interval=args.check_interval,
        proxy_routes=args.proxy_routes,
        kube_api=args.kube_api,
        services=[s for s in args.services.split(",") if s] if args.services else None,
        history=args.history,
        state_dir=args.state_dir,
        pause_file=args.pause_file,
    )


def metrics_token(args: argparse.Namespace) -> str:
    if args.metrics_token_file:
        with open(args.metrics_token_file, encoding="utf-8") as f:
            return f.read().strip()
    return os.environ.get("APEX_MONITORING_METRICS_TOKEN", "")


def bind_address(service_url: str) -> tuple[str, int]:
    """Listen where the hub says the service is: its IP, or every interface for a host name."""
    url = urlparse(service_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        return str(ip_address(url.hostname or "")), port
    except ValueError:
        return "0.0.0.0", port


async def serve(args: argparse.Namespace) -> None:
    from .service import MonitoringService
    from .web import make_app

    service = MonitoringService(settings_from(args))
    app = make_app(
        service,
        os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"),
        metrics_token=metrics_token(args),
        page_auth=args.page_auth == "hub",
    )
    host, port = bind_address(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8190"))
    app.listen(port, address=host)
    log.info(
        "apex monitoring on %s:%s, probing %s as %s every %gs",
        host,
        port,
        args.public_url,
        args.probe_user,
        args.interval,
    )
    try:
        await asyncio.gather(service.probe_loop(), service.check_loop())
    finally:
        await service.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="[%(levelname).1s %(asctime)s %(name)s] %(message)s"
    )
    missing = [v for v in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN") if not os.environ.get(v)]
    if missing:
        print(
            f"apex monitoring: {', '.join(missing)} not set (run it as a JupyterHub service)", file=sys.stderr
        )
        return 2
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
