#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kwok) from the pinned Go modules beside this script, once per pinned set.
#
# The binaries land in $CK8S_CLUSTER_CACHE/<key>/bin (default ~/.cache/ck8s/cluster), where <key>
# hashes every go.mod, go.sum and main of the modules plus the Go version: a warm run prints the
# directory at once, a change of any pin builds afresh. Prints the bin directory on stdout;
# progress goes to stderr. Safe to run concurrently (one builder at a time, by flock).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is not on PATH; the real-control-plane tests build etcd, kube-apiserver and kwok from Go modules (install Go >= 1.26 with access to the Go module proxy)" >&2
  exit 1
fi

key=$( { go version; cd "$here" && find . -name go.mod -o -name go.sum -o -name '*.go' -o -name build.sh | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-16)
cache=${CK8S_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ck8s/cluster}
out=$cache/$key
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

if [ -f "$out/complete" ]; then
  echo "$out/bin"
  exit 0
fi

start=$(date +%s)
rm -rf "$out.tmp"
mkdir -p "$out.tmp/bin"
# The version the Kubernetes binaries report (and derive their default emulation version
# from), as the upstream release build stamps it.
k8s_version=$(cd "$here/kubernetes" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
k8s_minor=$(echo "$k8s_version" | cut -d. -f2)
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp="$stamp -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done
# -trimpath and no debug info: smaller binaries and a faster link; these are test fixtures.
build() { # module-dir output-name package [extra ldflags]
  local t0; t0=$(date +%s)
  echo "ck8s cluster: building $2 ..." >&2
  (cd "$here/$1" && GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath -ldflags="-s -w ${4:-}" -o "$out.tmp/bin/$2" "$3")
  echo "ck8s cluster: $2 built in $(( $(date +%s) - t0 )) s" >&2
}
build etcd etcd .
build kwok kwok .
build kubernetes kube-apiserver ./cmd/kube-apiserver "$stamp"
build kubernetes kube-controller-manager ./cmd/kube-controller-manager "$stamp"
build kubernetes kube-scheduler ./cmd/kube-scheduler "$stamp"
# kwok serves Logs / PortForward objects but does not install their CRDs (kwokctl does):
# ship them beside the binaries, from the pinned kwok module.
mkdir -p "$out.tmp/crds"
kwok_dir=$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
for crd in logs clusterlogs portforwards clusterportforwards; do
  cp "$kwok_dir/kustomize/crd/bases/kwok.x-k8s.io_$crd.yaml" "$out.tmp/crds/"
done
chmod u+w "$out.tmp/crds/"*
{
  echo "key=$key"
  go version
  for m in etcd:go.etcd.io/etcd/server/v3 kwok:sigs.k8s.io/kwok kubernetes:k8s.io/kubernetes; do
    (cd "$here/${m%%:*}" && go list -m "${m#*:}")
  done
  echo "seconds=$(( $(date +%s) - start ))"
} > "$out.tmp/versions"
touch "$out.tmp/complete"
rm -rf "$out"
mv "$out.tmp" "$out"
# Older pinned sets are of no use any more.
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
echo "ck8s cluster: built in $(( $(date +%s) - start )) s" >&2
echo "$out/bin"
