#!/usr/bin/env bash
# Idle CPU of ck8s-admission: the built-in policies loaded, no request for SECONDS (60), the
# process's own user + system time from /proc, as a share of one core.
#
#   admission/bench/idle.sh                      # builds the release binary first
#   BIN=target/debug/ck8s-admission admission/bench/idle.sh
set -euo pipefail
SECONDS_IDLE=${SECONDS_IDLE:-60}
source "$(dirname "$0")/common.sh"
start_admission 18543 19190
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
