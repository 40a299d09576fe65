#!/usr/bin/env bash
# The test command. Sets up what is missing, then runs the suite.
#
#   ./scripts/test.sh                 everything: the "newest" lane (newest releases), the "z2jh" lane
#                                     (the Zero-to-JupyterHub 4.4.0 hub image's versions) and, where a
#                                     Go toolchain is present, the real control plane lane
#   ./scripts/test.sh [pytest args]   those tests on the newest lane (e.g. tests/spawner -k gate)
#   ./scripts/test.sh --lane z2jh [pytest args]     one lane: newest, z2jh or real
#
# The z2jh lane runs every test that touches the hub stack; kubesim's own conformance tests
# (tests/kubesim) and the local-mode browser tour do not depend on the hub's versions and run once,
# in the newest lane.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
lanes=()
if [ "${1:-}" = "--lane" ]; then
  lanes=("$2"); shift 2
elif [ $# -eq 0 ]; then
  lanes=(newest z2jh real)
else
  lanes=(newest)
fi
pytest_common=(-q -p no:cacheprovider --durations=15)

run_lane() {
  local lane=$1; shift
  case "$lane" in
    newest)
      [ -x .venv/bin/python ] || ./scripts/setup.sh
      echo "== lane newest: $(.venv/bin/python -c 'import jupyterhub, kubespawner; print("JupyterHub", jupyterhub.__version__, "/ KubeSpawner", kubespawner.__version__)')"
      .venv/bin/python -m pytest "${pytest_common[@]}" "$@" ;;
    z2jh)
      [ -x .venv/bin/python ] || ./scripts/setup.sh   # node packages
      ./scripts/setup-lane.sh z2jh
      echo "== lane z2jh: $(.venv-z2jh/bin/python -c 'import jupyterhub, kubespawner; print("JupyterHub", jupyterhub.__version__, "/ KubeSpawner", kubespawner.__version__)')"
      if [ $# -eq 0 ]; then
        set -- tests --ignore=tests/kubesim --ignore=tests/test_local_mode.py
      fi
      .venv-z2jh/bin/python -m pytest "${pytest_common[@]}" "$@" ;;
    real)
      if [ ! -x scripts/controlplane.sh ]; then
        echo "== lane real: skipped (scripts/controlplane.sh is not in this tree)"; return 0
      fi
      if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
        echo "== lane real: skipped: no Go toolchain to build kube-apiserver from Go modules"; return 0
      fi
      [ -x .venv/bin/python ] || ./scripts/setup.sh
      echo "== lane real: the Kubernetes control plane built from Go modules (tests/controlplane)"
      if [ $# -eq 0 ]; then set -- tests/realcluster; fi
      .venv/bin/python -m pytest "${pytest_common[@]}" --cluster real "$@" ;;
    *) echo "test.sh: unknown lane $lane (newest, z2jh, real)" >&2; return 2 ;;
  esac
}

status=0
for lane in "${lanes[@]}"; do
  if [ ${#lanes[@]} -gt 1 ]; then
    run_lane "$lane" || status=$?
  else
    run_lane "$lane" "$@" || status=$?
  fi
done
exit $status
