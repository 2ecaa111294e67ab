//! The contract between the ck8s policy host and its WebAssembly guests.
//!
//! This crate is shared by both sides: the guest SDK (`ck8s-policy-sdk`, compiled to
//! `wasm32-unknown-unknown`) and the host runtime (`ck8s-policy-runtime`). It holds only
//! data types and constants, no I/O, so it builds for every target.
//!
//! # ABI, version 2 (a core WebAssembly module, no imports)
//!
//! A policy is a core module that imports nothing and exports:
//!
//! | export | signature | meaning |
//! |---|---|---|
//! | `memory` | memory | the guest's linear memory |
//! | `ck8s_abi_version` | `() -> i32` | [`ABI_VERSION`] (2), or 1 for the older JSON input |
//! | `ck8s_alloc` | `(len: i32) -> i32` | a guest buffer of `len` bytes the host writes input into |
//! | `ck8s_metadata` | `() -> i64` | JSON [`PolicyMetadata`], as a packed `(ptr << 32) \| len` |
//! | `ck8s_validate` | `(input_ptr, input_len, settings_ptr, settings_len: i32) -> i64` | binary input and JSON settings in, JSON [`Verdict`] out (packed); an empty output means allowed |
//!
//! Each evaluation runs in a fresh instance, so a guest may leak freely and keep no state.
//! The host writes the input and the settings into one buffer from a single `ck8s_alloc`
//! call (the settings follow the input), and reads an output of length 0 from `ck8s_validate`
//! as "allowed, nothing to report", so the common case encodes and parses no JSON at all.
//! Why a core module and not a component: the component model's canonical ABI adds about
//! 10 µs per call on this class of machine (the project brief's figure), a fifth of the
//! whole evaluation budget, while this interface is small enough to be written down exactly.
//!
//! ## Bundles: several policies in one module
//!
//! A module may carry several policies (the SDK's `export_policies!`; the built-ins ship so).
//! Its `ck8s_metadata` returns a JSON array of [`PolicyMetadata`], and instead of
//! `ck8s_validate` it exports `ck8s_validate_policy(index, input_ptr, input_len,
//! settings_ptr, settings_len: i32) -> i64`, `index` being the policy's position in that
//! array. The host runs every policy of a bundle that a request concerns in **one** fresh
//! instance per request, in order, with the input written once (each policy's settings
//! follow it) and a deadline per call; if a call fails (trap, deadline, memory), the policies
//! after it get a new instance. Each policy keeps its own settings, mode and outcome.
//!
//! ## Settings read once (optional exports)
//!
//! A module may also export `ck8s_configure(settings_ptr, settings_len: i32) -> i64` (a
//! bundle: `ck8s_configure_policy(index, settings_ptr, settings_len: i32) -> i64`). When it
//! does, the host calls it once per policy when it puts the policy in service, with the
//! policy's settings as JSON (defaults merged), every policy of a bundle in one instance, in
//! order. The output is as `ck8s_validate`'s: empty means the settings were taken, a
//! [`Verdict`] with `error` set says why not, and the policy is refused at load with that
//! message instead of failing every request. The host then keeps what the calls changed in the
//! instance's memory (its difference from a fresh instance's) and writes it into the fresh
//! instance of every evaluation, before the input; those evaluations pass settings of length
//! 0, which such a guest reads as "the settings given to configure". So a guest exporting it
//! must keep all it configures in its linear memory (no mutable global may differ after the
//! call: the SDK's guests only have the stack pointer, which every call restores), and must
//! still accept settings passed to `ck8s_validate` (a non-empty blob) as before. What it buys:
//! no guest parses its settings in every evaluation.
//!
//! ## The input: parsed once by the host
//!
//! The host parses the object's JSON **once per request**, natively, into the typed view
//! ([`Object`], with [`Object::parse`]: the same code the guests were built against), and
//! hands every policy the same binary input ([`codec`]): the request header (operation,
//! group/version/kind, namespace, name, dryRun), the raw object JSON exactly as the API server
//! sent it (only to policies whose [`PolicyMetadata::raw_object`] is set, for fields the view
//! skips; the others get it empty), and the encoded view. A guest
//! decodes the view in place (its strings borrow from the input buffer), so no policy pays
//! for parsing the object again. Settings stay JSON: they are small and policy-defined.
//!
//! If the object does not parse into the view for its kind (for example `containers` is not
//! a list), the host does not call the policies: each one inspecting the request reports the
//! guest error `<group/version/kind> does not parse: <reason>`, exactly what a guest parsing
//! the object itself would report.
//!
//! ## Version 1 (still accepted by the host)
//!
//! Same exports; `ck8s_validate` receives the JSON [`EvaluationRequest`] (with the raw object)
//! instead of the binary input and parses it itself. The host keeps running version-1
//! modules, so hand-written guests do not break; the SDK builds version 2.

use serde::{Deserialize, Serialize};
use std::fmt;

pub mod codec;
pub mod skim;
mod valid;
mod view;

pub use view::{
    Container, ContainerKind, ContainerPath, ContainerRef, EnvVar, Literal, LiteralPath, MetaEntry,
    MetaField, Object, ObjectMeta, ParseError, PodSpecRef, PodTemplateSpec, Spec, StrMap,
    reads_only_metadata,
};

/// Version of the ABI described in the crate docs. Bumped on any incompatible change.
pub const ABI_VERSION: i32 = 2;

/// The older ABI version the host still runs: JSON [`EvaluationRequest`] input.
pub const ABI_VERSION_JSON: i32 = 1;

/// Names of the exports a policy module must provide.
pub mod exports {
    pub const MEMORY: &str = "memory";
    pub const ABI_VERSION: &str = "ck8s_abi_version";
    pub const ALLOC: &str = "ck8s_alloc";
    pub const METADATA: &str = "ck8s_metadata";
    pub const VALIDATE: &str = "ck8s_validate";
    /// A bundle's `ck8s_validate`, with the policy's index first.
    pub const VALIDATE_POLICY: &str = "ck8s_validate_policy";
    /// Optional: reads a policy's settings once, before any evaluation (see "Settings read
    /// once" in the crate docs).
    pub const CONFIGURE: &str = "ck8s_configure";
    /// A bundle's `ck8s_configure`, with the policy's index first.
    pub const CONFIGURE_POLICY: &str = "ck8s_configure_policy";
}

/// Packs a guest pointer and length into the `i64` the ABI returns.
pub fn pack(ptr: u32, len: u32) -> i64 {
    (((ptr as u64) << 32) | len as u64) as i64
}

/// Splits a packed `i64` back into `(ptr, len)`.
pub fn unpack(packed: i64) -> (u32, u32) {
    let v = packed as u64;
    ((v >> 32) as u32, v as u32)
}

/// An admission operation, as `admission.k8s.io/v1` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub const ALL: [Operation; 4] = [Self::Create, Self::Update, Self::Delete, Self::Connect];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a policy inspects, in the shape of a `ValidatingWebhookConfiguration` rule.
///
/// The webhook configuration in `deploy/` is generated from these, so the API server sends
/// exactly what the policies judge; the host applies the same match to every request, so a
/// policy is never called for anything else (offline checks included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// API groups, `""` for the core group, `"*"` for all.
    pub api_groups: Vec<String>,
    /// API versions, `"*"` for all.
    pub api_versions: Vec<String>,
    /// Plural resource names (`deployments`), `"*"` for all. Subresources are never judged.
    pub resources: Vec<String>,
    pub operations: Vec<Operation>,
}

impl Rule {
    /// Whether a request for `group/version/resource` with `operation` falls under this rule.
    pub fn matches(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        operation: Operation,
    ) -> bool {
        fn any(list: &[String], value: &str) -> bool {
            list.iter().any(|v| v == "*" || v == value)
        }
        self.operations.contains(&operation)
            && any(&self.api_groups, group)
            && any(&self.api_versions, version)
            && any(&self.resources, resource)
    }
}

/// One setting a policy accepts, with its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingSpec {
    pub name: String,
    pub description: String,
    pub default: serde_json::Value,
}

/// What a policy says about itself (`ck8s_metadata`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyMetadata {
    /// Stable identifier, lower-kebab-case (`build-ref`); used in config, metrics and messages.
    pub name: String,
    /// The policy's own semantic version.
    pub version: String,
    /// One line for humans.
    pub description: String,
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub settings: Vec<SettingSpec>,
    /// Whether the policy reads the object's JSON as sent (`Request::raw_object` in the
    /// SDK), for fields the typed view skips. The host copies that JSON only into the
    /// instances of policies that set this.
    #[serde(default, rename = "rawObject", skip_serializing_if = "is_false")]
    pub raw_object: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl PolicyMetadata {
    /// The defaults of every setting, as a JSON object.
    pub fn default_settings(&self) -> serde_json::Map<String, serde_json::Value> {
        self.settings
            .iter()
            .map(|s| (s.name.clone(), s.default.clone()))
            .collect()
    }

    /// Whether any rule covers the request.
    pub fn inspects(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        operation: Operation,
    ) -> bool {
        self.rules
            .iter()
            .any(|r| r.matches(group, version, resource, operation))
    }
}

/// `group/version/kind` of the object under review.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

impl GroupVersionKind {
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        GroupVersionKind {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
        }
    }
}

/// What the host hands a policy: the parts of an `AdmissionRequest` a policy judges.
///
/// `object` is the new object (the one being created or updated), verbatim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationRequest<O> {
    pub operation: Operation,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub dry_run: bool,
    pub object: O,
}

/// Where a flagged value came from, so that messages never print a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum ValueSource {
    /// A literal in the manifest; safe to print.
    #[default]
    Literal,
    /// A Secret's `data`/`stringData`: the value is never printed.
    Secret,
}

/// One thing a policy found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Field path in kubectl's style: `spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]`.
    pub path: String,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The offending value, when it is safe to show (never for `ValueSource::Secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "is_literal")]
    pub source: ValueSource,
    /// How to fix it, in the runbook's words.
    pub fix: String,
}

fn is_literal(s: &ValueSource) -> bool {
    *s == ValueSource::Literal
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        match (&self.value, self.source) {
            (_, ValueSource::Secret) => write!(f, " (value from a Secret, not shown)")?,
            (Some(v), ValueSource::Literal) => write!(f, " (got {v:?})")?,
            (None, _) => {}
        }
        write!(f, "; fix: {}", self.fix)
    }
}

/// What `ck8s_validate` returns: no violations means allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    #[serde(default)]
    pub violations: Vec<Violation>,
    /// Set when the policy could not judge the object at all (for example it does not parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.violations.is_empty() && self.error.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrips_full_range() {
        for (p, l) in [(0, 0), (1, 2), (u32::MAX, u32::MAX), (0x8000_0000, 7)] {
            assert_eq!(unpack(pack(p, l)), (p, l));
        }
    }

    #[test]
    fn rule_matching_honours_wildcards_and_operations() {
        let r = Rule {
            api_groups: vec!["apps".into()],
            api_versions: vec!["*".into()],
            resources: vec!["deployments".into()],
            operations: vec![Operation::Create],
        };
        assert!(r.matches("apps", "v1", "deployments", Operation::Create));
        assert!(!r.matches("apps", "v1", "deployments", Operation::Update));
        assert!(!r.matches("", "v1", "deployments", Operation::Create));
        assert!(!r.matches("apps", "v1", "statefulsets", Operation::Create));
    }

    #[test]
    fn secret_values_never_display() {
        let v = Violation {
            path: "data.X".into(),
            message: "bad".into(),
            value: Some("hunter2".into()),
            source: ValueSource::Secret,
            fix: "do".into(),
        };
        assert!(!v.to_string().contains("hunter2"));
    }
}
