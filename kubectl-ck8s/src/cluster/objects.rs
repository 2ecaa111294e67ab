//! Pure helpers on fetched objects, defined once for every flow: Job state, pod readiness,
//! times.

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

/// A Kubernetes timestamp as a chrono time.
pub fn time(t: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
}

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
pub fn job_time(j: &Job) -> Option<DateTime<Utc>> {
    j.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(j.metadata.creation_timestamp.as_ref())
        .and_then(time)
}

/// The pod's `Ready` condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True")
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
}
