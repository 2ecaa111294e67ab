//! Where the time of one evaluation goes: single-call medians of the host's parse, a no-op
//! guest, each built-in policy, and the native floor beside the whole set.
//!
//! `cargo run --release -p ck8s-policy-runtime --example profile`
//!
//! With `CK8S_PROFILE_LOOP=N` it only evaluates the set N times, for `perf record`; built with
//! the `perfmap` feature and unstripped guests, `perf report` names the guests' functions:
//!
//! ```text
//! CARGO_PROFILE_WASM_POLICY_STRIP=false cargo build --release -p ck8s-policy-runtime \
//!     --example profile --features perfmap
//! CK8S_PROFILE_LOOP=300000 perf record -o /tmp/perf.data target/release/examples/profile
//! perf report -i /tmp/perf.data --no-children --sort dso,sym
//! ```

use ck8s_policy_api::Operation;
use ck8s_policy_runtime::{Limits, PolicySource, Runtime, Source, Subject};
use serde_json::value::RawValue;
use std::time::Instant;

#[path = "../benches/native_floor.rs"]
mod native_floor;
use native_floor::NativeFloor;

fn median(mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..20000)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let raw =
        RawValue::from_string(include_str!("../benches/deployment-4k.json").to_string()).unwrap();
    let subject = Subject::from_manifest(&raw, Operation::Create).unwrap();
    if let Some(n) = std::env::var("CK8S_PROFILE_LOOP")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return evaluate_in_a_loop(&subject, n);
    }
    // What the built-ins get: none of them reads the raw object.
    let req = subject.input().unwrap().to_vec(false);
    println!(
        "host parse + encode (once per request): {:.1} us, input {} bytes",
        median(|| {
            std::hint::black_box(subject.input().unwrap());
        }),
        req.len()
    );
    let keep: usize = std::env::var("KEEP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 << 10);
    let rt = Runtime::new(
        Limits {
            keep_resident_bytes: keep,
            ..Limits::default()
        },
        None,
    )
    .unwrap();
    let meta = r#"{"name":"noop","version":"0","description":"x","rules":[{"apiGroups":["*"],"apiVersions":["*"],"resources":["*"],"operations":["CREATE"]}]}"#;
    let allow = r#"{"violations":[]}"#;
    let wat = format!(
        r#"(module (memory (export "memory") 2) (global $h (mut i32) (i32.const 4096))
      (data (i32.const 0) "{}") (data (i32.const 2048) "{}")
      (func (export "ck8s_abi_version") (result i32) (i32.const 2))
      (func (export "ck8s_alloc") (param i32) (result i32) (local i32) (local.set 1 (global.get $h)) (global.set $h (i32.add (global.get $h) (local.get 0))) (local.get 1))
      (func (export "ck8s_metadata") (result i64) (i64.const {}))
      (func (export "ck8s_validate") (param i32 i32 i32 i32) (result i64) (i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.const {}))))"#,
        meta.replace('"', "\\\""),
        allow.replace('"', "\\\""),
        meta.len(),
        allow.len()
    );
    let noop = rt
        .load(
            PolicySource::Inline("noop".into()),
            &wat::parse_str(&wat).unwrap(),
        )
        .unwrap();
    println!(
        "noop wasm with the 4 KB object's input: {:.1} us",
        median(|| {
            noop.evaluate(&req, b"{}").unwrap();
        })
    );
    let builtin = Source::Builtin(ck8s_builtin_policies::BUNDLE);
    let br = builtin.load(&rt).unwrap().into_iter().next().unwrap();
    println!(
        "build-ref decode only: {:.1} us",
        median(|| {
            br.evaluate(&req, br#"{"names":[]}"#).unwrap();
        })
    );
    let tiny = RawValue::from_string(
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{}}"#.to_string(),
    )
    .unwrap();
    let small = Subject::from_manifest(&tiny, Operation::Create)
        .unwrap()
        .input()
        .unwrap()
        .to_vec(false);
    println!(
        "build-ref tiny object: {:.1} us",
        median(|| {
            br.evaluate(&small, br#"{"names":[]}"#).unwrap();
        })
    );
    println!(
        "native decode of the input: {:.2} us",
        median(|| {
            std::hint::black_box(
                ck8s_policy_api::codec::decode_input(std::hint::black_box(&req)).unwrap(),
            );
        })
    );
    side_by_side(&rt, &subject);
    for p in builtin.load(&rt).unwrap() {
        let settings = serde_json::to_vec(&p.metadata.default_settings()).unwrap();
        println!(
            "{} alone, in an instance of its own: {:.1} us",
            p.metadata.name,
            median(|| {
                p.evaluate(&req, &settings).unwrap();
            })
        );
    }
}

/// The benchmark's two sides, as medians of single calls (criterion reports sample means).
fn side_by_side(rt: &Runtime, subject: &Subject<'_>) {
    let floor = NativeFloor::default();
    println!(
        "native Object::parse of the object: {:.1} us",
        median(|| {
            std::hint::black_box(floor.parse(std::hint::black_box(subject)));
        })
    );
    let parsed = floor.parse(subject);
    println!(
        "native checks only: {:.2} us",
        median(|| {
            std::hint::black_box(floor.check(std::hint::black_box(&parsed)));
        })
    );
    let json = subject.request_json();
    println!(
        "(not in the floor) Request::parse of the JSON request, wrapper included: {:.1} us",
        median(|| {
            std::hint::black_box(
                ck8s_policy_sdk::Request::parse(std::hint::black_box(&json)).unwrap(),
            );
        })
    );
    let native = median(|| {
        assert_eq!(floor.evaluate(std::hint::black_box(subject)), [0, 0, 0]);
    });
    let set = builtin_set(rt);
    let wasm = median(|| {
        let d = ck8s_policy_runtime::Decision::from_evaluation(
            &set.evaluate(std::hint::black_box(subject)),
        );
        assert!(d.allowed);
    });
    println!(
        "native floor: {native:.1} us; wasm, the set of 3 (one bundle instance): {wasm:.1} us; ratio {:.2}",
        wasm / native
    );
}

/// The built-in policies with their default settings, as the webhook runs them.
fn builtin_set(rt: &Runtime) -> ck8s_policy_runtime::PolicySet {
    let sources = ck8s_policy_runtime::PolicySources::new().builtin(ck8s_builtin_policies::BUNDLE);
    ck8s_policy_runtime::PolicySet::build(rt, &sources).unwrap()
}

/// The set of built-ins on the subject, `n` times, and the mean: the loop to `perf record`.
fn evaluate_in_a_loop(subject: &Subject<'_>, n: u64) {
    let rt = Runtime::new(Limits::default(), None).unwrap();
    let set = builtin_set(&rt);
    let start = Instant::now();
    for _ in 0..n {
        let d = ck8s_policy_runtime::Decision::from_evaluation(
            &set.evaluate(std::hint::black_box(subject)),
        );
        assert!(d.allowed);
    }
    println!(
        "{n} evaluations, {:.2} us each",
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
