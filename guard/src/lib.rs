//! The break-glass pause of ck8s-admission: one contract between the plugin that pauses
//! (`kubectl ck8s admission pause|resume|status`) and the webhook that restores the
//! configuration when the pause ends, so that the end does not depend on the operator's
//! terminal staying open.
//!
//! A pause is recorded on the ValidatingWebhookConfiguration itself:
//! - every webhook gets the match condition [`CONDITION`] (`false`): the API server skips the
//!   webhook for every request, so writes go through whether ck8s-admission is down (nothing
//!   to answer, `failurePolicy: Fail`) or up and wrongly denying;
//! - the annotations [`UNTIL`], [`BY`] and [`REASON`] say until when, who and why.
//!
//! This crate is pure: it reads and edits the object; the callers do the I/O (a `replace`
//! with the object's `resourceVersion`, so a concurrent edit is never overwritten).

use jiff::Timestamp;
use k8s_openapi::api::admissionregistration::v1::{MatchCondition, ValidatingWebhookConfiguration};

/// The match condition a pause adds to every webhook.
pub const CONDITION: &str = "ck8s-paused";
/// Annotations: the end of the pause (RFC 3339), who paused, why.
pub const UNTIL: &str = "ck8s.codex-k8s.dev/paused-until";
pub const BY: &str = "ck8s.codex-k8s.dev/paused-by";
pub const REASON: &str = "ck8s.codex-k8s.dev/pause-reason";

/// A pause in effect (or recorded and past its end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub until: Timestamp,
    pub by: String,
    pub reason: String,
    /// Whether every webhook carries the condition (the pause lets writes through).
    pub complete: bool,
}

/// The pause recorded on `vwc`, if any. `Err` when the end is not a time.
pub fn pause_of(vwc: &ValidatingWebhookConfiguration) -> Result<Option<Pause>, String> {
    let annotations = vwc.metadata.annotations.clone().unwrap_or_default();
    let has_condition = |w: &k8s_openapi::api::admissionregistration::v1::ValidatingWebhook| {
        w.match_conditions
            .iter()
            .flatten()
            .any(|c| c.name == CONDITION)
    };
    let webhooks = vwc.webhooks.as_deref().unwrap_or_default();
    let any = webhooks.iter().any(has_condition);
    let Some(until) = annotations.get(UNTIL) else {
        return Ok(any.then(|| Pause {
            until: Timestamp::MAX,
            by: String::new(),
            reason: format!("the match condition {CONDITION} without {UNTIL}"),
            complete: webhooks.iter().all(has_condition),
        }));
    };
    let until: Timestamp = until
        .parse()
        .map_err(|e| format!("annotation {UNTIL} is not an RFC 3339 time ({until:?}): {e}"))?;
    Ok(Some(Pause {
        until,
        by: annotations.get(BY).cloned().unwrap_or_default(),
        reason: annotations.get(REASON).cloned().unwrap_or_default(),
        complete: !webhooks.is_empty() && webhooks.iter().all(has_condition),
    }))
}

/// `vwc` paused until `until`: the condition on every webhook (first, so that it decides
/// before any other condition is evaluated), the annotations set. Pausing again extends or
/// shortens the pause.
pub fn pause(vwc: &mut ValidatingWebhookConfiguration, until: Timestamp, by: &str, reason: &str) {
    for w in vwc.webhooks.iter_mut().flatten() {
        let conditions = w.match_conditions.get_or_insert_with(Vec::new);
        conditions.retain(|c| c.name != CONDITION);
        conditions.insert(
            0,
            MatchCondition {
                name: CONDITION.into(),
                expression: "false".into(),
            },
        );
    }
    let annotations = vwc
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(UNTIL.into(), format!("{until:.0}"));
    annotations.insert(BY.into(), by.into());
    annotations.insert(REASON.into(), reason.into());
}

/// `vwc` as it was before the pause: the condition and the annotations removed. `false` when
/// there was nothing to remove.
pub fn restore(vwc: &mut ValidatingWebhookConfiguration) -> bool {
    let mut changed = false;
    for w in vwc.webhooks.iter_mut().flatten() {
        if let Some(conditions) = &mut w.match_conditions {
            let before = conditions.len();
            conditions.retain(|c| c.name != CONDITION);
            changed |= conditions.len() != before;
            if conditions.is_empty() {
                w.match_conditions = None;
            }
        }
    }
    if let Some(annotations) = &mut vwc.metadata.annotations {
        for key in [UNTIL, BY, REASON] {
            changed |= annotations.remove(key).is_some();
        }
    }
    changed
}

/// The time left of the pause on `vwc` now (zero once it has ended); `None` without a pause
/// that ends.
pub fn time_left(vwc: &ValidatingWebhookConfiguration) -> Option<std::time::Duration> {
    let p = pause_of(vwc).ok().flatten()?;
    if p.until == Timestamp::MAX {
        return None;
    }
    Some(
        p.until
            .duration_since(Timestamp::now())
            .try_into()
            .unwrap_or_default(),
    )
}

/// Whether the pause on `vwc` has ended at `now` (and the configuration must be restored).
pub fn expired(vwc: &ValidatingWebhookConfiguration, now: Timestamp) -> bool {
    matches!(pause_of(vwc), Ok(Some(p)) if p.until <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> ValidatingWebhookConfiguration {
        yaml_free_parse()
    }

    /// The configuration of `deploy/base`, as JSON (this crate has no YAML parser).
    fn yaml_free_parse() -> ValidatingWebhookConfiguration {
        k8s_openapi::serde_json::from_value(k8s_openapi::serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "ck8s-admission"},
            "webhooks": [{
                "name": "ck8s-admission.codex-k8s.dev",
                "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "timeoutSeconds": 5,
                "clientConfig": {"service": {"namespace": "ck8s-system", "name": "ck8s-admission"}},
                "matchConditions": [
                    {"name": "exclude-high-churn", "expression": "!(request.resource.resource in ['leases'])"}
                ]
            }]
        }))
        .unwrap()
    }

    #[test]
    fn a_pause_is_recorded_read_back_and_restored_exactly() {
        let original = shipped();
        let mut vwc = original.clone();
        assert_eq!(pause_of(&vwc), Ok(None));
        let until: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        pause(&mut vwc, until, "alice", "build-ref wrongly denies");
        let conditions = vwc.webhooks.as_ref().unwrap()[0]
            .match_conditions
            .as_ref()
            .unwrap();
        assert_eq!(conditions[0].name, CONDITION);
        assert_eq!(conditions[0].expression, "false");
        assert_eq!(conditions.len(), 2, "the shipped conditions are kept");
        let p = pause_of(&vwc).unwrap().unwrap();
        assert_eq!(
            p,
            Pause {
                until,
                by: "alice".into(),
                reason: "build-ref wrongly denies".into(),
                complete: true
            }
        );
        // Pausing again replaces the pause, never stacks conditions.
        pause(
            &mut vwc,
            until + jiff::SignedDuration::from_mins(5),
            "bob",
            "longer",
        );
        assert_eq!(
            vwc.webhooks.as_ref().unwrap()[0]
                .match_conditions
                .as_ref()
                .unwrap()
                .len(),
            2
        );
        assert!(!expired(&vwc, until));
        assert!(expired(&vwc, until + jiff::SignedDuration::from_mins(5)));
        assert!(restore(&mut vwc));
        assert_eq!(vwc.metadata.annotations.as_ref().map(|a| a.len()), Some(0));
        vwc.metadata.annotations = None;
        assert_eq!(vwc, original);
        assert!(!restore(&mut vwc), "nothing left to restore");
    }

    #[test]
    fn a_bad_end_time_is_an_error_and_a_condition_alone_is_a_pause_without_end() {
        let mut vwc = shipped();
        vwc.metadata.annotations = Some([(UNTIL.to_string(), "soon".to_string())].into());
        assert!(pause_of(&vwc).unwrap_err().contains("not an RFC 3339 time"));
        let mut vwc = shipped();
        pause(&mut vwc, Timestamp::now(), "a", "b");
        vwc.metadata.annotations = None;
        let p = pause_of(&vwc).unwrap().unwrap();
        assert_eq!(p.until, Timestamp::MAX);
        assert!(
            !expired(&vwc, Timestamp::now()),
            "no end recorded: never restored by time"
        );
    }
}
