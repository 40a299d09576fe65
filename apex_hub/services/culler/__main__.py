"""``python -m apex_hub.services.culler --policy FILE [--state-dir DIR] [--interval S] [--dry-run=true]``

Exit code 2 (before anything is stopped) when the policy file is invalid: bad cron expression,
unknown time zone, bad duration, unknown field — the message names the section and the field.
``--check`` validates the policy (and the profiles catalogue given with ``--profiles``) and exits.

When the hub gives the service a ``url`` (``JUPYTERHUB_SERVICE_URL``), it also serves
``api/upcoming`` under its prefix (the stops ahead of the caller's own servers).

``--clock-offset`` (env ``APEX_CULLER_CLOCK_OFFSET``) is for tests only: it moves the culler's clock
ahead, so that a test can see an idle or scheduled stop without waiting for it. Never set it in
production: servers would be stopped early.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import timedelta

from ..startup import configured_url
from .policy import CullingPolicy, PolicyError, parse_duration


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m apex_hub.services.culler",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--policy",
        default=os.environ.get("APEX_CULLER_POLICY"),
        help="the policy file (YAML); env APEX_CULLER_POLICY",
    )
    p.add_argument(
        "--state-dir",
        default=os.environ.get("APEX_CULLER_STATE_DIR", "."),
        help="where stop-reasons.jsonl is appended; env APEX_CULLER_STATE_DIR",
    )
    p.add_argument(
        "--interval", type=_seconds, default=60.0, help="seconds (or '1m') between rounds; default 60"
    )
    p.add_argument(
        "--dry-run",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="log and record what would be stopped, stop nothing (--dry-run=true)",
    )
    p.add_argument("--once", type=_bool, nargs="?", const=True, default=False, help="run one round and exit")
    p.add_argument(
        "--check", type=_bool, nargs="?", const=True, default=False, help="validate the policy file and exit"
    )
    p.add_argument(
        "--profiles",
        default=os.environ.get("APEX_CULLER_PROFILES") or None,
        help="the profiles catalogue: its profiles' session_mode applies (policy sections"
        " override it, see the README); re-read when it changes; env APEX_CULLER_PROFILES",
    )
    p.add_argument(
        "--warn-before",
        type=_seconds,
        default=0.0,
        help="record a warning (ledger, hub-page banner, api/upcoming) this long before a"
        " schedule or max-age stop, e.g. 15m; 0 = no warnings",
    )
    p.add_argument(
        "--restart-limit",
        type=int,
        default=3,
        help="at most this many always-on restarts of one server per --restart-window",
    )
    p.add_argument("--restart-window", type=_seconds, default=3600.0, help="see --restart-limit; default 1h")
    p.add_argument(
        "--restart-backoff",
        type=_seconds,
        default=60.0,
        help="wait after a failed restart, doubled after each further failure (capped at the window)",
    )
    p.add_argument(
        "--bind",
        default=os.environ.get("APEX_CULLER_BIND") or None,
        help="[host:]port for api/upcoming; default: from JUPYTERHUB_SERVICE_URL",
    )
    p.add_argument(
        "--clock-offset",
        type=_seconds,
        default=os.environ.get("APEX_CULLER_CLOCK_OFFSET") or 0.0,
        help="TESTS ONLY: run the clock this far ahead (e.g. 1h); env APEX_CULLER_CLOCK_OFFSET",
    )
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--api-page-size", type=int, default=0)
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="[%(levelname).1s %(asctime)s %(name)s] %(message)s"
    )
    if not args.policy:
        print("apex culler: --policy (or APEX_CULLER_POLICY) is required", file=sys.stderr)
        return 2
    try:
        policy = CullingPolicy.load(args.policy)
    except PolicyError as exc:
        print(f"apex culler: invalid policy:\n{exc}", file=sys.stderr)
        return 2
    if args.profiles:
        from ...profiles.catalogue import Catalogue
        from ...profiles.errors import CatalogueError

        try:
            Catalogue.from_file(args.profiles)
        except CatalogueError as exc:
            print(f"apex culler: invalid profiles catalogue:\n{exc}", file=sys.stderr)
            return 2
    if args.restart_limit < 1:
        print("apex culler: --restart-limit must be at least 1", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.policy}: ok")
        return 0
    missing = [v for v in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN") if not os.environ.get(v)]
    if missing:
        print(f"apex culler: {', '.join(missing)} not set (run it as a JupyterHub service)", file=sys.stderr)
        return 2

    from .restarts import RestartLimiter
    from .service import CullerService, utcnow

    clock = utcnow
    offset = float(args.clock_offset or 0)
    if offset:
        logging.getLogger("apex_hub.culler").warning(
            "TEST ONLY: the culler's clock runs %ss ahead (--clock-offset / APEX_CULLER_CLOCK_OFFSET)", offset
        )

        def clock():
            return utcnow() + timedelta(seconds=offset)

    restarts = RestartLimiter(
        args.restart_limit, args.restart_window, args.restart_backoff, backoff_cap=args.restart_window
    )
    service = CullerService(
        policy,
        state_dir=args.state_dir,
        interval=args.interval,
        dry_run=args.dry_run,
        concurrency=args.concurrency,
        page_size=args.api_page_size,
        clock=clock,
        catalogue=args.profiles,
        warn_before=args.warn_before,
        restarts=restarts,
        service_url=configured_url(os.environ),
        service_prefix=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"),
        bind=args.bind,
    )
    try:
        asyncio.run(service.run_forever(iterations=1 if args.once else None))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
