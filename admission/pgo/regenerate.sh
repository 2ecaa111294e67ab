#!/usr/bin/env bash
# Regenerates admission/pgo/x86_64-unknown-linux-musl.profdata.gz, the profile `cargo xtask dist`
# optimises the released ck8s-admission with (admission/pgo/README.md): an instrumented build of
# the release (same target, same profile), run with the Deployment's policy config, the shipped
# VAP example and the CEL test policies, trained by admission/pgo/train.py, then merged.
# About 12 minutes on 2 cores. Needs `rustup component add llvm-tools` and musl-tools.
#
#   admission/pgo/regenerate.sh
#   INSTRUMENTED=target/pgo-gen/x86_64-unknown-linux-musl/release/ck8s-admission admission/pgo/regenerate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
triple=x86_64-unknown-linux-musl
llvm_bin=$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin
[ -x "$llvm_bin/llvm-profdata" ] || { echo "error: llvm-profdata missing: rustup component add llvm-tools" >&2; exit 1; }

# The commit the build is made from, taken before it starts (a tree with changes says so).
trained_at="commit $(git rev-parse HEAD)"
[ -z "$(git status --porcelain -- '*.rs' Cargo.lock)" ] || trained_at="$trained_at with uncommitted changes"

work=$(mktemp -d)
pid=""
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT

# Its own target directory: instrumented objects must not mix with the release build's. The
# flag's path is fixed so that a second run reuses the build; LLVM_PROFILE_FILE picks the output.
# INSTRUMENTED=<binary> trains an instrumented build made before instead (of HEAD's code: the
# stamp names HEAD).
if [ -n "${INSTRUMENTED:-}" ]; then
  bin=$INSTRUMENTED
else
  env_name="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
  env "$env_name=-Cprofile-generate=$root/target/pgo-gen/profraw" \
    cargo build -q --release --locked -p ck8s-admission --target "$triple" --target-dir "$root/target/pgo-gen"
  bin=$root/target/pgo-gen/$triple/release/ck8s-admission
fi

# train ARGS...: the instrumented server with the Deployment's flags and ARGS, trained, then
# stopped by SIGTERM (it drains and exits 0; the profile runtime writes its counters at exit).
train() {
  LLVM_PROFILE_FILE="$work/raw/%p-%m.profraw" "$bin" --listen 127.0.0.1:18743 --metrics-listen 127.0.0.1:19390 \
    --config deploy/base/policies.yaml --cache-dir "$work/cache" --log-format=json "$@" \
    >/dev/null 2>"$work/server.log" &
  pid=$!
  until curl -sf http://127.0.0.1:19390/readyz >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { echo "error: the instrumented server exited: $(cat "$work/server.log")" >&2; exit 1; }
    sleep 0.2
  done
  python3 admission/pgo/train.py 18743 19390
  kill -TERM "$pid"
  wait "$pid"
  pid=""
}
# The built-in policies alone, as deploy/base runs them: evaluated on the connection's thread.
train
# With ValidatingAdmissionPolicies (the shipped example and the CEL test policies). Without a
# cluster their namespace lookups fail closed; instrumented, some evaluations outlive the
# inline budget and the set moves to the blocking pool, so that path is trained too.
mkdir -p "$work/policies"
cp deploy/components/vap-policies/policies/*.yaml policies/cel/testdata/policies/*.yaml "$work/policies/"
train --policies "$work/policies"

# Sparse: functions the workload never ran are left out (they are optimised as without a profile).
"$llvm_bin/llvm-profdata" merge --sparse -o "$work/merged.profdata" "$work/raw"
gzip -9n <"$work/merged.profdata" >admission/pgo/$triple.profdata.gz
printf 'trained on %s with %s\n' "$trained_at" "$(rustc -V)" >admission/pgo/$triple.trained-at
ls -l admission/pgo/$triple.profdata.gz
