//! legacy-labels: no label or annotation under the legacy `codexk8s.io/` prefix.
//!
//! Production Runbook, "Legacy runtime keys must not appear after Day3 rollout": the platform
//! moved to `codex-k8s.dev/...`; objects (and the pod templates inside them) still carrying
//! `codexk8s.io/managed-by`, `namespace-purpose`, `runtime-mode`, `project-id`, `run-id`,
//! `correlation-id` or any other key under that prefix are rejected with the replacement key.

use ck8s_policy_sdk::{
    Policy, PolicyMetadata, Request, SettingSpec, Violation, ViolationExt, violation,
};
use serde::Deserialize;

pub struct LegacyLabels;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub legacy_prefix: String,
    pub replacement_prefix: String,
}

/// The key to use instead of a legacy one, or `None` if `key` is not legacy.
///
/// Only the exact prefix counts: `notcodexk8s.io/x` or `example.com/codexk8s.io` are other
/// domains that merely contain the text.
pub fn replacement(key: &str, legacy_prefix: &str, replacement_prefix: &str) -> Option<String> {
    key.strip_prefix(legacy_prefix)
        .map(|rest| format!("{replacement_prefix}{rest}"))
}

impl Policy for LegacyLabels {
    type Settings = Settings;

    fn metadata() -> PolicyMetadata {
        PolicyMetadata {
            name: "legacy-labels".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "labels and annotations must use codex-k8s.dev/, not the legacy codexk8s.io/ prefix"
                    .into(),
            rules: ck8s_policy_sdk::rules::all_objects(),
            settings: vec![
                SettingSpec {
                    name: "legacyPrefix".into(),
                    description: "key prefix that is no longer allowed".into(),
                    default: serde_json::json!("codexk8s.io/"),
                },
                SettingSpec {
                    name: "replacementPrefix".into(),
                    description: "prefix to use instead".into(),
                    default: serde_json::json!("codex-k8s.dev/"),
                },
            ],
            raw_object: false,
        }
    }

    fn validate(request: &Request<'_>, s: &Settings) -> Vec<Violation> {
        request
            .object
            .metadata_entries_matching(|_, key| key.starts_with(s.legacy_prefix.as_str()))
            .into_iter()
            .filter_map(|entry| {
                let new_key = replacement(entry.key, &s.legacy_prefix, &s.replacement_prefix)?;
                Some(
                    violation(
                        entry.path,
                        format!(
                            "legacy {} key {} (the platform moved to {})",
                            entry.field.as_str(),
                            entry.key,
                            s.replacement_prefix
                        ),
                    )
                    .value(entry.value)
                    .fix(format!(
                        "rename {} {} to {}",
                        entry.field.as_str(),
                        entry.key,
                        new_key
                    )),
                )
            })
            .collect()
    }
}

#[cfg(not(feature = "bundled"))]
ck8s_policy_sdk::export_policy!(LegacyLabels);
