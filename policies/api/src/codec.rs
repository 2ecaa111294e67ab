//! The binary evaluation input of ABI version 2: the request header, the typed [`Object`]
//! view and the raw object JSON, in one buffer the guest decodes without copying a string.
//!
//! # Encoding
//!
//! All integers are unsigned LEB128 varints (`uv` below); there is no padding. The strings
//! of the view are not inline: they are concatenated, in the order they are read, into one
//! string table that the guest checks for UTF-8 once, and the structure that follows holds
//! only their lengths (a decoder keeps a cursor into the table).
//!
//! | item | encoding |
//! |---|---|
//! | `text` (header) | `uv` byte length, then UTF-8 bytes |
//! | `str` (view) | `uv` byte length; the bytes are the next ones of the string table |
//! | `opt str` | `uv` 0 for absent, else byte length + 1 |
//! | `list<T>` | `uv` count, then the items |
//! | `opt T` | one byte 0 (absent) or 1, then `T` |
//! | `bool` | one byte 0 or 1 |
//! | `map` ([`StrMap`]) | `list<(str key, str value)>` in document order |
//!
//! The input is:
//!
//! ```text
//! magic   "ck8s" 0x02
//! header  operation:u8 (0 CREATE, 1 UPDATE, 2 DELETE, 3 CONNECT)  dryRun:bool
//!         group:text  version:text  kind:text  namespace:text  name:text
//! raw     text                       the object's JSON exactly as the API server sent it, or
//!                                    empty: only policies whose metadata sets `rawObject` get it
//! strings text                       the string table of the view
//! object  Object                     the structure, to the end of the input
//! Object          = kind:str  ObjectMeta  spec:opt Spec  template:opt PodTemplateSpec
//!                   data:map  stringData:map
//! ObjectMeta      = name:opt str  namespace:opt str  labels:map  annotations:map
//!                   deletionTimestamp:opt str
//! Spec            = containers:list<Container>  initContainers:list<Container>
//!                   ephemeralContainers:list<Container>
//!                   template:opt PodTemplateSpec  jobTemplate:opt PodTemplateSpec
//! PodTemplateSpec = ObjectMeta  spec:opt Spec
//! Container       = name:str  image:opt str  command:list<str>  args:list<str>  env:list<EnvVar>
//! EnvVar          = name:str  value:opt str  valueFrom:bool
//! ```
//!
//! The raw JSON is not checked for UTF-8 by the decoder (it is only looked at when a policy
//! asks for it); every string of the view is.

use crate::view::{Container, EnvVar, Object, ObjectMeta, PodTemplateSpec, Spec, StrMap};
use crate::{GroupVersionKind, Operation};
use std::borrow::Cow;

/// First bytes of every ABI v2 input.
pub const MAGIC: &[u8; 5] = b"ck8s\x02";

/// Nesting limit for templates inside specs (a CronJob needs 2).
const MAX_DEPTH: u32 = 16;

/// The request facts that travel with the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub operation: Operation,
    pub kind: GroupVersionKind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub dry_run: bool,
}

/// A decoded ABI v2 input.
#[derive(Debug)]
pub struct Input<'a> {
    pub header: Header<'a>,
    pub object: Object<'a>,
    /// The object's JSON, as sent (not checked for UTF-8 yet; see [`Input::raw_object`]);
    /// empty when the host did not send it.
    pub raw_object: &'a [u8],
}

impl<'a> Input<'a> {
    /// The raw object as text; `None` if it was not sent (the policy's metadata does not set
    /// `rawObject`) or, never the case for input the host encoded from a `&str`, not UTF-8.
    pub fn raw_object(&self) -> Option<&'a str> {
        raw_object_text(self.raw_object)
    }
}

/// The raw object bytes of an input as text: `None` when they were not sent (empty) or are
/// not UTF-8. Checked on use rather than on every decode: few policies read them.
pub fn raw_object_text(bytes: &[u8]) -> Option<&str> {
    if bytes.is_empty() {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// Encodes an ABI v2 input with the raw object in it.
pub fn encode_input(header: &Header<'_>, object: &Object<'_>, raw_object: &str) -> Vec<u8> {
    EncodedInput::new(header, object, raw_object).to_vec(true)
}

/// An encoded ABI v2 input, kept in parts so the host can write it straight into each
/// guest's memory, with or without the raw object JSON (an empty raw object means "not
/// sent": only policies whose metadata sets `rawObject` get it, the others are spared
/// copying kilobytes they never read).
#[derive(Debug, Clone)]
pub struct EncodedInput<'a> {
    /// Magic and header.
    head: Vec<u8>,
    raw: &'a str,
    raw_len: Varint,
    view: EncodedView,
}

/// The encoded view, the end of the input: string table length, string table, structure.
#[derive(Debug, Clone)]
struct EncodedView {
    table_len: Varint,
    table: String,
    structure: Vec<u8>,
}

impl EncodedView {
    /// `object` encoded; `json_len`, the length of the JSON it came from, sizes the buffers
    /// (most of an object's JSON is strings the view keeps).
    fn new(object: &Object<'_>, json_len: usize) -> Self {
        let mut w = Writer(
            Vec::with_capacity(256 + json_len / 8),
            String::with_capacity(2048.max(json_len / 2)),
        );
        w.object(object);
        EncodedView {
            table_len: Varint::new(w.1.len()),
            table: w.1,
            structure: w.0,
        }
    }

    fn parts(&self) -> [&[u8]; 3] {
        [
            self.table_len.bytes(),
            self.table.as_bytes(),
            &self.structure,
        ]
    }
}

/// A LEB128 varint, encoded on the stack.
#[derive(Debug, Clone, Copy)]
struct Varint([u8; 10], u8);

impl Varint {
    fn new(mut v: usize) -> Self {
        let mut out = Varint([0; 10], 0);
        while v >= 0x80 {
            out.0[out.1 as usize] = v as u8 | 0x80;
            out.1 += 1;
            v >>= 7;
        }
        out.0[out.1 as usize] = v as u8;
        out.1 += 1;
        out
    }
    fn bytes(&self) -> &[u8] {
        &self.0[..self.1 as usize]
    }
}

impl<'a> EncodedInput<'a> {
    pub fn new(header: &Header<'_>, object: &Object<'_>, raw_object: &'a str) -> Self {
        let mut head = Writer(Vec::with_capacity(64), String::new());
        head.0.extend_from_slice(MAGIC);
        head.0.push(match header.operation {
            Operation::Create => 0,
            Operation::Update => 1,
            Operation::Delete => 2,
            Operation::Connect => 3,
        });
        head.bool(header.dry_run);
        head.text(&header.kind.group);
        head.text(&header.kind.version);
        head.text(&header.kind.kind);
        head.text(header.namespace);
        head.text(header.name);
        EncodedInput {
            head: head.0,
            raw: raw_object,
            raw_len: Varint::new(raw_object.len()),
            view: EncodedView::new(object, raw_object.len()),
        }
    }

    /// The input's bytes in order; concatenated they are the input. Without the raw object
    /// its length is written as 0.
    pub fn parts(&self, with_raw: bool) -> [&[u8]; 6] {
        let (raw_len, raw): (&[u8], &[u8]) = if with_raw {
            (self.raw_len.bytes(), self.raw.as_bytes())
        } else {
            (&[0], &[])
        };
        let [table_len, table, structure] = self.view.parts();
        [&self.head, raw_len, raw, table_len, table, structure]
    }

    /// The input's length, with or without the raw object.
    pub fn len(&self, with_raw: bool) -> usize {
        self.parts(with_raw).iter().map(|p| p.len()).sum()
    }

    /// The input in one buffer.
    pub fn to_vec(&self, with_raw: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len(with_raw));
        for part in self.parts(with_raw) {
            out.extend_from_slice(part);
        }
        out
    }
}

/// Bytes that are not what [`encode_object`] or the host's input encoder wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("input does not decode: not an ABI v2 input (bad magic)")]
    BadMagic,
    /// `part` (header, raw object, object) is cut short or malformed at byte `at`.
    #[error("input does not decode: {part} at byte {at}")]
    Input { part: &'static str, at: usize },
    #[error("object does not decode (at byte {at})")]
    Object { at: usize },
}

/// Decodes an ABI v2 input; strings of the view borrow from `bytes`.
pub fn decode_input(bytes: &[u8]) -> Result<Input<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    let fail = |r: &Reader, part| DecodeError::Input { part, at: r.pos };
    if r.take(MAGIC.len()).ok() != Some(&MAGIC[..]) {
        return Err(DecodeError::BadMagic);
    }
    let header = (|| {
        let operation = match r.u8()? {
            0 => Operation::Create,
            1 => Operation::Update,
            2 => Operation::Delete,
            3 => Operation::Connect,
            _ => return Err(Bad),
        };
        let dry_run = r.bool()?;
        let kind = GroupVersionKind {
            group: r.text()?.to_owned(),
            version: r.text()?.to_owned(),
            kind: r.text()?.to_owned(),
        };
        Ok(Header {
            operation,
            kind,
            namespace: r.text()?,
            name: r.text()?,
            dry_run,
        })
    })()
    .map_err(|Bad| fail(&r, "header"))?;
    let raw_object = r.bytes().map_err(|Bad| fail(&r, "raw object"))?;
    let object = r.view().map_err(|Bad| fail(&r, "object"))?;
    Ok(Input {
        header,
        object,
        raw_object,
    })
}

/// Encodes just the view (string table, then structure: the part of the input after the
/// raw object).
pub fn encode_object(object: &Object<'_>) -> Vec<u8> {
    EncodedView::new(object, 0).parts().concat()
}

/// Decodes what [`encode_object`] wrote.
pub fn decode_object(bytes: &[u8]) -> Result<Object<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    r.view().map_err(|Bad| DecodeError::Object { at: r.pos })
}

/// Structure bytes, and the string table of the view.
struct Writer(Vec<u8>, String);

impl Writer {
    fn uv(&mut self, v: usize) {
        self.0.extend_from_slice(Varint::new(v).bytes());
    }
    fn bool(&mut self, b: bool) {
        self.0.push(b as u8);
    }
    /// Inline text (the header and the two big blobs).
    fn text(&mut self, s: &str) {
        self.uv(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn str(&mut self, s: &str) {
        self.uv(s.len());
        self.1.push_str(s);
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.uv(0),
            Some(s) => {
                self.uv(s.len() + 1);
                self.1.push_str(s);
            }
        }
    }
    fn map(&mut self, m: &StrMap<'_>) {
        self.uv(m.0.len());
        for (k, v) in &m.0 {
            self.str(k);
            self.str(v);
        }
    }
    fn object(&mut self, o: &Object<'_>) {
        self.str(&o.kind);
        self.meta(&o.metadata);
        self.opt_spec(o.spec.as_ref());
        self.opt_template(o.template.as_ref());
        self.map(&o.data);
        self.map(&o.string_data);
    }
    fn meta(&mut self, m: &ObjectMeta<'_>) {
        self.opt_str(m.name.as_deref());
        self.opt_str(m.namespace.as_deref());
        self.map(&m.labels);
        self.map(&m.annotations);
        self.opt_str(m.deletion_timestamp.as_deref());
    }
    fn opt_spec(&mut self, s: Option<&Spec<'_>>) {
        let Some(s) = s else { return self.bool(false) };
        self.bool(true);
        for list in [&s.containers, &s.init_containers, &s.ephemeral_containers] {
            self.uv(list.len());
            for c in list {
                self.container(c);
            }
        }
        self.opt_template(s.template.as_deref());
        self.opt_template(s.job_template.as_deref());
    }
    fn opt_template(&mut self, t: Option<&PodTemplateSpec<'_>>) {
        let Some(t) = t else { return self.bool(false) };
        self.bool(true);
        self.meta(&t.metadata);
        self.opt_spec(t.spec.as_ref());
    }
    fn container(&mut self, c: &Container<'_>) {
        self.str(&c.name);
        self.opt_str(c.image.as_deref());
        for list in [&c.command, &c.args] {
            self.uv(list.len());
            for s in list {
                self.str(s);
            }
        }
        self.uv(c.env.len());
        for e in &c.env {
            self.str(&e.name);
            self.opt_str(e.value.as_deref());
            self.bool(e.value_from);
        }
    }
}

/// A decoding failure; the position in the reader says where.
struct Bad;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The view's string table, checked for UTF-8 once, and the cursor into it.
    table: &'a str,
    /// Whether the table is all ASCII, so that every offset is a char boundary.
    table_ascii: bool,
    tpos: usize,
}

/// `from_utf8` with a fast path for the common all-ASCII table: on wasm32 the standard check
/// walks 4-byte words, this one 16 bytes per step, which matters for a table decoded by every
/// policy on every request.
///
/// Returns the text and whether it is all ASCII.
fn utf8(bytes: &[u8]) -> Result<(&str, bool), Bad> {
    let mut chunks = bytes.chunks_exact(16);
    let mut high = 0u64;
    for c in &mut chunks {
        let (a, b) = c.split_at(8);
        high |=
            u64::from_le_bytes(a.try_into().unwrap()) | u64::from_le_bytes(b.try_into().unwrap());
    }
    for &b in chunks.remainder() {
        high |= b as u64;
    }
    if high & 0x8080_8080_8080_8080 == 0 {
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        return Ok((unsafe { std::str::from_utf8_unchecked(bytes) }, true));
    }
    std::str::from_utf8(bytes)
        .map(|s| (s, false))
        .map_err(|_| Bad)
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            table: "",
            table_ascii: true,
            tpos: 0,
        }
    }
    /// String table, then the structure to the end of the buffer.
    fn view(&mut self) -> Result<Object<'a>, Bad> {
        let len = self.uv()?;
        (self.table, self.table_ascii) = utf8(self.take(len)?)?;
        self.tpos = 0;
        let o = self.object()?;
        if self.pos != self.buf.len() || self.tpos != self.table.len() {
            return Err(Bad);
        }
        Ok(o)
    }
    #[inline(always)]
    fn u8(&mut self) -> Result<u8, Bad> {
        let b = *self.buf.get(self.pos).ok_or(Bad)?;
        self.pos += 1;
        Ok(b)
    }
    #[inline(always)]
    fn uv(&mut self) -> Result<usize, Bad> {
        let mut v: usize = 0;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift >= usize::BITS {
                return Err(Bad);
            }
            v |= ((b & 0x7f) as usize) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }
    #[inline(always)]
    fn bool(&mut self) -> Result<bool, Bad> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Bad),
        }
    }
    #[inline(always)]
    fn take(&mut self, len: usize) -> Result<&'a [u8], Bad> {
        let end = self.pos.checked_add(len).ok_or(Bad)?;
        let s = self.buf.get(self.pos..end).ok_or(Bad)?;
        self.pos = end;
        Ok(s)
    }
    fn bytes(&mut self) -> Result<&'a [u8], Bad> {
        let len = self.uv()?;
        self.take(len)
    }
    fn text(&mut self) -> Result<&'a str, Bad> {
        let len = self.uv()?;
        let b = self.take(len)?;
        utf8(b).map(|(s, _)| s)
    }
    /// The next `len` bytes of the string table (a char-boundary check, no UTF-8 scan).
    #[inline(always)]
    fn table_str(&mut self, len: usize) -> Result<&'a str, Bad> {
        let end = self.tpos.checked_add(len).ok_or(Bad)?;
        let s = if self.table_ascii {
            let bytes = self.table.as_bytes().get(self.tpos..end).ok_or(Bad)?;
            // SAFETY: a slice of an all-ASCII string is ASCII, hence UTF-8.
            unsafe { std::str::from_utf8_unchecked(bytes) }
        } else {
            self.table.get(self.tpos..end).ok_or(Bad)?
        };
        self.tpos = end;
        Ok(s)
    }
    #[inline(always)]
    fn str(&mut self) -> Result<&'a str, Bad> {
        let len = self.uv()?;
        self.table_str(len)
    }
    #[inline(always)]
    fn cow(&mut self) -> Result<Cow<'a, str>, Bad> {
        self.str().map(Cow::Borrowed)
    }
    #[inline(always)]
    fn opt_str(&mut self) -> Result<Option<Cow<'a, str>>, Bad> {
        match self.uv()? {
            0 => Ok(None),
            n => self.table_str(n - 1).map(|s| Some(Cow::Borrowed(s))),
        }
    }
    /// A count of items each at least `min` bytes long, checked against what is left so a
    /// corrupt count cannot make a huge allocation.
    #[inline(always)]
    fn count(&mut self, min: usize) -> Result<usize, Bad> {
        let n = self.uv()?;
        if n.saturating_mul(min) > self.buf.len() - self.pos {
            return Err(Bad);
        }
        Ok(n)
    }
    fn map(&mut self) -> Result<StrMap<'a>, Bad> {
        let n = self.count(2)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push((self.cow()?, self.cow()?));
        }
        Ok(StrMap(out))
    }
    fn object(&mut self) -> Result<Object<'a>, Bad> {
        Ok(Object {
            kind: self.str()?.to_owned(),
            metadata: self.meta()?,
            spec: self.opt_spec(0)?,
            template: self.opt_template(0)?,
            data: self.map()?,
            string_data: self.map()?,
        })
    }
    fn meta(&mut self) -> Result<ObjectMeta<'a>, Bad> {
        Ok(ObjectMeta {
            name: self.opt_str()?,
            namespace: self.opt_str()?,
            labels: self.map()?,
            annotations: self.map()?,
            deletion_timestamp: self.opt_str()?,
        })
    }
    fn opt_spec(&mut self, depth: u32) -> Result<Option<Spec<'a>>, Bad> {
        if !self.bool()? {
            return Ok(None);
        }
        if depth > MAX_DEPTH {
            return Err(Bad);
        }
        let mut lists: [Vec<Container<'a>>; 3] = Default::default();
        for list in &mut lists {
            let n = self.count(5)?;
            list.reserve_exact(n);
            for _ in 0..n {
                list.push(self.container()?);
            }
        }
        let [containers, init_containers, ephemeral_containers] = lists;
        Ok(Some(Spec {
            containers,
            init_containers,
            ephemeral_containers,
            template: self.opt_template(depth + 1)?.map(Box::new),
            job_template: self.opt_template(depth + 1)?.map(Box::new),
        }))
    }
    fn opt_template(&mut self, depth: u32) -> Result<Option<PodTemplateSpec<'a>>, Bad> {
        if !self.bool()? {
            return Ok(None);
        }
        Ok(Some(PodTemplateSpec {
            metadata: self.meta()?,
            spec: self.opt_spec(depth)?,
        }))
    }
    fn container(&mut self) -> Result<Container<'a>, Bad> {
        let name = self.cow()?;
        let image = self.opt_str()?;
        let mut lists: [Vec<Cow<'a, str>>; 2] = Default::default();
        for list in &mut lists {
            let n = self.count(1)?;
            list.reserve_exact(n);
            for _ in 0..n {
                list.push(self.cow()?);
            }
        }
        let [command, args] = lists;
        let n = self.count(3)?;
        let mut env = Vec::with_capacity(n);
        for _ in 0..n {
            env.push(EnvVar {
                name: self.cow()?,
                value: self.opt_str()?,
                value_from: self.bool()?,
            });
        }
        Ok(Container {
            name,
            image,
            command,
            args,
            env,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment",
      "metadata":{"name":"d","namespace":"n","labels":{"a":"b","n":1},"annotations":null},
      "spec":{"template":{"metadata":{"labels":{"app":"x"}},"spec":{
        "containers":[{"name":"c","image":"i","args":["--a","b\u00e9"],"env":[
          {"name":"A","value":"1"},{"name":"B","valueFrom":{"secretKeyRef":{}}},{"name":"C","valueFrom":null},{"name":"D"}]}],
        "initContainers":null}}}}"#;

    fn gvk(group: &str, kind: &str) -> GroupVersionKind {
        GroupVersionKind::new(group, "v1", kind)
    }

    #[test]
    fn input_roundtrips() {
        let kind = gvk("apps", "Deployment");
        let object = Object::parse(&kind, DEPLOYMENT).unwrap();
        let header = Header {
            operation: Operation::Update,
            kind,
            namespace: "n",
            name: "d",
            dry_run: true,
        };
        let bytes = encode_input(&header, &object, DEPLOYMENT);
        let input = decode_input(&bytes).unwrap();
        assert_eq!(input.header, header);
        assert_eq!(input.raw_object(), Some(DEPLOYMENT));
        assert_eq!(format!("{:?}", input.object), format!("{object:?}"));
        let env = &input
            .object
            .spec
            .as_ref()
            .unwrap()
            .template
            .as_ref()
            .unwrap();
        let env = &env.spec.as_ref().unwrap().containers[0].env;
        assert_eq!(
            env.iter().map(|e| e.value_from).collect::<Vec<_>>(),
            [false, true, false, false]
        );
        assert!(matches!(env[0].name, Cow::Borrowed(_)));
        assert_eq!(input.object.metadata.labels.get("n"), Some("1"));
    }

    #[test]
    fn every_kind_shape_roundtrips() {
        for (group, kind, json) in [
            (
                "",
                "Secret",
                r#"{"data":{"K":"dg=="},"stringData":{"S":"x"}}"#,
            ),
            (
                "",
                "PodTemplate",
                r#"{"template":{"spec":{"containers":[{"name":"a"}]}}}"#,
            ),
            (
                "batch",
                "CronJob",
                r#"{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"a"}]}}}}}}"#,
            ),
            ("x.io", "Thing", r#"{"metadata":{"deletionTimestamp":"t"}}"#),
        ] {
            let o = Object::parse(&gvk(group, kind), json).unwrap();
            let bytes = encode_object(&o);
            let back = decode_object(&bytes).unwrap();
            assert_eq!(format!("{back:?}"), format!("{o:?}"), "{kind}");
        }
    }

    #[test]
    fn truncated_or_corrupt_input_is_an_error_not_a_panic() {
        let kind = gvk("apps", "Deployment");
        let object = Object::parse(&kind, DEPLOYMENT).unwrap();
        let header = Header {
            operation: Operation::Create,
            kind,
            namespace: "",
            name: "",
            dry_run: false,
        };
        let bytes = encode_input(&header, &object, DEPLOYMENT);
        for cut in 0..bytes.len() {
            assert!(decode_input(&bytes[..cut]).is_err());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = decode_input(&b);
        }
        assert!(
            decode_input(b"{}")
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
    }

    #[test]
    fn utf8_fast_path_agrees_with_from_utf8() {
        let long_ascii = "a".repeat(37);
        let long_mixed = format!("{}é{}", "b".repeat(20), "c".repeat(20));
        let cases: [&[u8]; 7] = [
            b"",
            b"abc",
            long_ascii.as_bytes(),
            long_mixed.as_bytes(),
            b"0123456789abcdef\xff",
            &[b'a'; 16],
            &[0xe2, 0x82],
        ];
        for bytes in cases {
            let fast = utf8(bytes).map(|(s, ascii)| (s.to_string(), ascii));
            let std = std::str::from_utf8(bytes).map(|s| (s.to_string(), s.is_ascii()));
            assert_eq!(fast.ok(), std.ok(), "{bytes:?}");
        }
    }
}
