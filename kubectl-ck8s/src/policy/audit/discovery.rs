//! Which kinds the audit lists: those discovery serves that a policy judges and the
//! webhook is sent, one API group at a time.

use super::scope::WebhookScope;
use crate::cluster::Ctx;
use crate::exit::Failure;
use ck8s_policy_runtime::PolicySet;
use ck8s_policy_runtime::api::{Operation, Rule, reads_only_metadata};
use kube::api::ApiResource;
use kube::discovery::{Discovery, Scope, verbs};
use std::collections::BTreeSet;

/// A kind is listed when a policy judges its creation or its update.
const WRITES: [Operation; 2] = [Operation::Create, Operation::Update];

/// `plural.group`, as kubectl names a resource.
pub(super) fn qualified(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}.{}", ar.plural, ar.group)
    }
}

/// The kinds to list: `(resource, scope, whole objects?)`, in discovery order.
pub(super) async fn judged_resources(
    ctx: &Ctx,
    set: &PolicySet,
    scope: &WebhookScope,
    notes: &mut Vec<String>,
) -> Result<Vec<(ApiResource, Scope, bool)>, Failure> {
    let vap_rules: Vec<Vec<Rule>> = set
        .vap_policies()
        .iter()
        .map(PolicySet::vap_rules)
        .collect();
    let groups: BTreeSet<String> = set
        .policies()
        .flat_map(|(p, _)| p.metadata.rules.iter())
        .chain(vap_rules.iter().flatten())
        .flat_map(|r| r.api_groups.clone())
        .collect();
    let listed = ctx
        .client
        .list_api_groups()
        .await
        .map_err(|e| ctx.err("discover", "API groups", None, e))?;
    let mut names: Vec<String> = std::iter::once(String::new())
        .chain(listed.groups.into_iter().map(|g| g.name))
        .filter(|g| groups.contains("*") || groups.contains(g))
        .collect();
    names.sort();
    // One group at a time, as kubectl does: an aggregated API that does not answer
    // (metrics.k8s.io down) is reported, not the end of the audit.
    let mut found = Vec::new();
    for name in &names {
        // The client retries a 503 with backoff for minutes; a group gets one request
        // timeout in all.
        let run = Discovery::new(ctx.client.clone())
            .filter(&[name.as_str()])
            .run();
        let shown = if name.is_empty() { "core" } else { name };
        match tokio::time::timeout(ctx.request_timeout, run).await {
            Ok(Ok(d)) => found.push(d),
            Ok(Err(e)) => notes.push(format!(
                "API group {shown} could not be discovered ({e}): its kinds are not audited"
            )),
            Err(_) => notes.push(format!(
                "API group {shown} could not be discovered (no answer within {}): its kinds are not audited",
                humantime::format_duration(ctx.request_timeout)
            )),
        }
    }
    let mut out = Vec::new();
    for group in found.iter().flat_map(|d| d.groups()) {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) || !scope.sends(&ar) {
                continue;
            }
            let (g, v, r) = (&ar.group, &ar.version, &ar.plural);
            let judging: Vec<_> = set
                .policies()
                .filter(|(p, _)| WRITES.iter().any(|&op| p.metadata.inspects(g, v, r, op)))
                .collect();
            let vap_judging = vap_rules
                .iter()
                .flatten()
                .any(|rule| WRITES.iter().any(|&op| rule.matches(g, v, r, op)));
            if judging.is_empty() && !vap_judging {
                continue;
            }
            // Whole objects unless every policy judging the kind sees only its metadata.
            let whole = !reads_only_metadata(&ar.group, &ar.kind)
                || vap_judging
                || judging.iter().any(|(p, _)| {
                    p.abi_version() == ck8s_policy_runtime::api::ABI_VERSION_JSON
                        || p.metadata.raw_object
                });
            out.push((ar, caps.scope.clone(), whole));
        }
    }
    Ok(out)
}
