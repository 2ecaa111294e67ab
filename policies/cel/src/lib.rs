//! ValidatingAdmissionPolicy files judged as the Kubernetes API server judges them.
//!
//! This crate is the CEL policy engine of ck8s: it reads `admissionregistration.k8s.io/v1`
//! `ValidatingAdmissionPolicy` and `ValidatingAdmissionPolicyBinding` objects (with ConfigMaps
//! or other objects beside them as params) from multi-document YAML, compiles every CEL
//! expression at load, and decides admission requests with the API server's semantics:
//! `matchConstraints` and the binding's `matchResources`, `matchConditions`, `variables`,
//! `validations` (`message`, `messageExpression`, `reason`), `auditAnnotations`,
//! `failurePolicy`, `validationActions` and params (`paramKind` / `paramRef`). The CEL
//! evaluator is the `cel` crate with Kubernetes' CEL libraries from `kube-cel`, run in the host
//! process.
//!
//! What it is not: it has no Kubernetes client and no WebAssembly. The caller gives it the
//! request (objects **in the form the API server sends them**: its normal form, with
//! defaults filled in, empty fields dropped and `stringData` merged into `data`; a manifest as
//! written by hand is not what a policy sees behind the API server), the namespace object, and
//! a [`ParamSource`] for params that live in a cluster. Mapping the outcome onto ck8s's modes
//! and ratcheting is done by the caller with [`Evaluation::decision`] and
//! [`Failure::same_violation`].
//!
//! What it refuses at load, with the policy, the field path of the expression and the
//! position in it: syntax errors, references to undeclared variables or functions (the CEL
//! evaluator has no type checker; names are checked against what the API server declares),
//! `authorizer` (it needs the API server's authorizer), and what the API server's validation
//! refuses in the objects themselves. See the crate's README for the differences from cel-go.
//!
//! ```
//! let set = ck8s_policy_cel::PolicySet::load("example.yaml", r#"
//! apiVersion: admissionregistration.k8s.io/v1
//! kind: ValidatingAdmissionPolicy
//! metadata: {name: max-replicas}
//! spec:
//!   matchConstraints:
//!     resourceRules:
//!     - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}
//!   validations:
//!   - expression: object.spec.replicas <= 5
//!     message: at most 5 replicas
//! "#).unwrap();
//! let object = serde_json::json!({
//!     "apiVersion": "apps/v1", "kind": "Deployment",
//!     "metadata": {"name": "web", "namespace": "a"}, "spec": {"replicas": 7}});
//! let request = ck8s_policy_cel::Request::for_object(ck8s_policy_cel::Operation::Create, object);
//! let decision = set.evaluate(&request, None).decision();
//! assert!(!decision.allowed);
//! assert_eq!(
//!     decision.denial.unwrap().message,
//!     "ValidatingAdmissionPolicy 'max-replicas' denied request: at most 5 replicas"
//! );
//! ```

mod compile;
mod eval;
mod fast;
pub mod json;
mod load;
mod matching;
mod request;
mod value;

pub use compile::known_function;
pub use eval::{AuditRecord, Decision, Denial};
pub use json::Json;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
/// The CEL crate the values come from.
pub use kube_cel::cel;
pub use matching::{resource_matches, selector_matches};
pub use request::{Gvk, Gvr, Operation, Request, UserInfo, resource_for};

use compile::Compiled;
use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, ParamRef, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use load::CompiledValidation;

/// Why a file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{source_name}: not YAML: {message}")]
    Yaml {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: document {index}: {message}")]
    Document {
        source_name: String,
        index: usize,
        message: String,
    },
    /// As the API server reports it: the field path, the expression, then the compiler's
    /// message with its position (`ERROR: <input>:LINE:COLUMN: ...`).
    #[error(
        "ValidatingAdmissionPolicy {policy:?} is invalid: {path}: Invalid value: {expression:?}: compilation failed: {message}"
    )]
    Compile {
        policy: String,
        path: String,
        expression: String,
        /// 1-based.
        line: usize,
        /// 1-based.
        column: usize,
        message: String,
    },
    /// Accepted by the API server but not evaluated by ck8s (never evaluated wrongly).
    #[error(
        "ValidatingAdmissionPolicy {policy:?}: {path}: {expression:?} at {line}:{column} is not supported by ck8s: {message}"
    )]
    Unsupported {
        policy: String,
        path: String,
        expression: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// What the API server's validation of the object refuses.
    #[error("{kind} {name:?} is invalid: {path}: {message}")]
    Invalid {
        kind: &'static str,
        name: String,
        path: String,
        message: String,
    },
}

impl LoadError {
    /// The field path of the offending field (`spec.validations[0].expression`), if any.
    pub fn path(&self) -> Option<&str> {
        match self {
            LoadError::Compile { path, .. }
            | LoadError::Unsupported { path, .. }
            | LoadError::Invalid { path, .. } => Some(path),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    Fail,
    Ignore,
}

/// A binding's `validationActions`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ValidationActions {
    pub deny: bool,
    pub warn: bool,
    pub audit: bool,
}

impl ValidationActions {
    pub const DENY: ValidationActions = ValidationActions {
        deny: true,
        warn: false,
        audit: false,
    };
}

/// `spec.paramKind`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ParamKind {
    pub api_version: String,
    pub kind: String,
}

/// Where params come from: the cluster (the webhook reads them through the API), or the
/// objects given beside the policies (offline). `namespace` is `None` for a cluster-wide
/// lookup.
pub trait ParamSource {
    fn get(
        &self,
        kind: &ParamKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<serde_json::Value>, String>;
    fn list(
        &self,
        kind: &ParamKind,
        namespace: Option<&str>,
        selector: &LabelSelector,
    ) -> Result<Vec<serde_json::Value>, String>;
}

/// Params held in memory (the objects loaded beside the policies).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalParams<'a>(pub &'a [serde_json::Value]);

impl LocalParams<'_> {
    fn candidates<'a>(
        &'a self,
        kind: &'a ParamKind,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
        self.0.iter().filter(move |o| {
            o["apiVersion"].as_str() == Some(&kind.api_version)
                && o["kind"].as_str() == Some(&kind.kind)
                && namespace.is_none_or(|ns| {
                    o.pointer("/metadata/namespace")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        == ns
                })
        })
    }
}

impl ParamSource for LocalParams<'_> {
    fn get(
        &self,
        kind: &ParamKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<serde_json::Value>, String> {
        Ok(self
            .candidates(kind, namespace)
            .find(|o| o.pointer("/metadata/name").and_then(|v| v.as_str()) == Some(name))
            .cloned())
    }

    fn list(
        &self,
        kind: &ParamKind,
        namespace: Option<&str>,
        selector: &LabelSelector,
    ) -> Result<Vec<serde_json::Value>, String> {
        let mut out = Vec::new();
        for o in self.candidates(kind, namespace) {
            if selector_matches(selector, &matching::labels_of(Some(&Json::from(o))))? {
                out.push(o.clone());
            }
        }
        Ok(out)
    }
}

/// Bounds of one evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Upper bound of the estimated cost of one expression on the request's inputs (see the
    /// README: an estimate made before evaluating, since the evaluator has no cost hook).
    pub cost: f64,
    /// Largest object (JSON bytes of object, oldObject or a param) judged; larger ones are an
    /// evaluation error, as the API server refuses requests above 3 MiB.
    pub max_object_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cost: 10_000_000.0,
            max_object_bytes: 3 * 1024 * 1024,
        }
    }
}

/// A compiled policy.
pub struct Policy {
    pub name: String,
    pub failure_policy: FailurePolicy,
    pub match_constraints: MatchResources,
    pub param_kind: Option<ParamKind>,
    match_conditions: Vec<(String, Compiled)>,
    variables: Vec<(String, Compiled)>,
    /// The name each variable is bound to once computed (`variables.x` is rewritten to it).
    variable_idents: Vec<String>,
    validations: Vec<CompiledValidation>,
    audit_annotations: Vec<(String, Compiled)>,
    needs: Needs,
    /// Whether any of its expressions reads `request`.
    reads_request: bool,
    /// The object as loaded.
    pub object: ValidatingAdmissionPolicy,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// The validations' expressions, in order.
    pub fn validation_expressions(&self) -> impl Iterator<Item = &str> {
        self.validations.iter().map(|v| v.expr.source.as_str())
    }

    /// The variables' names, in order.
    pub fn variable_names(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(|(n, _)| n.as_str())
    }
}

/// For each expression, the variables (indexes, ascending) it needs computed first.
#[derive(Debug, Default)]
struct Needs {
    match_conditions: Vec<Vec<usize>>,
    validations: Vec<Vec<usize>>,
    audit: Vec<Vec<usize>>,
}

/// A checked binding.
#[derive(Debug)]
pub struct Binding {
    pub name: String,
    pub policy_name: String,
    pub actions: ValidationActions,
    pub match_resources: Option<MatchResources>,
    pub param_ref: Option<ParamRef>,
    pub object: ValidatingAdmissionPolicyBinding,
}

/// Policies, bindings and params, compiled.
#[derive(Debug, Default)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
    pub bindings: Vec<Binding>,
    /// Every other object of the files (ConfigMaps, ...): params given beside the policies.
    pub params: Vec<serde_json::Value>,
    pub limits: Limits,
}

impl PolicySet {
    /// One file of multi-document YAML (or JSON). `source` names it in errors.
    pub fn load(source: &str, text: &str) -> Result<PolicySet, LoadError> {
        let mut set = PolicySet::default();
        set.add(source, text)?;
        Ok(set)
    }

    /// Adds the documents of one more file; on error the set is unchanged.
    pub fn add(&mut self, source: &str, text: &str) -> Result<(), LoadError> {
        let docs = load::documents(source, text)?;
        let mut staged = PolicySet::default();
        std::mem::swap(&mut staged.policies, &mut self.policies);
        std::mem::swap(&mut staged.bindings, &mut self.bindings);
        std::mem::swap(&mut staged.params, &mut self.params);
        let (np, nb, nx) = (
            staged.policies.len(),
            staged.bindings.len(),
            staged.params.len(),
        );
        let mut result = Ok(());
        for (i, d) in docs.into_iter().enumerate() {
            if let Err(e) = load::add_document(&mut staged, source, i, d) {
                result = Err(e);
                break;
            }
        }
        if result.is_err() {
            staged.policies.truncate(np);
            staged.bindings.truncate(nb);
            staged.params.truncate(nx);
        }
        self.policies = staged.policies;
        self.bindings = staged.bindings;
        self.params = staged.params;
        result
    }

    /// Judges one request. `params` defaults to the objects loaded beside the policies.
    pub fn evaluate(&self, request: &Request, params: Option<&dyn ParamSource>) -> Evaluation {
        let local = LocalParams(&self.params);
        let params: &dyn ParamSource = params.unwrap_or(&local);
        eval::evaluate(self, request, params)
    }

    /// Whether any policy's resource rules take `request`, selectors aside (a binding only
    /// narrows its policy). When none does, [`PolicySet::evaluate`] judges nothing; only the
    /// request's resource, subresource, operation, namespace and name are read here, so a
    /// caller may ask before it parses the objects.
    pub fn may_judge(&self, request: &Request) -> bool {
        self.policies
            .iter()
            .any(|p| matching::may_match(&p.match_constraints, request))
    }
}

/// Evaluates one expression with the given variables bound (JSON values), with the same
/// parser, functions and fixes as policies: for tooling and for trying an expression out. Names
/// are not checked.
pub fn evaluate_expression(
    source: &str,
    variables: &[(&str, serde_json::Value)],
) -> Result<kube_cel::cel::Value, String> {
    let compiled = compile::parse_only(source).map_err(|f| f.message)?;
    let mut ctx = eval::root().new_inner_scope();
    for (name, v) in variables {
        ctx.add_variable_from_value(*name, value::to_cel(&Json::from(v)));
    }
    kube_cel::cel::Value::resolve(&compiled.expr, &ctx).map_err(|e| e.to_string())
}

/// What kind of failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// `spec.validations[index]` evaluated to false.
    Validation { index: usize },
    /// An expression could not be evaluated (or no params were found with
    /// `parameterNotFoundAction: Deny`), and `failurePolicy` is `Fail`.
    Error,
}

/// One failed validation or evaluation error, with the actions its binding takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// The field path of the expression (`spec.validations[0].expression`).
    pub path: String,
    /// The validation's message (or the error), as the API server puts it after `denied
    /// request: `.
    pub message: String,
    /// `Invalid`, `Forbidden` or `RequestEntityTooLarge`.
    pub reason: String,
    pub actions: ValidationActions,
}

impl Failure {
    /// The ratchet's comparison: the same validation of the same policy and binding failing
    /// with the same message (on the old and on the new object).
    pub fn same_violation(&self, other: &Failure) -> bool {
        self.kind == other.kind && self.path == other.path && self.message == other.message
    }
}

/// The outcome of one policy through one binding (and one param object when a selector picks
/// several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub policy: String,
    /// `None` for a policy judged without a binding (as if bound with `[Deny]`).
    pub binding: Option<String>,
    /// `namespace/name` of the param object, if any.
    pub param: Option<String>,
    pub failures: Vec<Failure>,
    /// `policy-name/key` → value.
    pub audit_annotations: Vec<(String, String)>,
    /// Errors not enforced because `failurePolicy` is `Ignore`.
    pub ignored_errors: Vec<String>,
}

impl Outcome {
    /// A denial as the API server words it: `ValidatingAdmissionPolicy 'P' with binding 'B'
    /// denied request: MESSAGE` (without `with binding` for a policy judged without one).
    pub fn denial_text(&self, failure: &Failure) -> String {
        match &self.binding {
            Some(b) => format!(
                "ValidatingAdmissionPolicy '{}' with binding '{b}' denied request: {}",
                self.policy, failure.message
            ),
            None => format!(
                "ValidatingAdmissionPolicy '{}' denied request: {}",
                self.policy, failure.message
            ),
        }
    }

    /// A `Warn` action's warning as the API server words it.
    pub fn warning_text(&self, failure: &Failure) -> String {
        format!(
            "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
            self.policy,
            self.binding.as_deref().unwrap_or(""),
            failure.message
        )
    }

    /// Whether any failure is the same violation as one of `old`'s (for ratcheting).
    pub fn inherited(&self, failure: &Failure, old: &Outcome) -> bool {
        self.policy == old.policy
            && self.binding == old.binding
            && self.param == old.param
            && old.failures.iter().any(|o| o.same_violation(failure))
    }
}

/// The outcomes of all policies that matched a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    pub outcomes: Vec<Outcome>,
}

#[cfg(test)]
mod tests;
