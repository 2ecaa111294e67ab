//! The policies in service, with their configuration, and the evaluation of a request.

use crate::config::{Mode, OnError, PolicyConfig, SettingsFile};
use crate::error::{PolicyError, SetError};
use crate::policy::{ConfiguredMemory, LoadedPolicy};
use crate::ratchet::{SecretValues, ratchet};
use crate::subject::{NotJudged, Subject};
use crate::vap::{ClusterReads, VapNeeds, VapPolicies};
use ck8s_policy_api::{ABI_VERSION_JSON, Verdict, Violation};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Entry {
    policy: Arc<LoadedPolicy>,
    config: PolicyConfig,
    /// Defaults merged with the configured settings, serialized once.
    settings_json: Vec<u8>,
    /// The policy's module with its settings already read (by every policy of the set in
    /// it), when the module reads settings once: then no evaluation passes `settings_json`.
    configured: Option<Arc<ConfiguredMemory>>,
}

impl Entry {
    /// The settings blob an evaluation passes: none when the module was configured.
    fn settings(&self) -> &[u8] {
        match self.configured {
            Some(_) => &[],
            None => &self.settings_json,
        }
    }
}

/// An immutable set of policies and their configuration. The webhook swaps whole sets
/// atomically on reload; a request keeps the set it started with.
pub struct PolicySet {
    entries: Vec<Entry>,
    /// The ValidatingAdmissionPolicies of the set's files, if any.
    vaps: Option<VapPolicies>,
    /// [`SettingsFile::trusted_controllers`].
    trusted_controllers: Vec<String>,
}

/// What one policy made of one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub policy: String,
    pub mode: Mode,
    pub on_error: OnError,
    pub result: OutcomeResult,
    /// Violations the old object of an UPDATE already had (ratcheting): allowed, with a
    /// warning. `result` holds only the new ones.
    pub kept: Vec<Violation>,
    /// `Some(Kind/name)` when `kept` are inherited from the object's controlling owner, whose
    /// controller wrote it (see [`SettingsFile::trusted_controllers`]) rather than carried
    /// over from the old object.
    pub inherited_from: Option<String>,
    /// For a VAP: the time to judge the request against all the set's VAPs (they are judged
    /// together).
    pub elapsed: Duration,
    pub origin: Origin,
}

/// What kind of policy an outcome is from, and what its messages need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A wasm module: violations name the field, the value and the fix.
    Wasm,
    /// A ValidatingAdmissionPolicy: each violation's message is worded as the API server words
    /// it for the outcome's mode, and its path is the expression's.
    Vap {
        /// `None` for a policy judged without a binding (as if bound with `[Deny]`).
        binding: Option<String>,
        /// `validationActions` holds `Audit` beside `Deny` or `Warn`: the violations are
        /// audited too.
        also_audit: bool,
        /// `auditAnnotations`: `policy/key` → value.
        annotations: Vec<(String, String)>,
    },
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
    /// A set of policies already loaded; [`PolicySet::build`] loads them from their sources.
    /// Fails on duplicate policy names, configuration for a policy that is not loaded, or a
    /// setting the policy does not declare (a typo would otherwise be ignored).
    pub fn new(policies: Vec<Arc<LoadedPolicy>>, config: &SettingsFile) -> Result<Self, SetError> {
        Self::assemble(policies, None, config)
    }

    /// Wasm policies and the VAPs of the set's files, checked together: one namespace of
    /// policy names, and every configured name must be one of them.
    pub(crate) fn assemble(
        policies: Vec<Arc<LoadedPolicy>>,
        vaps: Option<ck8s_policy_cel::PolicySet>,
        config: &SettingsFile,
    ) -> Result<Self, SetError> {
        let mut entries: Vec<Entry> = Vec::with_capacity(policies.len());
        for policy in policies {
            let name = policy.name().to_string();
            if let Some(other) = entries.iter().find(|e| e.policy.name() == name) {
                return Err(SetError::DuplicateName {
                    name,
                    first: other.policy.source.to_string(),
                    second: policy.source.to_string(),
                });
            }
            let cfg = config.policies.get(&name).cloned().unwrap_or_default();
            let mut settings = policy.metadata.default_settings();
            for (key, value) in &cfg.settings {
                if !settings.contains_key(key) {
                    return Err(SetError::UnknownSetting {
                        policy: name,
                        setting: key.clone(),
                        known: policy
                            .metadata
                            .settings
                            .iter()
                            .map(|s| s.name.clone())
                            .collect(),
                    });
                }
                settings.insert(key.clone(), value.clone());
            }
            let settings_json =
                serde_json::to_vec(&settings).expect("a map of JSON values always serializes");
            entries.push(Entry {
                policy,
                config: cfg,
                settings_json,
                configured: None,
            });
        }
        configure(&mut entries)?;
        let vaps = vaps
            .filter(|v| !v.policies.is_empty())
            .map(|v| VapPolicies::new(v, config))
            .transpose()?;
        let vap_names = || vaps.iter().flat_map(|v| v.policies()).map(|p| &p.name);
        for name in vap_names() {
            if let Some(e) = entries.iter().find(|e| e.policy.name() == name) {
                return Err(SetError::DuplicateName {
                    name: name.clone(),
                    first: e.policy.source.to_string(),
                    second: format!("ValidatingAdmissionPolicy {name}"),
                });
            }
        }
        for name in config.policies.keys() {
            if !entries.iter().any(|e| e.policy.name() == name) && !vap_names().any(|n| n == name) {
                return Err(SetError::NotLoaded {
                    policy: name.clone(),
                    loaded: entries
                        .iter()
                        .map(|e| e.policy.name().to_string())
                        .chain(vap_names().cloned())
                        .collect(),
                });
            }
        }
        Ok(PolicySet {
            entries,
            vaps,
            trusted_controllers: config.trusted_controllers.clone(),
        })
    }

    /// How many policies: wasm ones and VAPs.
    pub fn len(&self) -> usize {
        self.entries.len() + self.vap_policies().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every policy's name: the wasm ones in evaluation order, then the VAPs.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .map(|e| e.policy.name())
            .chain(self.vap_policies().iter().map(|p| p.name.as_str()))
    }

    /// The ValidatingAdmissionPolicies in service, compiled, in load order.
    pub fn vap_policies(&self) -> &[ck8s_policy_cel::Policy] {
        self.vaps.as_ref().map_or(&[], |v| v.policies())
    }

    /// What the VAPs need from the cluster (what a webhook must watch).
    pub fn vap_needs(&self) -> VapNeeds {
        self.vaps
            .as_ref()
            .map(|v| v.needs().clone())
            .unwrap_or_default()
    }

    /// A VAP's `matchConstraints.resourceRules` as ck8s's rules (what the webhook must be
    /// sent for it; what an audit lists).
    pub fn vap_rules(policy: &ck8s_policy_cel::Policy) -> Vec<ck8s_policy_api::Rule> {
        crate::vap::rules_of(policy)
    }

    /// Their bindings.
    pub fn vap_bindings(&self) -> &[ck8s_policy_cel::Binding] {
        self.vaps.as_ref().map_or(&[], |v| v.bindings())
    }

    /// The policies in evaluation order, with their configuration.
    pub fn policies(&self) -> impl Iterator<Item = (&Arc<LoadedPolicy>, &PolicyConfig)> {
        self.entries.iter().map(|e| (&e.policy, &e.config))
    }

    /// Applies the shared request rules, then asks every policy whose rules cover the request,
    /// in a fresh, isolated instance per request: one per policy, or one for all the policies
    /// of a bundle.
    ///
    /// Ratcheting: on an UPDATE, the violations of a `deny` policy with
    /// `allowExistingViolations` that the old object already had are kept ([`Outcome::kept`])
    /// rather than denied. The old object is judged only then: only when the new object has
    /// violations of such a policy, and only by those policies.
    ///
    /// VAPs are judged by their own `matchConstraints` and bindings, as the API server judges
    /// them (a DELETE or a subresource too, when they match it); the shared request rules
    /// apply to the wasm policies.
    pub fn evaluate(&self, subject: &Subject<'_>) -> Evaluation {
        self.evaluate_in(subject, None)
    }

    /// [`PolicySet::evaluate`], with what VAPs read from the cluster ([`ClusterReads`]).
    pub fn evaluate_in(
        &self,
        subject: &Subject<'_>,
        cluster: Option<&dyn ClusterReads>,
    ) -> Evaluation {
        let not_judged = subject.not_judged();
        let mut outcomes = match not_judged {
            Some(_) => Vec::new(),
            None => self.evaluate_wasm(subject),
        };
        if let Some(vaps) = &self.vaps {
            outcomes.extend(vaps.evaluate(subject, &self.trusted_controllers, cluster));
        }
        match not_judged {
            Some(reason)
                if outcomes
                    .iter()
                    .all(|o| o.result == OutcomeResult::NotInspected) =>
            {
                Evaluation::NotJudged(reason)
            }
            _ => Evaluation::Judged(outcomes),
        }
    }

    fn evaluate_wasm(&self, subject: &Subject<'_>) -> Vec<Outcome> {
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
        let mut results = self.run(subject, &inspects);
        // Built only on the ratchet path: a request without violations allocates nothing more.
        let mut kept: Vec<Vec<Violation>> = Vec::new();
        let mut inherited_from = None;
        // Deny policies that let existing violations pass, and that found some here.
        let ratchets = |(e, r): (&Entry, &Option<Run>)| {
            e.config.mode == Mode::Deny
                && e.config.allow_existing_violations
                && matches!(r, Some((Ok(v), _)) if !v.violations.is_empty())
        };
        if self.entries.iter().zip(&results).any(ratchets) {
            let ratchets: Vec<bool> = self.entries.iter().zip(&results).map(ratchets).collect();
            kept = self.entries.iter().map(|_| Vec::new()).collect();
            // A workload controller writing an object it controls copies its owner's template:
            // the violations are the owner's, judged when the owner was written.
            if self.trusted_controllers.iter().any(|u| u == subject.user) {
                inherited_from = subject.controller_owner();
            }
            if inherited_from.is_some() {
                for (i, r) in results.iter_mut().enumerate() {
                    if let (true, Some((Ok(v), _))) = (ratchets[i], r) {
                        kept[i] = std::mem::take(&mut v.violations);
                    }
                }
            } else if let Some(before) = subject.before() {
                let old_results = self.run(&before, &ratchets);
                let values = SecretValues::of_update(subject, &before);
                for (i, old) in old_results.into_iter().enumerate() {
                    // An old object the policy could not judge keeps nothing: fail closed.
                    let Some((Ok(old), old_elapsed)) = old else {
                        continue;
                    };
                    let Some((Ok(new), elapsed)) = &mut results[i] else {
                        continue;
                    };
                    *elapsed += old_elapsed;
                    let (fresh, carried) = ratchet(
                        std::mem::take(&mut new.violations),
                        &old.violations,
                        &values,
                    );
                    new.violations = fresh;
                    kept[i] = carried;
                }
            }
        }
        self.entries
            .iter()
            .zip(results)
            .enumerate()
            .map(|(i, (e, result))| {
                let kept = kept.get_mut(i).map(std::mem::take).unwrap_or_default();
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
                    inherited_from: (!kept.is_empty()).then(|| inherited_from.clone()).flatten(),
                    kept,
                    elapsed,
                    origin: Origin::Wasm,
                }
            })
            .collect()
    }

    /// Asks the policies marked in `ask` about `subject`: `None` for the others.
    fn run(&self, subject: &Subject<'_>, ask: &[bool]) -> Vec<Option<Run>> {
        // Built on first use and shared by every policy: the object is parsed once, here.
        let mut input = None;
        let mut request_json: Option<Vec<u8>> = None;
        let mut results: Vec<Option<Run>> = self.entries.iter().map(|_| None).collect();
        #[cfg(test)]
        CALLS.set(CALLS.get() + ask.iter().filter(|&&a| a).count());
        for (i, e) in self.entries.iter().enumerate() {
            if !ask[i] || results[i].is_some() {
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
                Err(unparsable) => {
                    let error = PolicyError::Guest(unparsable.0.clone());
                    results[i] = Some((Err(error), Duration::ZERO));
                    continue;
                }
            };
            // This policy and the others of its bundle that the request concerns: one instance.
            let members = module_members(&self.entries, i, |j| ask[j]);
            let calls: Vec<(&LoadedPolicy, &[u8])> = members
                .iter()
                .map(|&j| (&*self.entries[j].policy, self.entries[j].settings()))
                .collect();
            let configured = e.configured.as_deref();
            for (j, result) in members
                .into_iter()
                .zip(LoadedPolicy::evaluate_together(&calls, input, configured))
            {
                results[j] = Some(result);
            }
        }
        results
    }
}

/// Entry `i` and the entries after it of the same module (the other members of its bundle)
/// that `keep` admits, in order: the policies one instance serves.
fn module_members(entries: &[Entry], i: usize, keep: impl Fn(usize) -> bool) -> Vec<usize> {
    (i..entries.len())
        .filter(|&j| j == i || keep(j) && entries[j].policy.same_bundle(&entries[i].policy))
        .collect()
}

/// Hands the policies of each module that reads its settings once their settings (every
/// policy of a bundle in one instance), so that a policy refusing its settings fails here,
/// when it is put in service, and no evaluation parses them again.
fn configure(entries: &mut [Entry]) -> Result<(), SetError> {
    for i in 0..entries.len() {
        let first = &entries[i];
        if first.configured.is_some() || !first.policy.configurable() {
            continue;
        }
        let members = module_members(entries, i, |_| true);
        let calls: Vec<(&LoadedPolicy, &[u8])> = members
            .iter()
            .map(|&j| (&*entries[j].policy, &entries[j].settings_json[..]))
            .collect();
        let configured = match LoadedPolicy::configure(&calls) {
            Ok(Some(memory)) => Arc::new(memory),
            Ok(None) => continue,
            Err((k, error)) => {
                return Err(SetError::Settings {
                    policy: calls[k].0.name().to_string(),
                    // The guest's own words, else what stopped it (a trap, the deadline).
                    reason: match error {
                        PolicyError::Guest(message) => message,
                        other => other.to_string(),
                    },
                });
            }
        };
        for j in members {
            entries[j].configured = Some(configured.clone());
        }
    }
    Ok(())
}

/// One policy's verdict on one object and the time it took.
type Run = (Result<Verdict, PolicyError>, Duration);

#[cfg(test)]
thread_local! {
    /// Policy calls made on this thread, so tests can see what was (not) evaluated.
    static CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::parse_review;
    use crate::{Decision, Limits, PolicySources, Runtime};
    use serde_json::{Value, json};
    use std::sync::OnceLock;

    /// The built-in policies (a dev-dependency: the runtime itself has none) with `config`.
    fn set(config: &str) -> PolicySet {
        static RT: OnceLock<Runtime> = OnceLock::new();
        let rt = RT.get_or_init(|| Runtime::new(Limits::default(), None).unwrap());
        let sources = PolicySources::new()
            .builtin(ck8s_builtin_policies::BUNDLE)
            .settings(SettingsFile::parse(config).unwrap());
        PolicySet::build(rt, &sources).unwrap()
    }

    fn review(operation: &str, kind: (&str, &str, &str), object: &Value, old: &Value) -> String {
        let (group, k, resource) = kind;
        json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "0b6f6d3c-1111-2222-3333-444455556666",
            "kind": { "group": group, "version": "v1", "kind": k },
            "resource": { "group": group, "version": "v1", "resource": resource },
            "namespace": "codex-k8s-prod", "name": "x", "operation": operation,
            "object": object, "oldObject": old,
        }})
        .to_string()
    }

    /// Evaluates and decides; also returns how many policy calls it took.
    fn decide(set: &PolicySet, body: &str) -> (Evaluation, Decision, usize) {
        let req = parse_review(body.as_bytes()).unwrap();
        let before = CALLS.get();
        let eval = set.evaluate(&Subject::from_admission(&req));
        let d = Decision::from_evaluation(&eval);
        (eval, d, CALLS.get() - before)
    }

    const RS: (&str, &str, &str) = ("apps", "ReplicaSet", "replicasets");
    const CM: (&str, &str, &str) = ("", "ConfigMap", "configmaps");
    const SECRET: (&str, &str, &str) = ("", "Secret", "secrets");

    /// A ReplicaSet with `replicas` and env `(name, value)` in its one container.
    fn rs(replicas: u32, env: &[(&str, &str)], labels: Value) -> Value {
        let env: Vec<Value> = env
            .iter()
            .map(|(n, v)| json!({ "name": n, "value": v }))
            .collect();
        json!({ "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": { "name": "x" },
            "spec": { "replicas": replicas, "template": { "metadata": { "labels": labels },
                "spec": { "containers": [{ "name": "w", "image": "w:1", "env": env }] } } } })
    }

    fn data(kind: &str, data: Value) -> Value {
        json!({ "apiVersion": "v1", "kind": kind, "metadata": { "name": "x" }, "data": data })
    }

    const BAD: &str = "-b feature/x";

    /// A review of `object` sent by `user`.
    fn review_by(user: &str, operation: &str, kind: (&str, &str, &str), object: &Value) -> String {
        let mut r: Value =
            serde_json::from_str(&review(operation, kind, object, &Value::Null)).unwrap();
        r["request"]["userInfo"] = json!({ "username": user });
        r.to_string()
    }

    /// A Pod with a bad ref, controlled by `owner` (`(kind, name)`).
    fn owned_pod(owner: Option<(&str, &str)>) -> Value {
        let mut pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "x-abc" },
            "spec": { "containers": [{ "name": "w", "image": "w:1",
                "env": [{ "name": "CODEXK8S_BUILD_REF", "value": BAD }] }] } });
        if let Some((kind, name)) = owner {
            pod["metadata"]["ownerReferences"] = json!([{ "apiVersion": "apps/v1", "kind": kind,
                "name": name, "uid": "u-1", "controller": true }]);
        }
        pod
    }

    const POD: (&str, &str, &str) = ("", "Pod", "pods");
    const RS_CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";

    #[test]
    fn a_workload_controller_writing_what_it_controls_inherits_the_owners_violations() {
        let s = set("");
        // The ReplicaSet controller creates a Pod from its template: inherited, with a warning.
        let body = review_by(
            RS_CONTROLLER,
            "CREATE",
            POD,
            &owned_pod(Some(("ReplicaSet", "web-7d9f"))),
        );
        let (_, d, _) = decide(&s, &body);
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.inherited_from.as_deref(), Some("ReplicaSet/web-7d9f"));
        assert_eq!(d.kept.len(), 1);
        assert!(
            d.warning_texts()[0].starts_with(
                "existing violation kept (inherited from ReplicaSet/web-7d9f, written by its controller): [build-ref]"
            ),
            "{:?}",
            d.warning_texts()
        );
        // Anyone else creating the same Pod is denied, owner reference or not.
        for user in [
            "sre@codex-k8s.dev",
            "system:serviceaccount:codex-k8s-prod:default",
        ] {
            let body = review_by(
                user,
                "CREATE",
                POD,
                &owned_pod(Some(("ReplicaSet", "web-7d9f"))),
            );
            assert!(!decide(&s, &body).1.allowed, "{user}");
        }
        // The controller writing a Pod it does not control (no controller reference): denied.
        let body = review_by(RS_CONTROLLER, "CREATE", POD, &owned_pod(None));
        assert!(!decide(&s, &body).1.allowed);
        // An owner that is not a template-carrying workload does not count.
        let body = review_by(
            RS_CONTROLLER,
            "CREATE",
            POD,
            &owned_pod(Some(("ConfigMap", "c"))),
        );
        assert!(!decide(&s, &body).1.allowed);
        // Strict policies deny controllers too.
        let strict = set("policies:\n  build-ref: { allowExistingViolations: false }\n");
        let body = review_by(
            RS_CONTROLLER,
            "CREATE",
            POD,
            &owned_pod(Some(("ReplicaSet", "web-7d9f"))),
        );
        assert!(!decide(&strict, &body).1.allowed);
        // The trusted users come from the config.
        let none = set("trustedControllers: []\n");
        assert!(!decide(&none, &body).1.allowed);
    }

    #[test]
    fn an_update_keeps_what_the_old_object_already_violated() {
        let s = set("");
        let old = rs(
            1,
            &[("CODEXK8S_BUILD_REF", BAD)],
            json!({ "codexk8s.io/run-id": "r1" }),
        );
        let new = rs(
            3,
            &[("CODEXK8S_BUILD_REF", BAD)],
            json!({ "codexk8s.io/run-id": "r1" }),
        );
        let (eval, d, _) = decide(&s, &review("UPDATE", RS, &new, &old));
        assert!(d.allowed, "{}", d.denial_message());
        assert_eq!(d.kept.len(), 2, "{:?}", d.kept);
        let texts = d.warning_texts();
        assert!(texts.iter().any(|t| t.starts_with(
            "existing violation kept: [build-ref] spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]"
        ) && t.contains("; fix: set CODEXK8S_BUILD_REF")), "{texts:?}");
        assert!(texts.iter().any(|t| t.starts_with(
            "existing violation kept: [legacy-labels] spec.template.metadata.labels[codexk8s.io/run-id]"
        )), "{texts:?}");
        let Evaluation::Judged(outcomes) = eval else {
            panic!()
        };
        let br = outcomes.iter().find(|o| o.policy == "build-ref").unwrap();
        assert_eq!(br.result, OutcomeResult::Allowed);
        assert_eq!(br.kept.len(), 1);

        // The same object created, or updated in strict mode: denied as before.
        let (_, d, _) = decide(&s, &review("CREATE", RS, &new, &Value::Null));
        assert!(!d.allowed && d.kept.is_empty());
        assert_eq!(d.denials.len(), 2);
        let strict = set("policies:\n  build-ref: { allowExistingViolations: false }\n");
        let (_, d, _) = decide(&strict, &review("UPDATE", RS, &new, &old));
        assert!(!d.allowed);
        assert_eq!(d.denials.len(), 1);
        assert_eq!(d.denials[0].policy, "build-ref");
        assert_eq!(d.kept.len(), 1, "legacy-labels still ratchets");
        // An UPDATE without an oldObject has nothing to keep.
        let (_, d, _) = decide(&s, &review("UPDATE", RS, &new, &Value::Null));
        assert!(!d.allowed && d.kept.is_empty());
    }

    #[test]
    fn a_changed_or_added_violation_is_new_and_named() {
        let s = set("");
        let old = rs(1, &[("CODEXK8S_BUILD_REF", BAD)], json!({}));
        // A bad value changed into another bad value.
        let changed = rs(1, &[("CODEXK8S_BUILD_REF", "--orphan")], json!({}));
        let (_, d, _) = decide(&s, &review("UPDATE", RS, &changed, &old));
        assert!(!d.allowed);
        assert!(d.kept.is_empty());
        assert!(
            d.denial_message().contains("\"--orphan\""),
            "{}",
            d.denial_message()
        );
        // Old kept, a new one added by another policy: only the new one is named.
        let added = rs(
            1,
            &[
                ("CODEXK8S_BUILD_REF", BAD),
                ("CODEXK8S_KANIKO_CACHE_ENABLED", "true"),
            ],
            json!({}),
        );
        let (_, d, _) = decide(&s, &review("UPDATE", RS, &added, &old));
        assert!(!d.allowed);
        assert_eq!(d.denials.len(), 1, "{}", d.denial_message());
        assert_eq!(d.denials[0].policy, "kaniko-cache");
        assert!(!d.denial_message().contains(BAD));
        assert_eq!(d.kept.len(), 1);
        assert_eq!(d.kept[0].policy, "build-ref");
        // The same bad value at a new path of the same policy.
        let mut twice = old.clone();
        let c = twice["spec"]["template"]["spec"]["containers"][0].clone();
        twice["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(c);
        let (_, d, _) = decide(&s, &review("UPDATE", RS, &twice, &old));
        assert!(!d.allowed);
        assert_eq!(d.denials.len(), 1);
        assert!(
            d.denial_message().contains("containers[1]"),
            "{}",
            d.denial_message()
        );
        assert_eq!(d.kept.len(), 1);
    }

    #[test]
    fn the_allow_path_judges_nothing_more() {
        let s = set("");
        let old = rs(
            1,
            &[("CODEXK8S_BUILD_REF", BAD)],
            json!({ "codexk8s.io/a": "1" }),
        );
        let clean = rs(1, &[("CODEXK8S_BUILD_REF", "main")], json!({}));
        // CREATE: the three built-ins in one call each.
        let (_, _, create) = decide(&s, &review("CREATE", RS, &clean, &Value::Null));
        let (_, d, update) = decide(&s, &review("UPDATE", RS, &clean, &old));
        assert!(d.allowed && d.kept.is_empty());
        assert_eq!(
            update, create,
            "a clean UPDATE must not judge its old object"
        );
        // A violation: only the policy that found it judges the old object.
        let dirty = rs(1, &[("CODEXK8S_BUILD_REF", BAD)], json!({}));
        let (_, d, calls) = decide(&s, &review("UPDATE", RS, &dirty, &old));
        assert!(d.allowed);
        assert_eq!(calls, create + 1);
        // A warn policy's violations are warnings anyway: its old object is not judged.
        let warn = set("policies:\n  build-ref: { mode: warn }\n");
        let (_, d, calls) = decide(&warn, &review("UPDATE", RS, &dirty, &old));
        assert_eq!(calls, create);
        assert!(d.allowed && d.kept.is_empty());
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn mitigation_a_goes_through_on_a_configmap_that_keeps_a_bad_ref() {
        let s = set("");
        let old = data(
            "ConfigMap",
            json!({ "CODEXK8S_BUILD_REF": BAD, "CODEXK8S_KANIKO_CACHE_ENABLED": "true" }),
        );
        let a = data(
            "ConfigMap",
            json!({ "CODEXK8S_BUILD_REF": BAD, "CODEXK8S_KANIKO_CACHE_ENABLED": "false" }),
        );
        let (_, d, _) = decide(&s, &review("UPDATE", CM, &a, &old));
        assert!(d.allowed, "{}", d.denial_message());
        assert_eq!(d.kept.len(), 1);
        // Mitigation B while the cache flag is on: the flag is kept, the ref is fixed.
        let b = data(
            "ConfigMap",
            json!({ "CODEXK8S_BUILD_REF": "main", "CODEXK8S_KANIKO_CACHE_ENABLED": "true" }),
        );
        let (_, d, _) = decide(&s, &review("UPDATE", CM, &b, &old));
        assert!(d.allowed, "{}", d.denial_message());
        assert_eq!(d.kept[0].policy, "kaniko-cache");
    }

    #[test]
    fn secrets_are_compared_by_their_values_never_by_the_masked_text() {
        use base64::Engine as _;
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let s = set("");
        let old = data("Secret", json!({ "CODEXK8S_BUILD_REF": b64(BAD) }));
        let same = data(
            "Secret",
            json!({ "CODEXK8S_BUILD_REF": b64(BAD), "OTHER": b64("x") }),
        );
        let (_, d, _) = decide(&s, &review("UPDATE", SECRET, &same, &old));
        assert!(d.allowed, "{}", d.denial_message());
        assert_eq!(d.kept.len(), 1);
        assert!(
            d.warning_texts()
                .iter()
                .all(|t| !t.contains(BAD) && t.contains("not shown"))
        );
        // Another bad value: the message and path are the same, the value is not.
        let changed = data("Secret", json!({ "CODEXK8S_BUILD_REF": b64("--orphan") }));
        let (_, d, _) = decide(&s, &review("UPDATE", SECRET, &changed, &old));
        assert!(!d.allowed);
        assert!(d.kept.is_empty());
        assert!(!d.denial_message().contains("orphan"));
    }

    #[test]
    fn an_old_object_that_cannot_be_judged_keeps_nothing() {
        let s = set("");
        let mut old = rs(1, &[("CODEXK8S_BUILD_REF", BAD)], json!({}));
        old["spec"]["template"]["spec"]["containers"] = json!("not a list");
        let new = rs(1, &[("CODEXK8S_BUILD_REF", BAD)], json!({}));
        let (_, d, _) = decide(&s, &review("UPDATE", RS, &new, &old));
        assert!(!d.allowed);
        assert!(d.kept.is_empty());
    }
}
