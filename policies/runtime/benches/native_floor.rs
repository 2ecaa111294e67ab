//! The native floor of the evaluation benchmark, shared by `benches/evaluate.rs` and
//! `examples/profile.rs` (included by path) so that both measure the same thing.
//!
//! It starts where `PolicySet::evaluate` starts: the object's JSON already cut out of its
//! request (a `RawValue`, as the webhook has it after reading the `AdmissionReview`) and its
//! kind. It parses the object once into the view and runs the three built-in checks, the same
//! policy code the guests are compiled from.

use ck8s_policy_api::Object;
use ck8s_policy_api::codec::Header;
use ck8s_policy_build_ref::BuildRef;
use ck8s_policy_kaniko_cache::KanikoCache;
use ck8s_policy_legacy_labels::LegacyLabels;
use ck8s_policy_runtime::Subject;
use ck8s_policy_sdk::{Policy, Request};

fn default_settings<P: Policy>() -> P::Settings {
    serde_json::from_value(serde_json::Value::Object(P::metadata().default_settings())).unwrap()
}

/// The three built-ins' default settings, parsed once (as the guests' are, outside the loop).
pub struct NativeFloor {
    build_ref: <BuildRef as Policy>::Settings,
    legacy_labels: <LegacyLabels as Policy>::Settings,
    kaniko_cache: <KanikoCache as Policy>::Settings,
}

impl Default for NativeFloor {
    fn default() -> Self {
        NativeFloor {
            build_ref: default_settings::<BuildRef>(),
            legacy_labels: default_settings::<LegacyLabels>(),
            kaniko_cache: default_settings::<KanikoCache>(),
        }
    }
}

impl NativeFloor {
    /// The object of `subject` parsed into the view, as a request.
    pub fn parse<'a>(&self, subject: &Subject<'a>) -> Request<'a> {
        let raw = subject.object.expect("the subject has an object").get();
        let object = Object::parse(&subject.kind, raw).unwrap();
        let header = Header {
            operation: subject.operation,
            kind: subject.kind.clone(),
            namespace: subject.namespace,
            name: subject.name,
            dry_run: subject.dry_run,
        };
        Request::new(header, object)
    }

    /// How many violations the three checks find.
    pub fn check(&self, request: &Request<'_>) -> [usize; 3] {
        [
            BuildRef::validate(request, &self.build_ref).len(),
            LegacyLabels::validate(request, &self.legacy_labels).len(),
            KanikoCache::validate(request, &self.kaniko_cache).len(),
        ]
    }

    /// Parse and check: the floor.
    pub fn evaluate(&self, subject: &Subject<'_>) -> [usize; 3] {
        self.check(&self.parse(subject))
    }
}
