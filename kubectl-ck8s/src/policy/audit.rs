//! `policy audit`: judge what is already in the cluster with the webhook's engine, policies
//! and configuration, as the webhook would judge each object on CREATE.
//!
//! What is judged, exactly:
//! - kinds: every resource discovery serves (preferred version, `list` verb) that a loaded
//!   policy's rules cover for CREATE or UPDATE, less those the webhook configuration's
//!   `matchConditions` exclude (evaluated per kind, `cluster::webhooks`);
//! - objects: cluster-scoped ones, and namespaced ones in the namespaces the webhook's
//!   `namespaceSelector` selects (a Namespace itself by its own labels), matching its
//!   `objectSelector`; without an installed ValidatingWebhookConfiguration, all of them;
//! - configuration: `--config FILE`, else the installed webhook's (`--config` of the
//!   ck8s-admission Deployment, read from the ConfigMap mounted there), else the defaults.
//!
//! Lists are paged (`--chunk-size`), metadata-only where every policy judging a kind reads
//! only metadata, and at most `--concurrency` kinds are listed at once.

use super::check::parts;
use super::{PolicySelection, policy_set};
use crate::cluster::objects;
use crate::cluster::webhooks::{Write, conditions_send, unevaluable};
use crate::cluster::{Ctx, not_found_is_none};
use crate::exit::{Failure, Verdict};
use crate::output::OutputFormat;
use ck8s_policy_runtime::api::{Operation, Rule, reads_only_metadata};
use ck8s_policy_runtime::{
    ClusterReads, ConfigSource, Decision, FindingKind, PolicySet, SettingsFile, Subject,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::{Api, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The webhook as `deploy/` installs it.
const WEBHOOK: &str = "ck8s-admission";
const WEBHOOK_NAMESPACE: &str = "ck8s-system";
/// The name of every report the audit writes, and its field manager.
pub const REPORT_NAME: &str = "ck8s-policy-audit";
const FIELD_MANAGER: &str = "kubectl-ck8s-audit";

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub selection: PolicySelection,
    /// Policy modes and settings (the webhook's --config file); by default the installed
    /// webhook's own, read from the cluster.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The ValidatingWebhookConfiguration and Deployment of the installed webhook.
    #[arg(long, default_value = WEBHOOK)]
    pub webhook: String,
    /// The namespace of the installed webhook's Deployment.
    #[arg(long, default_value = WEBHOOK_NAMESPACE)]
    pub webhook_namespace: String,
    /// Objects per list request (limit/continue paging).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_size: u32,
    /// Kinds listed at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Create or update the PolicyReports (one per namespace) and the ClusterPolicyReport
    /// in the cluster, server-side.
    #[arg(long)]
    pub apply: bool,
    /// Exit 0 even when objects violate (the in-cluster CronJob: the reports carry them);
    /// errors still exit 2.
    #[arg(long)]
    pub exit_zero: bool,
    /// Judge with the cluster's own ValidatingAdmissionPolicies and bindings instead of the
    /// webhook's policies: what a VAP never did to the objects that predate it. Each is
    /// matched by its own constraints, with the cluster's Namespaces and params.
    #[arg(long, conflicts_with_all = ["policies", "no_builtin", "config"])]
    pub cluster_vaps: bool,
}

/// One finding on one object: a table row, an element of `-o json`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub api_version: String,
    pub policy: String,
    /// `deny`, `warn`, `audit` (the policy's mode) or `error` (it could not judge).
    pub effect: &'static str,
    pub path: String,
    pub message: String,
    /// The offending literal; never present for a Secret's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub fix: String,
    #[serde(skip)]
    pub uid: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub violations: usize,
    pub violating_objects: usize,
    pub objects: usize,
    /// `plural.group` of every kind judged.
    pub resources: Vec<String>,
    pub namespaces: Vec<String>,
    pub exempt_namespaces: Vec<String>,
    pub policies: Vec<String>,
    /// Where the configuration came from.
    pub config: String,
    /// What the audit could not reproduce of the webhook's configuration, if anything.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub summary: Summary,
    pub violations: Vec<Violation>,
}

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

pub async fn run(args: AuditArgs, ctx: &Ctx) -> Result<Verdict, Failure> {
    let (set, config_origin, scope, reads) = if args.cluster_vaps {
        let (set, reads) = cluster_vaps(ctx).await?;
        let scope = WebhookScope {
            notes: vec![
                "the cluster's ValidatingAdmissionPolicies: each matched by its own constraints and bindings".into(),
            ],
            ..Default::default()
        };
        (
            set,
            "the cluster's bindings".to_string(),
            scope,
            Some(reads),
        )
    } else {
        let (config, config_origin) = match &args.config {
            Some(path) => (ConfigSource::File(path.clone()), path.display().to_string()),
            None => {
                let (settings, origin) =
                    installed_config(ctx, &args.webhook, &args.webhook_namespace).await?;
                (ConfigSource::Given(settings), origin)
            }
        };
        let set = policy_set(&args.selection, config)?;
        let scope = webhook_scope(ctx, &args.webhook).await?;
        (set, config_origin, scope, None)
    };
    if args.apply {
        reports_served(ctx).await?;
    }
    let reads = reads.as_ref().map(|r| r as &dyn ClusterReads);
    let mut notes = scope.notes.clone();
    let before = notes.len();
    let resources = judged_resources(ctx, &set, &scope, ctx.request_timeout, &mut notes).await?;
    // Kinds of an API group that could not be discovered were not read: no all-clear on them.
    let unaudited = notes.len() - before;
    let progress = Bar::new(resources.len(), ctx.out.progress);
    let timestamp = jiff::Timestamp::now();
    let results: Vec<(Vec<Violation>, usize, Vec<String>)> =
        futures::stream::iter(resources.iter())
            .map(|(ar, scope_, whole)| {
                let (set, scope, progress) = (&set, &scope, &progress);
                let chunk = args.chunk_size;
                let judge = Judge { set, reads };
                async move {
                    let r =
                        audit_resource(ctx, judge, scope, ar, scope_.clone(), *whole, chunk).await;
                    progress.done(&ar.plural);
                    r
                }
            })
            .buffer_unordered(args.concurrency as usize)
            .try_collect()
            .await?;
    drop(progress);
    let mut violations: Vec<Violation> = Vec::new();
    let mut objects = 0;
    let mut passes: BTreeMap<String, usize> = BTreeMap::new();
    for (v, n, clean) in results {
        violations.extend(v);
        objects += n;
        for ns in clean {
            *passes.entry(ns).or_default() += 1;
        }
    }
    violations.sort();
    let violating: BTreeSet<(&str, &str, &str)> = violations
        .iter()
        .map(|v| (v.kind.as_str(), v.namespace.as_str(), v.name.as_str()))
        .collect();
    let namespaces = match &scope.namespaces {
        Some(set) => set.iter().cloned().collect(),
        None => Vec::new(),
    };
    let report = Report {
        summary: Summary {
            violations: violations.len(),
            violating_objects: violating.len(),
            objects,
            resources: resources.iter().map(|(ar, _, _)| qualified(ar)).collect(),
            namespaces,
            exempt_namespaces: scope.exempt.clone(),
            policies: set.names().map(str::to_string).collect(),
            config: config_origin,
            notes,
        },
        violations,
    };
    let verdict = if (report.violations.is_empty() && unaudited == 0) || args.exit_zero {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let reports = if args.apply || ctx.out.format == OutputFormat::Policyreport {
        policy_reports(&report, &passes, timestamp)
    } else {
        Vec::new()
    };
    if args.apply {
        apply_reports(ctx, &reports).await?;
    }
    match ctx.out.format {
        OutputFormat::Policyreport => {
            for r in &reports {
                let text = serde_saphyr::to_string(r)
                    .map_err(|e| Failure::internal(format!("cannot print the report: {e}")))?;
                print!("---\n{text}");
            }
            Ok(verdict)
        }
        OutputFormat::Table => {
            print_table(&report, args.apply.then_some(reports.len()));
            Ok(verdict)
        }
        // The one report shape: the summary and the violations are its details.
        format => {
            crate::report::Report::structured("policy audit", verdict, &report).print(format, None)
        }
    }
}

/// The installed webhook's `--config`: the file its Deployment's container is given, read
/// from the ConfigMap mounted at that path. No Deployment: the policies' defaults.
async fn installed_config(
    ctx: &Ctx,
    name: &str,
    namespace: &str,
) -> Result<(SettingsFile, String), Failure> {
    let deployments: Api<Deployment> = ctx.in_ns(namespace);
    let Some(d) = not_found_is_none(deployments.get(name).await)
        .map_err(|e| ctx.err("get", "deployments", Some(namespace), e))?
    else {
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
    let path = container
        .into_iter()
        .flat_map(|c| c.args.iter().flatten())
        .find_map(|a| a.strip_prefix("--config="))
        .map(str::to_string);
    let Some(path) = path else {
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

/// What the installed ValidatingWebhookConfiguration sends the webhook.
async fn webhook_scope(ctx: &Ctx, name: &str) -> Result<WebhookScope, Failure> {
    let api: Api<ValidatingWebhookConfiguration> = ctx.all();
    let vwc = not_found_is_none(api.get(name).await)
        .map_err(|e| ctx.err("get", "validatingwebhookconfigurations", None, e))?;
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

fn qualified(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}.{}", ar.plural, ar.group)
    }
}

/// The kinds to list: `(resource, scope, whole objects?)`, in discovery order.
async fn judged_resources(
    ctx: &Ctx,
    set: &PolicySet,
    scope: &WebhookScope,
    timeout: std::time::Duration,
    notes: &mut Vec<String>,
) -> Result<Vec<(ApiResource, Scope, bool)>, Failure> {
    let vap_rules: Vec<Vec<Rule>> = set
        .vap_policies()
        .iter()
        .map(PolicySet::vap_rules)
        .collect();
    let groups: BTreeSet<String> = set
        .policies()
        .flat_map(|(p, _)| p.metadata.rules.iter())
        .chain(vap_rules.iter().flatten())
        .flat_map(|r| r.api_groups.clone())
        .collect();
    let listed = ctx
        .client
        .list_api_groups()
        .await
        .map_err(|e| ctx.err("discover", "API groups", None, e))?;
    let mut names: Vec<String> = std::iter::once(String::new())
        .chain(listed.groups.into_iter().map(|g| g.name))
        .filter(|g| groups.contains("*") || groups.contains(g))
        .collect();
    names.sort();
    // One group at a time, as kubectl does: an aggregated API that does not answer
    // (metrics.k8s.io down) is reported, not the end of the audit.
    let mut found = Vec::new();
    for name in &names {
        // The client retries a 503 with backoff for minutes; a group gets one request
        // timeout in all.
        let run = Discovery::new(ctx.client.clone())
            .filter(&[name.as_str()])
            .run();
        let shown = if name.is_empty() { "core" } else { name };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(d)) => found.push(d),
            Ok(Err(e)) => notes.push(format!(
                "API group {shown} could not be discovered ({e}): its kinds are not audited"
            )),
            Err(_) => notes.push(format!(
                "API group {shown} could not be discovered (no answer within {}): its kinds are not audited",
                humantime::format_duration(timeout)
            )),
        }
    }
    let mut out = Vec::new();
    for group in found.iter().flat_map(|d| d.groups()) {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) || !scope.sends(&ar) {
                continue;
            }
            let judging: Vec<_> = set
                .policies()
                .filter(|(p, _)| {
                    [Operation::Create, Operation::Update]
                        .iter()
                        .any(|&op| p.metadata.inspects(&ar.group, &ar.version, &ar.plural, op))
                })
                .collect();
            let vap_judging = vap_rules.iter().flatten().any(|r| {
                [Operation::Create, Operation::Update]
                    .iter()
                    .any(|&op| r.matches(&ar.group, &ar.version, &ar.plural, op))
            });
            if judging.is_empty() && !vap_judging {
                continue;
            }
            // Whole objects unless every policy judging the kind sees only its metadata.
            let whole = !reads_only_metadata(&ar.group, &ar.kind)
                || vap_judging
                || judging.iter().any(|(p, _)| {
                    p.abi_version() == ck8s_policy_runtime::api::ABI_VERSION_JSON
                        || p.metadata.raw_object
                });
            out.push((ar, caps.scope.clone(), whole));
        }
    }
    Ok(out)
}

/// Lists one kind page by page and judges every object in scope. Returns the findings, the
/// number of objects judged, and one namespace entry per clean (object, policy) pair.
/// The policies an audit judges with, and what their VAPs read from the cluster.
#[derive(Clone, Copy)]
struct Judge<'a> {
    set: &'a PolicySet,
    reads: Option<&'a dyn ClusterReads>,
}

/// The cluster's ValidatingAdmissionPolicies and bindings as a set, and the Namespaces and
/// params they read, listed once.
async fn cluster_vaps(ctx: &Ctx) -> Result<(PolicySet, ClusterSnapshot), Failure> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let policies: Api<ValidatingAdmissionPolicy> = ctx.all();
    let bindings: Api<ValidatingAdmissionPolicyBinding> = ctx.all();
    let lp = ListParams::default();
    let mut text = String::new();
    for p in policies
        .list(&lp)
        .await
        .map_err(|e| ctx.err("list", "validatingadmissionpolicies", None, e))?
    {
        text.push_str(&json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy", "metadata": {"name": p.name_any()}, "spec": p.spec})
        .to_string());
        text.push_str("\n---\n");
    }
    for b in bindings
        .list(&lp)
        .await
        .map_err(|e| ctx.err("list", "validatingadmissionpolicybindings", None, e))?
    {
        text.push_str(&json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": b.name_any()}, "spec": b.spec})
        .to_string());
        text.push_str("\n---\n");
    }
    let runtime = super::runtime()?;
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
    let needs = set.vap_needs();
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
    for kind in &needs.param_kinds {
        let (group, version) = kind
            .api_version
            .split_once('/')
            .unwrap_or(("", &kind.api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind.kind);
        let (ar, _) = kube::discovery::pinned_kind(&ctx.client, &gvk)
            .await
            .map_err(|e| ctx.err("discover", &kind.kind, None, e))?;
        let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ar);
        let mut items = Vec::new();
        for o in api
            .list(&lp)
            .await
            .map_err(|e| ctx.err("list", &ar.plural, None, e))?
        {
            let mut v = serde_json::to_value(&o).map_err(|e| Failure::internal(e.to_string()))?;
            v["apiVersion"] = json!(kind.api_version);
            v["kind"] = json!(kind.kind);
            items.push(v);
        }
        snapshot.params.extend(items);
    }
    Ok((set, snapshot))
}

/// Namespaces and params read once, for the whole audit.
#[derive(Default)]
struct ClusterSnapshot {
    namespaces: BTreeMap<String, Value>,
    params: Vec<Value>,
}

impl ck8s_policy_runtime::cel::ParamSource for ClusterSnapshot {
    fn get(
        &self,
        kind: &ck8s_policy_runtime::cel::ParamKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, String> {
        ck8s_policy_runtime::cel::LocalParams(&self.params).get(kind, namespace, name)
    }

    fn list(
        &self,
        kind: &ck8s_policy_runtime::cel::ParamKind,
        namespace: Option<&str>,
        selector: &LabelSelector,
    ) -> Result<Vec<Value>, String> {
        ck8s_policy_runtime::cel::LocalParams(&self.params).list(kind, namespace, selector)
    }
}

impl ClusterReads for ClusterSnapshot {
    fn namespace(&self, name: &str) -> Result<Option<Value>, String> {
        Ok(self.namespaces.get(name).cloned())
    }
}

async fn audit_resource(
    ctx: &Ctx,
    judge: Judge<'_>,
    scope: &WebhookScope,
    ar: &ApiResource,
    res_scope: Scope,
    whole: bool,
    chunk: u32,
) -> Result<(Vec<Violation>, usize, Vec<String>), Failure> {
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), ar);
    let err = |e| ctx.err("list", &qualified(ar), None, e);
    let (mut violations, mut judged, mut passes) = (Vec::new(), 0, Vec::new());
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(chunk);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let (objects, next): (Vec<Value>, Option<String>) = if whole {
            let list = api.list(&lp).await.map_err(err)?;
            let next = list.metadata.continue_.clone();
            let items = list
                .items
                .into_iter()
                .map(|o| serde_json::to_value(o).map_err(|e| Failure::internal(e.to_string())))
                .collect::<Result<_, _>>()?;
            (items, next)
        } else {
            let list = api.list_metadata(&lp).await.map_err(err)?;
            let next = list.metadata.continue_.clone();
            let items = list
                .items
                .into_iter()
                .map(|o| json!({ "metadata": o.metadata }))
                .collect();
            (items, next)
        };
        for mut object in objects {
            // List items may come without their type.
            object["apiVersion"] = json!(ar.api_version);
            object["kind"] = json!(ar.kind);
            if !in_scope(scope, &object, &res_scope, &ar.kind) {
                continue;
            }
            judged += 1;
            let raw = serde_json::value::to_raw_value(&object)
                .map_err(|e| Failure::usage(e.to_string()))?;
            let mut subject = Subject::from_manifest(&raw, Operation::Create).map_err(|e| {
                Failure::usage(format!("{} {}: {e}", ar.kind, object["metadata"]["name"]))
            })?;
            subject.resource = (ar.group.clone(), ar.version.clone(), ar.plural.clone());
            let evaluation = judge.set.evaluate_in(&subject, judge.reads);
            let decision = Decision::from_evaluation(&evaluation);
            let inspected = match &evaluation {
                ck8s_policy_runtime::Evaluation::Judged(o) => o
                    .iter()
                    .filter(|o| {
                        !matches!(o.result, ck8s_policy_runtime::OutcomeResult::NotInspected)
                    })
                    .count(),
                ck8s_policy_runtime::Evaluation::NotJudged(_) => 0,
            };
            let found = findings(&decision, &object);
            let failed: BTreeSet<&str> = found.iter().map(|v| v.policy.as_str()).collect();
            for _ in 0..inspected.saturating_sub(failed.len()) {
                passes.push(subject.namespace.to_string());
            }
            violations.extend(found);
        }
        match next.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok((violations, judged, passes))
}

/// Whether the webhook would be sent this object (namespace and object selectors).
fn in_scope(scope: &WebhookScope, object: &Value, res_scope: &Scope, kind: &str) -> bool {
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

/// The findings of one decision on one object, with the webhook's effect.
fn findings(decision: &Decision, object: &Value) -> Vec<Violation> {
    let meta = &object["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let all = decision
        .denials
        .iter()
        .map(|f| ("deny", f))
        .chain(decision.warnings.iter().map(|f| ("warn", f)))
        .chain(decision.audits.iter().map(|f| ("audit", f)));
    all.map(|(effect, f)| {
        let (path, message, value, fix) = parts(f);
        Violation {
            kind: s(&object["kind"]),
            namespace: s(&meta["namespace"]),
            name: s(&meta["name"]),
            api_version: s(&object["apiVersion"]),
            policy: f.policy.clone(),
            effect: match f.kind {
                FindingKind::Error(_) => "error",
                FindingKind::Violation(_) | FindingKind::Vap { .. } => effect,
            },
            path,
            message,
            value,
            fix,
            uid: s(&meta["uid"]),
        }
    })
    .collect()
}

/// `wgpolicyk8s.io/v1alpha2` reports: a PolicyReport per namespace judged (a clean one says
/// so in its summary) and a ClusterPolicyReport for cluster-scoped objects.
pub fn policy_reports(
    report: &Report,
    passes: &BTreeMap<String, usize>,
    at: jiff::Timestamp,
) -> Vec<Value> {
    let mut by_ns: BTreeMap<String, Vec<&Violation>> = BTreeMap::new();
    // Every namespace judged gets a report, a clean one too (it replaces an older one).
    for ns in report.summary.namespaces.iter().chain(passes.keys()) {
        by_ns.entry(ns.clone()).or_default();
    }
    for v in &report.violations {
        by_ns.entry(v.namespace.clone()).or_default().push(v);
    }
    by_ns.entry(String::new()).or_default();
    let timestamp = json!({ "seconds": at.as_second(), "nanos": at.subsec_nanosecond() });
    by_ns
        .into_iter()
        .map(|(ns, violations)| {
            let results: Vec<Value> = violations
                .iter()
                .map(|v| {
                    let result = match v.effect {
                        "deny" => "fail",
                        "error" => "error",
                        _ => "warn",
                    };
                    let mut message = v.message.clone();
                    if let Some(value) = &v.value {
                        message.push_str(&format!(" (got {value:?})"));
                    }
                    let mut resource = json!({ "apiVersion": v.api_version, "kind": v.kind, "name": v.name });
                    if !v.namespace.is_empty() {
                        resource["namespace"] = json!(v.namespace);
                    }
                    if !v.uid.is_empty() {
                        resource["uid"] = json!(v.uid);
                    }
                    json!({
                        "source": "ck8s",
                        "policy": v.policy,
                        "rule": v.policy,
                        "result": result,
                        "scored": true,
                        "message": message,
                        "properties": { "path": v.path, "fix": v.fix, "mode": v.effect },
                        "resources": [resource],
                        "timestamp": timestamp,
                    })
                })
                .collect();
            let count = |r: &str| results.iter().filter(|x| x["result"] == r).count();
            let pass = passes.get(&ns).copied().unwrap_or(0);
            let summary = json!({ "pass": pass, "fail": count("fail"), "warn": count("warn"), "error": count("error"), "skip": 0 });
            let mut metadata = json!({
                "name": REPORT_NAME,
                "labels": { "app.kubernetes.io/managed-by": "kubectl-ck8s" },
            });
            let kind = if ns.is_empty() {
                "ClusterPolicyReport"
            } else {
                metadata["namespace"] = json!(ns);
                "PolicyReport"
            };
            json!({
                "apiVersion": "wgpolicyk8s.io/v1alpha2",
                "kind": kind,
                "metadata": metadata,
                "summary": summary,
                "results": results,
            })
        })
        .collect()
}

/// `--apply` needs the PolicyReport CRDs: checked before the audit lists every object, not
/// after.
async fn reports_served(ctx: &Ctx) -> Result<(), Failure> {
    const GROUP_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
    let served = match ctx.client.list_api_group_resources(GROUP_VERSION).await {
        Ok(list) => ["policyreports", "clusterpolicyreports"]
            .iter()
            .all(|r| list.resources.iter().any(|x| x.name == *r)),
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => return Err(ctx.err("discover", GROUP_VERSION, None, e)),
    };
    if served {
        return Ok(());
    }
    Err(Failure::not_found(format!(
        "--apply: the API server does not serve policyreports and clusterpolicyreports ({GROUP_VERSION})"
    ))
    .with_help(MISSING_CRDS))
}

const MISSING_CRDS: &str = "install the PolicyReport CRDs (wgpolicyk8s.io_policyreports.yaml, wgpolicyk8s.io_clusterpolicyreports.yaml) first";

/// Creates or updates every report, server-side (field manager `kubectl-ck8s-audit`).
async fn apply_reports(ctx: &Ctx, reports: &[Value]) -> Result<(), Failure> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for r in reports {
        let kind = r["kind"].as_str().unwrap_or("");
        let plural = kind.to_ascii_lowercase() + "s";
        let ar = ApiResource {
            group: "wgpolicyk8s.io".into(),
            version: "v1alpha2".into(),
            api_version: "wgpolicyk8s.io/v1alpha2".into(),
            kind: kind.into(),
            plural: plural.clone(),
        };
        let ns = r["metadata"]["namespace"].as_str();
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
            None => Api::all_with(ctx.client.clone(), &ar),
        };
        match api.patch(REPORT_NAME, &params, &Patch::Apply(r)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(Failure::not_found(format!(
                    "the API server does not serve {plural}.wgpolicyk8s.io/v1alpha2"
                ))
                .with_help(MISSING_CRDS));
            }
            // The API server authorizes an apply that creates the report as create: name
            // the verb it refused, not the request's.
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("cannot create") => {
                let e = kube::Error::Api(s);
                return Err(ctx.err("create", &format!("{plural}.wgpolicyk8s.io"), ns, e));
            }
            Err(e) => return Err(ctx.err("patch", &format!("{plural}.wgpolicyk8s.io"), ns, e)),
        }
    }
    Ok(())
}

fn print_table(report: &Report, applied: Option<usize>) {
    if !report.violations.is_empty() {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::NOTHING);
        table.set_header(["KIND", "OBJECT", "POLICY", "FIELD", "FIX"]);
        for v in &report.violations {
            let object = match v.namespace.as_str() {
                "" => v.name.clone(),
                ns => format!("{ns}/{}", v.name),
            };
            let field = match (&v.value, v.effect) {
                (_, "error") => v.message.clone(),
                (Some(value), _) => format!("{} (got {value:?})", v.path),
                (None, _) => v.path.clone(),
            };
            // The policy's mode where it does not deny (the webhook only warns or audits).
            let policy = match v.effect {
                "deny" => v.policy.clone(),
                effect => format!("{} ({effect})", v.policy),
            };
            table.add_row([v.kind.clone(), object, policy, field, v.fix.clone()]);
        }
        println!("{table}");
    }
    let s = &report.summary;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    println!(
        "{} on {} ({} judged in {}; policies: {}; config: {})",
        plural(s.violations, "violation"),
        plural(s.violating_objects, "object"),
        plural(s.objects, "object"),
        plural(s.resources.len(), "kind"),
        s.policies.join(", "),
        s.config,
    );
    if !s.exempt_namespaces.is_empty() {
        println!(
            "exempt by the webhook's namespaceSelector: {}",
            s.exempt_namespaces.join(", ")
        );
    }
    for n in &s.notes {
        println!("note: {n}");
    }
    if s.violations == 0 && s.notes.iter().any(|n| n.contains("are not audited")) {
        println!("not clean: kinds of an API group that could not be discovered were not read");
    }
    if let Some(n) = applied {
        println!(
            "applied {} (wgpolicyk8s.io/v1alpha2, {REPORT_NAME})",
            plural(n, "policy report")
        );
    }
}

/// A progress bar over the kinds, on a terminal only (`Output::progress`); a count, where
/// the other flows' spinner would not say how far the audit is.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(kinds: usize, terminal: bool) -> Self {
        if !terminal {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(kinds as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("audit {bar:30} {pos}/{len} kinds {msg}")
        {
            bar.set_style(style);
        }
        Bar(Some(bar))
    }
    fn done(&self, kind: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(kind.to_string());
            bar.inc(1);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
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
