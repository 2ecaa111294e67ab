//! `policy check -f FILE|DIR|-`: judge manifests offline exactly as the webhook would judge
//! them on CREATE (or `--operation UPDATE`), with the same policies, settings and modes.

use super::manifests::{self, Manifest};
use super::{ClusterSnapshot, PolicySelection, policy_set, table};
use crate::exit::{Failure, Verdict};
use crate::report::Outcome;
use ck8s_policy_runtime::api::{Operation, ValueSource};
use ck8s_policy_runtime::{ConfigSource, Decision, Finding, FindingKind, PolicySet, Subject};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Manifest file, directory (recursive: *.yaml, *.yml, *.json) or `-` for stdin; repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub selection: PolicySelection,
    /// Policy modes and settings, the webhook's `--config` file (policies: {NAME: {mode, onError, settings}}).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The admission operation to judge the objects as.
    #[arg(long, value_enum, default_value_t = OperationArg::Create)]
    pub operation: OperationArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum OperationArg {
    Create,
    Update,
}

impl From<OperationArg> for Operation {
    fn from(o: OperationArg) -> Self {
        match o {
            OperationArg::Create => Operation::Create,
            OperationArg::Update => Operation::Update,
        }
    }
}

/// One finding on one object: what `-o json|yaml` prints, one table row.
#[derive(Debug, Serialize)]
pub struct Row {
    pub file: String,
    pub document: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(flatten)]
    pub finding: FindingText,
}

/// What a finding says, in every report of one (`check`, `audit`, `test`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct FindingText {
    pub policy: String,
    /// `deny`, `warn` or `audit`: what the finding does to the request (in `audit`, `error`:
    /// the policy could not judge).
    pub effect: &'static str,
    pub path: String,
    pub message: String,
    /// The offending literal; never present for a Secret's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub fix: String,
}

impl FindingText {
    /// A Secret's value is dropped here even if a policy returned it, so no output path can
    /// show it.
    pub fn of(effect: &'static str, finding: &Finding) -> Self {
        let base = FindingText {
            policy: finding.policy.clone(),
            effect,
            ..Default::default()
        };
        match &finding.kind {
            FindingKind::Violation(v) if v.source == ValueSource::Secret => FindingText {
                path: v.path.clone(),
                message: format!("{} (value from a Secret, not shown)", v.message),
                fix: v.fix.clone(),
                ..base
            },
            FindingKind::Violation(v) => FindingText {
                path: v.path.clone(),
                message: v.message.clone(),
                value: v.value.clone(),
                fix: v.fix.clone(),
                ..base
            },
            FindingKind::Error(e) => FindingText {
                message: format!("policy error: {e}"),
                ..base
            },
            FindingKind::Vap { path, text } => FindingText {
                path: path.clone(),
                message: text.clone(),
                ..base
            },
        }
    }

    /// The message, and the offending literal if there is one to show.
    pub fn message_and_value(&self) -> String {
        match &self.value {
            Some(v) => format!("{} (got {v:?})", self.message),
            None => self.message.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub allowed: bool,
    pub objects: usize,
    pub denials: usize,
    pub warnings: usize,
    pub audits: usize,
    pub policies: Vec<String>,
    pub findings: Vec<Row>,
}

/// Every finding of a decision with its effect, denials first.
pub fn effects(decision: &Decision) -> impl Iterator<Item = (&'static str, &Finding)> {
    let d = decision.denials.iter().map(|f| ("deny", f));
    let w = decision.warnings.iter().map(|f| ("warn", f));
    let a = decision.audits.iter().map(|f| ("audit", f));
    d.chain(w).chain(a)
}

pub fn run(args: CheckArgs) -> Result<Outcome, Failure> {
    let files = manifests::expand(&args.files).map_err(Failure::usage)?;
    let objects = manifests::read_all(&files).map_err(Failure::usage)?;
    let config = args
        .config
        .map_or(ConfigSource::Defaults, ConfigSource::File);
    let set = policy_set(&args.selection, config)?;
    let report = evaluate(&set, &objects, args.operation.into())?;
    let text = table_text(&report);
    let envelope = crate::report::Report::structured(
        "policy check",
        Verdict::pass_if(report.allowed),
        &report,
    );
    Ok(Outcome::text(envelope, text))
}

/// The Namespaces among the manifests: what a ValidatingAdmissionPolicy's `namespaceSelector`
/// and `namespaceObject` see offline. Others are not known, and such a policy fails closed
/// saying so (give the Namespace manifests with `-f`).
fn manifest_namespaces(objects: &[Manifest]) -> ClusterSnapshot {
    let namespaces = objects
        .iter()
        // Collected last to first: of two Namespaces with one name, the first is kept.
        .rev()
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(m.object.get()).ok())
        .filter(|o| o["apiVersion"] == "v1" && o["kind"] == "Namespace")
        .filter_map(|mut n| {
            let name = n["metadata"]["name"].as_str()?.to_string();
            // The API server labels every namespace with its name.
            n["metadata"]["labels"]["kubernetes.io/metadata.name"] = name.clone().into();
            Some((name, n))
        })
        .collect();
    ClusterSnapshot {
        namespaces,
        params: Vec::new(),
    }
}

fn evaluate(
    set: &PolicySet,
    objects: &[Manifest],
    operation: Operation,
) -> Result<Report, Failure> {
    let namespaces = manifest_namespaces(objects);
    let mut report = Report {
        allowed: true,
        objects: objects.len(),
        denials: 0,
        warnings: 0,
        audits: 0,
        policies: set.names().map(str::to_string).collect(),
        findings: Vec::new(),
    };
    for m in objects {
        let subject = Subject::from_manifest(&m.object, operation)
            .map_err(|e| Failure::usage(format!("{}: {e}", m.origin)))?;
        let decision = Decision::from_evaluation(&set.evaluate_in(&subject, Some(&namespaces)));
        report.allowed &= decision.allowed;
        report.denials += decision.denials.len();
        report.warnings += decision.warnings.len();
        report.audits += decision.audits.len();
        report
            .findings
            .extend(effects(&decision).map(|(effect, f)| Row {
                file: m.origin.file.clone(),
                document: m.origin.document,
                item: m.origin.item,
                kind: subject.kind.kind.clone(),
                namespace: subject.namespace.to_string(),
                name: subject.name.to_string(),
                finding: FindingText::of(effect, f),
            }));
    }
    Ok(report)
}

/// What `-o table` shows: the findings, then the summary line.
fn table_text(report: &Report) -> String {
    let mut text = String::new();
    if !report.findings.is_empty() {
        let mut table = table([
            "FILE", "OBJECT", "POLICY", "EFFECT", "PATH", "MESSAGE", "FIX",
        ]);
        for r in &report.findings {
            let item = r.item.map(|i| format!(".{i}")).unwrap_or_default();
            let file = format!("{}#{}{item}", r.file, r.document);
            let object = match r.namespace.as_str() {
                "" => format!("{}/{}", r.kind, r.name),
                ns => format!("{}/{} -n {ns}", r.kind, r.name),
            };
            let f = &r.finding;
            table.add_row([
                file,
                object,
                f.policy.clone(),
                f.effect.to_string(),
                f.path.clone(),
                f.message_and_value(),
                f.fix.clone(),
            ]);
        }
        text.push_str(&format!("{table}\n"));
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    text.push_str(&format!(
        "{}: {}, {}, {} in {} (policies: {})\n",
        if report.allowed { "allowed" } else { "denied" },
        plural(report.denials, "denial"),
        plural(report.warnings, "warning"),
        plural(report.audits, "audit finding"),
        plural(report.objects, "object"),
        report.policies.join(", "),
    ));
    text
}
