//! What the modes make of the outcomes: one place, for the webhook and the plugin alike.

use crate::config::{Mode, OnError};
use crate::set::{Evaluation, Origin, OutcomeResult};
use ck8s_policy_api::Violation;
use std::fmt;

/// One violation, or one policy error, attributed to its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub policy: String,
    pub kind: FindingKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingKind {
    Violation(Violation),
    /// The policy could not judge; the text says why.
    Error(String),
    /// A ValidatingAdmissionPolicy's failed validation (or expression error under
    /// `failurePolicy: Fail`), worded as the API server words it (`ValidatingAdmissionPolicy
    /// 'P' denied request: ...`, `Validation failed for ValidatingAdmissionPolicy 'P' with
    /// binding 'B': ...`).
    Vap {
        /// The field path of the expression (`spec.validations[0].expression`).
        path: String,
        text: String,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FindingKind::Violation(v) => write!(f, "[{}] {v}", self.policy),
            FindingKind::Error(e) => write!(f, "[{}] policy error: {e}", self.policy),
            FindingKind::Vap { text, .. } => f.write_str(text),
        }
    }
}

/// The verdict on a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Violations of `deny` policies and errors of `onError: fail` policies.
    pub denials: Vec<Finding>,
    /// Violations of `warn` policies and errors of `onError: ignore` policies.
    pub warnings: Vec<Finding>,
    /// Violations of `audit` policies.
    pub audits: Vec<Finding>,
    /// Violations of `deny` policies that the old object of an UPDATE already had
    /// (ratcheting): allowed, each with a warning ([`Decision::warning_texts`]).
    pub kept: Vec<Finding>,
    /// `Some(Kind/name)` when the kept violations are inherited from the object's
    /// controlling owner, written by its controller (not carried over from an old object).
    pub inherited_from: Option<String>,
    /// ValidatingAdmissionPolicies' `auditAnnotations`: `policy/key` → value.
    pub annotations: Vec<(String, String)>,
}

impl Decision {
    pub fn from_evaluation(evaluation: &Evaluation) -> Self {
        let mut d = Decision {
            allowed: true,
            ..Default::default()
        };
        let Evaluation::Judged(outcomes) = evaluation else {
            return d;
        };
        for o in outcomes {
            if o.inherited_from.is_some() {
                d.inherited_from.clone_from(&o.inherited_from);
            }
            let finding = |v: &Violation| Finding {
                policy: o.policy.clone(),
                kind: match o.origin {
                    Origin::Wasm => FindingKind::Violation(v.clone()),
                    Origin::Vap { .. } => FindingKind::Vap {
                        path: v.path.clone(),
                        text: v.message.clone(),
                    },
                },
            };
            d.kept.extend(o.kept.iter().map(finding));
            if let Origin::Vap { annotations, .. } = &o.origin {
                d.annotations.extend(annotations.iter().cloned());
            }
            match &o.result {
                OutcomeResult::NotInspected | OutcomeResult::Allowed => {}
                OutcomeResult::Violations(vs) => {
                    let bucket = match o.mode {
                        Mode::Deny => &mut d.denials,
                        Mode::Warn => &mut d.warnings,
                        Mode::Audit => &mut d.audits,
                    };
                    bucket.extend(vs.iter().map(finding));
                    if matches!(
                        o.origin,
                        Origin::Vap {
                            also_audit: true,
                            ..
                        }
                    ) {
                        d.audits.extend(vs.iter().map(finding));
                    }
                }
                OutcomeResult::Error(e) => {
                    let f = Finding {
                        policy: o.policy.clone(),
                        kind: FindingKind::Error(e.to_string()),
                    };
                    match o.on_error {
                        OnError::Fail => d.denials.push(f),
                        OnError::Ignore => d.warnings.push(f),
                    }
                }
            }
        }
        d.allowed = d.denials.is_empty();
        d
    }

    /// The warnings kubectl prints, kept violations first: they say why an object that
    /// violates a policy was let through. A Secret's value is never in them.
    pub fn warning_texts(&self) -> Vec<String> {
        let why = match &self.inherited_from {
            Some(owner) => format!(" (inherited from {owner}, written by its controller)"),
            None => String::new(),
        };
        self.kept
            .iter()
            .map(|f| format!("existing violation kept{why}: {f}"))
            .chain(self.warnings.iter().map(Finding::to_string))
            .collect()
    }

    /// The denial message: one line per finding, policy, field path, value and fix.
    pub fn denial_message(&self) -> String {
        let mut s = format!(
            "ck8s denied the request ({} violation{}):",
            self.denials.len(),
            if self.denials.len() == 1 { "" } else { "s" }
        );
        for f in &self.denials {
            s.push_str("\n- ");
            s.push_str(&f.to_string());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::PolicyError;
    use crate::set::Outcome;
    use crate::subject::NotJudged;
    use ck8s_policy_api::{Operation, ValueSource};
    use std::time::Duration;

    fn violation(path: &str, value: &str) -> Violation {
        Violation {
            path: path.into(),
            message: "bad".into(),
            value: Some(value.into()),
            source: ValueSource::Literal,
            fix: "fix".into(),
        }
    }

    fn outcome(policy: &str, mode: Mode, on_error: OnError, result: OutcomeResult) -> Outcome {
        Outcome {
            policy: policy.into(),
            mode,
            on_error,
            result,
            kept: vec![],
            inherited_from: None,
            elapsed: Duration::ZERO,
            origin: Origin::Wasm,
        }
    }

    #[test]
    fn each_mode_and_error_policy_has_its_bucket() {
        let v = |p| OutcomeResult::Violations(vec![violation(p, "x")]);
        let error = OutcomeResult::Error(PolicyError::StackOverflow);
        let eval = Evaluation::Judged(vec![
            outcome("a", Mode::Deny, OnError::Fail, v("a.path")),
            outcome("b", Mode::Warn, OnError::Fail, v("b.path")),
            outcome("c", Mode::Audit, OnError::Fail, v("c.path")),
            outcome("d", Mode::Deny, OnError::Fail, error.clone()),
            outcome("e", Mode::Deny, OnError::Ignore, error),
            outcome("f", Mode::Deny, OnError::Fail, OutcomeResult::Allowed),
            outcome("g", Mode::Deny, OnError::Fail, OutcomeResult::NotInspected),
        ]);
        let d = Decision::from_evaluation(&eval);
        assert!(!d.allowed);
        let policies = |fs: &[Finding]| fs.iter().map(|f| f.policy.clone()).collect::<Vec<_>>();
        assert_eq!(policies(&d.denials), ["a", "d"]);
        assert_eq!(policies(&d.warnings), ["b", "e"]);
        assert_eq!(policies(&d.audits), ["c"]);
        assert_eq!(
            d.denial_message(),
            format!(
                "ck8s denied the request (2 violations):\n- [a] {}\n- [d] policy error: policy overflowed its stack",
                violation("a.path", "x")
            )
        );
        assert_eq!(
            d.warning_texts()[1],
            "[e] policy error: policy overflowed its stack"
        );
    }

    #[test]
    fn what_is_not_judged_or_only_kept_is_allowed_with_its_warnings() {
        let not_judged = Evaluation::NotJudged(NotJudged::Operation(Operation::Delete));
        assert_eq!(
            Decision::from_evaluation(&not_judged),
            Decision {
                allowed: true,
                ..Default::default()
            }
        );
        let mut kept = outcome("a", Mode::Deny, OnError::Fail, OutcomeResult::Allowed);
        kept.kept = vec![violation("data.REF", "-b x")];
        let d = Decision::from_evaluation(&Evaluation::Judged(vec![kept.clone()]));
        assert!(d.allowed && d.denials.is_empty());
        assert_eq!(d.kept.len(), 1);
        let shown = violation("data.REF", "-b x").to_string();
        assert_eq!(
            d.warning_texts(),
            [format!("existing violation kept: [a] {shown}")]
        );
        kept.inherited_from = Some("ReplicaSet/web-7d9f".into());
        let d = Decision::from_evaluation(&Evaluation::Judged(vec![kept]));
        assert_eq!(d.inherited_from.as_deref(), Some("ReplicaSet/web-7d9f"));
        assert_eq!(
            d.warning_texts(),
            [format!(
                "existing violation kept (inherited from ReplicaSet/web-7d9f, written by its controller): [a] {shown}"
            )]
        );
        let one = outcome(
            "a",
            Mode::Deny,
            OnError::Fail,
            OutcomeResult::Violations(vec![violation("p", "v")]),
        );
        let d = Decision::from_evaluation(&Evaluation::Judged(vec![one]));
        assert!(
            d.denial_message()
                .starts_with("ck8s denied the request (1 violation):\n- [a] p: ")
        );
    }
}
