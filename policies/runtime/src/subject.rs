//! What is judged: one object and the request around it, from the webhook or a manifest.

use crate::admission::AdmissionRequest;
use crate::kinds::{resource_for_kind, split_api_version};
use ck8s_policy_api::codec::{EncodedInput, Header};
use ck8s_policy_api::{EvaluationRequest, GroupVersionKind, Object, Operation};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use std::fmt;

/// The object under review and the request's facts policies may need.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub operation: Operation,
    pub kind: GroupVersionKind,
    /// `(group, version, resource)`, matched against the policies' rules.
    pub resource: (String, String, String),
    pub sub_resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub dry_run: bool,
    pub object: Option<&'a RawValue>,
    /// The object before an UPDATE, raw. Judged only when the new object has violations of
    /// a ratcheting policy (see [`crate::PolicyConfig::allow_existing_violations`]).
    pub old_object: Option<&'a RawValue>,
    /// Who sends the request (`userInfo.username`; empty offline).
    pub user: &'a str,
}

/// Why a request is allowed without asking any policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotJudged {
    /// DELETE and CONNECT carry no new object to judge.
    Operation(Operation),
    /// `status`, `scale`, ...: only the main resource is judged.
    SubResource,
    /// An UPDATE of an object with `deletionTimestamp` set: finalizers must be removable.
    BeingDeleted,
    /// No object in the request.
    NoObject,
}

impl fmt::Display for NotJudged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Operation(op) => write!(f, "{op} requests are always allowed"),
            Self::SubResource => f.write_str("subresource requests are not judged"),
            Self::BeingDeleted => f.write_str("the object is being deleted"),
            Self::NoObject => f.write_str("the request carries no object"),
        }
    }
}

impl<'a> Subject<'a> {
    /// The subject of a webhook request.
    pub fn from_admission(req: &'a AdmissionRequest<'a>) -> Self {
        Subject {
            operation: req.operation,
            kind: req.kind.clone(),
            resource: (
                req.resource.group.clone(),
                req.resource.version.clone(),
                req.resource.resource.clone(),
            ),
            sub_resource: req.sub_resource.as_deref().unwrap_or(""),
            namespace: req.namespace.as_deref().unwrap_or(""),
            name: req.name.as_deref().unwrap_or(""),
            dry_run: req.dry_run.unwrap_or(false),
            object: req.object,
            old_object: req.old_object,
            user: req.user_info.username.as_deref().unwrap_or(""),
        }
    }

    /// The subject of a manifest judged offline, as if it were being created (`operation`
    /// may say otherwise). The resource is guessed from the kind, as kubectl does without
    /// discovery.
    pub fn from_manifest(object: &'a RawValue, operation: Operation) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Head<'a> {
            #[serde(default, borrow)]
            api_version: Option<&'a str>,
            #[serde(default, borrow)]
            kind: Option<&'a str>,
            #[serde(default, borrow)]
            metadata: Option<Meta<'a>>,
        }
        #[derive(Deserialize, Default)]
        struct Meta<'a> {
            #[serde(default, borrow)]
            name: Option<&'a str>,
            #[serde(default, borrow)]
            namespace: Option<&'a str>,
        }
        let head: Head<'a> = serde_json::from_str(object.get())
            .map_err(|e| format!("not a Kubernetes object: {e}"))?;
        let api_version = head
            .api_version
            .filter(|s| !s.is_empty())
            .ok_or("object has no apiVersion")?;
        let kind = head
            .kind
            .filter(|s| !s.is_empty())
            .ok_or("object has no kind")?;
        let (group, version) = split_api_version(api_version);
        let meta = head.metadata.unwrap_or_default();
        Ok(Subject {
            operation,
            kind: GroupVersionKind {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
            },
            resource: (group.into(), version.into(), resource_for_kind(kind)),
            sub_resource: "",
            namespace: meta.namespace.unwrap_or(""),
            name: meta.name.unwrap_or(""),
            dry_run: false,
            object: Some(object),
            old_object: None,
            user: "",
        })
    }

    /// The same request with the old object in place of the new one: what an UPDATE's
    /// object looked like before. `None` for other operations or without an old object.
    pub fn before(&self) -> Option<Subject<'a>> {
        if self.operation != Operation::Update {
            return None;
        }
        let old = self.old_object.filter(|o| o.get() != "null")?;
        Some(Subject {
            object: Some(old),
            old_object: None,
            ..self.clone()
        })
    }

    /// The workload that controls the object (`Kind/name` of its ownerReference with
    /// `controller: true`), when that is a kind whose template the object is copied from.
    /// Parsed from the object on demand: only on the violation path.
    pub fn controller_owner(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(default, borrow)]
            metadata: Option<Meta<'a>>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Meta<'a> {
            #[serde(default, borrow)]
            owner_references: Vec<OwnerRef<'a>>,
        }
        #[derive(Deserialize)]
        struct OwnerRef<'a> {
            #[serde(borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            name: std::borrow::Cow<'a, str>,
            #[serde(default)]
            controller: Option<bool>,
        }
        const TEMPLATE_OWNERS: [&str; 6] = [
            "Deployment",
            "ReplicaSet",
            "StatefulSet",
            "DaemonSet",
            "Job",
            "CronJob",
        ];
        let head: Head = serde_json::from_str(self.object?.get()).ok()?;
        head.metadata?
            .owner_references
            .into_iter()
            .find(|o| o.controller == Some(true) && TEMPLATE_OWNERS.contains(&o.kind.as_ref()))
            .map(|o| format!("{}/{}", o.kind, o.name))
    }

    /// The request rules every policy shares: `Some(reason)` if no policy is asked.
    pub fn not_judged(&self) -> Option<NotJudged> {
        if matches!(self.operation, Operation::Delete | Operation::Connect) {
            return Some(NotJudged::Operation(self.operation));
        }
        if !self.sub_resource.is_empty() {
            return Some(NotJudged::SubResource);
        }
        let object = self.object.filter(|o| o.get() != "null")?;
        if self.operation == Operation::Update && being_deleted(object) {
            return Some(NotJudged::BeingDeleted);
        }
        None
    }

    /// The ABI v2 input handed to every policy, built once per request: the object is parsed
    /// here, natively, into the typed view and encoded with the header and the raw JSON
    /// (`ck8s_policy_api::codec`). `Err` is the message every policy would give for an object
    /// that does not parse (`apps/v1/Deployment does not parse: ...`).
    pub fn input(&self) -> Result<EncodedInput<'a>, String> {
        let raw = self.object.map_or("null", |o| o.get());
        let object = Object::parse(&self.kind, raw)?;
        let header = Header {
            operation: self.operation,
            kind: self.kind.clone(),
            namespace: self.namespace,
            name: self.name,
            dry_run: self.dry_run,
        };
        Ok(EncodedInput::new(&header, &object, raw))
    }

    /// The JSON [`EvaluationRequest`] handed to policies of ABI version 1; built once per
    /// request, only if such a policy is asked.
    pub fn request_json(&self) -> Vec<u8> {
        let null = RawValue::NULL;
        let request = EvaluationRequest {
            operation: self.operation,
            kind: self.kind.clone(),
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
            dry_run: self.dry_run,
            object: self.object.unwrap_or(null),
        };
        serde_json::to_vec(&request).expect("a request of strings and raw JSON always serializes")
    }
}

fn being_deleted(object: &RawValue) -> bool {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        #[serde(default)]
        deletion_timestamp: Option<IgnoredAny>,
    }
    #[derive(Deserialize)]
    struct Obj {
        #[serde(default)]
        metadata: Option<Meta>,
    }
    serde_json::from_str::<Obj>(object.get())
        .ok()
        .and_then(|o| o.metadata)
        .is_some_and(|m| m.deletion_timestamp.is_some())
}
