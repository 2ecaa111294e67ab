//! build-ref, table-driven: every value class and every place a literal can be written.

use ck8s_policy_build_ref::BuildRef;
use ck8s_policy_sdk::testing::{POD_BEARING, pod_spec_with_env, review, with_pod_spec};
use ck8s_policy_sdk::{ValueSource, Verdict};
use serde_json::{Value, json};

fn deployment_with_ref(value: &str) -> Value {
    with_pod_spec(
        "apps/v1",
        "Deployment",
        pod_spec_with_env(json!([{ "name": "CODEXK8S_BUILD_REF", "value": value }])),
    )
}

fn check(object: &Value) -> Verdict {
    review::<BuildRef>("CREATE", object, &json!({}))
}

#[test]
fn values_as_the_runbook_names_them() {
    for (value, allowed) in [
        ("main", true),
        ("feature/ai-slot", true),
        ("refs/heads/main", true),
        ("refs/tags/v1.4.0", true),
        ("4f2a9c1", true),
        ("4f2a9c1e0b7d3a5f6e8c9b0a1d2e3f4a5b6c7d8e", true),
        ("-b feature/x", false),
        ("-b", false),
        ("--detach", false),
        ("--orphan=main", false),
        ("feature/x yz", false),
        ("main..dev", false),
        ("", false),
    ] {
        let verdict = check(&deployment_with_ref(value));
        assert_eq!(verdict.allowed(), allowed, "{value:?}: {verdict:?}");
    }
}

#[test]
fn denial_names_field_value_and_fix() {
    let verdict = check(&deployment_with_ref("-b feature/x"));
    let v = &verdict.violations[0];
    assert_eq!(
        v.path,
        "spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]"
    );
    assert_eq!(v.value.as_deref(), Some("-b feature/x"));
    assert!(v.message.contains("command-line flag"), "{}", v.message);
    assert!(
        v.fix.contains("main, feature/<branch> or a commit SHA"),
        "{}",
        v.fix
    );
}

#[test]
fn every_pod_bearing_kind_and_container_list() {
    for (api_version, kind, pod_path) in POD_BEARING {
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            let pod_spec = json!({ list: [{ "name": "c", "image": "x", "env": [
                { "name": "OTHER", "value": "-b is fine here" },
                { "name": "CODEXK8S_BUILD_REF", "value": "-b feature/x" },
            ]}]});
            let verdict = check(&with_pod_spec(api_version, kind, pod_spec));
            let paths: Vec<_> = verdict.violations.iter().map(|v| v.path.as_str()).collect();
            assert_eq!(
                paths,
                [format!("{pod_path}.{list}[0].env[CODEXK8S_BUILD_REF]")],
                "{kind} {list}"
            );
        }
    }
}

#[test]
fn value_from_is_a_reference_not_a_literal() {
    let env = json!([{ "name": "CODEXK8S_BUILD_REF", "valueFrom": { "configMapKeyRef": { "name": "codex-k8s-runtime", "key": "CODEXK8S_BUILD_REF" } } }]);
    assert!(check(&with_pod_spec("batch/v1", "Job", pod_spec_with_env(env))).allowed());
}

#[test]
fn configmap_data() {
    let cm = |v: &str| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "codex-k8s-runtime" }, "data": { "CODEXK8S_BUILD_REF": v, "OTHER": "--x" } });
    assert!(check(&cm("main")).allowed());
    let verdict = check(&cm("--detach"));
    assert_eq!(verdict.violations.len(), 1);
    assert_eq!(verdict.violations[0].path, "data.CODEXK8S_BUILD_REF");
    assert_eq!(verdict.violations[0].value.as_deref(), Some("--detach"));
}

#[test]
fn secret_values_are_judged_but_never_shown() {
    // "-b feature/x" in base64
    let secret = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s" },
        "data": { "CODEXK8S_BUILD_REF": "LWIgZmVhdHVyZS94" },
        "stringData": { "CODEXK8S_BUILD_REF": "--orphan" } });
    let verdict = check(&secret);
    let paths: Vec<_> = verdict.violations.iter().map(|v| v.path.as_str()).collect();
    assert_eq!(
        paths,
        ["data.CODEXK8S_BUILD_REF", "stringData.CODEXK8S_BUILD_REF"]
    );
    for v in &verdict.violations {
        assert_eq!(v.value, None);
        assert_eq!(v.source, ValueSource::Secret);
    }
    let ok = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s" }, "data": { "CODEXK8S_BUILD_REF": "bWFpbg==" } });
    assert!(check(&ok).allowed());
}

#[test]
fn a_custom_resource_with_the_same_shape_is_not_judged() {
    let mut obj = deployment_with_ref("-b x");
    obj["apiVersion"] = json!("example.com/v1");
    assert!(check(&obj).allowed());
}

#[test]
fn settings_change_the_names_checked() {
    let obj = with_pod_spec(
        "v1",
        "Pod",
        pod_spec_with_env(json!([{ "name": "MY_REF", "value": "-b x" }])),
    );
    assert!(check(&obj).allowed());
    assert!(!review::<BuildRef>("CREATE", &obj, &json!({ "names": ["MY_REF"] })).allowed());
}

#[test]
fn malformed_objects_are_errors_not_panics() {
    let obj = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}, "spec": { "template": { "spec": { "containers": "nope" } } } });
    let verdict = check(&obj);
    assert!(
        verdict
            .error
            .as_deref()
            .unwrap_or("")
            .contains("does not parse"),
        "{verdict:?}"
    );
}
