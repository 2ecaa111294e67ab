//! `kubectl ck8s labels`: legacy `codexk8s.io/` keys must not appear after the Day3 rollout;
//! `--fix` rewrites them to `codex-k8s.dev/`.

use crate::cluster::Ctx;
use crate::exit::Failure;
use crate::names::*;
use crate::output::progress;
use crate::report::{Check, Outcome, Report};
use ck8s_policy_api::GroupVersionKind;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;

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
    /// Field paths of legacy keys in the object's pod templates / job templates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<String>,
    /// Template label paths the (immutable) selector uses: no patch can move them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
    /// `Kind/name` of the workload to fix instead, for an object a controller owns (a Pod
    /// of a ReplicaSet of a Deployment names the Deployment): never patched itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip)]
    pub patch: serde_json::Value,
    /// Where `--fix` sends the patch.
    #[serde(skip)]
    pub gvk: GroupVersionKind,
}

/// Pure: the finding for one object (its JSON), if it carries legacy keys, by the walkers the
/// legacy-labels policy uses. `owners` resolves a controller to its own controller, so an
/// owned object names the workload at the top of the chain.
pub fn inspect(
    gvk: &GroupVersionKind,
    object: &serde_json::Value,
    owners: &Owners,
) -> Result<Option<Finding>, String> {
    let Some(found) = crate::legacy::find(gvk, object)? else {
        return Ok(None);
    };
    let meta = &object["metadata"];
    let namespace = meta["namespace"].as_str().map(str::to_string);
    let owner = found.owner.map(|(mut kind, mut name)| {
        let ns = namespace.clone().unwrap_or_default();
        // At most two hops: Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob.
        for _ in 0..2 {
            match owners.get(&(kind.clone(), ns.clone(), name.clone())) {
                Some((k, n)) => (kind, name) = (k.clone(), n.clone()),
                None => break,
            }
        }
        format!("{kind}/{name}")
    });
    Ok(Some(Finding {
        kind: gvk.kind.clone(),
        namespace,
        name: meta["name"].as_str().unwrap_or_default().to_string(),
        labels: found.labels,
        annotations: found.annotations,
        templates: found.templates,
        blocked: found.blocked,
        owner,
        patch: found.patch,
        gvk: gvk.clone(),
    }))
}

/// `(kind, namespace, name)` of a ReplicaSet or Job -> `(kind, name)` of its controller.
pub type Owners = std::collections::HashMap<(String, String, String), (String, String)>;

/// Every object of kind `K` as JSON, with its group/version/kind: whole objects for the
/// workloads (their templates are scanned), metadata only for the rest.
async fn list<K>(
    ctx: &Ctx,
    whole: bool,
) -> Result<Vec<(GroupVersionKind, serde_json::Value)>, Failure>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Serialize,
{
    let plural = K::plural(&()).to_string();
    let gvk = GroupVersionKind {
        group: K::group(&()).to_string(),
        version: K::version(&()).to_string(),
        kind: K::kind(&()).to_string(),
    };
    let (api, lp) = (ctx.all::<K>(), ListParams::default());
    let err = |e| ctx.err("list", &plural, None, e);
    let objects: Vec<serde_json::Value> = if whole {
        let list = api.list(&lp).await.map_err(err)?;
        let objects = list.items.iter().map(serde_json::to_value);
        objects
            .collect::<Result<_, _>>()
            .map_err(|e| Failure::internal(e.to_string()))?
    } else {
        let list = api.list_metadata(&lp).await.map_err(err)?;
        let metadata = list.items.iter().map(|o| &o.metadata);
        metadata
            .map(|m| serde_json::json!({ "metadata": m }))
            .collect()
    };
    Ok(objects.into_iter().map(|o| (gvk.clone(), o)).collect())
}

/// The findings among `objects`, owned objects naming the workload to fix.
pub fn findings(
    objects: &[(GroupVersionKind, serde_json::Value)],
) -> Result<Vec<Finding>, Failure> {
    let owners: Owners = objects
        .iter()
        .filter(|(g, _)| matches!(g.kind.as_str(), "ReplicaSet" | "Job"))
        .filter_map(|(g, o)| {
            let (kind, name) = crate::legacy::controller(o)?;
            let m = &o["metadata"];
            let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
            Some(((g.kind.clone(), s("namespace"), s("name")), (kind, name)))
        })
        .collect();
    let mut out = Vec::new();
    for (gvk, o) in objects {
        if let Some(f) = inspect(gvk, o, &owners).map_err(Failure::usage)? {
            out.push(f);
        }
    }
    Ok(out)
}

async fn scan_objects(ctx: &Ctx) -> Result<Vec<(GroupVersionKind, serde_json::Value)>, Failure> {
    let lists = futures::future::join_all([
        list::<Deployment>(ctx, true).boxed(),
        list::<StatefulSet>(ctx, true).boxed(),
        list::<DaemonSet>(ctx, true).boxed(),
        list::<ReplicaSet>(ctx, true).boxed(),
        list::<Job>(ctx, true).boxed(),
        list::<CronJob>(ctx, true).boxed(),
        list::<Pod>(ctx, false).boxed(),
        list::<Service>(ctx, false).boxed(),
        list::<ConfigMap>(ctx, false).boxed(),
        list::<Secret>(ctx, false).boxed(),
        list::<ServiceAccount>(ctx, false).boxed(),
        list::<Role>(ctx, false).boxed(),
        list::<RoleBinding>(ctx, false).boxed(),
        list::<ResourceQuota>(ctx, false).boxed(),
        list::<LimitRange>(ctx, false).boxed(),
        list::<Ingress>(ctx, false).boxed(),
    ])
    .await;
    Ok(lists.into_iter().collect::<Result<Vec<_>, _>>()?.concat())
}

/// Sends the finding's merge patch to its object, of any of the kinds listed.
async fn apply_fix(ctx: &Ctx, f: &Finding) -> Result<(), Failure> {
    let g = &f.gvk;
    let gvk = kube::api::GroupVersionKind::gvk(&g.group, &g.version, &g.kind);
    let resource = ApiResource::from_gvk(&gvk);
    let api: Api<DynamicObject> = match &f.namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    };
    api.patch(&f.name, &PatchParams::default(), &Patch::Merge(&f.patch))
        .await
        .map_err(|e| ctx.err("patch", &resource.plural, f.namespace.as_deref(), e))?;
    Ok(())
}

fn object_id(f: &Finding) -> String {
    match &f.namespace {
        Some(ns) => format!("{}/{ns}/{}", f.kind.to_lowercase(), f.name),
        None => format!("{}/{}", f.kind.to_lowercase(), f.name),
    }
}

pub async fn run(args: LabelsArgs, ctx: &Ctx) -> Result<Outcome, Failure> {
    let progress = progress("labels: scanning for legacy keys");
    let mut objects = list::<Namespace>(ctx, false).await?;
    if args.objects {
        objects.extend(scan_objects(ctx).await?);
    }
    let findings = findings(&objects)?;
    drop(progress);
    if args.fix && !args.dry_run {
        for f in findings.iter().filter(|f| rewritable(f)) {
            apply_fix(ctx, f).await?;
        }
    }
    let (checks, plan) = judge(&args, &objects, &findings);
    let plan_text = (!plan.is_empty()).then(|| format!("{}\n", plan.join("\n")));
    let report = Report::new("labels", &ctx.namespace, checks)
        .with_details(serde_json::json!({ "findings": findings, "dryRun": plan }));
    Ok(Outcome::listing(report, plan_text))
}

/// Whether `f` is the object `owner` (`Kind/name`) in `namespace`.
fn is(f: &Finding, owner: &str, namespace: &Option<String>) -> bool {
    f.namespace == *namespace && format!("{}/{}", f.kind, f.name) == owner
}

/// An object `--fix` patches: one no controller owns, with keys a patch can move.
fn rewritable(f: &Finding) -> bool {
    f.owner.is_none() && f.patch.as_object().is_some_and(|p| !p.is_empty())
}

/// Pure: the checks on the findings among `objects`, and the patches `--dry-run` would send.
/// With `--fix` (and no `--dry-run`), every [`rewritable`] finding has been patched.
pub fn judge(
    args: &LabelsArgs,
    objects: &[(GroupVersionKind, serde_json::Value)],
    findings: &[Finding],
) -> (Vec<Check>, Vec<String>) {
    let mut checks = Vec::new();
    let mut plan = Vec::new();
    // Whether this run rewrites the workload `owner` in `namespace`.
    let fixed_here = |owner: &str, namespace: &Option<String>| {
        args.fix
            && findings
                .iter()
                .any(|f| rewritable(f) && is(f, owner, namespace))
    };
    // Whether `owner` in `namespace` was listed and carries no legacy key (already fixed).
    let clean_owner = |owner: &str, namespace: &Option<String>| {
        let listed = objects.iter().any(|(g, o)| {
            let meta = &o["metadata"];
            format!("{}/{}", g.kind, meta["name"].as_str().unwrap_or("")) == owner
                && meta["namespace"].as_str() == namespace.as_deref()
        });
        listed && !findings.iter().any(|f| is(f, owner, namespace))
    };
    for f in findings {
        let keys = f
            .labels
            .iter()
            .chain(&f.annotations)
            .chain(&f.templates)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let id = format!("labels.{}", object_id(f));
        if let Some(owner) = &f.owner {
            // A controller's object is rewritten by the controller, from its owner's template.
            let check = if fixed_here(owner, &f.namespace) && !args.dry_run {
                Check::warn(
                    id,
                    format!(
                        "legacy keys: {keys}; its owner {owner} was rewritten, the controller replaces this object"
                    ),
                )
            } else if clean_owner(owner, &f.namespace) {
                // An old ReplicaSet is kept as rollout history until revisionHistoryLimit
                // drops it; an old Job until the CronJob's history limit does.
                Check::warn(
                    id,
                    format!(
                        "legacy keys: {keys}; its owner {owner} has none left, the controller replaces or prunes this object"
                    ),
                )
            } else {
                Check::fail(
                    id,
                    format!("legacy keys: {keys} (owned by {owner}: not patched)"),
                )
            };
            checks.push(check.remedy(format!(
                "fix the owner {owner}: kubectl ck8s labels --objects --fix rewrites its template; never patch an object a controller owns"
            )));
            continue;
        }
        if !f.blocked.is_empty() {
            checks.push(
                Check::fail(
                    format!("{id}.selector"),
                    format!("the selector uses legacy keys: {}", f.blocked.join(", ")),
                )
                .remedy(format!(
                    "a selector is immutable: recreate {}/{} with {LABEL_PREFIX} keys in its selector and template",
                    f.kind, f.name
                )),
            );
        }
        if !rewritable(f) {
            continue;
        }
        if args.fix && !args.dry_run {
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
        // How much was read: the evidence of "none".
        let namespaces = objects
            .iter()
            .filter(|(g, _)| g.kind == "Namespace")
            .count();
        let (what, read) = if args.objects {
            let read = format!(", {} objects", objects.len() - namespaces);
            (" or namespaced objects", read)
        } else {
            ("", String::new())
        };
        checks.push(Check::pass(
            "labels",
            format!("no {LEGACY_LABEL_PREFIX} keys on namespaces{what} ({namespaces} namespaces{read} read)"),
        ));
    }
    (checks, plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(labels: serde_json::Value) -> (GroupVersionKind, serde_json::Value) {
        let gvk = GroupVersionKind {
            group: String::new(),
            version: "v1".into(),
            kind: "Namespace".into(),
        };
        (
            gvk,
            json!({"metadata": {"name": "run-1", "labels": labels}}),
        )
    }

    #[test]
    fn finds_legacy_keys_only() {
        let clean = ns(json!({"codex-k8s.dev/managed-by": "codex-k8s-worker"}));
        assert!(findings(&[clean]).unwrap().is_empty());
        let f = findings(&[ns(json!({"codexk8s.io/run-id": "42"}))]).unwrap();
        assert_eq!(f[0].labels, vec!["codexk8s.io/run-id"]);
    }

    #[test]
    fn fix_moves_keys_and_keeps_existing_twins() {
        let o = ns(
            json!({"codexk8s.io/run-id": "42", "codexk8s.io/managed-by": "old", "codex-k8s.dev/managed-by": "codex-k8s-worker"}),
        );
        assert_eq!(
            findings(&[o]).unwrap()[0].patch,
            json!({"metadata": {"labels": {"codexk8s.io/run-id": null, "codex-k8s.dev/run-id": "42", "codexk8s.io/managed-by": null}}})
        );
    }

    #[test]
    fn owned_objects_name_the_workload_at_the_top() {
        let g = |group: &str, kind: &str| GroupVersionKind {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
        };
        let owned =
            |kind: &str, name: &str| json!([{"kind": kind, "name": name, "controller": true}]);
        let objects = vec![
            (
                g("apps", "ReplicaSet"),
                json!({"metadata": {"name": "w-1", "namespace": "p", "ownerReferences": owned("Deployment", "w")},
                "spec": {"template": {"metadata": {"labels": {"codexk8s.io/a": "1"}}}}}),
            ),
            (
                g("", "Pod"),
                json!({"metadata": {"name": "w-1-x", "namespace": "p", "labels": {"codexk8s.io/a": "1"}, "ownerReferences": owned("ReplicaSet", "w-1")}}),
            ),
            (
                g("", "Pod"),
                json!({"metadata": {"name": "bare", "namespace": "p", "labels": {"codexk8s.io/a": "1"}}}),
            ),
        ];
        let f = findings(&objects).unwrap();
        assert_eq!(f[0].owner.as_deref(), Some("Deployment/w"));
        assert_eq!(
            f[0].templates,
            ["spec.template.metadata.labels[codexk8s.io/a]"]
        );
        assert_eq!(f[1].owner.as_deref(), Some("Deployment/w"));
        assert_eq!(f[2].owner, None);
    }

    fn args(fix: bool, dry_run: bool) -> LabelsArgs {
        LabelsArgs {
            objects: false,
            fix,
            dry_run,
        }
    }

    fn judged(
        args: &LabelsArgs,
        objects: &[(GroupVersionKind, serde_json::Value)],
    ) -> (Vec<Check>, Vec<String>) {
        judge(args, objects, &findings(objects).unwrap())
    }

    #[test]
    fn legacy_keys_fail_until_fixed_and_a_dry_run_shows_the_patch() {
        use crate::report::Status;
        let objects = [ns(json!({"codexk8s.io/run-id": "42"}))];
        let (checks, plan) = judged(&args(false, false), &objects);
        assert_eq!(
            (checks[0].id.as_str(), checks[0].status),
            ("labels.namespace/run-1", Status::Fail)
        );
        assert!(
            checks[0]
                .remedy
                .as_deref()
                .unwrap()
                .contains("labels --fix rewrites")
        );
        assert!(plan.is_empty());
        let (checks, plan) = judged(&args(true, true), &objects);
        assert_eq!(checks[0].status, Status::Fail);
        assert_eq!(plan.len(), 1);
        assert!(
            plan[0].starts_with("would patch namespace/run-1: "),
            "{plan:?}"
        );
        let (checks, plan) = judged(&args(true, false), &objects);
        assert_eq!(checks[0].status, Status::Pass);
        assert!(
            checks[0].detail.starts_with("rewrote codexk8s.io/run-id"),
            "{checks:?}"
        );
        assert!(plan.is_empty());
    }

    #[test]
    fn no_finding_is_one_pass_with_what_was_read() {
        let objects = [ns(json!({"codex-k8s.dev/run-id": "42"}))];
        let (checks, _) = judged(&args(false, false), &objects);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].id, "labels");
        assert!(
            checks[0].detail.ends_with("(1 namespaces read)"),
            "{checks:?}"
        );
    }

    #[test]
    fn an_owned_object_warns_once_its_owner_is_rewritten() {
        use crate::report::Status;
        let g = |group: &str, kind: &str| GroupVersionKind {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
        };
        let objects = vec![
            (
                g("apps", "Deployment"),
                json!({"metadata": {"name": "w", "namespace": "p"},
                "spec": {"selector": {"matchLabels": {"app": "w"}}, "template": {"metadata": {"labels": {"app": "w", "codexk8s.io/a": "1"}}}}}),
            ),
            (
                g("", "Pod"),
                json!({"metadata": {"name": "w-x", "namespace": "p", "labels": {"codexk8s.io/a": "1"},
                "ownerReferences": [{"kind": "Deployment", "name": "w", "controller": true}]}}),
            ),
        ];
        let pod = |checks: Vec<Check>| {
            checks
                .into_iter()
                .find(|c| c.id == "labels.pod/p/w-x")
                .unwrap()
        };
        let (checks, _) = judged(&args(false, false), &objects);
        assert_eq!(pod(checks).status, Status::Fail);
        let (checks, _) = judged(&args(true, false), &objects);
        let owned = pod(checks);
        assert_eq!(owned.status, Status::Warn);
        assert!(
            owned
                .detail
                .contains("its owner Deployment/w was rewritten"),
            "{owned:?}"
        );
    }
}
