//! Prometheus metrics: what was decided, how long it took, what went wrong.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

/// Sub-millisecond buckets: a policy evaluation takes tens of microseconds.
const EVAL_BUCKETS: [f64; 14] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.5,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// allow | kept (allowed: every violation was one the old object had) | inherited
    /// (allowed: written by its controller from its owner's template) | deny | bad_request |
    /// too_large | too_slow | overloaded | error
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
    /// allow | kept (allowed: only violations the old object had) | inherited (allowed: a
    /// workload controller wrote an object it controls, from its owner's template) | deny |
    /// warn | audit | error | not_inspected
    pub result: &'static str,
}

/// The `result` label of `policy_evaluations_total`, one per outcome of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyResult {
    /// Allowed with nothing found.
    Allow,
    /// Allowed: only violations the old object had.
    Kept,
    /// Allowed: a workload controller wrote an object it controls, from its owner's template.
    Inherited,
    Deny,
    Warn,
    Audit,
    Error,
    /// The last: [`PolicyResult::COUNT`] counts up to it.
    NotInspected,
}

impl PolicyResult {
    /// How many results there are (the variants, in order, index a policy's series).
    const COUNT: usize = PolicyResult::NotInspected as usize + 1;

    pub fn label(self) -> &'static str {
        match self {
            PolicyResult::Allow => "allow",
            PolicyResult::Kept => "kept",
            PolicyResult::Inherited => "inherited",
            PolicyResult::Deny => "deny",
            PolicyResult::Warn => "warn",
            PolicyResult::Audit => "audit",
            PolicyResult::Error => "error",
            PolicyResult::NotInspected => "not_inspected",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyName {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyErrorLabels {
    pub policy: String,
    /// timeout | memory | stack_overflow | trap | output_too_large | bad_output | guest | capacity
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// policies | certificate | client_ca
    pub what: &'static str,
    /// success | failure
    pub result: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    /// `requests_total`, by decision.
    pub decisions: DecisionSeries,
    pub request_seconds: Histogram,
    pub evaluations: Family<PolicyLabels, Counter>,
    pub evaluation_seconds: Family<PolicyName, Histogram>,
    pub policy_errors: Family<PolicyErrorLabels, Counter>,
    pub inflight: Gauge,
    pub policies_loaded: Gauge,
    pub policy_load_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub connections: ConnectionMetrics,
    /// 1 while a break-glass pause is recorded on the webhook configuration (`--restore-pause`).
    pub paused: Gauge,
    pub pause_restores: Counter,
}

/// One policy's series of `policy_evaluations_total` and
/// `policy_evaluation_duration_seconds`, each looked up in its family once, when first used,
/// and then kept: a review counts its outcomes with no label copied or hashed and no family
/// locked. A series appears in `/metrics` when first used, as one taken from the family would.
/// The counters are the family's own, so a count goes on across reloads.
pub struct PolicySeries {
    policy: String,
    evaluations: [OnceLock<Counter>; PolicyResult::COUNT],
    seconds: OnceLock<Histogram>,
}

impl PolicySeries {
    pub fn new(policy: &str) -> Self {
        PolicySeries {
            policy: policy.to_string(),
            evaluations: Default::default(),
            seconds: OnceLock::new(),
        }
    }

    pub fn policy(&self) -> &str {
        &self.policy
    }

    pub fn evaluated(&self, metrics: &Metrics, result: PolicyResult) {
        self.evaluations[result as usize]
            .get_or_init(|| {
                metrics
                    .evaluations
                    .get_or_create(&PolicyLabels {
                        policy: self.policy.clone(),
                        result: result.label(),
                    })
                    .clone()
            })
            .inc();
    }

    pub fn took(&self, metrics: &Metrics, seconds: f64) {
        self.seconds
            .get_or_init(|| {
                metrics
                    .evaluation_seconds
                    .get_or_create(&PolicyName {
                        policy: self.policy.clone(),
                    })
                    .clone()
            })
            .observe(seconds);
    }
}

/// The series of every policy of one policy set, in the order its outcomes come (see
/// `PolicySet::names`): built when the set goes into service, not per review.
pub struct SetSeries {
    policies: Vec<PolicySeries>,
}

impl SetSeries {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        SetSeries {
            policies: names.into_iter().map(PolicySeries::new).collect(),
        }
    }

    /// The series of the policy called `policy`, the `index`th outcome of a review: found at
    /// its place, else by name (a set whose outcomes came in another order).
    pub fn of(&self, index: usize, policy: &str) -> Option<&PolicySeries> {
        match self.policies.get(index) {
            Some(s) if s.policy == policy => Some(s),
            _ => self.policies.iter().find(|s| s.policy == policy),
        }
    }
}

/// `requests_total`'s series, one per decision, taken from the family when the metrics are
/// made: every decision is in `/metrics` from the start (at 0, so a rate over it is defined
/// before the first denial), and a request is counted without hashing its label.
pub struct DecisionSeries {
    counters: Vec<(&'static str, Counter)>,
    family: Family<DecisionLabels, Counter>,
}

impl DecisionSeries {
    /// The values of `DecisionLabels::decision`.
    pub const DECISIONS: [&'static str; 9] = [
        "allow",
        "kept",
        "inherited",
        "deny",
        "bad_request",
        "too_large",
        "too_slow",
        "overloaded",
        "error",
    ];

    fn new(family: Family<DecisionLabels, Counter>) -> Self {
        DecisionSeries {
            counters: Self::DECISIONS
                .iter()
                .map(|&decision| {
                    let counter = family.get_or_create(&DecisionLabels { decision }).clone();
                    (decision, counter)
                })
                .collect(),
            family,
        }
    }

    /// Counts one request decided `decision` (one of [`DecisionSeries::DECISIONS`]; another
    /// is counted too, through the family).
    pub fn count(&self, decision: &'static str) {
        match self.counters.iter().find(|(d, _)| *d == decision) {
            Some((_, counter)) => counter.inc(),
            None => self
                .family
                .get_or_create(&DecisionLabels { decision })
                .inc(),
        };
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ck8s_admission");
        let connections = ConnectionMetrics::register(&mut registry);
        let mut m = Metrics {
            registry,
            decisions: DecisionSeries::new(Family::default()),
            request_seconds: Histogram::new(EVAL_BUCKETS),
            evaluations: Family::default(),
            evaluation_seconds: Family::new_with_constructor(|| Histogram::new(EVAL_BUCKETS)),
            policy_errors: Family::default(),
            inflight: Gauge::default(),
            policies_loaded: Gauge::default(),
            policy_load_seconds: Gauge::default(),
            reloads: Family::default(),
            connections,
            paused: Gauge::default(),
            pause_restores: Counter::default(),
        };
        let r = &mut m.registry;
        r.register(
            "requests",
            "Admission reviews answered, by decision",
            m.decisions.family.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to answer one review (parse, evaluate, encode)",
            m.request_seconds.clone(),
        );
        r.register(
            "policy_evaluations",
            "Policy evaluations, by policy and result",
            m.evaluations.clone(),
        );
        r.register(
            "policy_evaluation_duration_seconds",
            "Time of one policy evaluation (the policy that opens a fresh instance, alone or first of its bundle, also counts setting it up)",
            m.evaluation_seconds.clone(),
        );
        r.register(
            "policy_errors",
            "Policy evaluations that failed (timeouts included), by kind",
            m.policy_errors.clone(),
        );
        r.register(
            "inflight_requests",
            "Reviews being evaluated now",
            m.inflight.clone(),
        );
        r.register(
            "policies_loaded",
            "Policies in service",
            m.policies_loaded.clone(),
        );
        r.register(
            "policy_load_duration_seconds",
            "Time the last successful policy (re)load took",
            m.policy_load_seconds.clone(),
        );
        r.register(
            "reloads",
            "Reloads of policies and certificate, by result",
            m.reloads.clone(),
        );
        r.register(
            "paused",
            "1 while a break-glass pause is recorded on the webhook configuration (with --restore-pause)",
            m.paused.clone(),
        );
        r.register(
            "pause_restores",
            "Webhook configurations restored at the end of a break-glass pause",
            m.pause_restores.clone(),
        );
        m
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn reload(&self, what: &'static str, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                what,
                result: if ok { "success" } else { "failure" },
            })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    /// handshake | header | body | idle
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// full | resumed
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// handshake | idle | head | busy
    pub phase: &'static str,
}

/// Connections and request bodies: what the limits of issue 15 did.
#[derive(Clone)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    /// Set from the open connections when `/metrics` is read.
    pub oldest: Family<PhaseLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub timeouts: Family<TimeoutLabels, Counter>,
    /// Completed TLS handshakes: with keep-alive, a few per client, not one per review.
    pub handshakes: Family<HandshakeLabels, Counter>,
    pub evicted: Counter,
    pub cap_waits: Counter,
    pub body_bytes: Gauge,
    pub body_budget_waits: Counter,
}

impl ConnectionMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = ConnectionMetrics {
            open: Gauge::default(),
            oldest: Family::default(),
            timeouts: Family::default(),
            handshakes: Family::default(),
            evicted: Counter::default(),
            cap_waits: Counter::default(),
            body_bytes: Gauge::default(),
            body_budget_waits: Counter::default(),
        };
        registry.register(
            "open_connections",
            "HTTPS connections open now (handshaking, idle or busy)",
            m.open.clone(),
        );
        registry.register(
            "oldest_connection_seconds",
            "Age in its phase of the oldest open HTTPS connection of each phase (handshake, idle, head, busy); one above its phase's timeout has escaped it",
            m.oldest.clone(),
        );
        registry.register(
            "connection_timeouts",
            "Connections closed by a timeout, by reason",
            m.timeouts.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes completed on the HTTPS listener, by kind (full, resumed): new connections, since a keep-alive connection carries many reviews",
            m.handshakes.clone(),
        );
        registry.register(
            "connections_evicted",
            "Idle keep-alive connections closed to make room at --max-connections",
            m.evicted.clone(),
        );
        registry.register(
            "connection_cap_waits",
            "Accepted connections that had to wait for a place under --max-connections",
            m.cap_waits.clone(),
        );
        registry.register(
            "inflight_body_bytes",
            "Request body bytes holding a place in --max-inflight-bytes now",
            m.body_bytes.clone(),
        );
        registry.register(
            "body_budget_waits",
            "Requests whose body had to wait for room in --max-inflight-bytes",
            m.body_budget_waits.clone(),
        );
        m
    }

    pub fn oldest(&self, phase: &'static str, age: std::time::Duration) {
        self.oldest
            .get_or_create(&PhaseLabels { phase })
            .set(age.as_secs_f64());
    }

    pub fn timeout(&self, reason: &'static str) {
        self.timeouts.get_or_create(&TimeoutLabels { reason }).inc();
    }

    pub fn handshake(&self, kind: rustls::HandshakeKind) {
        let kind = match kind {
            rustls::HandshakeKind::Resumed => "resumed",
            _ => "full",
        };
        self.handshakes
            .get_or_create(&HandshakeLabels { kind })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(metrics: &Metrics, series: &str) -> Option<f64> {
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn a_policy_series_appears_when_first_used_and_counts_on_across_sets() {
        let metrics = Metrics::new();
        let first = SetSeries::new(["build-ref", "legacy-labels"]);
        let series =
            r#"ck8s_admission_policy_evaluations_total{policy="legacy-labels",result="deny"}"#;
        assert_eq!(
            sample(&metrics, series),
            None,
            "no series before its first use"
        );

        first
            .of(1, "legacy-labels")
            .unwrap()
            .evaluated(&metrics, PolicyResult::Deny);
        assert_eq!(sample(&metrics, series), Some(1.0));

        // A reloaded set, its policies in another order: found by name, the same counter.
        let reloaded = SetSeries::new(["legacy-labels", "build-ref"]);
        let found = reloaded.of(1, "legacy-labels").unwrap();
        assert_eq!(found.policy(), "legacy-labels");
        found.evaluated(&metrics, PolicyResult::Deny);
        found.took(&metrics, 0.00002);
        assert_eq!(sample(&metrics, series), Some(2.0));
        assert_eq!(
            sample(
                &metrics,
                r#"ck8s_admission_policy_evaluation_duration_seconds_count{policy="legacy-labels"}"#
            ),
            Some(1.0)
        );
        assert!(reloaded.of(0, "kaniko-cache").is_none());
    }

    #[test]
    fn every_decision_is_counted_from_zero() {
        let metrics = Metrics::new();
        for decision in DecisionSeries::DECISIONS {
            let series = format!(r#"ck8s_admission_requests_total{{decision="{decision}"}}"#);
            assert_eq!(sample(&metrics, &series), Some(0.0), "{series}");
        }
        metrics.decisions.count("deny");
        metrics.decisions.count("deny");
        metrics.decisions.count("something-new");
        assert_eq!(
            sample(
                &metrics,
                r#"ck8s_admission_requests_total{decision="deny"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &metrics,
                r#"ck8s_admission_requests_total{decision="something-new"}"#
            ),
            Some(1.0)
        );
    }
}
