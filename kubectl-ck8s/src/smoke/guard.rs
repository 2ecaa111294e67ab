//! The guard's own health: ck8s-admission sits on every write with `failurePolicy: Fail`, so
//! smoke checks it as it checks the platform. Its ValidatingWebhookConfiguration (as
//! `deploy/` ships it), replicas, endpoints, the certificate it serves, the safety settings,
//! and that it actually decides (a server-side dry run of a known-bad and a known-good
//! ConfigMap). [`fetch`] reads → [`Guard`]; [`judge`] is pure.

use crate::admission::lint::{self, Hook};
use crate::cluster::{Ctx, not_found_is_none};
use crate::report::Check;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};
use std::collections::BTreeMap;

/// The configuration and webhook names `deploy/` ships.
pub const CONFIGURATION: &str = "ck8s-admission";
pub const WEBHOOK: &str = "ck8s-admission.codex-k8s.dev";
/// Its namespace when the configuration does not say (a URL webhook).
pub const DEFAULT_NAMESPACE: &str = "ck8s-system";
/// The timeout `deploy/` ships: above it a hung guard holds every write it judges longer.
pub const MAX_TIMEOUT_SECONDS: i32 = 5;

pub const IDS: &[&str] = &[
    "guard.pause",
    "guard.replicas",
    "guard.endpoints",
    "guard.certificate",
    "guard.settings",
    "guard.decides",
];

/// What smoke read of the guard.
#[derive(Debug, Clone, Default)]
pub enum Guard {
    /// Not read (no guard check selected).
    #[default]
    NotRead,
    /// The configuration could not be read.
    Unreadable(String),
    /// No `ck8s-admission` configuration: the guard is not installed.
    NotInstalled,
    Installed(Box<Installed>),
}

#[derive(Debug, Clone)]
pub struct Installed {
    /// The `ck8s-admission.codex-k8s.dev` webhook of the configuration (`None`: it has no
    /// such webhook).
    pub hook: Option<Hook>,
    /// Its namespace: the Service's, else [`DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// `(desired, ready)` replicas of its Deployment; `None` for a URL webhook (no
    /// Deployment to look at), `Err` when it could not be read (`Ok(None)`: not found).
    pub replicas: Option<Result<Option<(i32, i32)>, String>>,
    /// Ready endpoints of its Service (`None`: a URL webhook).
    pub ready_endpoints: Option<Result<usize, String>>,
    /// The TLS handshake with what it serves, verified with the caBundle: days left on the
    /// served certificate.
    pub served: Result<i64, String>,
    /// A server-side dry run of a known-bad ConfigMap: `Err(message)` when refused.
    pub bad: Result<(), String>,
    /// And of a known-good one.
    pub good: Result<(), String>,
    /// Labels of the namespaces the settings check judges (`kubernetes.io/metadata.name`
    /// is added when judged).
    pub namespaces: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// Seconds since the epoch.
    pub now: i64,
    /// The break-glass pause recorded on the configuration (`hook` is read as it is without
    /// it: the settings that come back at its end).
    pub pause: Result<Option<ck8s_guard::Pause>, String>,
}

/// A ConfigMap every ck8s deployment denies (the runbook's failure: a CLI flag as the build
/// ref) and one it allows, created with `dryRun=All`: nothing is stored.
fn probe_configmap(namespace: &str, build_ref: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ck8s-smoke-guard", "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "ck8s-smoke"}},
        "data": {"CODEXK8S_BUILD_REF": build_ref},
    }))
    .expect("a ConfigMap")
}

pub async fn fetch(ctx: &Ctx) -> Guard {
    let configurations: Api<ValidatingWebhookConfiguration> = ctx.all();
    let found = ctx.get_opt(
        configurations,
        "validatingwebhookconfigurations",
        CONFIGURATION,
    );
    let mut configuration = match found.await {
        Err(e) => return Guard::Unreadable(e.message),
        Ok(None) => return Guard::NotInstalled,
        Ok(Some(c)) => c,
    };
    let pause = ck8s_guard::pause_of(&configuration);
    ck8s_guard::restore(&mut configuration);
    let name = format!("validating/{CONFIGURATION}");
    let hook = configuration
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .find(|w| w.name == WEBHOOK)
        .map(|w| lint::hook!(name, w));
    let mut g = Installed {
        hook: None,
        namespace: DEFAULT_NAMESPACE.to_string(),
        replicas: None,
        ready_endpoints: None,
        served: Err("not checked".into()),
        bad: Ok(()),
        good: Ok(()),
        namespaces: BTreeMap::new(),
        now: jiff::Timestamp::now().as_second(),
        pause,
    };
    let Some(h) = hook else {
        return Guard::Installed(Box::new(g));
    };
    g.namespace = h
        .service
        .as_ref()
        .map_or(DEFAULT_NAMESPACE.to_string(), |(ns, _)| ns.clone());
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = ctx.all();
    for ns in lint::CONTROL_PLANE_NAMESPACES.iter().chain([
        &"default",
        &g.namespace.as_str(),
        &ctx.namespace.as_str(),
    ]) {
        let labels = not_found_is_none(namespaces.get(ns).await)
            .ok()
            .flatten()
            .map(|n| n.metadata.labels.unwrap_or_default());
        g.namespaces.insert(ns.to_string(), labels);
    }

    let (served, replicas, endpoints) = match (&h.service, &h.url) {
        (Some((ns, svc)), _) => {
            let deployments: Api<Deployment> = ctx.in_ns(ns);
            let replicas = not_found_is_none(deployments.get(svc).await)
                .map(|d| {
                    d.map(|d| {
                        let want = d.spec.and_then(|s| s.replicas).unwrap_or(1);
                        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                        (want, ready)
                    })
                })
                .map_err(|e| ctx.err("get", "deployments.apps", Some(ns), e).message);
            let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
            let listed = ctx.list(ctx.in_ns::<EndpointSlice>(ns), "endpointslices", &lp);
            let listed = listed.await.map_err(|e| e.message);
            let ready: Result<Vec<(String, u16)>, String> = listed.map(|l| {
                l.iter()
                    .flat_map(|s| {
                        // The port the API server calls: the Service's `https`, else the only one.
                        let port = s.ports.iter().flatten().find(|p| {
                            p.name.as_deref() == Some("https")
                                || s.ports.as_ref().unwrap().len() == 1
                        });
                        s.endpoints.iter().filter_map(move |e| {
                            let ready = e.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                            let pod = e
                                .target_ref
                                .as_ref()
                                .filter(|r| r.kind.as_deref() == Some("Pod"))?;
                            Some((pod.name.clone()?, u16::try_from(port?.port?).ok()?))
                                .filter(|_| ready)
                        })
                    })
                    .collect()
            });
            let served = match &ready {
                Ok(pods) if !pods.is_empty() => {
                    let (pod, port) = &pods[0];
                    served_through_port_forward(
                        ctx.in_ns::<Pod>(ns),
                        pod,
                        *port,
                        &format!("{svc}.{ns}.svc"),
                        h.ca_bundle.as_deref(),
                        ctx.request_timeout,
                    )
                    .await
                }
                Ok(_) => Err("no ready endpoint to connect to".to_string()),
                Err(e) => Err(e.clone()),
            };
            (served, Some(replicas), Some(ready.map(|p| p.len())))
        }
        (None, Some(url)) => (
            lint::handshake(url, h.ca_bundle.as_deref(), ctx.request_timeout).await,
            None,
            None,
        ),
        (None, None) => (
            Err("the webhook has neither a service nor a URL".into()),
            None,
            None,
        ),
    };
    g.served = served;
    g.replicas = replicas;
    g.ready_endpoints = endpoints;

    // It decides: the API server sends it these, and it answers as deploy/ configures it.
    let configmaps: Api<ConfigMap> = ctx.ns();
    let dry_run = PostParams {
        dry_run: true,
        field_manager: Some("ck8s-smoke".into()),
    };
    let create = async |build_ref| {
        let probe = probe_configmap(&ctx.namespace, build_ref);
        match configmaps.create(&dry_run, &probe).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) => Err(format!("{} ({})", s.message, s.code)),
            Err(e) => Err(e.to_string()),
        }
    };
    g.bad = create("-b main").await;
    g.good = create("main").await;
    g.hook = Some(h);
    Guard::Installed(Box::new(g))
}

/// A TLS handshake with `pod:port` through a port-forward, verified as the API server
/// verifies the Service webhook (`server_name`, the caBundle).
async fn served_through_port_forward(
    pods: Api<Pod>,
    pod: &str,
    port: u16,
    server_name: &str,
    ca_bundle: Option<&[u8]>,
    timeout: std::time::Duration,
) -> Result<i64, String> {
    let connect = async {
        let mut pf = pods
            .portforward(pod, &[port])
            .await
            .map_err(|e| format!("port-forward to {pod}:{port}: {e}"))?;
        let stream = pf
            .take_stream(port)
            .ok_or_else(|| format!("port-forward to {pod}:{port} gave no stream"))?;
        let result = lint::verify_served(stream, server_name, ca_bundle).await;
        pf.abort();
        result
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| format!("no TLS handshake with {pod}:{port} within {timeout:?}"))?
}

/// The guard checks, each with its remedy.
pub fn judge(g: &Guard, production_namespace: &str) -> Vec<Check> {
    let skip_all = |why: &str| IDS.iter().map(|id| Check::skip(*id, why)).collect();
    let g = match g {
        Guard::NotRead => return skip_all("not read"),
        Guard::Unreadable(e) => {
            return skip_all(&format!("the guard's configuration could not be read: {e}"));
        }
        Guard::NotInstalled => {
            return skip_all(&format!(
                "ck8s-admission is not installed (no ValidatingWebhookConfiguration {CONFIGURATION})"
            ));
        }
        Guard::Installed(g) => g,
    };
    let Some(h) = &g.hook else {
        return IDS
            .iter()
            .map(|id| {
                Check::fail(*id, format!("ValidatingWebhookConfiguration {CONFIGURATION} has no webhook {WEBHOOK}: nothing is judged"))
                    .remedy("kubectl apply -k deploy/overlays/cert-manager (or the overlay installed)")
            })
            .collect();
    };
    let ns = &g.namespace;
    let now = jiff::Timestamp::from_second(g.now).unwrap_or_default();
    let paused = matches!(&g.pause, Ok(Some(p)) if p.complete && p.until > now);
    let outage = if h.fail_closed {
        " under failurePolicy Fail: every write it judges is refused now"
    } else {
        ": its policies are not enforced now"
    };
    let mut checks = vec![crate::admission::pause::check_of(
        "guard.pause",
        &g.pause,
        now,
    )];

    checks.push(match &g.replicas {
        None => Check::skip("guard.replicas", "registered by URL: no Deployment to look at"),
        Some(Err(e)) => Check::skip("guard.replicas", format!("could not be read: {e}")),
        Some(Ok(None)) => Check::fail("guard.replicas", format!("no Deployment {ns}/{CONFIGURATION}{outage}"))
            .remedy(format!("kubectl -n {ns} get deploy,pods; reinstall ck8s-admission, or in an emergency see deploy/README.md, \"Emergency disable\"")),
        Some(Ok(Some((_, 0)))) => Check::fail("guard.replicas", format!("no ready replica of {ns}/{CONFIGURATION}{outage}"))
            .remedy(format!("kubectl -n {ns} describe pods -l app.kubernetes.io/name=ck8s-admission; kubectl -n {ns} logs deploy/{CONFIGURATION}")),
        Some(Ok(Some((want, ready)))) if ready < want => Check::warn("guard.replicas", format!("{ready} of {want} replicas of {ns}/{CONFIGURATION} ready"))
            .remedy(format!("kubectl -n {ns} describe pods -l app.kubernetes.io/name=ck8s-admission")),
        Some(Ok(Some((want, ready)))) => Check::pass("guard.replicas", format!("{ready}/{want} replicas ready")),
    });

    checks.push(match &g.ready_endpoints {
        None => Check::skip("guard.endpoints", "registered by URL: no Service to look at"),
        Some(Err(e)) => Check::skip("guard.endpoints", format!("could not be read: {e}")),
        Some(Ok(0)) => Check::fail("guard.endpoints", format!("Service {ns}/{CONFIGURATION} has no ready endpoint{outage}"))
            .remedy(format!("kubectl -n {ns} get endpointslices -l kubernetes.io/service-name={CONFIGURATION}; kubectl -n {ns} get pods")),
        Some(Ok(n)) => Check::pass("guard.endpoints", format!("Service {ns}/{CONFIGURATION}: {n} ready endpoint(s)")),
    });

    let cert_remedy = "the serving certificate was rotated without the caBundle (or the reverse): re-inject the CA (cert-manager's ca-injector annotation, or deploy/overlays/self-signed) and restart ck8s-admission";
    checks.push(match (&h.ca_bundle, &g.served) {
        (None, _) => Check::fail("guard.certificate", "no caBundle: the API server cannot verify the guard's certificate").remedy(cert_remedy),
        (Some(_), Err(e)) => Check::fail("guard.certificate", e.clone()).remedy(cert_remedy),
        (Some(pem), Ok(served_days)) => match lint::bundle_days_left(pem, g.now).map(|ca_days| ca_days.min(*served_days)) {
            Err(e) => Check::fail("guard.certificate", format!("caBundle: {e}")).remedy(cert_remedy),
            Ok(days) if days < 0 => Check::fail("guard.certificate", format!("a certificate expired {} days ago", -days)).remedy(cert_remedy),
            Ok(days) if days < lint::CERT_WARN_DAYS => Check::warn("guard.certificate", format!("the served certificate verifies with the caBundle, but one expires in {days} days"))
                .remedy("check that cert-manager renews it: kubectl -n ck8s-system get certificate"),
            Ok(days) => Check::pass("guard.certificate", format!("the served certificate verifies with the caBundle ({days} days left)")),
        },
    });

    checks.push(settings(h, g, production_namespace));

    let webhook_denied = format!("admission webhook \"{WEBHOOK}\" denied the request");
    checks.push(match (&g.bad, &g.good) {
        _ if paused => Check::skip("guard.decides", "paused (see guard.pause): the API server does not call it"),
        (Ok(()), _) => Check::fail(
            "guard.decides",
            format!("a dry-run ConfigMap with CODEXK8S_BUILD_REF=\"-b main\" was admitted in {production_namespace}: the guard does not judge it"),
        )
        .remedy("kubectl ck8s admission lint; check the build-ref policy's mode in ck8s-admission-config and that the namespace is not excluded"),
        (Err(bad), _) if bad.contains(&format!("failed calling webhook \"{WEBHOOK}\"")) => Check::fail(
            "guard.decides",
            format!("the API server could not reach ck8s-admission{outage}: {bad}"),
        )
        .remedy(format!("kubectl -n {ns} get pods,endpointslices; kubectl -n {ns} logs deploy/{CONFIGURATION}; in an emergency see deploy/README.md, \"Emergency disable\"")),
        (Err(bad), _) if !bad.contains(&webhook_denied) => Check::fail(
            "guard.decides",
            format!("the dry-run create of a known-bad ConfigMap failed, not by {WEBHOOK}: {bad}"),
        )
        .remedy(format!("the least privilege smoke needs is in deploy/rbac/smoke.yaml (create configmaps in {production_namespace}, dry run only)")),
        (_, Err(good)) => Check::fail(
            "guard.decides",
            format!("a dry-run ConfigMap with CODEXK8S_BUILD_REF=\"main\" was refused: {good}"),
        )
        .remedy(format!("kubectl -n {ns} logs deploy/{CONFIGURATION}; while it is wrong, see deploy/README.md, \"Emergency disable\"")),
        (Err(_), Ok(())) => Check::pass(
            "guard.decides",
            format!("a dry-run ConfigMap with CODEXK8S_BUILD_REF=\"-b main\" was denied by {WEBHOOK}, one with \"main\" allowed"),
        ),
    });
    checks
}

/// The safety settings `deploy/` ships, each difference named.
fn settings(h: &Hook, g: &Installed, production_namespace: &str) -> Check {
    let mut wrong = Vec::new();
    if !h.fail_closed {
        wrong.push(
            "failurePolicy is Ignore (deploy/ ships Fail: with Ignore an outage admits everything)"
                .to_string(),
        );
    }
    if h.timeout_seconds > MAX_TIMEOUT_SECONDS {
        wrong.push(format!(
            "timeoutSeconds is {} (deploy/ ships {MAX_TIMEOUT_SECONDS})",
            h.timeout_seconds
        ));
    }
    let state = lint::State {
        namespaces: g.namespaces.clone(),
        now: g.now,
        ..Default::default()
    };
    for ns in lint::CONTROL_PLANE_NAMESPACES
        .iter()
        .chain([&g.namespace.as_str()])
        .filter(|ns| lint::judges_writes_in(h, &state, ns))
    {
        wrong.push(format!(
            "writes in {ns} are judged (its namespaceSelector must exclude it)"
        ));
    }
    for w in lint::critical_sent(h, &state) {
        wrong.push(format!(
            "{} ({}) are sent to it (the matchConditions must exclude them)",
            w.what, w.resource
        ));
    }
    if !lint::sends(
        h,
        &state,
        "",
        "configmaps",
        "ConfigMap",
        Some(production_namespace),
    ) {
        wrong.push(format!(
            "ConfigMaps in {production_namespace} are not sent to it: the platform is not judged"
        ));
    }
    if wrong.is_empty() {
        Check::pass(
            "guard.settings",
            format!(
                "failurePolicy Fail, timeoutSeconds {}, the control plane's namespaces, its own and the high-churn writes exempt",
                h.timeout_seconds
            ),
        )
    } else {
        Check::fail("guard.settings", wrong.join("; "))
            .remedy("restore the configuration deploy/ ships: kubectl apply -k deploy/overlays/<the installed overlay>; kubectl ck8s admission lint")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    /// The webhook as `deploy/base` ships it, registered by Service.
    fn shipped() -> Hook {
        let vwc: ValidatingWebhookConfiguration = serde_saphyr::from_str(include_str!(
            "../../../deploy/base/validatingwebhookconfiguration.yaml"
        ))
        .unwrap();
        let name = format!("validating/{CONFIGURATION}");
        let mut hook = vwc
            .webhooks
            .unwrap()
            .into_iter()
            .map(|w| lint::hook!(name, w))
            .next()
            .unwrap();
        hook.ca_bundle = Some(b"not read by judge when served fails".to_vec());
        hook
    }

    fn healthy() -> Installed {
        Installed {
            hook: Some(shipped()),
            namespace: "ck8s-system".into(),
            replicas: Some(Ok(Some((2, 2)))),
            ready_endpoints: Some(Ok(2)),
            served: Ok(90),
            bad: Err(format!(
                "admission webhook \"{WEBHOOK}\" denied the request: [build-ref] ... (400)"
            )),
            good: Ok(()),
            namespaces: BTreeMap::new(),
            now: 0,
            pause: Ok(None),
        }
    }

    fn statuses(g: Installed) -> BTreeMap<String, (Status, String)> {
        judge(&Guard::Installed(Box::new(g)), "codex-k8s-prod")
            .into_iter()
            .map(|c| (c.id.clone(), (c.status, c.detail.clone())))
            .collect()
    }

    #[test]
    fn not_installed_skips_every_guard_check_with_the_reason() {
        let checks = judge(&Guard::NotInstalled, "codex-k8s-prod");
        assert_eq!(checks.len(), IDS.len());
        for c in checks {
            assert_eq!(c.status, Status::Skip, "{c:?}");
            assert!(c.detail.contains("not installed"), "{c:?}");
        }
    }

    #[test]
    fn the_shipped_settings_pass_and_each_weakening_is_named() {
        let s = statuses(healthy());
        for id in [
            "guard.replicas",
            "guard.endpoints",
            "guard.settings",
            "guard.decides",
        ] {
            assert_eq!(s[id].0, Status::Pass, "{id}: {s:?}");
        }

        let mut weak = healthy();
        let h = weak.hook.as_mut().unwrap();
        h.fail_closed = false;
        h.timeout_seconds = 30;
        h.namespace_selector = None;
        h.match_conditions.clear();
        let s = statuses(weak);
        let (status, detail) = &s["guard.settings"];
        assert_eq!(*status, Status::Fail);
        for named in [
            "failurePolicy is Ignore",
            "timeoutSeconds is 30",
            "writes in kube-system",
            "writes in kube-node-lease",
            "writes in ck8s-system",
            "leader election (leases)",
            "events",
            "tokenreviews",
        ] {
            assert!(detail.contains(named), "{named}: {detail}");
        }
    }

    #[test]
    fn an_outage_a_rotated_certificate_and_a_guard_that_admits_are_failures() {
        let mut down = healthy();
        down.replicas = Some(Ok(Some((2, 0))));
        down.ready_endpoints = Some(Ok(0));
        down.served = Err("no ready endpoint to connect to".into());
        down.bad = Err(format!(
            "Internal error occurred: failed calling webhook \"{WEBHOOK}\": connection refused (500)"
        ));
        down.good = down.bad.clone();
        let s = statuses(down);
        for id in IDS
            .iter()
            .filter(|id| !["guard.settings", "guard.pause"].contains(id))
        {
            assert_eq!(s[*id].0, Status::Fail, "{id}: {s:?}");
        }
        assert_eq!(
            s["guard.settings"].0,
            Status::Pass,
            "the settings are intact"
        );
        assert!(
            s["guard.replicas"]
                .1
                .contains("every write it judges is refused now")
        );
        assert!(
            s["guard.decides"]
                .1
                .contains("could not reach ck8s-admission")
        );

        let mut rotated = healthy();
        rotated.served =
            Err("the serving certificate does not verify with the caBundle: UnknownIssuer".into());
        let s = statuses(rotated);
        assert_eq!(s["guard.certificate"].0, Status::Fail);
        assert!(s["guard.certificate"].1.contains("does not verify"));

        let mut admits = healthy();
        admits.bad = Ok(());
        let s = statuses(admits);
        assert_eq!(s["guard.decides"].0, Status::Fail);
        assert!(s["guard.decides"].1.contains("was admitted"));
    }
}
