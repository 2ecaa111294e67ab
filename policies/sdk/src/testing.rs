//! Run a policy natively, the way the host runs it in WebAssembly, for `cargo test`: the
//! object is parsed into the view, encoded into the ABI v2 input and decoded again by the
//! same entry point the WebAssembly export calls.
//!
//! ```ignore
//! let verdict = ck8s_policy_sdk::testing::review::<MyPolicy>("CREATE", &deployment, &json!({}));
//! assert!(verdict.allowed());
//! ```

use crate::Policy;
use ck8s_policy_api::codec::{Header, encode_input};
use ck8s_policy_api::{GroupVersionKind, Object, Operation, Verdict};
use serde_json::{Map, Value};

/// Evaluates `policy` on a manifest (JSON, or YAML converted by the caller to JSON) with the
/// operation given and `settings` merged over the policy's declared defaults.
pub fn review<P: Policy>(operation: &str, object: &Value, settings: &Value) -> Verdict {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let operation: Operation = serde_json::from_value(Value::String(operation.into()))
        .unwrap_or_else(|e| panic!("operation {operation:?}: {e}"));
    let kind = GroupVersionKind {
        group: group.into(),
        version: version.into(),
        kind: object["kind"].as_str().unwrap_or("").into(),
    };
    let mut merged: Map<String, Value> = P::metadata().default_settings();
    if let Value::Object(overrides) = settings {
        merged.extend(overrides.clone());
    }
    let settings = serde_json::to_vec(&merged).unwrap();
    // What the host does: parse the view once, or report the parse error as the policy's.
    let raw = serde_json::to_string(object).unwrap();
    let view = match Object::parse(&kind, &raw) {
        Ok(view) => view,
        Err(message) => {
            return Verdict {
                violations: Vec::new(),
                error: Some(message),
            };
        }
    };
    let header = Header {
        operation,
        kind: kind.clone(),
        namespace: object["metadata"]["namespace"].as_str().unwrap_or(""),
        name: object["metadata"]["name"].as_str().unwrap_or(""),
        dry_run: false,
    };
    let input = encode_input(&header, &view, &raw);
    crate::__run::<P>(&input, &settings)
}

/// Every pod-bearing kind the walkers know: `(apiVersion, kind, field path of its pod spec)`.
pub const POD_BEARING: &[(&str, &str, &str)] = &[
    ("v1", "Pod", "spec"),
    ("v1", "PodTemplate", "template.spec"),
    ("v1", "ReplicationController", "spec.template.spec"),
    ("apps/v1", "Deployment", "spec.template.spec"),
    ("apps/v1", "StatefulSet", "spec.template.spec"),
    ("apps/v1", "DaemonSet", "spec.template.spec"),
    ("apps/v1", "ReplicaSet", "spec.template.spec"),
    ("batch/v1", "Job", "spec.template.spec"),
    ("batch/v1", "CronJob", "spec.jobTemplate.spec.template.spec"),
];

/// An object of `kind` whose pod spec is `pod_spec`, placed where that kind keeps it.
pub fn with_pod_spec(api_version: &str, kind: &str, pod_spec: Value) -> Value {
    let template =
        serde_json::json!({ "metadata": { "labels": { "app": "demo" } }, "spec": pod_spec });
    let mut object = serde_json::json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": { "name": "demo", "namespace": "codex-k8s-prod" },
    });
    match kind {
        "Pod" => object["spec"] = template["spec"].clone(),
        "PodTemplate" => object["template"] = template,
        "CronJob" => {
            object["spec"] = serde_json::json!({
                "schedule": "17 3 * * *",
                "jobTemplate": { "metadata": {}, "spec": { "template": template } },
            })
        }
        _ => object["spec"] = serde_json::json!({ "replicas": 1, "template": template }),
    }
    object
}

/// A pod spec with one container carrying `env`.
pub fn pod_spec_with_env(env: Value) -> Value {
    serde_json::json!({ "containers": [{ "name": "main", "image": "busybox:1.36", "env": env }] })
}
