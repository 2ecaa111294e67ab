//! `CODEXK8S_BUILD_REF` judged by the build-ref WASM policy itself (the webhook's verdict).

use crate::exit::Failure;
use crate::names::*;
use ck8s_policy_api::Operation;
use ck8s_policy_runtime::{
    Decision, FindingKind, Limits, PolicySet, PolicySources, Runtime, Subject,
};

/// `Ok(())` if the policy accepts `value`; `Err(problems)` with the policy's messages otherwise.
pub fn judge(value: &str) -> Result<Result<(), Vec<String>>, Failure> {
    // One object, judged once by the built-ins: one instance slot, no epoch thread.
    let rt = Runtime::new(Limits::one_shot(), Runtime::default_artifact_dir())
        .map_err(|e| Failure::internal(format!("cannot start the policy runtime: {e}")))?;
    let sources = PolicySources::new().builtin(ck8s_builtin_policies::BUNDLE);
    let set = PolicySet::build(&rt, &sources)
        .map_err(|e| Failure::internal(format!("cannot load the built-in policies: {e}")))?;
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": RUNTIME_CONFIG},
        "data": {BUILD_REF: value},
    });
    let raw =
        serde_json::value::to_raw_value(&manifest).map_err(|e| Failure::internal(e.to_string()))?;
    let subject = Subject::from_manifest(&raw, Operation::Create)
        .map_err(|e| Failure::internal(e.to_string()))?;
    let decision = Decision::from_evaluation(&set.evaluate(&subject));
    let problems: Vec<String> = decision
        .denials
        .iter()
        .chain(&decision.warnings)
        .chain(&decision.audits)
        .filter(|f| f.policy == "build-ref")
        .map(|f| match &f.kind {
            FindingKind::Violation(v) => v.message.clone(),
            FindingKind::Error(e) => format!("policy error: {e}"),
            FindingKind::Vap { text, .. } => text.clone(),
        })
        .collect();
    Ok(if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_runbook_refs() {
        for (value, ok) in [
            ("main", true),
            ("feature/x", true),
            ("0123456789abcdef0123456789abcdef01234567", true),
            ("-b feature/x", false),
            ("--detach", false),
        ] {
            assert_eq!(super::judge(value).unwrap().is_ok(), ok, "{value:?}");
        }
    }
}
