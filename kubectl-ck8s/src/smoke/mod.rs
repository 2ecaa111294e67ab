//! `kubectl ck8s smoke`: the production runbook's daily smoke check.
//!
//! Fetch everything at once ([`fetch`]), probe through port-forward, then judge with the pure
//! functions in [`checks`].

pub mod checks;
pub mod guard;
pub mod probe;

use crate::cluster::{Ctx, objects};
use crate::exit::Failure;
use crate::names::*;
use crate::output::progress;
use crate::report::{Check, Outcome, Report, selected};
use checks::{Probes, State};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::ListParams;
use probe::{Direct, PortForward, ProbeRequest, Prober, Target};

#[derive(Debug, Clone, clap::Args)]
pub struct SmokeArgs {
    /// Run only these checks (ids or id prefixes, comma separated; e.g. rollout,tls.production).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip these checks (ids or id prefixes, comma separated).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Send HTTP probes straight to this address instead of port-forwarding (testing aid).
    #[arg(long, hide = true, env = "CK8S_PROBE_DIRECT")]
    pub probe_direct: Option<String>,
}

pub async fn run(args: SmokeArgs, ctx: &Ctx) -> Result<Outcome, Failure> {
    for f in args.only.iter().chain(&args.skip) {
        if !checks::IDS
            .iter()
            .any(|id| selected(id, std::slice::from_ref(f), &[]))
        {
            return Err(Failure::usage(format!("unknown check id {f:?}"))
                .with_help(format!("check ids: {}", checks::IDS.join(", "))));
        }
    }
    let progress = progress("smoke: fetching cluster state");
    let mut state = fetch(ctx).await?;
    progress.set("smoke: probing through port-forward");
    let wants_probe = |id| selected(id, &args.only, &args.skip);
    let probing = [
        "health.healthz",
        "health.readyz",
        "health.metrics",
        "webhook.unauthorized",
    ]
    .into_iter()
    .any(wants_probe);
    if probing {
        state.probes = match &args.probe_direct {
            Some(addr) => probe_all(&Direct { addr: addr.clone() }, &state).await,
            None => probe_all(&PortForward { pods: ctx.ns() }, &state).await,
        };
    }
    if guard::IDS.iter().any(|id| wants_probe(id)) {
        progress.set("smoke: checking ck8s-admission");
        state.guard = guard::fetch(ctx).await;
    }
    drop(progress);
    let checks: Vec<Check> = checks::run_all(&state)
        .into_iter()
        .filter(|c| selected(&c.id, &args.only, &args.skip))
        .collect();
    Ok(Outcome::checks(Report::new(
        "smoke",
        &ctx.namespace,
        checks,
    )))
}

/// All the objects smoke looks at, fetched concurrently.
pub async fn fetch(ctx: &Ctx) -> Result<State, Failure> {
    let ns = ctx.namespace.as_str();
    let lp = ListParams::default();
    let (pods, deployments, jobs, ingresses, tls, reuse, cronjob, runtime) = futures::join!(
        ctx.list(ctx.ns::<Pod>(), "pods", &lp),
        ctx.list(ctx.ns::<Deployment>(), "deployments.apps", &lp),
        ctx.list(ctx.ns::<Job>(), "jobs.batch", &lp),
        ctx.list(ctx.ns::<Ingress>(), "ingresses.networking.k8s.io", &lp),
        ctx.get_opt(ctx.ns::<Secret>(), "secrets", TLS_SECRET),
        async {
            ctx.in_ns::<Secret>(SYSTEM_NAMESPACE)
                .list_metadata(&lp)
                .await
        },
        ctx.get_opt(ctx.ns::<CronJob>(), "cronjobs.batch", GC_CRONJOB),
        ctx.get_opt(ctx.ns::<ConfigMap>(), "configmaps", RUNTIME_CONFIG),
    );
    Ok(State {
        namespace: ns.to_string(),
        domain: ctx.domain.clone(),
        now: jiff::Timestamp::now(),
        pods: pods?,
        deployments: deployments?,
        jobs: jobs?,
        ingresses: ingresses?,
        tls_secret: tls?,
        reuse_secrets: reuse
            .map(|l| {
                l.items
                    .into_iter()
                    .filter_map(|s| s.metadata.name)
                    .filter(|n| n.starts_with(TLS_REUSE_PREFIX))
                    .collect()
            })
            .map_err(|e| {
                ctx.err("list", "secrets", Some(SYSTEM_NAMESPACE), e)
                    .message
            }),
        gc_cronjob: cronjob?,
        runtime_config: runtime?,
        probes: Probes::default(),
        guard: guard::Guard::NotRead,
    })
}

/// A Running and Ready pod the deployment selects (its selector, `matchExpressions`
/// included) and the port to probe (named `http`, else the first).
pub fn target_of(state: &State, deployment: &str) -> Option<Target> {
    let d = checks::deployment(state, deployment)?;
    let spec = d.spec.as_ref()?;
    let ports: Vec<_> = checks::containers(d)
        .flat_map(|c| c.ports.iter().flatten())
        .collect();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or(ports.first())?
        .container_port;
    let pod = state.pods.iter().find(|p| {
        objects::pod_serving(p) && objects::selects(&spec.selector, p.metadata.labels.as_ref())
    })?;
    Some(Target {
        pod: pod.metadata.name.clone()?,
        port: u16::try_from(port).ok()?,
    })
}

/// The four probes: the three health probes share one connection to one `codex-k8s` pod,
/// the webhook probe goes to one `oauth2-proxy` pod.
pub async fn probe_all<P: Prober>(prober: &P, state: &State) -> Probes {
    let get = |path: &str| ProbeRequest {
        method: "GET",
        path: path.into(),
        headers: vec![],
        body: String::new(),
    };
    let webhook = ProbeRequest {
        method: "POST",
        path: WEBHOOK_PATH.into(),
        headers: vec![
            ("Content-Type", "application/json".into()),
            ("X-GitHub-Event", "ping".into()),
            ("X-GitHub-Delivery", "ck8s-smoke".into()),
            ("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64))),
        ],
        body: "{}".into(),
    };
    let on = |t: Option<Target>, reqs: Vec<ProbeRequest>| async move {
        match t {
            Some(t) => prober
                .probe_all(&t, &reqs)
                .await
                .into_iter()
                .map(Some)
                .collect(),
            None => vec![None; reqs.len()],
        }
    };
    let (health, hook) = futures::join!(
        on(
            target_of(state, API_GATEWAY),
            vec![get("/healthz"), get("/readyz"), get("/metrics")]
        ),
        on(target_of(state, OAUTH2_PROXY), vec![webhook]),
    );
    let mut health = health.into_iter();
    Probes {
        healthz: health.next().flatten(),
        readyz: health.next().flatten(),
        metrics: health.next().flatten(),
        webhook: hook.into_iter().next().flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, tier: &str, ready: bool) -> Pod {
        obj(
            json!({"metadata": {"name": name, "labels": {"app": "codex-k8s", "tier": tier}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}}),
        )
    }

    #[test]
    fn the_probe_pod_is_ready_and_selected_by_match_expressions() {
        let d: Deployment = obj(json!({"metadata": {"name": API_GATEWAY}, "spec": {
            "selector": {"matchLabels": {"app": "codex-k8s"},
                         "matchExpressions": [{"key": "tier", "operator": "In", "values": ["api"]}]},
            "template": {"spec": {"containers": [{"name": "gw", "ports": [{"name": "http", "containerPort": 8080}]}]}}}}));
        let state = |pods| State {
            deployments: vec![d.clone()],
            pods,
            ..Default::default()
        };
        let target = |pods| target_of(&state(pods), API_GATEWAY).map(|t| t.pod);
        assert_eq!(
            target(vec![
                pod("not-ready", "api", false),
                pod("web", "web", true),
                pod("ok", "api", true)
            ]),
            Some("ok".into())
        );
        assert_eq!(
            target(vec![
                pod("not-ready", "api", false),
                pod("web", "web", true)
            ]),
            None
        );
    }
}
