//! The three ck8s built-in rules written as CEL (`testdata/policies/08..10`), evaluated by the
//! host on the 4 KB Deployment of `policies/runtime/benches/deployment-4k.json`: from the
//! object's JSON text to the decision (parse, CEL values, match, variables, validations), as
//! the webhook would run them per request.
//!
//! `cargo bench -p ck8s-policy-cel --bench evaluate`
//!
//! The WebAssembly built-ins on the same object: `cargo bench -p ck8s-policy-runtime --bench
//! evaluate`.

use ck8s_policy_cel::{Json, Operation, PolicySet, Request};
use criterion::{Criterion, black_box, criterion_group, criterion_main};

const DEPLOYMENT: &str = include_str!("../../runtime/benches/deployment-4k.json");
const BUILTINS: [&str; 3] = [
    include_str!("../testdata/policies/08-ck8s-build-ref.yaml"),
    include_str!("../testdata/policies/09-ck8s-legacy-labels.yaml"),
    include_str!("../testdata/policies/10-ck8s-kaniko-cache.yaml"),
];

fn bench(c: &mut Criterion) {
    let mut set = PolicySet::default();
    for (i, text) in BUILTINS.iter().enumerate() {
        set.add(&format!("builtin-{i}"), text).unwrap();
    }
    let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "codex-k8s-prod", "labels": {"kubernetes.io/metadata.name": "codex-k8s-prod"}}});

    let judge = |text: &str| {
        let object = Json::parse(text).unwrap();
        let mut request = Request::for_object(Operation::Create, object);
        request.namespace_object = Some((&namespace).into());
        let eval = set.evaluate(&request, None);
        (eval.outcomes.len(), eval.decision())
    };
    let (matched, d) = judge(DEPLOYMENT);
    assert_eq!(matched, 3, "the three rules judge the Deployment");
    assert!(d.allowed, "{d:?}");

    // Below the floor: serde_json reading the text and keeping nothing (what any parse of it
    // costs at least).
    c.bench_function("serde_json, nothing kept, 4 KB Deployment", |b| {
        b.iter(|| {
            let _: serde::de::IgnoredAny = serde_json::from_str(black_box(DEPLOYMENT)).unwrap();
        })
    });

    // The floor: no policy matches, so only the JSON parse.
    let empty = PolicySet::default();
    c.bench_function(
        "cel: no policy matches (the JSON parse), 4 KB Deployment",
        |b| {
            b.iter(|| {
                let object = Json::parse(black_box(DEPLOYMENT)).unwrap();
                let mut request = Request::for_object(Operation::Create, object);
                request.namespace_object = Some((&namespace).into());
                assert!(empty.evaluate(&request, None).decision().allowed);
            })
        },
    );

    // The parse and the request's CEL values (made on the first match): one rule that reads
    // nothing.
    let trivial = PolicySet::load(
        "trivial",
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n\
         metadata: {name: trivial}\nspec:\n  matchConstraints:\n    resourceRules:\n\
         \x20   - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}\n\
         \x20 validations:\n  - expression: 'true'\n",
    )
    .unwrap();
    c.bench_function(
        "cel: one rule that reads nothing (the parse and the CEL values), 4 KB Deployment",
        |b| {
            b.iter(|| {
                let object = Json::parse(black_box(DEPLOYMENT)).unwrap();
                let mut request = Request::for_object(Operation::Create, object);
                request.namespace_object = Some((&namespace).into());
                let eval = trivial.evaluate(&request, None);
                assert_eq!(eval.outcomes.len(), 1);
                assert!(eval.decision().allowed);
            })
        },
    );

    c.bench_function("cel: 3 built-in rules, 4 KB Deployment", |b| {
        b.iter(|| {
            let (_, d) = judge(black_box(DEPLOYMENT));
            assert!(d.allowed);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
