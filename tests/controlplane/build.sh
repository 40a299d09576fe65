#!/usr/bin/env bash
# Build etcd, kube-apiserver and kube-controller-manager from the Go modules pinned in go.mod,
# once per version, into a cache outside the work tree; print the directory holding them.
#
#   tests/controlplane/build.sh            # builds (or reuses) and prints the bin directory
#   APEX_CONTROLPLANE_CACHE=/some/dir ...  # where builds are cached (default ~/.cache/apex-hub/controlplane)
#
# Exit code 3: no Go toolchain and no cached build (the real lane is then skipped, and says why).
# APEX_CONTROLPLANE_GO: the go binary to use (default: go on PATH, then /usr/local/go/bin/go).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PATH="$PATH:/usr/local/go/bin"
go="${APEX_CONTROLPLANE_GO:-$(command -v go || true)}"
k8s="$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$here/go.mod")"
etcd="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$here/go.mod")"
# The key changes whenever anything that goes into the binaries does (the Go version that built
# them is recorded in BUILD: a warm cache is used even where Go is missing).
key="$(cat "$here/go.mod" "$here/go.sum" "$here"/*/main.go | sha256sum | cut -c1-12)"
cache="${APEX_CONTROLPLANE_CACHE:-$HOME/.cache/apex-hub/controlplane}"
out="$cache/$k8s-etcd$etcd-$key"
if [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && [ -x "$out/etcd" ]; then
  echo "$out"
  exit 0
fi
if [ -z "$go" ] || ! [ -x "$go" ]; then
  echo "controlplane: no Go toolchain (go not on PATH nor in /usr/local/go/bin) and no cached build in $out" >&2
  exit 3
fi
gov="$("$go" env GOVERSION)"
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "controlplane: building Kubernetes $k8s and etcd $etcd with $gov (cold: ~15 min on 2 cores)" >&2
(cd "$here" && CGO_ENABLED=0 "$go" build -trimpath -ldflags='-s -w' -o "$tmp/" \
   ./kube-apiserver ./kube-controller-manager ./etcd) >&2
secs=$(( $(date +%s) - start ))
printf 'kubernetes %s\netcd %s\ngo %s\nbuild_seconds %s\nbytes %s\n' "$k8s" "$etcd" "$gov" "$secs" \
  "$(du -cb "$tmp"/kube-apiserver "$tmp"/kube-controller-manager "$tmp"/etcd | tail -1 | cut -f1)" > "$tmp/BUILD"
echo "controlplane: built in ${secs}s" >&2
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
