#!/usr/bin/env bash
# Build etcd, kube-apiserver and kube-controller-manager from the Go modules pinned in go.mod,
# once per version, into a cache outside the work tree; print the directory holding them.
#
#   tests/controlplane/build.sh            # builds (or reuses) and prints the bin directory
#   APEX_CONTROLPLANE_CACHE=/some/dir ...  # where builds are cached (default ~/.cache/apex-hub/controlplane)
#
# Exit code 3: no Go toolchain (the real lane is then skipped, and says why).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null 2>&1; then
  echo "controlplane: no Go toolchain (go not on PATH nor in /usr/local/go/bin)" >&2
  exit 3
fi
k8s="$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$here/go.mod")"
etcd="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$here/go.mod")"
gov="$(go env GOVERSION)"
# The key changes whenever anything that goes into the binaries does.
key="$(cat "$here/go.mod" "$here/go.sum" "$here"/*/main.go | sha256sum | cut -c1-12)"
cache="${APEX_CONTROLPLANE_CACHE:-$HOME/.cache/apex-hub/controlplane}"
out="$cache/$k8s-etcd$etcd-$gov-$key"
if [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && [ -x "$out/etcd" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "controlplane: building Kubernetes $k8s and etcd $etcd with $gov (cold: ~15 min on 2 cores)" >&2
(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$tmp/" \
   ./kube-apiserver ./kube-controller-manager ./etcd) >&2
secs=$(( $(date +%s) - start ))
printf 'kubernetes %s\netcd %s\ngo %s\nbuild_seconds %s\nbytes %s\n' "$k8s" "$etcd" "$gov" "$secs" \
  "$(du -cb "$tmp"/kube-apiserver "$tmp"/kube-controller-manager "$tmp"/etcd | tail -1 | cut -f1)" > "$tmp/BUILD"
echo "controlplane: built in ${secs}s" >&2
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
