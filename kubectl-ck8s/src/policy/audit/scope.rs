//! Which objects the installed webhook would be sent: its namespaceSelector, objectSelector
//! and matchConditions, reconstructed from its ValidatingWebhookConfiguration.

use crate::cluster::webhooks::{Write, conditions_send, unevaluable};
use crate::cluster::{Ctx, objects};
use crate::exit::Failure;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, ListParams};
use kube::discovery::Scope;
use kube::{Api, ResourceExt};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Which objects the webhook is sent, as its configuration says.
#[derive(Debug, Default)]
pub struct WebhookScope {
    /// `None`: every namespace.
    pub namespaces: Option<BTreeSet<String>>,
    pub exempt: Vec<String>,
    pub object_selectors: Vec<LabelSelector>,
    /// Each webhook entry's `matchConditions` (`(name, expression)`) and whether it fails
    /// closed: a kind is judged when the conditions of an entry let it through
    /// ([`conditions_send`]).
    pub conditions: Vec<(Vec<(String, String)>, bool)>,
    pub notes: Vec<String>,
}

impl WebhookScope {
    /// Whether the webhook is sent writes of this kind (by its `matchConditions`; with no
    /// configuration, every kind).
    pub fn sends(&self, ar: &ApiResource) -> bool {
        let write = Write {
            group: &ar.group,
            version: &ar.version,
            resource: &ar.plural,
            kind: &ar.kind,
            namespace: None,
        };
        self.conditions.is_empty()
            || self
                .conditions
                .iter()
                .any(|(c, fail_closed)| conditions_send(c, write, *fail_closed))
    }
}

/// What the installed ValidatingWebhookConfiguration sends the webhook.
pub(super) async fn webhook_scope(ctx: &Ctx, name: &str) -> Result<WebhookScope, Failure> {
    let api: Api<ValidatingWebhookConfiguration> = ctx.all();
    let vwc = ctx
        .get_opt(api, "validatingwebhookconfigurations", name)
        .await?;
    let mut scope = WebhookScope::default();
    let Some(vwc) = vwc else {
        scope.notes.push(format!(
            "no ValidatingWebhookConfiguration {name}: every namespace is judged"
        ));
        return Ok(scope);
    };
    let hooks = vwc.webhooks.unwrap_or_default();
    let namespaces: Api<Namespace> = ctx.all();
    let all = namespaces
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| ctx.err("list", "namespaces", None, e))?;
    let mut selected = BTreeSet::new();
    for ns in &all.items {
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        let name = ns.name_any();
        if hooks.iter().any(|h| {
            h.namespace_selector
                .as_ref()
                .is_none_or(|s| objects::matches(s, &labels))
        }) {
            selected.insert(name);
        } else {
            scope.exempt.push(name);
        }
    }
    scope.namespaces = Some(selected);
    scope.exempt.sort();
    // An object selector of one webhook entry applies to the objects it is sent; with
    // several entries an object is judged if any selects it.
    if hooks.iter().all(|h| h.object_selector.is_some()) {
        scope.object_selectors = hooks
            .iter()
            .filter_map(|h| h.object_selector.clone())
            .collect();
    }
    for h in &hooks {
        let conditions: Vec<(String, String)> = h
            .match_conditions
            .iter()
            .flatten()
            .map(|c| (c.name.clone(), c.expression.clone()))
            .collect();
        let sample = Write {
            group: "apps",
            version: "v1",
            resource: "deployments",
            kind: "Deployment",
            namespace: None,
        };
        let fail_closed = h.failure_policy.as_deref() != Some("Ignore");
        for (name, expression) in unevaluable(&conditions, sample) {
            scope.notes.push(format!(
                "matchCondition {name} ({expression}) cannot be evaluated here: {}",
                if fail_closed {
                    "its error refuses under failurePolicy Fail, so every kind is judged"
                } else {
                    "its error skips the webhook under failurePolicy Ignore, so no kind is judged"
                }
            ));
        }
        scope.conditions.push((conditions, fail_closed));
    }
    Ok(scope)
}

/// Whether the webhook would be sent this object (namespace and object selectors).
pub(super) fn in_scope(
    scope: &WebhookScope,
    object: &Value,
    res_scope: &Scope,
    kind: &str,
) -> bool {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or("");
    let labels: BTreeMap<String, String> =
        serde_json::from_value(meta["labels"].clone()).unwrap_or_default();
    if let Some(namespaces) = &scope.namespaces {
        let ns = match (res_scope, kind) {
            (Scope::Namespaced, _) => meta["namespace"].as_str(),
            // A Namespace is matched by its own labels, i.e. by whether it is selected.
            (Scope::Cluster, "Namespace") => Some(name),
            (Scope::Cluster, _) => None,
        };
        if ns.is_some_and(|ns| !namespaces.contains(ns)) {
            return false;
        }
    }
    scope.object_selectors.is_empty()
        || scope
            .object_selectors
            .iter()
            .any(|s| objects::matches(s, &labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selectors_as_the_api_server_matches_them() {
        let sel = LabelSelector {
            match_labels: Some([("a".to_string(), "1".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".into(),
                operator: "NotIn".into(),
                values: Some(vec!["kube-system".into()]),
            }]),
        };
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(objects::matches(
            &sel,
            &labels(&[("a", "1"), ("kubernetes.io/metadata.name", "x")])
        ));
        assert!(!objects::matches(
            &sel,
            &labels(&[("a", "1"), ("kubernetes.io/metadata.name", "kube-system")])
        ));
        assert!(!objects::matches(
            &sel,
            &labels(&[("kubernetes.io/metadata.name", "x")])
        ));
        assert!(objects::matches(&LabelSelector::default(), &labels(&[])));
    }
}
