//! The request's JSON as the evaluator reads it: a tree whose strings borrow from the
//! request's text.
//!
//! `serde_json::Value` allocates a `String` for every key and every string value and a
//! `BTreeMap` node set for every object; on a 4 KB Deployment that parse was about half of
//! the cost of three policies. This tree allocates one `Vec` per object or array and borrows
//! every string that has no escape from the text it was parsed from (the common case in
//! Kubernetes objects). An object's entries are kept sorted by key (the last of repeated keys
//! wins, as in `serde_json::Value`), so a map is walked in the same order as before; a field of
//! a small object is found by a scan, of a larger one by a binary search.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// A JSON value; strings borrowed from the text it was parsed from where they can be.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Json<'a> {
    #[default]
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// A JSON object: its entries sorted by key, each key once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Object<'a> {
    entries: Vec<(Cow<'a, str>, Json<'a>)>,
}

impl<'a> Object<'a> {
    /// From entries in any order; of repeated keys the last is kept.
    pub fn from_entries(mut entries: Vec<(Cow<'a, str>, Json<'a>)>) -> Object<'a> {
        sort_entries(&mut entries);
        if !has_repeated_keys(&entries) {
            return Object { entries };
        }
        Object {
            entries: keep_last(entries.drain(..)),
        }
    }

    /// The field `key`. Most objects of a Kubernetes object have a handful of fields: those
    /// are scanned (a length compare rejects most), larger ones searched.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        if self.entries.len() <= 8 {
            return self
                .entries
                .iter()
                .find(|(k, _)| k.len() == key.len() && k.as_bytes() == key.as_bytes())
                .map(|(_, v)| v);
        }
        self.entries
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| &self.entries[i].1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json<'a>)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_ref())
    }

    /// The entries, sorted by key.
    pub fn into_entries(self) -> Vec<(Cow<'a, str>, Json<'a>)> {
        self.entries
    }
}

/// Sorts by key; stable, so repeated keys stay in the order written.
fn sort_entries(entries: &mut [(Cow<'_, str>, Json<'_>)]) {
    if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
    }
}

fn has_repeated_keys(sorted: &[(Cow<'_, str>, Json<'_>)]) -> bool {
    sorted.windows(2).any(|w| w[0].0 == w[1].0)
}

/// Sorted entries with each key once, the last of a run kept (as `serde_json::Value` does).
fn keep_last<'a>(
    sorted: impl Iterator<Item = (Cow<'a, str>, Json<'a>)>,
) -> Vec<(Cow<'a, str>, Json<'a>)> {
    let mut out: Vec<(Cow<'a, str>, Json<'a>)> = Vec::new();
    for (k, v) in sorted {
        match out.last_mut() {
            Some(last) if last.0 == k => last.1 = v,
            _ => out.push((k, v)),
        }
    }
    out
}

impl<'a> Json<'a> {
    /// Parses `text`, borrowing from it.
    pub fn parse(text: &'a str) -> Result<Json<'a>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let json = Parse(&mut Scratch::default()).deserialize(&mut de)?;
        de.end()?;
        Ok(json)
    }

    /// The field `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(o) => o.get(key),
            _ => None,
        }
    }

    /// An RFC 6901 pointer (`/metadata/name`), as `serde_json::Value::pointer`.
    pub fn pointer(&self, pointer: &str) -> Option<&Json<'a>> {
        if pointer.is_empty() {
            return Some(self);
        }
        let rest = pointer.strip_prefix('/')?;
        let mut at = self;
        for token in rest.split('/') {
            let token: Cow<str> = if token.contains('~') {
                Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
            } else {
                Cow::Borrowed(token)
            };
            at = match at {
                Json::Object(o) => o.get(&token)?,
                Json::Array(a) => a.get(token.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(at)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// As a `serde_json::Value` (for tooling; the evaluator reads the tree).
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            Json::Null => serde_json::Value::Null,
            Json::Bool(b) => serde_json::Value::Bool(*b),
            Json::Number(n) => serde_json::Value::Number(n.clone()),
            Json::String(s) => serde_json::Value::String(s.to_string()),
            Json::Array(a) => serde_json::Value::Array(a.iter().map(Json::to_value).collect()),
            Json::Object(o) => serde_json::Value::Object(
                o.iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// Borrows the strings of a `serde_json::Value`.
impl<'a> From<&'a serde_json::Value> for Json<'a> {
    fn from(v: &'a serde_json::Value) -> Json<'a> {
        match v {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(*b),
            serde_json::Value::Number(n) => Json::Number(n.clone()),
            serde_json::Value::String(s) => Json::String(Cow::Borrowed(s)),
            serde_json::Value::Array(a) => Json::Array(a.iter().map(Json::from).collect()),
            serde_json::Value::Object(o) => Json::Object(Object::from_entries(
                o.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Json::from(v)))
                    .collect(),
            )),
        }
    }
}

impl From<serde_json::Value> for Json<'static> {
    fn from(v: serde_json::Value) -> Json<'static> {
        match v {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(b),
            serde_json::Value::Number(n) => Json::Number(n),
            serde_json::Value::String(s) => Json::String(Cow::Owned(s)),
            serde_json::Value::Array(a) => Json::Array(a.into_iter().map(Json::from).collect()),
            serde_json::Value::Object(o) => Json::Object(Object::from_entries(
                o.into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Json::from(v)))
                    .collect(),
            )),
        }
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(v) => s.serialize_str(v),
            Json::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for x in a {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Json::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o.iter() {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json<'de>, D::Error> {
        Parse(&mut Scratch::default()).deserialize(d)
    }
}

/// What one parse reads into before each object or array is complete: the entries and items
/// of the containers open at the moment, innermost last. A finished container's are moved out
/// into a vector of their exact length, so the tree is allocated once per container and never
/// grown.
#[derive(Default)]
struct Scratch<'de> {
    entries: Vec<(Cow<'de, str>, Json<'de>)>,
    items: Vec<Json<'de>>,
}

/// Reads one value, its containers' parts through the shared [`Scratch`].
struct Parse<'s, 'de>(&'s mut Scratch<'de>);

impl<'de> DeserializeSeed<'de> for Parse<'_, 'de> {
    type Value = Json<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Parse<'_, 'de> {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        self.deserialize(d)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(i.into()))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(u.into()))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Json<'de>, E> {
        serde_json::Number::from_f64(f)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s.to_string())))
    }

    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let start = self.0.items.len();
        while let Some(x) = seq.next_element_seed(Parse(&mut *self.0))? {
            self.0.items.push(x);
        }
        Ok(Json::Array(self.0.items.drain(start..).collect()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let start = self.0.entries.len();
        while let Some(Key(k)) = map.next_key()? {
            let v = map.next_value_seed(Parse(&mut *self.0))?;
            self.0.entries.push((k, v));
        }
        Ok(Json::Object(Object::from_entries(
            self.0.entries.drain(start..).collect(),
        )))
    }
}

/// An object's key, borrowed where it has no escape.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_serde_json_does_and_borrows_plain_strings() {
        let text = r#"{"b": [1, -2, 1.5, 18446744073709551615, true, null],
                       "a": {"x\"y": "esc\u00e9", "plain": "v", "n": {"k": 1, "j": [], "k": {"z": 2, "y": [3]}}}, "b": "last wins"}"#;
        let j = Json::parse(text).unwrap();
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(j.to_value(), v);
        assert_eq!(Json::from(&v), j);
        assert_eq!(Json::from(v.clone()), j);
        assert_eq!(serde_json::to_value(&j).unwrap(), v);
        assert_eq!(j.get("b").and_then(Json::as_str), Some("last wins"));
        assert!(matches!(
            j.pointer("/a/plain"),
            Some(Json::String(Cow::Borrowed("v")))
        ));
        assert!(
            matches!(j.pointer("/a/x\"y"), Some(Json::String(Cow::Owned(s))) if s == "esc\u{e9}")
        );
        assert_eq!(
            j.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            j.pointer("/a/n/k/y/0").map(Json::to_value),
            Some(serde_json::json!(3))
        );
        assert_eq!(
            j.pointer("/a/n")
                .and_then(Json::as_object)
                .map(|o| o.keys().collect::<Vec<_>>()),
            Some(vec!["j", "k"])
        );
        assert_eq!(j.pointer("/missing"), None);
        assert_eq!(j.pointer(""), Some(&j));
    }

    #[test]
    fn pointers_unescape_and_index_arrays() {
        let j = Json::parse(r#"{"a/b": {"c~d": [10, 20]}}"#).unwrap();
        assert_eq!(
            j.pointer("/a~1b/c~0d/1").map(Json::to_value),
            Some(serde_json::json!(20))
        );
        assert_eq!(j.pointer("/a~1b/c~0d/2"), None);
        assert_eq!(j.pointer("no-slash"), None);
    }

    #[test]
    fn invalid_text_is_an_error() {
        assert!(Json::parse("{\"a\": ").is_err());
        assert!(Json::parse("[1, 2,]").is_err());
    }
}
