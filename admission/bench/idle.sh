#!/usr/bin/env bash
# Idle CPU of ck8s-admission: the built-in policies loaded, no request for SECONDS (60), the
# process's own user + system time from /proc, as a share of one core.
#
#   admission/bench/idle.sh                      # builds the release binary first
#   BIN=target/debug/ck8s-admission admission/bench/idle.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_IDLE=${SECONDS_IDLE:-60}
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p ck8s-admission
  BIN=./target/release/ck8s-admission
fi
work=$(mktemp -d)
pid=""
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
CK8S_CACHE_DIR="$work/cache" "$BIN" --listen 127.0.0.1:18543 --metrics-listen 127.0.0.1:19190 \
  >/dev/null 2>"$work/server.log" &
pid=$!
for _ in $(seq 600); do
  curl -sf http://127.0.0.1:19190/readyz >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "error: $BIN exited: $(cat "$work/server.log")" >&2; exit 1; }
  sleep 0.05
done
curl -sf http://127.0.0.1:19190/readyz >/dev/null || { echo "error: $BIN not ready in 30 s" >&2; exit 1; }
sleep 1 # start-up settles
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
before=$(cpu)
sleep "$SECONDS_IDLE"
after=$(cpu)
python3 - "$before" "$after" "$hz" "$SECONDS_IDLE" <<'PY'
import sys
b, a, hz, s = (float(x) for x in sys.argv[1:])
print(f"idle {s:.0f} s: {(a - b) / hz * 1000:.0f} ms of CPU = {(a - b) / hz / s * 100:.3f}% of a core")
PY
