//! A typed, borrowed view of a Kubernetes object: only the fields the walkers need.
//!
//! Shapes are chosen by `group/kind`, because only for built-in kinds does the API server
//! guarantee them (a custom resource may call anything `spec.template`). For every other kind
//! only `metadata` is read, which is the same for all objects.
//!
//! The view is defined here, in the API crate, because both sides build it: the host parses
//! the object's JSON once per request ([`Object::parse`]) and hands every guest the view in
//! the binary encoding of [`crate::codec`], which the guest decodes without copying strings.

use crate::{GroupVersionKind, ValueSource, skim};
use base64::Engine as _;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Unexpected, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The object under review.
#[derive(Debug, Default)]
pub struct Object<'a> {
    pub kind: String,
    pub metadata: ObjectMeta<'a>,
    /// Pod spec, workload spec or CronJob spec, by kind.
    pub spec: Option<Spec<'a>>,
    /// Top-level `template` of a PodTemplate.
    pub template: Option<PodTemplateSpec<'a>>,
    /// ConfigMap `data`, or Secret `data` (still base64).
    pub data: StrMap<'a>,
    /// Secret `stringData` (manifests; the API server folds it into `data`).
    pub string_data: StrMap<'a>,
}

/// How a kind is laid out, which decides what is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `spec` is a pod spec.
    Pod,
    /// `spec.template` (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job).
    Workload,
    /// `spec.jobTemplate.spec.template`.
    CronJob,
    /// top-level `template`.
    PodTemplate,
    ConfigMap,
    Secret,
    /// anything else: metadata only.
    Other,
}

fn shape(group: &str, kind: &str) -> Shape {
    match (group, kind) {
        ("", "Pod") => Shape::Pod,
        ("", "PodTemplate") => Shape::PodTemplate,
        ("", "ReplicationController")
        | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => Shape::Workload,
        ("batch", "CronJob") => Shape::CronJob,
        ("", "ConfigMap") => Shape::ConfigMap,
        ("", "Secret") => Shape::Secret,
        _ => Shape::Other,
    }
}

#[derive(Deserialize)]
struct WithSpec<'a> {
    #[serde(default, borrow)]
    metadata: ObjectMeta<'a>,
    #[serde(default, borrow)]
    spec: Option<Spec<'a>>,
}

#[derive(Deserialize)]
struct WithTemplate<'a> {
    #[serde(default, borrow)]
    metadata: ObjectMeta<'a>,
    #[serde(default, borrow)]
    template: Option<PodTemplateSpec<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WithData<'a> {
    #[serde(default, borrow)]
    metadata: ObjectMeta<'a>,
    #[serde(default, borrow)]
    data: StrMap<'a>,
    #[serde(default, borrow)]
    string_data: StrMap<'a>,
}

#[derive(Deserialize)]
struct MetaOnly<'a> {
    #[serde(default, borrow)]
    metadata: ObjectMeta<'a>,
}

/// Whether the view of `group`/`kind` reads nothing but `metadata` (every kind without a pod
/// spec, ConfigMap or Secret layout): a lister may then fetch metadata only.
pub fn reads_only_metadata(group: &str, kind: &str) -> bool {
    shape(group, kind) == Shape::Other
}

/// The object's JSON does not parse as the view of its kind.
#[derive(Debug, thiserror::Error)]
#[error("{kind} does not parse: {source}")]
pub struct ParseError {
    /// `group/version/Kind` (`version/Kind` for the core group).
    pub kind: String,
    pub source: serde_json::Error,
}

impl<'a> Object<'a> {
    /// Parses `json` as an object of kind `gvk`.
    pub fn parse(gvk: &GroupVersionKind, json: &'a str) -> Result<Self, ParseError> {
        let kind = gvk.kind.clone();
        let err = |source| ParseError {
            kind: display_kind(gvk),
            source,
        };
        Ok(match shape(&gvk.group, &gvk.kind) {
            Shape::Pod | Shape::Workload | Shape::CronJob => {
                let o: WithSpec = serde_json::from_str(json).map_err(err)?;
                Object {
                    kind,
                    metadata: o.metadata,
                    spec: o.spec,
                    ..Default::default()
                }
            }
            Shape::PodTemplate => {
                let o: WithTemplate = serde_json::from_str(json).map_err(err)?;
                Object {
                    kind,
                    metadata: o.metadata,
                    template: o.template,
                    ..Default::default()
                }
            }
            Shape::ConfigMap | Shape::Secret => {
                let o: WithData = serde_json::from_str(json).map_err(err)?;
                Object {
                    kind,
                    metadata: o.metadata,
                    data: o.data,
                    string_data: o.string_data,
                    ..Default::default()
                }
            }
            Shape::Other => {
                let o: MetaOnly = serde_json::from_str(json).map_err(err)?;
                Object {
                    kind,
                    metadata: o.metadata,
                    ..Default::default()
                }
            }
        })
    }

    /// [`Object::parse`] of an object known to be JSON, without reading its
    /// `metadata.managedFields`, which no policy's view holds: the parse reads a copy in
    /// `scratch` with that value written `null`. The same view, the same errors.
    ///
    /// Why: the API server sends the field managers' record of every field they set (3.8 of
    /// the benchmarks' Deployment's 8.7 KB, half its strings), and serde_json checks every byte
    /// of what a struct skips, though the review's parse has checked it already: 62,000 of a
    /// review's 400,000 instructions under callgrind; finding its end here costs 24,000.
    pub fn parse_skipping_managed_fields(
        gvk: &GroupVersionKind,
        json: &'a RawValue,
        scratch: &'a mut String,
    ) -> Result<Self, ParseError> {
        let text = json.get();
        let Some(managed) = managed_fields(text) else {
            return Object::parse(gvk, text);
        };
        scratch.clear();
        scratch.reserve(text.len() - managed.len() + 4);
        scratch.push_str(&text[..managed.start]);
        scratch.push_str("null");
        scratch.push_str(&text[managed.end..]);
        let copy: &'a String = scratch;
        // An error names a line and column: the original's, not the copy's.
        Object::parse(gvk, copy).or_else(|_| Object::parse(gvk, text))
    }

    fn is_secret(&self) -> bool {
        self.kind == "Secret"
    }
}

/// Where the value of the object's `metadata.managedFields` is, if it is written plainly.
fn managed_fields(object: &str) -> Option<std::ops::Range<usize>> {
    let bytes = object.as_bytes();
    let top = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let metadata = skim::member(bytes, top, "metadata")?;
    let start = skim::member(bytes, metadata, "managedFields")?;
    Some(start..skim::value_end(bytes, start)?)
}

pub(crate) fn display_kind(gvk: &GroupVersionKind) -> String {
    if gvk.group.is_empty() {
        format!("{}/{}", gvk.version, gvk.kind)
    } else {
        format!("{}/{}/{}", gvk.group, gvk.version, gvk.kind)
    }
}

/// The part of `metadata` policies read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta<'a> {
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub labels: StrMap<'a>,
    #[serde(default, borrow)]
    pub annotations: StrMap<'a>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub deletion_timestamp: Option<Cow<'a, str>>,
}

/// A spec: a pod spec (`containers`...), a workload spec (`template`) or a CronJob spec
/// (`jobTemplate`). One type, because the walk is the same and the kind decides what is set.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec<'a> {
    #[serde(default, borrow, deserialize_with = "nullable")]
    pub containers: Vec<Container<'a>>,
    #[serde(default, borrow, deserialize_with = "nullable")]
    pub init_containers: Vec<Container<'a>>,
    #[serde(default, borrow, deserialize_with = "nullable")]
    pub ephemeral_containers: Vec<Container<'a>>,
    #[serde(default, borrow)]
    pub template: Option<Box<PodTemplateSpec<'a>>>,
    #[serde(default, borrow)]
    pub job_template: Option<Box<PodTemplateSpec<'a>>>,
}

/// `metadata` + `spec`: a pod template, or a CronJob's job template.
#[derive(Debug, Default, Deserialize)]
pub struct PodTemplateSpec<'a> {
    #[serde(default, borrow)]
    pub metadata: ObjectMeta<'a>,
    #[serde(default, borrow)]
    pub spec: Option<Spec<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container<'a> {
    #[serde(default, borrow)]
    pub name: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub image: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "str_list")]
    pub command: Vec<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "str_list")]
    pub args: Vec<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "nullable")]
    pub env: Vec<EnvVar<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar<'a> {
    #[serde(default, borrow)]
    pub name: Cow<'a, str>,
    /// The literal value; `None` when unset or when the variable uses `valueFrom`.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub value: Option<Cow<'a, str>>,
    /// Whether the variable has a `valueFrom` (a reference, never a literal).
    #[serde(default, deserialize_with = "present")]
    pub value_from: bool,
}

/// `true` when the field is there and not `null`, whatever its content.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<IgnoredAny>::deserialize(d)?.is_some())
}

fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A JSON string, borrowed from the input unless it has escapes. serde's own `Cow<str>` borrows
/// only as a field's whole type: inside an `Option` or a `Vec` it always copies.
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BorrowedStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor::<false>).map(BorrowedStr)
    }
}

/// The one visitor of text in the view: a string borrowed from the input unless it has
/// escapes; with `SCALARS`, also `null` (empty) and any other scalar, as its text.
struct TextVisitor<const SCALARS: bool>;

impl<const SCALARS: bool> TextVisitor<SCALARS> {
    fn scalar<'de, E: de::Error>(
        &self,
        text: String,
        found: Unexpected<'_>,
    ) -> Result<Cow<'de, str>, E> {
        if SCALARS {
            Ok(Cow::Owned(text))
        } else {
            Err(E::invalid_type(found, self))
        }
    }
}

impl<'de, const SCALARS: bool> Visitor<'de> for TextVisitor<SCALARS> {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if SCALARS {
            "a string or scalar"
        } else {
            "a string"
        })
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.scalar(v.to_string(), Unexpected::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.scalar(v.to_string(), Unexpected::Signed(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.scalar(v.to_string(), Unexpected::Unsigned(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.scalar(v.to_string(), Unexpected::Float(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.scalar(String::new(), Unexpected::Unit)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.scalar(String::new(), Unexpected::Option)
    }
}

/// An optional string, borrowed where it can be (see [`BorrowedStr`]).
fn opt_str<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<BorrowedStr<'a>>::deserialize(d)?.map(|s| s.0))
}

/// A list of strings (`null` is empty), each borrowed where it can be (see [`BorrowedStr`]).
fn str_list<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Vec<Cow<'a, str>>, D::Error> {
    let list: Vec<BorrowedStr<'a>> = nullable(d)?;
    // The same allocation: a newtype is collected in place.
    Ok(list.into_iter().map(|s| s.0).collect())
}

/// A string-to-string map in document order (labels, annotations, ConfigMap data).
///
/// Lenient where manifests are sloppy: `null` and non-string scalars (`enabled: true`
/// unquoted in YAML) are kept as text rather than failing the whole object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StrMap<'a>(pub Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> StrMap<'a> {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A scalar read as text (see [`TextVisitor`]).
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor::<true>).map(Text)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for StrMap<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrMap<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StrMap::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StrMap::default())
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((k, v)) = map.next_entry::<Text<'de>, Text<'de>>()? {
                    out.push((k.0, v.0));
                }
                Ok(StrMap(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Which container list a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    Container,
    Init,
    Ephemeral,
}

/// A pod spec and its field path (`spec.template.spec`).
pub struct PodSpecRef<'o, 'a> {
    pub path: Cow<'static, str>,
    pub spec: &'o Spec<'a>,
}

/// A container and its field path (`spec.template.spec.initContainers[0]`).
pub struct ContainerRef<'o, 'a> {
    pub path: ContainerPath,
    pub kind: ContainerKind,
    pub container: &'o Container<'a>,
}

/// The field path of a container, formatted only when displayed (most walks never do: an
/// allowed object needs no paths at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPath {
    /// The pod spec's path, `spec.template.spec`.
    pub pod: Cow<'static, str>,
    /// `containers`, `initContainers` or `ephemeralContainers`.
    pub field: &'static str,
    pub index: usize,
}

impl fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}[{}]", self.pod, self.field, self.index)
    }
}

/// `a == b`, eight bytes at a time: in a wasm guest `==` on strings ends in a byte-by-byte
/// `memcmp`, and env names sharing a length (`CODEXK8S_...`) are compared on every request.
#[inline]
pub(crate) fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        if u64::from_le_bytes(x.try_into().unwrap()) != u64::from_le_bytes(y.try_into().unwrap()) {
            return false;
        }
    }
    ca.remainder() == cb.remainder()
}

/// The paths the walkers produce for every real kind, so walking them allocates nothing.
const KNOWN_PATHS: &[&str] = &[
    "spec.template",
    "spec.template.spec",
    "spec.template.metadata",
    "spec.jobTemplate",
    "spec.jobTemplate.spec",
    "spec.jobTemplate.metadata",
    "spec.jobTemplate.spec.template",
    "spec.jobTemplate.spec.template.spec",
    "spec.jobTemplate.spec.template.metadata",
];

/// `{base}.{field}`, borrowed from [`KNOWN_PATHS`] when it is one of them.
fn sub_path(base: &str, field: &str) -> Cow<'static, str> {
    let len = base.len() + 1 + field.len();
    let known = KNOWN_PATHS.iter().find(|k| {
        k.len() == len
            && k.strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|rest| rest == field)
    });
    match known {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(format!("{base}.{field}")),
    }
}

/// A literal value that a setting can take, wherever it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal<'o> {
    /// `spec.template.spec.containers[0].env[NAME]`, `data.NAME`, `stringData.NAME`.
    pub path: String,
    /// The variable or key name.
    pub name: &'o str,
    pub value: Cow<'o, str>,
    pub source: ValueSource,
}

impl Literal<'_> {
    /// A violation at this literal's path; the value is attached unless it comes from a Secret.
    pub fn violation(
        &self,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> crate::Violation {
        crate::Violation {
            path: self.path.clone(),
            message: message.into(),
            value: match self.source {
                ValueSource::Literal => Some(self.value.to_string()),
                ValueSource::Secret => None,
            },
            source: self.source,
            fix: fix.into(),
        }
    }
}

/// Whether a metadata entry is a label or an annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaField {
    Label,
    Annotation,
}

impl MetaField {
    pub fn as_str(self) -> &'static str {
        match self {
            MetaField::Label => "label",
            MetaField::Annotation => "annotation",
        }
    }
}

/// One label or annotation of the object or of a template inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaEntry<'o> {
    /// `metadata.labels[app]`, `spec.template.metadata.annotations[x]`.
    pub path: String,
    pub field: MetaField,
    pub key: &'o str,
    pub value: &'o str,
}

impl<'a> Object<'a> {
    /// Every pod spec in the object, outermost first.
    pub fn pod_specs(&self) -> Vec<PodSpecRef<'_, 'a>> {
        let mut out = Vec::new();
        if let Some(spec) = &self.spec {
            walk_spec(spec, Cow::Borrowed("spec"), &mut out);
        }
        if let Some(spec) = self.template.as_ref().and_then(|t| t.spec.as_ref()) {
            walk_spec(spec, Cow::Borrowed("template.spec"), &mut out);
        }
        out
    }

    /// Every container of every pod spec: containers, initContainers, ephemeralContainers.
    pub fn containers(&self) -> Vec<ContainerRef<'_, 'a>> {
        let mut out = Vec::new();
        for pod in self.pod_specs() {
            for (list, kind, field) in [
                (&pod.spec.containers, ContainerKind::Container, "containers"),
                (
                    &pod.spec.init_containers,
                    ContainerKind::Init,
                    "initContainers",
                ),
                (
                    &pod.spec.ephemeral_containers,
                    ContainerKind::Ephemeral,
                    "ephemeralContainers",
                ),
            ] {
                for (index, container) in list.iter().enumerate() {
                    out.push(ContainerRef {
                        path: ContainerPath {
                            pod: pod.path.clone(),
                            field,
                            index,
                        },
                        kind,
                        container,
                    });
                }
            }
        }
        out
    }

    /// Every `env[].value` literal (variables using `valueFrom` are references and skipped).
    /// A variable with neither is the empty string, as Kubernetes sets it: the API server
    /// drops an empty `value` before any webhook sees the object, so `value: ""` and no
    /// `value` must be judged alike.
    pub fn env_literals(&self) -> Vec<Literal<'_>> {
        let mut out = Vec::new();
        self.env_literals_into(|_| true, &mut out);
        out
    }

    /// The env literals whose variable name passes `keep`; paths are formatted only for those.
    fn env_literals_into<'o>(&'o self, keep: impl Fn(&str) -> bool, out: &mut Vec<Literal<'o>>) {
        for c in self.containers() {
            for var in &c.container.env {
                let value = match (&var.value, var.value_from) {
                    (Some(value), _) => value.as_ref(),
                    (None, false) => "",
                    (None, true) => continue,
                };
                if !keep(&var.name) {
                    continue;
                }
                out.push(Literal {
                    path: format!("{}.env[{}]", c.path, var.name),
                    name: &var.name,
                    value: Cow::Borrowed(value),
                    source: ValueSource::Literal,
                });
            }
        }
    }

    /// ConfigMap `data`, Secret `data` (base64-decoded; undecodable values are skipped, the
    /// API server rejects them anyway) and Secret `stringData`.
    pub fn config_entries(&self) -> Vec<Literal<'_>> {
        let mut out = Vec::new();
        self.config_entries_into(|_| true, &mut out);
        out
    }

    /// The bytes of the config entry at `path`, as [`Object::config_entries`] names it
    /// (`data.K`, `stringData.K`; a Secret's `data` base64-decoded). The host compares a
    /// Secret's values with it (ratcheting) where a violation carries no value to compare.
    pub fn config_value(&self, path: &str) -> Option<Vec<u8>> {
        if let Some(key) = path.strip_prefix("data.") {
            let v = self.data.get(key)?;
            return if self.is_secret() {
                base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .ok()
            } else {
                Some(v.as_bytes().to_vec())
            };
        }
        let key = path.strip_prefix("stringData.")?;
        self.string_data.get(key).map(|v| v.as_bytes().to_vec())
    }

    /// The config entries whose key passes `keep`; only those are decoded and given a path.
    fn config_entries_into<'o>(&'o self, keep: impl Fn(&str) -> bool, out: &mut Vec<Literal<'o>>) {
        let secret = self.is_secret();
        let source = if secret {
            ValueSource::Secret
        } else {
            ValueSource::Literal
        };
        for (k, v) in self.data.iter() {
            if !keep(k) {
                continue;
            }
            let value = if secret {
                match base64::engine::general_purpose::STANDARD.decode(v.trim()) {
                    Ok(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
                    Err(_) => continue,
                }
            } else {
                Cow::Borrowed(v)
            };
            out.push(Literal {
                path: format!("data.{k}"),
                name: k,
                value,
                source,
            });
        }
        for (k, v) in self.string_data.iter() {
            if !keep(k) {
                continue;
            }
            out.push(Literal {
                path: format!("stringData.{k}"),
                name: k,
                value: Cow::Borrowed(v),
                source,
            });
        }
    }

    /// Every literal that an environment variable called `name` can take from this object:
    /// container env literals and ConfigMap/Secret keys of that name.
    ///
    /// Names are compared first; a path is formatted (and a Secret value decoded) only for
    /// the matches, so a walk over an object without the variable allocates nothing per entry.
    pub fn literals_named(&self, name: &str) -> Vec<Literal<'_>> {
        let mut out = Vec::new();
        self.env_literals_into(|n| same(n, name), &mut out);
        self.config_entries_into(|k| same(k, name), &mut out);
        out
    }

    /// Every metadata block: the object's and each embedded template's, with its path.
    pub fn metadata_blocks(&self) -> Vec<(Cow<'static, str>, &ObjectMeta<'a>)> {
        let mut out = vec![(Cow::Borrowed("metadata"), &self.metadata)];
        fn templates<'o, 'a>(
            spec: &'o Spec<'a>,
            path: &str,
            out: &mut Vec<(Cow<'static, str>, &'o ObjectMeta<'a>)>,
        ) {
            for (field, t) in [
                ("template", &spec.template),
                ("jobTemplate", &spec.job_template),
            ] {
                if let Some(t) = t {
                    let p = sub_path(path, field);
                    out.push((sub_path(&p, "metadata"), &t.metadata));
                    if let Some(inner) = &t.spec {
                        templates(inner, &sub_path(&p, "spec"), out);
                    }
                }
            }
        }
        if let Some(spec) = &self.spec {
            templates(spec, "spec", &mut out);
        }
        if let Some(t) = &self.template {
            out.push((Cow::Borrowed("template.metadata"), &t.metadata));
        }
        out
    }

    /// Every label and annotation of the object and of every embedded template.
    pub fn metadata_entries(&self) -> Vec<MetaEntry<'_>> {
        self.metadata_entries_matching(|_, _| true)
    }

    /// The labels and annotations for which `keep(field, key)` holds, in the same order as
    /// [`Object::metadata_entries`]; paths are formatted only for those.
    pub fn metadata_entries_matching(
        &self,
        keep: impl Fn(MetaField, &str) -> bool,
    ) -> Vec<MetaEntry<'_>> {
        let mut out = Vec::new();
        for (path, meta) in self.metadata_blocks() {
            for (field, map, name) in [
                (MetaField::Label, &meta.labels, "labels"),
                (MetaField::Annotation, &meta.annotations, "annotations"),
            ] {
                for (key, value) in map.iter() {
                    if !keep(field, key) {
                        continue;
                    }
                    out.push(MetaEntry {
                        path: format!("{path}.{name}[{key}]"),
                        field,
                        key,
                        value,
                    });
                }
            }
        }
        out
    }
}

fn walk_spec<'o, 'a>(
    spec: &'o Spec<'a>,
    path: Cow<'static, str>,
    out: &mut Vec<PodSpecRef<'o, 'a>>,
) {
    if !spec.containers.is_empty()
        || !spec.init_containers.is_empty()
        || !spec.ephemeral_containers.is_empty()
    {
        out.push(PodSpecRef {
            path: path.clone(),
            spec,
        });
    }
    for (field, t) in [
        ("template", &spec.template),
        ("jobTemplate", &spec.job_template),
    ] {
        if let Some(inner) = t.as_ref().and_then(|t| t.spec.as_ref()) {
            walk_spec(inner, sub_path(&sub_path(&path, field), "spec"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_agrees_with_eq() {
        let words = [
            "",
            "A",
            "CODEXK8S_BUILD_REF",
            "CODEXK8S_BUILD_REX",
            "XODEXK8S_BUILD_REF",
            "CODEXK8S_KANIKO_CACHE_ENABLED",
            "CODEXK8S_KANIKO_CACHE_ENABLEE",
            "12345678",
            "12345679",
            "é",
        ];
        for a in words {
            for b in words {
                assert_eq!(same(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
    }

    /// The API server's normal form drops an empty `value`: judged as the empty string it
    /// is, never skipped; `valueFrom` stays a reference.
    #[test]
    fn an_env_var_without_value_is_the_empty_string() {
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","env":[
                {"name":"EMPTY"},
                {"name":"EMPTY_WRITTEN","value":""},
                {"name":"REF","valueFrom":{"secretKeyRef":{"name":"s","key":"k"}}},
                {"name":"SET","value":"main"}]}]}}"#;
        let pod_gvk = GroupVersionKind {
            group: String::new(),
            version: "v1".into(),
            kind: "Pod".into(),
        };
        let object = Object::parse(&pod_gvk, pod).unwrap();
        let found = object.env_literals();
        let literals: Vec<(&str, &str)> =
            found.iter().map(|l| (l.name, l.value.as_ref())).collect();
        assert_eq!(
            literals,
            [("EMPTY", ""), ("EMPTY_WRITTEN", ""), ("SET", "main")]
        );
    }

    /// The view points into the object's JSON: a string without escapes is never copied
    /// (the webhook parses every object it judges, tens of strings each).
    #[test]
    fn strings_without_escapes_are_borrowed_from_the_json() {
        let json = r#"{"metadata":{"name":"d","namespace":"n","labels":{"a":"b"}},"spec":{"template":{"metadata":{},"spec":{
            "containers":[{"name":"c","image":"img:1","command":["sh"],"args":["-c","x"],"env":[{"name":"K","value":"v"}]}],
            "initContainers":[{"name":"i","image":"esc\\aped"}]}}}}"#;
        let gvk = GroupVersionKind {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
        };
        let o = Object::parse(&gvk, json).unwrap();
        let borrowed = |c: &Cow<'_, str>| matches!(c, Cow::Borrowed(_));
        assert!(o.metadata.name.as_ref().is_some_and(borrowed));
        assert!(o.metadata.namespace.as_ref().is_some_and(borrowed));
        let pod = o.spec.unwrap().template.unwrap().spec.unwrap();
        let c = &pod.containers[0];
        assert!(borrowed(&c.name));
        assert!(c.image.as_ref().is_some_and(borrowed), "image");
        assert!(
            c.command.iter().chain(&c.args).all(borrowed),
            "command and args"
        );
        assert!(c.env[0].value.as_ref().is_some_and(borrowed), "env value");
        // An escape needs a copy: the text is what the JSON says, unescaped.
        let image = pod.init_containers[0].image.as_ref().unwrap();
        assert!(!borrowed(image));
        assert_eq!(image, "esc\\aped");
    }

    /// Labels and annotations take any scalar as its text (YAML's unquoted `true`); a field
    /// that must be a string refuses a number, and says what it expected.
    #[test]
    fn maps_read_scalars_as_text_and_string_fields_refuse_them() {
        let gvk = GroupVersionKind {
            group: String::new(),
            version: "v1".into(),
            kind: "Pod".into(),
        };
        let json = r#"{"metadata":{"name":"p","labels":{"on":true,"n":-3,"u":7,"f":1.5,"none":null,"s":"x"}}}"#;
        let o = Object::parse(&gvk, json).unwrap();
        let labels: Vec<(&str, &str)> = o.metadata.labels.iter().collect();
        assert_eq!(
            labels,
            [
                ("on", "true"),
                ("n", "-3"),
                ("u", "7"),
                ("f", "1.5"),
                ("none", ""),
                ("s", "x")
            ]
        );
        let Err(err) = Object::parse(&gvk, r#"{"metadata":{"name":5}}"#) else {
            panic!("a number is not a name");
        };
        assert!(err.to_string().contains("expected a string"), "{err}");
    }

    #[test]
    fn sub_paths_borrow_known_paths_and_format_the_rest() {
        assert!(matches!(
            sub_path("spec", "template"),
            Cow::Borrowed("spec.template")
        ));
        assert!(matches!(
            sub_path("spec.jobTemplate.spec", "template"),
            Cow::Borrowed("spec.jobTemplate.spec.template")
        ));
        // A prefix of a known path with the wrong field is not that path.
        assert_eq!(sub_path("spec", "templatx"), "spec.templatx");
        assert!(matches!(sub_path("x.spec", "template"), Cow::Owned(_)));
        assert_eq!(sub_path("x.spec", "template"), "x.spec.template");
    }

    #[test]
    fn container_paths_display_like_kubectl() {
        let path = ContainerPath {
            pod: Cow::Borrowed("spec.jobTemplate.spec.template.spec"),
            field: "initContainers",
            index: 2,
        };
        assert_eq!(
            path.to_string(),
            "spec.jobTemplate.spec.template.spec.initContainers[2]"
        );
    }

    #[test]
    fn config_values_are_the_raw_bytes_at_the_walkers_paths() {
        let gvk = |kind: &str| GroupVersionKind {
            group: String::new(),
            version: "v1".into(),
            kind: kind.into(),
        };
        // "LWIgeA==" is "-b x"
        let secret = r#"{"metadata":{},"data":{"K":"LWIgeA=="},"stringData":{"S":"plain"}}"#;
        let o = Object::parse(&gvk("Secret"), secret).unwrap();
        assert_eq!(o.config_value("data.K").as_deref(), Some(&b"-b x"[..]));
        assert_eq!(
            o.config_value("stringData.S").as_deref(),
            Some(&b"plain"[..])
        );
        assert_eq!(o.config_value("data.missing"), None);
        assert_eq!(o.config_value("metadata.labels[K]"), None);
        for entry in o.config_entries() {
            assert_eq!(
                o.config_value(&entry.path).as_deref(),
                Some(entry.value.as_bytes())
            );
        }
        let cm = r#"{"metadata":{},"data":{"K":"LWIgeA=="}}"#;
        let o = Object::parse(&gvk("ConfigMap"), cm).unwrap();
        assert_eq!(o.config_value("data.K").as_deref(), Some(&b"LWIgeA=="[..]));
    }

    /// Skipping `metadata.managedFields` changes nothing a policy sees: the same view, or the
    /// same error at the same line and column, for every kind's shape, wherever the field
    /// sits, however the text is spaced; and it is skipped only where it is that field.
    #[test]
    fn skipping_managed_fields_gives_the_same_view_and_errors() {
        let gvk = |group: &str, kind: &str| GroupVersionKind {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
        };
        let managed = serde_json::json!([{"manager": "kubectl-create", "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                         "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {}}}}}}}]);
        let pod_spec = serde_json::json!({"containers": [{"name": "web", "image": "nginx",
            "args": ["-b", "x"], "env": [{"name": "CODEXK8S_BUILD_REF", "value": "-b \"quoted\" \u{e9}"}]}]});
        let bodies = [
            (
                gvk("apps", "Deployment"),
                serde_json::json!({"spec": {"template": {
                "metadata": {"labels": {"app": "web"}, "managedFields": "not skipped: a template's"},
                "spec": pod_spec}}}),
            ),
            (gvk("", "Pod"), serde_json::json!({"spec": pod_spec})),
            (
                gvk("batch", "CronJob"),
                serde_json::json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}}),
            ),
            (
                gvk("", "ConfigMap"),
                serde_json::json!({"data": {"managedFields": "-b x", "K": "v"}}),
            ),
            (
                gvk("", "Secret"),
                serde_json::json!({"data": {"K": "LWIgeA=="}, "stringData": {"S": "-b y"}}),
            ),
            (
                gvk("example.com", "Widget"),
                serde_json::json!({"spec": {"metadata": {"managedFields": 1}}}),
            ),
            // Errors after the skipped field: named where they are in the original.
            (
                gvk("apps", "Deployment"),
                serde_json::json!({"spec": {"template": {"spec": {"containers": "web"}}}}),
            ),
            (gvk("", "ConfigMap"), serde_json::json!({"data": {"K": 5}})),
        ];
        let mut skipped = 0;
        for (kind, body) in &bodies {
            for position in 0..4 {
                // managedFields first, between, or last in metadata; metadata first or last.
                // Written by hand: serde_json's maps sort their keys.
                let mut meta = vec![
                    r#""name":"web""#.to_string(),
                    r#""labels":{"codexk8s.io/x":"1","a\"b":"c"}"#.to_string(),
                    r#""annotations":{"note":"managedFields"}"#.to_string(),
                ];
                meta.insert(position.min(3), format!(r#""managedFields":{managed}"#));
                let meta = format!(r#""metadata":{{{}}}"#, meta.join(","));
                let body = body.to_string();
                let rest = &body[1..body.len() - 1];
                let compact = if position % 2 == 0 {
                    format!("{{{meta},{rest}}}")
                } else {
                    format!("{{{rest},{meta}}}")
                };
                let value: serde_json::Value = serde_json::from_str(&compact).unwrap();
                for text in [
                    compact.clone(),
                    serde_json::to_string_pretty(&value).unwrap(),
                    format!(" \n{}\t", serde_json::to_string_pretty(&value).unwrap()),
                ] {
                    let raw = RawValue::from_string(text.clone()).unwrap();
                    let mut scratch = String::new();
                    let fast = Object::parse_skipping_managed_fields(kind, &raw, &mut scratch);
                    let full = Object::parse(kind, raw.get());
                    assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{kind:?} {text}");
                    let span =
                        managed_fields(&text).expect("a plainly written managedFields is found");
                    assert_eq!(
                        serde_json::from_str::<serde_json::Value>(&text[span]).unwrap(),
                        managed
                    );
                    skipped += 1;
                }
            }
        }
        assert_eq!(skipped, bodies.len() * 4 * 3);

        // Not found, so read as before: escaped, absent, not in `metadata`, not an object.
        for text in [
            r#"{"metadata":{"managed\u0046ields":[1],"name":"a"}}"#,
            r#"{"metadata":{"name":"a"},"managedFields":[1]}"#,
            r#"{"spec":{"metadata":{"managedFields":[1]}}}"#,
            r#"{"metadata":null}"#,
            "null",
            "[]",
            r#""metadata""#,
        ] {
            assert_eq!(managed_fields(text), None, "{text}");
            let raw = RawValue::from_string(text.to_string()).unwrap();
            let kind = gvk("", "ConfigMap");
            let mut scratch = String::new();
            let fast = Object::parse_skipping_managed_fields(&kind, &raw, &mut scratch);
            assert_eq!(
                format!("{fast:?}"),
                format!("{:?}", Object::parse(&kind, raw.get()))
            );
        }
    }
}
