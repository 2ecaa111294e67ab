//! Which requests a policy and a binding judge: `matchConstraints` / `matchResources` as the
//! API server reads them (resource rules, exclusions, namespace and object selectors).

use crate::json::Json;
use crate::request::{Operation, Request};
use k8s_openapi::api::admissionregistration::v1::{MatchResources, NamedRuleWithOperations};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use std::collections::BTreeMap;

/// Why a request is not judged (or `Ok` when it is).
pub type MatchResult = Result<bool, String>;

/// `matchConstraints` of a policy (`binding == false`) or `matchResources` of a binding
/// (`binding == true`: no resource rules means no constraint on resources).
///
/// In the API server's order (`plugin/policy/matching`): a selector that does not match ends
/// it; one that cannot be applied (an unknown namespace, a bad operator) is an error only for
/// a request the resource rules take, so a policy for other resources never fails a request.
pub fn matches(m: &MatchResources, req: &Request, binding: bool) -> MatchResult {
    let namespace = selector_matches_namespace(m.namespace_selector.as_ref(), req);
    if namespace == Ok(false) {
        return Ok(false);
    }
    let object = selector_matches_object(m.object_selector.as_ref(), req);
    if object == Ok(false) {
        return Ok(false);
    }
    if !rules_match(m, req, binding) {
        return match another_version(m, req) {
            Some(named) => Err(named),
            None => Ok(false),
        };
    }
    namespace?;
    object?;
    Ok(true)
}

/// Whether a policy's `matchConstraints` may judge the request, selectors aside: its resource
/// rules take it, or take it in another version (an error, see [`another_version`]).
pub fn may_match(m: &MatchResources, req: &Request) -> bool {
    rules_match(m, req, false) || another_version(m, req).is_some()
}

/// The resource rules alone (`resourceRules` and `excludeResourceRules`), selectors aside.
/// They read only the request's resource, subresource, operation, namespace and name.
pub fn rules_match(m: &MatchResources, req: &Request, binding: bool) -> bool {
    let rules = m.resource_rules.as_deref().unwrap_or_default();
    // A binding without resource rules does not constrain resources.
    let unconstrained = binding && rules.is_empty();
    if !unconstrained && !rules.iter().any(|r| rule_matches(r, req)) {
        return false;
    }
    let excluded = m
        .exclude_resource_rules
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|r| rule_matches(r, req));
    !excluded
}

/// Resources the API server stores once and serves under two groups. With `matchPolicy:
/// Equivalent` a rule naming one takes requests for the other, converted: its
/// `EquivalentResourceMapper` keys a resource by its storage prefix. Events are the one such
/// pair Kubernetes serves today (`extensions` Deployments and Ingresses are gone).
const SAME_STORAGE: &[[(&str, &str); 2]] = &[[("", "events"), ("events.k8s.io", "events")]];

/// The request's group and resource, then those the API server stores as the same resource.
/// No allocation: the webhook's pre-check asks this of every policy for every request.
fn equivalent_resources<'r>(req: &'r Request) -> impl Iterator<Item = (&'r str, &'r str)> + Clone {
    let own = (req.resource.group.as_str(), req.resource.resource.as_str());
    let others = SAME_STORAGE.iter().filter_map(move |pair| {
        let i = pair.iter().position(|gr| *gr == own)?;
        Some(pair[1 - i])
    });
    std::iter::once(own).chain(others)
}

/// `matchPolicy: Equivalent` (the default) for a request in a version the rules do not name:
/// the API server judges it converted to a version they name. Without discovery and
/// conversion that cannot be done here, and letting it pass as unmatched would let anyone
/// evade a policy by writing another version (`autoscaling/v1` for a policy on `autoscaling/v2`
/// HorizontalPodAutoscalers) or the other group of the same resource (`events.k8s.io/v1` for a
/// policy on core Events). So a request for a resource a rule names by its exact group and
/// resource (or by the other group of the same storage, [`SAME_STORAGE`]), in a version the
/// rule leaves out, is an error (the policy's `failurePolicy` decides), with the group-versions
/// to use. `None`: no such rule, or `matchPolicy: Exact`.
fn another_version(m: &MatchResources, req: &Request) -> Option<String> {
    if m.match_policy.as_deref() == Some("Exact") {
        return None;
    }
    let by_name =
        |list: Option<&[String]>, value: &str| list.unwrap_or_default().iter().any(|x| x == value);
    // As an apiVersion reads; the core group named, since its apiVersion carries no group.
    let in_group = |group: &str, version: &str| match (group, version) {
        ("", "*") => "v1 (the core group)".to_string(),
        ("", version) => format!("{version} (the core group)"),
        (group, "*") => format!("{group} (any version)"),
        (group, version) => format!("{group}/{version}"),
    };
    let equivalents = equivalent_resources(req);
    let mut named: Vec<String> = Vec::new();
    for (group, resource) in equivalents.clone() {
        for r in m.resource_rules.iter().flatten() {
            let exact = by_name(r.api_groups.as_deref(), group)
                && r.resources.as_deref().unwrap_or_default().iter().any(|p| {
                    let (named, sub) = p.split_once('/').unwrap_or((p, ""));
                    named == resource && (sub == "*" || sub == req.sub_resource)
                });
            if exact && rule_matches_as(r, req, group, resource, None) {
                named.extend(r.api_versions.iter().flatten().map(|v| in_group(group, v)));
            }
        }
    }
    let excluded = m.exclude_resource_rules.iter().flatten().any(|r| {
        equivalents
            .clone()
            .any(|(group, resource)| rule_matches_as(r, req, group, resource, None))
    });
    if named.is_empty() || excluded {
        return None;
    }
    named.sort_unstable();
    named.dedup();
    Some(format!(
        "the request is for {} in {}, which this policy's rules name only as {}; with matchPolicy Equivalent the API server would judge it converted to one of those, which ck8s cannot do: send the object as {} (or set matchPolicy: Exact)",
        req.resource.resource,
        in_group(&req.resource.group, &req.resource.version),
        named.join(", "),
        named.join(" or "),
    ))
}

/// One `NamedRuleWithOperations` against the request's resource. `matchPolicy: Equivalent`
/// (the default) also matches the request's `requestResource` when the caller knows it to be
/// another version of the same resource.
pub fn rule_matches(r: &NamedRuleWithOperations, req: &Request) -> bool {
    let resource = &req.resource;
    rule_matches_as(
        r,
        req,
        &resource.group,
        &resource.resource,
        Some(&resource.version),
    )
}

/// [`rule_matches`] for the request as if for `group` and `resource`, in `version` (`None`:
/// any version, named by the rule or not).
fn rule_matches_as(
    r: &NamedRuleWithOperations,
    req: &Request,
    group: &str,
    resource: &str,
    version: Option<&str>,
) -> bool {
    let op = match req.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    };
    if !list_has(r.operations.as_deref(), op) {
        return false;
    }
    if !list_has(r.api_groups.as_deref(), group)
        || version.is_some_and(|v| !list_has(r.api_versions.as_deref(), v))
    {
        return false;
    }
    if !resource_matches(
        r.resources.as_deref().unwrap_or_default(),
        resource,
        &req.sub_resource,
    ) {
        return false;
    }
    if !scope_matches(r.scope.as_deref(), req) {
        return false;
    }
    match r.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => names.iter().any(|n| n == &req.name),
    }
}

fn list_has(list: Option<&[String]>, value: &str) -> bool {
    list.unwrap_or_default()
        .iter()
        .any(|x| x == "*" || x == value)
}

/// `pods` matches the resource and no subresource, `pods/status` one subresource, `pods/*`
/// every subresource of pods, `*` every resource without subresource, `*/scale` the `scale`
/// subresource of every resource, `*/*` everything.
pub fn resource_matches(patterns: &[String], resource: &str, sub: &str) -> bool {
    patterns.iter().any(|p| {
        let (pr, ps) = match p.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (p.as_str(), None),
        };
        let res_ok = pr == "*" || pr == resource;
        let sub_ok = match ps {
            None => sub.is_empty(),
            Some("*") => true,
            Some(s) => s == sub,
        };
        res_ok && sub_ok
    })
}

fn scope_matches(scope: Option<&str>, req: &Request) -> bool {
    let is_namespace = req.resource.group.is_empty() && req.resource.resource == "namespaces";
    match scope.unwrap_or("*") {
        "Namespaced" => !is_namespace && !req.namespace.is_empty(),
        "Cluster" => is_namespace || req.namespace.is_empty(),
        _ => true,
    }
}

/// The API server's rule: a cluster-scoped object other than a Namespace is always judged; a
/// Namespace is judged by its own labels; a namespaced object by its namespace's labels.
fn selector_matches_namespace(sel: Option<&LabelSelector>, req: &Request) -> MatchResult {
    let Some(sel) = sel else { return Ok(true) };
    if is_empty_selector(sel) {
        return Ok(true);
    }
    let is_namespace = req.resource.group.is_empty() && req.resource.resource == "namespaces";
    if is_namespace {
        let labels = labels_of(req.object.as_ref().or(req.old_object.as_ref()));
        return selector_matches(sel, &labels);
    }
    if req.namespace.is_empty() {
        return Ok(true);
    }
    match &req.namespace_object {
        Some(ns) => selector_matches(sel, &labels_of(Some(ns))),
        None => Err(format!(
            "namespace {:?} is not known: cannot apply the namespaceSelector",
            req.namespace
        )),
    }
}

/// Matches when the object's or the old object's labels match (an absent object counts as
/// one without labels).
fn selector_matches_object(sel: Option<&LabelSelector>, req: &Request) -> MatchResult {
    let Some(sel) = sel else { return Ok(true) };
    if is_empty_selector(sel) {
        return Ok(true);
    }
    let new = req
        .object
        .as_ref()
        .map(|o| selector_matches(sel, &labels_of(Some(o))))
        .transpose()?
        .unwrap_or(false);
    let old = req
        .old_object
        .as_ref()
        .map(|o| selector_matches(sel, &labels_of(Some(o))))
        .transpose()?
        .unwrap_or(false);
    Ok(new || old)
}

fn is_empty_selector(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty())
}

pub fn labels_of(obj: Option<&Json>) -> BTreeMap<String, String> {
    obj.and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.to_string(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A label selector (matchLabels AND matchExpressions) against a label set.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> MatchResult {
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Ok(false);
        }
    }
    for req in sel.match_expressions.iter().flatten() {
        if !requirement_matches(req, labels)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn requirement_matches(
    r: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> MatchResult {
    let values = r.values.as_deref().unwrap_or_default();
    let got = labels.get(&r.key);
    Ok(match r.operator.as_str() {
        "In" => got.is_some_and(|g| values.contains(g)),
        "NotIn" => got.is_none_or(|g| !values.contains(g)),
        "Exists" => got.is_some(),
        "DoesNotExist" => got.is_none(),
        other => return Err(format!("{other:?} is not a valid label selector operator")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Gvr, Request};

    fn req(resource: &str, sub: &str, ns: &str) -> Request<'static> {
        let mut r = Request::new(
            Operation::Create,
            Gvr {
                group: "apps".into(),
                version: "v1".into(),
                resource: resource.into(),
            },
            None,
        );
        r.sub_resource = sub.into();
        r.namespace = ns.into();
        r
    }

    #[test]
    fn resources_and_subresources() {
        let cases: &[(&[&str], &str, &str, bool)] = &[
            (&["deployments"], "deployments", "", true),
            (&["deployments"], "deployments", "scale", false),
            (&["deployments/scale"], "deployments", "scale", true),
            (&["*/scale"], "replicasets", "scale", true),
            (&["*/scale"], "replicasets", "", false),
            (&["*"], "replicasets", "", true),
            (&["*"], "replicasets", "status", false),
            (&["deployments/*"], "deployments", "status", true),
            (&["*/*"], "pods", "exec", true),
            (&["pods"], "deployments", "", false),
        ];
        for (pat, res, sub, want) in cases {
            let pat: Vec<String> = pat.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                resource_matches(&pat, res, sub),
                *want,
                "{pat:?} {res}/{sub}"
            );
        }
    }

    fn rule(ops: &[&str], groups: &[&str], resources: &[&str]) -> NamedRuleWithOperations {
        let v = |x: &[&str]| Some(x.iter().map(|s| s.to_string()).collect());
        NamedRuleWithOperations {
            operations: v(ops),
            api_groups: v(groups),
            api_versions: v(&["*"]),
            resources: v(resources),
            ..Default::default()
        }
    }

    #[test]
    fn rules() {
        let r = req("deployments", "", "team-a");
        assert!(rule_matches(
            &rule(&["CREATE"], &["apps"], &["deployments"]),
            &r
        ));
        assert!(rule_matches(&rule(&["*"], &["*"], &["*"]), &r));
        assert!(!rule_matches(
            &rule(&["UPDATE"], &["apps"], &["deployments"]),
            &r
        ));
        assert!(!rule_matches(
            &rule(&["CREATE"], &[""], &["deployments"]),
            &r
        ));
        let mut named = rule(&["CREATE"], &["apps"], &["deployments"]);
        named.resource_names = Some(vec!["web".into()]);
        assert!(!rule_matches(&named, &r));
        let mut scoped = rule(&["*"], &["*"], &["*"]);
        scoped.scope = Some("Cluster".into());
        assert!(!rule_matches(&scoped, &r));
        scoped.scope = Some("Namespaced".into());
        assert!(rule_matches(&scoped, &r));
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect();
        let sel =
            |json: serde_json::Value| -> LabelSelector { serde_json::from_value(json).unwrap() };
        let cases = [
            (serde_json::json!({"matchLabels": {"app": "web"}}), true),
            (serde_json::json!({"matchLabels": {"app": "db"}}), false),
            (
                serde_json::json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "x"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
                false,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}),
                false,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(
                selector_matches(&sel(s.clone()), &labels).unwrap(),
                want,
                "{s}"
            );
        }
    }

    #[test]
    fn a_selector_that_cannot_be_applied_fails_only_a_request_the_rules_take() {
        let sel: LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"env": "prod"}})).unwrap();
        let mr = MatchResources {
            namespace_selector: Some(sel),
            resource_rules: Some(vec![rule(&["CREATE"], &["apps"], &["deployments"])]),
            ..Default::default()
        };
        // The namespace's labels are not known (namespace_object is None).
        let taken = req("deployments", "", "team-a");
        assert!(matches(&mr, &taken, false).is_err());
        let other = req("statefulsets", "", "team-a");
        assert_eq!(matches(&mr, &other, false), Ok(false));
        let mut excluded = mr.clone();
        excluded.exclude_resource_rules = mr.resource_rules.clone();
        assert_eq!(matches(&excluded, &taken, false), Ok(false));
        // A bad operator in the object selector: the same.
        let bad: LabelSelector = serde_json::from_value(serde_json::json!(
            {"matchExpressions": [{"key": "app", "operator": "Near"}]}
        ))
        .unwrap();
        let mut by_object = MatchResources {
            object_selector: Some(bad),
            ..mr.clone()
        };
        by_object.namespace_selector = None;
        let mut labelled = req("deployments", "", "team-a");
        labelled.object = Some(serde_json::json!({"metadata": {"labels": {"app": "web"}}}).into());
        assert!(matches(&by_object, &labelled, false).is_err());
        labelled.resource.resource = "statefulsets".into();
        assert_eq!(matches(&by_object, &labelled, false), Ok(false));
        // A selector that applies and does not match ends it before the rules.
        let mut known = req("deployments", "", "team-a");
        known.namespace_object =
            Some(serde_json::json!({"metadata": {"labels": {"env": "dev"}}}).into());
        assert_eq!(matches(&mr, &known, false), Ok(false));
    }

    #[test]
    fn the_other_group_of_the_same_storage_is_an_error_under_equivalent() {
        let event = |group: &str| {
            let mut r = Request::new(
                Operation::Create,
                Gvr {
                    group: group.into(),
                    version: "v1".into(),
                    resource: "events".into(),
                },
                None,
            );
            r.namespace = "team-a".into();
            r
        };
        let core = MatchResources {
            resource_rules: Some(vec![rule(&["CREATE"], &[""], &["events"])]),
            ..Default::default()
        };
        assert_eq!(matches(&core, &event(""), false), Ok(true));
        let err = matches(&core, &event("events.k8s.io"), false).unwrap_err();
        assert!(
            err.contains("in events.k8s.io/v1")
                && err.contains("send the object as v1 (the core group)"),
            "{err}"
        );
        assert!(may_match(&core, &event("events.k8s.io")));
        // The other way round, with a named version.
        let mut new_api = rule(&["CREATE"], &["events.k8s.io"], &["events"]);
        new_api.api_versions = Some(vec!["v1".into()]);
        let new_api = MatchResources {
            resource_rules: Some(vec![new_api]),
            ..Default::default()
        };
        let err = matches(&new_api, &event(""), false).unwrap_err();
        assert!(err.contains("send the object as events.k8s.io/v1"), "{err}");
        // Exact, or the equivalent excluded: no match. Another resource is never equivalent.
        let exact = MatchResources {
            match_policy: Some("Exact".into()),
            ..core.clone()
        };
        assert_eq!(matches(&exact, &event("events.k8s.io"), false), Ok(false));
        let excluded = MatchResources {
            exclude_resource_rules: Some(vec![rule(&["*"], &[""], &["events"])]),
            ..core.clone()
        };
        assert_eq!(
            matches(&excluded, &event("events.k8s.io"), false),
            Ok(false)
        );
        let mut other = event("events.k8s.io");
        other.resource.resource = "eventlists".into();
        assert_eq!(matches(&core, &other, false), Ok(false));
    }

    #[test]
    fn another_version_of_a_named_resource_is_an_error_under_equivalent() {
        let hpa = |version: &str| {
            let mut r = Request::new(
                Operation::Create,
                Gvr {
                    group: "autoscaling".into(),
                    version: version.into(),
                    resource: "horizontalpodautoscalers".into(),
                },
                None,
            );
            r.namespace = "team-a".into();
            r
        };
        let mut v2 = rule(&["CREATE"], &["autoscaling"], &["horizontalpodautoscalers"]);
        v2.api_versions = Some(vec!["v2".into()]);
        let mr = MatchResources {
            resource_rules: Some(vec![v2.clone()]),
            ..Default::default()
        };
        assert_eq!(matches(&mr, &hpa("v2"), false), Ok(true));
        let err = matches(&mr, &hpa("v1"), false).unwrap_err();
        assert!(
            err.contains("autoscaling/v1") && err.contains("send the object as autoscaling/v2"),
            "{err}"
        );
        assert!(may_match(&mr, &hpa("v1")));
        // Exact: another version is simply not matched.
        let exact = MatchResources {
            match_policy: Some("Exact".into()),
            ..mr.clone()
        };
        assert_eq!(matches(&exact, &hpa("v1"), false), Ok(false));
        assert!(!may_match(&exact, &hpa("v1")));
        // Only a rule that names the group and the resource exactly says so; an operation it
        // leaves out, or an exclusion in any version, is no match.
        let mut wildcard = v2.clone();
        wildcard.api_groups = Some(vec!["*".into()]);
        let broad = MatchResources {
            resource_rules: Some(vec![wildcard]),
            ..Default::default()
        };
        assert_eq!(matches(&broad, &hpa("v1"), false), Ok(false));
        let mut update = hpa("v1");
        update.operation = Operation::Update;
        assert_eq!(matches(&mr, &update, false), Ok(false));
        let excluded = MatchResources {
            exclude_resource_rules: Some(vec![v2]),
            ..mr.clone()
        };
        assert_eq!(matches(&excluded, &hpa("v1"), false), Ok(false));
        assert_eq!(
            matches(&mr, &req("deployments", "", "team-a"), false),
            Ok(false)
        );
    }

    #[test]
    fn namespace_selector_on_cluster_scoped_objects() {
        let sel: LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"env": "prod"}})).unwrap();
        let mr = MatchResources {
            namespace_selector: Some(sel),
            resource_rules: Some(vec![rule(&["*"], &["*"], &["*"])]),
            ..Default::default()
        };
        // A cluster-scoped object other than a Namespace: always judged.
        let mut r = req("clusterroles", "", "");
        assert_eq!(matches(&mr, &r, false), Ok(true));
        // A Namespace: by its own labels.
        r.resource = Gvr {
            group: "".into(),
            version: "v1".into(),
            resource: "namespaces".into(),
        };
        r.object = Some(serde_json::json!({"metadata": {"labels": {"env": "dev"}}}).into());
        assert_eq!(matches(&mr, &r, false), Ok(false));
        // A namespaced object: by its namespace's labels.
        let mut r = req("deployments", "", "team-a");
        r.namespace_object =
            Some(serde_json::json!({"metadata": {"labels": {"env": "prod"}}}).into());
        assert_eq!(matches(&mr, &r, false), Ok(true));
    }
}
