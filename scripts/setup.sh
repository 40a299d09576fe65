#!/usr/bin/env bash
# Set up a development environment on a fresh machine: a venv with apex-hub and its test
# extras, and JupyterHub's proxy (configurable-http-proxy) from npm. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q -e ".[test]"
if ! command -v configurable-http-proxy >/dev/null 2>&1 && [ ! -x node_modules/.bin/configurable-http-proxy ]; then
  npm install --no-save --no-audit --no-fund --silent configurable-http-proxy@^5 >/dev/null
fi
