//! Arbitrary bytes as an `AdmissionReview` body: what the webhook does with a request before
//! any policy runs. Must never panic, whatever the API server (or anyone who reaches the
//! port) sends.
//!
//! Besides "no panic", it checks one property: the ABI v2 input the host builds for a
//! request always decodes on the guest side.

#![no_main]

#[allow(dead_code)] // each target uses one of the harnesses
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::admission_review(data));
