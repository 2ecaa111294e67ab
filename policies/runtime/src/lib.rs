//! The host runtime for ck8s policies, shared by the admission webhook and the plugin.
//!
//! - [`Runtime`]: one wasmtime [`wasmtime::Engine`] per process, tuned for many short
//!   evaluations (pooling allocator, epoch deadlines, a memory cap per instance), and a cache
//!   of precompiled artifacts so a policy is compiled once per machine, not once per start.
//! - [`LoadedPolicy`]: a validated policy module with its metadata, ready to instantiate.
//! - [`PolicySet`]: the policies in service with their settings and modes; it applies the
//!   request rules every policy shares and evaluates each policy in a fresh, isolated instance.
//! - [`Subject`]: what is judged, from an `AdmissionReview` ([`admission`]) or a manifest.
//! - [`Decision`]: what the modes make of the outcomes (deny / warn / audit / errors).
//!
//! It does no networking and no file watching; those belong to the binaries.

pub mod admission;
mod artifacts;
mod config;
mod decision;
mod engine;
mod error;
pub mod kinds;
mod policy;
mod set;
mod subject;

pub use ck8s_policy_api as api;
pub use config::{Mode, OnError, PolicyConfig, SettingsFile};
pub use decision::{Decision, Finding, FindingKind};
pub use engine::{Limits, Runtime};
pub use error::{LoadError, PolicyError};
pub use policy::{LoadedPolicy, PolicySource};
pub use set::{Evaluation, Outcome, OutcomeResult, PolicySet};
pub use subject::{NotJudged, Subject};
