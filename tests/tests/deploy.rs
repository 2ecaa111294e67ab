//! The production manifests in `deploy/`, rendered by the real `kubectl kustomize`.
//!
//! What an SRE trusts when applying them, checked here without a cluster:
//! - every kustomization (base, both overlays, rbac) renders;
//! - every rendered object parses into its k8s-openapi type and serializes back to the same
//!   JSON, so a misspelt or misplaced field cannot hide (cert-manager objects into the small
//!   structs below, which deny unknown fields);
//! - the webhook cannot lock the cluster: failurePolicy, sideEffects, timeout, exempt
//!   namespaces, 2+ spread replicas with a PodDisruptionBudget, restricted pods, no API rights;
//! - the webhook's rules are exactly what the built-in policies declare in their metadata;
//! - the container's arguments parse with the server's own CLI and point at mounted files;
//! - the policy ConfigMap is accepted by the policies and denies the README's example;
//! - the plugin roles in deploy/rbac allow exactly the calls kubectl-ck8s makes;
//! - `gen-certs.sh` makes a chain openssl verifies for the Service's name.
//!
//! `kubectl` (v1.27+, for kustomize v5) must be on the PATH or at /usr/bin/kubectl; set
//! `CK8S_SKIP_KUBECTL=1` to skip these tests where it cannot be installed (and
//! `CK8S_SKIP_OPENSSL=1` for the gen-certs.sh test without openssl).
//!
//! Run: `cargo test -p ck8s-tests --test deploy`

use ck8s_admission::cli::{Args, LogFormat};
use ck8s_policy_api::{Operation, PolicyMetadata, Rule};
use ck8s_policy_runtime::{PolicySet, PolicySources, Runtime, SettingsFile, Source};
use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const NAMESPACE: &str = "ck8s-system";
const NAME: &str = "ck8s-admission";

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The kubectl to use, or `None` when the caller asked to skip (`CK8S_SKIP_KUBECTL=1`).
fn kubectl() -> Option<PathBuf> {
    if std::env::var("CK8S_SKIP_KUBECTL").is_ok_and(|v| v == "1") {
        eprintln!("skipped: CK8S_SKIP_KUBECTL=1");
        return None;
    }
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("kubectl"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let found = candidates
        .into_iter()
        .chain([PathBuf::from("/usr/bin/kubectl")])
        .find(|p| p.is_file());
    match found {
        Some(path) => Some(path),
        None => panic!(
            "error: kubectl not found (on PATH or at /usr/bin/kubectl)\n\
             help: these tests render deploy/ with the real `kubectl kustomize`; install kubectl \
             v1.27 or newer, or set CK8S_SKIP_KUBECTL=1 to skip them"
        ),
    }
}

/// `kubectl kustomize DIR`, as JSON documents.
fn render(kubectl: &Path, dir: &Path) -> Vec<Value> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl.display()));
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kustomize output is UTF-8");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("kustomize output is YAML");
    assert!(
        !docs.is_empty(),
        "kubectl kustomize {} rendered nothing",
        dir.display()
    );
    docs
}

/// Copies `deploy/` into a temporary directory, so that an overlay can be given files (the
/// self-signed certificates) without touching the working tree.
fn copy_deploy() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    copy(&deploy_dir(), &tmp.path().join("deploy"));
    tmp
}

/// The self-signed overlay needs `ca.crt`, `tls.crt`, `tls.key` beside it (written by
/// `gen-certs.sh`, git-ignored). Here they come from rcgen: the render only needs real PEM.
fn write_test_certs(overlay: &Path) {
    let ca = rcgen::generate_simple_self_signed(vec!["ck8s-admission-ca".to_string()]).unwrap();
    let tls =
        rcgen::generate_simple_self_signed(vec!["ck8s-admission.ck8s-system.svc".to_string()])
            .unwrap();
    std::fs::write(overlay.join("ca.crt"), ca.cert.pem()).unwrap();
    std::fs::write(overlay.join("tls.crt"), tls.cert.pem()).unwrap();
    std::fs::write(overlay.join("tls.key"), tls.signing_key.serialize_pem()).unwrap();
}

/// Renders an overlay of a copy of `deploy/` (so generated files can be added).
fn render_overlay(kubectl: &Path, overlay: &str) -> Vec<Value> {
    let tmp = copy_deploy();
    let dir = tmp.path().join("deploy/overlays").join(overlay);
    if overlay == "self-signed" {
        write_test_certs(&dir);
    }
    render(kubectl, &dir)
}

// ---------------------------------------------------------------------------------------
// Strict parsing
// ---------------------------------------------------------------------------------------

/// cert-manager's `Issuer` (cert-manager.io/v1), only the fields deploy/ uses.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Issuer {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: IssuerSpec,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssuerSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    self_signed: Option<serde_json::Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<CaIssuer>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CaIssuer {
    secret_name: String,
}

/// cert-manager's `Certificate` (cert-manager.io/v1), only the fields deploy/ uses.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Certificate {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: CertificateSpec,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CertificateSpec {
    secret_name: String,
    #[serde(rename = "isCA", default, skip_serializing_if = "Option::is_none")]
    is_ca: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    common_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dns_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renew_before: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    usages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key: Option<PrivateKey>,
    issuer_ref: IssuerRef,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrivateKey {
    algorithm: String,
    size: u32,
    rotation_policy: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssuerRef {
    group: String,
    kind: String,
    name: String,
}

/// Every kind deploy/ may render. Anything else fails the test: a new kind needs a type here.
#[derive(Debug)]
enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ConfigMap(ConfigMap),
    Secret(Secret),
    Service(Service),
    Deployment(Box<Deployment>),
    CronJob(Box<CronJob>),
    PodDisruptionBudget(PodDisruptionBudget),
    NetworkPolicy(NetworkPolicy),
    ValidatingWebhookConfiguration(ValidatingWebhookConfiguration),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    Issuer(Issuer),
    Certificate(Certificate),
}

/// Deserializes into `T` and requires that serializing it back gives the same JSON: the
/// k8s-openapi types skip unknown fields, so a typo would otherwise vanish silently.
fn strict<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let what = describe(doc);
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!(
            "{what} does not parse as {}: {e}",
            std::any::type_name::<T>()
        )
    });
    let back = serde_json::to_value(&typed).unwrap();
    let mut lost = Vec::new();
    json_diff("", doc, &back, &mut lost);
    assert!(
        lost.is_empty(),
        "{what}: {} does not keep these fields (misspelt, misplaced or mistyped):\n  {}",
        std::any::type_name::<T>(),
        lost.join("\n  ")
    );
    typed
}

/// The paths at which `a` and `b` differ.
fn json_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                json_diff(&format!("{path}.{k}"), va, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path}: rendered {a}, parsed back {b}")),
        _ => {}
    }
}

fn describe(doc: &Value) -> String {
    format!(
        "{}/{} {}",
        doc["apiVersion"].as_str().unwrap_or("?"),
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// kustomize wraps long base64 values (Secret data, a caBundle copied from it) over several
/// lines; the API server's decoder (Go's encoding/base64) skips the newlines, k8s-openapi's
/// does not. Unwrap them before the strict parse.
fn unwrap_base64(doc: &mut Value) {
    fn strip(v: &mut Value) {
        if let Value::String(s) = v {
            s.retain(|c| !c.is_ascii_whitespace());
        }
    }
    let is_secret = doc_kind(doc) == "Secret";
    if let Some(data) = doc.get_mut("data").filter(|_| is_secret) {
        data.as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
            .for_each(strip);
    }
    if let Some(webhooks) = doc.get_mut("webhooks").and_then(Value::as_array_mut) {
        for w in webhooks {
            if let Some(ca) = w.pointer_mut("/clientConfig/caBundle") {
                strip(ca);
            }
        }
    }
}

fn doc_kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn parse(mut doc: Value) -> Object {
    unwrap_base64(&mut doc);
    let api_version = doc["apiVersion"].as_str().unwrap_or("").to_string();
    match (api_version.as_str(), doc_kind(&doc)) {
        ("v1", "Namespace") => Object::Namespace(strict(&doc)),
        ("v1", "ServiceAccount") => Object::ServiceAccount(strict(&doc)),
        ("v1", "ConfigMap") => Object::ConfigMap(strict(&doc)),
        ("v1", "Secret") => Object::Secret(strict(&doc)),
        ("v1", "Service") => Object::Service(strict(&doc)),
        ("apps/v1", "Deployment") => Object::Deployment(Box::new(strict(&doc))),
        ("batch/v1", "CronJob") => Object::CronJob(Box::new(strict(&doc))),
        ("policy/v1", "PodDisruptionBudget") => Object::PodDisruptionBudget(strict(&doc)),
        ("networking.k8s.io/v1", "NetworkPolicy") => Object::NetworkPolicy(strict(&doc)),
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            Object::ValidatingWebhookConfiguration(strict(&doc))
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Object::ClusterRole(strict(&doc)),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(strict(&doc))
        }
        ("rbac.authorization.k8s.io/v1", "Role") => Object::Role(strict(&doc)),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => Object::RoleBinding(strict(&doc)),
        ("cert-manager.io/v1", "Issuer") => Object::Issuer(strict(&doc)),
        ("cert-manager.io/v1", "Certificate") => Object::Certificate(strict(&doc)),
        _ => panic!(
            "{}: no strict type for this kind; add one to tests/tests/deploy.rs",
            describe(&doc)
        ),
    }
}

/// A rendered kustomization, parsed.
struct Rendered {
    objects: Vec<Object>,
}

impl Rendered {
    fn new(docs: Vec<Value>) -> Self {
        Rendered {
            objects: docs.into_iter().map(parse).collect(),
        }
    }

    fn deployment(&self) -> &Deployment {
        let found: Vec<_> = self
            .objects
            .iter()
            .filter_map(|o| match o {
                Object::Deployment(d) => Some(d.as_ref()),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "exactly one Deployment");
        found[0]
    }

    fn webhook_configuration(&self) -> &ValidatingWebhookConfiguration {
        self.objects
            .iter()
            .find_map(|o| match o {
                Object::ValidatingWebhookConfiguration(v) => Some(v),
                _ => None,
            })
            .expect("a ValidatingWebhookConfiguration")
    }

    fn webhook(&self) -> &ValidatingWebhook {
        let webhooks = self
            .webhook_configuration()
            .webhooks
            .as_deref()
            .unwrap_or_default();
        assert_eq!(webhooks.len(), 1, "one webhook in {NAME}");
        &webhooks[0]
    }

    fn config_map(&self, prefix: &str) -> &ConfigMap {
        self.objects
            .iter()
            .find_map(|o| match o {
                Object::ConfigMap(c)
                    if c.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(prefix)) =>
                {
                    Some(c)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("a ConfigMap named {prefix}*"))
    }
}

// ---------------------------------------------------------------------------------------
// The policies' own rules: one source of truth for the webhook's
// ---------------------------------------------------------------------------------------

fn builtin_metadata() -> &'static [PolicyMetadata] {
    static METADATA: OnceLock<Vec<PolicyMetadata>> = OnceLock::new();
    METADATA.get_or_init(|| {
        let rt = Runtime::new(Default::default(), None).expect("policy runtime");
        Source::Builtin(ck8s_builtin_policies::BUNDLE)
            .load(&rt)
            .expect("built-in policies load")
            .into_iter()
            .map(|p| p.metadata)
            .collect()
    })
}

/// A rule in normal form: sorted, de-duplicated lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct NormalRule {
    api_groups: BTreeSet<String>,
    api_versions: BTreeSet<String>,
    resources: BTreeSet<String>,
    operations: BTreeSet<String>,
}

impl NormalRule {
    fn from_policy(r: &Rule) -> Self {
        NormalRule {
            api_groups: r.api_groups.iter().cloned().collect(),
            api_versions: r.api_versions.iter().cloned().collect(),
            resources: r.resources.iter().cloned().collect(),
            operations: r
                .operations
                .iter()
                .map(|o: &Operation| o.as_str().to_string())
                .collect(),
        }
    }

    fn from_webhook(r: &RuleWithOperations) -> Self {
        let set = |v: &Option<Vec<String>>| v.iter().flatten().cloned().collect();
        NormalRule {
            api_groups: set(&r.api_groups),
            api_versions: set(&r.api_versions),
            resources: set(&r.resources),
            operations: set(&r.operations),
        }
    }

    /// Whether every request this rule matches is matched by `other` too.
    fn covered_by(&self, other: &NormalRule) -> bool {
        fn within(mine: &BTreeSet<String>, theirs: &BTreeSet<String>) -> bool {
            theirs.contains("*") || mine.is_subset(theirs)
        }
        within(&self.api_groups, &other.api_groups)
            && within(&self.api_versions, &other.api_versions)
            && within(&self.resources, &other.resources)
            && within(&self.operations, &other.operations)
    }
}

/// The union of the policies' rules, written compactly without changing what it matches:
/// rules that differ only in resources are merged, and a rule wholly covered by another is
/// dropped (legacy-labels' `*` covers the pod-bearing kinds of build-ref and kaniko-cache).
fn union_of_rules(rules: &[NormalRule]) -> Vec<NormalRule> {
    let mut merged: Vec<NormalRule> = Vec::new();
    for rule in rules {
        match merged.iter_mut().find(|m| {
            m.api_groups == rule.api_groups
                && m.api_versions == rule.api_versions
                && m.operations == rule.operations
        }) {
            Some(m) => m.resources.extend(rule.resources.iter().cloned()),
            None => merged.push(rule.clone()),
        }
    }
    let mut out: Vec<NormalRule> = Vec::new();
    for (i, rule) in merged.iter().enumerate() {
        let covered = merged.iter().enumerate().any(|(j, other)| {
            // Of two equal rules keep the first; otherwise drop the covered one.
            j != i && rule.covered_by(other) && (!other.covered_by(rule) || j < i)
        });
        if !covered {
            out.push(rule.clone());
        }
    }
    for rule in &mut out {
        if rule.resources.contains("*") {
            rule.resources = BTreeSet::from(["*".to_string()]);
        }
    }
    out.sort();
    out
}

/// The `rules:` block for deploy/base/validatingwebhookconfiguration.yaml.
fn rules_yaml(rules: &[NormalRule]) -> String {
    let list = |s: &BTreeSet<String>| {
        let items: Vec<String> = s.iter().map(|v| format!("{v:?}")).collect();
        format!("[{}]", items.join(", "))
    };
    let mut out = String::from("    rules:\n");
    for r in rules {
        out += &format!("      - apiGroups: {}\n", list(&r.api_groups));
        out += &format!("        apiVersions: {}\n", list(&r.api_versions));
        out += &format!("        resources: {}\n", list(&r.resources));
        out += &format!("        operations: {}\n", list(&r.operations));
        out += "        scope: \"*\"\n";
    }
    out
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn every_kustomization_renders_into_strict_types() {
    let Some(kubectl) = kubectl() else { return };
    for dir in ["base", "rbac"] {
        let rendered = Rendered::new(render(&kubectl, &deploy_dir().join(dir)));
        assert!(!rendered.objects.is_empty(), "{dir} renders objects");
    }
    for overlay in ["cert-manager", "self-signed"] {
        let rendered = Rendered::new(render_overlay(&kubectl, overlay));
        assert_safe_webhook(&rendered, overlay);
    }
}

/// The properties that keep a broken webhook from locking the cluster, for one overlay.
fn assert_safe_webhook(r: &Rendered, overlay: &str) {
    let ctx = |what: &str| format!("{overlay}: {what}");

    // The webhook configuration.
    let vwc = r.webhook_configuration();
    assert_eq!(vwc.metadata.name.as_deref(), Some(NAME));
    let w = r.webhook();
    assert_eq!(
        w.admission_review_versions,
        ["v1"],
        "{}",
        ctx("admissionReviewVersions")
    );
    assert_eq!(w.side_effects, "None", "{}", ctx("sideEffects"));
    assert_eq!(
        w.failure_policy.as_deref(),
        Some("Fail"),
        "{}",
        ctx("failurePolicy")
    );
    assert_eq!(
        w.match_policy.as_deref(),
        Some("Equivalent"),
        "{}",
        ctx("matchPolicy")
    );
    let timeout = w
        .timeout_seconds
        .expect("timeoutSeconds is set, not left to the default 10");
    assert!(
        (1..=10).contains(&timeout),
        "{}: {timeout}",
        ctx("timeoutSeconds in 1..=10")
    );
    let service = w
        .client_config
        .service
        .as_ref()
        .expect("clientConfig.service");
    assert_eq!(
        (
            service.namespace.as_str(),
            service.name.as_str(),
            service.path.as_deref(),
            service.port
        ),
        (NAMESPACE, NAME, Some("/validate"), Some(443)),
        "{}",
        ctx("clientConfig.service")
    );
    assert!(
        w.client_config.url.is_none(),
        "{}",
        ctx("no clientConfig.url")
    );

    let selector = w.namespace_selector.as_ref().expect("namespaceSelector");
    let exempt: BTreeSet<&str> = selector
        .match_expressions
        .iter()
        .flatten()
        .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
        .flat_map(|e| e.values.iter().flatten().map(String::as_str))
        .collect();
    for ns in ["kube-system", "kube-node-lease", NAMESPACE] {
        assert!(
            exempt.contains(ns),
            "{}: {ns} is exempt from the webhook",
            ctx("namespaceSelector")
        );
    }
    let conditions: Vec<&str> = w
        .match_conditions
        .iter()
        .flatten()
        .map(|c| c.expression.as_str())
        .collect();
    assert!(
        conditions.contains(
            &"!(request.resource.resource in ['leases', 'events', 'endpoints', 'endpointslices'])"
        ),
        "{}: leases, events and the control plane's endpoints are excluded, got {conditions:?}",
        ctx("matchConditions")
    );

    match overlay {
        "cert-manager" => {
            let annotations = vwc.metadata.annotations.clone().unwrap_or_default();
            assert_eq!(
                annotations
                    .get("cert-manager.io/inject-ca-from")
                    .map(String::as_str),
                Some("ck8s-system/ck8s-admission-serving"),
                "cainjector fills the caBundle from the serving Certificate"
            );
            let serving = r
                .objects
                .iter()
                .find_map(|o| match o {
                    Object::Certificate(c)
                        if c.metadata.name.as_deref() == Some("ck8s-admission-serving") =>
                    {
                        Some(c)
                    }
                    _ => None,
                })
                .expect("Certificate ck8s-admission-serving");
            assert_eq!(serving.metadata.namespace.as_deref(), Some(NAMESPACE));
            assert_eq!(serving.spec.secret_name, "ck8s-admission-tls");
            assert!(
                serving
                    .spec
                    .dns_names
                    .iter()
                    .any(|d| d == "ck8s-admission.ck8s-system.svc")
            );
            assert_eq!(serving.spec.issuer_ref.name, "ck8s-ca");
            let issuers: BTreeSet<_> = r
                .objects
                .iter()
                .filter_map(|o| match o {
                    Object::Issuer(i) => i.metadata.name.clone(),
                    _ => None,
                })
                .collect();
            assert_eq!(
                issuers,
                BTreeSet::from(["ck8s-ca".into(), "ck8s-selfsigned".into()])
            );
        }
        "self-signed" => {
            let ca = w
                .client_config
                .ca_bundle
                .as_ref()
                .expect("caBundle is filled in");
            assert!(
                String::from_utf8_lossy(&ca.0).starts_with("-----BEGIN CERTIFICATE-----"),
                "caBundle holds the CA's PEM"
            );
            let secret = r
                .objects
                .iter()
                .find_map(|o| match o {
                    Object::Secret(s)
                        if s.metadata.name.as_deref() == Some("ck8s-admission-tls") =>
                    {
                        Some(s)
                    }
                    _ => None,
                })
                .expect("Secret ck8s-admission-tls, with a fixed name");
            assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
            let data = secret.data.as_ref().expect("Secret data");
            assert_eq!(
                data.get("ca.crt").map(|b| &b.0),
                Some(&ca.0),
                "caBundle = the Secret's ca.crt"
            );
            assert!(data.contains_key("tls.crt") && data.contains_key("tls.key"));
        }
        _ => unreachable!(),
    }

    // The two-step install selects the webhook configuration by this label, and only it.
    let staged: Vec<&str> = r
        .objects
        .iter()
        .filter(|o| {
            let labels = match o {
                Object::ValidatingWebhookConfiguration(v) => &v.metadata.labels,
                Object::Deployment(d) => &d.metadata.labels,
                Object::Service(s) => &s.metadata.labels,
                _ => return false,
            };
            labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/component"))
                .map(String::as_str)
                == Some("webhook-configuration")
        })
        .map(|o| match o {
            Object::ValidatingWebhookConfiguration(_) => "ValidatingWebhookConfiguration",
            _ => "other",
        })
        .collect();
    assert_eq!(
        staged,
        ["ValidatingWebhookConfiguration"],
        "{}",
        ctx("install label")
    );

    // The webhook's namespace enforces the restricted Pod Security Standard.
    let ns = r
        .objects
        .iter()
        .find_map(|o| match o {
            Object::Namespace(n) if n.metadata.name.as_deref() == Some(NAMESPACE) => Some(n),
            _ => None,
        })
        .expect("Namespace ck8s-system");
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted"),
        "{}",
        ctx("Pod Security on ck8s-system")
    );

    // The Deployment.
    let deployment = r.deployment();
    assert_eq!(deployment.metadata.namespace.as_deref(), Some(NAMESPACE));
    let spec = deployment.spec.as_ref().unwrap();
    assert!(spec.replicas.unwrap_or(1) >= 2, "{}", ctx("2+ replicas"));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_restricted(pod);
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "{}",
        ctx("pod token")
    );
    assert_eq!(pod.service_account_name.as_deref(), Some(NAME));
    assert!(
        pod.priority_class_name.is_none(),
        "{}: system-cluster-critical is only admitted in kube-system",
        ctx("priorityClassName")
    );
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .expect("preferred podAntiAffinity");
    assert!(
        anti.iter()
            .any(|t| t.pod_affinity_term.topology_key == "kubernetes.io/hostname")
    );
    let pod_annotations = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap();
    assert_eq!(
        pod_annotations
            .get("prometheus.io/scrape")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        pod_annotations
            .get("prometheus.io/port")
            .map(String::as_str),
        Some("9090")
    );
    assert_eq!(
        pod_annotations
            .get("prometheus.io/path")
            .map(String::as_str),
        Some("/metrics")
    );

    let c = container(pod);
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    let resources = c.resources.as_ref().expect("resources");
    for key in ["cpu", "memory"] {
        assert!(
            resources
                .requests
                .as_ref()
                .is_some_and(|r| r.contains_key(key)),
            "request {key}"
        );
    }
    assert!(
        resources
            .limits
            .as_ref()
            .is_some_and(|l| l.contains_key("memory")),
        "memory limit"
    );

    // Everything that keeps it up through a drain, and fenced in.
    let selector_labels = spec.selector.match_labels.clone().unwrap();
    let pdb = r
        .objects
        .iter()
        .find_map(|o| match o {
            Object::PodDisruptionBudget(p) => Some(p),
            _ => None,
        })
        .expect("a PodDisruptionBudget");
    let pdb_spec = pdb.spec.as_ref().unwrap();
    assert_eq!(
        pdb_spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(selector_labels.clone()),
        "the PDB selects the webhook's pods"
    );
    assert!(pdb_spec.min_available.is_some(), "PDB minAvailable");

    let netpol = r
        .objects
        .iter()
        .find_map(|o| match o {
            Object::NetworkPolicy(n) => Some(n),
            _ => None,
        })
        .expect("a NetworkPolicy");
    let np = netpol.spec.as_ref().unwrap();
    assert_eq!(
        np.pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(selector_labels)
    );
    let types = np.policy_types.clone().unwrap_or_default();
    assert!(types.contains(&"Ingress".into()) && types.contains(&"Egress".into()));
    assert_eq!(
        np.egress.as_deref().map(|e| e.len()),
        Some(0),
        "no egress at all"
    );

    // No API rights for the webhook.
    let sa = r
        .objects
        .iter()
        .find_map(|o| match o {
            Object::ServiceAccount(s) => Some(s),
            _ => None,
        })
        .expect("the ServiceAccount");
    assert_eq!(
        sa.automount_service_account_token,
        Some(false),
        "{}",
        ctx("SA automount")
    );
    for o in &r.objects {
        let subjects = match o {
            Object::RoleBinding(b) => b.subjects.clone(),
            Object::ClusterRoleBinding(b) => b.subjects.clone(),
            _ => None,
        };
        assert!(
            !subjects
                .iter()
                .flatten()
                .any(|s| s.kind == "ServiceAccount" && s.name == NAME),
            "{}: the webhook's ServiceAccount is bound to a role",
            ctx("RBAC")
        );
    }

    let services: Vec<&Service> = r
        .objects
        .iter()
        .filter_map(|o| match o {
            Object::Service(s) => Some(s),
            _ => None,
        })
        .collect();
    let ports: BTreeSet<i32> = services
        .iter()
        .filter(|s| s.metadata.name.as_deref() == Some(NAME))
        .flat_map(|s| {
            s.spec
                .as_ref()
                .unwrap()
                .ports
                .iter()
                .flatten()
                .map(|p| p.port)
        })
        .collect();
    assert_eq!(
        ports,
        BTreeSet::from([443, 9090]),
        "{}",
        ctx("Service ports")
    );
}

fn container(pod: &PodSpec) -> &Container {
    assert_eq!(pod.containers.len(), 1, "one container");
    assert!(pod.init_containers.is_none(), "no init containers");
    &pod.containers[0]
}

/// The restricted Pod Security Standard, and a read-only root filesystem on top.
fn assert_restricted(pod: &PodSpec) {
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none());
    let c = container(pod);
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_ne!(sc.privileged, Some(true));
    let drop = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.clone())
        .unwrap_or_default();
    assert_eq!(drop, ["ALL"], "capabilities drop ALL");
    assert!(
        sc.capabilities.as_ref().unwrap().add.is_none(),
        "no added capabilities"
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
}

#[test]
fn webhook_rules_equal_what_the_policies_declare() {
    let Some(kubectl) = kubectl() else { return };
    let declared: Vec<NormalRule> = builtin_metadata()
        .iter()
        .flat_map(|m| m.rules.iter().map(NormalRule::from_policy))
        .collect();
    assert!(!declared.is_empty(), "the built-in policies declare rules");
    let expected = union_of_rules(&declared);

    let rendered = Rendered::new(render(&kubectl, &deploy_dir().join("base")));
    let webhook = rendered.webhook();
    let rules = webhook.rules.as_deref().unwrap_or_default();
    let mut actual: Vec<NormalRule> = rules.iter().map(NormalRule::from_webhook).collect();
    actual.sort();
    assert!(
        actual == expected,
        "the webhook's rules differ from the policies' metadata.\n\
         help: replace the rules block of deploy/base/validatingwebhookconfiguration.yaml with\n\n{}",
        rules_yaml(&expected)
    );
    for r in rules {
        assert_eq!(
            r.scope.as_deref().unwrap_or("*"),
            "*",
            "scope: all (namespaced and cluster)"
        );
    }
    // The rules are what the policies see: every request the webhook sends is inspected by
    // some policy (no wasted calls), and each policy's own rules are covered.
    for m in builtin_metadata() {
        for r in &m.rules {
            let r = NormalRule::from_policy(r);
            assert!(
                expected.iter().any(|e| r.covered_by(e)),
                "{}'s rule {r:?} is covered",
                m.name
            );
        }
    }
}

#[test]
fn policy_config_map_is_accepted_by_the_policies() {
    let Some(kubectl) = kubectl() else { return };
    let rendered = Rendered::new(render(&kubectl, &deploy_dir().join("base")));
    let cm = rendered.config_map("ck8s-admission-config");
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("policies.yaml"))
        .expect("policies.yaml in the ConfigMap");
    let settings = SettingsFile::parse(text).expect("policies.yaml parses");
    let rt = Runtime::new(Default::default(), None).unwrap();
    let sources = PolicySources::new()
        .builtin(ck8s_builtin_policies::BUNDLE)
        .settings(settings.clone());
    let set = PolicySet::build(&rt, &sources)
        .expect("every configured policy is loaded and every setting is declared");
    for name in ["build-ref", "legacy-labels", "kaniko-cache"] {
        assert!(
            settings.policies.contains_key(name),
            "{name} is configured explicitly"
        );
    }
    assert_eq!(set.len(), settings.policies.len());
}

/// The README's "Verify it works" step: with the shipped configuration, the policies deny
/// deploy/examples/bad-build-ref.yaml, and the message names the policy and the fix.
#[test]
fn shipped_config_denies_the_verification_example() {
    let config = std::fs::read_to_string(deploy_dir().join("base/policies.yaml")).unwrap();
    let settings = SettingsFile::parse(&config).unwrap();
    let rt = Runtime::new(Default::default(), None).unwrap();
    let sources = PolicySources::new()
        .builtin(ck8s_builtin_policies::BUNDLE)
        .settings(settings);
    let set = PolicySet::build(&rt, &sources).unwrap();

    let yaml = std::fs::read_to_string(deploy_dir().join("examples/bad-build-ref.yaml")).unwrap();
    let doc: Value = serde_saphyr::from_str(&yaml).unwrap();
    let _: Deployment = strict(&doc);
    let raw = serde_json::value::to_raw_value(&doc).unwrap();
    let subject = ck8s_policy_runtime::Subject::from_manifest(&raw, Operation::Create).unwrap();
    let decision = ck8s_policy_runtime::Decision::from_evaluation(&set.evaluate(&subject));
    assert!(!decision.allowed, "the example is denied");
    let message = decision.denial_message();
    assert!(message.contains("[build-ref]"), "{message}");
    assert!(message.contains("CODEXK8S_BUILD_REF"), "{message}");
}

/// The container's arguments, parsed by the server's own CLI (`ck8s_admission::cli::Args`),
/// in both overlays, and checked against what they refer to in the pod: files in mounted
/// volumes, the ConfigMap key, the emptyDir cache, the declared ports, the shutdown budget.
#[test]
fn container_args_parse_with_the_server_cli() {
    let Some(kubectl) = kubectl() else { return };
    for overlay in ["cert-manager", "self-signed"] {
        let rendered = Rendered::new(render_overlay(&kubectl, overlay));
        check_container_args(&rendered, overlay);
    }
}

fn check_container_args(rendered: &Rendered, overlay: &str) {
    let pod = rendered
        .deployment()
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let c = container(pod);
    let raw = c.args.clone().expect("args");
    let argv = std::iter::once("ck8s-admission".to_string()).chain(raw.iter().cloned());
    let args = Args::try_parse_from(argv).unwrap_or_else(|e| {
        panic!("{overlay}: ck8s-admission rejects the container args {raw:?}:\n{e}")
    });

    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let volume_of = |path: &Path| {
        let m = mounts
            .iter()
            .filter(|m| path.starts_with(&m.mount_path))
            .max_by_key(|m| m.mount_path.len())
            .unwrap_or_else(|| panic!("{overlay}: {} is inside a volume mount", path.display()));
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .unwrap()
            .clone()
    };
    let file_name = |path: &Path| path.file_name().unwrap().to_str().unwrap().to_string();

    // TLS from the Secret the overlay fills (not the server's development mode).
    let cert = args.tls_cert.as_deref().expect("--tls-cert is set");
    let key = args.tls_key.as_deref().expect("--tls-key is set");
    for (path, file) in [(cert, "tls.crt"), (key, "tls.key")] {
        let secret = volume_of(path)
            .secret
            .expect("TLS files come from a Secret");
        assert_eq!(secret.secret_name.as_deref(), Some("ck8s-admission-tls"));
        assert_eq!(
            file_name(path),
            file,
            "{overlay}: key of the kubernetes.io/tls Secret"
        );
    }
    // Policy config from the generated ConfigMap, key present.
    let config = args.config.as_deref().expect("--config is set");
    let cm_name = volume_of(config)
        .config_map
        .expect("config from a ConfigMap")
        .name;
    let cm = rendered.config_map(&cm_name);
    assert!(
        cm.data.as_ref().unwrap().contains_key(&file_name(config)),
        "{overlay}: the ConfigMap has the --config key"
    );
    assert!(
        args.policies.is_none() && !args.no_builtin,
        "{overlay}: built-in policies only, so the webhook rules are the whole story"
    );
    let cache = args.cache_dir.as_deref().expect("--cache-dir is set");
    assert!(
        volume_of(cache).empty_dir.is_some(),
        "{overlay}: the cache dir is an emptyDir (the root filesystem is read-only)"
    );
    assert_eq!(
        args.log_format,
        LogFormat::Json,
        "{overlay}: structured logs"
    );

    // The listeners are the named container ports the Service and the probes use.
    let ports: Vec<(Option<String>, i32)> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.container_port))
        .collect();
    assert!(ports.contains(&(Some("https".into()), i32::from(args.listen.port()))));
    assert!(ports.contains(&(
        Some("metrics".into()),
        i32::from(args.metrics_listen.port())
    )));

    // SIGTERM comes after the preStop sleep; the drain must end before the kubelet kills.
    let pre_stop = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .map_or(0, |s| s.seconds);
    let grace = pod.termination_grace_period_seconds.unwrap_or(30);
    assert!(
        pre_stop as u64 + args.shutdown_grace.as_secs() < grace as u64,
        "{overlay}: preStop {pre_stop}s + --shutdown-grace {:?} fit in terminationGracePeriodSeconds {grace}",
        args.shutdown_grace
    );
}

#[test]
fn rbac_for_plugin_users() {
    let Some(kubectl) = kubectl() else { return };
    let rendered = Rendered::new(render(&kubectl, &deploy_dir().join("rbac")));
    let write_verbs = [
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "escalate",
        "bind",
        "impersonate",
    ];
    let mut names = BTreeSet::new();
    let mut roles = std::collections::BTreeMap::new();
    for o in &rendered.objects {
        let (name, rules) = match o {
            Object::ClusterRole(r) => (
                r.metadata.name.clone().unwrap(),
                r.rules.clone().unwrap_or_default(),
            ),
            Object::Role(r) => (
                r.metadata.name.clone().unwrap(),
                r.rules.clone().unwrap_or_default(),
            ),
            Object::ClusterRoleBinding(_) | Object::RoleBinding(_) => {
                panic!("deploy/rbac binds nothing: bindings are the cluster admin's choice")
            }
            other => panic!("unexpected object in deploy/rbac: {other:?}"),
        };
        for rule in &rules {
            assert!(
                !rule.verbs.iter().any(|v| v == "*"),
                "{name}: no wildcard verbs"
            );
            assert!(
                !rule.resources.iter().flatten().any(|r| r == "*"),
                "{name}: no wildcard resources"
            );
            let secrets = rule.resources.iter().flatten().any(|r| r == "secrets");
            if name == "ck8s-reader" {
                assert!(
                    !rule.verbs.iter().any(|v| write_verbs.contains(&v.as_str())),
                    "ck8s-reader is read-only: {rule:?}"
                );
                if secrets {
                    assert_eq!(rule.verbs, ["get"], "secrets: get by name only");
                    assert_eq!(
                        rule.resource_names.as_deref(),
                        Some(&["codex-k8s-production-tls".to_string()][..])
                    );
                }
            }
            if name == "ck8s-operator" {
                assert!(
                    !secrets,
                    "ck8s-operator: Secrets only through ck8s-labels-secrets"
                );
            }
        }
        names.insert(name.clone());
        roles.insert(name, rules);
    }
    let expected: BTreeSet<String> = [
        "ck8s-reader",
        "ck8s-operator",
        "ck8s-tls-reader",
        "ck8s-smoke",
        "ck8s-smoke-guard",
        "ck8s-labels-secrets",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, expected);

    // What the plugin's commands call (kubectl-ck8s/src), one line per call:
    // (role, verb, "group/resource", name or "", allowed?).
    let table: &[(&str, &str, &str, &str, bool)] = &[
        // smoke
        ("ck8s-reader", "list", "/pods", "", true),
        // admission lint
        (
            "ck8s-reader",
            "list",
            "admissionregistration.k8s.io/validatingwebhookconfigurations",
            "",
            true,
        ),
        (
            "ck8s-reader",
            "list",
            "admissionregistration.k8s.io/mutatingwebhookconfigurations",
            "",
            true,
        ),
        (
            "ck8s-reader",
            "list",
            "discovery.k8s.io/endpointslices",
            "",
            true,
        ),
        (
            "ck8s-reader",
            "delete",
            "admissionregistration.k8s.io/validatingwebhookconfigurations",
            "",
            false,
        ),
        ("ck8s-reader", "list", "apps/deployments", "", true),
        (
            "ck8s-reader",
            "list",
            "networking.k8s.io/ingresses",
            "",
            true,
        ),
        (
            "ck8s-reader",
            "get",
            "/secrets",
            "codex-k8s-production-tls",
            true,
        ),
        (
            "ck8s-reader",
            "get",
            "batch/cronjobs",
            "codex-k8s-registry-gc",
            true,
        ),
        (
            "ck8s-reader",
            "get",
            "/configmaps",
            "codex-k8s-runtime",
            true,
        ),
        ("ck8s-tls-reader", "list", "/secrets", "", true),
        (
            "ck8s-smoke",
            "create",
            "/pods/portforward",
            "codex-k8s-0",
            true,
        ),
        // admission pause|resume
        (
            "ck8s-operator",
            "update",
            "admissionregistration.k8s.io/validatingwebhookconfigurations",
            "ck8s-admission",
            true,
        ),
        (
            "ck8s-operator",
            "update",
            "admissionregistration.k8s.io/validatingwebhookconfigurations",
            "another-vendor",
            false,
        ),
        (
            "ck8s-operator",
            "delete",
            "admissionregistration.k8s.io/validatingwebhookconfigurations",
            "ck8s-admission",
            false,
        ),
        ("ck8s-operator", "create", "/events", "", true),
        // smoke's guard checks
        ("ck8s-smoke", "create", "/configmaps", "", true),
        ("ck8s-smoke", "delete", "/configmaps", "", false),
        (
            "ck8s-smoke-guard",
            "create",
            "/pods/portforward",
            "ck8s-admission-0",
            true,
        ),
        (
            "ck8s-reader",
            "get",
            "admissionregistration.k8s.io/validatingwebhookconfigurations",
            "ck8s-admission",
            true,
        ),
        // runs
        ("ck8s-reader", "list", "/namespaces", "", true),
        ("ck8s-reader", "list", "/serviceaccounts", "", true),
        (
            "ck8s-reader",
            "list",
            "rbac.authorization.k8s.io/rolebindings",
            "",
            true,
        ),
        ("ck8s-reader", "list", "/resourcequotas", "", true),
        ("ck8s-reader", "list", "/limitranges", "", true),
        ("ck8s-reader", "list", "batch/jobs", "", true),
        // labels --objects
        ("ck8s-reader", "list", "apps/statefulsets", "", true),
        ("ck8s-reader", "list", "apps/daemonsets", "", true),
        ("ck8s-reader", "list", "apps/replicasets", "", true),
        ("ck8s-labels-secrets", "list", "/secrets", "", true),
        // gc status, diagnose
        (
            "ck8s-reader",
            "get",
            "/pods/log",
            "codex-k8s-registry-gc-1",
            true,
        ),
        (
            "ck8s-reader",
            "get",
            "apps/deployments",
            "codex-k8s-control-plane",
            true,
        ),
        // gc run
        ("ck8s-operator", "create", "batch/jobs", "", true),
        // labels --fix
        (
            "ck8s-operator",
            "patch",
            "/namespaces",
            "codex-k8s-run-1",
            true,
        ),
        (
            "ck8s-operator",
            "patch",
            "apps/deployments",
            "codex-k8s-worker",
            true,
        ),
        (
            "ck8s-operator",
            "patch",
            "rbac.authorization.k8s.io/rolebindings",
            "x",
            true,
        ),
        ("ck8s-operator", "patch", "apps/replicasets", "x", true),
        ("ck8s-operator", "patch", "batch/cronjobs", "x", true),
        ("ck8s-labels-secrets", "patch", "/secrets", "x", true),
        ("ck8s-labels-secrets", "patch", "/configmaps", "x", true),
        // mitigate
        (
            "ck8s-operator",
            "patch",
            "/configmaps",
            "codex-k8s-runtime",
            true,
        ),
        (
            "ck8s-operator",
            "get",
            "apps/deployments",
            "codex-k8s-control-plane",
            true,
        ),
        // and nothing more
        ("ck8s-reader", "list", "/secrets", "", false),
        ("ck8s-reader", "get", "/secrets", "codex-k8s-openai", false),
        ("ck8s-reader", "create", "/pods/portforward", "x", false),
        ("ck8s-reader", "create", "/pods/exec", "x", false),
        (
            "ck8s-operator",
            "patch",
            "/configmaps",
            "kube-root-ca.crt",
            false,
        ),
        ("ck8s-operator", "list", "/secrets", "", false),
        ("ck8s-operator", "delete", "batch/jobs", "x", false),
        ("ck8s-operator", "create", "/pods", "", false),
    ];
    for &(role, verb, gr, name, want) in table {
        let (group, resource) = gr.split_once('/').unwrap();
        let got = roles[role].iter().any(|r| {
            r.verbs.iter().any(|v| v == verb)
                && r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.resource_names
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|n| n == name))
        });
        assert_eq!(got, want, "{role} {verb} {gr} {name:?}");
    }
}

/// `gen-certs.sh` makes a CA and a serving certificate that openssl verifies for the
/// Service's DNS name, and the self-signed overlay renders with them.
#[test]
fn self_signed_gen_certs_script() {
    let Some(kubectl) = kubectl() else { return };
    if Command::new("openssl").arg("version").output().is_err() {
        if std::env::var("CK8S_SKIP_OPENSSL").is_ok_and(|v| v == "1") {
            eprintln!("skipped: CK8S_SKIP_OPENSSL=1");
            return;
        }
        panic!(
            "error: openssl not found\nhelp: gen-certs.sh needs openssl; set CK8S_SKIP_OPENSSL=1 to skip"
        );
    }
    let tmp = copy_deploy();
    let overlay = tmp.path().join("deploy/overlays/self-signed");
    let run = |args: &[&str]| {
        let out = Command::new("sh")
            .arg(overlay.join("gen-certs.sh"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gen-certs.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[]);
    let verify = || {
        let out = Command::new("openssl")
            .args([
                "verify",
                "-verify_hostname",
                "ck8s-admission.ck8s-system.svc",
                "-purpose",
                "sslserver",
                "-CAfile",
            ])
            .arg(overlay.join("ca.crt"))
            .arg(overlay.join("tls.crt"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    verify();
    let ca_before = std::fs::read(overlay.join("ca.crt")).unwrap();
    let tls_before = std::fs::read(overlay.join("tls.crt")).unwrap();
    run(&["--renew"]);
    verify();
    assert_eq!(
        std::fs::read(overlay.join("ca.crt")).unwrap(),
        ca_before,
        "--renew keeps the CA (and the caBundle)"
    );
    assert_ne!(
        std::fs::read(overlay.join("tls.crt")).unwrap(),
        tls_before,
        "--renew issues a new serving certificate"
    );

    let rendered = Rendered::new(render(&kubectl, &overlay));
    let ca = rendered
        .webhook()
        .client_config
        .ca_bundle
        .clone()
        .expect("caBundle");
    assert_eq!(ca.0, ca_before, "the caBundle is the generated CA");
}

/// How the union is written, on rules shaped like the SDK's `env_and_config` and
/// `all_objects`: identical rules collapse, a rule under `*` disappears, others stay apart.
#[test]
fn union_of_rules_keeps_exactly_what_the_policies_match() {
    let rule = |groups: &[&str], resources: &[&str]| {
        NormalRule::from_policy(&Rule {
            api_groups: groups.iter().map(|s| s.to_string()).collect(),
            api_versions: vec!["*".into()],
            resources: resources.iter().map(|s| s.to_string()).collect(),
            operations: vec![Operation::Create, Operation::Update],
        })
    };
    let env_and_config = || {
        vec![
            rule(&[""], &["pods", "configmaps", "secrets"]),
            rule(&["apps"], &["deployments"]),
        ]
    };
    let two_policies: Vec<_> = env_and_config()
        .into_iter()
        .chain(env_and_config())
        .collect();
    assert_eq!(union_of_rules(&two_policies), {
        let mut r = env_and_config();
        r.sort();
        r
    });
    let split = vec![rule(&[""], &["pods"]), rule(&[""], &["secrets"])];
    assert_eq!(
        union_of_rules(&split),
        vec![rule(&[""], &["pods", "secrets"])]
    );
    let with_everything: Vec<_> = two_policies
        .into_iter()
        .chain([rule(&["*"], &["*"])])
        .collect();
    assert_eq!(union_of_rules(&with_everything), vec![rule(&["*"], &["*"])]);
}

/// The optional in-cluster audit (deploy/components/audit) on top of an overlay: it renders,
/// mounts the webhook's own config, runs restricted, and its ClusterRole lists exactly the
/// kinds the policies judge and writes nothing but policy reports.
#[test]
fn audit_component_renders_with_least_privilege() {
    let Some(kubectl) = kubectl() else { return };
    let tmp = copy_deploy();
    write_test_certs(&tmp.path().join("deploy/overlays/self-signed"));
    let dir = tmp.path().join("deploy/overlays/with-audit");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../self-signed\ncomponents:\n  - ../../components/audit\n",
    )
    .unwrap();
    let rendered = Rendered::new(render(&kubectl, &dir));
    // The overlay underneath keeps every safety property of the webhook.
    assert_safe_webhook(&rendered, "self-signed");

    let cronjobs: Vec<&CronJob> = rendered
        .objects
        .iter()
        .filter_map(|o| match o {
            Object::CronJob(c) => Some(c.as_ref()),
            _ => None,
        })
        .collect();
    assert_eq!(cronjobs.len(), 1, "one CronJob");
    let cj = cronjobs[0];
    assert_eq!(cj.metadata.name.as_deref(), Some("ck8s-audit"));
    assert_eq!(cj.metadata.namespace.as_deref(), Some(NAMESPACE));
    let spec = cj.spec.as_ref().unwrap();
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let pod = spec
        .job_template
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_restricted(pod);
    assert_eq!(pod.service_account_name.as_deref(), Some("ck8s-audit"));
    let c = container(pod);
    // The plugin's own image: the webhook's stays the webhook binary alone.
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/codex-k8s/kubectl-ck8s:0.1.0")
    );
    assert_eq!(
        c.command.as_deref(),
        Some(&["/usr/local/bin/kubectl-ck8s".to_string()][..])
    );
    let args = c.args.clone().unwrap();
    assert_eq!(args[..3], ["policy", "audit", "--apply"], "{args:?}");
    // The webhook's own --config: the generated (hashed) ConfigMap, its key mounted.
    let config = args
        .iter()
        .find_map(|a| a.strip_prefix("--config="))
        .expect("--config=FILE");
    let webhook_config = check_config_arg(&rendered, pod, c, Path::new(config));
    let deployment_pod = rendered
        .deployment()
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let dc = container(deployment_pod);
    let served = dc
        .args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix("--config="))
        .unwrap();
    assert_eq!(
        webhook_config,
        check_config_arg(&rendered, deployment_pod, dc, Path::new(served)),
        "the audit reads the config the webhook serves"
    );
    let cache = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "CK8S_CACHE_DIR")
        .and_then(|e| e.value.clone())
        .expect("CK8S_CACHE_DIR");
    assert!(
        c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == cache
                && pod
                    .volumes
                    .iter()
                    .flatten()
                    .any(|v| v.name == m.name && v.empty_dir.is_some())),
        "the artifact cache is an emptyDir (read-only root filesystem)"
    );

    // RBAC: its own ServiceAccount, bound to its own ClusterRole.
    let sa = rendered.objects.iter().find_map(|o| match o {
        Object::ServiceAccount(s) if s.metadata.name.as_deref() == Some("ck8s-audit") => Some(s),
        _ => None,
    });
    assert_eq!(
        sa.expect("ServiceAccount ck8s-audit")
            .metadata
            .namespace
            .as_deref(),
        Some(NAMESPACE)
    );
    let binding = rendered
        .objects
        .iter()
        .find_map(|o| match o {
            Object::ClusterRoleBinding(b) if b.metadata.name.as_deref() == Some("ck8s-audit") => {
                Some(b)
            }
            _ => None,
        })
        .expect("ClusterRoleBinding ck8s-audit");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, "ck8s-audit");
    let subjects = binding.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        ("ServiceAccount", "ck8s-audit", Some(NAMESPACE))
    );
    let role = rendered
        .objects
        .iter()
        .find_map(|o| match o {
            Object::ClusterRole(r) if r.metadata.name.as_deref() == Some("ck8s-audit") => Some(r),
            _ => None,
        })
        .expect("ClusterRole ck8s-audit");
    let rules = role.rules.clone().unwrap_or_default();
    // list: exactly the kinds the policies' rules name, and nothing but list.
    let declared: Vec<NormalRule> = builtin_metadata()
        .iter()
        .flat_map(|m| m.rules.iter().map(NormalRule::from_policy))
        .collect();
    let judged: BTreeSet<(BTreeSet<String>, BTreeSet<String>)> = union_of_rules(&declared)
        .into_iter()
        .map(|r| (r.api_groups, r.resources))
        .collect();
    let set = |v: &Option<Vec<String>>| v.iter().flatten().cloned().collect::<BTreeSet<String>>();
    let listed: BTreeSet<(BTreeSet<String>, BTreeSet<String>)> = rules
        .iter()
        .filter(|r| r.verbs.iter().any(|v| v == "list"))
        .map(|r| {
            assert_eq!(r.verbs, ["list"], "list rules grant only list: {r:?}");
            assert!(r.resource_names.is_none());
            (set(&r.api_groups), set(&r.resources))
        })
        .collect();
    assert_eq!(listed, judged, "list on exactly the judged kinds");
    for r in rules
        .iter()
        .filter(|r| !r.verbs.iter().any(|v| v == "list"))
    {
        let groups = set(&r.api_groups);
        let resources = set(&r.resources);
        if groups == BTreeSet::from(["wgpolicyk8s.io".to_string()]) {
            assert_eq!(
                resources,
                BTreeSet::from([
                    "clusterpolicyreports".to_string(),
                    "policyreports".to_string()
                ])
            );
            assert_eq!(
                set(&Some(r.verbs.clone())),
                BTreeSet::from(["create", "patch"].map(String::from))
            );
        } else {
            assert_eq!(
                groups,
                BTreeSet::from(["admissionregistration.k8s.io".to_string()]),
                "{r:?}"
            );
            assert_eq!(
                resources,
                BTreeSet::from(["validatingwebhookconfigurations".to_string()])
            );
            assert_eq!(r.verbs, ["get"]);
            assert_eq!(r.resource_names.as_deref(), Some(&[NAME.to_string()][..]));
        }
    }
}

/// The ConfigMap name and key behind a `--config` path of a container, checked to exist.
fn check_config_arg(
    rendered: &Rendered,
    pod: &PodSpec,
    c: &Container,
    path: &Path,
) -> (String, String) {
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())
        .unwrap_or_else(|| panic!("{} is inside a volume mount", path.display()));
    let cm_name = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.config_map.clone())
        .expect("config from a ConfigMap")
        .name;
    let key = path.file_name().unwrap().to_str().unwrap().to_string();
    let cm = rendered.config_map(&cm_name);
    assert_eq!(
        cm.metadata.name.as_deref(),
        Some(cm_name.as_str()),
        "the generated name itself"
    );
    assert!(
        cm.data.as_ref().unwrap().contains_key(&key),
        "{cm_name} has {key}"
    );
    (cm_name, key)
}

/// The optional ValidatingAdmissionPolicy component (deploy/components/vap-policies): the
/// webhook serves the files of its ConfigMap from `--policies`, the files load, and what it
/// may read of the cluster is exactly Namespaces and ConfigMaps, read only, through an egress
/// to the API server and nowhere else.
#[test]
fn vap_policies_component_mounts_the_files_and_reads_no_more_than_it_needs() {
    let Some(kubectl) = kubectl() else { return };
    let tmp = copy_deploy();
    let dir = tmp.path().join("deploy/overlays/with-vaps");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\ncomponents:\n  - ../../components/vap-policies\n",
    )
    .unwrap();
    let rendered = Rendered::new(render(&kubectl, &dir));
    let pod = rendered
        .deployment()
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let c = container(pod);
    let args = c.args.clone().unwrap();
    assert!(
        args.contains(&"--policies=/etc/ck8s/policies".to_string()),
        "{args:?}"
    );
    let mut argv = vec!["ck8s-admission".to_string()];
    argv.extend(args);
    ck8s_admission::cli::Args::try_parse_from(&argv).expect("the args parse");
    assert_eq!(pod.automount_service_account_token, Some(true));
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/etc/ck8s/policies")
        .expect("the policies mounted");
    assert_eq!(mount.read_only, Some(true));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let cm_name = volume.config_map.as_ref().unwrap().name.clone();

    // The files load as the webhook loads them.
    let cm = rendered
        .objects
        .iter()
        .find_map(|o| match o {
            Object::ConfigMap(cm) if cm.metadata.name.as_deref() == Some(&cm_name) => Some(cm),
            _ => None,
        })
        .expect("the policies' ConfigMap");
    let files = tempfile::tempdir().unwrap();
    for (name, text) in cm.data.iter().flatten() {
        std::fs::write(files.path().join(name), text).unwrap();
    }
    let runtime = ck8s_policy_runtime::Runtime::new(Default::default(), None).unwrap();
    let set = ck8s_policy_runtime::PolicySet::build(
        &runtime,
        &ck8s_policy_runtime::PolicySources::new().dir(files.path()),
    )
    .unwrap_or_else(|e| panic!("the component's policies load: {e}"));
    assert!(!set.vap_policies().is_empty());

    // Read only: Namespaces and ConfigMaps, bound to the webhook's ServiceAccount.
    let role = rendered
        .objects
        .iter()
        .find_map(|o| match o {
            Object::ClusterRole(r)
                if r.metadata.name.as_deref() == Some("ck8s-admission-vap-reads") =>
            {
                Some(r)
            }
            _ => None,
        })
        .expect("the ClusterRole");
    let rules = role.rules.clone().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    assert_eq!(
        rules[0].resources.clone().unwrap(),
        ["namespaces", "configmaps"]
    );
    let binding = rendered
        .objects
        .iter()
        .find_map(|o| match o {
            Object::ClusterRoleBinding(b)
                if b.metadata.name.as_deref() == Some("ck8s-admission-vap-reads") =>
            {
                Some(b)
            }
            _ => None,
        })
        .expect("the ClusterRoleBinding");
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "ck8s-admission", Some(NAMESPACE))
    );
    // Egress: the API server's ports only.
    let policy = rendered
        .objects
        .iter()
        .find_map(|o| match o {
            Object::NetworkPolicy(p) => Some(p),
            _ => None,
        })
        .unwrap();
    let egress = policy.spec.as_ref().unwrap().egress.clone().unwrap();
    assert_eq!(egress.len(), 1, "{egress:?}");
    let ports: Vec<String> = egress[0]
        .ports
        .iter()
        .flatten()
        .map(|p| format!("{:?}", p.port))
        .collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert!(
        ports
            .iter()
            .all(|p| p.contains("443") || p.contains("6443")),
        "{ports:?}"
    );
}

/// The optional break-glass component (deploy/components/break-glass): the webhook restores
/// its own configuration at the end of a pause, and may touch nothing else.
#[test]
fn break_glass_component_restores_only_its_own_configuration() {
    let Some(kubectl) = kubectl() else { return };
    let tmp = copy_deploy();
    let dir = tmp.path().join("deploy/overlays/with-break-glass");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\ncomponents:\n  - ../../components/break-glass\n",
    )
    .unwrap();
    let rendered = Rendered::new(render(&kubectl, &dir));
    let pod = rendered
        .deployment()
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let args = container(pod).args.clone().unwrap();
    assert!(
        args.contains(&"--restore-pause=ck8s-admission".to_string()),
        "{args:?}"
    );
    let mut argv = vec!["ck8s-admission".to_string()];
    argv.extend(args);
    let parsed = ck8s_admission::cli::Args::try_parse_from(&argv).expect("the args parse");
    assert_eq!(parsed.restore_pause.as_deref(), Some("ck8s-admission"));
    assert_eq!(pod.automount_service_account_token, Some(true));
    let role = rendered
        .objects
        .iter()
        .find_map(|o| match o {
            Object::ClusterRole(r)
                if r.metadata.name.as_deref() == Some("ck8s-admission-break-glass") =>
            {
                Some(r)
            }
            _ => None,
        })
        .expect("the ClusterRole");
    let rules = role.rules.clone().unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].verbs, ["get", "list", "watch", "update"]);
    assert_eq!(
        rules[0].resources.clone().unwrap(),
        ["validatingwebhookconfigurations"]
    );
    assert_eq!(
        rules[0].resource_names.clone().unwrap(),
        ["ck8s-admission"],
        "its own configuration only"
    );
    let binding = rendered
        .objects
        .iter()
        .find_map(|o| match o {
            Object::ClusterRoleBinding(b)
                if b.metadata.name.as_deref() == Some("ck8s-admission-break-glass") =>
            {
                Some(b)
            }
            _ => None,
        })
        .expect("the ClusterRoleBinding");
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "ck8s-admission", Some(NAMESPACE))
    );
}
