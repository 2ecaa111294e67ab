//! What the audit judges with: the installed webhook's configuration, or the cluster's own
//! ValidatingAdmissionPolicies with the Namespaces and params they read.

use crate::cluster::Ctx;
use crate::exit::Failure;
use crate::policy::{ClusterSnapshot, runtime};
use ck8s_policy_runtime::{PolicySet, SettingsFile};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DynamicObject, ListParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// The installed webhook's `--config`: the file its Deployment's container is given, read
/// from the ConfigMap mounted at that path. No Deployment: the policies' defaults.
pub(super) async fn installed_config(
    ctx: &Ctx,
    name: &str,
    namespace: &str,
) -> Result<(SettingsFile, String), Failure> {
    let deployments: Api<Deployment> = ctx.in_ns(namespace);
    let Some(d) = ctx.get_opt(deployments, "deployments", name).await? else {
        return Ok((
            SettingsFile::default(),
            format!("defaults (no Deployment {name} in {namespace}; pass --config FILE)"),
        ));
    };
    let pod = d.spec.and_then(|s| s.template.spec).unwrap_or_default();
    let container = pod
        .containers
        .iter()
        .find(|c| c.name == name)
        .or(pod.containers.first());
    let Some(path) = container
        .into_iter()
        .flat_map(|c| c.args.iter().flatten())
        .find_map(|a| a.strip_prefix("--config="))
    else {
        return Ok((
            SettingsFile::default(),
            format!("defaults (Deployment {namespace}/{name} runs without --config)"),
        ));
    };
    let unreadable = || {
        Failure::usage(format!(
            "cannot tell which ConfigMap holds {path} in Deployment {namespace}/{name}"
        ))
        .with_help("pass the webhook's configuration with --config FILE")
    };
    // The volume mounted at the file's directory (or at the file, with subPath).
    let mount = container
        .into_iter()
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())
        .ok_or_else(unreadable)?;
    let key = match &mount.sub_path {
        Some(sub) if !sub.is_empty() => sub.clone(),
        _ => path[mount.mount_path.len()..]
            .trim_start_matches('/')
            .to_string(),
    };
    let cm_name = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.config_map.as_ref())
        .map(|c| c.name.clone())
        .ok_or_else(unreadable)?;
    let cms: Api<ConfigMap> = ctx.in_ns(namespace);
    let cm = cms
        .get(&cm_name)
        .await
        .map_err(|e| ctx.err("get", "configmaps", Some(namespace), e))?;
    let text = cm.data.as_ref().and_then(|d| d.get(&key)).ok_or_else(|| {
        Failure::usage(format!("ConfigMap {namespace}/{cm_name} has no key {key}"))
    })?;
    let origin = format!("ConfigMap {namespace}/{cm_name} ({key}), the webhook's --config");
    let file = SettingsFile::parse(text).map_err(|e| Failure::usage(format!("{origin}: {e}")))?;
    Ok((file, origin))
}

/// The cluster's ValidatingAdmissionPolicies and bindings as a set, and the Namespaces and
/// params they read, listed once.
pub(super) async fn cluster_vaps(ctx: &Ctx) -> Result<(PolicySet, ClusterSnapshot), Failure> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let policies: Api<ValidatingAdmissionPolicy> = ctx.all();
    let bindings: Api<ValidatingAdmissionPolicyBinding> = ctx.all();
    let lp = ListParams::default();
    let mut text = String::new();
    for p in ctx
        .list(policies, "validatingadmissionpolicies", &lp)
        .await?
    {
        text.push_str(&json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy", "metadata": {"name": p.name_any()}, "spec": p.spec})
        .to_string());
        text.push_str("\n---\n");
    }
    for b in ctx
        .list(bindings, "validatingadmissionpolicybindings", &lp)
        .await?
    {
        text.push_str(&json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": b.name_any()}, "spec": b.spec})
        .to_string());
        text.push_str("\n---\n");
    }
    let runtime = runtime()?;
    let set = PolicySet::build(
        &runtime,
        &ck8s_policy_runtime::PolicySources::new()
            .vap_text("the cluster's ValidatingAdmissionPolicies", text),
    )
    .map_err(|e| Failure::usage(e.to_string()))?;
    if set.is_empty() {
        return Err(
            Failure::usage("the cluster has no ValidatingAdmissionPolicy to audit with")
                .with_help("drop --cluster-vaps to audit with the webhook's policies"),
        );
    }
    let mut snapshot = ClusterSnapshot::default();
    let namespaces: Api<Namespace> = ctx.all();
    for ns in namespaces
        .list(&lp)
        .await
        .map_err(|e| ctx.err("list", "namespaces", None, e))?
    {
        snapshot.namespaces.insert(
            ns.name_any(),
            serde_json::to_value(&ns).map_err(|e| Failure::internal(e.to_string()))?,
        );
    }
    for kind in &set.vap_needs().param_kinds {
        let (group, version) = kind
            .api_version
            .split_once('/')
            .unwrap_or(("", &kind.api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind.kind);
        let (ar, _) = kube::discovery::pinned_kind(&ctx.client, &gvk)
            .await
            .map_err(|e| ctx.err("discover", &kind.kind, None, e))?;
        let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ar);
        for o in api
            .list(&lp)
            .await
            .map_err(|e| ctx.err("list", &ar.plural, None, e))?
        {
            let mut v = serde_json::to_value(&o).map_err(|e| Failure::internal(e.to_string()))?;
            v["apiVersion"] = json!(kind.api_version);
            v["kind"] = json!(kind.kind);
            snapshot.params.push(v);
        }
    }
    Ok((set, snapshot))
}
