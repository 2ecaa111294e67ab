//! Reading files of ValidatingAdmissionPolicies, their bindings and params, and compiling every
//! expression in them, refusing what the API server refuses at create.

use crate::compile::{Compiled, Scope, compile};
use crate::{Binding, FailurePolicy, LoadError, Policy, PolicySet, ValidationActions};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use std::collections::BTreeSet;

pub(crate) struct CompiledValidation {
    pub expr: Compiled,
    pub message: Option<String>,
    pub message_expr: Option<Compiled>,
    pub reason: String,
}

/// The parts of a file: policies, bindings and every other object (params).
pub(crate) fn documents(source: &str, text: &str) -> Result<Vec<serde_json::Value>, LoadError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| LoadError::Yaml {
            source_name: source.to_string(),
            message: e.to_string(),
        })?;
    let mut out = Vec::new();
    for d in docs {
        match d {
            serde_json::Value::Null => {}
            serde_json::Value::Object(ref m)
                if m.get("kind").and_then(|k| k.as_str()) == Some("List") =>
            {
                out.extend(
                    m.get("items")
                        .and_then(|i| i.as_array())
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

pub(crate) fn add_document(
    set: &mut PolicySet,
    source: &str,
    index: usize,
    doc: serde_json::Value,
) -> Result<(), LoadError> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let bad_doc = |message: String| LoadError::Document {
        source_name: source.to_string(),
        index,
        message,
    };
    let parse_error = |e: serde_json::Error| bad_doc(e.to_string());
    let twice = |kind: &str, name: &str| Err(bad_doc(format!("{kind} {name:?} is defined twice")));
    match (api_version, kind) {
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            let p = compile_policy(serde_json::from_value(doc).map_err(parse_error)?)?;
            if set.policies.iter().any(|q| q.name == p.name) {
                return twice("ValidatingAdmissionPolicy", &p.name);
            }
            set.policies.push(p);
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            let b = compile_binding(serde_json::from_value(doc).map_err(parse_error)?)?;
            if set.bindings.iter().any(|q| q.name == b.name) {
                return twice("ValidatingAdmissionPolicyBinding", &b.name);
            }
            set.bindings.push(b);
        }
        (_, "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding") => {
            return Err(bad_doc(format!(
                "{kind} of {api_version:?}: only admissionregistration.k8s.io/v1 is read"
            )));
        }
        ("", _) | (_, "") => {
            return Err(bad_doc("an object without apiVersion or kind".to_string()));
        }
        _ => set.params.push(doc),
    }
    Ok(())
}

fn invalid(
    kind: &'static str,
    name: &str,
    path: impl Into<String>,
    message: impl Into<String>,
) -> LoadError {
    LoadError::Invalid {
        kind,
        name: name.to_string(),
        path: path.into(),
        message: message.into(),
    }
}

fn compile_at(
    policy: &str,
    path: String,
    source: &str,
    scope: &Scope,
) -> Result<Compiled, LoadError> {
    if source.trim().is_empty() {
        return Err(invalid(
            "ValidatingAdmissionPolicy",
            policy,
            path,
            "Required value",
        ));
    }
    compile(source, scope).map_err(|f| {
        if f.unsupported {
            LoadError::Unsupported {
                policy: policy.to_string(),
                path,
                expression: source.to_string(),
                line: f.line,
                column: f.column,
                message: f.message,
            }
        } else {
            LoadError::Compile {
                policy: policy.to_string(),
                path,
                expression: source.to_string(),
                line: f.line,
                column: f.column,
                message: f.message,
            }
        }
    })
}

fn is_cel_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A qualified name's name part (`[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63).
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn compile_policy(p: ValidatingAdmissionPolicy) -> Result<Policy, LoadError> {
    const KIND: &str = "ValidatingAdmissionPolicy";
    let name = p.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(invalid(KIND, &name, "metadata.name", "Required value"));
    }
    let spec = p
        .spec
        .clone()
        .ok_or_else(|| invalid(KIND, &name, "spec", "Required value"))?;
    let failure_policy = match spec.failure_policy.as_deref() {
        None | Some("Fail") => FailurePolicy::Fail,
        Some("Ignore") => FailurePolicy::Ignore,
        Some(other) => {
            return Err(invalid(
                KIND,
                &name,
                "spec.failurePolicy",
                format!("Unsupported value: {other:?}: supported values: \"Fail\", \"Ignore\""),
            ));
        }
    };
    let match_constraints = spec
        .match_constraints
        .clone()
        .ok_or_else(|| invalid(KIND, &name, "spec.matchConstraints", "Required value"))?;
    if match_constraints
        .resource_rules
        .as_ref()
        .is_none_or(|r| r.is_empty())
    {
        return Err(invalid(
            KIND,
            &name,
            "spec.matchConstraints.resourceRules",
            "Required value",
        ));
    }
    check_match_resources(&match_constraints, KIND, &name, "spec.matchConstraints")?;
    let param_kind = match &spec.param_kind {
        None => None,
        Some(pk) => {
            let api_version = pk.api_version.clone().unwrap_or_default();
            let kind = pk.kind.clone().unwrap_or_default();
            if api_version.is_empty() || kind.is_empty() {
                return Err(invalid(
                    KIND,
                    &name,
                    "spec.paramKind",
                    "apiVersion and kind are required",
                ));
            }
            Some(crate::ParamKind { api_version, kind })
        }
    };
    let validations_in = spec.validations.clone().unwrap_or_default();
    let audit_in = spec.audit_annotations.clone().unwrap_or_default();
    if validations_in.is_empty() && audit_in.is_empty() {
        return Err(invalid(
            KIND,
            &name,
            "spec.validations",
            "Required value: validations or auditAnnotations must contain at least one item",
        ));
    }

    // Variables: each may use the ones before it; validations and the rest use all of them.
    let mut scope = Scope {
        has_params: param_kind.is_some(),
        variables: Vec::new(),
    };
    let mut variables = Vec::new();
    for (i, v) in spec.variables.iter().flatten().enumerate() {
        if !is_cel_identifier(&v.name) {
            return Err(invalid(
                KIND,
                &name,
                format!("spec.variables[{i}].name"),
                format!(
                    "Invalid value: {:?}: must be a valid CEL identifier",
                    v.name
                ),
            ));
        }
        if scope.variables.contains(&v.name) {
            return Err(invalid(
                KIND,
                &name,
                format!("spec.variables[{i}].name"),
                format!("Duplicate value: {:?}", v.name),
            ));
        }
        let c = compile_at(
            &name,
            format!("spec.variables[{i}].expression"),
            &v.expression,
            &scope,
        )?;
        variables.push((v.name.clone(), c));
        scope.variables.push(v.name.clone());
    }

    let mut match_conditions = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, m) in spec.match_conditions.iter().flatten().enumerate() {
        if !is_qualified_name_part(&m.name) || !seen.insert(m.name.clone()) {
            return Err(invalid(
                KIND,
                &name,
                format!("spec.matchConditions[{i}].name"),
                format!(
                    "Invalid value: {:?}: a unique qualified name is required",
                    m.name
                ),
            ));
        }
        let c = compile_at(
            &name,
            format!("spec.matchConditions[{i}].expression"),
            &m.expression,
            &scope,
        )?;
        match_conditions.push((m.name.clone(), c));
    }

    let mut validations = Vec::new();
    for (i, v) in validations_in.iter().enumerate() {
        let expr = compile_at(
            &name,
            format!("spec.validations[{i}].expression"),
            &v.expression,
            &scope,
        )?;
        let message_expr = match v.message_expression.as_deref() {
            Some(me) if !me.trim().is_empty() => Some(compile_at(
                &name,
                format!("spec.validations[{i}].messageExpression"),
                me,
                &scope,
            )?),
            _ => None,
        };
        if let Some(m) = &v.message
            && m.contains('\n')
        {
            return Err(invalid(
                KIND,
                &name,
                format!("spec.validations[{i}].message"),
                format!("Invalid value: {m:?}: must not contain line breaks"),
            ));
        }
        let reason = v.reason.clone().unwrap_or_else(|| "Invalid".to_string());
        if !matches!(
            reason.as_str(),
            "Forbidden" | "Invalid" | "RequestEntityTooLarge"
        ) {
            return Err(invalid(
                KIND,
                &name,
                format!("spec.validations[{i}].reason"),
                format!(
                    "Unsupported value: {reason:?}: supported values: \"Forbidden\", \"Invalid\", \"RequestEntityTooLarge\""
                ),
            ));
        }
        validations.push(CompiledValidation {
            expr,
            message: v.message.clone().filter(|m| !m.is_empty()),
            message_expr,
            reason,
        });
    }

    let mut audit_annotations = Vec::new();
    let mut keys = BTreeSet::new();
    for (i, a) in audit_in.iter().enumerate() {
        if !is_qualified_name_part(&a.key) || !keys.insert(a.key.clone()) {
            return Err(invalid(
                KIND,
                &name,
                format!("spec.auditAnnotations[{i}].key"),
                format!(
                    "Invalid value: {:?}: a unique qualified name is required",
                    a.key
                ),
            ));
        }
        let c = compile_at(
            &name,
            format!("spec.auditAnnotations[{i}].valueExpression"),
            &a.value_expression,
            &scope,
        )?;
        audit_annotations.push((a.key.clone(), c));
    }

    // Which variables each expression needs, with what those variables need in turn.
    let needs_of = |c: &Compiled, upto: usize| -> Vec<usize> {
        let mut need = BTreeSet::new();
        let mut stack: Vec<usize> = match &c.var_use {
            crate::compile::VarUse::None => vec![],
            crate::compile::VarUse::All => (0..upto).collect(),
            crate::compile::VarUse::Names(names) => names
                .iter()
                .filter_map(|n| variables.iter().position(|(vn, _)| vn == n))
                .collect(),
        };
        while let Some(i) = stack.pop() {
            if need.insert(i) {
                match &variables[i].1.var_use {
                    crate::compile::VarUse::None => {}
                    crate::compile::VarUse::All => stack.extend(0..i),
                    crate::compile::VarUse::Names(names) => stack.extend(
                        names
                            .iter()
                            .filter_map(|n| variables.iter().position(|(vn, _)| vn == n)),
                    ),
                }
            }
        }
        need.into_iter().collect()
    };
    let nvars = variables.len();
    let needs = crate::Needs {
        match_conditions: match_conditions
            .iter()
            .map(|(_, c)| needs_of(c, nvars))
            .collect(),
        validations: validations
            .iter()
            .map(|v| {
                let mut n = needs_of(&v.expr, nvars);
                if let Some(me) = &v.message_expr {
                    n.extend(needs_of(me, nvars));
                    n.sort_unstable();
                    n.dedup();
                }
                n
            })
            .collect(),
        audit: audit_annotations
            .iter()
            .map(|(_, c)| needs_of(c, nvars))
            .collect(),
    };

    let reads_request = match_conditions
        .iter()
        .chain(&variables)
        .chain(&audit_annotations)
        .map(|(_, c)| c)
        .chain(
            validations
                .iter()
                .flat_map(|v| std::iter::once(&v.expr).chain(&v.message_expr)),
        )
        .any(|c| c.reads_request);

    Ok(Policy {
        name,
        reads_request,
        failure_policy,
        match_constraints,
        param_kind,
        match_conditions,
        variable_idents: variables
            .iter()
            .map(|(name, _)| crate::compile::var_ident(name))
            .collect(),
        variables,
        validations,
        audit_annotations,
        needs,
        object: p,
    })
}

fn check_match_resources(
    m: &k8s_openapi::api::admissionregistration::v1::MatchResources,
    kind: &'static str,
    name: &str,
    path: &str,
) -> Result<(), LoadError> {
    match m.match_policy.as_deref() {
        None | Some("Exact") | Some("Equivalent") => {}
        Some(other) => {
            return Err(invalid(
                kind,
                name,
                format!("{path}.matchPolicy"),
                format!(
                    "Unsupported value: {other:?}: supported values: \"Equivalent\", \"Exact\""
                ),
            ));
        }
    }
    for (field, rules) in [
        ("resourceRules", &m.resource_rules),
        ("excludeResourceRules", &m.exclude_resource_rules),
    ] {
        for (i, r) in rules.iter().flatten().enumerate() {
            for op in r.operations.iter().flatten() {
                if !matches!(
                    op.as_str(),
                    "*" | "CREATE" | "UPDATE" | "DELETE" | "CONNECT"
                ) {
                    return Err(invalid(
                        kind,
                        name,
                        format!("{path}.{field}[{i}].operations"),
                        format!("Unsupported value: {op:?}"),
                    ));
                }
            }
            if let Some(scope) = &r.scope
                && !matches!(scope.as_str(), "*" | "Cluster" | "Namespaced")
            {
                return Err(invalid(
                    kind,
                    name,
                    format!("{path}.{field}[{i}].scope"),
                    format!("Unsupported value: {scope:?}"),
                ));
            }
        }
    }
    Ok(())
}

fn compile_binding(b: ValidatingAdmissionPolicyBinding) -> Result<Binding, LoadError> {
    const KIND: &str = "ValidatingAdmissionPolicyBinding";
    let name = b.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(invalid(KIND, &name, "metadata.name", "Required value"));
    }
    let spec = b
        .spec
        .clone()
        .ok_or_else(|| invalid(KIND, &name, "spec", "Required value"))?;
    let policy_name = spec.policy_name.clone().unwrap_or_default();
    if policy_name.is_empty() {
        return Err(invalid(KIND, &name, "spec.policyName", "Required value"));
    }
    let mut actions = ValidationActions::default();
    let list = spec.validation_actions.clone().unwrap_or_default();
    if list.is_empty() {
        return Err(invalid(
            KIND,
            &name,
            "spec.validationActions",
            "Required value",
        ));
    }
    for (i, a) in list.iter().enumerate() {
        let slot = match a.as_str() {
            "Deny" => &mut actions.deny,
            "Warn" => &mut actions.warn,
            "Audit" => &mut actions.audit,
            other => {
                return Err(invalid(
                    KIND,
                    &name,
                    format!("spec.validationActions[{i}]"),
                    format!(
                        "Unsupported value: {other:?}: supported values: \"Audit\", \"Deny\", \"Warn\""
                    ),
                ));
            }
        };
        if *slot {
            return Err(invalid(
                KIND,
                &name,
                format!("spec.validationActions[{i}]"),
                format!("Duplicate value: {a:?}"),
            ));
        }
        *slot = true;
    }
    if actions.deny && actions.warn {
        return Err(invalid(
            KIND,
            &name,
            "spec.validationActions",
            "Invalid value: \"Deny\" and \"Warn\" cannot be used together",
        ));
    }
    if let Some(m) = &spec.match_resources {
        check_match_resources(m, KIND, &name, "spec.matchResources")?;
    }
    if let Some(pr) = &spec.param_ref {
        let has_name = pr.name.as_ref().is_some_and(|n| !n.is_empty());
        if has_name == pr.selector.is_some() {
            return Err(invalid(
                KIND,
                &name,
                "spec.paramRef",
                "Invalid value: one of name or selector must be set",
            ));
        }
        match pr.parameter_not_found_action.as_deref() {
            Some("Allow") | Some("Deny") => {}
            None => {
                return Err(invalid(
                    KIND,
                    &name,
                    "spec.paramRef.parameterNotFoundAction",
                    "Required value",
                ));
            }
            Some(other) => {
                return Err(invalid(
                    KIND,
                    &name,
                    "spec.paramRef.parameterNotFoundAction",
                    format!("Unsupported value: {other:?}: supported values: \"Allow\", \"Deny\""),
                ));
            }
        }
    }
    Ok(Binding {
        name,
        policy_name,
        actions,
        match_resources: spec.match_resources.clone(),
        param_ref: spec.param_ref.clone(),
        object: b,
    })
}

/// The webhook shares one set between request threads.
const _: () = {
    const fn is<T: Send + Sync>() {}
    is::<PolicySet>()
};
