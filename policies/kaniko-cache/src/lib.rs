//! kaniko-cache: the Kaniko layer cache must stay off.
//!
//! Production Runbook, "Build fails with MANIFEST_UNKNOWN on retrieving image from cache", and
//! RB-CK8S-AISLOT-BUILD-0001 signature A: after registry GC a cached tag can point at a
//! manifest that is gone. `CODEXK8S_KANIKO_CACHE_ENABLED=false` is the safe default; this
//! policy rejects turning it back on (env, ConfigMap, Secret) and Kaniko executor containers
//! started with `--cache` / `--cache=true`.

use ck8s_policy_sdk::{
    Policy, PolicyMetadata, Request, SettingSpec, Violation, ViolationExt, violation,
};
use serde::Deserialize;

pub struct KanikoCache;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Variable/key names that switch the cache on.
    pub names: Vec<String>,
    /// Image path fragment that identifies a Kaniko executor.
    pub executor_image: String,
}

pub const FIX_ENV: &str = "set CODEXK8S_KANIKO_CACHE_ENABLED=false in codex-k8s-runtime (the safe default; runbook: Build fails with MANIFEST_UNKNOWN)";
pub const FIX_FLAG: &str = "remove --cache (or pass --cache=false): a re-enabled Kaniko cache brings back MANIFEST_UNKNOWN after registry GC";

/// `true`, `1`, `yes`, `on` in any case, surrounding spaces ignored.
pub fn is_truthy(value: &str) -> bool {
    let v = value.trim();
    ["true", "1", "yes", "on"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
}

/// Whether a Kaniko argument turns the cache on. Kaniko's flags are Go bools: `--cache` alone
/// or `--cache=<value>` with a value `strconv.ParseBool` reads as true.
pub fn is_cache_flag_on(arg: &str) -> bool {
    match arg.strip_prefix("--cache") {
        Some("") => true,
        Some(rest) => match rest.strip_prefix('=') {
            Some(v) => matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"),
            None => false, // --cache-repo, --cache-dir, --cache-ttl...: other flags
        },
        None => false,
    }
}

/// `haystack.contains(needle)` for the short strings of an image reference: a scan for the
/// first byte, then a compare. `str::contains` builds a Two-Way searcher per call, which costs
/// more than the search itself here (it was a visible part of this policy's time in wasm).
pub fn contains_fragment(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    let Some((&first, rest)) = n.split_first() else {
        return true;
    };
    h.len() >= n.len()
        && (0..=h.len() - n.len()).any(|i| h[i] == first && &h[i + 1..i + n.len()] == rest)
}

impl Policy for KanikoCache {
    type Settings = Settings;

    fn metadata() -> PolicyMetadata {
        PolicyMetadata {
            name: "kaniko-cache".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "the Kaniko cache must stay disabled (CODEXK8S_KANIKO_CACHE_ENABLED=false, no --cache)".into(),
            rules: ck8s_policy_sdk::rules::env_and_config(),
            settings: vec![
                SettingSpec {
                    name: "names".into(),
                    description: "env variable / ConfigMap / Secret keys that enable the cache".into(),
                    default: serde_json::json!(["CODEXK8S_KANIKO_CACHE_ENABLED"]),
                },
                SettingSpec {
                    name: "executorImage".into(),
                    description: "image path fragment of the Kaniko executor".into(),
                    default: serde_json::json!("kaniko-project/executor"),
                },
            ],
            raw_object: false,
        }
    }

    fn validate(request: &Request<'_>, s: &Settings) -> Vec<Violation> {
        let mut out = Vec::new();
        for name in &s.names {
            for literal in request.object.literals_named(name) {
                if is_truthy(&literal.value) {
                    out.push(
                        literal.violation(format!("{name} re-enables the Kaniko cache"), FIX_ENV),
                    );
                }
            }
        }
        for c in request.object.containers() {
            let image = c.container.image.as_deref().unwrap_or("");
            if !contains_fragment(image, &s.executor_image) {
                continue;
            }
            for (field, list) in [
                ("command", &c.container.command),
                ("args", &c.container.args),
            ] {
                for (i, arg) in list.iter().enumerate() {
                    if is_cache_flag_on(arg) {
                        out.push(
                            violation(
                                format!("{}.{field}[{i}]", c.path),
                                "Kaniko executor started with the cache enabled",
                            )
                            .value(arg.as_ref())
                            .fix(FIX_FLAG),
                        );
                    }
                }
            }
        }
        out
    }
}

#[cfg(not(feature = "bundled"))]
ck8s_policy_sdk::export_policy!(KanikoCache);
