//! One kind listed page by page and every object in scope judged, as the webhook would
//! judge it on CREATE.

use super::Violation;
use super::discovery::qualified;
use super::scope::{WebhookScope, in_scope};
use crate::cluster::Ctx;
use crate::exit::Failure;
use crate::policy::check::{FindingText, effects};
use ck8s_policy_runtime::api::Operation;
use ck8s_policy_runtime::{
    ClusterReads, Decision, Evaluation, FindingKind, OutcomeResult, PolicySet, Subject,
};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::discovery::Scope;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Lists one kind (`(resource, scope, whole objects?)`) page by page and judges every object
/// in scope with `set` (its VAPs reading `reads`). Returns the findings, the number of objects
/// judged, and one namespace entry per clean (object, policy) pair.
pub(super) async fn audit_resource(
    ctx: &Ctx,
    set: &PolicySet,
    reads: Option<&dyn ClusterReads>,
    scope: &WebhookScope,
    (ar, res_scope, whole): &(ApiResource, Scope, bool),
    chunk: u32,
) -> Result<(Vec<Violation>, usize, Vec<String>), Failure> {
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), ar);
    let err = |e| ctx.err("list", &qualified(ar), None, e);
    let (mut violations, mut judged, mut passes) = (Vec::new(), 0, Vec::new());
    let mut token = None;
    loop {
        let lp = ListParams {
            continue_token: token.take(),
            ..ListParams::default().limit(chunk)
        };
        let (objects, next): (Vec<Value>, _) = if *whole {
            let list = api.list(&lp).await.map_err(err)?;
            let items: Result<_, _> = list.items.iter().map(serde_json::to_value).collect();
            let items = items.map_err(|e| Failure::internal(e.to_string()))?;
            (items, list.metadata.continue_)
        } else {
            let list = api.list_metadata(&lp).await.map_err(err)?;
            let items = list
                .items
                .into_iter()
                .map(|o| json!({ "metadata": o.metadata }));
            (items.collect(), list.metadata.continue_)
        };
        for mut object in objects {
            // List items may come without their type.
            object["apiVersion"] = json!(ar.api_version);
            object["kind"] = json!(ar.kind);
            if !in_scope(scope, &object, res_scope, &ar.kind) {
                continue;
            }
            judged += 1;
            let raw = serde_json::value::to_raw_value(&object)
                .map_err(|e| Failure::usage(e.to_string()))?;
            let mut subject = Subject::from_manifest(&raw, Operation::Create).map_err(|e| {
                Failure::usage(format!("{} {}: {e}", ar.kind, object["metadata"]["name"]))
            })?;
            subject.resource = (ar.group.clone(), ar.version.clone(), ar.plural.clone());
            let evaluation = set.evaluate_in(&subject, reads);
            let decision = Decision::from_evaluation(&evaluation);
            let inspected = match &evaluation {
                Evaluation::Judged(o) => o
                    .iter()
                    .filter(|o| !matches!(o.result, OutcomeResult::NotInspected))
                    .count(),
                Evaluation::NotJudged(_) => 0,
            };
            let found = findings(&decision, &object);
            let failed: BTreeSet<&str> = found.iter().map(|v| v.finding.policy.as_str()).collect();
            let clean = inspected.saturating_sub(failed.len());
            passes.extend(std::iter::repeat_n(subject.namespace.to_string(), clean));
            violations.extend(found);
        }
        token = next.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    Ok((violations, judged, passes))
}

/// The findings of one decision on one object, with the webhook's effect.
fn findings(decision: &Decision, object: &Value) -> Vec<Violation> {
    let meta = &object["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    effects(decision)
        .map(|(effect, f)| Violation {
            kind: s(&object["kind"]),
            namespace: s(&meta["namespace"]),
            name: s(&meta["name"]),
            api_version: s(&object["apiVersion"]),
            finding: FindingText::of(
                match f.kind {
                    FindingKind::Error(_) => "error",
                    FindingKind::Violation(_) | FindingKind::Vap { .. } => effect,
                },
                f,
            ),
            uid: s(&meta["uid"]),
        })
        .collect()
}
