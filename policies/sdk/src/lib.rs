//! The guest SDK for ck8s policies.
//!
//! A policy is a type implementing [`Policy`] plus one [`export_policy!`] line; the SDK does
//! the rest: the ABI exports, decoding the request and the typed, borrowed view of the object
//! ([`Object`], defined in `ck8s_policy_api` and parsed once by the host; see the ABI there),
//! defaulting settings, and the walks every policy needs with field paths in kubectl's style:
//!
//! - [`Object::pod_specs`] / [`Object::containers`]: every pod spec of every pod-bearing kind
//!   (Pod, PodTemplate, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController,
//!   Job, CronJob) and every container in it (containers, initContainers, ephemeralContainers);
//! - [`Object::env_literals`]: `env[].value` literals (`valueFrom` is a reference, not a literal);
//! - [`Object::config_entries`]: ConfigMap `data`, Secret `data` (decoded) and `stringData`;
//! - [`Object::literals_named`]: every literal an environment variable of that name can get
//!   (names are compared before any path is formatted);
//! - [`Object::metadata_entries`] / [`Object::metadata_entries_matching`]: labels and
//!   annotations of the object and its templates (the latter formats paths only for matches).
//!
//! It is not a general Kubernetes model: fields no walker needs are skipped while parsing,
//! which is what keeps an evaluation at tens of microseconds. A policy that needs more sets
//! `raw_object: true` in its metadata and parses [`Request::raw_object`] itself.
//!
//! With the `testing` helpers the same code runs natively, so rule tables are ordinary
//! `cargo test` cases.

mod abi;
#[cfg(target_arch = "wasm32")]
mod alloc;
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: alloc::Bump = alloc::Bump::new();
pub mod rules;
pub mod testing;

#[doc(hidden)]
pub use abi::__run;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use abi::__run_bundled;
#[doc(hidden)]
pub use abi::{__alloc, __configure, __leak_output};
pub use ck8s_policy_api::{
    Container, ContainerKind, ContainerPath, ContainerRef, EnvVar, GroupVersionKind, Literal,
    LiteralPath, MetaEntry, MetaField, Object, ObjectMeta, Operation, PodSpecRef, PodTemplateSpec,
    PolicyMetadata, Rule, SettingSpec, Spec, StrMap, ValueSource, Verdict, Violation,
};

use serde::de::DeserializeOwned;
pub use serde_json;
use serde_json::value::RawValue;

/// A ck8s policy: its metadata and a pure decision over one request.
pub trait Policy {
    /// The policy's settings; missing fields take the defaults declared in [`Policy::metadata`]
    /// (the host fills them in), so a `#[serde(default)]` is only needed for native tests.
    /// Deserialized once, when the host puts the policy in service (`ck8s_configure`), and
    /// kept for every request: hence `'static` (owned data).
    type Settings: DeserializeOwned + 'static;

    fn metadata() -> PolicyMetadata;

    /// Everything wrong with the request's object; empty means allowed.
    fn validate(request: &Request<'_>, settings: &Self::Settings) -> Vec<Violation>;
}

/// Why a JSON request (ABI version 1) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request does not parse: {0}")]
    Request(serde_json::Error),
    #[error(transparent)]
    Object(#[from] ck8s_policy_api::ParseError),
}

/// The request a policy judges, with the object parsed into a typed view.
pub struct Request<'a> {
    pub operation: Operation,
    pub kind: GroupVersionKind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub dry_run: bool,
    pub object: Object<'a>,
    raw_object: &'a [u8],
}

impl<'a> Request<'a> {
    /// Decodes the binary input of ABI version 2 (what the host sends; see
    /// [`ck8s_policy_api::codec`]): the view was parsed by the host, nothing is parsed here.
    pub fn decode(input: &'a [u8]) -> Result<Self, ck8s_policy_api::codec::DecodeError> {
        let input = ck8s_policy_api::codec::decode_input(input)?;
        let mut request = Request::new(input.header, input.object);
        request.raw_object = input.raw_object;
        Ok(request)
    }

    /// A request around an object already parsed into the view (natively, with
    /// [`Object::parse`]), without the raw object.
    pub fn new(header: ck8s_policy_api::codec::Header<'a>, object: Object<'a>) -> Self {
        Request {
            operation: header.operation,
            kind: header.kind,
            namespace: header.namespace,
            name: header.name,
            dry_run: header.dry_run,
            object,
            raw_object: &[],
        }
    }

    /// Parses a JSON [`ck8s_policy_api::EvaluationRequest`] (the input of ABI version 1),
    /// object view included. Natively this is the whole per-request parse.
    pub fn parse(json: &'a [u8]) -> Result<Self, RequestError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            operation: Operation,
            #[serde(default)]
            kind: GroupVersionKind,
            #[serde(default, borrow)]
            namespace: Option<&'a str>,
            #[serde(default, borrow)]
            name: Option<&'a str>,
            #[serde(default)]
            dry_run: bool,
            #[serde(borrow)]
            object: &'a RawValue,
        }
        let wire: Wire<'a> = serde_json::from_slice(json).map_err(RequestError::Request)?;
        let object = Object::parse(&wire.kind, wire.object.get())?;
        Ok(Request {
            operation: wire.operation,
            kind: wire.kind,
            namespace: wire.namespace.unwrap_or(""),
            name: wire.name.unwrap_or(""),
            dry_run: wire.dry_run,
            object,
            raw_object: wire.object.get().as_bytes(),
        })
    }

    /// The object exactly as the API server sent it, for fields the typed view skips.
    ///
    /// `None` unless the policy's metadata sets `raw_object: true`: the host copies this JSON
    /// only into the instances of policies that read it.
    pub fn raw_object(&self) -> Option<&'a str> {
        ck8s_policy_api::codec::raw_object_text(self.raw_object)
    }
}

/// A violation with the builder methods policies use.
pub fn violation(path: impl Into<String>, message: impl Into<String>) -> Violation {
    Violation {
        path: path.into(),
        message: message.into(),
        value: None,
        source: ValueSource::Literal,
        fix: String::new(),
    }
}

/// Builder methods on [`Violation`] for policy code.
pub trait ViolationExt {
    fn fix(self, fix: impl Into<String>) -> Self;
    fn value(self, value: impl Into<String>) -> Self;
}

impl ViolationExt for Violation {
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = fix.into();
        self
    }
    fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }
}

/// Exports a [`Policy`] through the ck8s ABI. Put it once in the policy crate's `lib.rs`.
///
/// ```ignore
/// ck8s_policy_sdk::export_policy!(NoLatestTag);
/// ```
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        mod __ck8s_exports {
            #[allow(unused_imports)]
            use super::*;

            $crate::__common_exports!();

            #[unsafe(no_mangle)]
            pub extern "C" fn ck8s_metadata() -> i64 {
                let json = $crate::__to_json(&<$policy as $crate::Policy>::metadata());
                $crate::__leak_output(json)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn ck8s_validate(
                req_ptr: i32,
                req_len: i32,
                settings_ptr: i32,
                settings_len: i32,
            ) -> i64 {
                // SAFETY: the host wrote the input and the settings where it says.
                let (req, settings) =
                    unsafe { $crate::__buffers(req_ptr, req_len, settings_ptr, settings_len) };
                $crate::__verdict_output($crate::__run::<$policy>(req, settings))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn ck8s_configure(settings_ptr: i32, settings_len: i32) -> i64 {
                // SAFETY: the host wrote the settings where it says.
                let settings = unsafe { $crate::__buffer(settings_ptr, settings_len) };
                $crate::__verdict_output($crate::__configure::<$policy>(0, settings))
            }
        }
    };
}

/// The exports every module has, single policy or bundle: the ABI version and the input
/// buffer allocator.
#[doc(hidden)]
#[macro_export]
macro_rules! __common_exports {
    () => {
        #[unsafe(no_mangle)]
        pub extern "C" fn ck8s_abi_version() -> i32 {
            $crate::__abi_version()
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn ck8s_alloc(len: i32) -> i32 {
            $crate::__alloc(len)
        }
    };
}

/// Exports several [`Policy`] types from one module, a *bundle*: the host runs every policy
/// of a bundle that a request concerns in one fresh instance per request, and the input is
/// decoded once for all of them, instead of one instance and one decode per policy.
///
/// Each policy keeps its own metadata, settings, mode and outcome. The policy crates are
/// linked as libraries, so they must not also export themselves: built-in policy crates
/// call [`export_policy!`] only without their `bundled` feature.
///
/// ```ignore
/// ck8s_policy_sdk::export_policies!(BuildRef, LegacyLabels, KanikoCache);
/// ```
///
/// ABI (on top of a single policy's): `ck8s_metadata` returns a JSON *array* of metadata,
/// and `ck8s_validate_policy(index, input_ptr, input_len, settings_ptr, settings_len)`
/// replaces `ck8s_validate` (`ck8s_configure_policy(index, settings_ptr, settings_len)`
/// `ck8s_configure`), `index` being the position in that array.
#[macro_export]
macro_rules! export_policies {
    ($($policy:ty),+ $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        mod __ck8s_exports {
            #[allow(unused_imports)]
            use super::*;

            $crate::__common_exports!();

            #[unsafe(no_mangle)]
            pub extern "C" fn ck8s_metadata() -> i64 {
                let all = [$(<$policy as $crate::Policy>::metadata()),+];
                $crate::__leak_output($crate::__to_json(&all))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn ck8s_validate_policy(
                index: i32,
                req_ptr: i32,
                req_len: i32,
                settings_ptr: i32,
                settings_len: i32,
            ) -> i64 {
                // SAFETY: the host wrote the input and the settings where it says.
                let (req, settings) =
                    unsafe { $crate::__buffers(req_ptr, req_len, settings_ptr, settings_len) };
                let runs: &[fn(usize, &'static [u8], &[u8]) -> $crate::Verdict] =
                    &[$($crate::__run_bundled::<$policy>),+];
                let verdict = match runs.get(index as usize) {
                    Some(run) => run(index as usize, req, settings),
                    None => $crate::__no_policy(index),
                };
                $crate::__verdict_output(verdict)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn ck8s_configure_policy(
                index: i32,
                settings_ptr: i32,
                settings_len: i32,
            ) -> i64 {
                // SAFETY: the host wrote the settings where it says.
                let settings = unsafe { $crate::__buffer(settings_ptr, settings_len) };
                let configures: &[fn(usize, &[u8]) -> $crate::Verdict] =
                    &[$($crate::__configure::<$policy>),+];
                let verdict = match configures.get(index as usize) {
                    Some(configure) => configure(index as usize, settings),
                    None => $crate::__no_policy(index),
                };
                $crate::__verdict_output(verdict)
            }
        }
    };
}

#[doc(hidden)]
pub fn __no_policy(index: i32) -> Verdict {
    Verdict {
        violations: Vec::new(),
        error: Some(format!("this bundle has no policy {index}")),
    }
}

/// The input and settings buffers the host passed, as slices.
///
/// # Safety
///
/// As [`__buffer`], for each.
#[doc(hidden)]
pub unsafe fn __buffers(
    input_ptr: i32,
    input_len: i32,
    settings_ptr: i32,
    settings_len: i32,
) -> (&'static [u8], &'static [u8]) {
    // SAFETY: see above.
    unsafe {
        (
            __buffer(input_ptr, input_len),
            __buffer(settings_ptr, settings_len),
        )
    }
}

/// A buffer the host passed, as a slice (empty for a length of 0, whatever the pointer).
///
/// # Safety
///
/// The host wrote `len` bytes at `ptr`, into a buffer it got from `ck8s_alloc`, which is never
/// freed: it lives as long as the instance, hence `'static`.
#[doc(hidden)]
pub unsafe fn __buffer(ptr: i32, len: i32) -> &'static [u8] {
    if len <= 0 {
        return &[];
    }
    // SAFETY: see above.
    unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }
}

#[doc(hidden)]
pub fn __abi_version() -> i32 {
    ck8s_policy_api::ABI_VERSION
}

/// An allowed verdict is the empty output (ABI v2): nothing to encode, nothing to parse.
#[doc(hidden)]
pub fn __verdict_output(verdict: Verdict) -> i64 {
    if verdict.allowed() {
        return ck8s_policy_api::pack(0, 0);
    }
    __leak_output(__to_json(&verdict))
}

#[doc(hidden)]
pub fn __to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| {
        format!(r#"{{"violations":[],"error":"cannot encode output: {e}"}}"#).into_bytes()
    })
}
