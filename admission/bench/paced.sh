#!/usr/bin/env bash
# ck8s-admission's own CPU per review at a real cluster's rate (issue 24): one client on one
# keep-alive TLS connection posts the 4 KB Deployment review RATE times a second (150) for
# SECONDS_RUN (30), the built-in policies loaded; the server's user + system time from /proc.
# Unlike load.sh (wrk at saturation), every review here finds the server idle, as it does
# behind an API server: the figure includes the wake-ups and thread hand-offs of each review.
#
#   admission/bench/paced.sh                                 # builds the release binary first
#   BIN=/path/to/ck8s-admission admission/bench/paced.sh     # another build
#   RATE=1000 admission/bench/paced.sh
#   REVIEW=admission/bench/apiserver-review.json admission/bench/paced.sh   # what the API server sends
set -euo pipefail
RATE=${RATE:-150}
SECONDS_RUN=${SECONDS_RUN:-30}
source "$(dirname "$0")/common.sh"
write_review
start_admission 18643 19290
python3 - "$pid" "$RATE" "$SECONDS_RUN" "$work/review.json" <<'PY'
import http.client, json, os, ssl, sys, time
pid, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
review = open(sys.argv[4], "rb").read()
tls = ssl.create_default_context()
tls.check_hostname = False
tls.verify_mode = ssl.CERT_NONE
conn = http.client.HTTPSConnection("127.0.0.1", 18643, context=tls)
headers = {"content-type": "application/json"}

def post():
    conn.request("POST", "/validate", review, headers)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200 or b'"allowed":true' not in body:
        sys.exit(f"error: unexpected answer {r.status}: {body[:300]!r}")

def cpu_s():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

for _ in range(200):  # warm-up: connection, instances, caches
    post()
time.sleep(1)
n = int(rate * seconds)
c0, t0 = cpu_s(), time.monotonic()
latencies = []
for i in range(n):
    delay = t0 + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    s = time.monotonic()
    post()
    latencies.append(time.monotonic() - s)
wall = time.monotonic() - t0
c1 = cpu_s()
latencies.sort()
print(f"{n} reviews in {wall:.1f} s ({n / wall:.0f}/s, asked {rate:.0f}/s): "
      f"server CPU {(c1 - c0) * 1000:.0f} ms = {(c1 - c0) / n * 1000:.3f} ms per review; "
      f"client latency p50 {latencies[n // 2] * 1000:.2f} ms, p99 {latencies[n * 99 // 100] * 1000:.2f} ms")
PY
