#!/usr/bin/env bash
# Profile-guided optimisation of ck8s-admission, measured and not adopted (BENCHMARKS.md,
# "Profile-guided optimisation"): an instrumented release build (glibc, the repository's fat-LTO
# profile) is trained by admission/bench/paced.sh, its profile merged, and the release rebuilt
# with it, in target directories of their own. Needs `rustup component add llvm-tools`.
# Writes /tmp/ck8s-pgo-gen (instrumented), /tmp/pgo.profdata and /tmp/ck8s-pgo (optimised);
# about 25 minutes on 2 cores.
#
#   admission/bench/pgo-experiment.sh
#   BIN=/tmp/ck8s-pgo SECONDS_RUN=10 admission/bench/paced.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
BIN_DIR=$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin
rm -rf /tmp/pgo-data; mkdir -p /tmp/pgo-data
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-Cprofile-generate=/tmp/pgo-data"
time cargo build -q --release -p ck8s-admission --target x86_64-unknown-linux-gnu --target-dir "$root/target/pgo-gen"
cp "$root"/target/pgo-gen/x86_64-unknown-linux-gnu/release/ck8s-admission /tmp/ck8s-pgo-gen
unset CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS
LLVM_PROFILE_FILE=/tmp/pgo-data/%p-%m.profraw BIN=/tmp/ck8s-pgo-gen SECONDS_RUN=20 admission/bench/paced.sh
sleep 2
"$BIN_DIR/llvm-profdata" merge -o /tmp/pgo.profdata /tmp/pgo-data
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-Cprofile-use=/tmp/pgo.profdata"
time cargo build -q --release -p ck8s-admission --target x86_64-unknown-linux-gnu --target-dir "$root/target/pgo-use"
cp "$root"/target/pgo-use/x86_64-unknown-linux-gnu/release/ck8s-admission /tmp/ck8s-pgo
echo built
