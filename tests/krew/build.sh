#!/usr/bin/env bash
# Builds krew (sigs.k8s.io/krew, pinned in go.mod beside this script) once per pinned set, for
# the release test that installs the krew manifest with the real krew.
#
# The binary lands in $CK8S_KREW_CACHE/<key>/krew (default ~/.cache/ck8s/krew), <key> hashing
# go.mod, go.sum, this script and the Go version; prints its path on stdout. Kept apart from
# tests/cluster so that a krew pin does not rebuild the control plane.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is not on PATH; the krew test builds krew from the Go module proxy (Go >= 1.26)" >&2
  exit 1
fi
key=$( { go version; cd "$here" && sha256sum go.mod go.sum build.sh; } | sha256sum | cut -c1-16)
cache=${CK8S_KREW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ck8s/krew}
out=$cache/$key
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$out/krew" ]; then
  t0=$(date +%s)
  echo "ck8s krew: building sigs.k8s.io/krew ..." >&2
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp"
  (cd "$here" && GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$out.tmp/krew" sigs.k8s.io/krew/cmd/krew)
  rm -rf "$out"
  mv "$out.tmp" "$out"
  find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
  echo "ck8s krew: built in $(( $(date +%s) - t0 )) s" >&2
fi
echo "$out/krew"
