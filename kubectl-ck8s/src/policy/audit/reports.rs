//! The audit as `wgpolicyk8s.io/v1alpha2` PolicyReports (the CRDs in `shared/crds`), and
//! their server-side apply.

use super::{Report, Violation};
use crate::cluster::Ctx;
use crate::exit::Failure;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde::Serialize;
use std::collections::BTreeMap;

/// The name of every report the audit writes, and its field manager.
pub const REPORT_NAME: &str = "ck8s-policy-audit";
const FIELD_MANAGER: &str = "kubectl-ck8s-audit";
const GROUP: &str = "wgpolicyk8s.io";
const VERSION: &str = "v1alpha2";
const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";

/// A PolicyReport (of one namespace) or a ClusterPolicyReport (of cluster-scoped objects):
/// the fields of the CRDs the audit writes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub summary: ReportSummary,
    pub results: Vec<ReportResult>,
}

/// How many results of each kind a report holds; `pass` counts clean (object, policy) pairs.
#[derive(Debug, Default, Serialize)]
pub struct ReportSummary {
    pub pass: usize,
    pub fail: usize,
    pub warn: usize,
    pub error: usize,
    pub skip: usize,
}

/// One finding on one object.
#[derive(Debug, Serialize)]
pub struct ReportResult {
    pub source: &'static str,
    pub policy: String,
    pub rule: String,
    pub result: ResultKind,
    pub scored: bool,
    pub message: String,
    pub properties: ResultProperties,
    pub resources: Vec<ObjectReference>,
    pub timestamp: ProtoTimestamp,
}

/// A denial fails; a policy that only warns or audits warns; one that could not judge errs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultKind {
    Fail,
    Warn,
    Error,
}

/// What the CRD leaves to the source: where, how to fix it, and the policy's mode.
#[derive(Debug, Serialize)]
pub struct ResultProperties {
    pub path: String,
    pub fix: String,
    pub mode: &'static str,
}

/// The CRD's timestamp: a protobuf Timestamp, not an RFC 3339 string.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProtoTimestamp {
    pub seconds: i64,
    pub nanos: i32,
}

impl ReportResult {
    fn of(v: &Violation, timestamp: ProtoTimestamp) -> Self {
        let f = &v.finding;
        ReportResult {
            source: "ck8s",
            policy: f.policy.clone(),
            rule: f.policy.clone(),
            result: match f.effect {
                "deny" => ResultKind::Fail,
                "error" => ResultKind::Error,
                _ => ResultKind::Warn,
            },
            scored: true,
            message: f.message_and_value(),
            properties: ResultProperties {
                path: f.path.clone(),
                fix: f.fix.clone(),
                mode: f.effect,
            },
            resources: vec![ObjectReference {
                api_version: Some(v.api_version.clone()),
                kind: Some(v.kind.clone()),
                name: Some(v.name.clone()),
                namespace: Some(v.namespace.clone()).filter(|ns| !ns.is_empty()),
                uid: Some(v.uid.clone()).filter(|uid| !uid.is_empty()),
                ..Default::default()
            }],
            timestamp,
        }
    }
}

/// A PolicyReport per namespace judged (a clean one says so in its summary) and a
/// ClusterPolicyReport for cluster-scoped objects.
pub fn policy_reports(
    report: &Report,
    passes: &BTreeMap<String, usize>,
    at: jiff::Timestamp,
) -> Vec<PolicyReport> {
    let mut by_ns: BTreeMap<String, Vec<&Violation>> = BTreeMap::new();
    // Every namespace judged gets a report, a clean one too (it replaces an older one).
    for ns in report.summary.namespaces.iter().chain(passes.keys()) {
        by_ns.entry(ns.clone()).or_default();
    }
    for v in &report.violations {
        by_ns.entry(v.namespace.clone()).or_default().push(v);
    }
    by_ns.entry(String::new()).or_default();
    let timestamp = ProtoTimestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    };
    by_ns
        .into_iter()
        .map(|(ns, violations)| {
            let results: Vec<ReportResult> = violations
                .into_iter()
                .map(|v| ReportResult::of(v, timestamp))
                .collect();
            let count = |kind| results.iter().filter(|r| r.result == kind).count();
            let summary = ReportSummary {
                pass: passes.get(&ns).copied().unwrap_or(0),
                fail: count(ResultKind::Fail),
                warn: count(ResultKind::Warn),
                error: count(ResultKind::Error),
                skip: 0,
            };
            let cluster_scoped = ns.is_empty();
            PolicyReport {
                api_version: API_VERSION,
                kind: if cluster_scoped {
                    "ClusterPolicyReport"
                } else {
                    "PolicyReport"
                },
                metadata: ObjectMeta {
                    name: Some(REPORT_NAME.into()),
                    namespace: (!cluster_scoped).then_some(ns),
                    labels: Some(
                        [("app.kubernetes.io/managed-by".into(), "kubectl-ck8s".into())].into(),
                    ),
                    ..Default::default()
                },
                summary,
                results,
            }
        })
        .collect()
}

/// `--apply` needs the PolicyReport CRDs: checked before the audit lists every object, not
/// after.
pub(super) async fn reports_served(ctx: &Ctx) -> Result<(), Failure> {
    let served = match ctx.client.list_api_group_resources(API_VERSION).await {
        Ok(list) => ["policyreports", "clusterpolicyreports"]
            .iter()
            .all(|r| list.resources.iter().any(|x| x.name == *r)),
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => return Err(ctx.err("discover", API_VERSION, None, e)),
    };
    if served {
        return Ok(());
    }
    Err(Failure::not_found(format!(
        "--apply: the API server does not serve policyreports and clusterpolicyreports ({API_VERSION})"
    ))
    .with_help(MISSING_CRDS))
}

const MISSING_CRDS: &str = "install the PolicyReport CRDs (wgpolicyk8s.io_policyreports.yaml, wgpolicyk8s.io_clusterpolicyreports.yaml) first";

/// Creates or updates every report, server-side (field manager `kubectl-ck8s-audit`).
/// Returns a note for each namespace that was deleted meanwhile: its report has nowhere to go
/// (run namespaces come and go while a cluster-wide audit runs).
pub(super) async fn apply_reports(
    ctx: &Ctx,
    reports: &[PolicyReport],
) -> Result<Vec<String>, Failure> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut gone = Vec::new();
    for r in reports {
        let ar = ApiResource {
            group: GROUP.into(),
            version: VERSION.into(),
            api_version: API_VERSION.into(),
            kind: r.kind.into(),
            plural: r.kind.to_ascii_lowercase() + "s",
        };
        let ns = r.metadata.namespace.as_deref();
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
            None => Api::all_with(ctx.client.clone(), &ar),
        };
        let resource = format!("{}.{GROUP}", ar.plural);
        match api.patch(REPORT_NAME, &params, &Patch::Apply(r)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if namespace_gone(&s) => gone.push(format!(
                "no report written for namespace {}: {}",
                ns.unwrap_or_default(),
                s.message
            )),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(Failure::not_found(format!(
                    "the API server does not serve {resource}/{VERSION}"
                ))
                .with_help(MISSING_CRDS));
            }
            // The API server authorizes an apply that creates the report as create: name
            // the verb it refused, not the request's.
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("cannot create") => {
                return Err(ctx.err("create", &resource, ns, kube::Error::Api(s)));
            }
            Err(e) => return Err(ctx.err("patch", &resource, ns, e)),
        }
    }
    Ok(gone)
}

/// The API server's answer for a namespace being deleted (403, cause `NamespaceTerminating`:
/// "unable to create new content in namespace X because it is being terminated") or already
/// gone (404 of `namespaces`).
fn namespace_gone(s: &kube::core::Status) -> bool {
    s.details.as_ref().is_some_and(|d| {
        d.causes.iter().any(|c| c.reason == "NamespaceTerminating")
            || (s.code == 404 && d.kind == "namespaces")
    })
}

#[cfg(test)]
mod tests {
    use super::namespace_gone;
    use serde_json::json;

    fn status(v: serde_json::Value) -> kube::core::Status {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_namespace_deleted_during_the_audit_is_told_apart_from_missing_crds_and_rbac() {
        // As kube-apiserver answers an apply into a namespace being deleted.
        let terminating = status(
            json!({"status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "policyreports.wgpolicyk8s.io \"ck8s-policy-audit\" is forbidden: unable to create new content in namespace run-1 because it is being terminated",
            "details": {"name": "ck8s-policy-audit", "group": "wgpolicyk8s.io", "kind": "policyreports",
                "causes": [{"reason": "NamespaceTerminating", "message": "namespace run-1 is being terminated", "field": "metadata.namespace"}]}}),
        );
        assert!(namespace_gone(&terminating));
        let gone = status(
            json!({"status": "Failure", "code": 404, "reason": "NotFound",
            "message": "namespaces \"run-1\" not found", "details": {"name": "run-1", "kind": "namespaces"}}),
        );
        assert!(namespace_gone(&gone));
        let no_crd = status(
            json!({"status": "Failure", "code": 404, "reason": "NotFound",
            "message": "the server could not find the requested resource", "details": {}}),
        );
        assert!(!namespace_gone(&no_crd));
        let rbac = status(
            json!({"status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "policyreports.wgpolicyk8s.io \"ck8s-policy-audit\" is forbidden: User \"u\" cannot patch resource",
            "details": {"name": "ck8s-policy-audit", "group": "wgpolicyk8s.io", "kind": "policyreports"}}),
        );
        assert!(!namespace_gone(&rbac));
    }
}
