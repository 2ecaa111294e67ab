//! One `AdmissionReview` in, one out: parse, evaluate, apply the modes, encode.

use crate::metrics::{Metrics, PolicyErrorLabels, PolicyResult, PolicySeries};
use crate::store::Served;
use ck8s_policy_runtime::admission::{AdmissionRequest, ReviewError, parse_review};
use ck8s_policy_runtime::{ClusterReads, Decision, Evaluation, OutcomeResult, Subject};
use serde::Serialize;
use std::collections::BTreeMap;

/// The API server keeps at most 4 KiB of warnings per response.
pub const WARNING_BUDGET: usize = 4096;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: Response<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<String, String>,
}

/// `metav1.Status`, as the API server shows it to the user.
#[derive(Serialize)]
struct Status {
    status: &'static str,
    code: u16,
    reason: &'static str,
    message: String,
}

/// An answer: the JSON body, and the decision for logging and metrics.
pub struct Answer {
    pub body: Vec<u8>,
    pub decision: Decision,
}

/// Evaluates a review body against the set in service. `Err` is a 400 with a plain reason.
pub fn answer(
    body: &[u8],
    served: &Served,
    cluster: Option<&dyn ClusterReads>,
    metrics: &Metrics,
) -> Result<Answer, ReviewError> {
    let request = parse_review(body)?;
    let evaluation = served
        .set
        .evaluate_in(&Subject::from_admission(&request), cluster);
    record(&evaluation, served, metrics);
    let decision = Decision::from_evaluation(&evaluation);
    log_findings(&request, &decision);
    let body = encode(&request.uid, &decision);
    Ok(Answer { body, decision })
}

/// A denial for a review that could not be evaluated in time (overload): the request's own
/// uid (found without parsing the body, see `crate::body::uid_in_prefix`), a clear message,
/// HTTP 429 semantics in the status so kubectl shows it.
pub fn overloaded(uid: &str, message: String) -> Vec<u8> {
    review_out(Response {
        uid,
        allowed: false,
        status: Some(Status {
            status: "Failure",
            code: 429,
            reason: "TooManyRequests",
            message,
        }),
        warnings: Vec::new(),
        audit_annotations: BTreeMap::new(),
    })
}

fn review_out(response: Response) -> Vec<u8> {
    let out = ReviewOut {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response,
    };
    // Room for an allowed answer and a short denial at once: a growing buffer's reallocation
    // is code a review otherwise runs for nothing.
    let mut body = Vec::with_capacity(512);
    serde_json::to_writer(&mut body, &out).expect("a review of strings always serializes");
    body
}

impl Answer {
    /// The `decision` label of `requests_total`: an allowed request that held violations
    /// only because ratcheting kept them (or its controller inherited them) is counted apart
    /// from a clean one, so a dashboard shows how much the ratchet lets through.
    pub fn decision_label(&self) -> &'static str {
        let d = &self.decision;
        if !d.allowed {
            "deny"
        } else if d.kept.is_empty() {
            "allow"
        } else if d.inherited_from.is_some() {
            "inherited"
        } else {
            "kept"
        }
    }
}

fn encode(uid: &str, d: &Decision) -> Vec<u8> {
    let status = (!d.allowed).then(|| Status {
        status: "Failure",
        code: 403,
        reason: "Forbidden",
        message: d.denial_message(),
    });
    let mut audit_annotations = BTreeMap::new();
    for f in &d.audits {
        let entry: &mut String = audit_annotations.entry(f.policy.clone()).or_default();
        if !entry.is_empty() {
            entry.push_str("; ");
        }
        entry.push_str(&f.to_string());
    }
    // A VAP's `auditAnnotations` come as `policy/key`; the API server prefixes every key with
    // the webhook's name and keeps only `prefix/name` keys, so the policy joins the name.
    for (key, value) in &d.annotations {
        audit_annotations.insert(key.replacen('/', ".", 1), value.clone());
    }
    review_out(Response {
        uid,
        allowed: d.allowed,
        status,
        warnings: warnings(&d.warning_texts()),
        audit_annotations,
    })
}

/// Warnings within the API server's budget: as many whole warnings as fit, then a line that
/// says how many were left out.
pub fn warnings(findings: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut used = 0;
    for (i, text) in findings.iter().enumerate() {
        let rest = findings.len() - i - 1;
        let reserve = if rest > 0 { 64 } else { 0 };
        if used + text.len() + reserve > WARNING_BUDGET {
            out.push(format!(
                "ck8s: {} more warning(s) not shown",
                findings.len() - i
            ));
            break;
        }
        used += text.len();
        out.push(text.clone());
    }
    out
}

fn record(evaluation: &Evaluation, served: &Served, metrics: &Metrics) {
    let Evaluation::Judged(outcomes) = evaluation else {
        return;
    };
    for (i, o) in outcomes.iter().enumerate() {
        let result = match &o.result {
            OutcomeResult::NotInspected => PolicyResult::NotInspected,
            // Every violation was one the old object had (ratcheting).
            // Written by a workload controller from its owner's template.
            OutcomeResult::Allowed if o.inherited_from.is_some() => PolicyResult::Inherited,
            OutcomeResult::Allowed if !o.kept.is_empty() => PolicyResult::Kept,
            OutcomeResult::Allowed => PolicyResult::Allow,
            OutcomeResult::Violations(_) => match o.mode {
                ck8s_policy_runtime::Mode::Deny => PolicyResult::Deny,
                ck8s_policy_runtime::Mode::Warn => PolicyResult::Warn,
                ck8s_policy_runtime::Mode::Audit => PolicyResult::Audit,
            },
            OutcomeResult::Error(e) => {
                metrics
                    .policy_errors
                    .get_or_create(&PolicyErrorLabels {
                        policy: o.policy.clone(),
                        kind: e.kind(),
                    })
                    .inc();
                PolicyResult::Error
            }
        };
        // Not a policy of the set (never, by `PolicySet::names`): its series found now.
        let unlisted;
        let series = match served.series.of(i, &o.policy) {
            Some(series) => series,
            None => {
                unlisted = PolicySeries::new(&o.policy);
                &unlisted
            }
        };
        series.evaluated(metrics, result);
        if !matches!(o.result, OutcomeResult::NotInspected) {
            series.took(metrics, o.elapsed.as_secs_f64());
        }
    }
}

/// One log line per denial (and per audit finding): uid, policy, user, kind, namespace/name.
fn log_findings(r: &AdmissionRequest<'_>, d: &Decision) {
    let user = r.user_info.username.as_deref().unwrap_or("");
    let ns = r.namespace.as_deref().unwrap_or("");
    let name = r.name.as_deref().unwrap_or("");
    for f in &d.denials {
        tracing::info!(uid = %r.uid, policy = %f.policy, user, kind = %r.kind.kind, namespace = ns, name, finding = %f, "denied");
    }
    for f in &d.audits {
        tracing::info!(uid = %r.uid, policy = %f.policy, user, kind = %r.kind.kind, namespace = ns, name, finding = %f, "audit");
    }
    for f in &d.kept {
        tracing::info!(uid = %r.uid, policy = %f.policy, user, kind = %r.kind.kind, namespace = ns, name, finding = %f, "existing violation kept");
    }
}
