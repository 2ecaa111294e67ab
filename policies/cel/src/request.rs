//! The admission request a policy judges, and its `request` variable.

use crate::json::Json;
use crate::value::{map, string, to_cel};
use kube_cel::cel::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Operation {
    #[default]
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        Some(match s {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            "CONNECT" => Operation::Connect,
            _ => return None,
        })
    }
}

/// Group, version, kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Gvk {
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// Group, version, resource (plural, lower case).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Gvr {
    pub group: String,
    pub version: String,
    pub resource: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// One admission request, with the objects in the form the API server sends them (its normal
/// form: defaults filled in, empty fields dropped, `stringData` merged into `data`). The
/// objects borrow their strings from the text they were parsed from (see [`Json`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request<'a> {
    pub uid: String,
    pub operation: Operation,
    pub kind: Gvk,
    pub resource: Gvr,
    pub sub_resource: String,
    pub request_kind: Option<Gvk>,
    pub request_resource: Option<Gvr>,
    pub request_sub_resource: Option<String>,
    pub name: String,
    pub namespace: String,
    pub user_info: UserInfo,
    pub dry_run: bool,
    pub options: Option<Json<'a>>,
    pub object: Option<Json<'a>>,
    pub old_object: Option<Json<'a>>,
    /// The Namespace object of `namespace` (the `namespaceObject` variable, and what a
    /// `namespaceSelector` is matched against). `None` for cluster-scoped objects, or when not
    /// known.
    pub namespace_object: Option<Json<'a>>,
}

impl<'a> Request<'a> {
    /// A request for `object` (CREATE / UPDATE) or `old_object` (DELETE) of a known resource;
    /// kind, name and namespace are read from the object.
    pub fn new(operation: Operation, resource: Gvr, object: Option<Json<'a>>) -> Request<'a> {
        let mut r = Request {
            operation,
            resource,
            ..Default::default()
        };
        if let Some(o) = &object {
            r.fill_from_object(o);
        }
        r.object = object;
        r
    }

    /// A request for a manifest: its resource found by [`resource_for`] from its apiVersion and
    /// kind. A `serde_json::Value` given by reference is borrowed, not copied.
    pub fn for_object(operation: Operation, object: impl Into<Json<'a>>) -> Request<'a> {
        let object = object.into();
        let str_at = |k: &str| object.get(k).and_then(Json::as_str).unwrap_or_default();
        let resource = resource_for(str_at("apiVersion"), str_at("kind"));
        Request::new(operation, resource, Some(object))
    }

    fn fill_from_object(&mut self, o: &Json) {
        let str_at = |p: &str| o.pointer(p).and_then(Json::as_str).unwrap_or_default();
        let api_version = str_at("/apiVersion");
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        self.kind = Gvk {
            group,
            version,
            kind: str_at("/kind").to_string(),
        };
        self.name = str_at("/metadata/name").to_string();
        self.namespace = str_at("/metadata/namespace").to_string();
        // The API server sets a Namespace's own name as the request's namespace.
        if self.kind.group.is_empty() && self.kind.kind == "Namespace" {
            self.namespace = self.name.clone();
        }
    }

    /// The `request` of an `admission.k8s.io/v1` AdmissionReview, parsed; its objects are
    /// moved into the request.
    pub fn from_admission_request(r: Json<'a>) -> Result<Request<'a>, String> {
        let Json::Object(o) = r else {
            return Err("the request is not a JSON object".to_string());
        };
        let mut fields = o.into_entries();
        let mut take = |k: &str| {
            fields
                .iter_mut()
                .find(|(key, _)| key == k)
                .map(|(_, v)| std::mem::take(v))
                .filter(|v| !v.is_null())
        };
        let (options, object, old_object) = (take("options"), take("object"), take("oldObject"));
        let r = Json::Object(crate::json::Object::from_entries(fields));
        let s = |p: &str| {
            r.pointer(p)
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let gvk = |p: &str| {
            group_version_and(&r, p, "kind").map(|[group, version, kind]| Gvk {
                group,
                version,
                kind,
            })
        };
        let gvr = |p: &str| {
            group_version_and(&r, p, "resource").map(|[group, version, resource]| Gvr {
                group,
                version,
                resource,
            })
        };
        let strings = |v: &Json| -> Option<Vec<String>> {
            v.as_array()?
                .iter()
                .map(|x| x.as_str().map(String::from))
                .collect()
        };
        let operation = Operation::parse(&s("/operation"))
            .ok_or_else(|| format!("unknown operation {:?}", s("/operation")))?;
        Ok(Request {
            uid: s("/uid"),
            operation,
            kind: gvk("kind").ok_or("the request has no kind")?,
            resource: gvr("resource").ok_or("the request has no resource")?,
            sub_resource: s("/subResource"),
            request_kind: gvk("requestKind"),
            request_resource: gvr("requestResource"),
            request_sub_resource: r
                .get("requestSubResource")
                .and_then(Json::as_str)
                .map(String::from),
            name: s("/name"),
            namespace: s("/namespace"),
            user_info: UserInfo {
                username: s("/userInfo/username"),
                uid: s("/userInfo/uid"),
                groups: r
                    .pointer("/userInfo/groups")
                    .and_then(strings)
                    .unwrap_or_default(),
                extra: r
                    .pointer("/userInfo/extra")
                    .and_then(Json::as_object)
                    .and_then(|m| {
                        m.iter()
                            .map(|(k, v)| Some((k.to_string(), strings(v)?)))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            dry_run: r.get("dryRun").and_then(Json::as_bool).unwrap_or(false),
            options,
            object,
            old_object,
            namespace_object: None,
        })
    }

    /// The `request` variable.
    pub(crate) fn to_cel(&self) -> Value {
        let gvk = |g: &Gvk| {
            map(vec![
                ("group", string(&g.group)),
                ("version", string(&g.version)),
                ("kind", string(&g.kind)),
            ])
        };
        let gvr = |g: &Gvr| {
            map(vec![
                ("group", string(&g.group)),
                ("version", string(&g.version)),
                ("resource", string(&g.resource)),
            ])
        };
        let extra = map(self
            .user_info
            .extra
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    Value::List(Arc::new(v.iter().map(|x| string(x)).collect())),
                )
            })
            .collect());
        let mut user = vec![
            ("username", string(&self.user_info.username)),
            ("uid", string(&self.user_info.uid)),
            (
                "groups",
                Value::List(Arc::new(
                    self.user_info.groups.iter().map(|g| string(g)).collect(),
                )),
            ),
        ];
        if !self.user_info.extra.is_empty() {
            user.push(("extra", extra));
        }
        let mut fields = vec![
            ("uid", string(&self.uid)),
            ("operation", string(self.operation.as_str())),
            ("kind", gvk(&self.kind)),
            ("resource", gvr(&self.resource)),
            ("subResource", string(&self.sub_resource)),
            (
                "requestKind",
                gvk(self.request_kind.as_ref().unwrap_or(&self.kind)),
            ),
            (
                "requestResource",
                gvr(self.request_resource.as_ref().unwrap_or(&self.resource)),
            ),
            (
                "requestSubResource",
                string(
                    self.request_sub_resource
                        .as_deref()
                        .unwrap_or(&self.sub_resource),
                ),
            ),
            ("name", string(&self.name)),
            ("namespace", string(&self.namespace)),
            ("userInfo", map(user)),
            ("dryRun", Value::Bool(self.dry_run)),
        ];
        if let Some(o) = &self.options {
            fields.push(("options", to_cel(o)));
        }
        map(fields)
    }
}

/// The resource of a kind, for requests built from manifests: the built-in kinds by table,
/// others by the API server's default plural (lower case, `s` / `es` / `ies`).
pub fn resource_for(api_version: &str, kind: &str) -> Gvr {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.to_string()),
    };
    let lower = kind.to_ascii_lowercase();
    let resource = match lower.as_str() {
        "endpoints" => lower,
        "ingress" => "ingresses".into(),
        "networkpolicy" => "networkpolicies".into(),
        "podsecuritypolicy" => "podsecuritypolicies".into(),
        "priorityclass" => "priorityclasses".into(),
        "storageclass" => "storageclasses".into(),
        "ingressclass" => "ingressclasses".into(),
        "runtimeclass" => "runtimeclasses".into(),
        _ if lower.ends_with('s') || lower.ends_with("ch") || lower.ends_with('x') => {
            format!("{lower}es")
        }
        _ if lower.ends_with('y')
            && !lower.ends_with("ay")
            && !lower.ends_with("ey")
            && !lower.ends_with("oy") =>
        {
            format!("{}ies", &lower[..lower.len() - 1])
        }
        _ => format!("{lower}s"),
    };
    Gvr {
        group,
        version,
        resource,
    }
}

/// `group`, `version` and `third` of the object at `field` (`kind`, `resource`, ...), each
/// empty when absent; `None` when there is no such object.
fn group_version_and(r: &Json, field: &str, third: &str) -> Option<[String; 3]> {
    let v = r.get(field).filter(|v| v.as_object().is_some())?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some([s("group"), s("version"), s(third)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        let cases = [
            ("apps/v1", "Deployment", "apps", "deployments"),
            ("v1", "ConfigMap", "", "configmaps"),
            (
                "networking.k8s.io/v1",
                "Ingress",
                "networking.k8s.io",
                "ingresses",
            ),
            (
                "networking.k8s.io/v1",
                "NetworkPolicy",
                "networking.k8s.io",
                "networkpolicies",
            ),
            ("v1", "Endpoints", "", "endpoints"),
            (
                "policy/v1",
                "PodDisruptionBudget",
                "policy",
                "poddisruptionbudgets",
            ),
            ("v1", "Namespace", "", "namespaces"),
            (
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
            ),
        ];
        for (av, kind, group, res) in cases {
            let r = resource_for(av, kind);
            assert_eq!(
                (r.group.as_str(), r.resource.as_str()),
                (group, res),
                "{kind}"
            );
        }
    }

    #[test]
    fn from_review() {
        let r = Request::from_admission_request(Json::from(serde_json::json!({
            "uid": "u1", "operation": "UPDATE",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "subResource": "scale", "name": "web", "namespace": "a",
            "userInfo": {"username": "alice", "groups": ["dev"]},
            "object": {"spec": {}}, "oldObject": null, "dryRun": true
        })))
        .unwrap();
        assert_eq!(r.operation, Operation::Update);
        assert_eq!(r.sub_resource, "scale");
        assert_eq!(r.user_info.groups, vec!["dev"]);
        assert!(r.object.is_some() && r.old_object.is_none() && r.dry_run);
    }
}
