//! What is judged: one object and the request around it, from the webhook or a manifest.

use crate::admission::AdmissionRequest;
use crate::error::{ManifestError, Unparsable};
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
    /// The webhook's `AdmissionReview` (`None` offline): ValidatingAdmissionPolicies read its
    /// request whole as their `request` variable ([`crate::admission::raw_request`]).
    pub review: Option<&'a str>,
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
            review: req.review,
        }
    }

    /// The subject of a manifest judged offline, as if it were being created (`operation`
    /// may say otherwise). The resource is guessed from the kind, as kubectl does without
    /// discovery.
    pub fn from_manifest(
        object: &'a RawValue,
        operation: Operation,
    ) -> Result<Self, ManifestError> {
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
        let head: Head<'a> =
            serde_json::from_str(object.get()).map_err(ManifestError::NotAnObject)?;
        let api_version = head
            .api_version
            .filter(|s| !s.is_empty())
            .ok_or(ManifestError::NoApiVersion)?;
        let kind = head
            .kind
            .filter(|s| !s.is_empty())
            .ok_or(ManifestError::NoKind)?;
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
            review: None,
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
    pub fn input(&self) -> Result<EncodedInput<'a>, Unparsable> {
        let raw = self.object.unwrap_or(RawValue::NULL);
        let object = Object::parse_valid(&self.kind, raw).map_err(|e| Unparsable(e.to_string()))?;
        let header = Header {
            operation: self.operation,
            kind: self.kind.clone(),
            namespace: self.namespace,
            name: self.name,
            dry_run: self.dry_run,
        };
        Ok(EncodedInput::new(&header, &object, raw.get()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::parse_review;
    use serde_json::json;

    fn raw(value: serde_json::Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&value).unwrap()
    }

    fn review(request: serde_json::Value) -> String {
        let mut r = json!({ "uid": "u", "kind": { "group": "apps", "version": "v1", "kind": "Deployment" },
            "resource": { "group": "apps", "version": "v1", "resource": "deployments" },
            "namespace": "ns", "name": "web", "operation": "UPDATE",
            "object": { "metadata": { "name": "web" } }, "oldObject": { "metadata": { "name": "web" } } });
        r.as_object_mut()
            .unwrap()
            .extend(request.as_object().unwrap().clone());
        json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r })
            .to_string()
    }

    #[test]
    fn a_manifest_is_judged_as_its_kind_would_be_served() {
        let cm = raw(json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "c", "namespace": "ns" } }));
        let s = Subject::from_manifest(&cm, Operation::Create).unwrap();
        assert_eq!(s.resource, ("".into(), "v1".into(), "configmaps".into()));
        assert_eq!((s.namespace, s.name, s.user), ("ns", "c", ""));
        assert_eq!(s.kind.kind, "ConfigMap");
        assert!(s.not_judged().is_none() && s.before().is_none());
        let policy = raw(json!({ "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy" }));
        let s = Subject::from_manifest(&policy, Operation::Update).unwrap();
        assert_eq!(s.resource.0, "networking.k8s.io");
        assert_eq!(s.resource.2, "networkpolicies");
    }

    #[test]
    fn what_is_not_a_manifest_says_what_it_lacks() {
        let message = |v: serde_json::Value| {
            Subject::from_manifest(&raw(v), Operation::Create)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message(json!({ "kind": "Pod" })),
            "object has no apiVersion"
        );
        assert_eq!(
            message(json!({ "apiVersion": "v1", "kind": "" })),
            "object has no kind"
        );
        assert!(message(json!([1])).starts_with("not a Kubernetes object: "));
    }

    #[test]
    fn the_shared_request_rules() {
        let judged = |extra: serde_json::Value| {
            let body = review(extra);
            let req = parse_review(body.as_bytes()).unwrap();
            Subject::from_admission(&req).not_judged()
        };
        assert_eq!(judged(json!({})), None);
        assert_eq!(
            judged(json!({ "operation": "DELETE" })),
            Some(NotJudged::Operation(Operation::Delete))
        );
        assert_eq!(
            judged(json!({ "operation": "CONNECT" })),
            Some(NotJudged::Operation(Operation::Connect))
        );
        assert_eq!(
            judged(json!({ "subResource": "status" })),
            Some(NotJudged::SubResource)
        );
        let deleted =
            json!({ "metadata": { "name": "web", "deletionTimestamp": "2026-01-01T00:00:00Z" } });
        assert_eq!(
            judged(json!({ "object": deleted })),
            Some(NotJudged::BeingDeleted)
        );
        // Being deleted matters only for an UPDATE (finalizers must be removable).
        assert_eq!(
            judged(json!({ "object": deleted, "operation": "CREATE" })),
            None
        );
        // An object of null: nothing to judge, but no reason the request rules name.
        assert_eq!(judged(json!({ "object": null })), None);
        assert_eq!(
            NotJudged::Operation(Operation::Delete).to_string(),
            "DELETE requests are always allowed"
        );
    }

    #[test]
    fn an_update_has_a_before_and_a_controller_may_own_the_object() {
        let body = review(
            json!({ "userInfo": { "username": "system:kube-controller-manager" },
            "object": { "metadata": { "name": "web-1", "ownerReferences": [
                { "kind": "ConfigMap", "name": "c", "controller": true },
                { "kind": "ReplicaSet", "name": "web", "controller": false },
                { "kind": "ReplicaSet", "name": "web-7d9f", "controller": true } ] } },
            "oldObject": { "metadata": { "name": "web-0" } } }),
        );
        let req = parse_review(body.as_bytes()).unwrap();
        let s = Subject::from_admission(&req);
        assert_eq!(s.user, "system:kube-controller-manager");
        assert_eq!(s.controller_owner().as_deref(), Some("ReplicaSet/web-7d9f"));
        let before = s.before().unwrap();
        assert!(before.object.unwrap().get().contains("web-0"));
        assert!(before.old_object.is_none() && before.before().is_none());
        assert_eq!(before.controller_owner(), None);
        // No old object, or a CREATE: no before.
        let body = review(json!({ "oldObject": null }));
        let req = parse_review(body.as_bytes()).unwrap();
        assert!(Subject::from_admission(&req).before().is_none());
        let body = review(json!({ "operation": "CREATE" }));
        let req = parse_review(body.as_bytes()).unwrap();
        assert!(Subject::from_admission(&req).before().is_none());
    }

    #[test]
    fn the_input_is_built_once_or_says_why_the_object_does_not_parse() {
        let ok = raw(json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "c" }, "data": { "A": "1" } }));
        let s = Subject::from_manifest(&ok, Operation::Create).unwrap();
        assert!(s.input().is_ok());
        let request: serde_json::Value = serde_json::from_slice(&s.request_json()).unwrap();
        assert_eq!(request["object"]["data"]["A"], "1");
        let bad = raw(json!({ "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "d" }, "spec": { "template": { "spec": { "containers": "x" } } } }));
        let err = Subject::from_manifest(&bad, Operation::Create)
            .unwrap()
            .input()
            .err()
            .unwrap();
        assert!(
            err.0.starts_with("apps/v1/Deployment does not parse: "),
            "{err}"
        );
    }
}
