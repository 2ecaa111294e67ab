//! JSON ⇄ CEL values.

use crate::json::Json;
use kube_cel::cel::Value;
use kube_cel::cel::objects::{Key, Map};
use std::collections::HashMap;
use std::sync::Arc;

/// A JSON value as CEL sees it: integers stay `int` (or `uint` past `i64`), other numbers are
/// `double`, objects are maps with string keys.
pub fn to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::String(Arc::new(s.to_string())),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Json::Object(o) => {
            let mut m = HashMap::with_capacity(o.len());
            for (k, v) in o.iter() {
                m.insert(Key::String(Arc::new(k.to_string())), to_cel(v));
            }
            Value::Map(Map { map: Arc::new(m) })
        }
    }
}

/// A map with string keys.
pub fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = HashMap::with_capacity(entries.len());
    for (k, v) in entries {
        m.insert(Key::String(Arc::new(k.to_string())), v);
    }
    Value::Map(Map { map: Arc::new(m) })
}

pub fn string(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}

/// The largest list or map length and the longest string anywhere in `v` (the inputs of the
/// runtime cost bound). Returns, found on the same walk, an upper bound of the length of `v`'s
/// JSON text: every string fully escaped, every number as long as the longest.
pub fn extent(v: &Json, out: &mut Extent) -> usize {
    match v {
        Json::Null => 4,
        Json::Bool(_) => 5,
        Json::Number(_) => 24,
        Json::String(s) => {
            out.string = out.string.max(s.len() as u64);
            6 * s.len() + 2
        }
        Json::Array(a) => {
            out.list = out.list.max(a.len() as u64);
            out.total += a.len() as u64;
            2 + a.iter().map(|x| extent(x, out) + 1).sum::<usize>()
        }
        Json::Object(o) => {
            out.list = out.list.max(o.len() as u64);
            out.total += o.len() as u64;
            let mut len = 2;
            for (k, x) in o.iter() {
                out.string = out.string.max(k.len() as u64);
                len += 6 * k.len() + 4 + extent(x, out);
            }
            len
        }
    }
}

/// [`extent`] of a computed CEL value (a variable's): what an expression that reads only
/// variables walks.
pub fn value_extent(v: &Value, out: &mut Extent) {
    match v {
        Value::String(s) => out.string = out.string.max(s.len() as u64),
        Value::Bytes(b) => out.string = out.string.max(b.len() as u64),
        Value::List(l) => {
            out.list = out.list.max(l.len() as u64);
            out.total += l.len() as u64;
            l.iter().for_each(|x| value_extent(x, out));
        }
        Value::Map(m) => {
            out.list = out.list.max(m.map.len() as u64);
            out.total += m.map.len() as u64;
            for (k, x) in m.map.iter() {
                if let kube_cel::cel::objects::Key::String(k) = k {
                    out.string = out.string.max(k.len() as u64);
                }
                value_extent(x, out);
            }
        }
        _ => {}
    }
}

impl Extent {
    /// The larger of each bound.
    pub fn join(self, other: Extent) -> Extent {
        Extent {
            list: self.list.max(other.list),
            string: self.string.max(other.string),
            total: self.total + other.total,
        }
    }
}

/// Sizes of the largest collection and string an evaluation can see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    /// The largest list or map.
    pub list: u64,
    /// The longest string.
    pub string: u64,
    /// Every list's and map's elements together: what loops over parts of the inputs visit
    /// in all.
    pub total: u64,
}

/// A CEL value shown in a message (strings bare, everything else as JSON-ish text).
pub fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => format!("{other:?}"),
    }
}

/// The CEL type name of a value, for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Function(..) => "function",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Duration(_) => "google.protobuf.Duration",
        Value::Timestamp(_) => "google.protobuf.Timestamp",
        Value::Opaque(_) => "opaque",
        Value::Null => "null_type",
    }
}
