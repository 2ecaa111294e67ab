//! Run a policy natively, the way the host runs it in WebAssembly, for `cargo test`: the
//! object is parsed into the view, encoded into the ABI v2 input and decoded again by the
//! same entry point the WebAssembly export calls.
//!
//! ```ignore
//! let verdict = ck8s_policy_sdk::testing::review::<MyPolicy>("CREATE", &deployment, &json!({}));
//! assert!(verdict.allowed());
//! ```

use crate::Policy;
use ck8s_policy_api::codec::{EncodedInput, Header};
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
    let metadata = P::metadata();
    let mut merged: Map<String, Value> = metadata.default_settings();
    if let Value::Object(overrides) = settings {
        merged.extend(overrides.clone());
    }
    let settings = serde_json::to_vec(&merged).unwrap();
    // What the host does: parse the view once, or report the parse error as the policy's.
    let raw = serde_json::to_string(object).unwrap();
    let view = match Object::parse(&kind, &raw) {
        Ok(view) => view,
        Err(e) => {
            return Verdict {
                violations: Vec::new(),
                error: Some(e.to_string()),
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
    // Like the host, the raw JSON only for a policy that declares it reads it.
    let input = EncodedInput::new(&header, &view, &raw).to_vec(metadata.raw_object);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PolicyMetadata, Request, Violation, violation};

    /// Reports whether it was given the raw object, and its `kind` field if so.
    struct ReadsRaw<const WANTS: bool>;

    impl<const WANTS: bool> Policy for ReadsRaw<WANTS> {
        type Settings = Value;
        fn metadata() -> PolicyMetadata {
            PolicyMetadata {
                name: "reads-raw".into(),
                version: "0.0.0".into(),
                description: "test".into(),
                rules: crate::rules::all_objects(),
                settings: vec![],
                raw_object: WANTS,
            }
        }
        fn validate(request: &Request<'_>, _: &Value) -> Vec<Violation> {
            let kind = request
                .raw_object()
                .map(|raw| serde_json::from_str::<Value>(raw).unwrap()["kind"].to_string());
            vec![violation("raw", format!("{kind:?}"))]
        }
    }

    #[test]
    fn the_raw_object_is_there_only_for_a_policy_that_declares_it() {
        let object = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap"});
        let seen = |v: Verdict| v.violations[0].message.clone();
        assert_eq!(
            seen(review::<ReadsRaw<true>>("CREATE", &object, &Value::Null)),
            r#"Some("\"ConfigMap\"")"#
        );
        assert_eq!(
            seen(review::<ReadsRaw<false>>("CREATE", &object, &Value::Null)),
            "None"
        );
    }
}
