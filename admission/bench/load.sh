#!/usr/bin/env bash
# Load benchmark of ck8s-admission: all three built-in policies on a 4 KB Deployment, over
# TLS with keep-alive, load generator (wrk, Debian package) on the same machine.
#
#   admission/bench/load.sh            # 10 s per run; DURATION=30s for longer runs
#   BIN=/path/to/ck8s-admission admission/bench/load.sh   # another build, same load (no cargo build)
#   REVIEW=admission/bench/apiserver-review.json admission/bench/load.sh   # the API server's review
#
# Prints: ready time with a warm artifact cache, req/s and latency percentiles at 1 and 8
# connections, and the server's RSS (VmHWM, the peak) after the load.
set -euo pipefail
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 2; }
DURATION=${DURATION:-10s}
source "$(dirname "$0")/common.sh"
write_review
start_server() {  # sets $pid and $ready_ms
  local t0; t0=$(date +%s%N)
  start_admission 18443 19090 0.005
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
