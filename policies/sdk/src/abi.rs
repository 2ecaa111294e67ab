//! The guest half of the ABI (see `ck8s_policy_api`): buffers and the evaluation entry point.

use crate::{Policy, Request};
use ck8s_policy_api::Verdict;
use ck8s_policy_api::codec::DecodeError;

/// Allocates a buffer the host writes input into. Never freed: each instance lives for one
/// evaluation and its whole memory is dropped with it.
pub fn __alloc(len: i32) -> i32 {
    let len = len.max(0) as usize;
    let mut buf: Vec<u8> = Vec::with_capacity(len.max(1));
    let ptr = buf.as_mut_ptr();
    core::mem::forget(buf);
    ptr as usize as i32
}

/// Leaks an output buffer and packs its address for the host.
pub fn __leak_output(bytes: Vec<u8>) -> i64 {
    let bytes = bytes.into_boxed_slice();
    let len = bytes.len() as u32;
    let ptr = Box::into_raw(bytes) as *mut u8 as usize as u32;
    ck8s_policy_api::pack(ptr, len)
}

/// Decodes the ABI v2 input and parses settings, runs the policy, and turns every failure
/// into a verdict with `error` set, so that a malformed input never traps the guest.
pub fn __run<P: Policy>(input: &[u8], settings: &[u8]) -> Verdict {
    let request = Request::decode(input);
    let verdict = judge::<P>(request.as_ref(), settings);
    // In a guest the instance is discarded after this call: walking the view only to "free"
    // into a bump allocator that never frees is wasted.
    if cfg!(target_arch = "wasm32") {
        core::mem::forget(request);
    }
    verdict
}

/// [`__run`] for a policy of a bundle ([`crate::export_policies!`]): every policy of the
/// bundle is called on the same input in the same instance, so the input is decoded on the
/// first call and the view kept for the others.
#[cfg(target_arch = "wasm32")]
pub fn __run_bundled<P: Policy>(input: &'static [u8], settings: &[u8]) -> Verdict {
    use std::cell::Cell;
    type Decoded = (usize, usize, &'static Result<Request<'static>, DecodeError>);
    thread_local! {
        // Single-threaded guest; the instance (and this leak) is gone after the request.
        static DECODED: Cell<Option<Decoded>> = const { Cell::new(None) };
    }
    let key = (input.as_ptr() as usize, input.len());
    let decoded = match DECODED.get() {
        Some((ptr, len, decoded)) if (ptr, len) == key => decoded,
        _ => {
            let decoded: &'static _ = Box::leak(Box::new(Request::decode(input)));
            DECODED.set(Some((key.0, key.1, decoded)));
            decoded
        }
    };
    judge::<P>(decoded.as_ref(), settings)
}

/// Parses the settings and runs the policy on the decoded request; a settings or decoding
/// failure is the verdict's `error`.
fn judge<P: Policy>(request: Result<&Request<'_>, &DecodeError>, settings: &[u8]) -> Verdict {
    let settings = match parse_settings::<P>(settings) {
        Ok(s) => s,
        Err(verdict) => return verdict,
    };
    match request {
        Ok(request) => {
            let violations = P::validate(request, &settings);
            if cfg!(target_arch = "wasm32") {
                core::mem::forget(settings);
            }
            Verdict {
                violations,
                error: None,
            }
        }
        Err(e) => error(e.to_string()),
    }
}

/// The policy's settings from the host's JSON (empty means none given), or the error verdict.
fn parse_settings<P: Policy>(settings: &[u8]) -> Result<P::Settings, Verdict> {
    serde_json::from_slice(if settings.is_empty() { b"{}" } else { settings })
        .map_err(|e| error(format!("settings do not parse: {e}")))
}

fn error(message: String) -> Verdict {
    Verdict {
        violations: Vec::new(),
        error: Some(message),
    }
}
