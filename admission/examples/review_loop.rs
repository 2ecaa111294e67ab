//! A review's own work without the transport: `review::answer` (the review's parse, the
//! built-in policies in their wasm instance, the metrics, the answer's encoding) on the API
//! server's review of the benchmarks' Deployment, N times in one thread.
//!
//! Counted in instructions, which are steady on a noisy machine where CPU time is not:
//!
//! ```sh
//! cargo build --release -p ck8s-admission --example review_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/review_loop 1000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/review_loop 0
//! # instructions per review: (Ir(1000) - Ir(0)) / 1000
//! ```
//!
//! With a second argument, the time of each `answer` alone is measured and its median and
//! spread printed, `EVICT` bytes of memory written before each review (0: none, the caches
//! hot), so that it finds the caches as a review behind a busy API server does (64 MiB: more
//! than this machine's 32 MiB L3). Under callgrind's cache simulation the same run counts the cache lines a
//! review misses, code and data, function by function:
//!
//! ```sh
//! target/release/examples/review_loop 2000 0               # time per review, caches hot
//! target/release/examples/review_loop 2000 67108864        # time per review, caches cold
//! valgrind --tool=callgrind --cache-sim=yes --LL=33554432,16,64 \
//!   --callgrind-out-file=/tmp/cold target/release/examples/review_loop 200 67108864
//! callgrind_annotate --inclusive=yes --show=Ir,ILmr,DLmr /tmp/cold   # ILmr: code lines missed
//! ```
//!
//! The pool has one instance slot (the webhook's has one per in-flight review): valgrind cannot
//! reserve the address space of more.

use ck8s_admission::metrics::Metrics;
use ck8s_admission::review;
use ck8s_admission::store::Served;
use ck8s_policy_runtime::{Limits, PolicySet, PolicySources, Runtime};
use std::time::{Duration, Instant};

const REVIEW: &[u8] = include_bytes!("../bench/apiserver-review.json");
const USAGE: &str = "usage: review_loop N [EVICT] (reviews to answer; with EVICT, each timed after writing EVICT bytes)";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut number = || -> anyhow::Result<Option<usize>> {
        args.next()
            .map(|a| a.parse().map_err(|_| anyhow::anyhow!(USAGE)))
            .transpose()
    };
    let n = number()?.unwrap_or(1000);
    let evict = number()?;
    let limits = Limits {
        max_instances: 1,
        ..Limits::default()
    };
    let runtime = Runtime::new(limits, None)?;
    let sources = PolicySources::new().builtin(ck8s_builtin_policies::BUNDLE);
    let served = Served::new(PolicySet::build(&runtime, &sources)?);
    let metrics = Metrics::new();
    // One answer outside the count's difference: the first evaluation's one-time work.
    let first = review::answer(REVIEW, &served, None, &metrics)?;
    anyhow::ensure!(
        first.decision.allowed,
        "the benchmark's review must be allowed"
    );
    let Some(evict) = evict else {
        for _ in 0..n {
            let answer = review::answer(REVIEW, &served, None, &metrics)?;
            std::hint::black_box(answer.body);
        }
        return Ok(());
    };
    // One write per cache line: what the review needs next is no longer cached.
    let mut other_work = vec![0u8; evict];
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        for line in other_work.iter_mut().step_by(64) {
            *line = line.wrapping_add(i as u8);
        }
        std::hint::black_box(&other_work);
        let start = Instant::now();
        let answer = review::answer(REVIEW, &served, None, &metrics)?;
        times.push(start.elapsed());
        std::hint::black_box(answer.body);
    }
    let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    if !times.is_empty() {
        println!(
            "{n} reviews, {} KiB written before each: median {:.1} µs per review (p10 {:.1}, p90 {:.1}), mean {:.1}",
            evict >> 10,
            us(at(0.5)),
            us(at(0.1)),
            us(at(0.9)),
            us(mean)
        );
    }
    Ok(())
}
