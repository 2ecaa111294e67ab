//! `kubectl ck8s runs` and `runs env`: full-env run namespaces and agent job env wiring.

use crate::cluster::Ctx;
use crate::cluster::objects::pod_phase;
use crate::exit::Failure;
use crate::names::*;
use crate::output::progress;
use crate::report::{Check, Outcome, Report, listing};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, Pod, ResourceQuota, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::ListParams;
use serde::Serialize;

#[derive(Debug, Clone, clap::Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: Option<RunsCommand>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RunsCommand {
    /// Agent run pods carry the five CODEXK8S_* env names (names only, never values).
    Env,
}

/// What one run namespace holds (counts and names only).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunNamespace {
    pub name: String,
    pub service_accounts: Vec<String>,
    pub roles: Vec<String>,
    pub role_bindings: Vec<String>,
    pub resource_quotas: Vec<String>,
    pub limit_ranges: Vec<String>,
    pub jobs: Vec<String>,
    /// `name phase`
    pub pods: Vec<String>,
}

/// The run baseline: every run namespace has sa, role, rolebinding, resourcequota, limitrange.
pub fn judge_namespace(ns: &RunNamespace) -> Check {
    let id = format!("runs.{}", ns.name);
    let missing: Vec<&str> = [
        ("serviceaccount", &ns.service_accounts),
        ("role", &ns.roles),
        ("rolebinding", &ns.role_bindings),
        ("resourcequota", &ns.resource_quotas),
        ("limitrange", &ns.limit_ranges),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_empty())
    .map(|(k, _)| k)
    .collect();
    let failed: Vec<&str> = ns
        .pods
        .iter()
        .map(String::as_str)
        .filter(|p| p.ends_with(" Failed"))
        .collect();
    if !missing.is_empty() {
        Check::fail(id, format!("missing {}", missing.join(", "))).remedy(format!("kubectl -n {} get sa,role,rolebinding,resourcequota,limitrange,job,pod; the worker creates these for every run namespace: check kubectl logs deploy/{WORKER}", ns.name))
    } else if !failed.is_empty() {
        Check::warn(
            id,
            format!(
                "{} jobs, {} pods, failed: {}",
                ns.jobs.len(),
                ns.pods.len(),
                failed.join(", ")
            ),
        )
        .remedy(format!("kubectl -n {} logs <pod>", ns.name))
    } else {
        Check::pass(
            id,
            format!("{} jobs, {} pods", ns.jobs.len(), ns.pods.len()),
        )
    }
}

/// The required env names missing from a pod's containers; values are never looked at.
pub fn missing_env_names(env_names: &[String]) -> Vec<&'static str> {
    RUN_ENV_NAMES
        .iter()
        .copied()
        .filter(|n| !env_names.iter().any(|e| e == n))
        .collect()
}

/// The env *names* of every container of a pod.
pub fn env_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.env.iter().flatten())
        .map(|e| e.name.clone())
        .collect()
}

pub async fn run_namespaces(ctx: &Ctx) -> Result<Vec<String>, Failure> {
    let lp = ListParams::default().labels(RUN_NS_SELECTOR);
    let list = ctx
        .all::<Namespace>()
        .list_metadata(&lp)
        .await
        .map_err(|e| ctx.err("list", "namespaces", None, e))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect())
}

fn names<K: kube::Resource + Clone>(
    r: Result<kube::core::ObjectList<K>, kube::Error>,
    ctx: &Ctx,
    resource: &str,
    ns: &str,
) -> Result<Vec<String>, Failure> {
    Ok(r.map_err(|e| ctx.err("list", resource, Some(ns), e))?
        .items
        .iter()
        .filter_map(|o| o.meta().name.clone())
        .collect())
}

async fn inspect(ctx: &Ctx, ns: &str) -> Result<RunNamespace, Failure> {
    let lp = ListParams::default();
    let (sa, role, rb, rq, lr, jobs, pods) = futures::join!(
        async { ctx.in_ns::<ServiceAccount>(ns).list(&lp).await },
        async { ctx.in_ns::<Role>(ns).list(&lp).await },
        async { ctx.in_ns::<RoleBinding>(ns).list(&lp).await },
        async { ctx.in_ns::<ResourceQuota>(ns).list(&lp).await },
        async { ctx.in_ns::<LimitRange>(ns).list(&lp).await },
        async { ctx.in_ns::<Job>(ns).list(&lp).await },
        async { ctx.in_ns::<Pod>(ns).list(&lp).await },
    );
    let pods = pods.map_err(|e| ctx.err("list", "pods", Some(ns), e))?;
    Ok(RunNamespace {
        name: ns.to_string(),
        service_accounts: names(sa, ctx, "serviceaccounts", ns)?,
        roles: names(role, ctx, "roles.rbac.authorization.k8s.io", ns)?,
        role_bindings: names(rb, ctx, "rolebindings.rbac.authorization.k8s.io", ns)?,
        resource_quotas: names(rq, ctx, "resourcequotas", ns)?,
        limit_ranges: names(lr, ctx, "limitranges", ns)?,
        jobs: names(jobs, ctx, "jobs.batch", ns)?,
        pods: pods
            .items
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p.metadata.name.as_deref().unwrap_or(""),
                    pod_phase(p)
                )
            })
            .collect(),
    })
}

/// An agent run pod and the env names of its containers (values are never read).
#[derive(Debug, Clone, PartialEq)]
pub struct RunPod {
    pub namespace: String,
    pub name: String,
    pub env_names: Vec<String>,
}

/// The agent run pods of every run namespace, in the namespaces' order.
async fn run_pods(ctx: &Ctx, namespaces: &[String]) -> Result<Vec<RunPod>, Failure> {
    let lp = ListParams::default().labels(RUN_POD_SELECTOR);
    let lists = futures::future::join_all(
        namespaces
            .iter()
            .map(|n| ctx.list(ctx.in_ns::<Pod>(n), "pods", &lp)),
    )
    .await;
    let mut pods = Vec::new();
    for (ns, list) in namespaces.iter().zip(lists) {
        pods.extend(list?.iter().map(|pod| RunPod {
            namespace: ns.clone(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            env_names: env_names(pod),
        }));
    }
    Ok(pods)
}

/// The `runs` checks: one per run namespace; with none, a pass that says so.
pub fn judge_runs(found: &[RunNamespace]) -> Vec<Check> {
    let mut checks: Vec<Check> = found.iter().map(judge_namespace).collect();
    if checks.is_empty() {
        checks.push(Check::pass(
            "runs",
            format!("no run namespaces ({RUN_NS_SELECTOR})"),
        ));
    }
    checks
}

/// The `runs env` checks and what JSON shows of each pod; with no pod, a skip.
pub fn judge_env(pods: &[RunPod]) -> (Vec<Check>, Vec<serde_json::Value>) {
    let mut checks = Vec::new();
    let mut details = Vec::new();
    for pod in pods {
        let (ns, pod_name) = (&pod.namespace, &pod.name);
        let missing = missing_env_names(&pod.env_names);
        let present: Vec<&str> = RUN_ENV_NAMES
            .iter()
            .copied()
            .filter(|n| !missing.contains(n))
            .collect();
        let id = format!("runs.env.{ns}.{pod_name}");
        checks.push(if missing.is_empty() {
            Check::pass(id, format!("all {} env names present", RUN_ENV_NAMES.len()))
        } else {
            Check::fail(id, format!("missing {}", missing.join(", "))).remedy("the worker must wire the agent job env (Day4): check kubectl logs deploy/codex-k8s-worker and the run job template")
        });
        details.push(serde_json::json!({"namespace": ns, "pod": pod_name, "present": present, "missing": missing}));
    }
    if checks.is_empty() {
        checks.push(Check::skip(
            "runs.env",
            format!("no agent run pods ({RUN_POD_SELECTOR})"),
        ));
    }
    (checks, details)
}

/// The table of run namespaces `-o table` shows before the checks.
fn runs_table(found: &[RunNamespace]) -> String {
    let rows = found
        .iter()
        .map(|r| {
            let c = |v: &Vec<String>| v.len().to_string();
            vec![
                r.name.clone(),
                c(&r.service_accounts),
                c(&r.roles),
                c(&r.role_bindings),
                c(&r.resource_quotas),
                c(&r.limit_ranges),
                c(&r.jobs),
                r.pods.join(", "),
            ]
        })
        .collect();
    listing(
        &[
            "RUN NAMESPACE",
            "SA",
            "ROLE",
            "ROLEBINDING",
            "QUOTA",
            "LIMITRANGE",
            "JOBS",
            "PODS",
        ],
        rows,
    )
}

pub async fn run(args: RunsArgs, ctx: &Ctx) -> Result<Outcome, Failure> {
    let _progress = progress("runs: listing run namespaces");
    let namespaces = run_namespaces(ctx).await?;
    match args.command {
        None => {
            let found = futures::future::join_all(namespaces.iter().map(|n| inspect(ctx, n)))
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            let report = Report::new("runs", &ctx.namespace, judge_runs(&found))
                .with_details(serde_json::json!({ "namespaces": found }));
            Ok(Outcome::listing(report, Some(runs_table(&found))))
        }
        Some(RunsCommand::Env) => {
            let (checks, details) = judge_env(&run_pods(ctx, &namespaces).await?);
            let report = Report::new("runs env", &ctx.namespace, checks)
                .with_details(serde_json::json!({ "pods": details }));
            Ok(Outcome::checks(report))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    #[test]
    fn run_namespace_baseline() {
        let full = RunNamespace {
            name: "run-1".into(),
            service_accounts: vec!["sa".into()],
            roles: vec!["r".into()],
            role_bindings: vec!["rb".into()],
            resource_quotas: vec!["q".into()],
            limit_ranges: vec!["l".into()],
            jobs: vec![],
            pods: vec!["p Running".into()],
        };
        assert_eq!(judge_namespace(&full).status, Status::Pass);
        let no_quota = RunNamespace {
            resource_quotas: vec![],
            ..full.clone()
        };
        assert_eq!(judge_namespace(&no_quota).status, Status::Fail);
        assert!(judge_namespace(&no_quota).detail.contains("resourcequota"));
        let failed_pod = RunNamespace {
            pods: vec!["p Failed".into()],
            ..full
        };
        assert_eq!(judge_namespace(&failed_pod).status, Status::Warn);
    }

    #[test]
    fn env_names_only() {
        let all: Vec<String> = RUN_ENV_NAMES.iter().map(|s| s.to_string()).collect();
        assert!(missing_env_names(&all).is_empty());
        assert_eq!(
            missing_env_names(&all[1..]),
            vec!["CODEXK8S_OPENAI_API_KEY"]
        );
    }

    fn run_pod(name: &str, env: &[&str]) -> RunPod {
        RunPod {
            namespace: "run-1".into(),
            name: name.into(),
            env_names: env.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn no_run_namespace_is_one_pass_saying_so() {
        let checks = judge_runs(&[]);
        assert_eq!(checks.len(), 1);
        assert_eq!(
            (checks[0].id.as_str(), checks[0].status),
            ("runs", Status::Pass)
        );
        let bare = RunNamespace {
            name: "run-2".into(),
            ..Default::default()
        };
        let checks = judge_runs(&[bare]);
        assert_eq!(
            (checks[0].id.as_str(), checks[0].status),
            ("runs.run-2", Status::Fail)
        );
    }

    #[test]
    fn env_checks_name_each_pod_and_what_it_lacks() {
        let (checks, details) = judge_env(&[
            run_pod("wired", &RUN_ENV_NAMES),
            run_pod("bare", &RUN_ENV_NAMES[1..]),
        ]);
        assert_eq!(checks[0].id, "runs.env.run-1.wired");
        assert_eq!(checks[0].status, Status::Pass);
        assert_eq!(checks[1].status, Status::Fail);
        assert_eq!(
            details[1]["missing"],
            serde_json::json!(["CODEXK8S_OPENAI_API_KEY"])
        );
        assert_eq!(
            details[1]["present"].as_array().unwrap().len(),
            RUN_ENV_NAMES.len() - 1
        );
        let (checks, details) = judge_env(&[]);
        assert_eq!(
            (checks[0].id.as_str(), checks[0].status),
            ("runs.env", Status::Skip)
        );
        assert!(details.is_empty());
    }
}
