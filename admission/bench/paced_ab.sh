#!/usr/bin/env bash
# Two builds of ck8s-admission side by side at a real cluster's rate (issue 24): both run at
# once, and one client posts the review to each in turn, one-second slices of RATE (150)
# reviews, SLICES (60) slices each, the order swapped every pair. Each slice's server CPU is
# read from the kernel's scheduler statistics (/proc/<pid>/task/*/schedstat, nanoseconds), so
# a slice of 150 reviews is measured to the microsecond and the two builds see the same
# minute of a noisy machine, a second apart.
#
#   BIN_A=/path/to/old BIN_B=/path/to/new admission/bench/paced_ab.sh
#   REVIEW=admission/bench/apiserver-review.json BIN_A=... BIN_B=... admission/bench/paced_ab.sh
#
# Prints each build's CPU per review (median slice, the quartiles, the mean) and the median of
# the per-pair ratios B/A.
set -euo pipefail
: "${BIN_A:?set BIN_A and BIN_B to the two builds}" "${BIN_B:?set BIN_A and BIN_B to the two builds}"
RATE=${RATE:-150}
SLICES=${SLICES:-60}
BIN=$BIN_A
source "$(dirname "$0")/common.sh"
write_review
pid_a="" pid_b=""
trap 'kill $pid_a $pid_b 2>/dev/null || true; rm -rf "$work"' EXIT
BIN=$BIN_A start_admission 18645 19292
pid_a=$pid
BIN=$BIN_B start_admission 18646 19293
pid_b=$pid
python3 - "$pid_a" "$pid_b" "$RATE" "$SLICES" "$work/review.json" <<'PY'
import glob, http.client, ssl, statistics, sys, time
pids = [int(sys.argv[1]), int(sys.argv[2])]
rate, slices = float(sys.argv[3]), int(sys.argv[4])
review = open(sys.argv[5], "rb").read()
tls = ssl.create_default_context()
tls.check_hostname = False
tls.verify_mode = ssl.CERT_NONE
conns = [http.client.HTTPSConnection("127.0.0.1", port, context=tls) for port in (18645, 18646)]
headers = {"content-type": "application/json"}

def post(conn):
    conn.request("POST", "/validate", review, headers)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200 or b'"allowed":true' not in body:
        sys.exit(f"error: unexpected answer {r.status}: {body[:300]!r}")

def cpu_ns(pid):
    # Every thread's time on a CPU, in nanoseconds (the first field of schedstat).
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            total += int(open(path).read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total

for conn in conns:  # warm-up: connection, instances, caches
    for _ in range(200):
        post(conn)
time.sleep(1)
n = int(rate)
per_review = [[], []]
for s in range(slices):
    for side in ((0, 1) if s % 2 == 0 else (1, 0)):
        c0, t0 = cpu_ns(pids[side]), time.monotonic()
        for i in range(n):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            post(conns[side])
        # The slice's last answer is in; let the server finish its bookkeeping.
        time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
        per_review[side].append((cpu_ns(pids[side]) - c0) / n / 1e6)

def show(name, xs):
    q = statistics.quantiles(xs, n=4)
    return (f"{name}: {statistics.median(xs):.4f} ms per review (quartiles {q[0]:.4f}-{q[2]:.4f}, "
            f"mean {statistics.fmean(xs):.4f}) over {len(xs)} slices of {n}")
print(show("A", per_review[0]))
print(show("B", per_review[1]))
ratios = [b / a for a, b in zip(*per_review)]
q = statistics.quantiles(ratios, n=4)
print(f"B/A, slice by slice: median {statistics.median(ratios):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f})")
PY
