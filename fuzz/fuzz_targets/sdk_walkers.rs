//! Arbitrary bytes as the object JSON of each built-in kind: `Object::parse`, then every
//! walker policies use. Must never panic.
//!
//! The first byte picks the kind (so every shape of the view is reached); the rest is the
//! object. One property is checked besides "no panic": the binary encoding the host hands
//! guests round-trips, so walkers over the decoded view see exactly what the host saw.

#![no_main]

use ck8s_policy_api::codec::{decode_object, encode_object};
use ck8s_policy_sdk::{GroupVersionKind, MetaField, Object};
use libfuzzer_sys::fuzz_target;

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

fuzz_target!(|data: &[u8]| {
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
    let Ok(object) = Object::parse(&gvk, json) else {
        return;
    };
    let seen = walk(&object);
    let bytes = encode_object(&object);
    let decoded = decode_object(&bytes)
        .unwrap_or_else(|e| panic!("host-encoded object does not decode: {e}"));
    assert_eq!(seen, walk(&decoded), "walkers differ after the round trip");
});
