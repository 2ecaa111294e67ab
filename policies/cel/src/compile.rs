//! Compiling one CEL expression at load: parse, check every name it uses against what the API
//! server declares for a ValidatingAdmissionPolicy, and keep the shape its cost bound needs.

use crate::value::Extent;
use kube_cel::KubeCelExt;
use kube_cel::cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue, SelectExpr};
use kube_cel::cel::objects::{Key, OptionalValue};
use kube_cel::cel::parser::{Expression, Parser};
use kube_cel::cel::{Context, ExecutionError, FunctionContext, Program, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::{Mutex, OnceLock};

/// What a compile step refuses, before it is placed (policy, field path) by the loader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileFailure {
    /// 1-based line and column in the expression.
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// `true` when the API server accepts the expression but ck8s cannot evaluate it
    /// faithfully (e.g. `authorizer`).
    pub unsupported: bool,
}

/// The names an expression may use besides its comprehension variables.
#[derive(Clone, Debug)]
pub struct Scope {
    pub has_params: bool,
    /// Names of `variables.*` visible here (for a variable: those defined before it).
    pub variables: Vec<String>,
}

/// Which `variables.*` an expression reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum VarUse {
    #[default]
    None,
    Names(BTreeSet<String>),
    /// `variables[...]` with a computed key, or `variables` as a value.
    All,
}

/// One compiled expression.
pub struct Compiled {
    pub source: String,
    pub expr: Expression,
    pub var_use: VarUse,
    /// Whether it reads the request's inputs (`object`, `oldObject`, `request`,
    /// `namespaceObject`, `params`) itself, not only through variables: the cost bound
    /// counts their extent then, and only the variables' otherwise.
    pub reads_inputs: bool,
    /// Whether it reads `request` (built for the CEL values only when some expression does).
    pub reads_request: bool,
    /// The largest extent its cost estimate was found within the bound for: the estimate
    /// only grows with the extent, so a request within it need not estimate again.
    pub within_bound: Mutex<Option<Extent>>,
}

impl Compiled {
    /// Whether the cost estimate on `x` is within `limit`, estimated once per larger extent.
    pub fn within(&self, x: Extent, limit: f64) -> Result<(), f64> {
        let known = *self.within_bound.lock().unwrap_or_else(|p| p.into_inner());
        if known.is_some_and(|k| x.list <= k.list && x.string <= k.string && x.total <= k.total) {
            return Ok(());
        }
        let estimate = cost(&self.expr.expr, x);
        if estimate > limit {
            return Err(estimate);
        }
        let mut known = self.within_bound.lock().unwrap_or_else(|p| p.into_inner());
        *known = Some(match *known {
            Some(k) if k.list >= x.list && k.string >= x.string && k.total >= x.total => k,
            _ => x,
        });
        Ok(())
    }
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

const OPERATORS: &[&str] = &[
    "_?_:_",
    "_&&_",
    "_||_",
    "!_",
    "_-_",
    "_+_",
    "_*_",
    "_/_",
    "_%_",
    "_==_",
    "_!=_",
    "_>=_",
    "_<=_",
    "_>_",
    "_<_",
    "-_",
    "_[_]",
    "_[?_]",
    "_?._",
    "@in",
    "@not_strictly_false",
];

const ROOT_VARIABLES: &[&str] = &[
    "object",
    "oldObject",
    "request",
    "namespaceObject",
    "variables",
];

/// Parses and rewrites, without checking names.
pub fn parse_only(source: &str) -> Result<Compiled, CompileFailure> {
    parse(source)
}

fn parse(source: &str) -> Result<Compiled, CompileFailure> {
    let mut expr = parse_raw(source)?;
    rewrite_optional_select(&mut expr.expr);
    rewrite_or_value(&mut expr.expr);
    Ok(Compiled {
        source: source.to_string(),
        expr,
        var_use: VarUse::None,
        reads_inputs: true,
        reads_request: true,
        within_bound: Default::default(),
    })
}

fn parse_raw(source: &str) -> Result<Expression, CompileFailure> {
    Parser::new()
        .enable_optional_syntax(true)
        .parse(source)
        .map_err(|errs| {
            let first = errs.errors.first();
            CompileFailure {
                line: first.map(|e| e.pos.0.max(1) as usize).unwrap_or(1),
                column: first.map(|e| e.pos.1.max(1) as usize).unwrap_or(1),
                message: errs
                    .errors
                    .iter()
                    .map(|e| e.to_string().replace("\n| ", "\n | "))
                    .collect::<Vec<_>>()
                    .join("\n"),
                unsupported: false,
            }
        })
}

pub fn compile(source: &str, scope: &Scope) -> Result<Compiled, CompileFailure> {
    let mut expr = parse_raw(source)?;
    rewrite_optional_select(&mut expr.expr);
    rewrite_or_value(&mut expr.expr);
    let mut checker = Checker {
        source,
        scope,
        bound: Vec::new(),
        var_use: VarUse::None,
        reads_inputs: false,
        reads_request: false,
    };
    checker.walk(&expr.expr)?;
    rewrite_variables(&mut expr.expr);
    Ok(Compiled {
        source: source.to_string(),
        var_use: checker.var_use,
        reads_inputs: checker.reads_inputs,
        reads_request: checker.reads_request,
        expr,
        within_bound: Default::default(),
    })
}

struct Checker<'a> {
    source: &'a str,
    scope: &'a Scope,
    /// Comprehension variables in scope, innermost last.
    bound: Vec<String>,
    var_use: VarUse,
    reads_inputs: bool,
    reads_request: bool,
}

impl Checker<'_> {
    /// A failure at `name` (an identifier; a call's `(` with `call`; a field's `.` with
    /// `field`), worded like cel-go: `ERROR: <input>:L:C: message` and the line with a caret.
    fn fail(&self, name: &str, message: String, unsupported: bool) -> CompileFailure {
        self.fail_at(position_of(self.source, name), message, unsupported)
    }

    fn fail_call(&self, name: &str, message: String) -> CompileFailure {
        let (line, column) = position_of(self.source, name);
        let len = name.rsplit('.').next().unwrap_or(name).chars().count();
        self.fail_at((line, column + len), message, false)
    }

    fn fail_field(&self, field: &str, message: String) -> CompileFailure {
        let (line, column) = position_of(self.source, field);
        self.fail_at((line, column.saturating_sub(1).max(1)), message, false)
    }

    fn fail_at(
        &self,
        (line, column): (usize, usize),
        message: String,
        unsupported: bool,
    ) -> CompileFailure {
        let text = self.source.lines().nth(line - 1).unwrap_or("");
        CompileFailure {
            line,
            column,
            message: format!(
                "ERROR: <input>:{line}:{column}: {message}\n | {text}\n | {}^",
                ".".repeat(column - 1)
            ),
            unsupported,
        }
    }

    fn is_bound(&self, name: &str) -> bool {
        self.bound.iter().any(|b| b == name)
    }

    fn ident(&mut self, name: &str) -> Result<(), CompileFailure> {
        if self.is_bound(name) {
            return Ok(());
        }
        if name == "authorizer" {
            return Err(self.fail(
                name,
                "'authorizer' is not supported by ck8s: it needs the API server's authorizer"
                    .to_string(),
                true,
            ));
        }
        if name == "params" {
            if self.scope.has_params {
                self.reads_inputs = true;
                return Ok(());
            }
            return Err(self.fail(
                name,
                "undeclared reference to 'params' (in container '')".to_string(),
                false,
            ));
        }
        if name == "variables" {
            self.var_use = VarUse::All;
            return Ok(());
        }
        if ROOT_VARIABLES.contains(&name) {
            self.reads_inputs = true;
            self.reads_request |= name == "request";
            return Ok(());
        }
        Err(self.fail(
            name,
            format!("undeclared reference to '{name}' (in container '')"),
            false,
        ))
    }

    fn walk(&mut self, e: &Expr) -> Result<(), CompileFailure> {
        match e {
            Expr::Unspecified | Expr::Literal(_) => Ok(()),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(s) => {
                if let Expr::Ident(root) = &s.operand.expr
                    && root == "variables"
                    && !self.is_bound(root)
                {
                    if !self.scope.variables.iter().any(|v| v == &s.field) {
                        return Err(
                            self.fail_field(&s.field, format!("undefined field '{}'", s.field))
                        );
                    }
                    match &mut self.var_use {
                        VarUse::All => {}
                        VarUse::Names(set) => {
                            set.insert(s.field.clone());
                        }
                        none @ VarUse::None => {
                            *none = VarUse::Names(BTreeSet::from([s.field.clone()]))
                        }
                    }
                    return Ok(());
                }
                self.walk(&s.operand.expr)
            }
            Expr::Call(c) => {
                if let Some(t) = &c.target {
                    // `sets.contains(..)`: the qualified name was checked as a function.
                    let qualified = matches!(&t.expr, Expr::Ident(p)
                        if !self.is_bound(p) && !is_variable_name(p, self.scope));
                    if !qualified {
                        self.walk(&t.expr)?;
                    }
                }
                for a in &c.args {
                    self.walk(&a.expr)?;
                }
                if !OPERATORS.contains(&c.func_name.as_str()) {
                    self.function(&c.func_name, c.target.as_deref().map(|t| &t.expr))?;
                }
                Ok(())
            }
            Expr::Comprehension(c) => {
                self.walk(&c.iter_range.expr)?;
                self.walk(&c.accu_init.expr)?;
                let depth = self.bound.len();
                self.bound.push(c.accu_var.clone());
                self.bound.push(c.iter_var.clone());
                if let Some(v2) = &c.iter_var2 {
                    self.bound.push(v2.clone());
                }
                let r = self
                    .walk(&c.loop_cond.expr)
                    .and_then(|_| self.walk(&c.loop_step.expr))
                    .and_then(|_| self.walk(&c.result.expr));
                self.bound.truncate(depth);
                r
            }
            Expr::List(l) => {
                for x in &l.elements {
                    self.walk(&x.expr)?;
                }
                Ok(())
            }
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.walk(&me.key.expr)?;
                        self.walk(&me.value.expr)?;
                    }
                }
                Ok(())
            }
            Expr::Struct(s) => Err(self.fail(
                &s.type_name,
                format!(
                    "message construction '{} {{...}}' is not supported by ck8s",
                    s.type_name
                ),
                true,
            )),
        }
    }

    fn function(&self, name: &str, target: Option<&Expr>) -> Result<(), CompileFailure> {
        let full = match target {
            Some(Expr::Ident(prefix))
                if !self.is_bound(prefix) && !is_variable_name(prefix, self.scope) =>
            {
                format!("{prefix}.{name}")
            }
            _ => name.to_string(),
        };
        if UNSUPPORTED_FUNCTIONS.contains(&full.as_str()) {
            let f = self.fail_call(
                name,
                format!("'{full}' is not supported by ck8s (the API server has it; ck8s cannot evaluate it faithfully)"),
            );
            return Err(CompileFailure {
                unsupported: true,
                ..f
            });
        }
        if let Some(Expr::Ident(prefix)) = target
            && !self.is_bound(prefix)
            && !is_variable_name(prefix, self.scope)
        {
            let qualified = format!("{prefix}.{name}");
            if known_function(&qualified) {
                return Ok(());
            }
            // As cel-go: the namespace is an undeclared variable, the function is unknown.
            let first = self.fail(
                prefix,
                format!("undeclared reference to '{prefix}' (in container '')"),
                false,
            );
            let second = self.fail_call(
                name,
                format!("undeclared reference to '{name}' (in container '')"),
            );
            return Err(CompileFailure {
                message: format!("{}\n{}", first.message, second.message),
                ..first
            });
        }
        if known_function(name) {
            Ok(())
        } else {
            Err(self.fail_call(
                name,
                format!("undeclared reference to '{name}' (in container '')"),
            ))
        }
    }
}

fn is_variable_name(name: &str, scope: &Scope) -> bool {
    ROOT_VARIABLES.contains(&name) || (name == "params" && scope.has_params) || name == "authorizer"
}

/// The function `a.?b` is rewritten to (see [`register`]).
pub const OPT_SELECT: &str = "__ck8s_optional_select";

/// `a.?b` in the `cel` crate 0.13 fails on a missing key instead of giving `optional.none()`;
/// it is rewritten to a call of [`OPT_SELECT`], which follows the CEL specification.
fn rewrite_optional_select(e: &mut Expr) {
    if let Expr::Call(c) = e
        && c.target.is_none()
    {
        if c.func_name == "_?._" && c.args.len() == 2 {
            c.func_name = OPT_SELECT.to_string();
        }
        if c.func_name == "string" && c.args.len() == 1 {
            c.func_name = STRING.to_string();
        }
    }
    for_each_child(e, rewrite_optional_select);
}

/// Calls `f` on each direct subexpression of `e`: the rewrites recurse through it.
fn for_each_child(e: &mut Expr, mut f: impl FnMut(&mut Expr)) {
    match e {
        Expr::Call(c) => {
            if let Some(t) = &mut c.target {
                f(&mut t.expr);
            }
            c.args.iter_mut().for_each(|a| f(&mut a.expr));
        }
        Expr::Select(s) => f(&mut s.operand.expr),
        Expr::Comprehension(c) => [
            &mut c.iter_range,
            &mut c.accu_init,
            &mut c.loop_cond,
            &mut c.loop_step,
            &mut c.result,
        ]
        .into_iter()
        .for_each(|x| f(&mut x.expr)),
        Expr::List(l) => l.elements.iter_mut().for_each(|x| f(&mut x.expr)),
        Expr::Map(m) => {
            for en in &mut m.entries {
                if let EntryExpr::MapEntry(me) = &mut en.expr {
                    f(&mut me.key.expr);
                    f(&mut me.value.expr);
                }
            }
        }
        _ => {}
    }
}

/// The function `string(x)` is rewritten to: cel-go's conversions of bool, timestamp and
/// duration (the `cel` crate refuses a bool and writes the others differently), the rest by the
/// evaluator's own `string()`.
pub const STRING: &str = "__ck8s_string";

fn string_of(ftx: &FunctionContext, v: Value) -> Result<Value, ExecutionError> {
    let s = match &v {
        Value::Bool(b) => b.to_string(),
        // RFC 3339 with `Z` for UTC, as cel-go writes it.
        Value::Timestamp(t) => match t.to_rfc3339() {
            s if s.ends_with("+00:00") => format!("{}Z", &s[..s.len() - 6]),
            s => s,
        },
        Value::Duration(d) => {
            let nanos = d
                .num_nanoseconds()
                .unwrap_or(d.num_seconds().saturating_mul(1_000_000_000));
            let (secs, frac) = (nanos / 1_000_000_000, (nanos % 1_000_000_000).abs());
            if frac == 0 {
                format!("{secs}s")
            } else {
                let sign = if nanos < 0 && secs == 0 { "-" } else { "" };
                let f = format!("{frac:09}");
                format!("{sign}{secs}.{}s", f.trim_end_matches('0'))
            }
        }
        _ => {
            static CALL: OnceLock<Expression> = OnceLock::new();
            let call = CALL.get_or_init(|| {
                Parser::new()
                    .parse("string(__ck8s_value)")
                    .expect("a valid expression")
            });
            let mut inner = ftx.ptx.new_inner_scope();
            inner.add_variable_from_value("__ck8s_value", v);
            return Value::resolve(call, &inner);
        }
    };
    Ok(Value::String(Arc::new(s)))
}

/// The context variable `variables.NAME` is rewritten to: each variable is bound once, when
/// computed, and read without copying the `variables` map (a map field read copies the value
/// in the `cel` crate).
pub fn var_ident(name: &str) -> String {
    format!("__ck8s_var_{name}")
}

fn rewrite_variables(e: &mut Expr) {
    if let Expr::Select(s) = e
        && !s.test
        && matches!(&s.operand.expr, Expr::Ident(v) if v == "variables")
    {
        *e = Expr::Ident(var_ident(&s.field));
        return;
    }
    // A comprehension variable named `variables` shadows the policy's.
    if let Expr::Comprehension(c) = e
        && (c.iter_var == "variables" || c.accu_var == "variables")
    {
        return;
    }
    for_each_child(e, rewrite_variables);
}

/// `x.?a.?b.orValue(y)` → `has(x.a) && has(x.a.b) ? x.a.b : y`: the same value without the
/// optional's function calls, which copy their operand (the whole `x`) in the `cel` crate.
fn rewrite_or_value(e: &mut Expr) {
    if let Expr::Call(c) = e
        && c.func_name == "orValue"
        && c.args.len() == 1
        && let Some(t) = &c.target
    {
        // The chain of optional selects under the target, innermost first.
        let mut fields = Vec::new();
        let mut cur = &t.expr;
        while let Expr::Call(o) = cur
            && o.func_name == OPT_SELECT
            && o.args.len() == 2
            && let Expr::Literal(LiteralValue::String(f)) = &o.args[1].expr
        {
            fields.push(f.inner().to_string());
            cur = &o.args[0].expr;
        }
        let base_ok = !fields.is_empty()
            && !matches!(cur, Expr::Ident(v) if v == "variables")
            && !matches!(cur, Expr::Call(o) if o.func_name == OPT_SELECT);
        if base_ok {
            fields.reverse();
            let base = cur.clone();
            let id = t.id;
            let mut default = c.args[0].clone();
            rewrite_or_value(&mut default.expr);
            let mut base_ided = IdedExpr { id, expr: base };
            rewrite_or_value(&mut base_ided.expr);
            let mut cond: Option<IdedExpr> = None;
            let mut path = base_ided;
            for f in fields {
                let test = IdedExpr {
                    id,
                    expr: Expr::Select(SelectExpr {
                        operand: Box::new(path.clone()),
                        field: f.clone(),
                        test: true,
                    }),
                };
                cond = Some(match cond {
                    None => test,
                    Some(prev) => IdedExpr {
                        id,
                        expr: Expr::Call(CallExpr {
                            func_name: "_&&_".to_string(),
                            target: None,
                            args: vec![prev, test],
                        }),
                    },
                });
                path = IdedExpr {
                    id,
                    expr: Expr::Select(SelectExpr {
                        operand: Box::new(path),
                        field: f,
                        test: false,
                    }),
                };
            }
            *e = Expr::Call(CallExpr {
                func_name: "_?_:_".to_string(),
                target: None,
                args: vec![cond.expect("one field at least"), path, default],
            });
            return;
        }
    }
    for_each_child(e, rewrite_or_value);
}

/// Registers what ck8s adds to the evaluator's functions.
pub fn register(ctx: &mut Context<'_>) {
    ctx.add_function(STRING, string_of);
    ctx.add_function("dyn", |v: Value| -> Result<Value, ExecutionError> { Ok(v) });
    ctx.add_function("bool", |v: Value| -> Result<Value, ExecutionError> {
        match &v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) => match s.as_str() {
                "1" | "t" | "T" | "TRUE" | "True" | "true" => Ok(Value::Bool(true)),
                "0" | "f" | "F" | "FALSE" | "False" | "false" => Ok(Value::Bool(false)),
                other => Err(ExecutionError::function_error(
                    "bool",
                    format!("type conversion error from 'string' to 'bool': {other:?}"),
                )),
            },
            other => Err(ExecutionError::function_error(
                "bool",
                format!("no such overload: bool({})", crate::value::type_name(other)),
            )),
        }
    });
    ctx.add_function(
        OPT_SELECT,
        |operand: Value, field: Arc<String>| -> Result<Value, ExecutionError> {
            let none = || Value::Opaque(Arc::new(OptionalValue::none()));
            let target = match &operand {
                Value::Opaque(o) => match o.downcast_ref::<OptionalValue>() {
                    Some(opt) => match opt.value() {
                        None => return Ok(none()),
                        Some(v) => v.clone(),
                    },
                    None => operand.clone(),
                },
                _ => operand.clone(),
            };
            match &target {
                Value::Map(m) => Ok(match m.map.get(&Key::String(field)) {
                    Some(v) => Value::Opaque(Arc::new(OptionalValue::of(v.clone()))),
                    None => none(),
                }),
                other => Err(ExecutionError::function_error(
                    "_?._",
                    format!(
                        "no such overload: {}.?{field}",
                        crate::value::type_name(other)
                    ),
                )),
            }
        },
    );
}

/// Functions of `kube-cel` the API server's CEL environment for admission policies does not
/// have (Kubernetes v1.34, found by `tests/tests/real_cel.rs`): refused as the API server refuses
/// them, as undeclared references.
const NOT_IN_KUBERNETES: &[&str] = &[
    "reverse",
    "slice",
    "flatten",
    "distinct",
    "sort",
    "sortBy",
    "lists.range",
    "sign",
    "base64.encode",
    "base64.decode",
    "jsonpatch.escapeKey",
];

/// Functions the API server has that ck8s does not evaluate faithfully: refused at load as
/// unsupported. `type()` needs type values, which the `cel` crate does not have; kube-cel's
/// `format.named()` returns the format itself where Kubernetes returns an optional.
const UNSUPPORTED_FUNCTIONS: &[&str] = &["type", "format.named"];

/// Whether the evaluator has a function of this name (plain or qualified, e.g.
/// `sets.contains`). Found by asking the interpreter once per name: a call of an unknown
/// function fails with "undeclared reference" to that very name.
pub fn known_function(name: &str) -> bool {
    if NOT_IN_KUBERNETES.contains(&name) || name.starts_with("math.") {
        return false;
    }
    static CACHE: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(&k) = cache.lock().expect("not poisoned").get(name) {
        return k;
    }
    let known = probe(name);
    cache
        .lock()
        .expect("not poisoned")
        .insert(name.to_string(), known);
    known
}

fn probe(name: &str) -> bool {
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return false;
    }
    let Ok(program) = Program::compile(&format!("{name}()")) else {
        return false;
    };
    let mut ctx = Context::default().with_all();
    register(&mut ctx);
    let (prefix, last) = match name.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, name),
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| program.execute(&ctx)));
    match outcome {
        Err(_) => true,
        Ok(Err(ExecutionError::UndeclaredReference(r))) => {
            // `ns.f()`: the qualified function is missing when the interpreter fell back to
            // `f` on the target `ns` (an undeclared variable) or found neither.
            !(r.as_str() == last || Some(r.as_str()) == prefix)
        }
        Ok(_) => true,
    }
}

/// 1-based (line, column) of the first occurrence of `name` as a whole token.
fn position_of(source: &str, name: &str) -> (usize, usize) {
    let bytes = source.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut start = 0;
    let mut found = None;
    while let Some(i) = source[start..].find(name) {
        let at = start + i;
        let before = at == 0 || !is_ident(bytes[at - 1]);
        let end = at + name.len();
        let after = end >= bytes.len() || !is_ident(bytes[end]);
        if before && after {
            found = Some(at);
            break;
        }
        start = at + name.len().max(1);
    }
    let at = found.unwrap_or(0);
    let line = source[..at].matches('\n').count() + 1;
    let column = at - source[..at].rfind('\n').map(|p| p + 1).unwrap_or(0) + 1;
    (line, column)
}

/// An upper bound of the work an expression does on inputs of the given extent, compared with
/// [`crate::Limits::cost`] before the evaluation starts: each node counts once per time it
/// runs; a comprehension's body runs once per element of its range, at most the largest
/// collection each time, and in all at most every element of the inputs once per run of an
/// enclosing loop when its range is inside that loop's element (`c.env` in
/// `containers.map(c, ...)`); a function that walks a string costs its length, one that may
/// walk a collection its size too.
pub fn cost(e: &Expr, x: Extent) -> f64 {
    Cost {
        x,
        bound: Vec::new(),
    }
    .of(e, 1.0)
}

struct Cost {
    x: Extent,
    /// Iteration variables in scope, innermost last, each with the number of runs over
    /// distinct parts of the inputs of the comprehension that binds it.
    bound: Vec<(String, f64)>,
}

impl Cost {
    /// The work of `e` run `m` times.
    fn of(&mut self, e: &Expr, m: f64) -> f64 {
        let l = self.x.list.max(1) as f64;
        let s = self.x.string.max(1) as f64;
        match e {
            Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) | Expr::Struct(_) => m,
            Expr::Select(sel) => m + self.of(&sel.operand.expr, m),
            Expr::Call(c) => {
                let own = match c.func_name.as_str() {
                    "_&&_"
                    | "_||_"
                    | "!_"
                    | "_?_:_"
                    | "-_"
                    | "_<_"
                    | "_<=_"
                    | "_>_"
                    | "_>=_"
                    | "_-_"
                    | "_*_"
                    | "_/_"
                    | "_%_"
                    | "_[_]"
                    | "_[?_]"
                    | "_?._"
                    | "@not_strictly_false" => 1.0,
                    "_==_" | "_!=_" | "@in" | "_+_" | "size" => 1.0 + l.max(s),
                    "startsWith" | "endsWith" | "contains" | "matches" | "split" | "lowerAscii"
                    | "upperAscii" | "replace" | "substring" | "trim" | "charAt" => 1.0 + s,
                    _ => 1.0 + l + s,
                };
                let target = match &c.target {
                    Some(t) => self.of(&t.expr, m),
                    None => 0.0,
                };
                m * own + target + c.args.iter().map(|a| self.of(&a.expr, m)).sum::<f64>()
            }
            Expr::Comprehension(c) => {
                let setup = self.of(&c.iter_range.expr, m) + self.of(&c.accu_init.expr, m);
                let mut iterations = m * l;
                // Runs over distinct parts of the inputs: those of the enclosing loop whose
                // element this range is in (and so on outwards), or this loop's own runs.
                let mut distinct = m;
                if let Some(runs) = self
                    .bound
                    .iter()
                    .rev()
                    .find(|(var, _)| within(&c.iter_range.expr, var))
                    .map(|(_, runs)| *runs)
                {
                    iterations = iterations.min(runs * self.x.total.max(1) as f64);
                    distinct = runs;
                }
                let depth = self.bound.len();
                self.bound.push((c.iter_var.clone(), distinct));
                if let Some(v2) = &c.iter_var2 {
                    self.bound.push((v2.clone(), distinct));
                }
                let body = iterations
                    + self.of(&c.loop_cond.expr, iterations)
                    + self.of(&c.loop_step.expr, iterations);
                self.bound.truncate(depth);
                setup + body + self.of(&c.result.expr, m)
            }
            Expr::List(li) => m + li.elements.iter().map(|e| self.of(&e.expr, m)).sum::<f64>(),
            Expr::Map(map) => {
                m + map
                    .entries
                    .iter()
                    .map(|en| match &en.expr {
                        EntryExpr::MapEntry(me) => {
                            self.of(&me.key.expr, m) + self.of(&me.value.expr, m)
                        }
                        EntryExpr::StructField(f) => self.of(&f.value.expr, m),
                    })
                    .sum::<f64>()
            }
        }
    }
}

/// Whether `e` is a part of iteration variable `var`'s element: `var`, `var.a.b`, or a choice
/// between such parts and literals (`has(var.a) ? var.a : []`).
fn within(e: &Expr, var: &str) -> bool {
    match e {
        Expr::Ident(name) => name == var,
        Expr::Select(sel) => within(&sel.operand.expr, var),
        Expr::List(li) => li.elements.is_empty(),
        Expr::Call(c) if c.func_name == "_?_:_" && c.args.len() == 3 => {
            let branch =
                |e: &Expr| within(e, var) || matches!(e, Expr::List(li) if li.elements.is_empty());
            branch(&c.args[1].expr) && branch(&c.args[2].expr)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            has_params: false,
            variables: vec!["image".into()],
        }
    }

    #[test]
    fn names_are_checked() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("object.spec.replicas <= 5", Ok(())),
            (
                "has(object.spec.x) && object.spec.x.all(c, c.startsWith('a'))",
                Ok(()),
            ),
            ("variables.image.endsWith(':latest')", Ok(())),
            ("variables.other == 1", Err("undefined field 'other'")),
            ("params.x == 1", Err("undeclared reference to 'params'")),
            ("foo == 1", Err("undeclared reference to 'foo'")),
            (
                "object.x.nosuchfn()",
                Err("undeclared reference to 'nosuchfn'"),
            ),
            (
                "authorizer.group('').resource('x').check('get').allowed()",
                Err("'authorizer' is not supported"),
            ),
            ("sets.contains([1], [1])", Ok(())),
            (
                "sets.nosuch([1], [1])",
                Err("undeclared reference to 'nosuch'"),
            ),
            ("quantity('1Gi').isGreaterThan(quantity('1Mi'))", Ok(())),
            ("'a'.matches('^a$') && 'x,y'.split(',').size() == 2", Ok(())),
            (
                "object.metadata.labels.all(k, k.startsWith('a')) ? 1 : 2",
                Ok(()),
            ),
            ("[1,2].exists_one(x, x == 1)", Ok(())),
            ("object.?spec.orValue({}) != null", Ok(())),
        ];
        for (src, want) in cases {
            let got = compile(src, &scope()).map(|_| ()).map_err(|e| e.message);
            match (want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(w), Err(g)) if g.contains(w) => {}
                _ => panic!("{src}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn conversions_and_optionals_as_cel_go() {
        let cases = [
            ("string(true)", "true"),
            ("string(duration('90s'))", "90s"),
            ("string(duration('-1.25s'))", "-1.25s"),
            (
                "string(timestamp('2024-01-01T10:00:00Z'))",
                "2024-01-01T10:00:00Z",
            ),
            ("{'a': 1}.?b.orValue('none')", "none"),
            ("{'a': 'x'}.?a.orValue('none')", "x"),
            ("{'a': {}}.?a.?b.orValue('none')", "none"),
        ];
        for (src, want) in cases {
            let got = crate::evaluate_expression(src, &[]).unwrap();
            assert_eq!(got, Value::String(Arc::new(want.to_string())), "{src}");
        }
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = compile("object.spec.replicas >", &scope()).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.column > 1, "{e:?}");
        assert!(e.message.starts_with("ERROR: <input>:1:"), "{}", e.message);
    }

    #[test]
    fn position_of_tokens() {
        assert_eq!(position_of("a.foo + foo", "foo"), (1, 3));
        assert_eq!(position_of("x &&\n  bar(1)", "bar"), (2, 3));
        assert_eq!(position_of("foobar + bar", "bar"), (1, 10));
    }

    #[test]
    fn cost_grows_with_nesting() {
        let flat = compile("object.a.all(x, x > 1)", &scope()).unwrap();
        let nested = compile("object.a.all(x, object.a.all(y, x != y))", &scope()).unwrap();
        let small = Extent {
            list: 10,
            string: 10,
            total: 10,
        };
        let big = Extent {
            list: 10_000,
            string: 10,
            total: 10_000,
        };
        assert!(cost(&flat.expr.expr, big) < 1e6);
        assert!(cost(&nested.expr.expr, small) < 1e6);
        assert!(cost(&nested.expr.expr, big) > 1e8);
    }

    #[test]
    fn a_loop_over_a_part_of_the_outer_element_visits_each_input_element_once() {
        // 100 containers of 100 env entries each: 10,000 entries in all.
        let x = Extent {
            list: 100,
            string: 30,
            total: 10_100,
        };
        let inner = compile(
            "object.containers.all(c, c.env.all(e, e.name.startsWith('A')))",
            &scope(),
        )
        .unwrap();
        let independent = compile(
            "object.containers.all(c, object.env.all(e, e.name.startsWith('A')))",
            &scope(),
        )
        .unwrap();
        let inner = cost(&inner.expr.expr, x);
        let independent = cost(&independent.expr.expr, x);
        // 10,100 visits of about 35 each, against 100 × 100 × the same: no more, but a
        // third loop multiplies the independent one and not the inner one.
        assert!(inner <= independent, "{inner} {independent}");
        let inner3 = compile(
            "object.containers.all(c, c.env.all(e, e.values.all(v, v.startsWith('A'))))",
            &scope(),
        )
        .unwrap();
        let independent3 = compile(
            "object.containers.all(c, object.env.all(e, object.values.all(v, v.startsWith('A'))))",
            &scope(),
        )
        .unwrap();
        let (inner3, independent3) = (cost(&inner3.expr.expr, x), cost(&independent3.expr.expr, x));
        assert!(inner3 < 2e6, "{inner3}");
        assert!(independent3 > 3e7, "{independent3}");
    }
}
