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
//!
//! The flow, one module a step: [`policies`] (what to judge with), [`scope`] (which objects
//! the installed webhook is sent), [`discovery`] (which kinds to list), [`judge`] (list and
//! judge), [`reports`] (the PolicyReports) and [`table`] (what `-o table` shows).

mod discovery;
mod judge;
mod policies;
mod reports;
mod scope;
mod table;

use super::check::FindingText;
use super::{PolicySelection, policy_set};
use crate::cluster::Ctx;
use crate::exit::{Failure, Verdict};
use crate::output::OutputFormat;
use crate::report::{Outcome, TableView};
use ck8s_policy_runtime::{ClusterReads, ConfigSource};
use discovery::{judged_resources, qualified};
use futures::{StreamExt, TryStreamExt};
use judge::audit_resource;
use policies::{cluster_vaps, installed_config};
use reports::{apply_reports, policy_reports, reports_served};
use scope::{WebhookScope, webhook_scope};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The webhook as `deploy/` installs it.
const WEBHOOK: &str = "ck8s-admission";
const WEBHOOK_NAMESPACE: &str = "ck8s-system";

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
    /// Its effect: `deny`, `warn`, `audit` (the policy's mode) or `error` (it could not judge).
    #[serde(flatten)]
    pub finding: FindingText,
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

/// `format`: the PolicyReports are built only for `--apply` or `-o policyreport`.
pub async fn run(args: AuditArgs, ctx: &Ctx, format: OutputFormat) -> Result<Outcome, Failure> {
    let (set, config_origin, scope, reads) = if args.cluster_vaps {
        let (set, reads) = cluster_vaps(ctx).await?;
        let note = "the cluster's ValidatingAdmissionPolicies: each matched by its own constraints and bindings";
        let scope = WebhookScope {
            notes: vec![note.into()],
            ..Default::default()
        };
        (set, "the cluster's bindings".into(), scope, Some(reads))
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
    let resources = judged_resources(ctx, &set, &scope, &mut notes).await?;
    // Kinds of an API group that could not be discovered were not read: no all-clear on them.
    let unaudited = notes.len() - scope.notes.len();
    // A count of the kinds, where the other flows' spinner would not say how far the audit
    // is; indicatif draws it on a terminal only (as `output::progress`) and clears it when
    // dropped.
    let progress = indicatif::ProgressBar::new(resources.len() as u64)
        .with_finish(indicatif::ProgressFinish::AndClear);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("audit {bar:30} {pos}/{len} kinds {msg}")
    {
        progress.set_style(style);
    }
    let timestamp = jiff::Timestamp::now();
    let results: Vec<(Vec<Violation>, usize, Vec<String>)> = futures::stream::iter(&resources)
        .map(|resource| {
            let (set, scope, progress) = (&set, &scope, &progress);
            let chunk = args.chunk_size;
            async move {
                let r = audit_resource(ctx, set, reads, scope, resource, chunk).await;
                progress.set_message(resource.0.plural.clone());
                progress.inc(1);
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
    let mut report = Report {
        summary: Summary {
            violations: violations.len(),
            violating_objects: violating.len(),
            objects,
            resources: resources.iter().map(|(ar, _, _)| qualified(ar)).collect(),
            namespaces: scope.namespaces.iter().flatten().cloned().collect(),
            exempt_namespaces: scope.exempt.clone(),
            policies: set.names().map(str::to_string).collect(),
            config: config_origin,
            notes,
        },
        violations,
    };
    let verdict =
        Verdict::pass_if((report.violations.is_empty() && unaudited == 0) || args.exit_zero);
    let reports = if args.apply || format == OutputFormat::Policyreport {
        policy_reports(&report, &passes, timestamp)
    } else {
        Vec::new()
    };
    let written = if args.apply {
        let gone = apply_reports(ctx, &reports).await?;
        let written = reports.len() - gone.len();
        report.summary.notes.extend(gone);
        Some(written)
    } else {
        None
    };
    let documents = (format == OutputFormat::Policyreport)
        .then(|| reports.iter().map(serde_json::to_value).collect())
        .transpose()
        .map_err(|e| Failure::internal(format!("cannot encode a PolicyReport: {e}")))?;
    Ok(Outcome::Report {
        table: TableView::Text(table::text(&report, written)),
        // The one report shape: the summary and the violations are its details.
        report: crate::report::Report::structured("policy audit", verdict, &report),
        policy_reports: documents,
    })
}
