//! The fast path: the common core of CEL evaluated on shared values.
//!
//! The `cel` crate (0.13) copies the selected part of a value on every field read, every
//! comprehension step and every function call (its values are being moved to a new
//! representation, and each operation converts between the two). On a 4 KB Deployment that is
//! most of the cost of a policy. This evaluator walks the same parsed expressions over
//! `cel::Value`, whose lists, maps and strings are reference-counted: a field read is a pointer
//! copy.
//!
//! It is an accelerator, not a second semantics: it answers only where its result is the
//! `cel` crate's by construction (the constructs and overloads below, on the types they are
//! defined for) and returns `None` everywhere else, on any error included; the caller then
//! evaluates the expression with the `cel` crate, which gives the value or the error (with its
//! exact wording) as before. `tests::the_fast_path_agrees_with_the_cel_crate` holds the two
//! to the same result on every expression of the corpus and every object.

use kube_cel::cel::common::ast::{EntryExpr, Expr, LiteralValue};
use kube_cel::cel::objects::{Key, KeyRef, Map, OptionalValue};
use kube_cel::cel::{IdedExpr, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::compile::OPT_SELECT;

/// The names in scope, innermost last: the request's inputs, the variables computed so far,
/// and comprehension variables while a loop runs.
#[derive(Default)]
pub struct Env {
    names: Vec<(String, Value)>,
}

impl Env {
    pub fn bind(&mut self, name: impl Into<String>, value: Value) {
        self.names.push((name.into(), value));
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.names
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The bindings from the `from`-th on, the innermost of each name last (for the `cel`
    /// crate's context on the slow path).
    pub fn bindings_from(&self, from: usize) -> impl Iterator<Item = (&str, &Value)> {
        self.names[from.min(self.names.len())..]
            .iter()
            .map(|(n, v)| (n.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Drops the bindings made after [`Env::len`] was `len`.
    pub fn truncate(&mut self, len: usize) {
        self.names.truncate(len);
    }
}

/// The value of `e`, or `None` where only the `cel` crate can say.
pub fn eval(e: &IdedExpr, env: &mut Env) -> Option<Value> {
    match &e.expr {
        Expr::Literal(l) => literal(l),
        Expr::Ident(name) => env.get(name).cloned(),
        Expr::Select(s) => {
            let operand = eval(&s.operand, env)?;
            let Value::Map(m) = operand else { return None };
            let key = KeyRef::String(s.field.as_str());
            if s.test {
                Some(Value::Bool(m.get(&key).is_some()))
            } else {
                m.get(&key).cloned()
            }
        }
        Expr::List(l) => {
            if !l.optional_indices.is_empty() {
                return None;
            }
            let items = l
                .elements
                .iter()
                .map(|x| eval(x, env))
                .collect::<Option<Vec<_>>>()?;
            Some(Value::List(Arc::new(items)))
        }
        Expr::Map(m) => {
            let mut out = HashMap::with_capacity(m.entries.len());
            for entry in &m.entries {
                let EntryExpr::MapEntry(entry) = &entry.expr else {
                    return None;
                };
                if entry.optional {
                    return None;
                }
                let Value::String(k) = eval(&entry.key, env)? else {
                    return None;
                };
                let v = eval(&entry.value, env)?;
                if out.insert(Key::String(k), v).is_some() {
                    return None; // a repeated key: the cel crate's call
                }
            }
            Some(Value::Map(Map { map: Arc::new(out) }))
        }
        Expr::Comprehension(c) => {
            if c.iter_var2.is_some() {
                return None;
            }
            let items: Vec<Value> = match eval(&c.iter_range, env)? {
                Value::List(l) => l.as_ref().clone(),
                Value::Map(m) => m
                    .map
                    .keys()
                    .map(|k| match k {
                        Key::String(s) => Some(Value::String(s.clone())),
                        Key::Int(i) => Some(Value::Int(*i)),
                        Key::Uint(u) => Some(Value::UInt(*u)),
                        Key::Bool(b) => Some(Value::Bool(*b)),
                    })
                    .collect::<Option<Vec<_>>>()?,
                _ => return None,
            };
            let accu = eval(&c.accu_init, env)?;
            let depth = env.names.len();
            env.bind(c.accu_var.clone(), accu);
            // As the cel crate: the loop variable, once bound, stays bound (to the last item)
            // for the condition and the result.
            let result = (|| {
                for item in items {
                    match eval(&c.loop_cond, env)? {
                        Value::Bool(true) => {}
                        Value::Bool(false) => break,
                        _ => return None,
                    }
                    if env.names.len() == depth + 1 {
                        env.bind(c.iter_var.clone(), item);
                    } else {
                        env.names[depth + 1].1 = item;
                    }
                    let accu = eval(&c.loop_step, env)?;
                    env.names[depth].1 = accu;
                }
                eval(&c.result, env)
            })();
            env.names.truncate(depth);
            result
        }
        Expr::Call(call) => {
            let name = call.func_name.as_str();
            match (&call.target, call.args.as_slice()) {
                (None, [a]) => unary(name, a, env),
                (None, [a, b]) => binary(name, a, b, env),
                (None, [c, t, f]) if name == "_?_:_" => match eval(c, env)? {
                    Value::Bool(true) => eval(t, env),
                    Value::Bool(false) => eval(f, env),
                    _ => None,
                },
                (Some(target), args) => method(name, target, args, env),
                _ => None,
            }
        }
        Expr::Struct(_) | Expr::Unspecified => None,
    }
}

fn literal(l: &LiteralValue) -> Option<Value> {
    Some(match l {
        LiteralValue::Boolean(b) => Value::Bool(*b.inner()),
        LiteralValue::Int(i) => Value::Int(*i.inner()),
        LiteralValue::UInt(u) => Value::UInt(*u.inner()),
        LiteralValue::Double(d) => Value::Float(*d.inner()),
        LiteralValue::String(s) => Value::String(Arc::new(s.inner().to_string())),
        LiteralValue::Null => Value::Null,
        LiteralValue::Bytes(_) => return None,
    })
}

fn unary(name: &str, a: &IdedExpr, env: &mut Env) -> Option<Value> {
    let v = eval(a, env)?;
    match (name, v) {
        ("!_", Value::Bool(b)) => Some(Value::Bool(!b)),
        ("-_", Value::Int(i)) => i.checked_neg().map(Value::Int),
        ("@not_strictly_false", Value::Bool(b)) => Some(Value::Bool(b)),
        ("size", v) => size(&v),
        _ => None,
    }
}

/// Equality where both sides have the same primitive type (the cel crate's heterogeneous
/// and container equality is left to it).
fn equal(a: &Value, b: &Value) -> Option<bool> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x == y),
        (Value::Int(x), Value::Int(y)) => Some(x == y),
        (Value::UInt(x), Value::UInt(y)) => Some(x == y),
        (Value::Bool(x), Value::Bool(y)) => Some(x == y),
        (Value::Null, Value::Null) => Some(true),
        _ => None,
    }
}

fn binary(name: &str, a: &IdedExpr, b: &IdedExpr, env: &mut Env) -> Option<Value> {
    // The logical operators decide on their left side alone when they can (errors on either
    // side, which CEL may absorb, go to the cel crate).
    match name {
        "_&&_" | "_||_" => {
            let stop = name == "_||_";
            return match eval(a, env)? {
                Value::Bool(l) if l == stop => Some(Value::Bool(stop)),
                Value::Bool(_) => match eval(b, env)? {
                    Value::Bool(r) => Some(Value::Bool(r)),
                    _ => None,
                },
                _ => None,
            };
        }
        _ if name == OPT_SELECT => {
            let Expr::Literal(LiteralValue::String(field)) = &b.expr else {
                return None;
            };
            let operand = eval(a, env)?;
            let target = match &operand {
                Value::Opaque(o) => match o.downcast_ref::<OptionalValue>() {
                    Some(opt) => match opt.value() {
                        None => return Some(optional(None)),
                        Some(v) => v.clone(),
                    },
                    None => return None,
                },
                _ => operand,
            };
            let Value::Map(m) = target else { return None };
            return Some(optional(m.get(&KeyRef::String(field.inner())).cloned()));
        }
        _ => {}
    }
    // Against a string literal (`e.name == 'X'`, `v in ['a', 'b']`): compared in place.
    if matches!(name, "_==_" | "_!=_") {
        fn literal(x: &IdedExpr) -> Option<&str> {
            match &x.expr {
                Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
                _ => None,
            }
        }
        if let Some((lit, other)) = literal(b)
            .map(|l| (l, a))
            .or_else(|| literal(a).map(|l| (l, b)))
        {
            let Value::String(v) = eval(other, env)? else {
                return None;
            };
            return Some(Value::Bool((v.as_str() == lit) == (name == "_==_")));
        }
    }
    if name == "@in"
        && let Expr::List(list) = &b.expr
        && list.optional_indices.is_empty()
        && list
            .elements
            .iter()
            .all(|x| matches!(x.expr, Expr::Literal(LiteralValue::String(_))))
    {
        let Value::String(v) = eval(a, env)? else {
            return None;
        };
        return Some(Value::Bool(list.elements.iter().any(|x| {
            matches!(&x.expr, Expr::Literal(LiteralValue::String(s)) if s.inner() == v.as_str())
        })));
    }
    let l = eval(a, env)?;
    let r = eval(b, env)?;
    use Value::{Int, List, String as Str, UInt};
    match (name, &l, &r) {
        ("_==_", _, _) => equal(&l, &r).map(Value::Bool),
        ("_!=_", _, _) => equal(&l, &r).map(|e| Value::Bool(!e)),
        ("_<_" | "_<=_" | "_>_" | "_>=_", _, _) => {
            let ord = match (&l, &r) {
                (Int(x), Int(y)) => x.cmp(y),
                (UInt(x), UInt(y)) => x.cmp(y),
                (Str(x), Str(y)) => x.as_str().cmp(y.as_str()),
                _ => return None,
            };
            Some(Value::Bool(match name {
                "_<_" => ord.is_lt(),
                "_<=_" => ord.is_le(),
                "_>_" => ord.is_gt(),
                _ => ord.is_ge(),
            }))
        }
        ("_+_", Int(x), Int(y)) => x.checked_add(*y).map(Int),
        ("_-_", Int(x), Int(y)) => x.checked_sub(*y).map(Int),
        ("_*_", Int(x), Int(y)) => x.checked_mul(*y).map(Int),
        ("_+_", UInt(x), UInt(y)) => x.checked_add(*y).map(UInt),
        ("_+_", Str(x), Str(y)) => {
            let mut s = String::with_capacity(x.len() + y.len());
            s.push_str(x);
            s.push_str(y);
            Some(Str(Arc::new(s)))
        }
        ("_+_", List(x), List(y)) => {
            let mut v = Vec::with_capacity(x.len() + y.len());
            v.extend(x.iter().cloned());
            v.extend(y.iter().cloned());
            Some(List(Arc::new(v)))
        }
        ("_[_]", List(x), Int(i)) => usize::try_from(*i).ok().and_then(|i| x.get(i)).cloned(),
        ("_[_]", Value::Map(m), Str(k)) => m.get(&KeyRef::String(k.as_str())).cloned(),
        ("@in", _, List(items)) => {
            let mut found = false;
            for item in items.iter() {
                found |= equal(&l, item)?;
            }
            Some(Value::Bool(found))
        }
        ("@in", Str(k), Value::Map(m)) => {
            Some(Value::Bool(m.get(&KeyRef::String(k.as_str())).is_some()))
        }
        _ => None,
    }
}

/// A string operand: a literal read in place (no copy per evaluation), or a computed string.
enum Str<'e> {
    Literal(&'e str),
    Value(Arc<String>),
}

impl Str<'_> {
    fn as_str(&self) -> &str {
        match self {
            Str::Literal(s) => s,
            Str::Value(s) => s.as_str(),
        }
    }
}

/// `e` as a string, `None` when it is not one.
fn string<'e>(e: &'e IdedExpr, env: &mut Env) -> Option<Str<'e>> {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(Str::Literal(s.inner())),
        _ => match eval(e, env)? {
            Value::String(s) => Some(Str::Value(s)),
            _ => None,
        },
    }
}

fn optional(v: Option<Value>) -> Value {
    Value::Opaque(Arc::new(match v {
        Some(v) => OptionalValue::of(v),
        None => OptionalValue::none(),
    }))
}

/// `size`, as the cel crate counts: bytes of a string, elements of a list or map.
fn size(v: &Value) -> Option<Value> {
    let n = match v {
        Value::String(s) => s.len(),
        Value::List(l) => l.len(),
        Value::Map(m) => m.map.len(),
        _ => return None,
    };
    Some(Value::Int(n as i64))
}

fn method(name: &str, target: &IdedExpr, args: &[IdedExpr], env: &mut Env) -> Option<Value> {
    // `strings.quote(...)` and the like are qualified names, not methods.
    if matches!(&target.expr, Expr::Ident(i) if env.get(i).is_none()) {
        return None;
    }
    let this = eval(target, env)?;
    use Value::{List, String as Str};
    // The string methods: their argument read in place when it is a literal.
    if let (Str(s), [arg]) = (&this, args)
        && matches!(
            name,
            "startsWith" | "endsWith" | "contains" | "matches" | "split"
        )
    {
        let arg = string(arg, env)?;
        let p = arg.as_str();
        return match name {
            "startsWith" => Some(Value::Bool(s.starts_with(p))),
            "endsWith" => Some(Value::Bool(s.ends_with(p))),
            "contains" => Some(Value::Bool(s.contains(p))),
            "matches" => matches(s, p).map(Value::Bool),
            _ => Some(List(Arc::new(
                s.split(p)
                    .map(|part| Str(Arc::new(part.to_string())))
                    .collect(),
            ))),
        };
    }
    let args = args
        .iter()
        .map(|a| eval(a, env))
        .collect::<Option<Vec<_>>>()?;
    match (name, &this, args.as_slice()) {
        ("size", _, []) => size(&this),
        // kube-cel's string library, as it implements them.
        ("trim", Str(s), []) => Some(Str(Arc::new(s.trim().to_string()))),
        ("lowerAscii", Str(s), []) => Some(Str(Arc::new(s.to_ascii_lowercase()))),
        ("upperAscii", Str(s), []) => Some(Str(Arc::new(s.to_ascii_uppercase()))),
        ("join", List(items), [] | [Str(_)]) => {
            let sep = match args.first() {
                Some(Str(s)) => s.as_str(),
                _ => "",
            };
            let parts = items
                .iter()
                .map(|v| match v {
                    Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Str(Arc::new(parts.join(sep))))
        }
        _ => None,
    }
}

/// `matches` with the regex compiled once per thread and pattern (the cel crate compiles it
/// on every call); the same `regex` crate decides.
fn matches(s: &str, pattern: &str) -> Option<bool> {
    thread_local! {
        static COMPILED: RefCell<HashMap<String, Option<regex::Regex>>> = RefCell::new(HashMap::new());
    }
    COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() > 256 {
            cache.clear(); // bounded: patterns built from request data cannot grow it
        }
        cache
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern).ok())
            .as_ref()
            .map(|re| re.is_match(s))
    })
}

/// The fast path held to the `cel` crate's results: with [`check::start`], every expression a
/// policy evaluates on this thread is evaluated both ways and compared.
#[cfg(test)]
pub mod check {
    use super::*;

    #[derive(Default, Debug)]
    pub struct Log {
        /// Evaluations the fast path answered / left to the cel crate.
        pub fast: usize,
        pub slow: usize,
        /// Sources of the expressions left to the cel crate although it found a value.
        pub slow_sources: std::collections::BTreeSet<String>,
        /// `(source, fast, cel crate)` where they differ.
        pub differences: Vec<(String, String, String)>,
    }

    thread_local! {
        static LOG: RefCell<Option<Log>> = const { RefCell::new(None) };
    }

    pub fn start() {
        LOG.with(|l| *l.borrow_mut() = Some(Log::default()));
    }

    pub fn finish() -> Log {
        LOG.with(|l| l.borrow_mut().take())
            .expect("check::start first")
    }

    pub fn record(
        source: &str,
        fast: Option<&Value>,
        slow: impl FnOnce() -> Result<Value, String>,
    ) {
        if !LOG.with(|l| l.borrow().is_some()) {
            return;
        }
        let slow = slow();
        LOG.with(|l| {
            let mut l = l.borrow_mut();
            let log = l.as_mut().unwrap();
            match (fast, &slow) {
                (None, Ok(_)) => {
                    log.slow += 1;
                    log.slow_sources.insert(source.to_string());
                }
                (None, Err(_)) => log.slow += 1,
                (Some(f), Ok(s)) if same(f, s) => log.fast += 1,
                (Some(f), s) => {
                    log.differences
                        .push((source.to_string(), format!("{f:?}"), format!("{s:?}")))
                }
            }
        });
    }

    /// Equal values of equal types (the crate's `==` equates numbers across types).
    pub fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::List(x), Value::List(y)) => {
                x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| same(a, b))
            }
            (Value::Map(x), Value::Map(y)) => {
                x.map.len() == y.map.len()
                    && x.map
                        .iter()
                        .all(|(k, v)| y.map.get(k).is_some_and(|w| same(v, w)))
            }
            (Value::Opaque(x), Value::Opaque(y)) => {
                match (
                    x.downcast_ref::<OptionalValue>(),
                    y.downcast_ref::<OptionalValue>(),
                ) {
                    (Some(x), Some(y)) => match (x.value(), y.value()) {
                        (Some(a), Some(b)) => same(a, b),
                        (None, None) => true,
                        _ => false,
                    },
                    _ => false,
                }
            }
            (Value::Int(x), Value::Int(y)) => x == y,
            (Value::UInt(x), Value::UInt(y)) => x == y,
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::String(x), Value::String(y)) => x == y,
            (Value::Bool(x), Value::Bool(y)) => x == y,
            (Value::Null, Value::Null) => true,
            _ => false,
        }
    }
}
