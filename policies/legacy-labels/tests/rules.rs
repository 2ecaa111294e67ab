//! legacy-labels, table-driven: the six runbook keys, any other legacy key, look-alikes,
//! annotations, and every embedded template.

use ck8s_policy_legacy_labels::LegacyLabels;
use ck8s_policy_sdk::Verdict;
use ck8s_policy_sdk::testing::{POD_BEARING, review, with_pod_spec};
use serde_json::{Value, json};

fn check(object: &Value) -> Verdict {
    review::<LegacyLabels>("CREATE", object, &json!({}))
}

fn namespace(labels: Value, annotations: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "run-1", "labels": labels, "annotations": annotations } })
}

#[test]
fn runbook_keys_on_a_run_namespace() {
    for key in [
        "managed-by",
        "namespace-purpose",
        "runtime-mode",
        "project-id",
        "run-id",
        "correlation-id",
        "anything-else",
    ] {
        let verdict = check(&namespace(
            json!({ format!("codexk8s.io/{key}"): "x" }),
            json!({}),
        ));
        assert_eq!(verdict.violations.len(), 1, "{key}");
        let v = &verdict.violations[0];
        assert_eq!(v.path, format!("metadata.labels[codexk8s.io/{key}]"));
        assert_eq!(
            v.fix,
            format!("rename label codexk8s.io/{key} to codex-k8s.dev/{key}")
        );
    }
}

#[test]
fn current_and_look_alike_keys_pass() {
    for key in [
        "codex-k8s.dev/managed-by",
        "notcodexk8s.io/run-id",
        "sub.codexk8s.io/run-id",
        "example.com/codexk8s.io-run",
        "codexk8s.io",
    ] {
        assert!(
            check(&namespace(json!({ key: "x" }), json!({ key: "y" }))).allowed(),
            "{key}"
        );
    }
}

#[test]
fn annotations_count_too() {
    let verdict = check(&namespace(
        json!({}),
        json!({ "codexk8s.io/correlation-id": "abc" }),
    ));
    assert_eq!(
        verdict.violations[0].path,
        "metadata.annotations[codexk8s.io/correlation-id]"
    );
    assert!(verdict.violations[0].fix.starts_with("rename annotation"));
}

#[test]
fn any_kind_including_custom_resources() {
    let obj = json!({ "apiVersion": "example.com/v1", "kind": "Widget", "metadata": { "name": "w", "labels": { "codexk8s.io/run-id": "1" } }, "spec": { "template": 5 } });
    assert_eq!(check(&obj).violations.len(), 1);
}

#[test]
fn every_embedded_template() {
    for (api_version, kind, pod_path) in POD_BEARING {
        let mut obj = with_pod_spec(api_version, kind, json!({ "containers": [] }));
        let template_meta = pod_path.trim_end_matches(".spec").to_string() + ".metadata";
        if *kind == "Pod" {
            continue; // a Pod has no template
        }
        // put the legacy key on the template's metadata
        let pointer = "/".to_string() + &template_meta.replace('.', "/");
        *obj.pointer_mut(&pointer).unwrap() = json!({ "labels": { "codexk8s.io/run-id": "1" } });
        let verdict = check(&obj);
        let paths: Vec<_> = verdict.violations.iter().map(|v| v.path.clone()).collect();
        assert_eq!(
            paths,
            [format!("{template_meta}.labels[codexk8s.io/run-id]")],
            "{kind}"
        );
    }
}

#[test]
fn cronjob_job_template_metadata() {
    let mut obj = with_pod_spec("batch/v1", "CronJob", json!({ "containers": [] }));
    obj["spec"]["jobTemplate"]["metadata"] =
        json!({ "annotations": { "codexk8s.io/project-id": "p" } });
    let verdict = check(&obj);
    assert_eq!(
        verdict.violations[0].path,
        "spec.jobTemplate.metadata.annotations[codexk8s.io/project-id]"
    );
}
