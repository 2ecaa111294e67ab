//! The built-in ck8s policies, as WebAssembly bytes embedded at build time.
//!
//! `build.rs` compiles `policies/build-ref`, `policies/legacy-labels` and
//! `policies/kaniko-cache` for `wasm32-unknown-unknown`; this crate only carries the bytes.
//! Loading and running them is `ck8s-policy-runtime`'s job.

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The wasm bytes of the built-in policy called `name`.
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}
