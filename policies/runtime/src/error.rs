//! Every error of the runtime's public API, typed: callers match on what went wrong, and the
//! messages are the ones the webhook logs and the plugin prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the wasm engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the wasm engine: {0}")]
    Engine(String),
    #[error("cannot start the epoch thread: {0}")]
    EpochThread(#[source] std::io::Error),
}

/// Why a policy module could not be put into service.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{source_name}: not a valid WebAssembly module: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: imports {import}, but ck8s policies may import nothing (ABI v{abi})", abi = ck8s_policy_api::ABI_VERSION)]
    Import { source_name: String, import: String },
    #[error("{source_name}: missing or mistyped export `{export}` (see the ck8s policy ABI)")]
    Export { source_name: String, export: String },
    #[error("{source_name}: ABI version {found}, this host speaks {expected} (and {older})", older = ck8s_policy_api::ABI_VERSION_JSON)]
    AbiVersion {
        source_name: String,
        found: i32,
        expected: i32,
    },
    #[error("{source_name}: metadata: {message}")]
    Metadata {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {error}")]
    Start {
        source_name: String,
        error: PolicyError,
    },
    #[error("cannot read policies directory {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file of ValidatingAdmissionPolicies the API server would refuse, or one ck8s cannot
    /// judge exactly as it does; the error names the policy, the field path of the
    /// expression and the position in it.
    #[error("{}", vap_message(path, error))]
    Vap {
        path: PathBuf,
        #[source]
        error: Box<ck8s_policy_cel::LoadError>,
    },
}

/// The file first, unless the error already starts with it.
fn vap_message(path: &Path, error: &ck8s_policy_cel::LoadError) -> String {
    match error {
        ck8s_policy_cel::LoadError::Yaml { .. } | ck8s_policy_cel::LoadError::Document { .. } => {
            error.to_string()
        }
        _ => format!("{}: {error}", path.display()),
    }
}

/// Why one evaluation of one policy produced no verdict. The host is never affected: every
/// one of these ends only that instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy exceeded its time limit of {0:?}")]
    Timeout(Duration),
    #[error("policy exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("policy overflowed its stack")]
    StackOverflow,
    #[error("policy trapped: {0}")]
    Trap(String),
    #[error("policy output of {0} bytes exceeds the limit of {1} bytes")]
    OutputTooLarge(usize, usize),
    #[error("policy returned malformed output: {0}")]
    BadOutput(String),
    /// The policy ran but could not judge the object (it said so in its verdict).
    #[error("policy could not judge the object: {0}")]
    Guest(String),
    #[error("no instance slot free (too many concurrent evaluations): {0}")]
    Capacity(String),
}

impl PolicyError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::MemoryLimit(_) => "memory",
            Self::StackOverflow => "stack_overflow",
            Self::Trap(_) => "trap",
            Self::OutputTooLarge(..) => "output_too_large",
            Self::BadOutput(_) => "bad_output",
            Self::Guest(_) => "guest",
            Self::Capacity(_) => "capacity",
        }
    }
}

/// Why a settings file ([`crate::SettingsFile`]) is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML, or a field that is not part of the format (a typo is never ignored).
    #[error("{}invalid policy config: {message}", in_file(path.as_deref()))]
    Invalid {
        /// The file, when it was read from one.
        path: Option<PathBuf>,
        message: String,
    },
}

fn in_file(path: Option<&Path>) -> String {
    path.map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

/// Why policies and their configuration do not make a set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    #[error("two policies are called {name}: {first} and {second}")]
    DuplicateName {
        name: String,
        /// Where each came from.
        first: String,
        second: String,
    },
    /// A setting the policy does not declare (a typo would otherwise be ignored).
    #[error("policy {policy} has no setting {setting:?} (known: {})", known.join(", "))]
    UnknownSetting {
        policy: String,
        setting: String,
        known: Vec<String>,
    },
    /// The policy refused its settings when they were handed to it, once, at load (a guest
    /// that reads them once: `ck8s_configure`), or could not take them.
    #[error("policy {policy} does not take its settings: {reason}")]
    Settings { policy: String, reason: String },
    #[error("config names policy {policy:?}, which is not loaded (loaded: {})", loaded.join(", "))]
    NotLoaded { policy: String, loaded: Vec<String> },
    /// A VAP's mode comes from its bindings' `validationActions`, its error handling from
    /// its `failurePolicy`, its settings from params: only `allowExistingViolations` is
    /// ck8s's to set.
    #[error(
        "config sets {field} for {policy}, a ValidatingAdmissionPolicy: its bindings' validationActions, its failurePolicy and its params say that; only allowExistingViolations may be set"
    )]
    NotForVap { policy: String, field: &'static str },
}

/// Why a set could not be built from its sources ([`crate::PolicySet::build`]).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Set(#[from] SetError),
}

/// Why a manifest cannot be judged ([`crate::Subject::from_manifest`]).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a Kubernetes object: {0}")]
    NotAnObject(#[source] serde_json::Error),
    #[error("object has no apiVersion")]
    NoApiVersion,
    #[error("object has no kind")]
    NoKind,
}

/// An object that does not parse as its kind, with the message every policy would give
/// (`apps/v1/Deployment does not parse: ...`): [`crate::Subject::input`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unparsable(pub String);
