//! `ck8s-admission`: the validating admission webhook of ck8s.
//!
//! A thin shell around `ck8s-policy-runtime`: it speaks `admission.k8s.io/v1` over HTTPS
//! (axum + rustls), keeps the policy set and the certificate fresh without restarts, and
//! reports what it does in Prometheus metrics and structured logs. Every decision is made by
//! the same runtime the plugin uses offline.
//!
//! - [`cli`] — flags;
//! - [`tls`] — rustls configuration with a hot-swappable certificate;
//! - [`store`] — the policy set in service and its reload;
//! - [`cluster`] — Namespaces and params for ValidatingAdmissionPolicies, watched on need;
//! - [`review`] — one `AdmissionReview` in, one out;
//! - [`metrics`] — the Prometheus registry;
//! - [`conn`] — the connection cap and the timeouts of each connection;
//! - [`self_wake`] — a connection's task polled again when it wakes itself, not rescheduled;
//! - [`body`] — request bodies under the memory budget and their deadline;
//! - [`server`] — listeners, the request handler, reloads, graceful shutdown.
//!
//! The binary's allocator and its settings live in `ck8s-admission-allocator`, which holds
//! the FFI this crate forbids.

pub mod body;
pub mod breakglass;
pub mod cli;
pub mod cluster;
pub mod conn;
pub mod metrics;
pub mod review;
pub mod self_wake;
pub mod server;
pub mod store;
pub mod tls;

pub use server::{Server, run};
