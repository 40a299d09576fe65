#!/usr/bin/env bash
# Set up the venv of one dependency lane (safe to re-run):
#   newest  .venv        the newest releases (scripts/setup.sh)
#   z2jh    .venv-z2jh   the Zero-to-JupyterHub 4.4.0 hub image's versions (ci/constraints/z2jh-4.4.0.txt):
#                        JupyterHub 5.5.0, KubeSpawner 7.0.0, oauthenticator 17.4.0, traitlets 5.15.1, ...
# The z2jh lane installs apex-hub and its test extras under the image's pins; what the image lacks
# (croniter, jupyterhub-idle-culler 2) comes as apex-hub's requirements would bring it into the image.
set -euo pipefail
cd "$(dirname "$0")/.."
lane=${1:-newest}
PY=${PYTHON:-python3}
case "$lane" in
  newest) exec ./scripts/setup.sh ;;
  z2jh)
    constraints=ci/constraints/z2jh-4.4.0.txt
    stamp=.venv-z2jh/.apex-constraints
    if [ -x .venv-z2jh/bin/python ] && cmp -s "$constraints" "$stamp" \
        && [ .venv-z2jh/.apex-installed -nt pyproject.toml ]; then
      exit 0
    fi
    echo "setup-lane: building .venv-z2jh on the Z2JH 4.4.0 image's versions (about a minute) ..."
    [ -d .venv-z2jh ] || "$PY" -m venv .venv-z2jh
    .venv-z2jh/bin/pip install -q --upgrade pip
    .venv-z2jh/bin/pip install -q -c "$constraints" -e ".[local,test]"
    cp "$constraints" "$stamp"
    touch .venv-z2jh/.apex-installed
    .venv-z2jh/bin/python - <<'PY'
from importlib.metadata import version
print("setup-lane: z2jh lane on", ", ".join(f"{p} {version(p)}" for p in (
    "jupyterhub", "jupyterhub-kubespawner", "oauthenticator", "kubernetes-asyncio", "traitlets",
    "sqlalchemy", "prometheus-client")))
PY
    ;;
  *) echo "setup-lane: unknown lane $lane (newest, z2jh)" >&2; exit 2 ;;
esac
