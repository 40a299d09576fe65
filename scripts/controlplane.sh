#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver, kube-controller-manager),
# built from Go modules on first use (tests/controlplane/build.sh, cached); prints the admin
# kubeconfig; Ctrl-C stops it.   ./scripts/controlplane.sh [--workdir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || ./scripts/setup.sh
exec .venv/bin/python -m tests.helpers.controlplane "$@"
