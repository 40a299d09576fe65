"""``python -m apex_hub.services.culler --policy FILE [--state-dir DIR] [--interval S] [--dry-run=true]``

Exit code 2 (before anything is stopped) when the policy file is invalid: bad cron expression,
unknown time zone, bad duration, unknown field — the message names the section and the field.
``--check`` validates the policy and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

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
    p = argparse.ArgumentParser(prog="python -m apex_hub.services.culler", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=os.environ.get("APEX_CULLER_POLICY"),
                   help="the policy file (YAML); env APEX_CULLER_POLICY")
    p.add_argument("--state-dir", default=os.environ.get("APEX_CULLER_STATE_DIR", "."),
                   help="where stop-reasons.jsonl is appended; env APEX_CULLER_STATE_DIR")
    p.add_argument("--interval", type=_seconds, default=60.0, help="seconds (or '1m') between rounds; default 60")
    p.add_argument("--dry-run", type=_bool, nargs="?", const=True, default=False,
                   help="log and record what would be stopped, stop nothing (--dry-run=true)")
    p.add_argument("--once", type=_bool, nargs="?", const=True, default=False, help="run one round and exit")
    p.add_argument("--check", type=_bool, nargs="?", const=True, default=False,
                   help="validate the policy file and exit")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--api-page-size", type=int, default=0)
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="[%(levelname).1s %(asctime)s %(name)s] %(message)s")
    if not args.policy:
        print("apex culler: --policy (or APEX_CULLER_POLICY) is required", file=sys.stderr)
        return 2
    try:
        policy = CullingPolicy.load(args.policy)
    except PolicyError as exc:
        print(f"apex culler: invalid policy:\n{exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.policy}: ok")
        return 0
    missing = [v for v in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN") if not os.environ.get(v)]
    if missing:
        print(f"apex culler: {', '.join(missing)} not set (run it as a JupyterHub service)", file=sys.stderr)
        return 2

    from .service import CullerService

    service = CullerService(policy, state_dir=args.state_dir, interval=args.interval, dry_run=args.dry_run,
                            concurrency=args.concurrency, page_size=args.api_page_size)
    try:
        asyncio.run(service.run_forever(iterations=1 if args.once else None))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
