//! A serde `Deserializer` for text already known to be JSON, which reads what a type asks
//! for and steps over the rest without checking it a second time.
//!
//! The host's objects are `RawValue`s: the review's parse has checked every byte of them.
//! serde_json would check every byte again while parsing the view, above all the members the
//! view skips (`managedFields`, `status`, most of a pod spec), which cost a review more
//! instructions than the rest of its view. Here a skipped value is crossed by finding where
//! it ends ([`skim::value_end`]), strings without escapes are borrowed, and numbers are read
//! by serde_json itself, so a number means the same here.
//!
//! Anything this reader does not expect (a visitor that stops early, a lone surrogate, a
//! type error) is an [`Error`] without detail: the caller then parses with serde_json, whose
//! view or error is the one returned. So a view read here is always serde_json's view.

use crate::skim;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Why the text could not be read here; the caller asks serde_json instead.
#[derive(Debug)]
pub(crate) struct Error;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not read without checking")
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Error
    }
}

/// Reads `T` from `json`, which must be one JSON value (with whitespace around it).
pub(crate) fn from_valid_str<'de, T: de::Deserialize<'de>>(json: &'de str) -> Result<T, Error> {
    let mut reader = Reader {
        text: json,
        at: 0,
        depth: 0,
    };
    let value = T::deserialize(&mut reader)?;
    reader.skip_whitespace();
    if reader.at != json.len() {
        return Err(Error);
    }
    Ok(value)
}

struct Reader<'de> {
    text: &'de str,
    at: usize,
    /// Objects and arrays open around `at`: a view's types nest (a pod template's spec has a
    /// `template`), so deeply nested text would nest calls as deep.
    depth: usize,
}

/// The deepest nesting serde_json reads (its recursion limit refuses 128 levels): deeper text
/// is left to it, and it refuses it.
const MAX_DEPTH: usize = 127;

impl<'de> Reader<'de> {
    fn bytes(&self) -> &'de [u8] {
        self.text.as_bytes()
    }

    fn skip_whitespace(&mut self) {
        self.at = skim::skip_whitespace(self.bytes(), self.at);
    }

    fn peek(&mut self) -> Result<u8, Error> {
        self.skip_whitespace();
        self.bytes().get(self.at).copied().ok_or(Error)
    }

    /// The object or array at `at`, its items read by `visit`, through its closing `close`.
    fn nested<T>(
        &mut self,
        close: u8,
        visit: impl FnOnce(Items<'_, 'de>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error);
        }
        self.at += 1;
        let value = visit(Items {
            reader: self,
            close,
            first: true,
        })?;
        // A visitor that stopped before the end: serde_json refuses it, let it say so.
        if self.peek()? != close {
            return Err(Error);
        }
        self.at += 1;
        self.depth -= 1;
        Ok(value)
    }

    fn literal(&mut self, word: &str) -> bool {
        let found = self.text[self.at..].starts_with(word);
        if found {
            self.at += word.len();
        }
        found
    }

    /// The value that starts here, as text, stepped over.
    fn scalar(&mut self) -> Result<&'de str, Error> {
        let end = skim::value_end(self.bytes(), self.at).ok_or(Error)?;
        let text = &self.text[self.at..end];
        self.at = end;
        Ok(text)
    }

    fn string<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        let (end, escaped) = skim::string_span(self.bytes(), self.at + 1).ok_or(Error)?;
        let body = &self.text[self.at + 1..end - 1];
        self.at = end;
        if escaped {
            visitor.visit_string(unescape(body)?)
        } else {
            visitor.visit_borrowed_str(body)
        }
    }
}

/// The text of a JSON string with escapes, unescaped. A lone surrogate is an [`Error`]
/// (serde_json then says what it says of it).
fn unescape(body: &str) -> Result<String, Error> {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let escape = rest.as_bytes().get(i + 1).ok_or(Error)?;
        rest = &rest[i + 2..];
        let c = match escape {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = hex4(rest)?;
                rest = &rest[4..];
                match unit {
                    0xD800..=0xDBFF => {
                        let low = rest.strip_prefix("\\u").map(hex4).ok_or(Error)??;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Error);
                        }
                        rest = &rest[6..];
                        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(code).ok_or(Error)?
                    }
                    0xDC00..=0xDFFF => return Err(Error),
                    _ => char::from_u32(unit).ok_or(Error)?,
                }
            }
            _ => return Err(Error),
        };
        out.push(c);
    }
    out.push_str(rest);
    Ok(out)
}

fn hex4(text: &str) -> Result<u32, Error> {
    let digits = text.get(..4).ok_or(Error)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error);
    }
    u32::from_str_radix(digits, 16).map_err(|_| Error)
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.peek()? {
            b'"' => self.string(visitor),
            b'{' => self.nested(b'}', |items| visitor.visit_map(items)),
            b'[' => self.nested(b']', |items| visitor.visit_seq(items)),
            b'n' if self.literal("null") => visitor.visit_unit(),
            b't' if self.literal("true") => visitor.visit_bool(true),
            b'f' if self.literal("false") => visitor.visit_bool(false),
            b'-' | b'0'..=b'9' => {
                let number = self.scalar()?;
                de::Deserializer::deserialize_any(
                    &mut serde_json::Deserializer::from_str(number),
                    visitor,
                )
                .map_err(|_| Error)
            }
            _ => Err(Error),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.peek()? == b'n' && self.literal("null") {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.peek()?;
        self.scalar()?;
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct enum identifier
    }
}

/// The members of an object or the elements of an array, up to its closing bracket.
struct Items<'r, 'de> {
    reader: &'r mut Reader<'de>,
    close: u8,
    first: bool,
}

impl Items<'_, '_> {
    /// Steps over the `,` before the next item: `false` at the closing bracket.
    fn next(&mut self) -> Result<bool, Error> {
        match self.reader.peek()? {
            b if b == self.close => return Ok(false),
            b',' if !self.first => self.reader.at += 1,
            _ if self.first => {}
            _ => return Err(Error),
        }
        self.first = false;
        Ok(true)
    }
}

impl<'de> MapAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if !self.next()? {
            return Ok(None);
        }
        if self.reader.peek()? != b'"' {
            return Err(Error);
        }
        let key = seed.deserialize(&mut *self.reader)?;
        if self.reader.peek()? != b':' {
            return Err(Error);
        }
        self.reader.at += 1;
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut *self.reader)
    }
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if !self.next()? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_read_as_serde_json_reads_them() {
        let texts = [
            r#""plain""#,
            r#""q\"b\\s\/n\nt\tr\rb\bf\f""#,
            r#""\u00e9\u0041 \ud83d\ude00 \u2028""#,
            r#""ends with escape\\""#,
        ];
        for t in texts {
            let ours: String = from_valid_str(t).unwrap();
            let theirs: String = serde_json::from_str(t).unwrap();
            assert_eq!(ours, theirs, "{t}");
        }
        for lone in [r#""\ud83d""#, r#""\ude00""#, r#""\ud83d\u0041""#] {
            assert!(from_valid_str::<String>(lone).is_err(), "{lone}");
            assert!(serde_json::from_str::<String>(lone).is_err(), "{lone}");
        }
    }

    #[test]
    fn values_of_every_type_read_as_serde_json_reads_them() {
        let texts = [
            r#"{"a":[1,-2,3.5,1e3,true,false,null,"x",{}],"b":{"c":[]}}"#,
            " [ 1 , { \"k\" : \"v\" } ] ",
            "18446744073709551615",
            "-9223372036854775808",
            "0.1",
        ];
        for t in texts {
            let ours: serde_json::Value = from_valid_str(t).unwrap();
            let theirs: serde_json::Value = serde_json::from_str(t).unwrap();
            assert_eq!(ours, theirs, "{t}");
        }
    }

    /// Nesting is bounded as serde_json bounds it, so hostile text cannot run the stack out.
    #[test]
    fn nesting_deeper_than_serde_json_reads_is_left_to_it() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(from_valid_str::<serde_json::Value>(&nested(MAX_DEPTH)).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&nested(MAX_DEPTH)).is_ok());
        assert!(from_valid_str::<serde_json::Value>(&nested(MAX_DEPTH + 1)).is_err());
        assert!(serde_json::from_str::<serde_json::Value>(&nested(MAX_DEPTH + 1)).is_err());
        assert!(from_valid_str::<serde_json::Value>(&nested(1_000_000)).is_err());
    }
}
