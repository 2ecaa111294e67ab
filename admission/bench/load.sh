#!/usr/bin/env bash
# Load benchmark of ck8s-admission: all three built-in policies on a 4 KB Deployment, over
# TLS with keep-alive, load generator (wrk, Debian package) on the same machine.
#
#   admission/bench/load.sh            # 10 s per run; DURATION=30s for longer runs
#   BIN=/path/to/ck8s-admission admission/bench/load.sh   # another build, same load (no cargo build)
#
# Prints: ready time with a warm artifact cache, req/s and latency percentiles at 1 and 8
# connections, and the server's RSS (VmHWM, the peak) after the load.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 2; }
DURATION=${DURATION:-10s}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p ck8s-admission
  BIN=./target/release/ck8s-admission
fi
work=$(mktemp -d)
pid=""
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work/review.json" <<'PY'
import json, sys
obj = json.load(open("policies/runtime/benches/deployment-4k.json"))
review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "b5f4c8a2-0000-4000-8000-000000000001",
    "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
    "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
    "operation": "CREATE", "namespace": "codex-k8s-prod", "name": obj["metadata"]["name"],
    "userInfo": {"username": "bench"}, "object": obj, "dryRun": False}}
json.dump(review, open(sys.argv[1], "w"))
PY
export CK8S_CACHE_DIR="$work/cache"
start_server() {  # sets $pid and $ready_ms
  local t0; t0=$(date +%s%N)
  "$BIN" --listen 127.0.0.1:18443 --metrics-listen 127.0.0.1:19090 >/dev/null 2>"$work/server.log" &
  pid=$!
  until curl -sf http://127.0.0.1:19090/readyz >/dev/null 2>&1; do sleep 0.005; done
  ready_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
}
start_server; cold=$ready_ms; kill $pid; wait $pid 2>/dev/null || true
start_server; warm=$ready_ms
echo "ready: ${cold} ms with a cold artifact cache, ${warm} ms warm (includes process start)"
curl -sk https://127.0.0.1:18443/validate -H 'content-type: application/json' --data-binary @"$work/review.json" | grep -q '"allowed":true' \
  || { echo "the benchmark review must be allowed" >&2; exit 1; }
for c in 1 8; do
  echo "--- $c connection(s), ${DURATION}"
  CK8S_REVIEW="$work/review.json" wrk -t "$(( c < 2 ? 1 : 2 ))" -c "$c" -d "$DURATION" --latency -s admission/bench/post.lua https://127.0.0.1:18443/validate \
    | grep -E "Requests/sec|Latency  |^ +(50|90|99)%|Non-2xx|Socket errors"
done
grep -E "VmHWM|VmRSS" /proc/$pid/status
