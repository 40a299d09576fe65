#!/usr/bin/env bash
# The test command: sets up what is missing, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || ./scripts/setup.sh
. .venv/bin/activate
export PATH="$PWD/node_modules/.bin:$PATH"
exec python -m pytest -q -p no:cacheprovider "$@"
