//! Hostile guests: each one is contained (deadline, memory cap, stack limit, output cap,
//! import check), reported as a clear error, and leaves the host and other policies working.

use ck8s_policy_api::Operation;
use ck8s_policy_runtime::{
    Decision, Evaluation, Limits, LoadError, LoadedPolicy, OutcomeResult, PolicyError, PolicySet,
    PolicySource, PolicySources, Runtime, SettingsFile, Source, Subject,
};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

const META: &str = r#"{"name":"hostile","version":"0.0.1","description":"test","rules":[{"apiGroups":["*"],"apiVersions":["*"],"resources":["*"],"operations":["CREATE","UPDATE"]}]}"#;
const ALLOW: &str = r#"{"violations":[]}"#;

/// A module that follows the ABI, with `validate_body` as the body of `ck8s_validate`
/// (which must leave an i64 on the stack) and `extra` spliced in at module level.
fn policy_wat(validate_body: &str, extra: &str, abi: i32) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        r#"(module
  {extra}
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0) "{meta}")
  (data (i32.const 2048) "{allow}")
  (func (export "ck8s_abi_version") (result i32) (i32.const {abi}))
  (func (export "ck8s_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    ;; grow memory when the bump pointer passes the end
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (local.get $len) (i32.const 65536)) (i32.const 1))))))
    (local.get $p))
  (func (export "ck8s_metadata") (result i64) (i64.const {meta_len}))
  (func (export "ck8s_validate") (param i32 i32 i32 i32) (result i64)
    {validate_body})
)"#,
        meta = esc(META),
        allow = esc(ALLOW),
        meta_len = META.len(),
    )
}

/// `ck8s_validate` that allows (returns the ALLOW verdict at offset 2048).
fn allow_body() -> String {
    format!(
        "(i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.const {}))",
        ALLOW.len()
    )
}

fn runtime() -> Runtime {
    Runtime::new(
        Limits {
            deadline: Duration::from_millis(50),
            memory_bytes: 8 << 20,
            ..Limits::default()
        },
        None,
    )
    .unwrap()
}

fn load(rt: &Runtime, wat: &str) -> Result<LoadedPolicy, LoadError> {
    let wasm = wat::parse_str(wat).expect("test WAT must assemble");
    rt.load(PolicySource::Inline("hostile.wat".into()), &wasm)
}

const REQUEST: &str = r#"{"operation":"CREATE","kind":{"group":"","version":"v1","kind":"ConfigMap"},"object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}}"#;

fn run(policy: &LoadedPolicy) -> Result<(), PolicyError> {
    policy.evaluate(REQUEST.as_bytes(), b"{}").map(|_| ())
}

/// After any hostile call, the built-in policies still answer correctly.
fn host_still_works(rt: &Runtime) {
    let sources = PolicySources::new().builtin(ck8s_builtin_policies::BUNDLE);
    let set = PolicySet::build(rt, &sources).unwrap();
    let raw = RawValue::from_string(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"codex-k8s-runtime"},"data":{"CODEXK8S_BUILD_REF":"-b x"}}"#.into(),
    )
    .unwrap();
    let subject = Subject::from_manifest(&raw, Operation::Create).unwrap();
    let decision = Decision::from_evaluation(&set.evaluate(&subject));
    assert!(!decision.allowed);
    assert_eq!(decision.denials.len(), 1);
}

#[test]
fn a_well_behaved_module_loads_and_allows() {
    let rt = runtime();
    let p = load(&rt, &policy_wat(&allow_body(), "", 1)).unwrap();
    assert_eq!(p.metadata.name, "hostile");
    assert_eq!(run(&p), Ok(()));
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let rt = runtime();
    let p = load(&rt, &policy_wat("(loop $l (br $l)) (unreachable)", "", 1)).unwrap();
    let start = Instant::now();
    assert_eq!(
        run(&p),
        Err(PolicyError::Timeout(Duration::from_millis(50)))
    );
    // Never before its deadline: the epoch's ticks before it only ask the store's callback.
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "{:?}",
        start.elapsed()
    );
    // generous bound: the point is that it stops, not how precisely
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    host_still_works(&rt);
}

#[test]
fn unbounded_memory_growth_hits_the_cap() {
    let rt = runtime();
    let body = "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) (unreachable)";
    let p = load(&rt, &policy_wat(body, "", 1)).unwrap();
    assert_eq!(run(&p), Err(PolicyError::MemoryLimit(8 << 20)));
    host_still_works(&rt);
}

#[test]
fn deep_recursion_overflows_cleanly() {
    let rt = runtime();
    let extra =
        "(func $down (param i64) (result i64) (call $down (i64.add (local.get 0) (i64.const 1))))";
    let p = load(&rt, &policy_wat("(call $down (i64.const 0))", extra, 1)).unwrap();
    assert_eq!(run(&p), Err(PolicyError::StackOverflow));
    host_still_works(&rt);
}

#[test]
fn trap_is_reported() {
    let rt = runtime();
    let p = load(&rt, &policy_wat("(unreachable)", "", 1)).unwrap();
    match run(&p) {
        Err(PolicyError::Trap(msg)) => assert!(msg.contains("unreachable"), "{msg}"),
        other => panic!("{other:?}"),
    }
    host_still_works(&rt);
}

#[test]
fn huge_output_is_refused() {
    let rt = runtime();
    let p = load(&rt, &policy_wat("(i64.const 0x7fffffff)", "", 1)).unwrap();
    assert_eq!(
        run(&p),
        Err(PolicyError::OutputTooLarge(0x7fff_ffff, 1 << 20))
    );
    // and output pointing outside memory
    let p = load(
        &rt,
        &policy_wat(
            "(i64.or (i64.shl (i64.const 0x7ff00000) (i64.const 32)) (i64.const 16))",
            "",
            1,
        ),
    )
    .unwrap();
    assert!(matches!(run(&p), Err(PolicyError::BadOutput(_))));
}

#[test]
fn garbage_output_is_a_policy_error() {
    let rt = runtime();
    // returns the first 10 bytes of metadata: not a verdict
    let p = load(&rt, &policy_wat("(i64.const 10)", "", 1)).unwrap();
    assert!(matches!(run(&p), Err(PolicyError::BadOutput(_))));
}

#[test]
fn imports_are_refused_at_load() {
    let rt = runtime();
    let err = load(&rt, &policy_wat(&allow_body(), r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#, 1))
        .err()
        .unwrap();
    assert!(matches!(err, LoadError::Import { .. }), "{err}");
    assert!(
        err.to_string().contains("wasi_snapshot_preview1::fd_write"),
        "{err}"
    );
}

#[test]
fn wrong_abi_and_missing_exports_are_refused() {
    let rt = runtime();
    let err = load(&rt, &policy_wat(&allow_body(), "", 3)).err().unwrap();
    assert!(
        matches!(
            err,
            LoadError::AbiVersion {
                found: 3,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = load(&rt, "(module (memory (export \"memory\") 1))")
        .err()
        .unwrap();
    assert!(matches!(err, LoadError::Export { .. }), "{err}");
    let err = rt
        .load(PolicySource::Inline("junk".into()), b"\0asm junk")
        .err()
        .unwrap();
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
}

#[test]
fn no_state_leaks_between_evaluations() {
    // Denies (traps) on any call but the first one an instance sees: with a fresh instance
    // per evaluation every call is the first.
    let rt = runtime();
    let extra = "(global $calls (mut i32) (i32.const 0))";
    let body = format!(
        "(global.set $calls (i32.add (global.get $calls) (i32.const 1))) (if (i32.gt_u (global.get $calls) (i32.const 1)) (then unreachable)) {}",
        allow_body()
    );
    let p = load(&rt, &policy_wat(&body, extra, 1)).unwrap();
    for _ in 0..50 {
        assert_eq!(run(&p), Ok(()));
    }
    // The same with the count in linear memory, beyond what the module's data sets: fresh
    // instances come in stores kept between evaluations (`evaluations_per_store`), and none
    // sees another's memory.
    let body = format!(
        "(i32.store (i32.const 60000) (i32.add (i32.load (i32.const 60000)) (i32.const 1))) (if (i32.gt_u (i32.load (i32.const 60000)) (i32.const 1)) (then unreachable)) {}",
        allow_body()
    );
    let p = load(&rt, &policy_wat(&body, "", 1)).unwrap();
    assert!(Limits::default().evaluations_per_store > 1);
    for _ in 0..50 {
        assert_eq!(run(&p), Ok(()));
    }
}

#[test]
fn on_error_decides_fail_closed_or_open() {
    let rt = runtime();
    let hostile = Arc::new(load(&rt, &policy_wat("(unreachable)", "", 1)).unwrap());
    let raw = RawValue::from_string(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.into(),
    )
    .unwrap();
    let subject = Subject::from_manifest(&raw, Operation::Create).unwrap();

    let closed = PolicySet::new(vec![hostile.clone()], &SettingsFile::default()).unwrap();
    let eval = closed.evaluate(&subject);
    let Evaluation::Judged(outcomes) = &eval else {
        panic!()
    };
    assert!(matches!(
        outcomes[0].result,
        OutcomeResult::Error(PolicyError::Trap(_))
    ));
    let d = Decision::from_evaluation(&eval);
    assert!(!d.allowed);
    assert!(
        d.denial_message()
            .contains("[hostile] policy error: policy trapped"),
        "{}",
        d.denial_message()
    );

    let open = PolicySet::new(
        vec![hostile],
        &SettingsFile::parse("policies: {hostile: {onError: ignore}}").unwrap(),
    )
    .unwrap();
    let d = Decision::from_evaluation(&open.evaluate(&subject));
    assert!(d.allowed);
    assert_eq!(d.warnings.len(), 1);
}

/// A version-2 module gets the binary input (magic `ck8s\x02`), a version-1 module the JSON
/// request: each guest traps unless its input starts with the byte it expects.
#[test]
fn each_abi_version_gets_its_own_input() {
    let rt = runtime();
    let raw = RawValue::from_string(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"A":"b"}}"#.into(),
    )
    .unwrap();
    let subject = Subject::from_manifest(&raw, Operation::Create).unwrap();
    for (abi, first) in [(ck8s_policy_api::ABI_VERSION, b'c'), (1, b'{')] {
        let body = format!(
            "(if (result i64) (i32.eq (i32.load8_u (local.get 0)) (i32.const {first})) (then {}) (else (unreachable)))",
            allow_body()
        );
        let p = load(&rt, &policy_wat(&body, "", abi)).unwrap();
        assert_eq!(p.abi_version(), abi);
        let set = PolicySet::new(vec![Arc::new(p)], &SettingsFile::default()).unwrap();
        let d = Decision::from_evaluation(&set.evaluate(&subject));
        assert!(d.allowed, "ABI v{abi}: {d:?}");
    }
}

/// ABI v2: the settings follow the input in the one buffer the host allocates, and an empty
/// output means "allowed"; ABI v1 keeps requiring a JSON verdict.
#[test]
fn v2_settings_follow_the_input_and_an_empty_output_allows() {
    let rt = runtime();
    let raw = RawValue::from_string(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.into(),
    )
    .unwrap();
    let subject = Subject::from_manifest(&raw, Operation::Create).unwrap();
    let input = subject.input().unwrap();
    // Allows (empty output) only if settings_ptr == input_ptr + input_len and the settings
    // bytes arrived intact (first byte `{`), else traps.
    let body = "(if (result i64) (i32.and (i32.eq (local.get 2) (i32.add (local.get 0) (local.get 1))) \
                (i32.eq (i32.load8_u (local.get 2)) (i32.const 123))) \
                (then (i64.const 0)) (else (unreachable)))";
    let v2 = load(&rt, &policy_wat(body, "", ck8s_policy_api::ABI_VERSION)).unwrap();
    let verdict = v2.evaluate_input(&input, br#"{"names":[]}"#).unwrap();
    assert!(verdict.allowed(), "{verdict:?}");

    let v1 = load(&rt, &policy_wat("(i64.const 0)", "", 1)).unwrap();
    assert!(matches!(run(&v1), Err(PolicyError::BadOutput(_))));
}

/// The object's raw JSON travels only to a policy whose metadata sets `rawObject`: each
/// guest allows only if its input has exactly the length the host should send it.
#[test]
fn the_raw_object_goes_only_to_policies_that_ask_for_it() {
    let rt = runtime();
    let raw = RawValue::from_string(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"A":"b"}}"#.into(),
    )
    .unwrap();
    let subject = Subject::from_manifest(&raw, Operation::Create).unwrap();
    let input = subject.input().unwrap();
    assert_eq!(input.len(true), input.len(false) + raw.get().len());
    for wants_raw in [false, true] {
        let body = format!(
            "(if (result i64) (i32.eq (local.get 1) (i32.const {})) (then {}) (else (unreachable)))",
            input.len(wants_raw),
            allow_body()
        );
        let wat = policy_wat(&body, "", ck8s_policy_api::ABI_VERSION);
        let wat = if wants_raw {
            let meta = META.replace('"', "\\\"");
            let with_raw = format!("{},\"rawObject\":true}}", META.strip_suffix('}').unwrap());
            wat.replace(&meta, &with_raw.replace('"', "\\\"")).replace(
                &format!("(i64.const {})", META.len()),
                &format!("(i64.const {})", with_raw.len()),
            )
        } else {
            wat
        };
        let p = load(&rt, &wat).unwrap();
        assert_eq!(p.metadata.raw_object, wants_raw);
        let set = PolicySet::new(vec![Arc::new(p)], &SettingsFile::default()).unwrap();
        let d = Decision::from_evaluation(&set.evaluate(&subject));
        assert!(d.allowed, "rawObject {wants_raw}: {d:?}");
    }
}

/// An object that does not fit its kind's shape is parsed once by the host, and every policy
/// reports the parse error (nothing is called, nothing panics).
#[test]
fn an_object_of_the_wrong_shape_is_an_error_from_every_policy() {
    let rt = runtime();
    let sources = PolicySources::new().builtin(ck8s_builtin_policies::BUNDLE);
    let set = PolicySet::build(&rt, &sources).unwrap();
    let raw = RawValue::from_string(
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"template":{"spec":{"containers":"nope"}}}}"#.into(),
    )
    .unwrap();
    let subject = Subject::from_manifest(&raw, Operation::Create).unwrap();
    let Evaluation::Judged(outcomes) = set.evaluate(&subject) else {
        panic!("not judged")
    };
    assert_eq!(outcomes.len(), 3);
    for o in outcomes {
        match o.result {
            OutcomeResult::Error(PolicyError::Guest(m)) => {
                assert!(m.starts_with("apps/v1/Deployment does not parse"), "{m}")
            }
            other => panic!("{}: {other:?}", o.policy),
        }
    }
}

/// A bundle module: `ck8s_metadata` is an array of policies called `names`, and
/// `ck8s_validate_policy(i, input, input_len, settings, settings_len)` runs `body` (which has a
/// mutable global `$calls`, zero in every fresh instance).
fn bundle_wat(names: &[&str], abi: i32, body: &str) -> String {
    let meta = format!(
        "[{}]",
        names
            .iter()
            .map(|n| META.replace("\"hostile\"", &format!("\"{n}\"")))
            .collect::<Vec<_>>()
            .join(",")
    );
    format!(
        r#"(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (global $calls (mut i32) (i32.const 0))
  (data (i32.const 0) "{esc}")
  (func (export "ck8s_abi_version") (result i32) (i32.const {abi}))
  (func (export "ck8s_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (local.get $p))
  (func (export "ck8s_metadata") (result i64) (i64.const {len}))
  (func (export "ck8s_validate_policy")
    (param $i i32) (param $in i32) (param $in_len i32) (param $s i32) (param $s_len i32)
    (result i64)
    {body}))"#,
        esc = meta.replace('"', "\\\""),
        len = meta.len(),
    )
}

fn configmap() -> Box<RawValue> {
    RawValue::from_string(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"A":"b"}}"#.into(),
    )
    .unwrap()
}

/// A set of the policies of a [`bundle_wat`] module with ABI v2.
fn bundle_set(rt: &Runtime, names: &[&str], body: &str) -> PolicySet {
    let wasm = wat::parse_str(bundle_wat(names, 2, body)).unwrap();
    let policies = rt
        .load_module(PolicySource::Inline("bundle.wat".into()), &wasm)
        .unwrap();
    PolicySet::new(
        policies.into_iter().map(Arc::new).collect(),
        &SettingsFile::default(),
    )
    .unwrap()
}

/// What `set` makes of a small ConfigMap, policy by policy.
fn judge_configmap(set: &PolicySet) -> Vec<OutcomeResult> {
    let raw = configmap();
    let subject = Subject::from_manifest(&raw, Operation::Create).unwrap();
    results(set.evaluate(&subject))
}

fn results(evaluation: Evaluation) -> Vec<OutcomeResult> {
    match evaluation {
        Evaluation::Judged(outcomes) => outcomes.into_iter().map(|o| o.result).collect(),
        other => panic!("not judged: {other:?}"),
    }
}

/// The policies of a bundle run in one instance per request, in order, each with its own
/// settings after the one input; the next request gets a fresh instance again.
#[test]
fn a_bundle_runs_its_policies_in_one_fresh_instance_per_request() {
    let rt = runtime();
    // Allows only as the i-th call of its instance, with its settings ("{}", 2 bytes each)
    // right where they should be.
    let body = "(if (i32.and (i32.eq (global.get $calls) (local.get $i)) \
                  (i32.eq (local.get $s) (i32.add (i32.add (local.get $in) (local.get $in_len)) \
                                                   (i32.mul (local.get $i) (i32.const 2))))) \
                  (then) (else (unreachable))) \
                (global.set $calls (i32.add (global.get $calls) (i32.const 1))) \
                (i64.const 0)";
    let set = bundle_set(&rt, &["a", "b", "c"], body);
    let policies: Vec<_> = set.policies().map(|(p, _)| p).collect();
    let names: Vec<_> = policies.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(
        policies
            .iter()
            .all(|p| p.is_bundled() && p.same_bundle(policies[0]))
    );
    for _ in 0..3 {
        assert_eq!(
            judge_configmap(&set),
            [
                OutcomeResult::Allowed,
                OutcomeResult::Allowed,
                OutcomeResult::Allowed
            ]
        );
    }
}

/// A bundled policy that traps is that policy's error; the ones after it are judged in a new
/// instance, and the host goes on.
#[test]
fn a_trap_in_a_bundle_ends_its_instance_not_the_others_verdicts() {
    let rt = runtime();
    let body = "(if (i32.eq (local.get $i) (i32.const 1)) (then (unreachable))) \
                (if (i32.ne (global.get $calls) (i32.const 0)) (then (unreachable))) \
                (global.set $calls (i32.add (global.get $calls) (i32.const 1))) \
                (i64.const 0)";
    let got = judge_configmap(&bundle_set(&rt, &["a", "b", "c"], body));
    assert_eq!(got[0], OutcomeResult::Allowed);
    assert!(
        matches!(&got[1], OutcomeResult::Error(PolicyError::Trap(_))),
        "{:?}",
        got[1]
    );
    assert_eq!(got[2], OutcomeResult::Allowed);
    host_still_works(&rt);
}

/// Deadline and memory cap hold per call inside a bundle: a policy that loops or grows memory
/// without bound is that policy's error, and the next one is judged in a new instance.
#[test]
fn a_bundled_policy_that_loops_or_grows_is_stopped_alone() {
    let rt = runtime();
    let body = "(if (i32.eq (local.get $i) (i32.const 1)) (then (loop $spin (br $spin)))) \
                (if (i32.eq (local.get $i) (i32.const 2)) \
                  (then (loop $grow (drop (memory.grow (i32.const 16))) (br $grow)))) \
                (if (i32.ne (global.get $calls) (i32.const 0)) (then (unreachable))) \
                (global.set $calls (i32.add (global.get $calls) (i32.const 1))) \
                (i64.const 0)";
    let got = judge_configmap(&bundle_set(&rt, &["a", "b", "c", "d"], body));
    assert_eq!(got[0], OutcomeResult::Allowed);
    assert!(
        matches!(&got[1], OutcomeResult::Error(PolicyError::Timeout(_))),
        "{:?}",
        got[1]
    );
    assert!(
        matches!(&got[2], OutcomeResult::Error(PolicyError::MemoryLimit(_))),
        "{:?}",
        got[2]
    );
    assert_eq!(got[3], OutcomeResult::Allowed);
    host_still_works(&rt);
}

/// What a bundle must get right to load, and `load` (one policy) refusing a bundle.
#[test]
fn bundles_that_do_not_describe_themselves_are_refused() {
    let rt = runtime();
    let load_module = |names: &[&str], abi: i32| {
        let wasm = wat::parse_str(bundle_wat(names, abi, "(i64.const 0)")).unwrap();
        rt.load_module(PolicySource::Inline("bundle.wat".into()), &wasm)
    };
    let err = load_module(&["a", "a"], 2).err().unwrap().to_string();
    assert!(err.contains("two policies called a"), "{err}");
    let err = load_module(&[], 2).err().unwrap().to_string();
    assert!(err.contains("no policies"), "{err}");
    // The JSON request of ABI v1 is not for bundles.
    assert!(matches!(
        load_module(&["a"], 1),
        Err(LoadError::AbiVersion { found: 1, .. })
    ));
    let wasm = wat::parse_str(bundle_wat(&["a", "b"], 2, "(i64.const 0)")).unwrap();
    let err = rt
        .load(PolicySource::Inline("bundle.wat".into()), &wasm)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("a bundle of 2 policies"), "{err}");
}

/// The built-ins load as one bundle of three, each `builtin:<name>`.
#[test]
fn the_builtins_are_one_bundle() {
    let builtin = Source::Builtin(ck8s_builtin_policies::BUNDLE)
        .load(&runtime())
        .unwrap();
    let sources: Vec<_> = builtin.iter().map(|p| p.source.to_string()).collect();
    assert_eq!(
        sources,
        [
            "builtin:build-ref",
            "builtin:legacy-labels",
            "builtin:kaniko-cache"
        ]
    );
    assert!(builtin.iter().all(|p| p.same_bundle(&builtin[0])));
}

/// A full instance pool is told apart by wasmtime's error type: an evaluation that finds no
/// free slot fails fast as `Capacity` (never as a trap), and the pool serves again after.
#[test]
fn a_full_pool_is_a_capacity_error() {
    let rt = Runtime::new(
        Limits {
            deadline: Duration::from_secs(2),
            memory_bytes: 8 << 20,
            max_instances: 1,
            // No store kept between evaluations: the pool is exactly the one slot.
            evaluations_per_store: 1,
            ..Limits::default()
        },
        None,
    )
    .unwrap();
    let spin = Arc::new(load(&rt, &policy_wat("(loop $l (br $l)) (unreachable)", "", 1)).unwrap());
    let allow = load(&rt, &policy_wat(&allow_body(), "", 1)).unwrap();
    let busy = {
        let spin = spin.clone();
        std::thread::spawn(move || run(&spin))
    };
    // the looping evaluation holds the only slot for its whole deadline
    std::thread::sleep(Duration::from_millis(300));
    match run(&allow) {
        Err(PolicyError::Capacity(msg)) => assert!(msg.contains("concurrent"), "{msg}"),
        other => panic!("expected a capacity error, got {other:?}"),
    }
    // it did not wait for the slot: the looping evaluation still holds it
    assert!(!busy.is_finished());
    assert!(matches!(busy.join().unwrap(), Err(PolicyError::Timeout(_))));
    assert_eq!(run(&allow), Ok(()));
}

/// A single policy that reads its settings once: its bump pointer lives in memory (at 1024),
/// as the ABI asks of such a guest, and `configure_body` is the body of `ck8s_configure`
/// (params `$ptr`, `$len`). Its `ck8s_validate`, given no settings, answers the output whose
/// `(ptr, len)` configure left at 1032 and 1036 (nothing configured: `(0, 0)`, allowed); given
/// settings, it allows.
fn configured_wat(configure_body: &str, extra: &str) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        r#"(module
  {extra}
  (memory (export "memory") 1)
  (data (i32.const 0) "{meta}")
  (data (i32.const 1024) "\00\10\00\00")
  (func (export "ck8s_abi_version") (result i32) (i32.const 2))
  (func (export "ck8s_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (i32.load (i32.const 1024)))
    (i32.store (i32.const 1024) (i32.add (local.get $p) (local.get $len)))
    (local.get $p))
  (func (export "ck8s_metadata") (result i64) (i64.const {meta_len}))
  (func (export "ck8s_configure") (param $ptr i32) (param $len i32) (result i64)
    {configure_body})
  (func (export "ck8s_validate") (param i32 i32 i32 i32) (result i64)
    (if (result i64) (i32.eqz (local.get 3))
      (then (i64.or
        (i64.shl (i64.extend_i32_u (i32.load (i32.const 1032))) (i64.const 32))
        (i64.extend_i32_u (i32.load (i32.const 1036)))))
      (else (i64.const 0))))
)"#,
        meta = esc(META),
        meta_len = META.len(),
    )
}

/// What `ck8s_configure` leaves in memory, grown pages included, is where every evaluation's
/// fresh instance starts: here configure grows the memory by a page, copies its settings (a
/// verdict) there and notes where, and each evaluation given no settings answers that verdict.
#[test]
fn every_evaluation_starts_from_the_configured_memory() {
    let rt = runtime();
    let configure = "(local $at i32)
        (local.set $at (i32.mul (memory.grow (i32.const 1)) (i32.const 65536)))
        (memory.copy (local.get $at) (local.get $ptr) (local.get $len))
        (i32.store (i32.const 1032) (local.get $at))
        (i32.store (i32.const 1036) (local.get $len))
        (i64.const 0)";
    let policy = load(&rt, &configured_wat(configure, "")).unwrap();
    assert!(policy.configurable());
    let verdict = br#"{"violations":[],"error":"configured once"}"#;
    let configured = LoadedPolicy::configure(&[(&policy, &verdict[..])])
        .unwrap()
        .unwrap();
    let shown = format!("{configured:?}");
    assert!(shown.contains("pages: 2"), "{shown}");

    let raw = configmap();
    let subject = Subject::from_manifest(&raw, Operation::Create).unwrap();
    let input = subject.input().unwrap();
    let judge = |settings: &[u8], configured| {
        let mut results =
            LoadedPolicy::evaluate_together(&[(&policy, settings)], &input, configured);
        assert_eq!(results.len(), 1);
        results.remove(0).0
    };
    for _ in 0..3 {
        assert_eq!(
            judge(b"", Some(&configured)),
            Err(PolicyError::Guest("configured once".into()))
        );
    }
    // A fresh instance without it remembers nothing; settings passed with the call win.
    assert_eq!(judge(b"", None), Ok(Default::default()));
    assert_eq!(judge(b"{}", Some(&configured)), Ok(Default::default()));
}

/// A policy that refuses its settings, or traps taking them, is refused when the set is put
/// together, with the policy's name and its reason.
#[test]
fn a_policy_that_refuses_its_settings_is_refused_at_load() {
    let rt = runtime();
    let refusal = r#"{"violations":[],"error":"settings do not parse: no such mode"}"#;
    let refuses = configured_wat(
        &format!(
            "(i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.const {}))",
            refusal.len()
        ),
        &format!(
            r#"(data (i32.const 2048) "{}")"#,
            refusal.replace('"', "\\\"")
        ),
    );
    let traps = configured_wat("(unreachable)", "");
    for (wat, reason) in [
        (refuses, "settings do not parse: no such mode".to_string()),
        (traps, "trap".to_string()),
    ] {
        let policy = Arc::new(load(&rt, &wat).unwrap());
        let err = PolicySet::new(vec![policy], &SettingsFile::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("policy hostile does not take its settings: ") && err.contains(&reason),
            "{err}"
        );
    }
}
