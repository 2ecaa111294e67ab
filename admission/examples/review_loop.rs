//! A review's own work, counted in instructions: `review::answer` (the review's parse, the
//! built-in policies in their wasm instance, the metrics, the answer's encoding) on the API
//! server's review of the benchmarks' Deployment, N times in one thread, without the
//! transport. Under callgrind the count is steady on a noisy machine, where CPU time is not:
//!
//! ```sh
//! cargo build --release -p ck8s-admission --example review_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/review_loop 1000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/review_loop 0
//! # instructions per review: (Ir(1000) - Ir(0)) / 1000
//! ```
//!
//! The pool has one instance slot (the webhook's has one per in-flight review): valgrind cannot
//! reserve the address space of more.

use ck8s_admission::metrics::Metrics;
use ck8s_admission::review;
use ck8s_policy_runtime::{Limits, PolicySet, PolicySources, Runtime};

const REVIEW: &[u8] = include_bytes!("../bench/apiserver-review.json");

fn main() -> anyhow::Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|_| anyhow::anyhow!("usage: review_loop N (reviews to answer)"))?,
        None => 1000,
    };
    let limits = Limits {
        max_instances: 1,
        ..Limits::default()
    };
    let runtime = Runtime::new(limits, None)?;
    let sources = PolicySources::new().builtin(ck8s_builtin_policies::BUNDLE);
    let set = PolicySet::build(&runtime, &sources)?;
    let metrics = Metrics::new();
    // One answer outside the count's difference: the first evaluation's one-time work.
    let first = review::answer(REVIEW, &set, None, &metrics)?;
    anyhow::ensure!(
        first.decision.allowed,
        "the benchmark's review must be allowed"
    );
    for _ in 0..n {
        let answer = review::answer(REVIEW, &set, None, &metrics)?;
        std::hint::black_box(answer.body);
    }
    Ok(())
}
