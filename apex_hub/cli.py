"""The ``apex-hub`` command: ``apex-hub kubesim`` runs the local Kubernetes simulator,
``apex-hub local`` the whole hub on it (JupyterHub + APExSpawner, no cluster)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys


def _kubesim_parser(sub) -> None:
    p = sub.add_parser(
        "kubesim",
        help="run the local Kubernetes API server + kubelet simulator",
        description="Serve a simulated Kubernetes API on loopback and write a kubeconfig "
        "that kubectl and kubernetes_asyncio accept.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (loopback only; default %(default)s)"
    )
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument(
        "--kubeconfig",
        default="kubesim.kubeconfig",
        help="where to write the kubeconfig (default %(default)s)",
    )
    p.add_argument(
        "--kubelet",
        choices=["instant", "process", "none"],
        default="process",
        help="instant: pods run at once with no process; process: each pod's command runs as a "
        "local process on its own 127.0.0.N; none: no kubelet (default %(default)s)",
    )
    p.add_argument(
        "--workdir", default=None, help="where process-mode pods and PVCs live (default: a temp dir)"
    )
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every API request")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="JSON",
        help='a fault active from the start, e.g. \'{"verb": "create", "resource": "pods", '
        '"status": 429, "retry_after": 1, "times": 3}\' (repeatable; more at run time with '
        "POST /kubesim/faults)",
    )
    p.add_argument("--no-validate", action="store_true", help="skip OpenAPI schema validation of writes")


async def _run_kubesim(args) -> None:
    from .kubesim import KubeSim

    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        raise SystemExit("kubesim listens on loopback only (--host 127.x.x.x)")
    sim = KubeSim(
        host=args.host,
        port=args.port,
        kubelet=None if args.kubelet == "none" else args.kubelet,
        workdir=args.workdir,
        kubeconfig_path=args.kubeconfig,
        latency=args.latency,
        validate_schemas=False if args.no_validate else None,
        faults=[_fault(text) for text in args.fault],
    )
    await sim.start()
    print(f"kubesim: API server at {sim.url}, kubelet: {args.kubelet}", flush=True)
    print(
        f"kubesim: kubeconfig written to {sim.kubeconfig_path}  (export KUBECONFIG={sim.kubeconfig_path})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.stop()
        print("kubesim: stopped", flush=True)


def _fault(text: str) -> dict:
    try:
        fault = json.loads(text)
    except ValueError as e:
        raise SystemExit(f"--fault must be a JSON object: {e}") from None
    if not isinstance(fault, dict):
        raise SystemExit('--fault must be a JSON object such as \'{"verb": "create", "status": 500}\'')
    return fault


def main(argv: list[str] | None = None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(prog="apex-hub", description="ESA APEx User Workspaces tools")
    parser.add_argument("--version", action="version", version=f"apex-hub {__version__}")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    _kubesim_parser(sub)
    from . import local

    local.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "kubesim":
        asyncio.run(_run_kubesim(args))
    elif args.command == "local":
        from . import local

        return local.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
