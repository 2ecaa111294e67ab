//! Legacy `codexk8s.io/` keys of one object, found with the walkers the legacy-labels policy
//! uses (`ck8s_policy_api::Object::metadata_blocks`): the object's own metadata and every pod
//! template and job template inside it, so `labels` and the policy agree on what is legacy.

use crate::names::{LABEL_PREFIX, LEGACY_LABEL_PREFIX};
use ck8s_policy_api::{GroupVersionKind, MetaField, Object};
use serde_json::{Map, Value};

/// What `labels` found on one object and how to move it.
#[derive(Debug, Clone, PartialEq)]
pub struct Legacy {
    /// Keys in the object's own `metadata`.
    pub labels: Vec<String>,
    pub annotations: Vec<String>,
    /// Field paths of keys in embedded templates
    /// (`spec.template.metadata.labels[codexk8s.io/x]`).
    pub templates: Vec<String>,
    /// Template label paths the workload's selector uses: the selector is immutable, so
    /// they cannot be moved by a patch.
    pub blocked: Vec<String>,
    /// The merge patch moving every movable key to its `codex-k8s.dev/` twin (an existing
    /// twin keeps its value).
    pub patch: Value,
    /// `Kind/name` of the controller that owns the object (`ownerReferences[controller]`).
    pub owner: Option<(String, String)>,
}

/// The legacy keys of `object` (its JSON) of kind `gvk`; `None` when it has none.
pub fn find(gvk: &GroupVersionKind, object: &Value) -> Result<Option<Legacy>, String> {
    let raw = object.to_string();
    let view = Object::parse(gvk, &raw).map_err(|e| e.to_string())?;
    let entries = view.metadata_entries_matching(|_, key| key.starts_with(LEGACY_LABEL_PREFIX));
    if entries.is_empty() {
        return Ok(None);
    }
    let mut found = Legacy {
        labels: Vec::new(),
        annotations: Vec::new(),
        templates: Vec::new(),
        blocked: Vec::new(),
        patch: Value::Object(Map::new()),
        owner: controller(object),
    };
    for (block, meta) in view.metadata_blocks() {
        let selector = selector_keys(object, &block);
        for (field, map, name) in [
            (MetaField::Label, &meta.labels, "labels"),
            (MetaField::Annotation, &meta.annotations, "annotations"),
        ] {
            let mut moved = Map::new();
            for (key, value) in map
                .iter()
                .filter(|(k, _)| k.starts_with(LEGACY_LABEL_PREFIX))
            {
                let path = format!("{block}.{name}[{key}]");
                if field == MetaField::Label && selector.iter().any(|s| s == key) {
                    found.blocked.push(path);
                    continue;
                }
                match (block.as_ref(), field) {
                    ("metadata", MetaField::Label) => found.labels.push(key.to_string()),
                    ("metadata", MetaField::Annotation) => found.annotations.push(key.to_string()),
                    _ => found.templates.push(path),
                }
                moved.insert(key.to_string(), Value::Null);
                let twin = format!("{LABEL_PREFIX}{}", &key[LEGACY_LABEL_PREFIX.len()..]);
                if map.get(&twin).is_none() {
                    moved.insert(twin, value.into());
                }
            }
            if !moved.is_empty() {
                let at = block.split('.').chain([name]);
                insert_at(&mut found.patch, at, Value::Object(moved));
            }
        }
    }
    Ok(Some(found))
}

/// Sets `value` at the dotted `path` inside `target`, creating the objects on the way.
fn insert_at<'p>(target: &mut Value, path: impl Iterator<Item = &'p str>, value: Value) {
    let mut at = target;
    for part in path {
        at = at
            .as_object_mut()
            .expect("the patch is built of objects")
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    *at = value;
}

/// The label keys the selector next to a pod template uses (`spec.selector` beside
/// `spec.template.metadata`); empty for other blocks.
fn selector_keys(object: &Value, block: &str) -> Vec<String> {
    let Some(spec) = block.strip_suffix(".template.metadata") else {
        return Vec::new();
    };
    let selector = spec
        .split('.')
        .fold(object, |o, p| &o[p])
        .get("selector")
        .unwrap_or(&Value::Null);
    let mut keys: Vec<String> = Vec::new();
    // A ReplicationController's selector is a plain map; the others are LabelSelectors.
    let labels = selector.get("matchLabels").unwrap_or(selector);
    if let Some(m) = labels.as_object() {
        keys.extend(m.keys().filter(|k| *k != "matchExpressions").cloned());
    }
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(k) = e["key"].as_str() {
            keys.push(k.to_string());
        }
    }
    keys
}

/// The controller among the owner references, as `(kind, name)`.
pub fn controller(object: &Value) -> Option<(String, String)> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            (s("kind"), s("name"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gvk(group: &str, kind: &str) -> GroupVersionKind {
        GroupVersionKind::new(group, "v1", kind)
    }

    #[test]
    fn templates_are_scanned_and_moved_through_their_own_path() {
        let d = json!({ "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "w", "labels": { "codexk8s.io/run-id": "1" } },
            "spec": { "selector": { "matchLabels": { "app": "w", "codexk8s.io/app": "w" } },
                "template": { "metadata": {
                    "labels": { "app": "w", "codexk8s.io/app": "w", "codexk8s.io/managed-by": "x" },
                    "annotations": { "codexk8s.io/correlation-id": "c", "codex-k8s.dev/correlation-id": "keep" } },
                "spec": { "containers": [] } } } });
        let l = find(&gvk("apps", "Deployment"), &d).unwrap().unwrap();
        assert_eq!(l.labels, ["codexk8s.io/run-id"]);
        assert_eq!(
            l.templates,
            [
                "spec.template.metadata.labels[codexk8s.io/managed-by]",
                "spec.template.metadata.annotations[codexk8s.io/correlation-id]"
            ]
        );
        assert_eq!(
            l.blocked,
            ["spec.template.metadata.labels[codexk8s.io/app]"]
        );
        assert_eq!(
            l.patch,
            json!({
                "metadata": { "labels": { "codexk8s.io/run-id": null, "codex-k8s.dev/run-id": "1" } },
                "spec": { "template": { "metadata": {
                    "labels": { "codexk8s.io/managed-by": null, "codex-k8s.dev/managed-by": "x" },
                    "annotations": { "codexk8s.io/correlation-id": null } } } }
            })
        );
        assert_eq!(l.owner, None);
    }

    #[test]
    fn cronjob_job_templates_and_owners() {
        let cj = json!({ "apiVersion": "batch/v1", "kind": "CronJob", "metadata": { "name": "gc" },
            "spec": { "jobTemplate": { "metadata": { "labels": { "codexk8s.io/a": "1" } },
                "spec": { "template": { "metadata": { "labels": { "codexk8s.io/b": "2" } }, "spec": {} } } } } });
        let l = find(&gvk("batch", "CronJob"), &cj).unwrap().unwrap();
        assert_eq!(
            l.templates,
            [
                "spec.jobTemplate.metadata.labels[codexk8s.io/a]",
                "spec.jobTemplate.spec.template.metadata.labels[codexk8s.io/b]"
            ]
        );
        let pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p",
            "labels": { "codexk8s.io/a": "1" },
            "ownerReferences": [{ "kind": "Node", "name": "n" }, { "kind": "ReplicaSet", "name": "rs", "controller": true }] } });
        let l = find(&gvk("", "Pod"), &pod).unwrap().unwrap();
        assert_eq!(l.owner, Some(("ReplicaSet".into(), "rs".into())));
        let clean = json!({ "metadata": { "name": "n", "labels": { "codex-k8s.dev/a": "1" } } });
        assert_eq!(find(&gvk("", "Namespace"), &clean).unwrap(), None);
    }
}
