//! ValidatingAdmissionPolicy files in a policy set. `ck8s-policy-cel` judges them with the API
//! server's semantics; this module maps its outcomes onto ck8s's: the binding's
//! `validationActions` onto the modes, ratcheting and the trusted controllers as for the wasm
//! policies, the API server's wording in every message. The webhook, `policy check`, `audit`
//! and `test` see VAPs only through [`crate::PolicySet`].

use crate::config::{Mode, OnError, PolicyConfig, SettingsFile};
use crate::error::{PolicyError, SetError};
use crate::set::{Origin, Outcome, OutcomeResult};
use crate::subject::Subject;
use ck8s_policy_api::{Operation, ValueSource, Violation};
use ck8s_policy_cel as cel;
use std::collections::BTreeMap;
use std::time::Instant;

/// What ValidatingAdmissionPolicies read from the cluster beside the request, as the API server
/// does: the request's Namespace (`namespaceSelector`, `namespaceObject`) and params
/// (`paramKind` / `paramRef`). The webhook serves them from watches; offline there is none, and
/// a policy that needs one fails closed saying what is not known. Params in the policy files
/// are looked up first.
pub trait ClusterReads: cel::ParamSource + Sync {
    /// The Namespace called `name`, as JSON; `Ok(None)` if there is none.
    fn namespace(&self, name: &str) -> Result<Option<serde_json::Value>, String>;
}

/// What a set's VAPs need from the cluster: what a webhook must watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VapNeeds {
    /// A `namespaceSelector` that selects something, or `namespaceObject` in an expression.
    pub namespaces: bool,
    /// Every `paramKind`.
    pub param_kinds: Vec<cel::ParamKind>,
}

/// The VAPs, bindings and params of a set's files, and ck8s's configuration of each VAP.
pub(crate) struct VapPolicies {
    set: cel::PolicySet,
    /// `allowExistingViolations` of each policy (ratcheting; on by default).
    ratchet: BTreeMap<String, bool>,
    needs: VapNeeds,
}

impl VapPolicies {
    /// Checks `config` against the policies: a VAP takes its mode from its bindings'
    /// `validationActions` and its error handling from `failurePolicy`, so only
    /// `allowExistingViolations` may be set for it.
    pub(crate) fn new(set: cel::PolicySet, config: &SettingsFile) -> Result<Self, SetError> {
        let mut ratchet = BTreeMap::new();
        let defaults = PolicyConfig::default();
        for p in &set.policies {
            let cfg = config.policies.get(&p.name).unwrap_or(&defaults);
            let refused = if cfg.mode != Mode::Deny {
                Some("mode")
            } else if cfg.on_error != OnError::Fail {
                Some("onError")
            } else if !cfg.settings.is_empty() {
                Some("settings")
            } else {
                None
            };
            if let Some(field) = refused {
                return Err(SetError::NotForVap {
                    policy: p.name.clone(),
                    field,
                });
            }
            ratchet.insert(p.name.clone(), cfg.allow_existing_violations);
        }
        let mut vaps = VapPolicies {
            set,
            ratchet,
            needs: VapNeeds::default(),
        };
        vaps.needs = vaps.find_needs();
        Ok(vaps)
    }

    pub(crate) fn policies(&self) -> &[cel::Policy] {
        &self.set.policies
    }

    pub(crate) fn bindings(&self) -> &[cel::Binding] {
        &self.set.bindings
    }

    pub(crate) fn needs(&self) -> &VapNeeds {
        &self.needs
    }

    fn find_needs(&self) -> VapNeeds {
        let selects = |s: &Option<cel::LabelSelector>| {
            s.as_ref().is_some_and(|s| {
                s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
            })
        };
        let mut needs = VapNeeds::default();
        for p in &self.set.policies {
            needs.namespaces |= selects(&p.match_constraints.namespace_selector)
                || serde_json::to_string(&p.object.spec)
                    .is_ok_and(|spec| spec.contains("namespaceObject"));
            if let Some(kind) = &p.param_kind
                && !needs.param_kinds.contains(kind)
            {
                needs.param_kinds.push(kind.clone());
            }
        }
        needs.namespaces |= self.set.bindings.iter().any(|b| {
            b.match_resources
                .as_ref()
                .is_some_and(|m| selects(&m.namespace_selector))
        });
        needs
    }

    /// One outcome per policy, binding and param that matched the request, then one
    /// `NotInspected` outcome for each policy that matched nothing.
    pub(crate) fn evaluate(
        &self,
        subject: &Subject<'_>,
        trusted: &[String],
        cluster: Option<&dyn ClusterReads>,
    ) -> Vec<Outcome> {
        let start = Instant::now();
        // Most requests a webhook registered for every resource sees are for resources no
        // VAP names: answered before the request is parsed for CEL.
        if subject.review.is_some() && !self.set.may_judge(&resource_of(subject)) {
            return self
                .set
                .policies
                .iter()
                .map(|p| not_inspected(&p.name))
                .collect();
        }
        let mut request = match request_of(subject) {
            Ok(r) => r,
            Err(e) => return self.all_failed(&e),
        };
        let is_namespace =
            request.resource.group.is_empty() && request.resource.resource == "namespaces";
        if let Some(cluster) = cluster
            && self.needs.namespaces
            && !request.namespace.is_empty()
            && !is_namespace
        {
            // Not found or not readable: left unknown, and a policy that needs it fails closed.
            request.namespace_object = cluster
                .namespace(&request.namespace)
                .ok()
                .flatten()
                .map(cel::Json::from);
        }
        let layered = cluster.map(|cluster| Layered {
            files: cel::LocalParams(&self.set.params),
            cluster,
        });
        let params = layered.as_ref().map(|l| l as &dyn cel::ParamSource);
        let evaluation = self.set.evaluate(&request, params);
        let mut kept: Vec<Vec<cel::Failure>> = vec![Vec::new(); evaluation.outcomes.len()];
        let mut fresh: Vec<Vec<cel::Failure>> = evaluation
            .outcomes
            .iter()
            .map(|o| o.failures.clone())
            .collect();
        let mut inherited_from = None;
        let ratchets = |o: &cel::Outcome| {
            self.ratchet.get(&o.policy).copied().unwrap_or(true) && o.failures.iter().any(keepable)
        };
        if evaluation.outcomes.iter().any(ratchets) {
            if trusted.iter().any(|u| u == subject.user) {
                inherited_from = subject.controller_owner();
            }
            let old = match (&inherited_from, subject.operation, &request.old_object) {
                (None, Operation::Update, Some(old)) => {
                    // The old object judged in the new one's place. `oldObject` stays: a
                    // transition rule (`object.x == oldObject.x`) holds there, so what it
                    // finds on the new object is new.
                    let before = cel::Request {
                        object: Some(old.clone()),
                        ..request.clone()
                    };
                    Some(self.set.evaluate(&before, params))
                }
                _ => None,
            };
            for (i, o) in evaluation.outcomes.iter().enumerate() {
                if !ratchets(o) {
                    continue;
                }
                let (carried, new): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut fresh[i]).into_iter().partition(|f| {
                        keepable(f)
                            && (inherited_from.is_some()
                                || old.as_ref().is_some_and(|old| {
                                    old.outcomes.iter().any(|before| o.inherited(f, before))
                                }))
                    });
                fresh[i] = new;
                kept[i] = carried;
            }
        }
        let elapsed = start.elapsed();
        let mut outcomes: Vec<Outcome> = evaluation
            .outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let actions = self.actions_of(o);
                let mode = if actions.deny {
                    Mode::Deny
                } else if actions.warn {
                    Mode::Warn
                } else {
                    Mode::Audit
                };
                let words = |f: &cel::Failure| violation(o, f, mode);
                let result = if fresh[i].is_empty() {
                    OutcomeResult::Allowed
                } else {
                    OutcomeResult::Violations(fresh[i].iter().map(words).collect())
                };
                let kept: Vec<Violation> = kept[i].iter().map(words).collect();
                Outcome {
                    policy: o.policy.clone(),
                    mode,
                    on_error: OnError::Fail,
                    result,
                    inherited_from: (!kept.is_empty()).then(|| inherited_from.clone()).flatten(),
                    kept,
                    elapsed,
                    origin: Origin::Vap {
                        binding: o.binding.clone(),
                        also_audit: actions.audit && mode != Mode::Audit,
                        annotations: o.audit_annotations.clone(),
                    },
                }
            })
            .collect();
        for p in &self.set.policies {
            if !outcomes.iter().any(|o| o.policy == p.name) {
                outcomes.push(not_inspected(&p.name));
            }
        }
        outcomes
    }

    /// The binding's actions (a policy without a binding is judged as bound with `[Deny]`).
    fn actions_of(&self, o: &cel::Outcome) -> cel::ValidationActions {
        match &o.binding {
            None => cel::ValidationActions::DENY,
            Some(name) => self
                .set
                .bindings
                .iter()
                .find(|b| &b.name == name)
                .map_or(cel::ValidationActions::DENY, |b| b.actions),
        }
    }

    /// The request could not be read: every policy fails closed with the reason.
    fn all_failed(&self, reason: &str) -> Vec<Outcome> {
        self.set
            .policies
            .iter()
            .map(|p| Outcome {
                result: OutcomeResult::Error(PolicyError::Guest(reason.to_string())),
                ..not_inspected(&p.name)
            })
            .collect()
    }
}

/// Params from the policy files first, then from the cluster.
struct Layered<'a> {
    files: cel::LocalParams<'a>,
    cluster: &'a dyn ClusterReads,
}

impl cel::ParamSource for Layered<'_> {
    fn get(
        &self,
        kind: &cel::ParamKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<serde_json::Value>, String> {
        match self.files.get(kind, namespace, name)? {
            Some(found) => Ok(Some(found)),
            None => self.cluster.get(kind, namespace, name),
        }
    }

    fn list(
        &self,
        kind: &cel::ParamKind,
        namespace: Option<&str>,
        selector: &cel::LabelSelector,
    ) -> Result<Vec<serde_json::Value>, String> {
        let mut found = self.files.list(kind, namespace, selector)?;
        found.extend(self.cluster.list(kind, namespace, selector)?);
        Ok(found)
    }
}

fn not_inspected(policy: &str) -> Outcome {
    Outcome {
        policy: policy.to_string(),
        mode: Mode::Deny,
        on_error: OnError::Fail,
        result: OutcomeResult::NotInspected,
        kept: Vec::new(),
        inherited_from: None,
        elapsed: Default::default(),
        origin: Origin::Vap {
            binding: None,
            also_audit: false,
            annotations: Vec::new(),
        },
    }
}

/// A failed validation that denies: what ratcheting may keep. Evaluation errors are never
/// kept (fail closed), and a warning or audit is not denied in the first place.
fn keepable(f: &cel::Failure) -> bool {
    f.actions.deny && matches!(f.kind, cel::FailureKind::Validation { .. })
}

/// One failure in ck8s's terms: the expression's field path, and the message as the API
/// server words it for the mode it has here.
fn violation(o: &cel::Outcome, f: &cel::Failure, mode: Mode) -> Violation {
    Violation {
        path: f.path.clone(),
        message: match mode {
            Mode::Deny => o.denial_text(f),
            Mode::Warn | Mode::Audit => o.warning_text(f),
        },
        value: None,
        source: ValueSource::Literal,
        fix: String::new(),
    }
}

/// What the resource rules read of a webhook request, as [`request_of`] would read it from
/// the review: no objects.
fn resource_of(subject: &Subject<'_>) -> cel::Request<'static> {
    let (group, version, resource) = subject.resource.clone();
    let mut request = cel::Request::new(
        cel_operation(subject.operation),
        cel::Gvr {
            group,
            version,
            resource,
        },
        None,
    );
    request.sub_resource = subject.sub_resource.to_string();
    request.namespace = subject.namespace.to_string();
    request.name = subject.name.to_string();
    request
}

fn cel_operation(op: Operation) -> cel::Operation {
    match op {
        Operation::Create => cel::Operation::Create,
        Operation::Update => cel::Operation::Update,
        Operation::Delete => cel::Operation::Delete,
        Operation::Connect => cel::Operation::Connect,
    }
}

/// The request as `ck8s-policy-cel` reads it: the webhook's `AdmissionRequest` whole (the
/// `request` variable needs userInfo's groups, options, ...), or a manifest judged offline.
fn request_of<'s>(subject: &Subject<'s>) -> Result<cel::Request<'s>, String> {
    // The objects borrow their strings from the request's text: no copy of them is made.
    let parse = |raw: &'s serde_json::value::RawValue| {
        cel::Json::parse(raw.get()).map_err(|e| format!("the request does not parse: {e}"))
    };
    if let Some(raw) = subject.review.and_then(crate::admission::raw_request) {
        return cel::Request::from_admission_request(parse(raw)?);
    }
    let object = subject.object.map(parse).transpose()?;
    let (group, version, resource) = subject.resource.clone();
    let mut request = cel::Request::new(
        cel_operation(subject.operation),
        cel::Gvr {
            group,
            version,
            resource,
        },
        object,
    );
    request.old_object = subject
        .old_object
        .filter(|o| o.get() != "null")
        .map(parse)
        .transpose()?;
    request.user_info.username = subject.user.to_string();
    request.dry_run = subject.dry_run;
    Ok(request)
}

/// A VAP's `matchConstraints.resourceRules` as ck8s's rules: the requests the webhook must be
/// sent for it, and the kinds an audit lists. `excludeResourceRules`, the selectors and
/// `matchConditions` narrow it further when a request is judged.
pub(crate) fn rules_of(policy: &cel::Policy) -> Vec<ck8s_policy_api::Rule> {
    let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    policy
        .match_constraints
        .resource_rules
        .iter()
        .flatten()
        .map(|r| ck8s_policy_api::Rule {
            api_groups: list(&r.api_groups),
            api_versions: list(&r.api_versions),
            resources: list(&r.resources),
            operations: list(&r.operations)
                .iter()
                .flat_map(|op| match op.as_str() {
                    "*" => vec![
                        Operation::Create,
                        Operation::Update,
                        Operation::Delete,
                        Operation::Connect,
                    ],
                    "CREATE" => vec![Operation::Create],
                    "UPDATE" => vec![Operation::Update],
                    "DELETE" => vec![Operation::Delete],
                    "CONNECT" => vec![Operation::Connect],
                    _ => vec![],
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::admission::parse_review;
    use crate::{
        BuildError, Decision, Evaluation, Limits, PolicySet, PolicySources, Runtime, SetError,
        SettingsFile, Subject,
    };
    use serde_json::{Value, json};
    use std::sync::OnceLock;

    fn runtime() -> &'static Runtime {
        static RT: OnceLock<Runtime> = OnceLock::new();
        RT.get_or_init(|| Runtime::new(Limits::default(), None).unwrap())
    }

    /// At most 3 replicas; bound by `binding` with `actions` (no binding: `[Deny]`).
    fn vap(actions: Option<&str>) -> String {
        let mut text = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: max-replicas}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE, DELETE], resources: [deployments]}
  validations:
  - expression: "!has(object.spec) || object.spec.replicas <= 3"
    message: at most 3 replicas
"#
        .to_string();
        if let Some(actions) = actions {
            text.push_str(&format!(
                r#"---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: max-replicas-binding}}
spec:
  policyName: max-replicas
  validationActions: {actions}
"#
            ));
        }
        text
    }

    fn set_of(
        files: &[(&str, &str)],
        config: &str,
        builtin: bool,
    ) -> Result<PolicySet, BuildError> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut sources = PolicySources::new();
        if builtin {
            sources = sources.builtin(ck8s_builtin_policies::BUNDLE);
        }
        let sources = sources
            .dir(dir.path())
            .settings(SettingsFile::parse(config).unwrap());
        PolicySet::build(runtime(), &sources)
    }

    fn deployment(replicas: u32, build_ref: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "a"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "w", "image": "w:1", "env": [{"name": "CODEXK8S_BUILD_REF", "value": build_ref}]}]}}}})
    }

    fn review(operation: &str, object: &Value, old: &Value, user: &str) -> String {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-1", "operation": operation,
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": "a", "name": "web",
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": object, "oldObject": old}})
        .to_string()
    }

    fn decide(set: &PolicySet, body: &str) -> Decision {
        let request = parse_review(body.as_bytes()).unwrap();
        Decision::from_evaluation(&set.evaluate(&Subject::from_admission(&request)))
    }

    const DENIED: &str =
        "ValidatingAdmissionPolicy 'max-replicas' denied request: at most 3 replicas";

    #[test]
    fn a_vap_beside_the_builtins_denies_in_the_api_servers_words() {
        let set = set_of(&[("max.yaml", &vap(None))], "", true).unwrap();
        assert_eq!(
            set.names().collect::<Vec<_>>(),
            ["build-ref", "legacy-labels", "kaniko-cache", "max-replicas"]
        );
        let d = decide(
            &set,
            &review("CREATE", &deployment(5, "-b x"), &Value::Null, "u"),
        );
        assert!(!d.allowed);
        let texts: Vec<String> = d.denials.iter().map(|f| f.to_string()).collect();
        assert!(texts.contains(&DENIED.to_string()), "{texts:?}");
        assert!(
            texts.iter().any(|t| t.starts_with("[build-ref]")),
            "{texts:?}"
        );
        assert!(
            d.denial_message().contains(DENIED),
            "{}",
            d.denial_message()
        );
        let d = decide(
            &set,
            &review("CREATE", &deployment(2, "main"), &Value::Null, "u"),
        );
        assert!(d.allowed, "{}", d.denial_message());
    }

    #[test]
    fn a_request_no_vap_names_is_not_inspected_even_when_a_selector_cannot_be_applied() {
        // Its namespace's labels are unknown here (no cluster): the API server errs only for
        // requests the resource rules take.
        let selecting = vap(None).replace(
            "  matchConstraints:\n",
            "  matchConstraints:\n    namespaceSelector: {matchLabels: {env: prod}}\n",
        );
        let set = set_of(&[("max.yaml", &selecting)], "", false).unwrap();
        let statefulset = review("CREATE", &deployment(5, "main"), &Value::Null, "u")
            .replace("deployments", "statefulsets")
            .replace("Deployment", "StatefulSet");
        let request = parse_review(statefulset.as_bytes()).unwrap();
        let evaluation = set.evaluate(&Subject::from_admission(&request));
        let crate::Evaluation::Judged(outcomes) = &evaluation else {
            panic!("{evaluation:?}")
        };
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o.result, crate::OutcomeResult::NotInspected)),
            "{outcomes:?}"
        );
        assert!(Decision::from_evaluation(&evaluation).allowed);
        let d = decide(
            &set,
            &review("CREATE", &deployment(1, "main"), &Value::Null, "u"),
        );
        assert!(!d.allowed, "a request the rules take fails closed");
        assert!(
            d.denial_message().contains("is not known"),
            "{}",
            d.denial_message()
        );
    }

    #[test]
    fn a_request_in_a_version_the_rules_leave_out_reaches_the_policy_and_fails_closed() {
        // The webhook asks the resource rules before it parses a request for CEL: a request
        // for a named resource in another version must not be skipped there.
        let set = set_of(&[("max.yaml", &vap(None))], "", false).unwrap();
        let beta = review("CREATE", &deployment(1, "main"), &Value::Null, "u")
            .replace(r#""version":"v1""#, r#""version":"v1beta2""#);
        assert!(beta.contains("v1beta2"), "{beta}");
        let d = decide(&set, &beta);
        assert!(!d.allowed, "{}", d.denial_message());
        assert!(
            d.denial_message().contains("send the object as apps/v1"),
            "{}",
            d.denial_message()
        );
    }

    #[test]
    fn validation_actions_are_the_modes() {
        let with_binding =
            "ValidatingAdmissionPolicy 'max-replicas' with binding 'max-replicas-binding'";
        let five = review("CREATE", &deployment(5, "main"), &Value::Null, "u");
        let set = set_of(&[("max.yaml", &vap(Some("[Warn]")))], "", false).unwrap();
        let d = decide(&set, &five);
        assert!(d.allowed);
        assert_eq!(
            d.warning_texts(),
            [
                "Validation failed for ValidatingAdmissionPolicy 'max-replicas' with binding 'max-replicas-binding': at most 3 replicas"
            ]
        );
        let set = set_of(&[("max.yaml", &vap(Some("[Audit]")))], "", false).unwrap();
        let d = decide(&set, &five);
        assert!(d.allowed && d.warnings.is_empty());
        assert_eq!(d.audits.len(), 1);
        let set = set_of(&[("max.yaml", &vap(Some("[Deny, Audit]")))], "", false).unwrap();
        let d = decide(&set, &five);
        assert!(!d.allowed);
        assert_eq!(
            d.denials[0].to_string(),
            format!("{with_binding} denied request: at most 3 replicas")
        );
        assert_eq!(d.audits.len(), 1, "Audit beside Deny audits too");
    }

    #[test]
    fn an_update_keeps_what_the_old_object_already_violated() {
        let set = set_of(&[("max.yaml", &vap(None))], "", false).unwrap();
        let (four, five) = (deployment(4, "main"), deployment(5, "main"));
        // Scaling 5 → 4: still too many, with the message the old object already had: kept,
        // with a warning.
        let d = decide(&set, &review("UPDATE", &four, &five, "u"));
        assert!(d.allowed, "{}", d.denial_message());
        assert_eq!(
            d.warning_texts(),
            [format!("existing violation kept: {DENIED}")]
        );
        // A compliant old object: the violation is new.
        let d = decide(&set, &review("UPDATE", &five, &deployment(1, "main"), "u"));
        assert!(!d.allowed);
        // Strict: as the API server decides.
        let strict = set_of(
            &[("max.yaml", &vap(None))],
            "policies:\n  max-replicas: {allowExistingViolations: false}\n",
            false,
        )
        .unwrap();
        let d = decide(&strict, &review("UPDATE", &four, &five, "u"));
        assert!(!d.allowed);
        assert!(d.kept.is_empty());
    }

    #[test]
    fn an_error_is_never_kept() {
        let erring = vap(None).replace(
            "!has(object.spec) || object.spec.replicas <= 3",
            "object.spec.missing <= 3",
        );
        let set = set_of(&[("max.yaml", &erring)], "", false).unwrap();
        let d = decide(
            &set,
            &review(
                "UPDATE",
                &deployment(1, "main"),
                &deployment(1, "main"),
                "u",
            ),
        );
        assert!(!d.allowed);
        assert!(d.kept.is_empty());
        assert!(
            d.denial_message()
                .contains("ValidatingAdmissionPolicy 'max-replicas' denied request: "),
            "{}",
            d.denial_message()
        );
    }

    #[test]
    fn a_vap_judges_what_it_matches_deletes_included() {
        let set = set_of(&[("max.yaml", &vap(None))], "", false).unwrap();
        let body = review("DELETE", &Value::Null, &deployment(9, "main"), "u");
        let request = parse_review(body.as_bytes()).unwrap();
        let evaluation = set.evaluate(&Subject::from_admission(&request));
        // Matched and judged (`!has(object.spec)`: a DELETE has no object): not skipped.
        assert!(
            matches!(evaluation, Evaluation::Judged(_)),
            "{evaluation:?}"
        );
        assert!(Decision::from_evaluation(&evaluation).allowed);
        // A ConfigMap matches nothing: not judged, as before.
        let set = set_of(&[("max.yaml", &vap(None))], "", true).unwrap();
        let mut cm: Value = serde_json::from_str(&body).unwrap();
        cm["request"]["resource"] = json!({"group": "", "version": "v1", "resource": "configmaps"});
        let body = cm.to_string();
        let request = parse_review(body.as_bytes()).unwrap();
        let evaluation = set.evaluate(&Subject::from_admission(&request));
        assert!(
            matches!(evaluation, Evaluation::NotJudged(_)),
            "{evaluation:?}"
        );
    }

    #[test]
    fn config_and_files_are_checked_at_load() {
        let err = set_of(
            &[("max.yaml", &vap(None))],
            "policies:\n  max-replicas: {mode: warn}\n",
            false,
        )
        .err()
        .unwrap();
        assert!(
            matches!(
                &err,
                BuildError::Set(SetError::NotForVap { field: "mode", .. })
            ),
            "{err}"
        );
        // A policy the API server refuses: the file, the policy, the field path, the position.
        let broken = vap(None).replace("object.spec.replicas <= 3", "object.spec.replicas <=");
        let err = set_of(&[("max.yaml", &broken)], "", false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("max.yaml: ValidatingAdmissionPolicy \"max-replicas\" is invalid: spec.validations[0].expression"), "{err}");
        // Two policies of one name, wasm and VAP.
        let clash = vap(None).replace("name: max-replicas}", "name: build-ref}");
        let err = set_of(&[("clash.yaml", &clash)], "", true).err().unwrap();
        assert!(
            matches!(&err, BuildError::Set(SetError::DuplicateName { name, .. }) if name == "build-ref"),
            "{err}"
        );
        // Other files, hidden ones and test suites are not read.
        let set = set_of(
            &[
                ("notes.txt", "x"),
                (".max.yaml.swp", "x"),
                ("max.yml", &vap(None)),
            ],
            "",
            false,
        )
        .unwrap();
        assert_eq!(set.len(), 1);
    }
}
