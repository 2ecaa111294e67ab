# Sourced by the benchmarks of this directory: the binary under test ($BIN, else a release
# build), a work directory removed on exit together with the server, the benchmark review and
# starting ck8s-admission until it is ready. Runs from the repository's root.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p ck8s-admission
  BIN=./target/release/ck8s-admission
fi
work=$(mktemp -d)
pid=""
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
export CK8S_CACHE_DIR="$work/cache"

# The review every request posts, in $work/review.json: $REVIEW if set (e.g.
# admission/bench/apiserver-review.json, what the real kube-apiserver sent for the create of
# the cluster benchmarks' 4 KB Deployment, captured by `cargo run -p ck8s-tests --example
# capture_review`), else the 4 KB Deployment of the policy benchmarks as a CREATE AdmissionReview.
write_review() {
  if [ -n "${REVIEW:-}" ]; then
    cp "$REVIEW" "$work/review.json"
    return
  fi
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
}

# start_admission HTTPS_PORT METRICS_PORT [POLL_SECONDS]: starts $BIN with the built-in
# policies, sets $pid, and returns once /readyz answers (30 s at most).
start_admission() {
  local poll=${3:-0.05} until=$((SECONDS + 30))
  "$BIN" --listen "127.0.0.1:$1" --metrics-listen "127.0.0.1:$2" >/dev/null 2>"$work/server.log" &
  pid=$!
  until curl -sf "http://127.0.0.1:$2/readyz" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { echo "error: $BIN exited: $(cat "$work/server.log")" >&2; exit 1; }
    [ "$SECONDS" -lt "$until" ] || { echo "error: $BIN not ready in 30 s" >&2; exit 1; }
    sleep "$poll"
  done
}
