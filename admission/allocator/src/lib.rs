//! ck8s-admission's allocator, mimalloc (`pub use` for the binary's `#[global_allocator]`),
//! and its settings: freed memory goes back to the system promptly.
//!
//! mimalloc (the binary's global allocator, `main.rs`) keeps memory it frees committed for its
//! purge delay, 1 s by default, to reuse it cheaply. A review's body, its parse and the policy
//! input are megabytes for a large object and are freed together, so under a burst of large
//! reviews that second held the freed memory of dozens of reviews on top of those in flight:
//! peak RSS 99-130 MiB against the Deployment's 128 MiB limit (admission/tests/burst.rs,
//! RELIABILITY.md). The memory budget (`--max-inflight-bytes`) bounds what is in flight, not
//! what the allocator keeps.

pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the mimalloc (v3) that `libmimalloc-sys` builds: its position in
/// `mi_option_e` (mimalloc.h); the Rust bindings do not name it. Checked by the test below.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The purge delay the server runs with, in milliseconds (RELIABILITY.md has the figures).
pub const PURGE_DELAY_MS: i64 = 0;

/// Sets the purge delay to [`PURGE_DELAY_MS`] unless `MIMALLOC_PURGE_DELAY` is set (an
/// operator's own choice wins). Call first in `main`, before any other thread exists.
pub fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain store into mimalloc's option table, done before other threads start.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS as _) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_the_purge_delay() {
        // Only the purge delay defaults to 1000 (ms) in mimalloc v3's option table, so the
        // position names it; a mimalloc whose table moved fails here, not in production.
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) },
            expected
        );
    }
}
