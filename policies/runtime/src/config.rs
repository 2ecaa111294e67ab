//! Per-policy settings and modes (`--config FILE`), shared by the webhook and the plugin.
//!
//! ```yaml
//! policies:
//!   build-ref:
//!     mode: deny          # deny (default) | warn | audit
//!     onError: fail       # fail (default): a policy error denies; ignore: it only warns
//!     allowExistingViolations: true  # true (default): an UPDATE keeps what the old object
//!                                    # already violated; false: every violation denies
//!     settings:
//!       names: [CODEXK8S_BUILD_REF]
//! ```

use crate::error::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub on_error: OnError,
    /// Ratcheting, for `deny` policies: an UPDATE is denied only for violations the old
    /// object did not already have; the kept ones are allowed with a warning. Controllers
    /// rewrite objects that predate a policy (the Deployment controller scales a
    /// ReplicaSet whose template it cannot change), and a runbook mitigation must go through
    /// on a ConfigMap that still holds another bad value. `false`: every violation denies.
    #[serde(default = "yes")]
    pub allow_existing_violations: bool,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            mode: Mode::default(),
            on_error: OnError::default(),
            allow_existing_violations: true,
            settings: Default::default(),
        }
    }
}

/// The whole settings file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsFile {
    #[serde(default, deserialize_with = "policies_or_empty")]
    pub policies: BTreeMap<String, PolicyConfig>,
    /// Users whose writes of controller-owned objects inherit the owner's violations
    /// (allowed with a warning, for policies with `allowExistingViolations`): the workload
    /// controllers, which copy a template their owner already carries. A Pod the ReplicaSet
    /// controller creates from a template that was admitted, or kept, on the Deployment must
    /// not be denied for that template: that would stop the Deployment from scaling.
    #[serde(
        default = "default_trusted_controllers",
        deserialize_with = "null_is_empty"
    )]
    pub trusted_controllers: Vec<String>,
}

/// `key:` with nothing after it (a YAML null) reads as empty, not as an error.
fn null_is_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// [`null_is_empty`] for the policies and for each policy (`a:` alone: its defaults).
fn policies_or_empty<'de, D>(d: D) -> Result<BTreeMap<String, PolicyConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let policies: BTreeMap<String, Option<PolicyConfig>> = null_is_empty(d)?;
    Ok(policies
        .into_iter()
        .map(|(name, config)| (name, config.unwrap_or_default()))
        .collect())
}

impl Default for SettingsFile {
    fn default() -> Self {
        SettingsFile {
            policies: BTreeMap::new(),
            trusted_controllers: default_trusted_controllers(),
        }
    }
}

/// kube-controller-manager's identities: its own user, or (with
/// `--use-service-account-credentials`, as kubeadm runs it) each workload controller's
/// ServiceAccount in kube-system.
pub fn default_trusted_controllers() -> Vec<String> {
    let mut users = vec!["system:kube-controller-manager".to_string()];
    users.extend(
        [
            "deployment-controller",
            "replicaset-controller",
            "statefulset-controller",
            "daemon-set-controller",
            "job-controller",
            "cronjob-controller",
        ]
        .iter()
        .map(|c| format!("system:serviceaccount:kube-system:{c}")),
    );
    users
}

impl SettingsFile {
    /// Parses YAML (or JSON, which is YAML).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Invalid {
            path: None,
            message: e.without_snippet().to_string(),
        })
    }

    /// Reads a settings file; its errors name it.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Invalid { message, .. } => ConfigError::Invalid {
                path: Some(path.to_path_buf()),
                message,
            },
            read => read,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_violations_are_allowed_unless_configured_off() {
        assert!(PolicyConfig::default().allow_existing_violations);
        let file = SettingsFile::parse(
            "policies:\n  a: { mode: deny }\n  b: { allowExistingViolations: false }\n",
        )
        .unwrap();
        assert!(file.policies["a"].allow_existing_violations);
        assert!(!file.policies["b"].allow_existing_violations);
        assert!(SettingsFile::parse("policies:\n  a: { allowExistingViolation: true }\n").is_err());
    }

    #[test]
    fn defaults_and_refusals() {
        // Empty is the defaults, the workload controllers trusted.
        let empty = SettingsFile::parse("  \n").unwrap();
        assert_eq!(empty, SettingsFile::default());
        assert!(
            empty
                .trusted_controllers
                .contains(&"system:serviceaccount:kube-system:replicaset-controller".to_string())
        );
        // Keys with nothing after them are empty, as a YAML null always read here.
        let nulls = SettingsFile::parse("policies:\ntrustedControllers:\n").unwrap();
        assert!(nulls.policies.is_empty() && nulls.trusted_controllers.is_empty());
        let bare = SettingsFile::parse("policies:\n  a:\n  b: { settings: }\n").unwrap();
        assert_eq!(bare.policies["a"], PolicyConfig::default());
        assert!(bare.policies["b"].settings.is_empty());
        assert_eq!(
            SettingsFile::parse("trustedControllers: []")
                .unwrap()
                .trusted_controllers,
            Vec::<String>::new()
        );
        let file = SettingsFile::parse(
            "policies: { a: { mode: warn, onError: ignore, settings: { names: [X] } } }",
        )
        .unwrap();
        let a = &file.policies["a"];
        assert_eq!((a.mode, a.on_error), (Mode::Warn, OnError::Ignore));
        assert_eq!(a.settings["names"], serde_json::json!(["X"]));
        // An unknown mode, an unknown field: refused, with the format's message.
        for text in ["policies: { a: { mode: block } }", "polices: {}"] {
            let err = SettingsFile::parse(text).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { path: None, .. }),
                "{err:?}"
            );
            assert!(
                err.to_string().starts_with("invalid policy config: "),
                "{err}"
            );
        }
    }
}
