#!/usr/bin/env bash
# Run apex-hub locally with no cluster. Today: the Kubernetes simulator in process mode
# (the full local mode with the hub on top is tracked in its own issue).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/apex-hub ] || ./scripts/setup.sh
. .venv/bin/activate
exec apex-hub kubesim --kubelet process --kubeconfig "${KUBECONFIG_OUT:-$PWD/kubesim.kubeconfig}" "$@"
