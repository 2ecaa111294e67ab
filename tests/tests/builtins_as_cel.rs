//! The three built-in rules written as ValidatingAdmissionPolicies
//! (`policies/cel/testdata/policies/08..10`) decide like the WASM built-ins on the built-ins'
//! own test suites (`policies/*/tests/suite.ck8s-test.yaml`): every case, judged by both
//! through the same runtime, finds a violation in both or in neither. What CEL cannot
//! express is listed here, case by case, with the reason (and in policies/cel/README.md).
//!
//! `cargo test -p ck8s-tests --test builtins_as_cel`

use ck8s_policy_runtime::admission::parse_review;
use ck8s_policy_runtime::api::Operation;
use ck8s_policy_runtime::{
    Decision, FindingKind, Limits, PolicySet, PolicySources, Runtime, Subject,
};
use ck8s_tests::repo;
use serde_json::Value;

/// Cases the CEL versions cannot decide as the built-ins do, and why.
const NOT_EXPRESSIBLE: &[(&str, &str)] = &[
    (
        "a Secret's bad value is rejected but not shown",
        "Secret data is base64; Kubernetes' CEL environment has no base64 decoding",
    ),
    (
        "a Secret's truthy value is rejected but not shown",
        "Secret data is base64; Kubernetes' CEL environment has no base64 decoding",
    ),
    (
        "settings name other variables",
        "a VAP has no settings: the names are written into its expressions (or given as params)",
    ),
];

/// Whether `decision` holds a finding of `policy` (deny, warn or audit). A VAP's must be a
/// failed validation: an evaluation error (a namespace not known, ...) is not agreement.
fn found(decision: &Decision, policy: &str) -> bool {
    decision
        .denials
        .iter()
        .chain(&decision.warnings)
        .chain(&decision.audits)
        .filter(|f| f.policy == policy)
        .any(|f| match &f.kind {
            FindingKind::Vap { path, .. } => {
                assert!(path.starts_with("spec.validations["), "{f}");
                true
            }
            _ => true,
        })
}

/// What the API server knows of a namespace nobody labelled: its name label.
struct Namespaces;

impl ck8s_policy_runtime::cel::ParamSource for Namespaces {
    fn get(
        &self,
        _: &ck8s_policy_runtime::cel::ParamKind,
        _: Option<&str>,
        _: &str,
    ) -> Result<Option<Value>, String> {
        Ok(None)
    }

    fn list(
        &self,
        _: &ck8s_policy_runtime::cel::ParamKind,
        _: Option<&str>,
        _: &ck8s_policy_runtime::cel::LabelSelector,
    ) -> Result<Vec<Value>, String> {
        Ok(Vec::new())
    }
}

impl ck8s_policy_runtime::ClusterReads for Namespaces {
    fn namespace(&self, name: &str) -> Result<Option<Value>, String> {
        Ok(Some(
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}),
        ))
    }
}

#[test]
fn the_builtins_written_in_cel_decide_like_the_wasm_builtins() {
    let runtime = Runtime::new(Limits::default(), None).unwrap();
    let wasm = PolicySet::build(
        &runtime,
        &PolicySources::new().builtin(ck8s_builtin_policies::BUNDLE),
    )
    .unwrap();
    let mut differences = Vec::new();
    let mut skipped = Vec::new();
    let mut judged = 0;
    for (builtin, cel) in [
        ("build-ref", "08-ck8s-build-ref.yaml"),
        ("legacy-labels", "09-ck8s-legacy-labels.yaml"),
        ("kaniko-cache", "10-ck8s-kaniko-cache.yaml"),
    ] {
        let cel_file = repo().join("policies/cel/testdata/policies").join(cel);
        let cel_set =
            PolicySet::build(&runtime, &PolicySources::new().vap_file(&cel_file)).unwrap();
        let cel_name = cel_set.vap_policies()[0].name.clone();
        let suite_path = repo().join(format!("policies/{builtin}/tests/suite.ck8s-test.yaml"));
        let suite: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&suite_path).unwrap()).unwrap();
        for case in suite["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            if let Some((_, why)) = NOT_EXPRESSIBLE.iter().find(|(n, _)| *n == name) {
                skipped.push(format!("{builtin}: {name} ({why})"));
                continue;
            }
            let operation: Operation = case
                .get("operation")
                .map(|o| serde_json::from_value(o.clone()).unwrap())
                .unwrap_or(Operation::Create);
            let decide = |set: &PolicySet| -> Decision {
                if let Some(review) = case.get("review") {
                    let body = serde_json::to_vec(review).unwrap();
                    let request = parse_review(&body).unwrap();
                    return Decision::from_evaluation(
                        &set.evaluate_in(&Subject::from_admission(&request), Some(&Namespaces)),
                    );
                }
                let object = match (case.get("resource"), case.get("file")) {
                    (Some(resource), None) => resource.clone(),
                    (None, Some(file)) => {
                        let path = suite_path.parent().unwrap().join(file.as_str().unwrap());
                        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
                    }
                    _ => panic!("{name}: no object"),
                };
                let raw = serde_json::value::to_raw_value(&object).unwrap();
                let subject = Subject::from_manifest(&raw, operation).unwrap();
                Decision::from_evaluation(&set.evaluate_in(&subject, Some(&Namespaces)))
            };
            let by_wasm = found(&decide(&wasm), builtin);
            let by_cel = found(&decide(&cel_set), &cel_name);
            let expected = case["expect"] != "allow";
            assert_eq!(
                by_wasm, expected,
                "{builtin}: {name}: the suite's own expectation"
            );
            judged += 1;
            if by_wasm != by_cel {
                differences.push(format!(
                    "{builtin}: {name}: WASM found a violation: {by_wasm}, CEL ({cel}): {by_cel}"
                ));
            }
        }
    }
    eprintln!(
        "builtins_as_cel: {judged} cases judged alike by both; not expressible in CEL:\n  {}",
        skipped.join("\n  ")
    );
    assert_eq!(
        skipped.len(),
        NOT_EXPRESSIBLE.len(),
        "a listed exception is no longer in the suites"
    );
    assert!(judged >= 25, "{judged} cases");
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
