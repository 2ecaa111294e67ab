//! `kubectl ck8s diagnose build`: the AI slot build runbook (RB-CK8S-AISLOT-BUILD-0001).
//!
//! Signature A: Kaniko cache `MANIFEST_UNKNOWN`. Signature B: `codegen-check` failing on
//! `git checkout --detach` because `CODEXK8S_BUILD_REF` carries a CLI flag.

use crate::cluster::objects::{JobState, job_time};
use crate::cluster::{Ctx, not_found_is_none};
use crate::exit::{Failure, Verdict};
use crate::names::*;
use crate::report::{Check, Report};
use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{ListParams, LogParams};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DiagnoseCommand {
    /// Classify AI slot build failures (cache MANIFEST_UNKNOWN, build-ref) and show the mitigation.
    Build {
        /// How far back to read logs and jobs.
        #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
        since: Duration,
        /// Verification after mitigation: the last 30 minutes must be clean.
        #[arg(long)]
        verify: bool,
    },
}

pub const SIGNATURE_A: &[&str] = &["MANIFEST_UNKNOWN", "retrieving image from cache"];
pub const SIGNATURE_B: &[&str] = &["checkout --detach", "unknown switch", "is not a commit"];
pub const BUILD_JOB_WORDS: &[&str] = &["kaniko", "mirror", "build", "codegen-check"];
pub const VERIFY_WINDOW: Duration = Duration::from_secs(30 * 60);

pub const MITIGATION_A: &str = "A (cache MANIFEST_UNKNOWN): 1) set CODEXK8S_KANIKO_CACHE_ENABLED=false in the runtime configuration (kubectl ck8s mitigate kaniko-cache); 2) make sure the codex-k8s-control-plane rollout completed; 3) retry the failed task/deploy in the ai slot";
pub const MITIGATION_B: &str = "B (build-ref, git checkout --detach): 1) check CODEXK8S_BUILD_REF in the runtime configuration; 2) normalize it to a valid git ref: main, feature/<branch> or a commit SHA, never CLI flags (-b, --...) (kubectl ck8s mitigate build-ref --ref main); 3) retry codegen-check/runtime deploy and make sure the job ends Complete";
pub const ESCALATION: &str = "escalate to SRE on-call (and the Owner if a platform rollback is needed) if the error repeats more than 2 times in a row after mitigation, mirror jobs and registry availability degrade together, or recovery takes longer than 30 minutes; attach the run id/issue id, control-plane/worker log fragments, the list of failed jobs and the time of the first/last error";

/// One log line from one source, with its timestamp when the server gave one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    pub source: String,
    pub time: Option<DateTime<Utc>>,
    pub text: String,
}

/// Splits `kubectl logs --timestamps` output into lines.
pub fn parse_log(source: &str, text: &str) -> Vec<LogLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (time, rest) = match l.split_once(' ') {
                Some((ts, rest)) => match DateTime::parse_from_rfc3339(ts) {
                    Ok(t) => (Some(t.with_timezone(&Utc)), rest),
                    Err(_) => (None, l),
                },
                None => (None, l),
            };
            LogLine {
                source: source.into(),
                time,
                text: rest.to_string(),
            }
        })
        .collect()
}

pub fn is_signature_a(line: &str) -> bool {
    SIGNATURE_A.iter().any(|p| line.contains(p))
}

pub fn is_signature_b(line: &str) -> bool {
    SIGNATURE_B.iter().any(|p| line.contains(p))
        || (line.contains(BUILD_REF)
            && ["error", "invalid", "fail", "fatal"]
                .iter()
                .any(|w| line.to_lowercase().contains(w)))
}

/// Everything the diagnosis judges, fetched once.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub now: DateTime<Utc>,
    pub window: Duration,
    pub verify: bool,
    pub lines: Vec<LogLine>,
    pub jobs: Vec<Job>,
    pub runtime_config: Option<ConfigMap>,
    /// The build-ref policy's verdict on the current `CODEXK8S_BUILD_REF` (None when unset).
    pub build_ref_verdict: Option<Result<(), Vec<String>>>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Findings {
    pub signature_a: Vec<LogLine>,
    pub signature_b: Vec<LogLine>,
    pub failed_jobs: Vec<String>,
    pub kaniko_cache_enabled: Option<String>,
    pub build_ref: Option<String>,
    pub mitigation: Vec<&'static str>,
    pub escalate: Vec<String>,
}

pub fn config_value(cm: &Option<ConfigMap>, key: &str) -> Option<String> {
    cm.as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get(key))
        .cloned()
}

fn span(lines: &[LogLine]) -> String {
    let times: Vec<_> = lines.iter().filter_map(|l| l.time).collect();
    match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) => format!(
            ", first {} last {}",
            a.format("%H:%M:%SZ"),
            b.format("%H:%M:%SZ")
        ),
        _ => String::new(),
    }
}

/// The diagnosis: pure.
pub fn diagnose(input: &Input) -> (Vec<Check>, Findings) {
    let since = input.now - chrono::Duration::from_std(input.window).unwrap_or_default();
    let recent = |l: &&LogLine| l.time.is_none_or(|t| t >= since);
    let mut f = Findings {
        signature_a: input
            .lines
            .iter()
            .filter(recent)
            .filter(|l| is_signature_a(&l.text))
            .cloned()
            .collect(),
        signature_b: input
            .lines
            .iter()
            .filter(recent)
            .filter(|l| is_signature_b(&l.text))
            .cloned()
            .collect(),
        failed_jobs: input
            .jobs
            .iter()
            .filter(|j| {
                j.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| BUILD_JOB_WORDS.iter().any(|w| n.contains(w)))
            })
            .filter(|j| JobState::of(j) == JobState::Failed)
            .filter(|j| job_time(j).is_none_or(|t| t >= since))
            .filter_map(|j| j.metadata.name.clone())
            .collect(),
        kaniko_cache_enabled: config_value(&input.runtime_config, KANIKO_CACHE),
        build_ref: config_value(&input.runtime_config, BUILD_REF),
        ..Default::default()
    };
    let window = humantime::format_duration(input.window).to_string();
    let mut checks = Vec::new();
    for (id, lines, mitigation, what) in [
        (
            "build.signature-a",
            &f.signature_a,
            MITIGATION_A,
            "cache MANIFEST_UNKNOWN",
        ),
        (
            "build.signature-b",
            &f.signature_b,
            MITIGATION_B,
            "build-ref checkout",
        ),
    ] {
        checks.push(if lines.is_empty() {
            Check::pass(id, format!("no {what} errors in the last {window}"))
        } else {
            Check::fail(
                id,
                format!(
                    "{} {what} log lines in the last {window}{}",
                    lines.len(),
                    span(lines)
                ),
            )
            .remedy(mitigation)
        });
    }
    checks.push(if f.failed_jobs.is_empty() {
        Check::pass(
            "build.failed-jobs",
            format!("no failed build/mirror/kaniko/codegen-check jobs in the last {window}"),
        )
    } else {
        Check::fail(
            "build.failed-jobs",
            format!("failed: {}", f.failed_jobs.join(", ")),
        )
        .remedy("kubectl -n <ns> logs job/<name> --tail=200; classify by signature A/B above")
    });
    let cache_on = f.kaniko_cache_enabled.as_deref() == Some("true");
    checks.push(match (&f.kaniko_cache_enabled, cache_on, f.signature_a.is_empty()) {
        (v, true, false) => Check::fail("build.kaniko-cache", format!("{KANIKO_CACHE}={} with MANIFEST_UNKNOWN errors", v.as_deref().unwrap_or(""))).remedy(MITIGATION_A),
        (_, true, true) => Check::warn("build.kaniko-cache", format!("{KANIKO_CACHE}=true: re-enabling the cache brings MANIFEST_UNKNOWN back")).remedy("the safe default is CODEXK8S_KANIKO_CACHE_ENABLED=false (kubectl ck8s mitigate kaniko-cache)"),
        (Some(v), false, _) => Check::pass("build.kaniko-cache", format!("{KANIKO_CACHE}={v}")),
        (None, false, _) => Check::pass("build.kaniko-cache", format!("{KANIKO_CACHE} not set (default false)")),
    });
    checks.push(match (&f.build_ref, &input.build_ref_verdict) {
        (None, _) | (_, None) => Check::pass(
            "build.build-ref",
            format!("{BUILD_REF} not set in {RUNTIME_CONFIG}"),
        ),
        (Some(v), Some(Ok(()))) => Check::pass(
            "build.build-ref",
            format!("{BUILD_REF}={v:?} accepted by the build-ref policy"),
        ),
        (Some(v), Some(Err(problems))) => Check::fail(
            "build.build-ref",
            format!(
                "{BUILD_REF}={v:?} rejected by the build-ref policy: {}",
                problems.join("; ")
            ),
        )
        .remedy(MITIGATION_B),
    });
    if !f.signature_a.is_empty() || cache_on && !f.failed_jobs.is_empty() {
        f.mitigation.push(MITIGATION_A);
    }
    if !f.signature_b.is_empty() || matches!(input.build_ref_verdict, Some(Err(_))) {
        f.mitigation.push(MITIGATION_B);
    }
    // Escalation: the mitigation is in place yet the errors keep coming, or they last too long.
    let mitigated_a = !cache_on;
    let mitigated_b = !matches!(input.build_ref_verdict, Some(Err(_)));
    if mitigated_a && f.signature_a.len() > 2 {
        f.escalate.push(format!(
            "cache disabled but MANIFEST_UNKNOWN seen {} times",
            f.signature_a.len()
        ));
    }
    if mitigated_b && f.signature_b.len() > 2 {
        f.escalate.push(format!(
            "{BUILD_REF} valid but checkout errors seen {} times",
            f.signature_b.len()
        ));
    }
    let times: Vec<_> = f
        .signature_a
        .iter()
        .chain(&f.signature_b)
        .filter_map(|l| l.time)
        .collect();
    if let (Some(first), Some(last)) = (times.iter().min(), times.iter().max())
        && *last - *first > chrono::Duration::minutes(30)
    {
        f.escalate.push(format!(
            "errors for {} minutes (> 30)",
            (*last - *first).num_minutes()
        ));
    }
    if f.failed_jobs.iter().any(|j| j.contains("mirror")) && !f.signature_a.is_empty() {
        f.escalate.push(
            "mirror jobs fail together with cache errors: check registry availability".into(),
        );
    }
    checks.push(if f.escalate.is_empty() {
        Check::pass("build.escalation", "no escalation trigger")
    } else {
        Check::warn("build.escalation", f.escalate.join("; ")).remedy(ESCALATION)
    });
    if input.verify {
        let clean =
            f.signature_a.is_empty() && f.signature_b.is_empty() && f.failed_jobs.is_empty();
        checks.push(if clean {
            Check::pass("build.verify", "the last 30 minutes are clean: no MANIFEST_UNKNOWN, no checkout/build-ref errors, no failed build jobs")
        } else {
            Check::fail("build.verify", "errors in the last 30 minutes: recovery not confirmed").remedy(ESCALATION)
        });
    }
    (checks, f)
}

/// Logs of every pod selected by a deployment (or a job), with timestamps.
async fn logs_of(
    ctx: &Ctx,
    selector: &str,
    source: &str,
    lp: &LogParams,
) -> Result<Vec<LogLine>, Failure> {
    let ns = ctx.namespace.as_str();
    let pods = ctx
        .ns::<Pod>()
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| ctx.err("list", "pods", Some(ns), e))?;
    let mut out = Vec::new();
    for p in pods.items {
        let name = p.metadata.name.unwrap_or_default();
        match ctx.ns::<Pod>().logs(&name, lp).await {
            Ok(text) => out.extend(parse_log(source, &text)),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 400 => {}
            Err(e) => return Err(ctx.err("get", "pods/log", Some(ns), e)),
        }
    }
    Ok(out)
}

async fn deployment_logs(ctx: &Ctx, name: &str, lp: &LogParams) -> Result<Vec<LogLine>, Failure> {
    let d = not_found_is_none(ctx.ns::<Deployment>().get(name).await)
        .map_err(|e| ctx.err("get", "deployments.apps", Some(&ctx.namespace), e))?;
    let Some(labels) = d.and_then(|d| d.spec).and_then(|s| s.selector.match_labels) else {
        return Ok(vec![]);
    };
    let selector = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    logs_of(ctx, &selector, &format!("deploy/{name}"), lp).await
}

pub async fn run(cmd: DiagnoseCommand, ctx: &Ctx) -> Result<Verdict, Failure> {
    let DiagnoseCommand::Build { since, verify } = cmd;
    let window = if verify { VERIFY_WINDOW } else { since };
    let ns = ctx.namespace.clone();
    let progress = ctx.progress("diagnose: reading logs and jobs");
    let since_lp = LogParams {
        since_seconds: Some(window.as_secs() as i64),
        timestamps: true,
        ..Default::default()
    };
    let tail_lp = LogParams {
        tail_lines: Some(200),
        timestamps: true,
        ..Default::default()
    };
    let (cp, worker, codegen, jobs, cm) = futures::join!(
        deployment_logs(ctx, CONTROL_PLANE, &since_lp),
        deployment_logs(ctx, WORKER, &since_lp),
        async {
            logs_of(
                ctx,
                &format!("job-name={CODEGEN_CHECK_JOB}"),
                &format!("job/{CODEGEN_CHECK_JOB}"),
                &tail_lp,
            )
            .await
        },
        async { ctx.ns::<Job>().list(&ListParams::default()).await },
        async { ctx.ns::<ConfigMap>().get(RUNTIME_CONFIG).await },
    );
    let runtime_config =
        not_found_is_none(cm).map_err(|e| ctx.err("get", "configmaps", Some(&ns), e))?;
    let build_ref = config_value(&runtime_config, BUILD_REF);
    progress.set("diagnose: judging CODEXK8S_BUILD_REF with the build-ref policy");
    let build_ref_verdict = match &build_ref {
        Some(v) => Some(crate::buildref::judge(v)?),
        None => None,
    };
    drop(progress);
    let input = Input {
        now: Utc::now(),
        window,
        verify,
        lines: [cp?, worker?, codegen?].concat(),
        jobs: jobs
            .map_err(|e| ctx.err("list", "jobs.batch", Some(&ns), e))?
            .items,
        runtime_config,
        build_ref_verdict,
    };
    let (checks, findings) = diagnose(&input);
    let mut text = String::new();
    for (name, lines) in [
        ("signature A", &findings.signature_a),
        ("signature B", &findings.signature_b),
    ] {
        for l in lines.iter().take(5) {
            text.push_str(&format!("{name} [{}] {}\n", l.source, l.text));
        }
    }
    for m in &findings.mitigation {
        text.push_str(&format!("mitigation {m}\n"));
    }
    if !findings.escalate.is_empty() {
        text.push_str(&format!("escalation: {ESCALATION}\n"));
    }
    Report::new("diagnose build", &ns, checks)
        .with_details(serde_json::to_value(&findings).unwrap_or_default())
        .print(ctx.out.format, Some(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;
    use serde_json::json;

    #[test]
    fn signatures_as_in_the_runbook() {
        for (line, a, b) in [
            (
                "Error while retrieving image from cache: gcr.io/x MANIFEST_UNKNOWN: manifest unknown",
                true,
                false,
            ),
            ("mirror step: MANIFEST_UNKNOWN for golang:1.24", true, false),
            ("git checkout --detach -b feature/x", false, true),
            ("error: unknown switch `b'", false, true),
            ("fatal: '-b feature/x' is not a commit", false, true),
            ("invalid CODEXK8S_BUILD_REF \"-b feature/x\"", false, true),
            ("CODEXK8S_BUILD_REF=main", false, false),
            ("build succeeded run_id=42", false, false),
        ] {
            assert_eq!(
                (is_signature_a(line), is_signature_b(line)),
                (a, b),
                "{line}"
            );
        }
    }

    #[test]
    fn timestamps_are_parsed() {
        let l = parse_log(
            "deploy/x",
            "2026-02-26T10:00:00Z MANIFEST_UNKNOWN\nplain line\n",
        );
        assert!(l[0].time.is_some());
        assert_eq!(l[0].text, "MANIFEST_UNKNOWN");
        assert_eq!(l[1].time, None);
    }

    fn input(
        lines: &str,
        cm: serde_json::Value,
        verdict: Option<Result<(), Vec<String>>>,
    ) -> Input {
        Input {
            now: Utc::now(),
            window: Duration::from_secs(6 * 3600),
            lines: parse_log("deploy/codex-k8s-control-plane", lines),
            runtime_config: Some(serde_json::from_value(json!({"data": cm})).unwrap()),
            build_ref_verdict: verdict,
            ..Default::default()
        }
    }

    fn status(checks: &[Check], id: &str) -> Status {
        checks.iter().find(|c| c.id == id).unwrap().status
    }

    #[test]
    fn cache_signature_with_cache_on_fails_both() {
        let (checks, f) = diagnose(&input(
            "Error while retrieving image from cache MANIFEST_UNKNOWN\n",
            json!({KANIKO_CACHE: "true"}),
            None,
        ));
        assert_eq!(status(&checks, "build.signature-a"), Status::Fail);
        assert_eq!(status(&checks, "build.kaniko-cache"), Status::Fail);
        assert_eq!(f.mitigation, vec![MITIGATION_A]);
    }

    #[test]
    fn rejected_build_ref_fails() {
        let (checks, f) = diagnose(&input(
            "fatal: '-b feature/x' is not a commit\n",
            json!({BUILD_REF: "-b feature/x"}),
            Some(Err(vec!["flag".into()])),
        ));
        assert_eq!(status(&checks, "build.build-ref"), Status::Fail);
        assert_eq!(status(&checks, "build.signature-b"), Status::Fail);
        assert_eq!(f.mitigation, vec![MITIGATION_B]);
    }

    #[test]
    fn repeats_after_mitigation_escalate() {
        let lines = "MANIFEST_UNKNOWN\nMANIFEST_UNKNOWN\nMANIFEST_UNKNOWN\n";
        let (checks, _) = diagnose(&input(lines, json!({KANIKO_CACHE: "false"}), None));
        assert_eq!(status(&checks, "build.escalation"), Status::Warn);
    }

    #[test]
    fn old_lines_are_outside_the_window() {
        let old = (Utc::now() - chrono::Duration::hours(7)).to_rfc3339();
        let (checks, _) = diagnose(&input(
            &format!("{old} MANIFEST_UNKNOWN\n"),
            json!({}),
            None,
        ));
        assert_eq!(status(&checks, "build.signature-a"), Status::Pass);
    }
}
