//! Arbitrary bytes as the object JSON of each built-in kind: `Object::parse`, then every
//! walker policies use. Must never panic.
//!
//! The first byte picks the kind (so every shape of the view is reached); the rest is the
//! object. One property is checked besides "no panic": the binary encoding the host hands
//! guests round-trips, so walkers over the decoded view see exactly what the host saw.

#![no_main]

#[allow(dead_code)] // each target uses one of the harnesses
#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::sdk_walkers(data));
