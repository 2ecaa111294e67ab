//! One kind listed page by page and every object in scope judged, as the webhook would
//! judge it on CREATE.

use super::Violation;
use super::discovery::qualified;
use super::scope::{WebhookScope, in_scope};
use crate::cluster::Ctx;
use crate::exit::Failure;
use crate::policy::check::{FindingText, effects};
use ck8s_policy_runtime::api::Operation;
use ck8s_policy_runtime::{ClusterReads, Decision, FindingKind, PolicySet, Subject};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::discovery::Scope;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The policies an audit judges with, and what their VAPs read from the cluster.
#[derive(Clone, Copy)]
pub(super) struct Judge<'a> {
    pub set: &'a PolicySet,
    pub reads: Option<&'a dyn ClusterReads>,
}

/// Lists one kind page by page and judges every object in scope. Returns the findings, the
/// number of objects judged, and one namespace entry per clean (object, policy) pair.
pub(super) async fn audit_resource(
    ctx: &Ctx,
    judge: Judge<'_>,
    scope: &WebhookScope,
    ar: &ApiResource,
    res_scope: Scope,
    whole: bool,
    chunk: u32,
) -> Result<(Vec<Violation>, usize, Vec<String>), Failure> {
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), ar);
    let err = |e| ctx.err("list", &qualified(ar), None, e);
    let (mut violations, mut judged, mut passes) = (Vec::new(), 0, Vec::new());
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(chunk);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let (objects, next): (Vec<Value>, Option<String>) = if whole {
            let list = api.list(&lp).await.map_err(err)?;
            let next = list.metadata.continue_.clone();
            let items = list
                .items
                .into_iter()
                .map(|o| serde_json::to_value(o).map_err(|e| Failure::internal(e.to_string())))
                .collect::<Result<_, _>>()?;
            (items, next)
        } else {
            let list = api.list_metadata(&lp).await.map_err(err)?;
            let next = list.metadata.continue_.clone();
            let items = list
                .items
                .into_iter()
                .map(|o| json!({ "metadata": o.metadata }))
                .collect();
            (items, next)
        };
        for mut object in objects {
            // List items may come without their type.
            object["apiVersion"] = json!(ar.api_version);
            object["kind"] = json!(ar.kind);
            if !in_scope(scope, &object, &res_scope, &ar.kind) {
                continue;
            }
            judged += 1;
            let raw = serde_json::value::to_raw_value(&object)
                .map_err(|e| Failure::usage(e.to_string()))?;
            let mut subject = Subject::from_manifest(&raw, Operation::Create).map_err(|e| {
                Failure::usage(format!("{} {}: {e}", ar.kind, object["metadata"]["name"]))
            })?;
            subject.resource = (ar.group.clone(), ar.version.clone(), ar.plural.clone());
            let evaluation = judge.set.evaluate_in(&subject, judge.reads);
            let decision = Decision::from_evaluation(&evaluation);
            let inspected = match &evaluation {
                ck8s_policy_runtime::Evaluation::Judged(o) => o
                    .iter()
                    .filter(|o| {
                        !matches!(o.result, ck8s_policy_runtime::OutcomeResult::NotInspected)
                    })
                    .count(),
                ck8s_policy_runtime::Evaluation::NotJudged(_) => 0,
            };
            let found = findings(&decision, &object);
            let failed: BTreeSet<&str> = found.iter().map(|v| v.finding.policy.as_str()).collect();
            for _ in 0..inspected.saturating_sub(failed.len()) {
                passes.push(subject.namespace.to_string());
            }
            violations.extend(found);
        }
        match next.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => break,
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
