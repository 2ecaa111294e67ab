//! `kubectl ck8s gc status | run | logs`: the registry GC CronJob `codex-k8s-registry-gc`.

use crate::cluster::objects::{JobState, created};
use crate::cluster::wait::{self, Waited};
use crate::cluster::{Ctx, logs};
use crate::exit::Failure;
use crate::names::*;
use crate::output::progress;
use crate::report::{Check, Outcome, Report, listing};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, ObjectMeta, PostParams};
use std::time::Duration;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum GcCommand {
    /// Schedule, last schedule and success, recent Jobs, the registry's replicas.
    Status,
    /// Start a GC Job now, exactly as `kubectl create job --from=cronjob/codex-k8s-registry-gc`.
    Run {
        /// Follow the Job to the end and parse the GC summary line.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Logs of the newest GC Job (or --job NAME).
    Logs {
        #[arg(long)]
        job: Option<String>,
        #[arg(long, default_value_t = 200)]
        tail: i64,
    },
}

/// The Job `kubectl create job --from=cronjob/NAME NAME` creates: pure.
pub fn job_from_cronjob(cj: &CronJob, name: &str) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = std::collections::BTreeMap::from([(
        "cronjob.kubernetes.io/instantiate".to_string(),
        "manual".to_string(),
    )]);
    annotations.extend(tmeta.annotations.unwrap_or_default());
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: cj.metadata.namespace.clone(),
            annotations: Some(annotations),
            labels: tmeta.labels,
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name: cj.metadata.name.clone().unwrap_or_default(),
                uid: cj.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                // kubectl sets no blockOwnerDeletion (it would need the finalizers permission).
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// `registry garbage-collect` prints `N blobs marked, M blobs and K manifests eligible for deletion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct GcSummary {
    pub blobs_marked: u64,
    pub blobs_eligible: u64,
    pub manifests_eligible: u64,
}

pub fn parse_summary(log: &str) -> Option<GcSummary> {
    log.lines().rev().find_map(|line| {
        if !line.contains("eligible for deletion") {
            return None;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let pos = words
            .windows(2)
            .position(|w| w[0].chars().all(|c| c.is_ascii_digit()) && w[1] == "blobs")?;
        match words[pos..] {
            [n, _, "marked,", m, "blobs", "and", k, "manifests", ..] => Some(GcSummary {
                blobs_marked: n.parse().ok()?,
                blobs_eligible: m.parse().ok()?,
                manifests_eligible: k.parse().ok()?,
            }),
            _ => None,
        }
    })
}

/// `gc.cronjob`: the CronJob exists and is not suspended (smoke runs the same check).
pub fn cronjob_check(ns: &str, cj: Option<&CronJob>) -> Check {
    let id = "gc.cronjob";
    let Some(cj) = cj else {
        return Check::fail(id, format!("cronjob {GC_CRONJOB} not found")).remedy("the registry GC CronJob is enabled in production/non-ai environments: redeploy the platform");
    };
    let spec = cj.spec.clone().unwrap_or_default();
    let st = cj.status.clone().unwrap_or_default();
    let t = |x: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        x.map(|t| t.0.to_string()).unwrap_or_else(|| "never".into())
    };
    let detail = format!(
        "cronjob {GC_CRONJOB} schedule {:?}, last schedule {}, last success {}",
        spec.schedule,
        t(st.last_schedule_time),
        t(st.last_successful_time)
    );
    if spec.suspend == Some(true) {
        Check::warn(id, format!("suspended; {detail}")).remedy(format!(
            "kubectl -n {ns} patch cronjob {GC_CRONJOB} -p '{{\"spec\":{{\"suspend\":false}}}}'"
        ))
    } else {
        Check::pass(id, detail)
    }
}

/// The gc status checks: pure.
pub fn status_checks(
    ns: &str,
    cj: Option<&CronJob>,
    jobs: &[Job],
    registry: Option<&Deployment>,
) -> Vec<Check> {
    let last_job = match jobs.iter().max_by_key(|j| created(&j.metadata)) {
        None => Check::warn("gc.last-job", "no GC job yet").remedy("kubectl ck8s gc run --wait"),
        Some(j) => {
            let name = j.metadata.name.as_deref().unwrap_or("");
            match JobState::of(j) {
                JobState::Failed => Check::fail("gc.last-job", format!("{name} failed")).remedy(format!(
                    "kubectl -n {ns} logs job/{name} --tail=200; then kubectl ck8s gc run --wait"
                )),
                s => Check::pass("gc.last-job", format!("{name} {}", s.as_str())),
            }
        }
    };
    vec![
        cronjob_check(ns, cj),
        last_job,
        registry_check(ns, registry),
    ]
}

/// `gc.registry-replicas`: the registry is back at its replicas (GC scales it 1 -> 0 -> 1).
fn registry_check(ns: &str, registry: Option<&Deployment>) -> Check {
    match registry {
        None => Check::fail("gc.registry-replicas", format!("deployment {REGISTRY} not found")).remedy("redeploy the platform"),
        Some(d) => match d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) {
            0 => Check::fail("gc.registry-replicas", format!("{REGISTRY} left at 0 replicas (GC scales 1 -> 0 -> 1)"))
                .remedy(format!("kubectl -n {ns} scale deployment/{REGISTRY} --replicas=1; then check kubectl ck8s gc logs")),
            n => Check::pass("gc.registry-replicas", format!("{REGISTRY} replicas={n}")),
        },
    }
}

/// What `job_logs` read: the text, and of how many containers and pods (the evidence a
/// report states).
struct JobLogs {
    text: String,
    containers: usize,
    pods: usize,
}

/// The last `tail` lines of every container of the Job's pods, read line by line.
async fn job_logs(ctx: &Ctx, job: &str, tail: i64) -> Result<JobLogs, Failure> {
    let (api, lp) = (
        ctx.ns::<Pod>(),
        ListParams::default().labels(&format!("job-name={job}")),
    );
    let pods = ctx.list(api.clone(), "pods", &lp).await?;
    let mut text = String::new();
    let mut containers = 0;
    for p in &pods {
        for container in logs::containers(p) {
            containers += 1;
            let source = logs::Source {
                pod: p.metadata.name.clone().unwrap_or_default(),
                container,
                previous: false,
            };
            let range = logs::Range {
                since_seconds: None,
                tail_lines: Some(tail),
            };
            logs::for_each_line(&api, &source, range, |_, line| {
                text.push_str(line);
                text.push('\n');
            })
            .await
            .map_err(|e| ctx.err("get", "pods/log", Some(&ctx.namespace), e))?;
        }
    }
    Ok(JobLogs {
        text,
        containers,
        pods: pods.len(),
    })
}

async fn gc_jobs(ctx: &Ctx) -> Result<Vec<Job>, Failure> {
    let lp = ListParams::default().labels(GC_JOB_SELECTOR);
    let mut jobs = ctx.list(ctx.ns::<Job>(), "jobs.batch", &lp).await?;
    jobs.sort_by_key(|j| std::cmp::Reverse(created(&j.metadata)));
    Ok(jobs)
}

/// What `gc status` reads: the CronJob, its Jobs (newest first) and the registry.
#[derive(Debug, Default)]
pub struct GcStatus {
    pub cronjob: Option<CronJob>,
    pub jobs: Vec<Job>,
    pub registry: Option<Deployment>,
}

/// How many of the newest Jobs `gc status` lists.
const RECENT_JOBS: usize = 5;

/// `gc status` judged: its checks, and the newest Jobs in `details`.
pub fn judge_status(ns: &str, s: &GcStatus) -> Report {
    let recent = s.jobs.iter().take(RECENT_JOBS);
    let details = serde_json::json!({"jobs": recent.map(|j| serde_json::json!({"name": j.metadata.name, "status": JobState::of(j)})).collect::<Vec<_>>()});
    let checks = status_checks(ns, s.cronjob.as_ref(), &s.jobs, s.registry.as_ref());
    Report::new("gc status", ns, checks).with_details(details)
}

/// The newest Jobs as `-o table` lists them before the checks.
fn recent_jobs_table(jobs: &[Job]) -> String {
    let rows = jobs
        .iter()
        .take(RECENT_JOBS)
        .map(|j| {
            vec![
                j.metadata.name.clone().unwrap_or_default(),
                JobState::of(j).as_str().into(),
                j.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    listing(&["GC JOB", "STATUS", "CREATED"], rows)
}

/// What `gc run --wait` saw of the Job it started.
#[derive(Debug)]
pub struct GcRun {
    pub job: String,
    /// `Complete`, `Failed` or `Timeout`.
    pub state: &'static str,
    /// After a timeout, the last state the wait saw.
    pub why: String,
    pub summary: Option<GcSummary>,
    pub timeout: Duration,
    /// The registry after the run; `Err`: it could not be read (kept only after a timeout).
    pub registry: Result<Option<Deployment>, String>,
}

/// `gc run --wait` judged: the Job's end and its summary, then the registry's replicas (the
/// Job scales the registry 1 -> 0 -> 1: it must be back).
pub fn judge_run(ns: &str, run: &GcRun) -> Vec<Check> {
    let (name, why) = (&run.job, &run.why);
    let waited_for = humantime::format_duration(run.timeout).to_string();
    let check = match (run.state, run.summary) {
        ("Complete", Some(s)) => Check::pass("gc.run", format!("{name} complete: {} blobs marked, {} blobs and {} manifests eligible for deletion", s.blobs_marked, s.blobs_eligible, s.manifests_eligible)),
        ("Complete", None) => Check::warn("gc.run", format!("{name} complete, no GC summary line in its log")).remedy(format!("kubectl -n {ns} logs job/{name} --tail=200")),
        ("Timeout", _) => Check::fail("gc.run", format!("{name} not finished within --timeout {waited_for}: {why}")).remedy(format!("kubectl -n {ns} get job/{name}; kubectl -n {ns} logs job/{name} --tail=200; check that {REGISTRY} is back at replicas=1")),
        (s, _) => Check::fail("gc.run", format!("{name} {s}")).remedy(format!("kubectl -n {ns} logs job/{name} --tail=200; check that {REGISTRY} is back at replicas=1")),
    };
    let replicas = match &run.registry {
        Ok(registry) => registry_check(ns, registry.as_ref()),
        Err(e) => Check::warn(
            "gc.registry-replicas",
            format!("cannot read deployment/{REGISTRY}: {e}"),
        )
        .remedy(format!("kubectl -n {ns} get deployment/{REGISTRY}")),
    };
    vec![check, replicas]
}

pub async fn run(cmd: GcCommand, ctx: &Ctx) -> Result<Outcome, Failure> {
    let ns = ctx.namespace.clone();
    match cmd {
        GcCommand::Status => {
            let _p = progress("gc: reading the CronJob");
            let (cronjob, jobs, registry) = futures::join!(
                ctx.get_opt(ctx.ns::<CronJob>(), "cronjobs.batch", GC_CRONJOB),
                gc_jobs(ctx),
                ctx.get_opt(ctx.ns::<Deployment>(), "deployments.apps", REGISTRY),
            );
            let status = GcStatus {
                cronjob: cronjob?,
                registry: registry?,
                jobs: jobs?,
            };
            let table = recent_jobs_table(&status.jobs);
            Ok(Outcome::listing(judge_status(&ns, &status), Some(table)))
        }
        GcCommand::Run { wait, timeout } => {
            let cj = ctx
                .ns::<CronJob>()
                .get(GC_CRONJOB)
                .await
                .map_err(|e| ctx.err("get", "cronjobs.batch", Some(&ns), e))?;
            let name = format!("{GC_CRONJOB}-manual-{}", jiff::Timestamp::now().as_second());
            let job = job_from_cronjob(&cj, &name);
            ctx.ns::<Job>()
                .create(&PostParams::default(), &job)
                .await
                .map_err(|e| ctx.err("create", "jobs.batch", Some(&ns), e))?;
            if !wait {
                let checks = vec![Check::pass("gc.run", format!("job.batch/{name} created"))];
                let report = Report::new("gc run", &ns, checks)
                    .with_details(serde_json::json!({"job": name}));
                return Ok(Outcome::checks(report));
            }
            let progress = progress(&format!("gc: waiting for {name}"));
            let waited = wait::until(
                ctx,
                "jobs.batch",
                wait::named(&name),
                timeout,
                &progress,
                |jobs: &[std::sync::Arc<Job>]| match jobs.first().map(|j| JobState::of(j)) {
                    Some(JobState::Running) => Err(format!("{name} running")),
                    Some(s) => Ok(s),
                    None => Err(format!("{name} not seen yet")),
                },
            )
            .await?;
            drop(progress);
            let (state, why) = match waited {
                Waited::Done(s) => (s.as_str(), String::new()),
                Waited::TimedOut { last } => ("Timeout", last),
            };
            // After a timeout the server may still be unreachable: the report of the timeout
            // (exit 1) is what the SRE needs, not a connection error in its place.
            let timed_out = state == "Timeout";
            let logs = match job_logs(ctx, &name, 200).await {
                Ok(logs) => logs.text,
                Err(_) if timed_out => String::new(),
                Err(e) => return Err(e),
            };
            let registry = match ctx.get_opt(ctx.ns(), "deployments.apps", REGISTRY).await {
                Ok(registry) => Ok(registry),
                Err(e) if timed_out => Err(e.message),
                Err(e) => return Err(e),
            };
            let run = GcRun {
                job: name,
                state,
                why,
                summary: parse_summary(&logs),
                timeout,
                registry,
            };
            let report = Report::new("gc run", &ns, judge_run(&ns, &run)).with_details(
                serde_json::json!({"job": run.job, "state": run.state, "summary": run.summary}),
            );
            Ok(Outcome::checks(report))
        }
        GcCommand::Logs { job, tail } => {
            let job = match job {
                Some(j) => j,
                None => gc_jobs(ctx)
                    .await?
                    .first()
                    .and_then(|j| j.metadata.name.clone())
                    .ok_or_else(|| {
                        Failure::usage("no GC job found").with_help("kubectl ck8s gc run")
                    })?,
            };
            let read = job_logs(ctx, &job, tail).await?;
            if read.pods == 0 {
                // No pod, no log: an empty output would read as a Job that logged nothing.
                let found: Option<Job> = ctx.get_opt(ctx.ns(), "jobs.batch", &job).await?;
                return Err(if found.is_some() {
                    Failure::not_found(format!(
                        "job/{job} in namespace {ns} has no pods (not started yet, or deleted): there is no log to read"
                    ))
                    .with_help(format!("kubectl -n {ns} describe job/{job}"))
                } else {
                    Failure::not_found(format!("job/{job} not found in namespace {ns}"))
                        .with_help(format!(
                            "kubectl -n {ns} get jobs -l {GC_JOB_SELECTOR}; or kubectl ck8s gc logs without --job for the newest"
                        ))
                });
            }
            let log = read.text;
            let check = Check::pass(
                "gc.logs",
                format!(
                    "{} lines of job/{job} (the last {tail} of {} containers of {} pods)",
                    log.lines().count(),
                    read.containers,
                    read.pods
                ),
            );
            let report = Report::new("gc logs", &ns, vec![check])
                .with_details(serde_json::json!({"job": job, "log": log}));
            // The table form is the log itself, as `kubectl logs` shows it.
            Ok(Outcome::text(report, log))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;
    use serde_json::json;

    #[test]
    fn job_is_what_kubectl_create_job_from_cronjob_makes() {
        let cj: CronJob = serde_json::from_value(json!({
            "metadata": {"name": GC_CRONJOB, "namespace": "codex-k8s-prod", "uid": "u-1"},
            "spec": {"schedule": "17 3 * * *", "jobTemplate": {
                "metadata": {"labels": {"app.kubernetes.io/name": "codex-k8s-registry-gc"}, "annotations": {"a": "b"}},
                "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "gc", "image": "registry:2"}]}}}}}
        }))
        .unwrap();
        let job =
            serde_json::to_value(job_from_cronjob(&cj, "codex-k8s-registry-gc-manual-1")).unwrap();
        assert_eq!(
            job["metadata"]["annotations"],
            json!({"cronjob.kubernetes.io/instantiate": "manual", "a": "b"})
        );
        assert_eq!(
            job["metadata"]["labels"],
            json!({"app.kubernetes.io/name": "codex-k8s-registry-gc"})
        );
        assert_eq!(
            job["metadata"]["ownerReferences"],
            json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": GC_CRONJOB, "uid": "u-1", "controller": true}])
        );
        assert_eq!(job["spec"]["backoffLimit"], 0);
    }

    #[test]
    fn summary_line() {
        let log = "marking manifest x\n\n12 blobs marked, 3 blobs and 1 manifests eligible for deletion\nblob eligible for deletion: sha256:..\n";
        assert_eq!(
            parse_summary(log),
            Some(GcSummary {
                blobs_marked: 12,
                blobs_eligible: 3,
                manifests_eligible: 1
            })
        );
        assert_eq!(parse_summary("nothing here"), None);
    }

    #[test]
    fn registry_left_at_zero_fails() {
        let d = |n: i32| {
            serde_json::from_value::<Deployment>(json!({"metadata": {"name": REGISTRY}, "spec": {"replicas": n, "selector": {}, "template": {}}})).unwrap()
        };
        let status = |n| {
            status_checks("ns", None, &[], Some(&d(n)))
                .into_iter()
                .find(|c| c.id == "gc.registry-replicas")
                .unwrap()
                .status
        };
        assert_eq!(status(0), Status::Fail);
        assert_eq!(status(1), Status::Pass);
    }

    fn gc_job(name: &str, created: &str, condition: Option<&str>) -> Job {
        let conditions: Vec<_> = condition
            .map(|c| json!({"type": c, "status": "True"}))
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    fn check<'a>(report: &'a Report, id: &str) -> &'a Check {
        report.checks.iter().find(|c| c.id == id).unwrap()
    }

    #[test]
    fn status_judges_the_newest_job_and_lists_five() {
        let cronjob: CronJob = serde_json::from_value(
            json!({"metadata": {"name": GC_CRONJOB}, "spec": {"schedule": "17 3 * * *", "suspend": true, "jobTemplate": {}}}),
        )
        .unwrap();
        let jobs: Vec<Job> = (0..6)
            .map(|i| {
                gc_job(
                    &format!("gc-{i}"),
                    &format!("2026-01-0{}T00:00:00Z", 9 - i),
                    Some("Complete"),
                )
            })
            .collect();
        let mut status = GcStatus {
            cronjob: Some(cronjob),
            jobs,
            registry: None,
        };
        let report = judge_status("ns", &status);
        assert_eq!(check(&report, "gc.cronjob").status, Status::Warn);
        assert_eq!(check(&report, "gc.last-job").detail, "gc-0 Complete");
        assert_eq!(check(&report, "gc.registry-replicas").status, Status::Fail);
        assert_eq!(report.details["jobs"].as_array().unwrap().len(), 5);
        assert_eq!(
            report.details["jobs"][0],
            json!({"name": "gc-0", "status": "Complete"})
        );

        status
            .jobs
            .insert(0, gc_job("gc-new", "2026-01-10T00:00:00Z", Some("Failed")));
        let last = judge_status("ns", &status);
        assert_eq!(check(&last, "gc.last-job").status, Status::Fail);
        status.jobs.clear();
        let none = judge_status("ns", &status);
        assert_eq!(check(&none, "gc.last-job").status, Status::Warn);
        assert_eq!(none.details["jobs"], json!([]));
    }

    #[test]
    fn a_run_passes_on_its_summary_and_the_registry_back() {
        let registry = |n: i32| {
            serde_json::from_value::<Deployment>(json!({"metadata": {"name": REGISTRY}, "spec": {"replicas": n, "selector": {}, "template": {}}})).unwrap()
        };
        let summary = GcSummary {
            blobs_marked: 2,
            blobs_eligible: 1,
            manifests_eligible: 0,
        };
        let done = GcRun {
            job: "gc-1".into(),
            state: "Complete",
            why: String::new(),
            summary: Some(summary),
            timeout: Duration::from_secs(60),
            registry: Ok(Some(registry(1))),
        };
        let statuses = |run: &GcRun| {
            judge_run("ns", run)
                .into_iter()
                .map(|c| (c.id, c.status))
                .collect::<Vec<_>>()
        };
        let pass = |id: &str| (id.to_string(), Status::Pass);
        assert_eq!(
            statuses(&done),
            [pass("gc.run"), pass("gc.registry-replicas")]
        );
        let no_summary = GcRun {
            summary: None,
            registry: Ok(Some(registry(0))),
            ..done
        };
        assert_eq!(
            statuses(&no_summary),
            [
                ("gc.run".to_string(), Status::Warn),
                ("gc.registry-replicas".to_string(), Status::Fail)
            ]
        );
        let timed_out = GcRun {
            state: "Timeout",
            why: "gc-1 running".into(),
            registry: Err("connection refused".into()),
            ..no_summary
        };
        let checks = judge_run("ns", &timed_out);
        assert_eq!(checks[0].status, Status::Fail);
        assert!(
            checks[0]
                .detail
                .contains("within --timeout 1m: gc-1 running"),
            "{checks:?}"
        );
        assert_eq!(checks[1].status, Status::Warn);
        assert!(checks[1].detail.contains("connection refused"));
    }
}
