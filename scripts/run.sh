#!/usr/bin/env bash
# Run apex-hub locally with no cluster: kubesim (process-mode pods) + a real JupyterHub with
# APExSpawner and its proxy on 127.0.0.1, a local demo login (printed at start-up) and the
# catalogue examples/local-profiles.yml. Flags go to `apex-hub local` (--port, --workdir,
# --profiles, --password). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/apex-hub ] || ./scripts/setup.sh
. .venv/bin/activate
exec apex-hub local "$@"
