//! The built-in ck8s policies, as WebAssembly bytes embedded at build time.
//!
//! `build.rs` compiles `policies/build-ref`, `policies/legacy-labels` and
//! `policies/kaniko-cache` for `wasm32-unknown-unknown`, each as a module of its own
//! ([`BUILTIN`], what `kubectl ck8s policy inspect builtin:NAME` shows and what a user can
//! deploy one by one) and all three as one bundle module ([`BUNDLE`], what the webhook and
//! the plugin evaluate: one instance per request for the three). This crate only carries the
//! bytes; loading and running them is `ck8s-policy-runtime`'s job.

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The wasm bytes of the built-in policy called `name`.
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}
