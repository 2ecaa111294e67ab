//! `kubectl ck8s diagnose build`: the AI slot build runbook (RB-CK8S-AISLOT-BUILD-0001).
//!
//! Signature A: Kaniko cache `MANIFEST_UNKNOWN`. Signature B: `codegen-check` failing on
//! `git checkout --detach` because `CODEXK8S_BUILD_REF` carries a CLI flag.
//!
//! Every container of every pod of `codex-k8s-control-plane`, `codex-k8s-worker` and the
//! `codex-k8s-codegen-check` Job is read, and the previous instance of each container that
//! restarted inside the window (`kubectl logs --previous`); logs are streamed and matched line
//! by line. A log that cannot be read is reported (`build.logs` warns), never skipped.
//!
//! A check passes only on evidence: the signatures and the escalation are judged on the logs
//! that were read. With no log of the control plane or the worker read, they are `skip` (not
//! judged) and `build.logs` fails, so the verdict is never an all-clear on nothing read.

use crate::cluster::Ctx;
use crate::cluster::logs::{self, Range, Source};
use crate::cluster::objects::{self, JobState, job_time};
use crate::exit::Failure;
use crate::names::*;
use crate::output::progress;
use crate::report::{Check, Outcome, Report, listing};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::ListParams;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DiagnoseCommand {
    /// Classify AI slot build failures (cache MANIFEST_UNKNOWN, build-ref) and show the mitigation.
    Build {
        /// How far back to read logs and jobs.
        #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
        since: Duration,
        /// Verification after mitigation: the last 30 minutes must be clean (overrides --since).
        #[arg(long)]
        verify: bool,
    },
}

pub const SIGNATURE_A: &[&str] = &["MANIFEST_UNKNOWN", "retrieving image from cache"];
pub const SIGNATURE_B: &[&str] = &["checkout --detach", "unknown switch", "is not a commit"];
pub const BUILD_JOB_WORDS: &[&str] = &["kaniko", "mirror", "build", "codegen-check"];
pub const VERIFY_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Lines of the codegen-check Job's log read (the runbook's `--tail=200`).
pub const JOB_TAIL: i64 = 200;
/// Logs read at once.
const CONCURRENT_LOGS: usize = 4;

pub const MITIGATION_A: &str = "A (cache MANIFEST_UNKNOWN): 1) set CODEXK8S_KANIKO_CACHE_ENABLED=false in the runtime configuration (kubectl ck8s mitigate kaniko-cache); 2) make sure the codex-k8s-control-plane rollout completed; 3) retry the failed task/deploy in the ai slot";
pub const MITIGATION_B: &str = "B (build-ref, git checkout --detach): 1) check CODEXK8S_BUILD_REF in the runtime configuration; 2) normalize it to a valid git ref: main, feature/<branch> or a commit SHA, never CLI flags (-b, --...) (kubectl ck8s mitigate build-ref --ref main); 3) retry codegen-check/runtime deploy and make sure the job ends Complete";
pub const ESCALATION: &str = "escalate to SRE on-call (and the Owner if a platform rollback is needed) if the error repeats more than 2 times in a row after mitigation, mirror jobs and registry availability degrade together, or recovery takes longer than 30 minutes; attach the run id/issue id, control-plane/worker log fragments, the list of failed jobs and the time of the first/last error";

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

/// The time range judged, and which flag chose it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub since: Timestamp,
    pub until: Timestamp,
    pub seconds: u64,
    /// `--since 6h` or `--verify (30m)`.
    pub flag: String,
}

impl Window {
    pub fn new(now: Timestamp, length: Duration, verify: bool) -> Self {
        let human = humantime::format_duration(length).to_string();
        Window {
            since: now.checked_sub(length).unwrap_or(Timestamp::MIN),
            until: now,
            seconds: length.as_secs(),
            flag: if verify {
                format!("--verify, the last {human}")
            } else {
                format!("--since {human}")
            },
        }
    }

    /// `since 2026-02-26T06:00:00Z (--since 6h)`: the window as every detail states it.
    pub fn describe(&self) -> String {
        format!("since {:.0} ({})", self.since, self.flag)
    }
}

/// Lines of one signature in one container's log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub signature: &'static str,
    pub pod: String,
    pub container: String,
    pub previous: bool,
    pub lines: usize,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
    /// The first matching line.
    pub example: String,
}

impl Finding {
    fn span(&self) -> String {
        let t = |t: Option<Timestamp>| t.map(|t| format!("{t:.0}")).unwrap_or_else(|| "?".into());
        format!(
            "pod/{} -c {}{}: {} lines, first {} last {}",
            self.pod,
            self.container,
            if self.previous { " --previous" } else { "" },
            self.lines,
            t(self.first),
            t(self.last)
        )
    }
}

/// A log that was read, and how many lines of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Read {
    #[serde(flatten)]
    pub source: Source,
    pub lines: usize,
    /// Whose pod it is: `deploy/NAME` or `job/NAME`.
    pub workload: String,
}

/// A log that could not be read (or a workload whose pods could not be found), and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unreadable {
    /// `pod/NAME -c CONTAINER [--previous]`, or `deploy/NAME`.
    pub log: String,
    pub reason: String,
}

/// What the logs hold, accumulated line by line: memory stays bounded by the number of
/// (signature, container) pairs, never the size of the logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    pub findings: BTreeMap<(&'static str, Source), Finding>,
    pub read: Vec<Read>,
    pub unreadable: Vec<Unreadable>,
}

impl Scan {
    /// Judges one line of `source`; lines stamped before `since` are outside the window.
    pub fn line(&mut self, source: &Source, since: Timestamp, time: Option<Timestamp>, text: &str) {
        if time.is_some_and(|t| t < since) {
            return;
        }
        let hits = [("A", is_signature_a(text)), ("B", is_signature_b(text))];
        for (signature, _) in hits.into_iter().filter(|(_, hit)| *hit) {
            let f = self
                .findings
                .entry((signature, source.clone()))
                .or_insert_with(|| Finding {
                    signature,
                    pod: source.pod.clone(),
                    container: source.container.clone(),
                    previous: source.previous,
                    lines: 0,
                    first: None,
                    last: None,
                    example: text.to_string(),
                });
            f.lines += 1;
            if let Some(t) = time {
                f.first = Some(f.first.map_or(t, |f| f.min(t)));
                f.last = Some(f.last.map_or(t, |l| l.max(t)));
            }
        }
    }

    pub fn merge(&mut self, other: Scan) {
        self.findings.extend(other.findings);
        self.read.extend(other.read);
        self.unreadable.extend(other.unreadable);
    }

    fn of(&self, signature: &str) -> Vec<Finding> {
        self.findings
            .values()
            .filter(|f| f.signature == signature)
            .cloned()
            .collect()
    }
}

/// Everything the diagnosis judges, fetched once.
#[derive(Debug, Clone)]
pub struct Input {
    pub window: Window,
    pub verify: bool,
    pub scan: Scan,
    pub jobs: Vec<Job>,
    pub runtime_config: Option<ConfigMap>,
    /// The build-ref policy's verdict on the current `CODEXK8S_BUILD_REF` (None when unset).
    pub build_ref_verdict: Option<Result<(), Vec<String>>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Findings {
    pub window: Window,
    pub signature_a: Vec<Finding>,
    pub signature_b: Vec<Finding>,
    pub logs_read: Vec<Read>,
    pub logs_unreadable: Vec<Unreadable>,
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

fn lines(findings: &[Finding]) -> usize {
    findings.iter().map(|f| f.lines).sum()
}

/// The diagnosis: pure.
pub fn diagnose(input: &Input) -> (Vec<Check>, Findings) {
    let w = &input.window;
    let window = w.describe();
    let mut f = Findings {
        window: w.clone(),
        signature_a: input.scan.of("A"),
        signature_b: input.scan.of("B"),
        logs_read: input.scan.read.clone(),
        logs_unreadable: input.scan.unreadable.clone(),
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
            .filter(|j| job_time(j).is_none_or(|t| t >= w.since))
            .filter_map(|j| j.metadata.name.clone())
            .collect(),
        kaniko_cache_enabled: config_value(&input.runtime_config, KANIKO_CACHE),
        build_ref: config_value(&input.runtime_config, BUILD_REF),
        mitigation: vec![],
        escalate: vec![],
    };
    let mut checks = Vec::new();
    let previous = f.logs_read.iter().filter(|r| r.source.previous).count();
    let pods = f
        .logs_read
        .iter()
        .map(|r| &r.source.pod)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let read = format!(
        "read {} container logs of {pods} pods ({previous} --previous) {window}",
        f.logs_read.len()
    );
    // The evidence the signatures are judged on: logs of the control plane and the worker.
    let platform = [CONTROL_PLANE, WORKER].map(|d| format!("deploy/{d}"));
    let evidence = f.logs_read.iter().any(|r| platform.contains(&r.workload));
    // What could not be read, as `build.logs` appends it.
    let cannot = match f.logs_unreadable.as_slice() {
        [] => String::new(),
        all => format!(
            "; cannot read {}: {}",
            all.len(),
            all.iter()
                .map(|u| format!("{}: {}", u.log, u.reason))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    let not_judged = format!(
        "not judged: no log of {CONTROL_PLANE} or {WORKER} was read {window} (see build.logs)"
    );
    checks.push(if !evidence {
        Check::fail(
            "build.logs",
            format!(
                "{read}; none of {CONTROL_PLANE} or {WORKER}: the signatures cannot be judged{cannot}"
            ),
        )
        .remedy(format!(
            "check -n/--namespace and --context; kubectl -n <ns> get deploy/{CONTROL_PLANE} deploy/{WORKER} and their pods; a 403 needs the verb \"get\" on \"pods/log\""
        ))
    } else if f.logs_unreadable.is_empty() {
        Check::pass("build.logs", read)
    } else {
        Check::warn("build.logs", format!("{read}{cannot}")).remedy(
            "kubectl -n <ns> logs pod/<pod> -c <container> [--previous]; a 403 needs the verb \"get\" on \"pods/log\"",
        )
    });
    for (id, found, mitigation, what) in [
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
        checks.push(if found.is_empty() && !evidence {
            Check::skip(id, format!("{what}: {not_judged}"))
        } else if found.is_empty() {
            Check::pass(
                id,
                format!(
                    "no {what} errors in the {} logs read {window}",
                    f.logs_read.len()
                ),
            )
        } else {
            Check::fail(
                id,
                format!(
                    "{} {what} log lines {window}: {}",
                    lines(found),
                    found
                        .iter()
                        .map(Finding::span)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )
            .remedy(mitigation)
        });
    }
    checks.push(if f.failed_jobs.is_empty() {
        Check::pass(
            "build.failed-jobs",
            format!(
                "no failed build/mirror/kaniko/codegen-check jobs among the {} jobs {window}",
                input.jobs.len()
            ),
        )
    } else {
        Check::fail(
            "build.failed-jobs",
            format!("failed {window}: {}", f.failed_jobs.join(", ")),
        )
        .remedy("kubectl -n <ns> logs job/<name> --tail=200; classify by signature A/B above")
    });
    let cache_on = f.kaniko_cache_enabled.as_deref() == Some("true");
    checks.push(match (&f.kaniko_cache_enabled, cache_on, f.signature_a.is_empty()) {
        (None, _, _) if input.runtime_config.is_none() => Check::skip("build.kaniko-cache", format!("ConfigMap {RUNTIME_CONFIG} not found: {KANIKO_CACHE} cannot be read")),
        (v, true, false) => Check::fail("build.kaniko-cache", format!("{KANIKO_CACHE}={} with MANIFEST_UNKNOWN errors", v.as_deref().unwrap_or(""))).remedy(MITIGATION_A),
        (_, true, true) => Check::warn("build.kaniko-cache", format!("{KANIKO_CACHE}=true: re-enabling the cache brings MANIFEST_UNKNOWN back")).remedy("the safe default is CODEXK8S_KANIKO_CACHE_ENABLED=false (kubectl ck8s mitigate kaniko-cache)"),
        (Some(v), false, _) => Check::pass("build.kaniko-cache", format!("{KANIKO_CACHE}={v}")),
        (None, false, _) => Check::pass("build.kaniko-cache", format!("{KANIKO_CACHE} not set (default false)")),
    });
    checks.push(match (&f.build_ref, &input.build_ref_verdict) {
        _ if input.runtime_config.is_none() => Check::skip(
            "build.build-ref",
            format!("ConfigMap {RUNTIME_CONFIG} not found: {BUILD_REF} cannot be read"),
        ),
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
    let build_ref_rejected = matches!(input.build_ref_verdict, Some(Err(_)));
    if !f.signature_b.is_empty() || build_ref_rejected {
        f.mitigation.push(MITIGATION_B);
    }
    // Escalation: the mitigation is in place yet the errors keep coming, or they last too long.
    let (a, b) = (lines(&f.signature_a), lines(&f.signature_b));
    if !cache_on && a > 2 {
        f.escalate.push(format!(
            "cache disabled but MANIFEST_UNKNOWN seen {a} times"
        ));
    }
    if !build_ref_rejected && b > 2 {
        f.escalate.push(format!(
            "{BUILD_REF} valid but checkout errors seen {b} times"
        ));
    }
    let all = f.signature_a.iter().chain(&f.signature_b);
    let first = all.clone().filter_map(|x| x.first).min();
    let last = all.filter_map(|x| x.last).max();
    if let (Some(first), Some(last)) = (first, last)
        && last.duration_since(first) > jiff::SignedDuration::from_mins(30)
    {
        f.escalate.push(format!(
            "errors for {} minutes (> 30)",
            last.duration_since(first).as_mins()
        ));
    }
    if f.failed_jobs.iter().any(|j| j.contains("mirror")) && !f.signature_a.is_empty() {
        f.escalate.push(
            "mirror jobs fail together with cache errors: check registry availability".into(),
        );
    }
    checks.push(if f.escalate.is_empty() && !evidence {
        Check::skip("build.escalation", not_judged.clone())
    } else if f.escalate.is_empty() {
        Check::pass(
            "build.escalation",
            format!(
                "no escalation trigger in the {} logs read",
                f.logs_read.len()
            ),
        )
    } else {
        Check::warn("build.escalation", f.escalate.join("; ")).remedy(ESCALATION)
    });
    if input.verify {
        let clean =
            f.signature_a.is_empty() && f.signature_b.is_empty() && f.failed_jobs.is_empty();
        checks.push(match (clean, f.logs_unreadable.is_empty()) {
            (true, _) if !evidence => Check::fail("build.verify", format!("recovery not confirmed: {not_judged}")).remedy("read the logs build.logs names, then run kubectl ck8s diagnose build --verify again"),
            (true, true) => Check::pass("build.verify", format!("clean {window}: no MANIFEST_UNKNOWN, no checkout/build-ref errors, no failed build jobs")),
            (true, false) => Check::fail("build.verify", format!("recovery not confirmed: {} logs could not be read {window}", f.logs_unreadable.len())).remedy("read the logs build.logs names, then run kubectl ck8s diagnose build --verify again"),
            (false, _) => Check::fail("build.verify", format!("errors {window}: recovery not confirmed")).remedy(ESCALATION),
        });
    }
    (checks, f)
}

/// Every container log of `pods` (and the previous instance of those restarted in the
/// window), read `CONCURRENT_LOGS` at a time.
async fn scan_pods(ctx: &Ctx, workload: &str, pods: &[Pod], window: &Window, range: Range) -> Scan {
    let mut sources = Vec::new();
    for p in pods {
        let pod = p.metadata.name.clone().unwrap_or_default();
        let restarted = logs::restarted_since(p, window.since);
        for container in logs::containers(p) {
            // The running instance, and the previous one of a container restarted in the window.
            let previous = restarted.contains(&container).then_some(true);
            for previous in [false].into_iter().chain(previous) {
                let (pod, container) = (pod.clone(), container.clone());
                sources.push(Source {
                    pod,
                    container,
                    previous,
                });
            }
        }
    }
    let api = ctx.ns::<Pod>();
    let since = window.since;
    let scans = futures::stream::iter(sources)
        .map(|source| {
            let api = api.clone();
            async move {
                let mut scan = Scan::default();
                let result = logs::for_each_line(&api, &source, range, |time, text| {
                    scan.line(&source, since, time, text)
                })
                .await;
                match result {
                    Ok(lines) => scan.read.push(Read {
                        source,
                        lines,
                        workload: workload.to_string(),
                    }),
                    Err(e) => scan.unreadable.push(Unreadable {
                        log: source.to_string(),
                        reason: reason(e),
                    }),
                }
                scan
            }
        })
        .buffer_unordered(CONCURRENT_LOGS)
        .collect::<Vec<_>>()
        .await;
    let mut all = Scan::default();
    for s in scans {
        all.merge(s);
    }
    all.read.sort_by(|a, b| a.source.cmp(&b.source));
    all.unreadable.sort_by(|a, b| a.log.cmp(&b.log));
    all
}

fn reason(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

async fn pods_of(ctx: &Ctx, selector: &str) -> Result<Vec<Pod>, Failure> {
    let lp = ListParams::default().labels(selector);
    ctx.list(ctx.ns::<Pod>(), "pods", &lp).await
}

/// The pods of a Deployment (its selector, `matchExpressions` included), or why there are none.
async fn deployment_pods(ctx: &Ctx, name: &str) -> Result<Result<Vec<Pod>, Unreadable>, Failure> {
    let d: Option<Deployment> = ctx.get_opt(ctx.ns(), "deployments.apps", name).await?;
    let missing = |reason: &str| Unreadable {
        log: format!("deploy/{name}"),
        reason: reason.into(),
    };
    let Some(selector) = d.and_then(|d| d.spec).map(|s| s.selector) else {
        return Ok(Err(missing("deployment not found")));
    };
    let selector = match objects::selector(&selector) {
        Ok(s) if !s.selects_all() => s.to_string(),
        Ok(_) => return Ok(Err(missing("the deployment has an empty selector"))),
        Err(e) => return Ok(Err(missing(&format!("its selector is invalid: {e}")))),
    };
    let pods = pods_of(ctx, &selector).await?;
    if pods.is_empty() {
        return Ok(Err(missing(&format!("no pods match {selector}"))));
    }
    Ok(Ok(pods))
}

pub async fn run(cmd: DiagnoseCommand, ctx: &Ctx) -> Result<Outcome, Failure> {
    let DiagnoseCommand::Build { since, verify } = cmd;
    let window = Window::new(
        Timestamp::now(),
        if verify { VERIFY_WINDOW } else { since },
        verify,
    );
    let ns = ctx.namespace.clone();
    let progress = progress(&format!("diagnose: reading logs {}", window.describe()));
    let codegen_selector = format!("job-name={CODEGEN_CHECK_JOB}");
    let lp = ListParams::default();
    let (cp, worker, codegen, jobs, cm) = futures::join!(
        deployment_pods(ctx, CONTROL_PLANE),
        deployment_pods(ctx, WORKER),
        pods_of(ctx, &codegen_selector),
        ctx.list(ctx.ns::<Job>(), "jobs.batch", &lp),
        ctx.get_opt(ctx.ns::<ConfigMap>(), "configmaps", RUNTIME_CONFIG),
    );
    let mut scan = Scan::default();
    let since = Range {
        since_seconds: Some(window.seconds as i64),
        tail_lines: None,
    };
    for (name, deployment) in [(CONTROL_PLANE, cp?), (WORKER, worker?)] {
        match deployment {
            Ok(pods) => {
                scan.merge(scan_pods(ctx, &format!("deploy/{name}"), &pods, &window, since).await)
            }
            Err(u) => scan.unreadable.push(u),
        }
    }
    let tail = Range {
        since_seconds: None,
        tail_lines: Some(JOB_TAIL),
    };
    let codegen_job = format!("job/{CODEGEN_CHECK_JOB}");
    scan.merge(scan_pods(ctx, &codegen_job, &codegen?, &window, tail).await);
    let runtime_config = cm?;
    let build_ref = config_value(&runtime_config, BUILD_REF);
    progress.set("diagnose: judging CODEXK8S_BUILD_REF with the build-ref policy");
    let build_ref_verdict = match &build_ref {
        Some(v) => Some(crate::buildref::judge(v)?),
        None => None,
    };
    drop(progress);
    let input = Input {
        window,
        verify,
        scan,
        jobs: jobs?,
        runtime_config,
        build_ref_verdict,
    };
    let (checks, findings) = diagnose(&input);
    let text = findings_text(&findings);
    let report = Report::new("diagnose build", &ns, checks)
        .with_details(serde_json::to_value(&findings).unwrap_or_default());
    Ok(Outcome::listing(report, Some(text)))
}

/// What `-o table` shows before the checks: the window, the findings, the mitigations.
fn findings_text(findings: &Findings) -> String {
    let mut text = format!("window: {}\n", findings.window.describe());
    let rows: Vec<Vec<String>> = findings
        .signature_a
        .iter()
        .chain(&findings.signature_b)
        .map(|f| {
            let t = |t: Option<Timestamp>| {
                t.map(|t| t.strftime("%H:%M:%SZ").to_string())
                    .unwrap_or_default()
            };
            vec![
                f.signature.to_string(),
                f.pod.clone(),
                format!(
                    "{}{}",
                    f.container,
                    if f.previous { " (previous)" } else { "" }
                ),
                f.lines.to_string(),
                t(f.first),
                t(f.last),
                f.example.clone(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        text.push_str(&listing(
            &[
                "SIG",
                "POD",
                "CONTAINER",
                "LINES",
                "FIRST",
                "LAST",
                "FIRST LINE",
            ],
            rows,
        ));
    }
    for m in &findings.mitigation {
        text.push_str(&format!("mitigation {m}\n"));
    }
    if !findings.escalate.is_empty() {
        text.push_str(&format!("escalation: {ESCALATION}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Verdict;
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

    fn src(pod: &str, container: &str, previous: bool) -> Source {
        Source {
            pod: pod.into(),
            container: container.into(),
            previous,
        }
    }

    fn at(minutes_ago: i64, now: Timestamp) -> Option<Timestamp> {
        Some(now - jiff::SignedDuration::from_mins(minutes_ago))
    }

    /// A scan of the control-plane container's log: `(minutes ago, text)` lines.
    fn input(
        lines: &[(i64, &str)],
        cm: serde_json::Value,
        verdict: Option<Result<(), Vec<String>>>,
    ) -> Input {
        let now = Timestamp::now();
        let window = Window::new(now, Duration::from_secs(6 * 3600), false);
        let mut scan = Scan::default();
        let s = src("cp-1", "codex-k8s-control-plane", false);
        for (ago, text) in lines {
            scan.line(&s, window.since, at(*ago, now), text);
        }
        scan.read.push(Read {
            source: s,
            lines: lines.len(),
            workload: format!("deploy/{CONTROL_PLANE}"),
        });
        Input {
            window,
            verify: false,
            scan,
            jobs: vec![],
            runtime_config: Some(serde_json::from_value(json!({"data": cm})).unwrap()),
            build_ref_verdict: verdict,
        }
    }

    fn check<'a>(checks: &'a [Check], id: &str) -> &'a Check {
        checks.iter().find(|c| c.id == id).unwrap()
    }

    #[test]
    fn findings_name_pod_container_first_and_last() {
        let now = Timestamp::now();
        let since = now - jiff::SignedDuration::from_hours(1);
        let mut scan = Scan::default();
        let app = src("cp-1", "app", false);
        let prev = src("cp-1", "app", true);
        scan.line(&app, since, at(50, now), "MANIFEST_UNKNOWN one");
        scan.line(&app, since, at(10, now), "MANIFEST_UNKNOWN two");
        scan.line(
            &app,
            since,
            at(90, now),
            "MANIFEST_UNKNOWN outside the window",
        );
        scan.line(&prev, since, at(30, now), "fatal: 'x' is not a commit");
        let a = &scan.findings[&("A", app.clone())];
        assert_eq!((a.lines, a.first, a.last), (2, at(50, now), at(10, now)));
        assert_eq!(a.example, "MANIFEST_UNKNOWN one");
        let b = &scan.findings[&("B", prev)];
        assert!(b.previous && b.lines == 1);
        assert_eq!(scan.findings.len(), 2);
    }

    #[test]
    fn cache_signature_with_cache_on_fails_both() {
        let (checks, f) = diagnose(&input(
            &[(
                5,
                "Error while retrieving image from cache MANIFEST_UNKNOWN",
            )],
            json!({KANIKO_CACHE: "true"}),
            None,
        ));
        let a = check(&checks, "build.signature-a");
        assert_eq!(a.status, Status::Fail);
        assert!(
            a.detail
                .contains("pod/cp-1 -c codex-k8s-control-plane: 1 lines, first ")
                && a.detail.contains("(--since 6h)"),
            "{}",
            a.detail
        );
        assert_eq!(check(&checks, "build.kaniko-cache").status, Status::Fail);
        assert_eq!(f.mitigation, vec![MITIGATION_A]);
    }

    #[test]
    fn rejected_build_ref_fails() {
        let (checks, f) = diagnose(&input(
            &[(5, "fatal: '-b feature/x' is not a commit")],
            json!({BUILD_REF: "-b feature/x"}),
            Some(Err(vec!["flag".into()])),
        ));
        assert_eq!(check(&checks, "build.build-ref").status, Status::Fail);
        assert_eq!(check(&checks, "build.signature-b").status, Status::Fail);
        assert_eq!(f.mitigation, vec![MITIGATION_B]);
    }

    #[test]
    fn repeats_after_mitigation_escalate() {
        let lines = [
            (3, "MANIFEST_UNKNOWN"),
            (2, "MANIFEST_UNKNOWN"),
            (1, "MANIFEST_UNKNOWN"),
        ];
        let (checks, _) = diagnose(&input(&lines, json!({KANIKO_CACHE: "false"}), None));
        assert_eq!(check(&checks, "build.escalation").status, Status::Warn);
    }

    #[test]
    fn old_lines_are_outside_the_window() {
        let (checks, _) = diagnose(&input(&[(7 * 60, "MANIFEST_UNKNOWN")], json!({}), None));
        let a = check(&checks, "build.signature-a");
        assert_eq!(a.status, Status::Pass);
        assert!(
            a.detail.contains("since ") && a.detail.contains("(--since 6h)"),
            "{}",
            a.detail
        );
    }

    #[test]
    fn unreadable_logs_warn_and_block_verification() {
        let mut i = input(&[], json!({}), None);
        i.scan.unreadable.push(Unreadable {
            log: "pod/cp-1 -c sidecar".into(),
            reason: "forbidden (403)".into(),
        });
        let (checks, _) = diagnose(&i);
        let logs = check(&checks, "build.logs");
        assert_eq!(logs.status, Status::Warn);
        assert!(
            logs.detail.contains("pod/cp-1 -c sidecar: forbidden (403)"),
            "{}",
            logs.detail
        );
        i.verify = true;
        i.window = Window::new(Timestamp::now(), VERIFY_WINDOW, true);
        let (checks, _) = diagnose(&i);
        let v = check(&checks, "build.verify");
        assert_eq!(v.status, Status::Fail);
        assert!(
            v.detail.contains("(--verify, the last 30m)"),
            "{}",
            v.detail
        );
    }

    /// The case: nothing of the control plane or the worker read. No check claims a
    /// clean log, the verdict is fail, and the detail says how much was read and why not.
    #[test]
    fn no_platform_log_read_is_no_all_clear() {
        let mut i = input(&[], json!({}), None);
        i.scan = Scan::default();
        for d in [CONTROL_PLANE, WORKER] {
            i.scan.unreadable.push(Unreadable {
                log: format!("deploy/{d}"),
                reason: "deployment not found".into(),
            });
        }
        let (checks, _) = diagnose(&i);
        let logs = check(&checks, "build.logs");
        assert_eq!(logs.status, Status::Fail, "{logs:?}");
        assert!(
            logs.detail.starts_with("read 0 container logs of 0 pods")
                && logs
                    .detail
                    .contains("deploy/codex-k8s-worker: deployment not found"),
            "{}",
            logs.detail
        );
        for id in ["build.signature-a", "build.signature-b", "build.escalation"] {
            let c = check(&checks, id);
            assert_eq!(c.status, Status::Skip, "{c:?}");
            assert!(c.detail.contains("not judged"), "{c:?}");
        }
        let report = Report::new("diagnose build", "ns", checks);
        assert_eq!(report.verdict(), Verdict::Fail);
        // --verify does not confirm a recovery it saw no log of.
        i.verify = true;
        let (checks, _) = diagnose(&i);
        assert_eq!(check(&checks, "build.verify").status, Status::Fail);
        // Only the codegen-check Job's log read: still no evidence of the platform's.
        let job = src("codegen-1", "codegen-check", false);
        i.scan.read.push(Read {
            source: job.clone(),
            lines: 3,
            workload: format!("job/{CODEGEN_CHECK_JOB}"),
        });
        let (checks, _) = diagnose(&i);
        assert_eq!(check(&checks, "build.logs").status, Status::Fail);
        assert_eq!(check(&checks, "build.signature-a").status, Status::Skip);
        // ...but an error seen there is evidence, and fails.
        i.scan
            .line(&job, i.window.since, None, "fatal: '-b x' is not a commit");
        let (checks, _) = diagnose(&i);
        assert_eq!(check(&checks, "build.signature-b").status, Status::Fail);
    }

    #[test]
    fn a_missing_runtime_config_is_not_read_as_defaults() {
        let mut i = input(&[], json!({}), None);
        i.runtime_config = None;
        let (checks, _) = diagnose(&i);
        for id in ["build.kaniko-cache", "build.build-ref"] {
            let c = check(&checks, id);
            assert_eq!(c.status, Status::Skip, "{c:?}");
            assert!(c.detail.contains("not found"), "{c:?}");
        }
        // A ConfigMap without the keys: the defaults apply, read from it.
        let (checks, _) = diagnose(&input(&[], json!({}), None));
        assert_eq!(check(&checks, "build.kaniko-cache").status, Status::Pass);
        assert_eq!(check(&checks, "build.build-ref").status, Status::Pass);
        let a = check(&checks, "build.signature-a");
        assert!(a.detail.contains("in the 1 logs read"), "{a:?}");
    }
}
