#!/usr/bin/env bash
# Run apex-hub locally with no cluster: kubesim (process-mode pods) + a real JupyterHub with
# APExSpawner, its proxy, the culler, accounting and monitoring services on 127.0.0.1, a local
# demo login (printed at start-up) and the demo catalogue shipped with the package. Flags go to
# `apex-hub local` (--port, --workdir, --profiles, --password, --login, --branding); Ctrl-C stops
# everything. First run: sets up .venv (the local extra only, no test tools) and node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/apex-hub ] || ! cmp -s package-lock.json node_modules/.apex-lock; then
  ./scripts/setup.sh --run
fi
. .venv/bin/activate
exec apex-hub local --node-modules "$PWD/node_modules" "$@"
