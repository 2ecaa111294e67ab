//! `admission lint`: every validating and mutating webhook of the cluster, of any vendor,
//! judged for what can lock the cluster out or slow every write. Fetch (the configurations,
//! the Namespaces the control plane writes in, each Service's endpoints, each URL webhook's
//! TLS handshake) → [`State`]; [`judge`] is pure.

use crate::cluster::Ctx;
use crate::cluster::webhooks::{Write, conditions_send};
use crate::exit::Failure;
use crate::report::{Check, Outcome, Report};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;

/// The namespaces whose writes keep the control plane alive: leader election (kube-system)
/// and node heartbeats (kube-node-lease).
pub(crate) const CONTROL_PLANE_NAMESPACES: [&str; 2] = ["kube-system", "kube-node-lease"];

/// A write the control plane makes all the time, which a `Fail` webhook must never judge (of
/// version v1, as every write judged here).
pub(crate) struct CriticalWrite {
    pub group: &'static str,
    pub resource: &'static str,
    pub kind: &'static str,
    /// Where it is written (`None`: cluster-scoped).
    pub namespace: Option<&'static str>,
    pub what: &'static str,
}

const CRITICAL: [CriticalWrite; 8] = [
    CriticalWrite {
        group: "coordination.k8s.io",
        resource: "leases",
        kind: "Lease",
        namespace: Some("kube-node-lease"),
        what: "node heartbeats",
    },
    CriticalWrite {
        group: "coordination.k8s.io",
        resource: "leases",
        kind: "Lease",
        namespace: Some("kube-system"),
        what: "leader election",
    },
    CriticalWrite {
        group: "",
        resource: "events",
        kind: "Event",
        namespace: Some("default"),
        what: "events",
    },
    CriticalWrite {
        group: "",
        resource: "endpoints",
        kind: "Endpoints",
        namespace: Some("default"),
        what: "the kubernetes Service's endpoints",
    },
    CriticalWrite {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        kind: "EndpointSlice",
        namespace: Some("default"),
        what: "the kubernetes Service's endpoint slices",
    },
    CriticalWrite {
        group: "authentication.k8s.io",
        resource: "tokenreviews",
        kind: "TokenReview",
        namespace: None,
        what: "token reviews",
    },
    CriticalWrite {
        group: "authorization.k8s.io",
        resource: "subjectaccessreviews",
        kind: "SubjectAccessReview",
        namespace: None,
        what: "access reviews",
    },
    CriticalWrite {
        group: "authorization.k8s.io",
        resource: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
        namespace: None,
        what: "self access reviews",
    },
];

/// Leader election renews its lease every 10 s by default (`--leader-elect-renew-deadline`):
/// a webhook the lease writes wait on must answer well within it.
const RENEW_DEADLINE_SECONDS: i32 = 10;
/// Above this, a hung webhook holds every write it judges noticeably.
const SLOW_SECONDS: i32 = 5;
/// The same threshold as `tls.production`.
pub(crate) const CERT_WARN_DAYS: i64 = crate::smoke::checks::TLS_WARN_DAYS;

/// One webhook of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Hook {
    /// `validating/NAME` or `mutating/NAME`.
    pub configuration: String,
    pub name: String,
    pub fail_closed: bool,
    pub timeout_seconds: i32,
    pub rules: Vec<RuleWithOperations>,
    pub namespace_selector: Option<LabelSelector>,
    pub object_selector: Option<LabelSelector>,
    /// `(name, expression)` of each `matchConditions` entry.
    pub match_conditions: Vec<(String, String)>,
    /// `(namespace, name)` of `clientConfig.service`.
    pub service: Option<(String, String)>,
    pub url: Option<String>,
    /// `clientConfig.caBundle`, PEM.
    pub ca_bundle: Option<Vec<u8>>,
}

/// What the lint read.
#[derive(Debug, Default)]
pub struct State {
    pub hooks: Vec<Hook>,
    /// Labels of the control plane's namespaces (`None`: not found).
    pub namespaces: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// Ready endpoints of each Service webhook (`Err`: could not be read).
    pub ready_endpoints: BTreeMap<(String, String), Result<usize, String>>,
    /// The outcome of a TLS handshake with each URL webhook, verified with its caBundle.
    pub handshakes: BTreeMap<String, Result<i64, String>>,
    /// Seconds since the epoch.
    pub now: i64,
}

#[derive(Debug, clap::Args)]
pub struct LintArgs {}

pub async fn run(_args: LintArgs, ctx: &Ctx) -> Result<Outcome, Failure> {
    let state = fetch(ctx).await?;
    Ok(Outcome::checks(Report::of("admission lint", judge(&state))))
}

/// A [`Hook`] from a `ValidatingWebhook` or a `MutatingWebhook`: two types with the same
/// fields.
macro_rules! hook {
    ($configuration:expr, $w:expr) => {{
        let w = $w;
        Hook {
            configuration: $configuration.clone(),
            name: w.name,
            // The API server's default is Fail.
            fail_closed: w.failure_policy.as_deref() != Some("Ignore"),
            // The API server's default is 10 s.
            timeout_seconds: w.timeout_seconds.unwrap_or(10),
            rules: w.rules.unwrap_or_default(),
            namespace_selector: w.namespace_selector,
            object_selector: w.object_selector,
            match_conditions: w
                .match_conditions
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.name, c.expression))
                .collect(),
            service: w.client_config.service.map(|s| (s.namespace, s.name)),
            url: w.client_config.url,
            ca_bundle: w.client_config.ca_bundle.map(|b| b.0),
        }
    }};
}
pub(crate) use hook;

async fn fetch(ctx: &Ctx) -> Result<State, Failure> {
    let lp = ListParams::default();
    let validating: Api<ValidatingWebhookConfiguration> = ctx.all();
    let mutating: Api<MutatingWebhookConfiguration> = ctx.all();
    let mut state = State {
        now: jiff::Timestamp::now().as_second(),
        ..Default::default()
    };
    let configurations = |kind: &str, e: kube::Error| ctx.err("list", kind, None, e);
    for c in validating
        .list(&lp)
        .await
        .map_err(|e| configurations("validatingwebhookconfigurations", e))?
    {
        let name = format!("validating/{}", c.metadata.name.unwrap_or_default());
        state
            .hooks
            .extend(c.webhooks.into_iter().flatten().map(|w| hook!(name, w)));
    }
    for c in mutating
        .list(&lp)
        .await
        .map_err(|e| configurations("mutatingwebhookconfigurations", e))?
    {
        let name = format!("mutating/{}", c.metadata.name.unwrap_or_default());
        state
            .hooks
            .extend(c.webhooks.into_iter().flatten().map(|w| hook!(name, w)));
    }
    let namespaces: Api<Namespace> = ctx.all();
    for ns in CONTROL_PLANE_NAMESPACES.into_iter().chain(["default"]) {
        let found = ctx.get_opt(namespaces.clone(), "namespaces", ns).await?;
        state.namespaces.insert(
            ns.to_string(),
            found.map(|n| n.metadata.labels.unwrap_or_default()),
        );
    }
    for hook in &state.hooks {
        if let Some(service @ (ns, name)) = &hook.service
            && !state.ready_endpoints.contains_key(service)
        {
            let slices: Api<EndpointSlice> = ctx.in_ns(ns);
            let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
            let ready = slices
                .list(&lp)
                .await
                .map_err(|e| e.to_string())
                .map(|list| {
                    list.items
                        .iter()
                        .flat_map(|s| &s.endpoints)
                        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                        .count()
                });
            state.ready_endpoints.insert(service.clone(), ready);
        }
        if let Some(url) = &hook.url
            && !state.handshakes.contains_key(url)
        {
            let result = handshake(url, hook.ca_bundle.as_deref(), ctx.request_timeout).await;
            state.handshakes.insert(url.clone(), result);
        }
    }
    Ok(state)
}

const NO_CA_BUNDLE: &str =
    "no caBundle: verified against the API server's system roots, which ck8s cannot see";

/// A TLS handshake with the webhook at `url`, verifying its certificate as the API server
/// does, against `ca_bundle`: the days left on the served certificate. Without a caBundle the
/// API server uses its system roots, which are not visible from here: an error saying so
/// (the `ca` check does not use it then).
pub(crate) async fn handshake(
    url: &str,
    ca_bundle: Option<&[u8]>,
    timeout: std::time::Duration,
) -> Result<i64, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let host = uri.host().ok_or("the URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    if ca_bundle.is_none() {
        return Err(NO_CA_BUNDLE.into());
    }
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        verify_served(tcp, &host, ca_bundle).await
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| format!("no TLS handshake with {host}:{port} within {timeout:?}"))?
}

/// A TLS handshake over `stream` as the API server makes it: `server_name` verified against
/// `ca_bundle` alone. The days left on the served certificate.
pub(crate) async fn verify_served<S>(
    stream: S,
    server_name: &str,
    ca_bundle: Option<&[u8]>,
) -> Result<i64, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let pem = ca_bundle.ok_or(NO_CA_BUNDLE)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("caBundle is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("caBundle holds a certificate that is not a CA: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name =
        ServerName::try_from(server_name.to_string()).map_err(|e| format!("{server_name}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("the serving certificate does not verify with the caBundle: {e}"))?;
    let served = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("the webhook served no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(served)
        .map_err(|e| format!("the served certificate does not parse: {e}"))?;
    Ok(
        (cert.validity().not_after.timestamp() - jiff::Timestamp::now().as_second())
            .div_euclid(86_400),
    )
}

/// Everyday namespaced writes: a webhook sent any of them in kube-system judges the control
/// plane's own workloads. `(group, resource, kind)`, of version v1.
const EVERYDAY: [(&str, &str, &str); 5] = [
    ("", "pods", "Pod"),
    ("", "configmaps", "ConfigMap"),
    ("", "secrets", "Secret"),
    ("apps", "deployments", "Deployment"),
    ("coordination.k8s.io", "leases", "Lease"),
];

/// Whether the API server sends the webhook an UPDATE of an unlabelled `kind` (version v1) in
/// `namespace` (`None`: cluster-scoped): its rules, namespaceSelector, objectSelector and matchConditions,
/// the conditions evaluated by ck8s's CEL evaluator ([`conditions_send`]).
pub(crate) fn sends(
    h: &Hook,
    s: &State,
    group: &str,
    resource: &str,
    kind: &str,
    namespace: Option<&str>,
) -> bool {
    if !h.rules.iter().any(|r| rule_matches(r, group, resource)) {
        return false;
    }
    if let Some(ns) = namespace {
        let mut labels = s.namespaces.get(ns).cloned().flatten().unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".into(), ns.to_string());
        if !selects(h.namespace_selector.as_ref(), &labels) {
            return false;
        }
    }
    if !selects(h.object_selector.as_ref(), &BTreeMap::new()) {
        return false;
    }
    conditions_send(
        &h.match_conditions,
        Write {
            group,
            version: "v1",
            resource,
            kind,
            namespace,
        },
        h.fail_closed,
    )
}

/// The control plane's writes ([`CRITICAL`]) the API server sends the webhook.
pub(crate) fn critical_sent<'a>(
    h: &'a Hook,
    s: &'a State,
) -> impl Iterator<Item = &'static CriticalWrite> + 'a {
    CRITICAL
        .iter()
        .filter(|w| sends(h, s, w.group, w.resource, w.kind, w.namespace))
}

/// Whether the webhook judges an everyday write ([`EVERYDAY`]) in `namespace`.
pub(crate) fn judges_writes_in(h: &Hook, s: &State, namespace: &str) -> bool {
    EVERYDAY
        .iter()
        .any(|(g, r, k)| sends(h, s, g, r, k, Some(namespace)))
}

/// Whether `rule` sends `group/resource` CREATE or UPDATE requests to the webhook.
fn rule_matches(rule: &RuleWithOperations, group: &str, resource: &str) -> bool {
    let has = |list: &Option<Vec<String>>, wanted: &[&str]| {
        list.iter()
            .flatten()
            .any(|x| x == "*" || wanted.contains(&x.as_str()))
    };
    has(&rule.api_groups, &[group])
        && has(&rule.resources, &["*/*", resource])
        && has(&rule.operations, &["CREATE", "UPDATE"])
}

/// Whether a label selector selects `labels` (an absent selector selects everything), by the
/// one selector match of the cluster layer.
fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    selector.is_none_or(|s| crate::cluster::objects::matches(s, labels))
}

pub fn judge(s: &State) -> Vec<Check> {
    let mut checks = Vec::new();
    if s.hooks.is_empty() {
        checks.push(Check::pass(
            "webhooks",
            "no validating or mutating webhook is registered",
        ));
    }
    for h in &s.hooks {
        let id = |aspect: &str| format!("{}/{}:{aspect}", h.configuration, h.name);
        // The control plane's own writes this webhook is sent (under Fail: refused when it
        // is down). Leases are judged per namespace: node heartbeats and leader election.
        let critical: Vec<String> = critical_sent(h, s)
            .map(|w| {
                let name = if w.group.is_empty() {
                    w.resource.to_string()
                } else {
                    format!("{}.{}", w.resource, w.group)
                };
                let place = w.namespace.map(|n| format!(" in {n}")).unwrap_or_default();
                format!("{name}{place} ({})", w.what)
            })
            .collect();
        // Any write in the control plane's namespaces.
        let judged_namespaces: Vec<&str> = CONTROL_PLANE_NAMESPACES
            .into_iter()
            .filter(|ns| judges_writes_in(h, s, ns))
            .collect();

        // Lockout: under Fail, what the control plane itself writes.
        let lockout_id = id("lockout");
        let mut risks = Vec::new();
        if !critical.is_empty() {
            risks.push(format!("it is sent {}", critical.join(", ")));
        }
        if !judged_namespaces.is_empty() {
            risks.push(format!(
                "it judges writes in {}",
                judged_namespaces.join(" and ")
            ));
        }
        let remedy = "exclude kube-system and kube-node-lease with the namespaceSelector (kubernetes.io/metadata.name NotIn [...]) and leases, events, endpoints, endpointslices, token and access reviews with the rules or matchConditions, or set failurePolicy: Ignore";
        checks.push(if risks.is_empty() {
            Check::pass(lockout_id, "is sent nothing the control plane must always write")
        } else if !h.fail_closed {
            Check::warn(
                lockout_id,
                format!("{} (failurePolicy Ignore: slowed, not blocked, when it is down)", risks.join("; ")),
            )
            .remedy(remedy)
        } else {
            Check::fail(
                lockout_id,
                format!(
                    "{} under failurePolicy Fail: when it is down, leader election, node heartbeats or the control plane's own writes are refused",
                    risks.join("; ")
                ),
            )
            .remedy(remedy)
        });

        // Timeout.
        let timeout_id = id("timeout");
        let t = h.timeout_seconds;
        let touches_leases = critical_sent(h, s).any(|w| w.resource == "leases");
        checks.push(if h.fail_closed && touches_leases && t >= RENEW_DEADLINE_SECONDS / 2 {
            Check::fail(
                timeout_id,
                format!("timeoutSeconds {t} on lease writes: leader election renews within {RENEW_DEADLINE_SECONDS} s"),
            )
            .remedy("lower timeoutSeconds (ck8s ships 5) and stop judging leases")
        } else if t > SLOW_SECONDS {
            Check::warn(
                timeout_id,
                format!("timeoutSeconds {t}: a webhook that hangs holds every write it judges for {t} s"),
            )
            .remedy(format!("lower timeoutSeconds to {SLOW_SECONDS} or less"))
        } else {
            Check::pass(timeout_id, format!("timeoutSeconds {t}"))
        });

        // Endpoints of a Service webhook.
        if let Some((ns, name)) = &h.service {
            let endpoints_id = id("endpoints");
            let remedy = format!(
                "kubectl -n {ns} get endpointslices -l kubernetes.io/service-name={name}; start the webhook's pods, or remove the configuration if the webhook was uninstalled"
            );
            checks.push(match s.ready_endpoints.get(&(ns.clone(), name.clone())) {
                Some(Ok(n)) if *n > 0 => Check::pass(
                    endpoints_id,
                    format!("Service {ns}/{name}: {n} ready endpoint(s)"),
                ),
                Some(Ok(_)) if h.fail_closed => Check::fail(
                    endpoints_id,
                    format!("Service {ns}/{name} has no ready endpoint under failurePolicy Fail: every write it judges is refused now"),
                )
                .remedy(remedy),
                Some(Ok(_)) => Check::warn(
                    endpoints_id,
                    format!("Service {ns}/{name} has no ready endpoint (failurePolicy Ignore: its rules are not enforced)"),
                )
                .remedy(remedy),
                Some(Err(e)) => Check::skip(endpoints_id, format!("endpoints of {ns}/{name} could not be read: {e}")),
                None => Check::skip(endpoints_id, "not read"),
            });
        }

        // The caBundle: present, in date, and (for a URL webhook) verifying what it serves.
        let ca_id = id("ca");
        let ca_remedy = "put the CA that signs the serving certificate into clientConfig.caBundle (cert-manager's ca-injector, or the deploy overlay's script)";
        checks.push(match &h.ca_bundle {
            None if h.service.is_some() => Check::fail(
                ca_id,
                "no caBundle: the API server cannot verify the webhook's certificate",
            )
            .remedy(ca_remedy),
            None => Check::skip(ca_id, "no caBundle: the API server uses its system roots, which this check cannot see"),
            Some(pem) => match bundle_days_left(pem, s.now) {
                Err(e) => Check::fail(ca_id, format!("caBundle: {e}")).remedy(ca_remedy),
                Ok(d) if d < 0 => Check::fail(ca_id, format!("caBundle: a certificate expired {} days ago", -d)).remedy(ca_remedy),
                Ok(d) => match h.url.as_ref().and_then(|u| s.handshakes.get(u)) {
                    Some(Err(e)) => Check::fail(ca_id, e.clone()).remedy(ca_remedy),
                    _ if d < CERT_WARN_DAYS => Check::warn(ca_id, format!("caBundle: a certificate expires in {d} days")).remedy(ca_remedy),
                    Some(Ok(_)) => Check::pass(ca_id, format!("the serving certificate verifies with the caBundle ({d} days left)")),
                    None => Check::pass(ca_id, format!("caBundle in date ({d} days left); the serving certificate of a Service webhook is not reachable from here")),
                },
            },
        });

        // Scope: everything, unfiltered.
        let scope_id = id("scope");
        // Only a rule of `*` groups and `*` (or `*/*`) resources matches group and resource `*`.
        let everything = h.rules.iter().any(|r| rule_matches(r, "*", "*"));
        let filtered = !h.match_conditions.is_empty()
            || h.object_selector
                .as_ref()
                .is_some_and(|o| o != &LabelSelector::default())
            || h.namespace_selector
                .as_ref()
                .is_some_and(|n| n != &LabelSelector::default());
        checks.push(if everything && !filtered {
            Check::warn(
                scope_id,
                "rules of * resources in * groups, with no selector or matchConditions: it is called on every write in the cluster",
            )
            .remedy("narrow the rules to the kinds its policies judge (kubectl ck8s policy webhook-rules) or add matchConditions")
        } else {
            Check::pass(scope_id, "rules or selectors narrow what it is sent")
        });
    }
    checks
}

/// Days until the first certificate of `pem` to expire does (negative once one has).
pub(crate) fn bundle_days_left(pem: &[u8], now: i64) -> Result<i64, String> {
    let mut least: Option<i64> = None;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("not PEM: {e}"))?;
        let cert = block
            .parse_x509()
            .map_err(|e| format!("not a certificate: {e}"))?;
        let days = (cert.validity().not_after.timestamp() - now).div_euclid(86_400);
        least = Some(least.map_or(days, |l| l.min(days)));
    }
    least.ok_or_else(|| "holds no certificate".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    fn rule(groups: &[&str], resources: &[&str]) -> RuleWithOperations {
        RuleWithOperations {
            api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
            api_versions: Some(vec!["*".into()]),
            resources: Some(resources.iter().map(|s| s.to_string()).collect()),
            operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
            scope: None,
        }
    }

    fn not_in_control_plane() -> LabelSelector {
        serde_json::from_value(
            serde_json::json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name",
            "operator": "NotIn", "values": ["kube-system", "kube-node-lease"]}]}),
        )
        .unwrap()
    }

    fn state(hook: Hook) -> State {
        State {
            hooks: vec![hook],
            namespaces: CONTROL_PLANE_NAMESPACES
                .iter()
                .chain(&["default"])
                .map(|n| (n.to_string(), Some(BTreeMap::new())))
                .collect(),
            ..Default::default()
        }
    }

    fn status(checks: &[Check], aspect: &str) -> Status {
        checks
            .iter()
            .find(|c| c.id.ends_with(&format!(":{aspect}")))
            .unwrap_or_else(|| panic!("no {aspect} in {checks:?}"))
            .status
    }

    #[test]
    fn a_careful_webhook_passes_and_a_dangerous_one_fails() {
        let careful = Hook {
            configuration: "validating/careful".into(),
            name: "careful.example".into(),
            fail_closed: true,
            timeout_seconds: 5,
            rules: vec![rule(&["apps"], &["deployments"])],
            namespace_selector: Some(not_in_control_plane()),
            ..Default::default()
        };
        let checks = judge(&state(careful.clone()));
        for aspect in ["lockout", "timeout", "scope"] {
            assert_eq!(
                status(&checks, aspect),
                Status::Pass,
                "{aspect}: {checks:?}"
            );
        }
        let dangerous = Hook {
            rules: vec![rule(&["*"], &["*"])],
            namespace_selector: None,
            timeout_seconds: 30,
            ..careful
        };
        let checks = judge(&state(dangerous.clone()));
        assert_eq!(status(&checks, "lockout"), Status::Fail, "{checks:?}");
        assert_eq!(status(&checks, "timeout"), Status::Fail);
        assert_eq!(status(&checks, "scope"), Status::Warn);
        // The same under Ignore: slowed, not blocked.
        let ignore = Hook {
            fail_closed: false,
            ..dangerous
        };
        assert_eq!(status(&judge(&state(ignore)), "lockout"), Status::Warn);
    }

    /// deploy/'s configuration: every check but the ones that need a cluster passes; without
    /// one of its matchConditions it would be sent the control plane's writes.
    #[test]
    fn the_shipped_configuration_passes_and_its_conditions_are_evaluated() {
        let vwc: ValidatingWebhookConfiguration = serde_saphyr::from_str(include_str!(
            "../../../deploy/base/validatingwebhookconfiguration.yaml"
        ))
        .unwrap();
        let name = "validating/ck8s-admission".to_string();
        let shipped = hook!(name, vwc.webhooks.unwrap().remove(0));
        let checks = judge(&state(shipped.clone()));
        for aspect in ["lockout", "timeout", "scope"] {
            assert_eq!(
                status(&checks, aspect),
                Status::Pass,
                "{aspect}: {checks:?}"
            );
        }
        for (dropped, sent) in [
            (
                "exclude-high-churn",
                "leases.coordination.k8s.io in kube-node-lease",
            ),
            (
                "exclude-access-reviews",
                "tokenreviews.authentication.k8s.io",
            ),
        ] {
            let mut hook = shipped.clone();
            hook.match_conditions.retain(|(n, _)| n != dropped);
            // Leases in kube-node-lease are also exempt by namespace: judge that namespace.
            hook.namespace_selector = None;
            let checks = judge(&state(hook));
            let lockout = checks.iter().find(|c| c.id.ends_with(":lockout")).unwrap();
            assert_eq!(lockout.status, Status::Fail, "{dropped}: {lockout:?}");
            assert!(
                lockout.detail.contains(sent),
                "{dropped}: {}",
                lockout.detail
            );
        }
        // A condition that cannot be evaluated here counts as sending under Fail.
        let mut hook = shipped;
        hook.match_conditions = vec![(
            "authz".into(),
            "authorizer.group('').resource('x').check('get').allowed()".into(),
        )];
        hook.namespace_selector = None;
        assert_eq!(status(&judge(&state(hook)), "lockout"), Status::Fail);
    }

    #[test]
    fn a_service_without_endpoints_and_a_missing_ca_are_outages() {
        let hook = Hook {
            configuration: "validating/x".into(),
            name: "x".into(),
            fail_closed: true,
            timeout_seconds: 5,
            rules: vec![rule(&["apps"], &["deployments"])],
            namespace_selector: Some(not_in_control_plane()),
            service: Some(("ns".into(), "svc".into())),
            ..Default::default()
        };
        let mut s = state(hook);
        s.ready_endpoints.insert(("ns".into(), "svc".into()), Ok(0));
        let checks = judge(&s);
        assert_eq!(status(&checks, "endpoints"), Status::Fail);
        assert_eq!(status(&checks, "ca"), Status::Fail);
    }
}
