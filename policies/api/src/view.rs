//! A typed, borrowed view of a Kubernetes object: only the fields the walkers need.
//!
//! Shapes are chosen by `group/kind`, because only for built-in kinds does the API server
//! guarantee them (a custom resource may call anything `spec.template`). For every other kind
//! only `metadata` is read, which is the same for all objects.
//!
//! The view is defined here, in the API crate, because both sides build it: the host parses
//! the object's JSON once per request ([`Object::parse`]) and hands every guest the view in
//! the binary encoding of [`crate::codec`], which the guest decodes without copying strings.

use crate::{GroupVersionKind, ValueSource};
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
        Self::read(gvk, json, false)
    }

    /// [`Object::parse`] of an object known to be JSON: the same view and the same errors,
    /// without checking its bytes again (`crate::valid`; when that reader balks, serde_json
    /// parses).
    ///
    /// Why: serde_json checks every byte of what the view skips, above all the field managers'
    /// record of every field they set (`metadata.managedFields`, 3.8 of the benchmarks'
    /// Deployment's 8.7 KB), though the review's parse has checked them already: this parse
    /// cost 125,600 of a review's 400,000 instructions under callgrind.
    pub fn parse_valid(gvk: &GroupVersionKind, json: &'a RawValue) -> Result<Self, ParseError> {
        Self::read(gvk, json.get(), true)
    }

    fn read(gvk: &GroupVersionKind, json: &'a str, valid: bool) -> Result<Self, ParseError> {
        let kind = gvk.kind.clone();
        let err = |source| ParseError {
            kind: display_kind(gvk),
            source,
        };
        Ok(match shape(&gvk.group, &gvk.kind) {
            Shape::Pod | Shape::Workload | Shape::CronJob => {
                let o: WithSpec = from_json(json, valid).map_err(err)?;
                Object {
                    kind,
                    metadata: o.metadata,
                    spec: o.spec,
                    ..Default::default()
                }
            }
            Shape::PodTemplate => {
                let o: WithTemplate = from_json(json, valid).map_err(err)?;
                Object {
                    kind,
                    metadata: o.metadata,
                    template: o.template,
                    ..Default::default()
                }
            }
            Shape::ConfigMap | Shape::Secret => {
                let o: WithData = from_json(json, valid).map_err(err)?;
                Object {
                    kind,
                    metadata: o.metadata,
                    data: o.data,
                    string_data: o.string_data,
                    ..Default::default()
                }
            }
            Shape::Other => {
                let o: MetaOnly = from_json(json, valid).map_err(err)?;
                Object {
                    kind,
                    metadata: o.metadata,
                    ..Default::default()
                }
            }
        })
    }

    fn is_secret(&self) -> bool {
        self.kind == "Secret"
    }
}

/// `T` from `json`: read without checking if `valid` (the text is known to be JSON) and that
/// reader can, else by serde_json, whose error is the one a caller sees.
fn from_json<'a, T: Deserialize<'a>>(json: &'a str, valid: bool) -> serde_json::Result<T> {
    if valid && let Ok(value) = crate::valid::from_valid_str(json) {
        return Ok(value);
    }
    serde_json::from_str(json)
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
    pub path: LiteralPath<'o>,
    /// The variable or key name.
    pub name: &'o str,
    pub value: Cow<'o, str>,
    pub source: ValueSource,
}

/// Where a [`Literal`] is written, formatted only when displayed: a policy looks at every
/// literal of the names it watches, and an allowed object needs none of their paths (in a
/// wasm guest the formatting machinery is code a review would otherwise fetch for nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiteralPath<'o> {
    /// `<container>.env[NAME]`.
    Env {
        container: ContainerPath,
        name: &'o str,
    },
    /// `data.KEY` of a ConfigMap or Secret.
    Data(&'o str),
    /// `stringData.KEY` of a Secret.
    StringData(&'o str),
}

impl fmt::Display for LiteralPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiteralPath::Env { container, name } => write!(f, "{container}.env[{name}]"),
            LiteralPath::Data(key) => write!(f, "data.{key}"),
            LiteralPath::StringData(key) => write!(f, "stringData.{key}"),
        }
    }
}

impl Literal<'_> {
    /// A violation at this literal's path; the value is attached unless it comes from a Secret.
    pub fn violation(
        &self,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> crate::Violation {
        crate::Violation {
            path: self.path.to_string(),
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
                    path: LiteralPath::Env {
                        container: c.path.clone(),
                        name: &var.name,
                    },
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
                path: LiteralPath::Data(k),
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
                path: LiteralPath::StringData(k),
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
        let paths: Vec<String> = o
            .config_entries()
            .iter()
            .map(|e| e.path.to_string())
            .collect();
        assert_eq!(paths, ["data.K", "stringData.S"]);
        for entry in o.config_entries() {
            assert_eq!(
                o.config_value(&entry.path.to_string()).as_deref(),
                Some(entry.value.as_bytes())
            );
        }
        let cm = r#"{"metadata":{},"data":{"K":"LWIgeA=="}}"#;
        let o = Object::parse(&gvk("ConfigMap"), cm).unwrap();
        assert_eq!(o.config_value("data.K").as_deref(), Some(&b"LWIgeA=="[..]));
    }

    /// Whether the reader for valid JSON read `text` as `gvk`'s view by itself.
    fn read_without_serde_json(gvk: &GroupVersionKind, text: &str) -> bool {
        match shape(&gvk.group, &gvk.kind) {
            Shape::Pod | Shape::Workload | Shape::CronJob => {
                crate::valid::from_valid_str::<WithSpec>(text).is_ok()
            }
            Shape::PodTemplate => crate::valid::from_valid_str::<WithTemplate>(text).is_ok(),
            Shape::ConfigMap | Shape::Secret => {
                crate::valid::from_valid_str::<WithData>(text).is_ok()
            }
            Shape::Other => crate::valid::from_valid_str::<MetaOnly>(text).is_ok(),
        }
    }

    fn gvk(group: &str, kind: &str) -> GroupVersionKind {
        GroupVersionKind::new(group, "v1", kind)
    }

    /// What the view of a known-JSON object holds does not depend on who reads it: the same
    /// view, or the same error at the same line and column, for every kind's shape, wherever
    /// `managedFields` sits, however the text is spaced.
    #[test]
    fn the_valid_reader_gives_serde_jsons_view_and_errors() {
        let managed = r#"[{"manager":"kubectl-create","operation":"Update","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{}}}}}}}]"#;
        let pod_spec = r#"{"containers":[{"name":"web","image":"nginx","args":["-b","x"],"resources":{"limits":{"cpu":0.5}},"env":[{"name":"CODEXK8S_BUILD_REF","value":"-b \"quoted\" \u00e9 \ud83d\ude00"},{"name":"R","valueFrom":{"secretKeyRef":{"name":"s"}}}]}],"initContainers":null}"#;
        let bodies = [
            (
                gvk("apps", "Deployment"),
                format!(
                    r#""spec":{{"replicas":2,"template":{{"metadata":{{"labels":{{"app":"web"}},"managedFields":"a template's"}},"spec":{pod_spec}}}}},"status":{{}}"#
                ),
                true,
            ),
            (gvk("", "Pod"), format!(r#""spec":{pod_spec}"#), true),
            (
                gvk("batch", "CronJob"),
                format!(
                    r#""spec":{{"jobTemplate":{{"spec":{{"template":{{"spec":{pod_spec}}}}}}}}}"#
                ),
                true,
            ),
            (
                gvk("", "PodTemplate"),
                format!(r#""template":{{"spec":{pod_spec}}}"#),
                true,
            ),
            (
                gvk("", "ConfigMap"),
                r#""data":{"managedFields":"-b x","K":"v","N":5}"#.to_string(),
                true,
            ),
            (
                gvk("", "Secret"),
                r#""data":{"K":"LWIgeA=="},"stringData":{"S":"-b y"}"#.to_string(),
                true,
            ),
            (
                gvk("example.com", "Widget"),
                r#""spec":{"metadata":{"managedFields":1}}"#.to_string(),
                true,
            ),
            // Errors after managedFields: serde_json's, where they are.
            (
                gvk("apps", "Deployment"),
                r#""spec":{"template":{"spec":{"containers":"web"}}}"#.to_string(),
                false,
            ),
            (
                gvk("", "Pod"),
                r#""spec":{"containers":[{"name":"a","image":5}]}"#.to_string(),
                false,
            ),
            (gvk("", "Secret"), r#""data":{"K":[]}"#.to_string(), false),
        ];
        let mut cases = 0;
        for (kind, body, readable) in &bodies {
            for position in 0..4 {
                let mut meta = vec![
                    r#""name":"web""#.to_string(),
                    r#""labels":{"codexk8s.io/x":"1","a\"b":"c","n":1}"#.to_string(),
                    r#""annotations":{"note":"managedFields","e":"\u0041\n"}"#.to_string(),
                ];
                meta.insert(position.min(3), format!(r#""managedFields":{managed}"#));
                let meta = format!(r#""metadata":{{{}}}"#, meta.join(","));
                let compact = if position % 2 == 0 {
                    format!("{{{meta},{body}}}")
                } else {
                    format!("{{{body},{meta}}}")
                };
                let value: serde_json::Value = serde_json::from_str(&compact).unwrap();
                for text in [
                    compact.clone(),
                    serde_json::to_string_pretty(&value).unwrap(),
                    format!(" \n{compact}\t"),
                ] {
                    let raw = RawValue::from_string(text.clone()).unwrap();
                    let valid = Object::parse_valid(kind, &raw);
                    let full = Object::parse(kind, raw.get());
                    assert_eq!(format!("{valid:?}"), format!("{full:?}"), "{kind:?} {text}");
                    assert_eq!(valid.is_ok(), *readable, "{kind:?} {text}");
                    assert_eq!(read_without_serde_json(kind, &text), *readable, "{text}");
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, bodies.len() * 4 * 3);
    }

    /// Random objects, of the view's field names and of every JSON type, with duplicates,
    /// escapes and odd spacing: the reader for valid JSON and serde_json agree on each, and
    /// the reader reads many of them by itself.
    #[test]
    fn random_objects_read_the_same_with_and_without_checking() {
        const KEYS: &[&str] = &[
            "metadata",
            "name",
            "namespace",
            "labels",
            "annotations",
            "deletionTimestamp",
            "managedFields",
            "spec",
            "template",
            "jobTemplate",
            "containers",
            "initContainers",
            "ephemeralContainers",
            "env",
            "value",
            "valueFrom",
            "image",
            "command",
            "args",
            "data",
            "stringData",
            "status",
            "x",
            r"na\u006de",
            r#"a\"b"#,
        ];
        const STRINGS: &[&str] = &[
            "",
            "-b x",
            r"\u00e9\ud83d\ude00",
            r"tab\t\/",
            "CODEXK8S_BUILD_REF",
            r"\ud800",
            "codexk8s.io/x",
            r"\\",
        ];
        const NUMBERS: &[&str] = &[
            "0",
            "-1",
            "1.5",
            "1e3",
            "-2.5E-3",
            "18446744073709551615",
            "-9223372036854775808",
            "123456789012345678901234567890",
            "0.30000000000000004",
        ];
        const SPACE: &[&str] = &["", "", "", " ", "\n  ", "\t"];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        fn value(out: &mut String, depth: u32, next: &mut dyn FnMut(usize) -> usize) {
            let sp = |next: &mut dyn FnMut(usize) -> usize| SPACE[next(SPACE.len())];
            let choice = if depth == 0 { next(4) } else { next(7) };
            match choice {
                0 => {
                    out.push('"');
                    out.push_str(STRINGS[next(STRINGS.len())]);
                    out.push('"');
                }
                1 => out.push_str(NUMBERS[next(NUMBERS.len())]),
                2 => out.push_str(["true", "false"][next(2)]),
                3 => out.push_str("null"),
                4 | 5 => {
                    out.push('{');
                    for i in 0..next(5) {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(sp(next));
                        out.push('"');
                        out.push_str(KEYS[next(KEYS.len())]);
                        out.push('"');
                        out.push_str(sp(next));
                        out.push(':');
                        out.push_str(sp(next));
                        value(out, depth - 1, next);
                        out.push_str(sp(next));
                    }
                    out.push('}');
                }
                _ => {
                    out.push('[');
                    for i in 0..next(4) {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(sp(next));
                        value(out, depth - 1, next);
                    }
                    out.push(']');
                }
            }
        }
        let kinds = [
            gvk("apps", "Deployment"),
            gvk("", "PodTemplate"),
            gvk("", "Secret"),
            gvk("example.com", "Widget"),
        ];
        let (mut compared, mut read_alone) = (0, 0);
        for _ in 0..20_000 {
            let mut text = String::new();
            value(&mut text, 5, &mut next);
            // Lone surrogates are JSON to the review's check but not to serde_json's parse.
            let Ok(raw) = RawValue::from_string(text.clone()) else {
                continue;
            };
            for kind in &kinds {
                let valid = Object::parse_valid(kind, &raw);
                let full = Object::parse(kind, raw.get());
                assert_eq!(format!("{valid:?}"), format!("{full:?}"), "{kind:?} {text}");
                compared += 1;
                read_alone += usize::from(read_without_serde_json(kind, &text));
            }
        }
        assert!(compared > 40_000, "{compared} compared");
        // A pod template nested past serde_json's recursion limit: its error, no overflow.
        let deep = format!(
            r#"{{"spec":{}{{}}{}}}"#,
            r#"{"template":{"spec":"#.repeat(5_000),
            "}}".repeat(5_000)
        );
        let raw = RawValue::from_string(deep).unwrap();
        let kind = gvk("apps", "Deployment");
        let valid = Object::parse_valid(&kind, &raw);
        assert!(valid.is_err());
        assert_eq!(
            format!("{valid:?}"),
            format!("{:?}", Object::parse(&kind, raw.get()))
        );
        assert!(
            read_alone > compared / 10,
            "{read_alone} of {compared} read alone"
        );
    }
}
