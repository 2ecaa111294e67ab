//! Finding things in JSON text without parsing it: where a string ends, where a value ends,
//! where one member of an object is.
//!
//! For text already known to be JSON (the host's objects are `RawValue`s: the review's parse
//! checked every byte of them), these let the host skip what no policy reads instead of
//! having serde_json check it once more. On text that is not JSON they never panic, and give
//! `None` or a position that serde_json then refuses.

/// The index just past the string whose opening quote is at `at - 1`: the first `"` that no
/// backslash escapes. `None` if the text ends first.
#[inline]
pub fn string_end(json: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let i = quote_or_backslash(json, at)?;
        if json[i] == b'\\' {
            // An escape: the byte after the backslash cannot end the string.
            at = i + 2;
        } else {
            return Some(i + 1);
        }
    }
}

/// The index of the first `"` or `\` at or after `at`: eight bytes at a time while eight are
/// left (a byte equal to one of them is a zero byte of the word XOR that byte repeated; the
/// lowest flagged byte of `(x - 0x01..) & !x & 0x80..` is always a true zero), then byte by
/// byte. An object's strings are most of its bytes and short, so a call per string must be
/// cheap: `memchr2` cost 55,000 instructions on the API server's 8.7 KB review, this a third.
#[inline]
fn quote_or_backslash(json: &[u8], mut at: usize) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    while let Some(chunk) = json.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let found = zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = json.get(at..)?;
    tail.iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|i| at + i)
}

fn skip_whitespace(json: &[u8], mut at: usize) -> usize {
    while matches!(json.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The index just past the value that starts at `at` (no whitespace before it): a string, an
/// object or array (brackets counted outside strings), or a scalar (up to the next `,`, `}`,
/// `]` or whitespace).
pub fn value_end(json: &[u8], at: usize) -> Option<usize> {
    match json.get(at)? {
        b'"' => string_end(json, at + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match json.get(i)? {
                    b'"' => {
                        i = string_end(json, i + 1)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let rest = json.get(at..)?;
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(rest.len());
            (len > 0).then_some(at + len)
        }
    }
}

/// Where the value of the first member named exactly `key` of the object whose `{` is at
/// `at` starts ([`value_end`] finds its end: a value found is not walked twice).
///
/// Keys are compared as they are written: a key spelled with escapes (`"na\u006de"`) is not
/// `name` here, though serde_json reads it so. Callers must only use a match to skip work,
/// never to decide what a missing match means.
pub fn member(json: &[u8], at: usize, key: &str) -> Option<usize> {
    if json.get(at) != Some(&b'{') {
        return None;
    }
    let mut i = skip_whitespace(json, at + 1);
    loop {
        if json.get(i) != Some(&b'"') {
            return None; // `}`: no such member (or not JSON).
        }
        let key_end = string_end(json, i + 1)?;
        let is_key = json.get(i + 1..key_end - 1) == Some(key.as_bytes());
        i = skip_whitespace(json, key_end);
        if json.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_whitespace(json, i + 1);
        if is_key {
            return Some(start);
        }
        i = skip_whitespace(json, value_end(json, start)?);
        if json.get(i) != Some(&b',') {
            return None;
        }
        i = skip_whitespace(json, i + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_end_at_the_first_unescaped_quote_however_long() {
        for pad in 0..20 {
            let body = "x".repeat(pad);
            let text = format!(r#""{body}\"\\" tail"#);
            let end = string_end(text.as_bytes(), 1).unwrap();
            assert_eq!(&text[end..], " tail", "pad {pad}");
        }
        assert_eq!(string_end(br#""never closed\""#, 1), None);
    }

    #[test]
    fn values_end_where_serde_json_ends_them() {
        let texts = [
            r#""a\"b""#,
            r#"{"a":[1,{"b":"}]"}],"c":{}}"#,
            "[]",
            "-12.5e3",
            "true",
            "null",
            r#"{"k": "v" , "l" : [ 1 , 2 ] }"#,
        ];
        for t in texts {
            let padded = format!("{t} ,");
            assert_eq!(value_end(padded.as_bytes(), 0), Some(t.len()), "{t}");
            serde_json::from_str::<serde_json::Value>(t).expect(t);
        }
        assert_eq!(value_end(b"[1,[2]", 0), None);
        assert_eq!(value_end(b"", 0), None);
    }

    #[test]
    fn members_are_found_by_their_written_key() {
        let text =
            r#"{ "kind" : "Pod", "metadata":{"name":"a","managedFields":[{"f:x":{}}]} ,"spec":{}}"#;
        let b = text.as_bytes();
        let value = |start: usize| &text[start..value_end(b, start).unwrap()];
        let meta = member(b, 0, "metadata").unwrap();
        assert_eq!(value(meta), r#"{"name":"a","managedFields":[{"f:x":{}}]}"#);
        assert_eq!(
            value(member(b, meta, "managedFields").unwrap()),
            r#"[{"f:x":{}}]"#
        );
        assert_eq!(value(member(b, 0, "spec").unwrap()), "{}");
        assert_eq!(member(b, 0, "status"), None);
        // Only the top level: `name` inside metadata is not a member of the object.
        assert_eq!(member(b, 0, "name"), None);
        // An escaped key is not matched, and a value named like the key is not a key.
        let escaped = r#"{"x":"metadata","met\u0061data":{}}"#;
        assert_eq!(member(escaped.as_bytes(), 0, "metadata"), None);
        // Not an object, or not JSON: nothing, no panic.
        for t in ["[]", "", "{", r#"{"a""#, r#"{"a":}"#, r#"{"a":1 "b":2}"#] {
            assert_eq!(member(t.as_bytes(), 0, "b"), None, "{t:?}");
        }
    }
}
