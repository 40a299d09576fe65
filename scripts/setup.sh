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
# The local OpenID Connect provider (apex_hub/localidp) runs on the npm package oidc-provider. 8.x is
# the newest major that supports Node.js 20 (9.x wants Node 22). Both packages go into ./node_modules in
# ONE npm install: without a package.json, `npm install --no-save X` removes whatever else it finds there.
OIDC_PROVIDER_VERSION=8.8.1
chp_ok=false
if command -v configurable-http-proxy >/dev/null 2>&1 || [ -x node_modules/.bin/configurable-http-proxy ]; then
  chp_ok=true
fi
oidc_ok=false
if grep -qs "\"version\": \"$OIDC_PROVIDER_VERSION\"" node_modules/oidc-provider/package.json; then
  oidc_ok=true
fi
if ! $chp_ok || ! $oidc_ok; then
  npm install --no-save --no-audit --no-fund --silent \
    configurable-http-proxy@^5 "oidc-provider@$OIDC_PROVIDER_VERSION" >/dev/null
fi
