#!/usr/bin/env bash
# Set up on a fresh machine: .venv with apex-hub and its extras (pip), and ./node_modules from
# package-lock.json (npm ci: JupyterHub's proxy configurable-http-proxy and oidc-provider, the local
# OpenID provider). Safe to re-run: steps already done are skipped; failed downloads are retried.
#
#   scripts/setup.sh          everything: the local and test extras (what scripts/test.sh needs)
#   scripts/setup.sh --run    only what `apex-hub local` needs (scripts/run.sh): no test extras
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="local,test,docs,lint"
if [ "${1:-}" = "--run" ]; then EXTRAS="local"; fi
PY=${PYTHON:-python3}

say() { printf 'setup: %s\n' "$*"; }
# retry CMD...: three attempts, 5 s then 10 s apart (registries hiccup)
retry() {
  local attempt=1
  until "$@"; do
    if [ "$attempt" -ge 3 ]; then say "FAILED three times: $*"; return 1; fi
    say "failed (attempt $attempt of 3), retrying in $((attempt * 5)) s: $*"
    sleep $((attempt * 5))
    attempt=$((attempt + 1))
  done
}

if [ ! -d .venv ]; then
  say "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
started=$SECONDS
if [ "$EXTRAS" = "local" ]; then
  say "installing apex-hub[local] into .venv: JupyterHub, KubeSpawner, JupyterLab ... (about a minute with a warm pip cache, a few minutes without)"
else
  say "installing apex-hub[local,test,docs,lint] into .venv: JupyterHub, KubeSpawner, JupyterLab, pytest, Playwright (Python package only), Sphinx, ruff, mypy ... (1-2 minutes with a warm pip cache, several without)"
fi
retry pip install -q --upgrade pip
retry pip install -q -e ".[$EXTRAS]"
# scripts/test.sh re-runs this setup when pyproject.toml is newer than this mark (a new test dependency)
if [ "$EXTRAS" != "local" ]; then touch .venv/.apex-installed; fi
say "Python packages ready in $((SECONDS - started)) s"

if ! command -v npm >/dev/null 2>&1; then
  say "npm not found: install Node.js 20+ with npm (Debian: apt-get install nodejs npm), then re-run $0"
  exit 1
fi
# npm ci installs exactly package-lock.json; node_modules/.apex-lock remembers which one is installed
if cmp -s package-lock.json node_modules/.apex-lock; then
  say "node_modules up to date (package-lock.json)"
else
  started=$SECONDS
  say "installing configurable-http-proxy and oidc-provider into ./node_modules (npm ci, about 10 s) ..."
  retry npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.apex-lock
  say "node_modules ready in $((SECONDS - started)) s"
fi
