//! `kubectl ck8s labels`: legacy `codexk8s.io/` keys must not appear after the Day3 rollout;
//! `--fix` rewrites them to `codex-k8s.dev/`.

use crate::cluster::Ctx;
use crate::exit::{Failure, Verdict};
use crate::names::*;
use crate::report::{Check, Report};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, clap::Args)]
pub struct LabelsArgs {
    /// Also scan namespaced objects (workloads, pods, services, config, RBAC, ...) in every namespace.
    #[arg(long)]
    pub objects: bool,
    /// Rewrite legacy keys to codex-k8s.dev/ (labels and annotations).
    #[arg(long)]
    pub fix: bool,
    /// With --fix: print the patches, change nothing.
    #[arg(long, requires = "fix")]
    pub dry_run: bool,
}

/// One object carrying legacy keys.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub labels: Vec<String>,
    pub annotations: Vec<String>,
    #[serde(skip)]
    pub patch: serde_json::Value,
}

fn legacy(map: &Option<BTreeMap<String, String>>) -> Vec<String> {
    map.iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(LEGACY_LABEL_PREFIX))
        .cloned()
        .collect()
}

/// The merge patch moving every legacy key to its `codex-k8s.dev/` twin (an existing twin keeps its value).
pub fn fix_patch(meta: &ObjectMeta) -> serde_json::Value {
    let moved = |map: &Option<BTreeMap<String, String>>| {
        let mut out = serde_json::Map::new();
        for (k, v) in map
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(LEGACY_LABEL_PREFIX))
        {
            out.insert(k.clone(), serde_json::Value::Null);
            let new = format!("{LABEL_PREFIX}{}", &k[LEGACY_LABEL_PREFIX.len()..]);
            if !map.iter().flatten().any(|(k2, _)| *k2 == new) {
                out.insert(new, v.clone().into());
            }
        }
        out
    };
    let mut metadata = serde_json::Map::new();
    for (field, map) in [("labels", &meta.labels), ("annotations", &meta.annotations)] {
        let m = moved(map);
        if !m.is_empty() {
            metadata.insert(field.into(), m.into());
        }
    }
    serde_json::json!({ "metadata": metadata })
}

/// Pure: the finding for one object, if it carries legacy keys.
pub fn inspect(kind: &str, meta: &ObjectMeta) -> Option<Finding> {
    let (labels, annotations) = (legacy(&meta.labels), legacy(&meta.annotations));
    if labels.is_empty() && annotations.is_empty() {
        return None;
    }
    Some(Finding {
        kind: kind.into(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        labels,
        annotations,
        patch: fix_patch(meta),
    })
}

async fn scan<K>(ctx: &Ctx) -> Result<Vec<Finding>, Failure>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let plural = K::plural(&()).to_string();
    let list = ctx
        .all::<K>()
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| ctx.err("list", &plural, None, e))?;
    Ok(list
        .items
        .iter()
        .filter_map(|o| inspect(&K::kind(&()), &o.metadata))
        .collect())
}

async fn fix<K>(ctx: &Ctx, f: &Finding) -> Result<(), Failure>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let ns = f.namespace.as_deref().unwrap_or_default();
    let api: Api<K> = ctx.in_ns(ns);
    api.patch(&f.name, &PatchParams::default(), &Patch::Merge(&f.patch))
        .await
        .map_err(|e| ctx.err("patch", &K::plural(&()), Some(ns), e))?;
    Ok(())
}

async fn scan_objects(ctx: &Ctx) -> Result<Vec<Finding>, Failure> {
    let r = futures::join!(
        scan::<Deployment>(ctx),
        scan::<StatefulSet>(ctx),
        scan::<DaemonSet>(ctx),
        scan::<Job>(ctx),
        scan::<CronJob>(ctx),
        scan::<Pod>(ctx),
        scan::<Service>(ctx),
        scan::<ConfigMap>(ctx),
        scan::<Secret>(ctx),
        scan::<ServiceAccount>(ctx),
        scan::<Role>(ctx),
        scan::<RoleBinding>(ctx),
        scan::<ResourceQuota>(ctx),
        scan::<LimitRange>(ctx),
        scan::<Ingress>(ctx),
    );
    let mut all = Vec::new();
    for part in [
        r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11, r.12, r.13, r.14,
    ] {
        all.extend(part?);
    }
    Ok(all)
}

async fn apply_fix(ctx: &Ctx, f: &Finding) -> Result<(), Failure> {
    match f.kind.as_str() {
        "Namespace" => {
            let api: Api<Namespace> = ctx.all();
            api.patch(&f.name, &PatchParams::default(), &Patch::Merge(&f.patch))
                .await
                .map_err(|e| ctx.err("patch", "namespaces", None, e))?;
            Ok(())
        }
        "Deployment" => fix::<Deployment>(ctx, f).await,
        "StatefulSet" => fix::<StatefulSet>(ctx, f).await,
        "DaemonSet" => fix::<DaemonSet>(ctx, f).await,
        "Job" => fix::<Job>(ctx, f).await,
        "CronJob" => fix::<CronJob>(ctx, f).await,
        "Pod" => fix::<Pod>(ctx, f).await,
        "Service" => fix::<Service>(ctx, f).await,
        "ConfigMap" => fix::<ConfigMap>(ctx, f).await,
        "Secret" => fix::<Secret>(ctx, f).await,
        "ServiceAccount" => fix::<ServiceAccount>(ctx, f).await,
        "Role" => fix::<Role>(ctx, f).await,
        "RoleBinding" => fix::<RoleBinding>(ctx, f).await,
        "ResourceQuota" => fix::<ResourceQuota>(ctx, f).await,
        "LimitRange" => fix::<LimitRange>(ctx, f).await,
        "Ingress" => fix::<Ingress>(ctx, f).await,
        other => Err(Failure::usage(format!("cannot fix kind {other}"))),
    }
}

fn object_id(f: &Finding) -> String {
    match &f.namespace {
        Some(ns) => format!("{}/{ns}/{}", f.kind.to_lowercase(), f.name),
        None => format!("{}/{}", f.kind.to_lowercase(), f.name),
    }
}

pub async fn run(args: LabelsArgs, ctx: &Ctx) -> Result<Verdict, Failure> {
    let progress = ctx.progress("labels: scanning for legacy keys");
    let mut findings = scan::<Namespace>(ctx).await?;
    if args.objects {
        findings.extend(scan_objects(ctx).await?);
    }
    drop(progress);
    let mut checks = Vec::new();
    let mut plan = Vec::new();
    for f in &findings {
        let keys = f
            .labels
            .iter()
            .chain(&f.annotations)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let id = format!("labels.{}", object_id(f));
        if args.fix && !args.dry_run {
            apply_fix(ctx, f).await?;
            checks.push(Check::pass(id, format!("rewrote {keys} to {LABEL_PREFIX}")));
        } else {
            if args.dry_run {
                plan.push(format!("would patch {}: {}", object_id(f), f.patch));
            }
            checks.push(
                Check::fail(id, format!("legacy keys: {keys}")).remedy(format!(
                    "kubectl ck8s labels --fix{} rewrites them to {LABEL_PREFIX}",
                    if args.objects { " --objects" } else { "" }
                )),
            );
        }
    }
    if findings.is_empty() {
        checks.push(Check::pass(
            "labels",
            format!(
                "no {LEGACY_LABEL_PREFIX} keys on namespaces{}",
                if args.objects {
                    " or namespaced objects"
                } else {
                    ""
                }
            ),
        ));
    }
    let plan_text = if plan.is_empty() {
        None
    } else {
        Some(format!("{}\n", plan.join("\n")))
    };
    Report::new("labels", &ctx.namespace, checks)
        .with_details(serde_json::json!({ "findings": findings, "dryRun": plan }))
        .print(ctx.out.format, plan_text.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(labels: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(json!({"name": "run-1", "labels": labels})).unwrap()
    }

    #[test]
    fn finds_legacy_keys_only() {
        assert!(
            inspect(
                "Namespace",
                &meta(json!({"codex-k8s.dev/managed-by": "codex-k8s-worker"}))
            )
            .is_none()
        );
        let f = inspect("Namespace", &meta(json!({"codexk8s.io/run-id": "42"}))).unwrap();
        assert_eq!(f.labels, vec!["codexk8s.io/run-id"]);
    }

    #[test]
    fn fix_moves_keys_and_keeps_existing_twins() {
        let m = meta(
            json!({"codexk8s.io/run-id": "42", "codexk8s.io/managed-by": "old", "codex-k8s.dev/managed-by": "codex-k8s-worker"}),
        );
        assert_eq!(
            fix_patch(&m),
            json!({"metadata": {"labels": {"codexk8s.io/run-id": null, "codex-k8s.dev/run-id": "42", "codexk8s.io/managed-by": null}}})
        );
    }
}
