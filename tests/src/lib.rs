//! Test support shared across ck8s: the in-process Kubernetes API server ([`apiserver`]) that
//! the plugin's integration tests and the kubectl fidelity tests run against, and the
//! in-process webhook harness ([`webhook`]) of the admission and reliability tests.
//!
//! Not a cluster: it stores and serves fixture objects faithfully over the REST paths, and
//! reconciles nothing.

pub mod apiserver;
pub mod webhook;

pub use apiserver::TestApiServer;
