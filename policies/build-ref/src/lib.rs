//! build-ref: `CODEXK8S_BUILD_REF` must be a valid git ref or commit SHA.
//!
//! Runbook RB-CK8S-AISLOT-BUILD-0001, signature B: a ref carrying a CLI flag (`-b feature/x`)
//! makes `codegen-check` fail on `git checkout --detach` with `unknown switch 'b'`. This
//! policy rejects such a value wherever a literal can be written: container env (every pod
//! spec of every workload kind), ConfigMap `data`, Secret `data`/`stringData`.

mod refname;

use ck8s_policy_sdk::{Policy, PolicyMetadata, Request, SettingSpec, Violation};
use serde::Deserialize;

pub use refname::{RefProblem, check_ref, is_commit_sha};

pub struct BuildRef;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Variable/key names that carry a build ref.
    pub names: Vec<String>,
}

pub const FIX: &str = "set CODEXK8S_BUILD_REF to a valid git ref without CLI flags: main, feature/<branch> or a commit SHA (runbook RB-CK8S-AISLOT-BUILD-0001, mitigation B)";

impl Policy for BuildRef {
    type Settings = Settings;

    fn metadata() -> PolicyMetadata {
        PolicyMetadata {
            name: "build-ref".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "CODEXK8S_BUILD_REF must be a valid git ref or commit SHA, never a CLI flag".into(),
            rules: ck8s_policy_sdk::rules::env_and_config(),
            settings: vec![SettingSpec {
                name: "names".into(),
                description: "env variable / ConfigMap / Secret keys that hold a build ref".into(),
                default: serde_json::json!(["CODEXK8S_BUILD_REF"]),
            }],
            raw_object: false,
        }
    }

    fn validate(request: &Request<'_>, settings: &Settings) -> Vec<Violation> {
        let mut out = Vec::new();
        for name in &settings.names {
            for literal in request.object.literals_named(name) {
                if let Err(problem) = check_ref(&literal.value) {
                    out.push(
                        literal.violation(format!("{name} is not a valid git ref: {problem}"), FIX),
                    );
                }
            }
        }
        out
    }
}

#[cfg(not(feature = "bundled"))]
ck8s_policy_sdk::export_policy!(BuildRef);
