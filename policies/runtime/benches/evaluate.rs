//! The three built-in policies on one 4 KB Deployment: WebAssembly (the built-in bundle, one
//! fresh instance per request, as the webhook runs them; and for comparison the three
//! policies as modules of their own, one fresh instance each) side by side with the native
//! floor (the same policy code compiled natively, one parse, three checks).
//!
//! Both sides start from the same point: the object's JSON, already cut out of its request
//! (a `RawValue`, as the webhook has it after reading the `AdmissionReview`), and its kind.
//! Each parses the object exactly once inside the timed region: the native side into the
//! view, the WebAssembly side in `PolicySet::evaluate` (then encodes it for the guests).
//!
//! Beside them, the same three rules as ValidatingAdmissionPolicy files
//! (`policies/cel/testdata/policies/08..10`), evaluated by the same runtime on the same subject.
//!
//! `cargo bench -p ck8s-policy-runtime --bench evaluate`

use ck8s_policy_api::Operation;
use ck8s_policy_runtime::{
    Decision, Limits, PolicySet, PolicySource, PolicySources, Runtime, SettingsFile, Source,
    Subject,
};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Instant;

mod native_floor;
use native_floor::NativeFloor;

const DEPLOYMENT: &str = include_str!("deployment-4k.json");

/// One Namespace, no params: what the CEL rules read from the cluster.
struct OneNamespace(serde_json::Value);

impl ck8s_policy_runtime::cel::ParamSource for OneNamespace {
    fn get(
        &self,
        _: &ck8s_policy_runtime::cel::ParamKind,
        _: Option<&str>,
        _: &str,
    ) -> Result<Option<serde_json::Value>, String> {
        Ok(None)
    }
    fn list(
        &self,
        _: &ck8s_policy_runtime::cel::ParamKind,
        _: Option<&str>,
        _: &ck8s_policy_runtime::cel::LabelSelector,
    ) -> Result<Vec<serde_json::Value>, String> {
        Ok(vec![])
    }
}

impl ck8s_policy_runtime::ClusterReads for OneNamespace {
    fn namespace(&self, _: &str) -> Result<Option<serde_json::Value>, String> {
        Ok(Some(self.0.clone()))
    }
}

fn bench(c: &mut Criterion) {
    let raw = RawValue::from_string(DEPLOYMENT.to_string()).unwrap();
    let subject = Subject::from_manifest(&raw, Operation::Create).unwrap();

    let floor = NativeFloor::default();
    c.bench_function("native: parse + 3 checks, 4 KB Deployment", |b| {
        b.iter(|| assert_eq!(floor.evaluate(black_box(&subject)), [0, 0, 0]))
    });

    let runtime = Runtime::new(Limits::default(), None).unwrap();
    let sources = PolicySources::new().builtin(ck8s_builtin_policies::BUNDLE);
    let set = PolicySet::build(&runtime, &sources).unwrap();
    c.bench_function("wasm: 3 policies, fresh instances, 4 KB Deployment", |b| {
        b.iter(|| {
            let d = Decision::from_evaluation(&set.evaluate(black_box(&subject)));
            assert!(d.allowed);
        })
    });

    // The same three rules written as ValidatingAdmissionPolicies (no compile step), served
    // by the same runtime from the same subject: the issue-19 comparison in one run.
    let cel = PolicySet::build(
        &runtime,
        &PolicySources::new()
            .vap_text(
                "08-ck8s-build-ref.yaml",
                include_str!("../../cel/testdata/policies/08-ck8s-build-ref.yaml"),
            )
            .vap_text(
                "09-ck8s-legacy-labels.yaml",
                include_str!("../../cel/testdata/policies/09-ck8s-legacy-labels.yaml"),
            )
            .vap_text(
                "10-ck8s-kaniko-cache.yaml",
                include_str!("../../cel/testdata/policies/10-ck8s-kaniko-cache.yaml"),
            ),
    )
    .unwrap();
    // The namespace the webhook's cache would give (the legacy-labels rule has a
    // namespaceSelector).
    let cluster = OneNamespace(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "codex-k8s-prod", "labels": {"kubernetes.io/metadata.name": "codex-k8s-prod"}}}));
    match cel.evaluate_in(&subject, Some(&cluster)) {
        ck8s_policy_runtime::Evaluation::Judged(outcomes) => {
            assert_eq!(outcomes.len(), 3, "the three rules judge the Deployment")
        }
        other => panic!("not judged: {other:?}"),
    }
    c.bench_function("cel: the same 3 rules as VAP files, 4 KB Deployment", |b| {
        b.iter(|| {
            let d =
                Decision::from_evaluation(&cel.evaluate_in(black_box(&subject), Some(&cluster)));
            assert!(d.allowed);
        })
    });

    // The same three policies as modules of their own: three instances and three decodes per
    // request (what the bundle saves).
    let separate: Vec<_> = ck8s_builtin_policies::BUILTIN
        .iter()
        .map(|(name, wasm)| {
            Arc::new(
                runtime
                    .load(PolicySource::Builtin(name.to_string()), wasm)
                    .unwrap(),
            )
        })
        .collect();
    let separate = PolicySet::new(separate, &SettingsFile::default()).unwrap();
    c.bench_function(
        "wasm: 3 policies, one instance each, 4 KB Deployment",
        |b| {
            b.iter(|| {
                let d = Decision::from_evaluation(&separate.evaluate(black_box(&subject)));
                assert!(d.allowed);
            })
        },
    );

    // Load from precompiled artifacts (a warm cache), the webhook's start-up path.
    let dir = tempfile::tempdir().unwrap();
    let builtin = Source::Builtin(ck8s_builtin_policies::BUNDLE);
    builtin
        .load(&Runtime::new(Limits::default(), Some(dir.path().into())).unwrap())
        .unwrap();
    c.bench_function("load 3 policies from precompiled artifacts", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let rt = Runtime::new(Limits::default(), Some(dir.path().into())).unwrap();
                let start = Instant::now();
                black_box(builtin.load(&rt).unwrap());
                total += start.elapsed();
            }
            total
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
