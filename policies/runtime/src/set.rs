//! The policies in service, with their configuration, and the evaluation of a request.

use crate::config::{Mode, OnError, PolicyConfig, SettingsFile};
use crate::error::PolicyError;
use crate::policy::LoadedPolicy;
use crate::subject::{NotJudged, Subject};
use ck8s_policy_api::{ABI_VERSION_JSON, Verdict, Violation};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Entry {
    policy: Arc<LoadedPolicy>,
    config: PolicyConfig,
    /// Defaults merged with the configured settings, serialized once.
    settings_json: Vec<u8>,
}

/// An immutable set of policies and their configuration. The webhook swaps whole sets
/// atomically on reload; a request keeps the set it started with.
pub struct PolicySet {
    entries: Vec<Entry>,
}

/// What one policy made of one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub policy: String,
    pub mode: Mode,
    pub on_error: OnError,
    pub result: OutcomeResult,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeResult {
    /// The policy's rules do not cover this kind/operation: it was not called.
    NotInspected,
    Allowed,
    Violations(Vec<Violation>),
    Error(PolicyError),
}

/// The result of evaluating a request against a set.
#[derive(Debug, Clone)]
pub enum Evaluation {
    /// The shared request rules allowed it without asking any policy.
    NotJudged(NotJudged),
    Judged(Vec<Outcome>),
}

impl PolicySet {
    /// Builds a set; fails on duplicate policy names, configuration for a policy that is not
    /// loaded, or a setting the policy does not declare (a typo would otherwise be ignored).
    pub fn new(policies: Vec<Arc<LoadedPolicy>>, config: &SettingsFile) -> Result<Self, String> {
        let mut entries: Vec<Entry> = Vec::with_capacity(policies.len());
        for policy in policies {
            let name = policy.name().to_string();
            if let Some(other) = entries.iter().find(|e| e.policy.name() == name) {
                return Err(format!(
                    "two policies are called {name}: {} and {}",
                    other.policy.source, policy.source
                ));
            }
            let cfg = config.policies.get(&name).cloned().unwrap_or_default();
            let mut settings = policy.metadata.default_settings();
            for (key, value) in &cfg.settings {
                if !settings.contains_key(key) {
                    let known: Vec<_> = policy
                        .metadata
                        .settings
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect();
                    return Err(format!(
                        "policy {name} has no setting {key:?} (known: {})",
                        known.join(", ")
                    ));
                }
                settings.insert(key.clone(), value.clone());
            }
            let settings_json = serde_json::to_vec(&settings).map_err(|e| e.to_string())?;
            entries.push(Entry {
                policy,
                config: cfg,
                settings_json,
            });
        }
        for name in config.policies.keys() {
            if !entries.iter().any(|e| e.policy.name() == name) {
                let loaded: Vec<_> = entries.iter().map(|e| e.policy.name()).collect();
                return Err(format!(
                    "config names policy {name:?}, which is not loaded (loaded: {})",
                    loaded.join(", ")
                ));
            }
        }
        Ok(PolicySet { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The policies in evaluation order, with their configuration.
    pub fn policies(&self) -> impl Iterator<Item = (&Arc<LoadedPolicy>, &PolicyConfig)> {
        self.entries.iter().map(|e| (&e.policy, &e.config))
    }

    /// Applies the shared request rules, then asks every policy whose rules cover the request,
    /// in a fresh, isolated instance per request: one per policy, or one for all the policies
    /// of a bundle.
    pub fn evaluate(&self, subject: &Subject<'_>) -> Evaluation {
        if let Some(reason) = subject.not_judged() {
            return Evaluation::NotJudged(reason);
        }
        let (group, version, resource) = &subject.resource;
        let inspects: Vec<bool> = self
            .entries
            .iter()
            .map(|e| {
                e.policy
                    .metadata
                    .inspects(group, version, resource, subject.operation)
            })
            .collect();
        // Built on first use and shared by every policy: the object is parsed once, here.
        let mut input = None;
        let mut request_json: Option<Vec<u8>> = None;
        let mut results: Vec<Option<(Result<Verdict, PolicyError>, Duration)>> =
            self.entries.iter().map(|_| None).collect();
        for (i, e) in self.entries.iter().enumerate() {
            if !inspects[i] || results[i].is_some() {
                continue;
            }
            if e.policy.abi_version() == ABI_VERSION_JSON {
                let start = Instant::now();
                let request = request_json.get_or_insert_with(|| subject.request_json());
                let verdict = e.policy.evaluate(request, &e.settings_json);
                results[i] = Some((verdict, start.elapsed()));
                continue;
            }
            let input = match input.get_or_insert_with(|| subject.input()) {
                Ok(input) => input,
                // The view does not parse: what every policy would have said.
                Err(message) => {
                    results[i] = Some((Err(PolicyError::Guest(message.clone())), Duration::ZERO));
                    continue;
                }
            };
            if !e.policy.is_bundled() {
                let start = Instant::now();
                let verdict = e.policy.evaluate_input(input, &e.settings_json);
                results[i] = Some((verdict, start.elapsed()));
                continue;
            }
            // This policy and the others of its bundle that the request concerns: one instance.
            let members: Vec<usize> = (i..self.entries.len())
                .filter(|&j| inspects[j] && self.entries[j].policy.same_bundle(&e.policy))
                .collect();
            let calls: Vec<(&LoadedPolicy, &[u8])> = members
                .iter()
                .map(|&j| (&*self.entries[j].policy, &self.entries[j].settings_json[..]))
                .collect();
            for (j, result) in members
                .into_iter()
                .zip(LoadedPolicy::evaluate_together(&calls, input))
            {
                results[j] = Some(result);
            }
        }
        let outcomes = self
            .entries
            .iter()
            .zip(results)
            .map(|(e, result)| {
                let (result, elapsed) = match result {
                    None => (OutcomeResult::NotInspected, Duration::ZERO),
                    Some((Ok(v), t)) if v.violations.is_empty() => (OutcomeResult::Allowed, t),
                    Some((Ok(v), t)) => (OutcomeResult::Violations(v.violations), t),
                    Some((Err(err), t)) => (OutcomeResult::Error(err), t),
                };
                Outcome {
                    policy: e.policy.name().to_string(),
                    mode: e.config.mode,
                    on_error: e.config.on_error,
                    result,
                    elapsed,
                }
            })
            .collect();
        Evaluation::Judged(outcomes)
    }
}
