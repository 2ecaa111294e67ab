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
    let verdict = judge::<P>(request.as_ref(), settings, 0);
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
pub fn __run_bundled<P: Policy>(index: usize, input: &'static [u8], settings: &[u8]) -> Verdict {
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
    judge::<P>(decoded.as_ref(), settings, index)
}

/// `ck8s_configure` (`ck8s_configure_policy` of a bundle): parses the settings of the policy
/// at `index` once and keeps them for every evaluation that passes no settings. The host keeps
/// this instance's memory as the start of every evaluation's (see `ck8s_policy_api`).
pub fn __configure<P: Policy>(index: usize, settings: &[u8]) -> Verdict {
    match parse_settings::<P>(settings) {
        Ok(parsed) => {
            let parsed: &'static P::Settings = Box::leak(Box::new(parsed));
            CONFIGURED.with_borrow_mut(|slots| {
                if slots.len() <= index {
                    slots.resize(index + 1, None);
                }
                slots[index] = Some(parsed);
            });
            Verdict::default()
        }
        Err(verdict) => verdict,
    }
}

thread_local! {
    /// The settings `ck8s_configure` parsed, by the policy's index in its module. A guest is
    /// single-threaded: this is a plain static in its memory, which is what the host keeps.
    static CONFIGURED: std::cell::RefCell<Vec<Option<&'static dyn std::any::Any>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The settings to judge with: the configured ones when the host passes none, else the blob
/// parsed (an empty blob without configured settings is `{}`).
fn settings_for<P: Policy>(index: usize, blob: &[u8]) -> Result<Settings<P>, Verdict> {
    if blob.is_empty() {
        let configured = CONFIGURED.with_borrow(|slots| slots.get(index).copied().flatten());
        if let Some(settings) = configured.and_then(|any| any.downcast_ref::<P::Settings>()) {
            return Ok(Settings::Configured(settings));
        }
    }
    parse_settings::<P>(blob).map(Settings::Parsed)
}

enum Settings<P: Policy> {
    Configured(&'static P::Settings),
    Parsed(P::Settings),
}

impl<P: Policy> Settings<P> {
    fn get(&self) -> &P::Settings {
        match self {
            Settings::Configured(s) => s,
            Settings::Parsed(s) => s,
        }
    }
}

/// Runs the policy on the decoded request with its settings; a settings or decoding failure
/// is the verdict's `error`.
fn judge<P: Policy>(
    request: Result<&Request<'_>, &DecodeError>,
    settings: &[u8],
    index: usize,
) -> Verdict {
    let settings = match settings_for::<P>(index, settings) {
        Ok(s) => s,
        Err(verdict) => return verdict,
    };
    match request {
        Ok(request) => {
            let violations = P::validate(request, settings.get());
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
