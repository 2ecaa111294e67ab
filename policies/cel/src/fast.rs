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

use crate::json::Json;
use kube_cel::cel::common::ast::{EntryExpr, Expr, LiteralValue};
use kube_cel::cel::objects::{Key, KeyRef, Map, OptionalValue};
use kube_cel::cel::{IdedExpr, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::compile::OPT_SELECT;
use crate::value::{Extent, extent, to_cel, value_extent};

/// A value on the fast path.
#[derive(Clone, Debug)]
pub enum V<'j> {
    /// Part of the request's JSON (the object, the old object, the namespace, a param).
    Json(&'j Json<'j>),
    Cel(Value),
    /// A key of an object of the request's JSON (a map comprehension's variable), borrowed.
    Key(&'j str),
    /// A list the fast path built (`a + b`, a literal, a comprehension's result).
    List(Arc<Vec<V<'j>>>),
}

impl<'j> V<'j> {
    /// As the `cel` crate holds it (the JSON converted as [`to_cel`] converts it).
    pub fn to_value(&self) -> Value {
        match self {
            V::Json(j) => to_cel(j),
            V::Cel(v) => v.clone(),
            V::Key(k) => Value::String(Arc::new(k.to_string())),
            V::List(items) => Value::List(Arc::new(items.iter().map(V::to_value).collect())),
        }
    }

    /// Adds the sizes of this value to `out` (the cost bound's inputs).
    pub fn extent(&self, out: &mut Extent) {
        match self {
            V::Json(j) => {
                let _ = extent(j, out);
            }
            V::Cel(v) => value_extent(v, out),
            V::Key(k) => out.string = out.string.max(k.len() as u64),
            V::List(items) => {
                out.list = out.list.max(items.len() as u64);
                out.total += items.len() as u64;
                items.iter().for_each(|x| x.extent(out));
            }
        }
    }

    fn bool(&self) -> Option<bool> {
        match self {
            V::Json(Json::Bool(b)) | V::Cel(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            V::Json(Json::String(s)) => Some(s),
            V::Cel(Value::String(s)) => Some(s),
            V::Key(k) => Some(k),
            _ => None,
        }
    }

    /// A scalar as the `cel` crate types it (JSON numbers as [`to_cel`] types them).
    fn scalar(&self) -> Option<Scalar<'_>> {
        Some(match self {
            V::Json(Json::String(s)) => Scalar::Str(s),
            V::Cel(Value::String(s)) => Scalar::Str(s),
            V::Key(k) => Scalar::Str(k),
            V::Json(Json::Bool(b)) | V::Cel(Value::Bool(b)) => Scalar::Bool(*b),
            V::Json(Json::Null) | V::Cel(Value::Null) => Scalar::Null,
            V::Json(Json::Number(n)) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Scalar::Int(i),
                (None, Some(u)) => Scalar::UInt(u),
                _ => return None,
            },
            V::Cel(Value::Int(i)) => Scalar::Int(*i),
            V::Cel(Value::UInt(u)) => Scalar::UInt(*u),
            _ => return None,
        })
    }

    /// The elements of a list.
    fn items(&self) -> Option<Vec<V<'j>>> {
        Some(match *self {
            V::Json(Json::Array(a)) => a.iter().map(V::Json).collect(),
            V::Cel(Value::List(ref l)) => l.iter().cloned().map(V::Cel).collect(),
            V::List(ref items) => items.as_ref().clone(),
            _ => return None,
        })
    }

    /// The length of a list; `None` for anything else.
    fn len_of_list(&self) -> Option<usize> {
        match self {
            V::Json(Json::Array(a)) => Some(a.len()),
            V::Cel(Value::List(l)) => Some(l.len()),
            V::List(items) => Some(items.len()),
            _ => None,
        }
    }

    /// The `i`-th element of a list (`None` out of range or not a list).
    fn item(&self, i: usize) -> Option<V<'j>> {
        match *self {
            V::Json(Json::Array(a)) => a.get(i).map(V::Json),
            V::Cel(Value::List(ref l)) => l.get(i).cloned().map(V::Cel),
            V::List(ref items) => items.get(i).cloned(),
            _ => None,
        }
    }

    fn len(&self) -> Option<usize> {
        Some(match self {
            V::Json(Json::String(s)) => s.len(),
            V::Json(Json::Array(a)) => a.len(),
            V::Json(Json::Object(o)) => o.len(),
            V::Cel(Value::String(s)) => s.len(),
            V::Key(k) => k.len(),
            V::Cel(Value::List(l)) => l.len(),
            V::Cel(Value::Map(m)) => m.map.len(),
            V::List(items) => items.len(),
            _ => return None,
        })
    }

    /// The field `key` of a map: `None` when this is not a map, `Some(None)` when the map
    /// has no such key.
    fn field(&self, key: &str) -> Option<Option<V<'j>>> {
        match *self {
            V::Json(Json::Object(o)) => Some(o.get(key).map(V::Json)),
            V::Cel(Value::Map(ref m)) => Some(m.get(&KeyRef::String(key)).cloned().map(V::Cel)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Scalar<'a> {
    Str(&'a str),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Null,
}

/// The names in scope, innermost last: the request's inputs, the variables computed so far,
/// and comprehension variables while a loop runs.
#[derive(Default)]
pub struct Env<'j> {
    names: Vec<(&'j str, V<'j>)>,
}

impl<'j> Env<'j> {
    pub fn bind(&mut self, name: &'j str, value: V<'j>) {
        self.names.push((name, value));
    }

    fn get(&self, name: &str) -> Option<&V<'j>> {
        self.names
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut V<'j>> {
        self.names
            .iter_mut()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The bindings from the `from`-th on, the innermost of each name last (for the `cel`
    /// crate's context on the slow path).
    pub fn bindings_from(&self, from: usize) -> impl Iterator<Item = (&str, &V<'j>)> {
        self.names[from.min(self.names.len())..]
            .iter()
            .map(|(n, v)| (*n, v))
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
pub fn eval<'j>(e: &'j IdedExpr, env: &mut Env<'j>) -> Option<V<'j>> {
    match &e.expr {
        Expr::Literal(l) => literal(l).map(V::Cel),
        Expr::Ident(name) => env.get(name).cloned(),
        Expr::Select(s) => {
            let operand = eval(&s.operand, env)?;
            let found = operand.field(&s.field)?;
            if s.test {
                Some(V::Cel(Value::Bool(found.is_some())))
            } else {
                found
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
            Some(V::List(Arc::new(items)))
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
                let key = eval(&entry.key, env)?;
                let key = Arc::new(key.str()?.to_string());
                let v = eval(&entry.value, env)?.to_value();
                if out.insert(Key::String(key), v).is_some() {
                    return None; // a repeated key: the cel crate's call
                }
            }
            Some(V::Cel(Value::Map(Map { map: Arc::new(out) })))
        }
        Expr::Comprehension(c) => {
            if c.iter_var2.is_some() {
                return None;
            }
            let range = eval(&c.iter_range, env)?;
            // A list is walked in place; a map's keys are collected first.
            let keys: Vec<V<'j>> = match range.len_of_list() {
                Some(_) => Vec::new(),
                None => match &range {
                    V::Json(Json::Object(o)) => o.keys().map(V::Key).collect(),
                    V::Cel(Value::Map(m)) => m
                        .map
                        .keys()
                        .map(|k| match k {
                            Key::String(s) => V::Cel(Value::String(s.clone())),
                            Key::Int(i) => V::Cel(Value::Int(*i)),
                            Key::Uint(u) => V::Cel(Value::UInt(*u)),
                            Key::Bool(b) => V::Cel(Value::Bool(*b)),
                        })
                        .collect(),
                    _ => return None,
                },
            };
            let accu = eval(&c.accu_init, env)?;
            let depth = env.names.len();
            env.bind(c.accu_var.as_str(), accu);
            // As the cel crate: the loop variable, once bound, stays bound (to the last item)
            // for the condition and the result.
            let count = range.len_of_list().unwrap_or(keys.len());
            let result = (|| {
                for i in 0..count {
                    let item = match keys.get(i) {
                        Some(key) => key.clone(),
                        None => range.item(i)?,
                    };
                    if !eval(&c.loop_cond, env)?.bool()? {
                        break;
                    }
                    if env.names.len() == depth + 1 {
                        env.bind(c.iter_var.as_str(), item);
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
                (None, [c, t, f]) if name == "_?_:_" => {
                    if eval(c, env)?.bool()? {
                        eval(t, env)
                    } else {
                        eval(f, env)
                    }
                }
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

fn cel<'j>(v: Value) -> Option<V<'j>> {
    Some(V::Cel(v))
}

fn unary<'j>(name: &str, a: &'j IdedExpr, env: &mut Env<'j>) -> Option<V<'j>> {
    let v = eval(a, env)?;
    match name {
        "!_" => cel(Value::Bool(!v.bool()?)),
        "-_" => match v.scalar()? {
            Scalar::Int(i) => cel(Value::Int(i.checked_neg()?)),
            _ => None,
        },
        "@not_strictly_false" => cel(Value::Bool(v.bool()?)),
        "size" => cel(Value::Int(v.len()? as i64)),
        _ => None,
    }
}

/// Equality where both sides are scalars of the same type (the cel crate's heterogeneous
/// and container equality is left to it).
fn equal(a: &V, b: &V) -> Option<bool> {
    let (a, b) = (a.scalar()?, b.scalar()?);
    match (a, b) {
        (Scalar::Str(_), Scalar::Str(_))
        | (Scalar::Int(_), Scalar::Int(_))
        | (Scalar::UInt(_), Scalar::UInt(_))
        | (Scalar::Bool(_), Scalar::Bool(_))
        | (Scalar::Null, Scalar::Null) => Some(a == b),
        _ => None,
    }
}

/// A string literal, read in place.
fn string_literal(x: &IdedExpr) -> Option<&str> {
    match &x.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

fn binary<'j>(name: &str, a: &'j IdedExpr, b: &'j IdedExpr, env: &mut Env<'j>) -> Option<V<'j>> {
    match name {
        // The logical operators decide on their left side alone when they can (errors on
        // either side, which CEL may absorb, go to the cel crate).
        "_&&_" | "_||_" => {
            let stop = name == "_||_";
            let left = eval(a, env)?.bool()?;
            return if left == stop {
                cel(Value::Bool(stop))
            } else {
                cel(Value::Bool(eval(b, env)?.bool()?))
            };
        }
        // Against a string literal (`e.name == 'X'`): compared in place.
        "_==_" | "_!=_" => {
            if let Some((lit, other)) = string_literal(b)
                .map(|l| (l, a))
                .or_else(|| string_literal(a).map(|l| (l, b)))
            {
                let v = eval(other, env)?;
                return cel(Value::Bool((v.str()? == lit) == (name == "_==_")));
            }
        }
        // In a literal list of strings (`v in ['a', 'b']`).
        "@in" => {
            if let Expr::List(list) = &b.expr
                && list.optional_indices.is_empty()
                && list.elements.iter().all(|x| string_literal(x).is_some())
            {
                let v = eval(a, env)?;
                let v = v.str()?;
                return cel(Value::Bool(
                    list.elements.iter().any(|x| string_literal(x) == Some(v)),
                ));
            }
        }
        // A macro's step `@result + [x]` (map, filter): appended in place, since the
        // accumulator is bound to nothing else while the loop runs (the name `@result`
        // cannot be written in an expression); otherwise every step would copy the list.
        "_+_" if matches!(&a.expr, Expr::Ident(n) if n.starts_with('@')) => {
            let Expr::Ident(accu) = &a.expr else {
                unreachable!()
            };
            let Expr::List(l) = &b.expr else {
                return None;
            };
            if !l.optional_indices.is_empty() {
                return None;
            }
            let mut added = Vec::with_capacity(l.elements.len());
            for x in &l.elements {
                added.push(eval(x, env)?);
            }
            let slot = env.get_mut(accu)?;
            let mut items = match std::mem::replace(slot, V::Cel(Value::Null)) {
                V::List(items) => items,
                other => match other.items() {
                    Some(items) => Arc::new(items),
                    None => {
                        *slot = other;
                        return None;
                    }
                },
            };
            Arc::make_mut(&mut items).extend(added);
            return Some(V::List(items));
        }
        _ if name == OPT_SELECT => {
            let field = string_literal(b)?;
            let operand = eval(a, env)?;
            let target = match &operand {
                V::Cel(Value::Opaque(o)) => match o.downcast_ref::<OptionalValue>()?.value() {
                    None => return cel(optional(None)),
                    Some(v) => V::Cel(v.clone()),
                },
                _ => operand,
            };
            return cel(optional(target.field(field)?.map(|v| v.to_value())));
        }
        _ => {}
    }
    let l = eval(a, env)?;
    let r = eval(b, env)?;
    match name {
        "_==_" => cel(Value::Bool(equal(&l, &r)?)),
        "_!=_" => cel(Value::Bool(!equal(&l, &r)?)),
        "_<_" | "_<=_" | "_>_" | "_>=_" => {
            let ord = match (l.scalar()?, r.scalar()?) {
                (Scalar::Int(x), Scalar::Int(y)) => x.cmp(&y),
                (Scalar::UInt(x), Scalar::UInt(y)) => x.cmp(&y),
                (Scalar::Str(x), Scalar::Str(y)) => x.cmp(y),
                _ => return None,
            };
            cel(Value::Bool(match name {
                "_<_" => ord.is_lt(),
                "_<=_" => ord.is_le(),
                "_>_" => ord.is_gt(),
                _ => ord.is_ge(),
            }))
        }
        "_+_" | "_-_" | "_*_" => {
            if let (Some(x), Some(y)) = (l.items(), r.items()) {
                if name != "_+_" {
                    return None;
                }
                let mut v = x;
                v.extend(y);
                return Some(V::List(Arc::new(v)));
            }
            match (l.scalar()?, r.scalar()?, name) {
                (Scalar::Int(x), Scalar::Int(y), "_+_") => cel(Value::Int(x.checked_add(y)?)),
                (Scalar::Int(x), Scalar::Int(y), "_-_") => cel(Value::Int(x.checked_sub(y)?)),
                (Scalar::Int(x), Scalar::Int(y), "_*_") => cel(Value::Int(x.checked_mul(y)?)),
                (Scalar::UInt(x), Scalar::UInt(y), "_+_") => cel(Value::UInt(x.checked_add(y)?)),
                (Scalar::Str(x), Scalar::Str(y), "_+_") => {
                    let mut s = String::with_capacity(x.len() + y.len());
                    s.push_str(x);
                    s.push_str(y);
                    cel(Value::String(Arc::new(s)))
                }
                _ => None,
            }
        }
        "_[_]" => match r.scalar()? {
            Scalar::Int(i) => l.item(usize::try_from(i).ok()?),
            Scalar::Str(k) => l.field(k)?,
            _ => None,
        },
        "@in" => {
            if let Some(items) = r.items() {
                let mut found = false;
                for item in &items {
                    found |= equal(&l, item)?;
                }
                return cel(Value::Bool(found));
            }
            let key = l.str()?;
            cel(Value::Bool(r.field(key)?.is_some()))
        }
        _ => None,
    }
}

fn optional(v: Option<Value>) -> Value {
    Value::Opaque(Arc::new(match v {
        Some(v) => OptionalValue::of(v),
        None => OptionalValue::none(),
    }))
}

fn method<'j>(
    name: &str,
    target: &'j IdedExpr,
    args: &'j [IdedExpr],
    env: &mut Env<'j>,
) -> Option<V<'j>> {
    // `strings.quote(...)` and the like are qualified names, not methods.
    if matches!(&target.expr, Expr::Ident(i) if env.get(i).is_none()) {
        return None;
    }
    let this = eval(target, env)?;
    let string = |s: String| cel(Value::String(Arc::new(s)));
    match (name, args) {
        ("size", []) => cel(Value::Int(this.len()? as i64)),
        ("startsWith" | "endsWith" | "contains" | "matches" | "split", [arg]) => {
            let s = this.str()?;
            // The argument read in place when it is a literal.
            let computed;
            let p = match string_literal(arg) {
                Some(p) => p,
                None => {
                    computed = eval(arg, env)?;
                    computed.str()?
                }
            };
            match name {
                "startsWith" => cel(Value::Bool(s.starts_with(p))),
                "endsWith" => cel(Value::Bool(s.ends_with(p))),
                "contains" => cel(Value::Bool(s.contains(p))),
                "matches" => cel(Value::Bool(matches(s, p)?)),
                _ => cel(Value::List(Arc::new(
                    s.split(p)
                        .map(|part| Value::String(Arc::new(part.to_string())))
                        .collect(),
                ))),
            }
        }
        // kube-cel's string library, as it implements them.
        ("trim", []) => string(this.str()?.trim().to_string()),
        ("lowerAscii", []) => string(this.str()?.to_ascii_lowercase()),
        ("upperAscii", []) => string(this.str()?.to_ascii_uppercase()),
        ("join", [] | [_]) => {
            let sep = match args.first() {
                Some(a) => Some(eval(a, env)?),
                None => None,
            };
            let sep = match &sep {
                Some(s) => s.str()?,
                None => "",
            };
            let items = this.items()?;
            let parts = items.iter().map(V::str).collect::<Option<Vec<_>>>()?;
            string(parts.join(sep))
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
        if let Some(compiled) = cache.get(pattern) {
            return compiled.as_ref().map(|re| re.is_match(s));
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

    pub fn record(source: &str, fast: Option<&V>, slow: impl FnOnce() -> Result<Value, String>) {
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
                (Some(f), Ok(s)) if same(&f.to_value(), s) => log.fast += 1,
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
