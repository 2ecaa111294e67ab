//! The smoke checks: pure functions of the fetched [`State`], one per runbook expectation.

use super::probe::{ProbeResponse, ProbeResult};
use crate::cluster::objects::{JobState, created, pod_phase, pod_ready};
use crate::names::*;
use crate::report::Check;
use crate::rollout::{Rollout, rollout_status};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::api::networking::v1::Ingress;

/// Everything the smoke checks look at, fetched once.
#[derive(Debug, Clone)]
pub struct State {
    pub namespace: String,
    pub domain: Option<String>,
    pub now: Timestamp,
    pub pods: Vec<Pod>,
    pub deployments: Vec<Deployment>,
    pub jobs: Vec<Job>,
    pub ingresses: Vec<Ingress>,
    pub tls_secret: Option<Secret>,
    /// Names of `codex-k8s-tls-*` secrets in `codex-k8s-system`; `Err` when they could not be listed.
    pub reuse_secrets: Result<Vec<String>, String>,
    pub gc_cronjob: Option<CronJob>,
    pub runtime_config: Option<ConfigMap>,
    pub probes: Probes,
    /// ck8s-admission, the guard on the write path.
    pub guard: super::guard::Guard,
}

impl Default for State {
    fn default() -> Self {
        State {
            namespace: String::new(),
            domain: None,
            now: Timestamp::default(),
            pods: vec![],
            deployments: vec![],
            jobs: vec![],
            ingresses: vec![],
            tls_secret: None,
            reuse_secrets: Ok(vec![]),
            gc_cronjob: None,
            runtime_config: None,
            probes: Probes::default(),
            guard: super::guard::Guard::NotRead,
        }
    }
}

/// Probe results; `None` when the probe could not be aimed (no pod to forward to).
#[derive(Debug, Clone, Default)]
pub struct Probes {
    pub healthz: Option<ProbeResult>,
    pub readyz: Option<ProbeResult>,
    pub metrics: Option<ProbeResult>,
    pub webhook: Option<ProbeResult>,
}

/// Every check id, in report order.
pub const IDS: &[&str] = &[
    "pods.ready",
    "pods.restarts",
    "rollout.control-plane",
    "rollout.api-gateway",
    "rollout.worker",
    "rollout.oauth2-proxy",
    "migrate.latest",
    "health.healthz",
    "health.readyz",
    "health.metrics",
    "webhook.unauthorized",
    "tls.production",
    "tls.reuse",
    "ingress.domain",
    "web-console.5173",
    "gc.cronjob",
    "retention.heavy-fields",
    "oauth2-proxy.skip-auth",
    "guard.pause",
    "guard.replicas",
    "guard.endpoints",
    "guard.certificate",
    "guard.settings",
    "guard.decides",
];

/// Restart count from which a container is in a restart storm (warn), and a sure failure.
pub const RESTARTS_WARN: i32 = 3;
pub const RESTARTS_FAIL: i32 = 10;
/// Days left on the production certificate below which smoke warns.
pub const TLS_WARN_DAYS: i64 = 14;

pub fn run_all(s: &State) -> Vec<Check> {
    let ns = &s.namespace;
    let mut checks = vec![
        pods_ready(s),
        pods_restarts(s),
        rollout("rollout.control-plane", CONTROL_PLANE, s),
        rollout("rollout.api-gateway", API_GATEWAY, s),
        rollout("rollout.worker", WORKER, s),
        rollout("rollout.oauth2-proxy", OAUTH2_PROXY, s),
        migrate_latest(s),
        health("health.healthz", "/healthz", &s.probes.healthz, ns),
        health("health.readyz", "/readyz", &s.probes.readyz, ns),
        health("health.metrics", "/metrics", &s.probes.metrics, ns),
        webhook_unauthorized(&s.probes.webhook),
        tls_production(s),
        tls_reuse(s),
        ingress_domain(s),
        web_console(s),
        crate::gc::cronjob_check(ns, s.gc_cronjob.as_ref()),
        retention(s),
        oauth2_skip_auth(s),
    ];
    checks.extend(super::guard::judge(&s.guard, ns));
    checks
}

pub(super) fn deployment<'a>(s: &'a State, name: &str) -> Option<&'a Deployment> {
    s.deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
}

pub(super) fn containers(d: &Deployment) -> impl Iterator<Item = &Container> {
    d.spec
        .iter()
        .flat_map(|s| s.template.spec.iter())
        .flat_map(|p| p.containers.iter())
}

pub fn pods_ready(s: &State) -> Check {
    let id = "pods.ready";
    let remedy = format!(
        "kubectl -n {} describe pod <pod>; kubectl -n {} logs <pod>; rollout order is PostgreSQL -> migrations -> control-plane -> api-gateway -> frontend (initContainers wait for dependencies)",
        s.namespace, s.namespace
    );
    if s.pods.is_empty() {
        return Check::fail(id, format!("no pods in {}", s.namespace)).remedy(remedy);
    }
    let bad: Vec<String> = s
        .pods
        .iter()
        .filter_map(|p| {
            let name = p.metadata.name.as_deref().unwrap_or("");
            match pod_phase(p) {
                "Succeeded" => None,
                "Running" if pod_ready(p) => None,
                "Running" => Some(format!("{name} Running but not Ready")),
                other => Some(format!("{name} {other}")),
            }
        })
        .collect();
    let phase = |want| s.pods.iter().filter(|p| pod_phase(p) == want).count();
    let (running, done) = (phase("Running"), phase("Succeeded"));
    if bad.is_empty() && running == 0 {
        // Only finished Job pods: nothing serves, whatever their phase says.
        return Check::fail(
            id,
            format!(
                "no Running pod in {}: {done} Succeeded (Job) pods only",
                s.namespace
            ),
        )
        .remedy(remedy);
    }
    if bad.is_empty() {
        Check::pass(
            id,
            format!("{running} pods Running and Ready ({done} Succeeded)"),
        )
    } else {
        Check::fail(
            id,
            format!(
                "{} of {} pods not Running/Ready: {}",
                bad.len(),
                s.pods.len(),
                bad.join(", ")
            ),
        )
        .remedy(remedy)
    }
}

pub fn pods_restarts(s: &State) -> Check {
    let id = "pods.restarts";
    let restarts: Vec<(String, i32)> = s
        .pods
        .iter()
        .flat_map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            p.status
                .iter()
                .flat_map(|st| st.container_statuses.iter().flatten())
                .map(move |c| (format!("{name}/{}", c.name), c.restart_count))
        })
        .collect();
    let containers = restarts.len();
    let mut worst: Vec<_> = restarts
        .into_iter()
        .filter(|(_, n)| *n >= RESTARTS_WARN)
        .collect();
    worst.sort_by_key(|w| std::cmp::Reverse(w.1));
    let remedy = format!(
        "kubectl -n {} logs <pod> --previous; kubectl -n {} describe pod <pod>",
        s.namespace, s.namespace
    );
    let list = worst
        .iter()
        .map(|(n, c)| format!("{n} x{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    if s.pods.is_empty() {
        // No pod read, no restart count: nothing to pass on (pods.ready fails).
        return Check::skip(id, format!("no pods in {}", s.namespace));
    }
    match worst.first() {
        None => Check::pass(
            id,
            format!(
                "no container restarted {RESTARTS_WARN}+ times ({containers} containers of {} pods)",
                s.pods.len()
            ),
        ),
        Some((_, n)) if *n >= RESTARTS_FAIL => {
            Check::fail(id, format!("restart storm: {list}")).remedy(remedy)
        }
        Some(_) => Check::warn(id, format!("restarts: {list}")).remedy(remedy),
    }
}

pub fn rollout(id: &str, name: &str, s: &State) -> Check {
    let remedy = format!(
        "kubectl -n {ns} rollout status deploy/{name}; kubectl -n {ns} logs deploy/{name} --tail=200; order: PostgreSQL -> migrations -> control-plane -> api-gateway -> frontend",
        ns = s.namespace
    );
    match deployment(s, name).map(rollout_status) {
        None => Check::fail(id, format!("deployment {name} not found")).remedy(remedy),
        Some(Rollout::Complete(m)) => Check::pass(id, format!("{name}: {m}")),
        Some(Rollout::Waiting(m)) | Some(Rollout::Failed(m)) => {
            Check::fail(id, format!("{name}: {m}")).remedy(remedy)
        }
    }
}

pub fn migrate_latest(s: &State) -> Check {
    let id = "migrate.latest";
    let newest = s
        .jobs
        .iter()
        .filter(|j| {
            j.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(MIGRATE_PREFIX))
        })
        .max_by_key(|j| created(&j.metadata));
    let Some(job) = newest else {
        return Check::fail(id, format!("no {MIGRATE_PREFIX}* job")).remedy("migrations run before control-plane: redeploy (PostgreSQL -> migrations -> control-plane -> api-gateway -> frontend)");
    };
    let name = job.metadata.name.as_deref().unwrap_or("");
    let remedy = format!(
        "kubectl -n {} logs job/{name} --tail=200; fix the migration and redeploy",
        s.namespace
    );
    match JobState::of(job) {
        JobState::Complete => Check::pass(id, format!("{name} completed")),
        JobState::Failed => Check::fail(id, format!("{name} failed")).remedy(remedy),
        JobState::Running => {
            Check::fail(id, format!("{name} has not completed yet")).remedy(remedy)
        }
    }
}

pub fn health(id: &str, path: &str, probe: &Option<ProbeResult>, ns: &str) -> Check {
    let remedy = format!(
        "kubectl -n {ns} port-forward deploy/{API_GATEWAY} 8080 and curl {path}; kubectl -n {ns} logs deploy/{API_GATEWAY} --tail=200"
    );
    match probe {
        None => Check::skip(
            id,
            format!("no Running and Ready {API_GATEWAY} pod to port-forward to"),
        ),
        Some(Ok(r)) if (200..300).contains(&r.status) => {
            Check::pass(id, format!("{path} answered {}", r.status))
        }
        Some(Ok(r)) => Check::fail(id, format!("{path} answered {}", r.status)).remedy(remedy),
        Some(Err(e)) => Check::fail(id, format!("{path}: {e}")).remedy(remedy),
    }
}

pub fn webhook_unauthorized(probe: &Option<ProbeResult>) -> Check {
    let id = "webhook.unauthorized";
    let remedy = format!(
        "skip auth for the webhook path: oauth2-proxy --skip-auth-regex={WEBHOOK_SKIP_REGEX}; check that CODEXK8S_GITHUB_WEBHOOK_SECRET matches the GitHub webhook secret"
    );
    match probe {
        None => Check::skip(
            id,
            format!("no Running and Ready {OAUTH2_PROXY} pod to port-forward to"),
        ),
        Some(Ok(ProbeResponse { status: 401, .. })) => Check::pass(
            id,
            format!("{WEBHOOK_PATH} answered 401 to an invalid signature"),
        ),
        Some(Ok(ProbeResponse {
            status,
            location: Some(loc),
        })) if (300..400).contains(status) => Check::fail(
            id,
            format!(
                "{WEBHOOK_PATH} redirected ({status}) to {loc}: the webhook goes through OAuth"
            ),
        )
        .remedy(remedy),
        Some(Ok(r)) => Check::fail(
            id,
            format!(
                "{WEBHOOK_PATH} answered {} to an invalid signature, want 401",
                r.status
            ),
        )
        .remedy(remedy),
        Some(Err(e)) => Check::fail(id, format!("{WEBHOOK_PATH}: {e}")).remedy(remedy),
    }
}

/// Days until the certificate in `tls.crt` expires (negative once expired).
pub fn cert_days_left(secret: &Secret, now: Timestamp) -> Result<i64, String> {
    let pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get("tls.crt"))
        .ok_or("no tls.crt")?;
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(&pem.0).map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("tls.crt is not a certificate: {e}"))?;
    let not_after = cert.validity().not_after.timestamp();
    Ok((not_after - now.as_second()).div_euclid(86_400))
}

pub fn tls_production(s: &State) -> Check {
    let id = "tls.production";
    let remedy = format!(
        "TLS not issued (HTTP-01): CODEXK8S_PRODUCTION_DOMAIN must resolve to the production host IP; on first issue check kubectl -n {ns} get deploy,svc,ingress | grep echo-probe and kubectl -n {ns} logs deploy/{CONTROL_PLANE} --tail=200",
        ns = s.namespace
    );
    let Some(secret) = &s.tls_secret else {
        return Check::fail(id, format!("secret {TLS_SECRET} not found")).remedy(remedy);
    };
    let ty = secret.type_.as_deref().unwrap_or("Opaque");
    if ty != "kubernetes.io/tls" {
        return Check::fail(
            id,
            format!("secret {TLS_SECRET} has type {ty}, want kubernetes.io/tls"),
        )
        .remedy(remedy);
    }
    match cert_days_left(secret, s.now) {
        Err(e) => Check::fail(id, format!("{TLS_SECRET}: {e}")).remedy(remedy),
        Ok(d) if d < 0 => Check::fail(
            id,
            format!("{TLS_SECRET}: certificate expired {} days ago", -d),
        )
        .remedy(remedy),
        Ok(d) if d < TLS_WARN_DAYS => {
            Check::warn(id, format!("{TLS_SECRET}: certificate expires in {d} days")).remedy(remedy)
        }
        Ok(d) => Check::pass(
            id,
            format!("{TLS_SECRET}: certificate valid, {d} days left"),
        ),
    }
}

pub fn tls_reuse(s: &State) -> Check {
    let id = "tls.reuse";
    let remedy = "best effort: the TLS reuse store may be empty on the very first deploy";
    match &s.reuse_secrets {
        Ok(names) if !names.is_empty() => {
            Check::pass(id, format!("{SYSTEM_NAMESPACE}: {}", names.join(", ")))
        }
        Ok(_) => Check::warn(
            id,
            format!("no {TLS_REUSE_PREFIX}* secret in {SYSTEM_NAMESPACE}"),
        )
        .remedy(remedy),
        Err(e) => Check::warn(
            id,
            format!("cannot list secrets in {SYSTEM_NAMESPACE}: {e}"),
        )
        .remedy(remedy),
    }
}

pub fn ingress_domain(s: &State) -> Check {
    let id = "ingress.domain";
    let remedy = format!("kubectl -n {} describe ingress {INGRESS}", s.namespace);
    let Some(ing) = s
        .ingresses
        .iter()
        .find(|i| i.metadata.name.as_deref() == Some(INGRESS))
    else {
        return Check::fail(id, format!("ingress {INGRESS} not found")).remedy(remedy);
    };
    let hosts: Vec<String> = ing
        .spec
        .iter()
        .flat_map(|sp| sp.rules.iter().flatten())
        .filter_map(|r| r.host.clone())
        .collect();
    match &s.domain {
        None => Check::warn(id, format!("ingress {INGRESS} hosts: {}; domain not given (--domain / CODEXK8S_PRODUCTION_DOMAIN)", hosts.join(", "))).remedy(remedy),
        Some(d) if hosts.iter().any(|h| h == d) => Check::pass(id, format!("ingress {INGRESS} serves {d}")),
        Some(d) => Check::fail(id, format!("ingress {INGRESS} does not serve {d} (hosts: {})", hosts.join(", "))).remedy(remedy),
    }
}

pub fn web_console(s: &State) -> Check {
    let id = "web-console.5173";
    let remedy = format!(
        "\"ui upstream unavailable\": {WEB_CONSOLE} pod must be Running with port 5173 open; check the NetworkPolicy baseline allows traffic to web-console"
    );
    let Some(d) = deployment(s, WEB_CONSOLE) else {
        return Check::fail(id, format!("deployment {WEB_CONSOLE} not found")).remedy(remedy);
    };
    let has_port = containers(d)
        .flat_map(|c| c.ports.iter().flatten())
        .any(|p| p.container_port == 5173);
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    match (has_port, ready) {
        (false, _) => {
            Check::fail(id, format!("{WEB_CONSOLE} does not expose port 5173")).remedy(remedy)
        }
        (true, 0) => Check::fail(id, format!("{WEB_CONSOLE} has no ready replica")).remedy(remedy),
        (true, n) => Check::pass(id, format!("{WEB_CONSOLE} serving on 5173 ({n} ready)")),
    }
}

/// The value of `name` in the runtime ConfigMap or in the control-plane's literal env.
fn setting(s: &State, name: &str) -> Option<String> {
    let from_cm = s
        .runtime_config
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get(name))
        .cloned();
    from_cm.or_else(|| {
        deployment(s, CONTROL_PLANE)
            .into_iter()
            .flat_map(containers)
            .flat_map(|c| c.env.iter().flatten())
            .find(|e| e.name == name)
            .map(|e| {
                e.value
                    .clone()
                    .unwrap_or_else(|| "(from a reference)".into())
            })
    })
}

pub fn retention(s: &State) -> Check {
    let id = "retention.heavy-fields";
    let remedy = format!(
        "set {HEAVY_RETENTION} in {RUNTIME_CONFIG} (main key; {LEGACY_RETENTION} is only the legacy fallback); default is 7 days"
    );
    match (setting(s, HEAVY_RETENTION), setting(s, LEGACY_RETENTION)) {
        (Some(v), _) => Check::pass(id, format!("{HEAVY_RETENTION}={v}")),
        (None, Some(v)) => Check::warn(
            id,
            format!("only the legacy fallback {LEGACY_RETENTION}={v} is set"),
        )
        .remedy(remedy),
        (None, None) => Check::warn(
            id,
            format!("{HEAVY_RETENTION} not set: default 7 days applies"),
        )
        .remedy(remedy),
    }
}

pub fn oauth2_skip_auth(s: &State) -> Check {
    let id = "oauth2-proxy.skip-auth";
    let remedy = format!(
        "run oauth2-proxy with --skip-auth-regex={WEBHOOK_SKIP_REGEX} so GitHub webhooks bypass OAuth"
    );
    let Some(d) = deployment(s, OAUTH2_PROXY) else {
        return Check::fail(id, format!("deployment {OAUTH2_PROXY} not found")).remedy(remedy);
    };
    let in_args = containers(d)
        .flat_map(|c| c.args.iter().flatten().chain(c.command.iter().flatten()))
        .any(|a| a.starts_with("--skip-auth-") && a.contains(WEBHOOK_SKIP_REGEX));
    let in_env = containers(d).flat_map(|c| c.env.iter().flatten()).any(|e| {
        e.name.starts_with("OAUTH2_PROXY_SKIP_AUTH_")
            && e.value
                .as_deref()
                .is_some_and(|v| v.contains(WEBHOOK_SKIP_REGEX))
    });
    if in_args || in_env {
        Check::pass(
            id,
            format!("{OAUTH2_PROXY} skips auth for {WEBHOOK_SKIP_REGEX}"),
        )
    } else {
        Check::fail(
            id,
            format!("{OAUTH2_PROXY} has no --skip-auth-regex={WEBHOOK_SKIP_REGEX}"),
        )
        .remedy(remedy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, phase: &str, ready: bool, restarts: i32) -> Pod {
        obj(
            json!({"metadata": {"name": name}, "status": {"phase": phase,
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
            "containerStatuses": [{"name": "app", "restartCount": restarts, "ready": ready, "image": "", "imageID": ""}]}}),
        )
    }

    fn job(name: &str, ts: &str, cond: &str) -> Job {
        obj(
            json!({"metadata": {"name": name, "creationTimestamp": ts}, "status": {"conditions": [{"type": cond, "status": "True"}]}}),
        )
    }

    #[test]
    fn pods_ready_cases() {
        let state = |pods| State {
            namespace: "ns".into(),
            pods,
            ..Default::default()
        };
        for (name, pods, want) in [
            (
                "all Running and Ready",
                vec![pod("a", "Running", true, 0)],
                Status::Pass,
            ),
            (
                "completed job pods are fine",
                vec![
                    pod("a", "Running", true, 0),
                    pod("m", "Succeeded", false, 0),
                ],
                Status::Pass,
            ),
            (
                "Running but not Ready",
                vec![pod("a", "Running", false, 0)],
                Status::Fail,
            ),
            ("Pending", vec![pod("a", "Pending", false, 0)], Status::Fail),
            ("no pods at all", vec![], Status::Fail),
            (
                "only finished Job pods",
                vec![pod("m", "Succeeded", false, 0)],
                Status::Fail,
            ),
        ] {
            assert_eq!(pods_ready(&state(pods)).status, want, "{name}");
        }
    }

    #[test]
    fn restart_storms() {
        let state = |n| State {
            pods: vec![pod("a", "Running", true, n)],
            ..Default::default()
        };
        for (n, want) in [
            (0, Status::Pass),
            (2, Status::Pass),
            (3, Status::Warn),
            (10, Status::Fail),
        ] {
            assert_eq!(pods_restarts(&state(n)).status, want, "{n} restarts");
        }
        // No pods read: no restart count to pass on.
        let none = State {
            namespace: "ns".into(),
            ..Default::default()
        };
        assert_eq!(pods_restarts(&none).status, Status::Skip);
    }

    #[test]
    fn newest_migrate_job_decides() {
        let state = |jobs| State {
            jobs,
            ..Default::default()
        };
        for (name, jobs, want) in [
            (
                "newest completed",
                vec![
                    job("codex-k8s-migrate-1", "2026-01-01T00:00:00Z", "Failed"),
                    job("codex-k8s-migrate-2", "2026-01-02T00:00:00Z", "Complete"),
                ],
                Status::Pass,
            ),
            (
                "newest failed",
                vec![
                    job("codex-k8s-migrate-1", "2026-01-01T00:00:00Z", "Complete"),
                    job("codex-k8s-migrate-2", "2026-01-02T00:00:00Z", "Failed"),
                ],
                Status::Fail,
            ),
            (
                "no migrate job",
                vec![job("other", "2026-01-01T00:00:00Z", "Complete")],
                Status::Fail,
            ),
        ] {
            assert_eq!(migrate_latest(&state(jobs)).status, want, "{name}");
        }
    }

    #[test]
    fn webhook_must_answer_401_without_oauth_redirect() {
        let r = |status, location: Option<&str>| {
            Some(Ok(ProbeResponse {
                status,
                location: location.map(String::from),
            }))
        };
        for (name, probe, want) in [
            ("401 to an invalid signature", r(401, None), Status::Pass),
            (
                "redirect to OAuth",
                r(302, Some("/oauth2/start")),
                Status::Fail,
            ),
            (
                "200 accepted an invalid signature",
                r(200, None),
                Status::Fail,
            ),
            (
                "unreachable",
                Some(Err("refused".to_string())),
                Status::Fail,
            ),
            ("no pod", None, Status::Skip),
        ] {
            assert_eq!(webhook_unauthorized(&probe).status, want, "{name}");
        }
    }

    #[test]
    fn health_probes() {
        let r = |status| {
            Some(Ok(ProbeResponse {
                status,
                location: None,
            }))
        };
        assert_eq!(health("h", "/healthz", &r(200), "ns").status, Status::Pass);
        assert_eq!(health("h", "/healthz", &r(503), "ns").status, Status::Fail);
        assert_eq!(health("h", "/healthz", &None, "ns").status, Status::Skip);
    }

    #[test]
    fn retention_main_key_legacy_fallback_or_default() {
        let cm = |k: &str| Some(obj::<ConfigMap>(json!({"data": {k: "7"}})));
        let state = |c| State {
            runtime_config: c,
            ..Default::default()
        };
        assert_eq!(retention(&state(cm(HEAVY_RETENTION))).status, Status::Pass);
        assert_eq!(retention(&state(cm(LEGACY_RETENTION))).status, Status::Warn);
        assert_eq!(retention(&state(None)).status, Status::Warn);
    }

    #[test]
    fn oauth2_proxy_must_skip_webhooks() {
        let d = |args: Vec<&str>| {
            obj::<Deployment>(json!({"metadata": {"name": OAUTH2_PROXY},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "p", "args": args}]}}}}))
        };
        let state = |d| State {
            deployments: vec![d],
            ..Default::default()
        };
        assert_eq!(
            oauth2_skip_auth(&state(d(vec!["--skip-auth-regex=^/api/v1/webhooks/.*"]))).status,
            Status::Pass
        );
        assert_eq!(
            oauth2_skip_auth(&state(d(vec!["--upstream=http://x"]))).status,
            Status::Fail
        );
    }

    #[test]
    fn ingress_must_serve_the_domain() {
        let ing = obj::<Ingress>(
            json!({"metadata": {"name": INGRESS}, "spec": {"rules": [{"host": "platform.codex-k8s.dev"}]}}),
        );
        let state = |domain: Option<&str>| State {
            ingresses: vec![ing.clone()],
            domain: domain.map(String::from),
            ..Default::default()
        };
        assert_eq!(
            ingress_domain(&state(Some("platform.codex-k8s.dev"))).status,
            Status::Pass
        );
        assert_eq!(
            ingress_domain(&state(Some("other.dev"))).status,
            Status::Fail
        );
        assert_eq!(ingress_domain(&state(None)).status, Status::Warn);
        assert_eq!(ingress_domain(&State::default()).status, Status::Fail);
    }

    #[test]
    fn production_certificate_days_left() {
        // testdata/tls.crt: CN=platform.codex-k8s.dev, notAfter 2036-11-22.
        let crt = include_bytes!("testdata/tls.crt");
        let secret = |ty: &str| {
            obj::<Secret>(json!({"metadata": {"name": TLS_SECRET}, "type": ty,
                "data": {"tls.crt": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, crt)}}))
        };
        let at = |date: &str, ty: &str| {
            let now = date.parse::<Timestamp>().unwrap();
            tls_production(&State {
                now,
                tls_secret: Some(secret(ty)),
                ..Default::default()
            })
        };
        for (name, date, ty, want) in [
            (
                "valid, years left",
                "2027-01-01T00:00:00Z",
                "kubernetes.io/tls",
                Status::Pass,
            ),
            (
                "expires in 7 days",
                "2036-11-15T00:00:00Z",
                "kubernetes.io/tls",
                Status::Warn,
            ),
            (
                "expired",
                "2037-01-01T00:00:00Z",
                "kubernetes.io/tls",
                Status::Fail,
            ),
            (
                "wrong secret type",
                "2027-01-01T00:00:00Z",
                "Opaque",
                Status::Fail,
            ),
        ] {
            assert_eq!(at(date, ty).status, want, "{name}: {:?}", at(date, ty));
        }
        assert!(
            at("2037-01-01T00:00:00Z", "kubernetes.io/tls")
                .detail
                .contains("expired")
        );
        assert_eq!(
            tls_production(&State::default()).status,
            Status::Fail,
            "missing secret"
        );
    }

    #[test]
    fn every_check_id_is_listed() {
        let ids: Vec<String> = run_all(&State::default())
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, IDS);
    }
}
