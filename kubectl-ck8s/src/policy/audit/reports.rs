//! The audit as `wgpolicyk8s.io/v1alpha2` PolicyReports, and their server-side apply.

use super::{Report, Violation};
use crate::cluster::Ctx;
use crate::exit::Failure;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The name of every report the audit writes, and its field manager.
pub const REPORT_NAME: &str = "ck8s-policy-audit";
const FIELD_MANAGER: &str = "kubectl-ck8s-audit";

/// `wgpolicyk8s.io/v1alpha2` reports: a PolicyReport per namespace judged (a clean one says
/// so in its summary) and a ClusterPolicyReport for cluster-scoped objects.
pub fn policy_reports(
    report: &Report,
    passes: &BTreeMap<String, usize>,
    at: chrono::DateTime<chrono::Utc>,
) -> Vec<Value> {
    let mut by_ns: BTreeMap<String, Vec<&Violation>> = BTreeMap::new();
    // Every namespace judged gets a report, a clean one too (it replaces an older one).
    for ns in report.summary.namespaces.iter().chain(passes.keys()) {
        by_ns.entry(ns.clone()).or_default();
    }
    for v in &report.violations {
        by_ns.entry(v.namespace.clone()).or_default().push(v);
    }
    by_ns.entry(String::new()).or_default();
    let timestamp = json!({ "seconds": at.timestamp(), "nanos": at.timestamp_subsec_nanos() });
    by_ns
        .into_iter()
        .map(|(ns, violations)| {
            let results: Vec<Value> = violations
                .iter()
                .map(|v| {
                    let result = match v.effect {
                        "deny" => "fail",
                        "error" => "error",
                        _ => "warn",
                    };
                    let mut message = v.message.clone();
                    if let Some(value) = &v.value {
                        message.push_str(&format!(" (got {value:?})"));
                    }
                    let mut resource = json!({ "apiVersion": v.api_version, "kind": v.kind, "name": v.name });
                    if !v.namespace.is_empty() {
                        resource["namespace"] = json!(v.namespace);
                    }
                    if !v.uid.is_empty() {
                        resource["uid"] = json!(v.uid);
                    }
                    json!({
                        "source": "ck8s",
                        "policy": v.policy,
                        "rule": v.policy,
                        "result": result,
                        "scored": true,
                        "message": message,
                        "properties": { "path": v.path, "fix": v.fix, "mode": v.effect },
                        "resources": [resource],
                        "timestamp": timestamp,
                    })
                })
                .collect();
            let count = |r: &str| results.iter().filter(|x| x["result"] == r).count();
            let pass = passes.get(&ns).copied().unwrap_or(0);
            let summary = json!({ "pass": pass, "fail": count("fail"), "warn": count("warn"), "error": count("error"), "skip": 0 });
            let mut metadata = json!({
                "name": REPORT_NAME,
                "labels": { "app.kubernetes.io/managed-by": "kubectl-ck8s" },
            });
            let kind = if ns.is_empty() {
                "ClusterPolicyReport"
            } else {
                metadata["namespace"] = json!(ns);
                "PolicyReport"
            };
            json!({
                "apiVersion": "wgpolicyk8s.io/v1alpha2",
                "kind": kind,
                "metadata": metadata,
                "summary": summary,
                "results": results,
            })
        })
        .collect()
}

/// `--apply` needs the PolicyReport CRDs: checked before the audit lists every object, not
/// after.
pub(super) async fn reports_served(ctx: &Ctx) -> Result<(), Failure> {
    const GROUP_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
    let served = match ctx.client.list_api_group_resources(GROUP_VERSION).await {
        Ok(list) => ["policyreports", "clusterpolicyreports"]
            .iter()
            .all(|r| list.resources.iter().any(|x| x.name == *r)),
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => return Err(ctx.err("discover", GROUP_VERSION, None, e)),
    };
    if served {
        return Ok(());
    }
    Err(Failure::not_found(format!(
        "--apply: the API server does not serve policyreports and clusterpolicyreports ({GROUP_VERSION})"
    ))
    .with_help(MISSING_CRDS))
}

const MISSING_CRDS: &str = "install the PolicyReport CRDs (wgpolicyk8s.io_policyreports.yaml, wgpolicyk8s.io_clusterpolicyreports.yaml) first";

/// Creates or updates every report, server-side (field manager `kubectl-ck8s-audit`).
pub(super) async fn apply_reports(ctx: &Ctx, reports: &[Value]) -> Result<(), Failure> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for r in reports {
        let kind = r["kind"].as_str().unwrap_or("");
        let plural = kind.to_ascii_lowercase() + "s";
        let ar = ApiResource {
            group: "wgpolicyk8s.io".into(),
            version: "v1alpha2".into(),
            api_version: "wgpolicyk8s.io/v1alpha2".into(),
            kind: kind.into(),
            plural: plural.clone(),
        };
        let ns = r["metadata"]["namespace"].as_str();
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
            None => Api::all_with(ctx.client.clone(), &ar),
        };
        match api.patch(REPORT_NAME, &params, &Patch::Apply(r)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(Failure::not_found(format!(
                    "the API server does not serve {plural}.wgpolicyk8s.io/v1alpha2"
                ))
                .with_help(MISSING_CRDS));
            }
            // The API server authorizes an apply that creates the report as create: name
            // the verb it refused, not the request's.
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("cannot create") => {
                let e = kube::Error::Api(s);
                return Err(ctx.err("create", &format!("{plural}.wgpolicyk8s.io"), ns, e));
            }
            Err(e) => return Err(ctx.err("patch", &format!("{plural}.wgpolicyk8s.io"), ns, e)),
        }
    }
    Ok(())
}
