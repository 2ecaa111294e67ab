//! Arbitrary bytes as an `AdmissionReview` body: what the webhook does with a request before
//! any policy runs. Must never panic, whatever the API server (or anyone who reaches the
//! port) sends.
//!
//! Besides "no panic", it checks one property: the ABI v2 input the host builds for a
//! request always decodes on the guest side.

#![no_main]

use ck8s_policy_runtime::Subject;
use ck8s_policy_runtime::admission::parse_review;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = parse_review(data) else {
        return;
    };
    let subject = Subject::from_admission(&request);
    let _ = subject.not_judged();
    // ABI v1: the JSON request, parsed back as a guest would
    let json = subject.request_json();
    if let Ok(r) = ck8s_policy_sdk::Request::parse(&json) {
        let _ = r.object.containers();
        let _ = r.object.metadata_entries();
        let _ = r.raw_object();
    }
    // ABI v2: the binary input must decode on the guest side
    if let Ok(input) = subject.input() {
        let r = ck8s_policy_sdk::Request::decode(&input)
            .unwrap_or_else(|e| panic!("host-encoded input does not decode: {e}"));
        let _ = r.object.env_literals();
        let _ = r.object.config_entries();
        let _ = r.raw_object();
    }
});
