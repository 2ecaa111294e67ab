//! The host runtime for ck8s policies, shared by the admission webhook and the plugin.
//!
//! What it is:
//!
//! - [`Runtime`]: one wasmtime [`wasmtime::Engine`] per process, tuned for many short
//!   evaluations (pooling allocator sized by [`Limits`], epoch deadlines, a memory cap per
//!   instance), and a cache of precompiled artifacts so a policy is compiled once per
//!   machine, not once per start (`engine.rs`, which knows nothing of policies).
//! - [`LoadedPolicy`]: a validated policy module with its metadata, ready to instantiate
//!   (`policy.rs`, on top of the engine).
//! - [`PolicySources`] and [`PolicySet::build`]: the one way a set is assembled from its
//!   sources (built-in modules handed in as bytes, directories of policy files, a settings
//!   file), for the webhook's start and reloads and the plugin alike (`sources.rs`).
//! - [`PolicySet`]: the policies in service with their settings and modes; it applies the
//!   request rules every policy shares and evaluates each policy in a fresh, isolated
//!   instance, ratcheting an UPDATE's violations against its old object (`ratchet.rs`).
//! - [`Subject`]: what is judged, from an `AdmissionReview` ([`admission`]) or a manifest.
//! - [`Decision`]: what the modes make of the outcomes (deny / warn / audit / errors).
//! - Typed errors for every fallible call ([`StartError`], [`LoadError`], [`ConfigError`],
//!   [`SetError`], [`BuildError`], [`ManifestError`], [`PolicyError`]).
//!
//! What it is not: it holds no policy of its own (the built-in policies are
//! `ck8s-builtin-policies`, only a dev-dependency here, for the tests), and it does no
//! networking, no file watching and no printing; those belong to the binaries.

pub mod admission;
mod artifacts;
mod config;
mod decision;
mod engine;
mod error;
pub mod kinds;
mod policy;
mod ratchet;
mod resident;
mod set;
mod sources;
mod stores;
mod subject;
mod vap;

pub use ck8s_policy_api as api;
pub use ck8s_policy_cel as cel;
pub use config::{Mode, OnError, PolicyConfig, SettingsFile};
pub use decision::{Decision, Finding, FindingKind};
pub use engine::{Limits, Runtime};
pub use error::{
    BuildError, ConfigError, LoadError, ManifestError, PolicyError, SetError, StartError,
    Unparsable,
};
pub use policy::{ConfiguredMemory, LoadedPolicy, PolicySource};
pub use set::{Evaluation, Origin, Outcome, OutcomeResult, PolicySet};
pub use sources::{ConfigSource, PolicySources, Source};
pub use subject::{NotJudged, Subject};
pub use vap::{ClusterReads, VapNeeds};
