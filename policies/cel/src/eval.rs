//! Judging one request: the API server's admission flow for ValidatingAdmissionPolicies.

use crate::compile::{Compiled, VarUse, var_ident};
use crate::fast::{self, V};
use crate::json::Json;
use crate::matching;
use crate::value::{Extent, display, extent, map, to_cel, type_name};
use crate::{
    Binding, Evaluation, Failure, FailureKind, FailurePolicy, Outcome, ParamSource, Policy,
    PolicySet, Request, ValidationActions,
};
use kube_cel::KubeCelExt;
use kube_cel::cel::{Context, Value};
use std::sync::OnceLock;

/// The functions, registered once.
pub(crate) fn root() -> &'static Context<'static> {
    static ROOT: OnceLock<Context<'static>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mut ctx = Context::default().with_all();
        crate::compile::register(&mut ctx);
        ctx
    })
}

struct Inputs {
    extent: Extent,
    /// An input above the size bound: every expression fails with this.
    too_large: Option<String>,
}

/// For the paths that evaluate nothing (matching errors).
static NO_INPUTS: Inputs = Inputs {
    extent: Extent {
        list: 0,
        string: 0,
        total: 0,
    },
    too_large: None,
};

/// The request's bounds and CEL values: made once, when a policy first matches.
struct Prepared<'r> {
    inputs: Inputs,
    req: &'r Request<'r>,
    /// `request`, the one input that is not JSON: made when an expression reads it.
    request: std::cell::OnceCell<Value>,
    /// The inputs in the `cel` crate's context, made the first time an expression needs it
    /// (the fast path cannot say): the conversion copies the whole object.
    slow: std::cell::OnceCell<Context<'static>>,
}

impl<'r> Prepared<'r> {
    fn slow(&self) -> &Context<'static> {
        self.slow.get_or_init(|| {
            let mut ctx = root().new_inner_scope();
            let cel_or_null = |v: &Option<Json>| v.as_ref().map(to_cel).unwrap_or(Value::Null);
            ctx.add_variable_from_value("object", cel_or_null(&self.req.object));
            ctx.add_variable_from_value("oldObject", cel_or_null(&self.req.old_object));
            ctx.add_variable_from_value("namespaceObject", cel_or_null(&self.req.namespace_object));
            ctx.add_variable_from_value("request", self.request().clone());
            ctx
        })
    }

    fn request(&self) -> &Value {
        self.request.get_or_init(|| self.req.to_cel())
    }

    /// The inputs as the fast path reads them: the JSON in place. `request` is bound to null
    /// for a policy none of whose expressions reads it.
    fn bind(&self, env: &mut fast::Env<'r>, reads_request: bool) {
        let json = |v: &'r Option<Json<'r>>| v.as_ref().map_or(V::Cel(Value::Null), V::Json);
        env.bind("object", json(&self.req.object));
        env.bind("oldObject", json(&self.req.old_object));
        env.bind("namespaceObject", json(&self.req.namespace_object));
        let request = if reads_request {
            self.request().clone()
        } else {
            Value::Null
        };
        env.bind("request", V::Cel(request));
    }
}

/// The length of `v`'s JSON text, without writing it.
fn json_len(v: &Json) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

fn prepare<'r>(set: &PolicySet, req: &'r Request<'r>) -> Prepared<'r> {
    let mut inputs = Inputs {
        extent: Extent::default(),
        too_large: None,
    };
    for (what, v) in [
        ("object", &req.object),
        ("oldObject", &req.old_object),
        ("namespaceObject", &req.namespace_object),
    ] {
        if let Some(v) = v {
            // The exact length only when the upper bound found on the way does not settle it.
            let max = set.limits.max_object_bytes;
            if extent(v, &mut inputs.extent) > max {
                let len = json_len(v);
                if len > max {
                    inputs.too_large = Some(format!(
                        "{what} is {len} bytes, above ck8s's bound of {max} bytes"
                    ));
                }
            }
        }
    }
    Prepared {
        inputs,
        req,
        request: std::cell::OnceCell::new(),
        slow: std::cell::OnceCell::new(),
    }
}

pub(crate) fn evaluate(set: &PolicySet, req: &Request, params: &dyn ParamSource) -> Evaluation {
    let prepared: std::cell::OnceCell<Prepared> = std::cell::OnceCell::new();
    let mut order: Vec<&Policy> = set.policies.iter().collect();
    order.sort_by(|a, b| a.name.cmp(&b.name));
    let mut outcomes = Vec::new();
    for policy in order {
        let mut bindings: Vec<Option<&Binding>> = set
            .bindings
            .iter()
            .filter(|b| b.policy_name == policy.name)
            .map(Some)
            .collect();
        bindings.sort_by(|a, b| a.map(|x| &x.name).cmp(&b.map(|x| &x.name)));
        if bindings.is_empty() {
            bindings.push(None);
        }
        let policy_match = matching::matches(&policy.match_constraints, req, false);
        for binding in bindings {
            let judge = Judge {
                policy,
                binding,
                actions: binding.map_or(ValidationActions::DENY, |b| b.actions),
                limits: set.limits,
                inputs: &NO_INPUTS,
            };
            match &policy_match {
                Ok(false) => continue,
                Err(e) => {
                    outcomes.extend(judge.error_outcome(None, "spec.matchConstraints", e.clone()));
                    continue;
                }
                Ok(true) => {}
            }
            if let Some(mr) = binding.and_then(|b| b.match_resources.as_ref()) {
                match matching::matches(mr, req, true) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        outcomes.extend(judge.error_outcome(None, "spec.matchResources", e));
                        continue;
                    }
                }
            }
            match judge.params(req, params) {
                Err(e) => outcomes.extend(judge.error_outcome(None, "spec.paramRef", e)),
                Ok(list) => {
                    if list.is_empty() {
                        continue;
                    }
                    let prepared = prepared.get_or_init(|| prepare(set, req));
                    let judge = Judge {
                        inputs: &prepared.inputs,
                        ..judge
                    };
                    for p in &list {
                        let p = p.as_ref().map(Json::from);
                        if let Some(o) = judge.run(prepared, p.as_ref()) {
                            outcomes.push(o);
                        }
                    }
                }
            }
        }
    }
    Evaluation { outcomes }
}

/// What one policy's expressions see: the names bound (inputs first, [`INPUTS`] of them),
/// and the request's prepared values for the slow path.
struct Env<'a, 'j> {
    names: fast::Env<'j>,
    prepared: &'a Prepared<'a>,
}

/// The inputs bound first in every [`Env`]; the slow path's base context has them already.
const INPUTS: usize = 4;

struct Judge<'a> {
    policy: &'a Policy,
    binding: Option<&'a Binding>,
    actions: ValidationActions,
    limits: crate::Limits,
    inputs: &'a Inputs,
}

fn object_id(o: &Json) -> String {
    let ns = o
        .pointer("/metadata/namespace")
        .and_then(Json::as_str)
        .unwrap_or("");
    let name = o
        .pointer("/metadata/name")
        .and_then(Json::as_str)
        .unwrap_or("");
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

impl<'a> Judge<'a> {
    fn outcome(&self, param: Option<&Json>) -> Outcome {
        Outcome {
            policy: self.policy.name.clone(),
            binding: self.binding.map(|b| b.name.clone()),
            param: param.map(object_id),
            failures: Vec::new(),
            audit_annotations: Vec::new(),
            ignored_errors: Vec::new(),
        }
    }

    /// An error under the policy's failurePolicy: a failure with the binding's actions, or an
    /// ignored error.
    fn error_outcome(&self, param: Option<&Json>, path: &str, message: String) -> Option<Outcome> {
        let mut o = self.outcome(param);
        self.record_error(&mut o, path, message);
        Some(o)
    }

    fn record_error(&self, o: &mut Outcome, path: &str, message: String) {
        match self.policy.failure_policy {
            FailurePolicy::Ignore => o.ignored_errors.push(message),
            FailurePolicy::Fail => o.failures.push(Failure {
                kind: FailureKind::Error,
                path: path.to_string(),
                message,
                reason: "Invalid".to_string(),
                actions: self.actions,
            }),
        }
    }

    /// The param objects to judge with: `[None]` without paramKind; an error for a missing
    /// paramRef or for none found with `parameterNotFoundAction: Deny`; `[]` for none found
    /// with `Allow`.
    fn params(
        &self,
        req: &Request,
        source: &dyn ParamSource,
    ) -> Result<Vec<Option<serde_json::Value>>, String> {
        let Some(kind) = &self.policy.param_kind else {
            return Ok(vec![None]);
        };
        let Some(pr) = self.binding.and_then(|b| b.param_ref.as_ref()) else {
            return Err(format!(
                "policy {:?} has paramKind {}/{} but its binding has no paramRef",
                self.policy.name, kind.api_version, kind.kind
            ));
        };
        let namespace = pr
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .or((!req.namespace.is_empty()).then_some(req.namespace.as_str()));
        let found: Vec<serde_json::Value> = match (&pr.name, &pr.selector) {
            (Some(name), _) if !name.is_empty() => {
                source.get(kind, namespace, name)?.into_iter().collect()
            }
            (_, Some(sel)) => source.list(kind, namespace, sel)?,
            _ => Vec::new(),
        };
        if found.is_empty() {
            return match pr.parameter_not_found_action.as_deref() {
                Some("Allow") => Ok(Vec::new()),
                _ => Err(
                    "no params found for policy binding with `Deny` parameterNotFoundAction"
                        .to_string(),
                ),
            };
        }
        Ok(found.into_iter().map(Some).collect())
    }

    /// The extent `c` can walk: the request's inputs if it reads them itself, and the
    /// values of the variables it reads (a variable holding one list of the object is as
    /// large as that list, not as the object's largest).
    fn extent_for(&self, c: &Compiled, vars: &Vars, precision: Precision) -> Extent {
        let mut x = if c.reads_inputs {
            self.inputs.extent
        } else {
            Extent::default()
        };
        let computed = |i: usize| vars.extent(i, self.inputs.extent, precision);
        match &c.var_use {
            VarUse::None => {}
            VarUse::Names(names) => {
                for (i, (name, _)) in self.policy.variables.iter().enumerate() {
                    if names.contains(name)
                        && let Some(e) = computed(i)
                    {
                        x = x.join(e);
                    }
                }
            }
            VarUse::All => {
                for i in 0..self.policy.variables.len() {
                    if let Some(e) = computed(i) {
                        x = x.join(e);
                    }
                }
            }
        }
        x
    }

    /// Evaluates one expression, after its bound: the result, or the error as a message. The
    /// fast path first; the `cel` crate where it cannot say (see `fast`).
    fn eval<'j>(
        &self,
        env: &mut Env<'_, 'j>,
        c: &'j Compiled,
        vars: &Vars<'j>,
    ) -> Result<V<'j>, String>
    where
        'a: 'j,
    {
        if let Some(e) = &self.inputs.too_large {
            return Err(e.clone());
        }
        // A bound of the extent first, which needs no walk of the variables' values; the
        // exact extent when the estimate on the bound is not within the limit.
        let within = c
            .within(self.extent_for(c, vars, Precision::Bound), self.limits.cost)
            .or_else(|_| c.within(self.extent_for(c, vars, Precision::Exact), self.limits.cost));
        if let Err(estimate) = within {
            return Err(format!(
                "operation cancelled: estimated cost {estimate:.0} exceeds ck8s's limit of {:.0} per expression",
                self.limits.cost
            ));
        }
        let fast = fast::eval(&c.expr, &mut env.names);
        #[cfg(test)]
        fast::check::record(&c.source, fast.as_ref(), || Self::slow(env, c));
        match fast {
            Some(v) => Ok(v),
            None => Self::slow(env, c).map(V::Cel),
        }
    }

    /// The `cel` crate's evaluation, in a context with the same names bound.
    fn slow(env: &Env, c: &Compiled) -> Result<Value, String> {
        let mut ctx = env.prepared.slow().new_inner_scope();
        for (name, v) in env.names.bindings_from(INPUTS) {
            ctx.add_variable_from_value(name, v.to_value());
        }
        Value::resolve(&c.expr, &ctx).map_err(|e| e.to_string())
    }

    /// One policy, one binding, one param: matchConditions, then validations and audit
    /// annotations. `None` when a match condition is false.
    fn run<'j>(&self, prepared: &'j Prepared<'j>, param: Option<&'j Json<'j>>) -> Option<Outcome>
    where
        'a: 'j,
    {
        let mut o = self.outcome(param);
        let mut names = fast::Env::default();
        prepared.bind(&mut names, self.policy.reads_request);
        let mut pctx = Env { names, prepared };
        let mut param_extent = self.inputs.extent;
        if let Some(p) = param {
            let _ = extent(p, &mut param_extent);
        }
        pctx.names
            .bind("params", param.map_or(V::Cel(Value::Null), V::Json));
        let judge = Judge {
            inputs: &Inputs {
                extent: param_extent,
                too_large: self.inputs.too_large.clone(),
            },
            ..*self
        };
        let mut vars = Vars {
            values: vec![None; self.policy.variables.len()],
            extents: vec![std::cell::OnceCell::new(); self.policy.variables.len()],
        };

        // matchConditions: any false skips; else an error follows failurePolicy.
        let mut condition_error = None;
        for (i, (name, c)) in self.policy.match_conditions.iter().enumerate() {
            let r = judge.with_vars(
                &mut pctx,
                &mut vars,
                &self.policy.needs.match_conditions[i],
                c,
            );
            match r {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => return None,
                Ok(other) => {
                    condition_error.get_or_insert((
                        i,
                        format!(
                            "matchCondition {name:?} evaluated to {}, not bool",
                            type_name(&other)
                        ),
                    ));
                }
                Err(e) => {
                    condition_error.get_or_insert((
                        i,
                        format!("matchCondition {name:?} resulted in error: {e}"),
                    ));
                }
            }
        }
        if let Some((i, e)) = condition_error {
            self.record_error(&mut o, &format!("spec.matchConditions[{i}].expression"), e);
            return Some(o);
        }

        for (i, v) in self.policy.validations.iter().enumerate() {
            let path = || format!("spec.validations[{i}].expression");
            let needs = &self.policy.needs.validations[i];
            match judge.with_vars(&mut pctx, &mut vars, needs, &v.expr) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => {
                    let from_expr = v.message_expr.as_ref().and_then(|me| {
                        match judge.with_vars(&mut pctx, &mut vars, needs, me) {
                            Ok(Value::String(s)) if !s.trim().is_empty() && !s.contains('\n') => {
                                Some(s.trim().to_string())
                            }
                            _ => None,
                        }
                    });
                    let message = from_expr
                        .or_else(|| v.message.as_ref().map(|m| m.trim().to_string()))
                        .unwrap_or_else(|| format!("failed expression: {}", v.expr.source.trim()));
                    o.failures.push(Failure {
                        kind: FailureKind::Validation { index: i },
                        path: path(),
                        message,
                        reason: v.reason.clone(),
                        actions: self.actions,
                    });
                }
                Ok(other) => self.record_error(
                    &mut o,
                    &path(),
                    format!(
                        "expression '{}' resulted in a value of type {}, not bool: {}",
                        v.expr.source,
                        type_name(&other),
                        display(&other)
                    ),
                ),
                Err(e) => self.record_error(
                    &mut o,
                    &path(),
                    format!("expression '{}' resulted in error: {e}", v.expr.source),
                ),
            }
        }

        for (i, (key, c)) in self.policy.audit_annotations.iter().enumerate() {
            let path = || format!("spec.auditAnnotations[{i}].valueExpression");
            match judge.with_vars(&mut pctx, &mut vars, &self.policy.needs.audit[i], c) {
                Ok(Value::Null) => {}
                Ok(Value::String(s)) => {
                    if !s.is_empty() {
                        o.audit_annotations
                            .push((format!("{}/{key}", self.policy.name), s.to_string()));
                    }
                }
                Ok(other) => self.record_error(
                    &mut o,
                    &path(),
                    format!(
                        "valueExpression '{}' resulted in a value of type {}, not string",
                        c.source,
                        type_name(&other)
                    ),
                ),
                Err(e) => self.record_error(
                    &mut o,
                    &path(),
                    format!("valueExpression '{}' resulted in error: {e}", c.source),
                ),
            }
        }
        Some(o)
    }

    /// Evaluates `c` after computing the variables it needs (each once per policy, binding
    /// and param; bound in `ctx` as it is computed).
    fn with_vars<'j>(
        &self,
        ctx: &mut Env<'_, 'j>,
        vars: &mut Vars<'j>,
        needs: &[usize],
        c: &'j Compiled,
    ) -> Result<Value, String>
    where
        'a: 'j,
    {
        for &i in needs {
            if vars.values[i].is_none() {
                let (_, vc) = &self.policy.variables[i];
                let r = self.eval_with_all(ctx, vars, vc);
                let r = r.map_err(|e| self.attribute(e, vc, needs, vars));
                if let Ok(v) = &r {
                    let policy: &'a Policy = self.policy;
                    ctx.names.bind(&policy.variable_idents[i], v.clone());
                }
                vars.values[i] = Some(r);
            }
        }
        let r = self.eval_with_all(ctx, vars, c);
        r.map(|v| v.to_value())
            .map_err(|e| self.attribute(e, c, needs, vars))
    }

    /// [`Judge::eval`], with `variables` bound as a map for an expression that reads it as a
    /// whole.
    fn eval_with_all<'j>(
        &self,
        ctx: &mut Env<'_, 'j>,
        vars: &Vars<'j>,
        c: &'j Compiled,
    ) -> Result<V<'j>, String>
    where
        'a: 'j,
    {
        if !matches!(c.var_use, VarUse::All) {
            return self.eval(ctx, c, vars);
        }
        let depth = ctx.names.len();
        ctx.names
            .bind("variables", V::Cel(vars.map(&self.policy.variables)));
        let r = self.eval(ctx, c, vars);
        ctx.names.truncate(depth);
        r
    }

    /// The error of `c`, which failed with `e`. A variable whose evaluation failed is not
    /// bound: reading it fails with its own error, and an expression that does not read it on
    /// the path taken (`cond ? variables.a : 1`) is unaffected, as with the API server's lazy
    /// variables. The evaluator words a missing binding in several ways (an undeclared
    /// reference, a missing key, a call without its argument), and a variable's unknown size
    /// can put an expression over the cost bound: one that fails while a variable it reads
    /// failed is taken to fail with the variable's error.
    fn attribute(&self, e: String, c: &Compiled, needs: &[usize], vars: &Vars) -> String {
        let failed = |i: usize| match &vars.values[i] {
            Some(Err(ve)) => Some((&self.policy.variables[i].0, ve)),
            _ => None,
        };
        let named = needs.iter().filter_map(|&i| failed(i)).find(|(name, _)| {
            e.contains(&format!("'{}'", var_ident(name)))
                || e.ends_with(&format!("No such key: {name}"))
        });
        let read = || {
            needs
                .iter()
                .filter_map(|&i| failed(i))
                .find(|(name, _)| match &c.var_use {
                    VarUse::Names(names) => names.contains(*name),
                    VarUse::All => true,
                    VarUse::None => false,
                })
        };
        match named.or_else(read) {
            Some((name, ve)) => format!("variable '{name}': {ve}"),
            None => e,
        }
    }
}

struct Vars<'j> {
    values: Vec<Option<Result<V<'j>, String>>>,
    /// The exact extent of each variable's value, once computed.
    extents: Vec<std::cell::OnceCell<Extent>>,
}

/// How an expression's extent is found for its cost estimate.
#[derive(Clone, Copy)]
enum Precision {
    /// Without walking the variables' values: a part of the inputs is taken to be as large
    /// as the inputs. Never below the exact extent, so an estimate within the limit on it
    /// is within on the exact one.
    Bound,
    Exact,
}

impl Vars<'_> {
    /// The extent of variable `i`'s value (`None` while it is not computed or failed).
    fn extent(&self, i: usize, inputs: Extent, precision: Precision) -> Option<Extent> {
        let Some(Some(Ok(v))) = self.values.get(i) else {
            return None;
        };
        Some(match precision {
            Precision::Bound => bound(v, inputs),
            Precision::Exact => *self.extents[i].get_or_init(|| {
                let mut e = Extent::default();
                v.extent(&mut e);
                e
            }),
        })
    }

    fn map(&self, defs: &[(String, Compiled)]) -> Value {
        map(self
            .values
            .iter()
            .zip(defs)
            .filter_map(|(v, (name, _))| match v {
                Some(Ok(v)) => Some((name.as_str(), v.to_value())),
                _ => None,
            })
            .collect())
    }
}

/// An extent at least `v`'s, found without walking the request's JSON: any part of it is at
/// most as large as `inputs`, the extent of all of it.
fn bound(v: &V, inputs: Extent) -> Extent {
    match v {
        V::Json(_) => inputs,
        V::List(items) => items.iter().fold(
            Extent {
                list: items.len() as u64,
                string: 0,
                total: items.len() as u64,
            },
            |acc, x| acc.join(bound(x, inputs)),
        ),
        V::Cel(_) | V::Key(_) => {
            let mut e = Extent::default();
            v.extent(&mut e);
            e
        }
    }
}

/// The API server's code for a reason.
fn code_of(reason: &str) -> u16 {
    match reason {
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    }
}

/// A request refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// As the API server words it: `ValidatingAdmissionPolicy 'P' with binding 'B' denied
    /// request: MESSAGE` (without `with binding` for a policy judged without one).
    pub message: String,
    pub reason: String,
    pub code: u16,
    pub policy: String,
    pub binding: Option<String>,
}

/// One `Audit` action's record, as the API server puts it in the
/// `validation.policy.admission.k8s.io/validation_failure` annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub message: String,
    pub policy: String,
    pub binding: Option<String>,
    pub path: String,
    pub actions: ValidationActions,
}

/// The whole request's decision, mapped onto ck8s's modes: deny, warn, audit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The first denial (the one the API server reports), if any.
    pub denial: Option<Denial>,
    /// Every denial, in policy / binding order.
    pub denials: Vec<Denial>,
    /// As the API server words them: `Validation failed for ValidatingAdmissionPolicy 'P'
    /// with binding 'B': MESSAGE`.
    pub warnings: Vec<String>,
    pub audit: Vec<AuditRecord>,
    /// `policy/key` → value from auditAnnotations.
    pub annotations: Vec<(String, String)>,
}

impl crate::Evaluation {
    /// Applies each binding's validationActions.
    pub fn decision(&self) -> Decision {
        let mut d = Decision {
            allowed: true,
            ..Default::default()
        };
        for o in &self.outcomes {
            d.annotations.extend(o.audit_annotations.iter().cloned());
            for f in &o.failures {
                if f.actions.deny {
                    d.denials.push(Denial {
                        message: o.denial_text(f),
                        reason: f.reason.clone(),
                        code: code_of(&f.reason),
                        policy: o.policy.clone(),
                        binding: o.binding.clone(),
                    });
                }
                if f.actions.warn {
                    d.warnings.push(o.warning_text(f));
                }
                if f.actions.audit {
                    d.audit.push(AuditRecord {
                        message: f.message.clone(),
                        policy: o.policy.clone(),
                        binding: o.binding.clone(),
                        path: f.path.clone(),
                        actions: f.actions,
                    });
                }
            }
        }
        d.allowed = d.denials.is_empty();
        d.denial = d.denials.first().cloned();
        d
    }
}
