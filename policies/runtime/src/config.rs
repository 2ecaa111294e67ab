//! Per-policy settings and modes (`--config FILE`), shared by the webhook and the plugin.
//!
//! ```yaml
//! policies:
//!   build-ref:
//!     mode: deny          # deny (default) | warn | audit
//!     onError: fail       # fail (default): a policy error denies; ignore: it only warns
//!     settings:
//!       names: [CODEXK8S_BUILD_REF]
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a violation does to the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Reject the request (HTTP 403 in the review's status).
    #[default]
    Deny,
    /// Allow it, with warnings that kubectl prints.
    Warn,
    /// Allow it, with audit annotations and a log line.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Deny => "deny",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }
}

/// What a policy error (trap, timeout, memory) does to the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail closed: reject.
    #[default]
    Fail,
    /// Fail open: allow, with a warning.
    Ignore,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// The whole settings file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyConfig>,
}

impl SettingsFile {
    /// Parses YAML (or JSON, which is YAML).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(|e| format!("invalid policy config: {e}"))
    }

    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
