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
# --timeout: pytest-timeout's hang guard, far above any test's run time on a loaded 2-core machine
# (a hung test fails with its stacks instead of holding CI until its time runs out); never a deadline.
# --durations: the 25 slowest tests of each lane, to see where the time goes.
pytest_common=(-q -p no:cacheprovider --durations=25 --timeout=600)

# the newest lane's venv, (re)installed when missing or older than pyproject.toml (a new test dependency)
ensure_newest() {
  if [ ! -x .venv/bin/pytest ] || [ ! .venv/.apex-installed -nt pyproject.toml ]; then ./scripts/setup.sh; fi
}

run_lane() {
  local lane=$1; shift
  case "$lane" in
    newest)
      ensure_newest
      export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"  # as an activated venv: tools on PATH
      echo "== lane newest: $(.venv/bin/python -c 'import jupyterhub, kubespawner; print("JupyterHub", jupyterhub.__version__, "/ KubeSpawner", kubespawner.__version__)')"
      .venv/bin/python -m pytest "${pytest_common[@]}" "$@" ;;
    z2jh)
      ensure_newest   # and the node packages
      ./scripts/setup-lane.sh z2jh
      export VIRTUAL_ENV="$PWD/.venv-z2jh" PATH="$PWD/.venv-z2jh/bin:$PATH"
      echo "== lane z2jh: $(.venv-z2jh/bin/python -c 'import jupyterhub, kubespawner; print("JupyterHub", jupyterhub.__version__, "/ KubeSpawner", kubespawner.__version__)')"
      if [ $# -eq 0 ]; then
        set -- tests --ignore=tests/kubesim --ignore=tests/test_local_mode.py --ignore=tests/test_wheel_local.py
      fi
      .venv-z2jh/bin/python -m pytest "${pytest_common[@]}" "$@" ;;
    real)
      if [ ! -x tests/controlplane/build.sh ]; then
        echo "== lane real: skipped (tests/controlplane is not in this tree)"; return 0
      fi
      ensure_newest
      # builds kube-apiserver, kube-controller-manager and etcd from Go modules once (cached by version
      # outside the tree: ~13 min cold on 2 cores, instant warm); exit 3: no Go and no cached build
      local rc=0
      tests/controlplane/build.sh >/dev/null || rc=$?
      if [ $rc -eq 3 ]; then
        echo "== lane real: skipped: no Go toolchain to build the control plane and no cached build"; return 0
      elif [ $rc -ne 0 ]; then
        echo "== lane real: the control plane build failed (exit $rc)"; return $rc
      fi
      export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
      echo "== lane real: kube-apiserver + kube-controller-manager + etcd from Go modules, kubesim's node"
      if [ $# -eq 0 ]; then set -- tests/realcluster -rxs; fi
      .venv/bin/python -m pytest "${pytest_common[@]}" --cluster real "$@" ;;
    *) echo "test.sh: unknown lane $lane (newest, z2jh, real)" >&2; return 2 ;;
  esac
}

isolated() {
  # the z2jh lane's servers on a loopback of their own: two lanes side by side can then never pick
  # the same port or pod address (each lane alone already takes care within itself)
  unshare --net -- bash -c 'ip link set lo up && exec "$@"' isolated "$@"
}
can_isolate() { command -v unshare >/dev/null && command -v ip >/dev/null && isolated true 2>/dev/null; }

if [ ${#lanes[@]} -eq 1 ]; then
  run_lane "${lanes[0]}" "$@"
  exit $?
fi

# Everything (CI): the static checks first (ruff, mypy, import contracts: seconds), then the three
# lanes side by side: the newest lane here, the z2jh lane in a network namespace of its own, and the
# real lane in another one as soon as the control plane is built (at the lowest CPU priority: ~13 min
# cold, instant from the cache). Each lane's output is shown when it ends. Where no network namespace
# can be made, the lanes run one after the other. About a third of the wall time of running them one
# after the other on 2 cores: the hub tests mostly wait on processes and the network.
logs="${APEX_TEST_LOGS:-$PWD/test-artifacts/lanes}"
mkdir -p "$logs"
ensure_newest
./scripts/setup-lane.sh z2jh
build() { nice -n 19 tests/controlplane/build.sh > "$logs/controlplane-build.out" 2> "$logs/controlplane-build.log"; }
build_pid="" z2jh_pid="" real_pid=""
if can_isolate; then
  echo "== lane z2jh: started beside the newest lane, in its own network namespace (log: $logs/z2jh.log)"
  isolated ./scripts/test.sh --lane z2jh > "$logs/z2jh.log" 2>&1 &
  z2jh_pid=$!
  if [ -x tests/controlplane/build.sh ]; then
    echo "== lane real: starts beside them once the control plane is built, in a namespace of its own (log: $logs/real.log)"
    # the lane runs the build again: reuses it, or reports why it failed
    { build || true; isolated ./scripts/test.sh --lane real > "$logs/real.log" 2>&1; } &
    real_pid=$!
  fi
else
  echo "== lanes z2jh and real: run after the newest lane (no network namespace here: unshare --net is not permitted)"
  if [ -x tests/controlplane/build.sh ]; then build & build_pid=$!; fi
fi
status=0
echo "== static checks (scripts/lint.sh)"
./scripts/lint.sh || status=$?
run_lane newest || status=$?
if [ -n "$z2jh_pid" ]; then
  rc=0; wait "$z2jh_pid" || rc=$?
  cat "$logs/z2jh.log"
  [ $rc -eq 0 ] || status=$rc
else
  run_lane z2jh || status=$?
fi
if [ -n "$real_pid" ]; then
  rc=0; wait "$real_pid" || rc=$?
  cat "$logs/controlplane-build.log" >&2
  cat "$logs/real.log"
  [ $rc -eq 0 ] || status=$rc
else
  if [ -n "$build_pid" ]; then
    wait "$build_pid" || true  # the real lane runs the build again: reuses it, or reports why it failed
    cat "$logs/controlplane-build.log" >&2
  fi
  run_lane real || status=$?
fi
exit $status
