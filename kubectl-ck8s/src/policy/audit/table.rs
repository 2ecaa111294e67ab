//! What `-o table` shows of an audit: a row per violation, then the summary.

use super::Report;
use super::reports::REPORT_NAME;
use crate::policy::table;

/// The violations as a table, then the summary; `applied`: how many reports `--apply` wrote.
pub(super) fn text(report: &Report, applied: Option<usize>) -> String {
    let mut lines = Vec::new();
    if !report.violations.is_empty() {
        let mut table = table(["KIND", "OBJECT", "POLICY", "FIELD", "FIX"]);
        for v in &report.violations {
            let f = &v.finding;
            let object = match v.namespace.as_str() {
                "" => v.name.clone(),
                ns => format!("{ns}/{}", v.name),
            };
            let field = match (&f.value, f.effect) {
                (_, "error") => f.message.clone(),
                (Some(value), _) => format!("{} (got {value:?})", f.path),
                (None, _) => f.path.clone(),
            };
            // The policy's mode where it does not deny (the webhook only warns or audits).
            let policy = match f.effect {
                "deny" => f.policy.clone(),
                effect => format!("{} ({effect})", f.policy),
            };
            table.add_row([v.kind.clone(), object, policy, field, f.fix.clone()]);
        }
        lines.push(table.to_string());
    }
    let s = &report.summary;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    lines.push(format!(
        "{} on {} ({} judged in {}; policies: {}; config: {})",
        plural(s.violations, "violation"),
        plural(s.violating_objects, "object"),
        plural(s.objects, "object"),
        plural(s.resources.len(), "kind"),
        s.policies.join(", "),
        s.config,
    ));
    if !s.exempt_namespaces.is_empty() {
        lines.push(format!(
            "exempt by the webhook's namespaceSelector: {}",
            s.exempt_namespaces.join(", ")
        ));
    }
    for n in &s.notes {
        lines.push(format!("note: {n}"));
    }
    if s.violations == 0 && s.notes.iter().any(|n| n.contains("are not audited")) {
        lines.push(
            "not clean: kinds of an API group that could not be discovered were not read".into(),
        );
    }
    if let Some(n) = applied {
        lines.push(format!(
            "applied {} (wgpolicyk8s.io/v1alpha2, {REPORT_NAME})",
            plural(n, "policy report")
        ));
    }
    lines.join("\n") + "\n"
}
