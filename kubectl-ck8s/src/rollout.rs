//! `kubectl rollout status` for a Deployment, as a pure function (same conditions, same order).

use k8s_openapi::api::apps::v1::Deployment;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Complete(String),
    /// Still progressing: worth waiting for.
    Waiting(String),
    /// `ProgressDeadlineExceeded`: waiting will not help.
    Failed(String),
}

pub fn rollout_status(d: &Deployment) -> Rollout {
    let name = d.metadata.name.as_deref().unwrap_or("");
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    if generation > status.observed_generation.unwrap_or(0) {
        return Rollout::Waiting(format!(
            "waiting for deployment {name:?} spec update to be observed"
        ));
    }
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    if progressing.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        return Rollout::Failed(format!(
            "deployment {name:?} exceeded its progress deadline"
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if let Some(want) = d.spec.as_ref().and_then(|s| s.replicas)
        && updated < want
    {
        return Rollout::Waiting(format!(
            "{updated} out of {want} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return Rollout::Waiting(format!(
            "{} old replicas are pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "{available} of {updated} updated replicas are available"
        ));
    }
    Rollout::Complete(format!("successfully rolled out ({available} available)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(
        generation: i64,
        observed: i64,
        spec: i32,
        updated: i32,
        replicas: i32,
        available: i32,
        reason: &str,
    ) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "codex-k8s-worker", "generation": generation},
            "spec": {"replicas": spec, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": replicas,
                       "availableReplicas": available,
                       "conditions": [{"type": "Progressing", "status": "True", "reason": reason}]}
        }))
        .unwrap()
    }

    #[test]
    fn as_kubectl_rollout_status() {
        let complete = |r: &Rollout| matches!(r, Rollout::Complete(_));
        let waiting = |r: &Rollout| matches!(r, Rollout::Waiting(_));
        let failed = |r: &Rollout| matches!(r, Rollout::Failed(_));
        for (name, d, want) in [
            (
                "all replicas updated and available",
                deploy(2, 2, 1, 1, 1, 1, "NewReplicaSetAvailable"),
                complete as fn(&Rollout) -> bool,
            ),
            (
                "spec update not observed",
                deploy(3, 2, 1, 1, 1, 1, "NewReplicaSetAvailable"),
                waiting,
            ),
            (
                "progress deadline exceeded",
                deploy(2, 2, 1, 0, 1, 0, "ProgressDeadlineExceeded"),
                failed,
            ),
            (
                "new replicas not updated",
                deploy(2, 2, 2, 1, 2, 1, "ReplicaSetUpdated"),
                waiting,
            ),
            (
                "old replicas pending termination",
                deploy(2, 2, 1, 1, 2, 1, "ReplicaSetUpdated"),
                waiting,
            ),
            (
                "updated replicas not available",
                deploy(2, 2, 1, 1, 1, 0, "ReplicaSetUpdated"),
                waiting,
            ),
        ] {
            assert!(
                want(&rollout_status(&d)),
                "{name}: {:?}",
                rollout_status(&d)
            );
        }
    }
}
