//! Pure helpers on fetched objects, defined once for every flow: Job state, pod readiness,
//! times, label selectors (with `matchExpressions`).

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use serde::Serialize;

/// When an object was created, in seconds since the epoch (0 when unknown: sorts first).
pub fn created(meta: &kube::api::ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

/// The Job condition of type `t` with status True, if any.
pub fn job_condition(j: &Job, t: &str) -> bool {
    j.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == t && c.status == "True")
}

/// Where a Job is: the `Complete` and `Failed` conditions, as `kubectl wait --for=condition=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum JobState {
    Complete,
    Failed,
    Running,
}

impl JobState {
    pub fn of(j: &Job) -> Self {
        if job_condition(j, "Complete") {
            JobState::Complete
        } else if job_condition(j, "Failed") {
            JobState::Failed
        } else {
            JobState::Running
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Complete => "Complete",
            JobState::Failed => "Failed",
            JobState::Running => "Running",
        }
    }
}

/// When a Job started (its start time, else its creation).
pub fn job_time(j: &Job) -> Option<Timestamp> {
    j.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(j.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

pub fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Unknown")
}

/// The pod's `Ready` condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Running, Ready and not being deleted: a pod that serves.
pub fn pod_serving(p: &Pod) -> bool {
    pod_phase(p) == "Running" && pod_ready(p) && p.metadata.deletion_timestamp.is_none()
}

/// When the pod started (its status start time, else its creation).
pub fn pod_started(p: &Pod) -> Option<Timestamp> {
    p.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(p.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// A label selector as the API and `kubectl -l` take it, `matchExpressions` included.
pub fn selector(s: &LabelSelector) -> Result<Selector, String> {
    Selector::try_from(s.clone()).map_err(|e| e.to_string())
}

/// Whether `labels` match `s` as the API server matches a webhook's `namespaceSelector` and
/// `objectSelector`: an empty selector matches everything, one it would refuse nothing.
pub fn matches(s: &LabelSelector, labels: &std::collections::BTreeMap<String, String>) -> bool {
    selector(s).is_ok_and(|sel| sel.matches(labels))
}

/// Whether `labels` are selected by `s` (an empty selector selects nothing, as a
/// Deployment's never is).
pub fn selects(
    s: &LabelSelector,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    match selector(s) {
        Ok(sel) if !sel.selects_all() => sel.matches(&labels.cloned().unwrap_or_default()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn job_states() {
        let job = |c: &str, s: &str| {
            obj::<Job>(
                json!({"metadata": {"name": "j"}, "status": {"conditions": [{"type": c, "status": s}]}}),
            )
        };
        assert_eq!(JobState::of(&job("Complete", "True")), JobState::Complete);
        assert_eq!(JobState::of(&job("Failed", "True")), JobState::Failed);
        assert_eq!(JobState::of(&job("Failed", "False")), JobState::Running);
        assert_eq!(
            JobState::of(&obj(json!({"metadata": {}}))),
            JobState::Running
        );
    }

    #[test]
    fn selectors_with_match_expressions() {
        let labels = |v: serde_json::Value| obj::<std::collections::BTreeMap<String, String>>(v);
        let s: LabelSelector = obj(json!({
            "matchLabels": {"app": "codex-k8s"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }));
        assert_eq!(
            selector(&s).unwrap().to_string(),
            "app=codex-k8s,tier in (api,web),!canary"
        );
        assert!(selects(
            &s,
            Some(&labels(json!({"app": "codex-k8s", "tier": "api"})))
        ));
        assert!(!selects(
            &s,
            Some(&labels(json!({"app": "codex-k8s", "tier": "db"})))
        ));
        assert!(!selects(
            &s,
            Some(&labels(
                json!({"app": "codex-k8s", "tier": "api", "canary": "1"})
            ))
        ));
        assert!(!selects(
            &LabelSelector::default(),
            Some(&labels(json!({"app": "x"})))
        ));
    }

    #[test]
    fn serving_pods() {
        let pod = |phase: &str, ready: &str, deleting: bool| {
            let mut p = json!({"metadata": {"name": "p"}, "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}});
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            obj::<Pod>(p)
        };
        assert!(pod_serving(&pod("Running", "True", false)));
        assert!(!pod_serving(&pod("Running", "False", false)));
        assert!(!pod_serving(&pod("Pending", "True", false)));
        assert!(!pod_serving(&pod("Running", "True", true)));
    }
}
