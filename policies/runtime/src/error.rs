use std::time::Duration;

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
    #[error("{0}")]
    Io(String),
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
