//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*.rs` (cargo-fuzz, nightly)
//! and `policies/runtime/tests/fuzz_regressions.rs` (the stable test CI runs over the corpus
//! and a seeded mutation run), so both exercise exactly the same code. Included by path.

use ck8s_policy_api::codec::{decode_object, encode_object};
use ck8s_policy_runtime::Subject;
use ck8s_policy_runtime::admission::parse_review;
use ck8s_policy_sdk::{GroupVersionKind, MetaField, Object};

/// An `AdmissionReview` body as the webhook reads it; the ABI v2 input built from it must
/// decode on the guest side.
pub fn admission_review(data: &[u8]) {
    let Ok(request) = parse_review(data) else {
        return;
    };
    let subject = Subject::from_admission(&request);
    let _ = subject.not_judged();
    let json = subject.request_json();
    if let Ok(r) = ck8s_policy_sdk::Request::parse(&json) {
        let _ = r.object.containers();
        let _ = r.object.metadata_entries();
        let _ = r.raw_object();
    }
    if let Ok(input) = subject.input() {
        for with_raw in [true, false] {
            let bytes = input.to_vec(with_raw);
            let r = ck8s_policy_sdk::Request::decode(&bytes)
                .unwrap_or_else(|e| panic!("host-encoded input does not decode: {e}"));
            let _ = r.object.env_literals();
            let _ = r.object.config_entries();
            assert_eq!(r.raw_object().is_some(), with_raw);
        }
    }
}

const KINDS: &[(&str, &str, &str)] = &[
    ("", "v1", "Pod"),
    ("", "v1", "PodTemplate"),
    ("", "v1", "ReplicationController"),
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("apps", "v1", "DaemonSet"),
    ("apps", "v1", "ReplicaSet"),
    ("batch", "v1", "Job"),
    ("batch", "v1", "CronJob"),
    ("", "v1", "ConfigMap"),
    ("", "v1", "Secret"),
    ("", "v1", "Namespace"),
    ("example.com", "v1", "Widget"),
];

/// Everything the walkers produce, as plain text, to compare two views.
fn walk(o: &Object<'_>) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(o.pod_specs().iter().map(|p| p.path.to_string()));
    out.extend(
        o.containers()
            .iter()
            .map(|c| format!("{} {:?} {}", c.path, c.kind, c.container.name)),
    );
    out.extend(o.env_literals().iter().map(|l| format!("{l:?}")));
    out.extend(o.config_entries().iter().map(|l| format!("{l:?}")));
    out.extend(
        o.literals_named("CODEXK8S_BUILD_REF")
            .iter()
            .map(|l| format!("{l:?}")),
    );
    out.extend(o.metadata_blocks().iter().map(|(p, _)| p.to_string()));
    out.extend(o.metadata_entries().iter().map(|e| format!("{e:?}")));
    out.extend(
        o.metadata_entries_matching(|f, k| f == MetaField::Label && k.starts_with("codexk8s.io/"))
            .iter()
            .map(|e| format!("{e:?}")),
    );
    out
}

/// The object JSON of one built-in kind (the first byte picks it) through `Object::parse`
/// (and, when it is JSON, `Object::parse_valid`, which must agree) and every walker; the
/// binary view the host hands guests must round-trip.
pub fn sdk_walkers(data: &[u8]) {
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    let Ok(json) = std::str::from_utf8(json) else {
        return;
    };
    let (group, version, kind) = KINDS[pick as usize % KINDS.len()];
    let gvk = GroupVersionKind {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
    };
    // The host reads an object it knows is JSON without checking it again: it must see
    // exactly what serde_json sees, view or error.
    let parsed = Object::parse(&gvk, json);
    if let Ok(raw) = serde_json::value::RawValue::from_string(json.to_string()) {
        assert_eq!(
            format!("{:?}", Object::parse_valid(&gvk, &raw)),
            format!("{parsed:?}"),
            "the view read without checking differs from serde_json's"
        );
    }
    let Ok(object) = parsed else {
        return;
    };
    let seen = walk(&object);
    let bytes = encode_object(&object);
    let decoded = decode_object(&bytes)
        .unwrap_or_else(|e| panic!("host-encoded object does not decode: {e}"));
    assert_eq!(seen, walk(&decoded), "walkers differ after the round trip");
}
