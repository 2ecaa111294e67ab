//! `policy new NAME`: a standalone policy crate that builds to `.wasm` with one command.
//!
//! The crate holds a working example ("no `:latest` images"), a native rule test and a
//! `tests/suite.ck8s-test.yaml` suite that `policy test` runs against the built `.wasm`.
//!
//! `policy new NAME --cel`: no compile step. A ValidatingAdmissionPolicy and its binding in
//! `NAME.yaml` (the same example; a file for the webhook's `--policies DIR` and for `kubectl
//! apply` alike) and `NAME.ck8s-test.yaml`.

use crate::exit::Failure;
use crate::report::{Outcome, Report};
use clap::Args;
use std::path::{Path, PathBuf};

/// The SDK of the checkout this binary was built from.
const DEFAULT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/sdk");

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Policy name, lower-kebab-case (`no-latest-tag`); also the crate name.
    pub name: String,
    /// Directory to create (default: ./NAME). An existing directory is never overwritten.
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// The ck8s-policy-sdk crate the new crate depends on (by path).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SDK, conflicts_with = "cel")]
    pub sdk: PathBuf,
    /// A ValidatingAdmissionPolicy file (CEL, no compile step) and its test suite instead of
    /// a crate.
    #[arg(long)]
    pub cel: bool,
}

pub fn run(args: NewArgs) -> Result<Outcome, Failure> {
    check_name(&args.name)?;
    let dir = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if args.cel {
        return run_cel(&args.name, &dir);
    }
    refuse_existing(&dir)?;
    let sdk = args
        .sdk
        .canonicalize()
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
        .ok_or_else(|| {
            Failure::usage(format!(
                "no ck8s-policy-sdk crate at {}",
                args.sdk.display()
            ))
            .with_help("pass --sdk PATH to the policies/sdk directory of a ck8s checkout")
        })?;
    let krate = args.name.replace('-', "_");
    let wasm = format!("target/wasm32-unknown-unknown/release/{krate}.wasm");
    let next = format!(
        "  cd {dir}
  cargo test                                              # native rule tests
  cargo build --release --target wasm32-unknown-unknown   # builds {wasm}
  kubectl ck8s policy test .                              # the YAML suite, against the .wasm
  kubectl ck8s policy inspect {wasm}
  cp {wasm} <the webhook's --policies DIR>   # live without a restart
",
        dir = dir.display()
    );
    let what = format!("policy crate {}", args.name);
    write(&dir, &files(&args.name, &sdk), &what, &next)
}

fn refuse_existing(path: &Path) -> Result<(), Failure> {
    if !path.exists() {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "{} already exists; refusing to overwrite it",
        path.display()
    ))
    .with_help("choose another NAME or --path DIR"))
}

/// Writes `files` (`(path in dir, contents)`) and says what was created and what to run next.
fn write(
    dir: &Path,
    files: &[(impl AsRef<str>, String)],
    what: &str,
    next: &str,
) -> Result<Outcome, Failure> {
    let mut summary = format!("Created {what} in {}\n", dir.display());
    for (rel, text) in files {
        let path = dir.join(rel.as_ref());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Failure::usage(format!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
        summary.push_str(&format!("  {}\n", rel.as_ref()));
    }
    summary.push_str(&format!("\nNext:\n{next}"));
    Ok(Outcome::text(Report::of("policy new", vec![]), summary))
}

/// The `--cel` scaffold: two files in DIR (default: ./NAME).
fn run_cel(name: &str, dir: &Path) -> Result<Outcome, Failure> {
    let files = cel_files(name);
    for (rel, _) in &files {
        refuse_existing(&dir.join(rel))?;
    }
    let policy = dir.join(&files[0].0);
    let next = format!(
        "  kubectl ck8s policy test {dir}
  kubectl ck8s policy check --no-builtin --policies {dir} -f MANIFESTS
  kubectl ck8s policy inspect {policy}
  cp {policy} <the webhook's --policies DIR>   # in force at once
  kubectl apply -f {policy}                     # or as a native VAP
",
        dir = dir.display(),
        policy = policy.display()
    );
    write(
        dir,
        &files,
        &format!("ValidatingAdmissionPolicy {name}"),
        &next,
    )
}

/// `(file, contents)` of the `--cel` scaffold: the policy first.
fn cel_files(name: &str) -> Vec<(String, String)> {
    let policy = format!(
        r#"# {name}: a ValidatingAdmissionPolicy, judged by ck8s-admission from its --policies DIR
# (ratcheting, metrics, offline `kubectl ck8s policy check`) or applied as is with kubectl.
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {name}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: ["", apps, batch]
        apiVersions: [v1]
        operations: [CREATE, UPDATE]
        resources: [pods, deployments, statefulsets, daemonsets, jobs, cronjobs]
  variables:
    # The pod spec of every kind above.
    - name: spec
      expression: >-
        object.kind == 'Pod' ? object.spec :
        object.kind == 'CronJob' ? object.spec.jobTemplate.spec.template.spec :
        object.spec.template.spec
  validations:
    - expression: >-
        variables.spec.containers.all(c, c.image.contains('@') ||
          (c.image.contains(':') && !c.image.endsWith(':latest')))
      messageExpression: >-
        'image ' + variables.spec.containers.filter(c, !c.image.contains('@') &&
          (!c.image.contains(':') || c.image.endsWith(':latest')))[0].image +
        ' has no tag or uses :latest; pin a version (name:1.2.3) or a digest (name@sha256:...)'
      reason: Invalid
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {name}
spec:
  policyName: {name}
  validationActions: [Deny]
"#
    );
    let suite = format!(
        r#"# `kubectl ck8s policy test .`: each case judged as ck8s-admission would judge it.
policy: {name}.yaml
cases:
  - name: a pinned image is allowed
    resource:
      apiVersion: apps/v1
      kind: Deployment
      metadata: {{name: web, namespace: default}}
      spec:
        selector: {{matchLabels: {{app: web}}}}
        template:
          metadata: {{labels: {{app: web}}}}
          spec:
            containers: [{{name: web, image: "nginx:1.27.3"}}]
    expect: allow
  - name: an image tagged :latest is denied, naming the image
    resource:
      apiVersion: v1
      kind: Pod
      metadata: {{name: web, namespace: default}}
      spec:
        containers: [{{name: web, image: "nginx:latest"}}]
    expect: deny
    messages: ["image nginx:latest has no tag or uses :latest"]
"#
    );
    vec![
        (format!("{name}.yaml"), policy),
        (format!("{name}.ck8s-test.yaml"), suite),
    ]
}

fn check_name(name: &str) -> Result<(), Failure> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Failure::usage(format!(
            "policy name {name:?} must be lower-kebab-case, 1-63 characters, starting with a letter"
        ))
        .with_help("for example: kubectl ck8s policy new no-latest-tag"))
    }
}

/// `(relative path, contents)` of every file of the new crate.
fn files(name: &str, sdk: &Path) -> Vec<(&'static str, String)> {
    let krate = name.replace('-', "_");
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &krate)
            .replace("{{Type}}", &type_name)
            .replace("{{sdk}}", &toml_string(&sdk.display().to_string()))
    };
    vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        (".cargo/config.toml", fill(CARGO_CONFIG)),
        (".gitignore", "/target\n".to_string()),
        ("src/lib.rs", fill(LIB_RS)),
        ("tests/rules.rs", fill(RULES_RS)),
        ("tests/suite.ck8s-test.yaml", fill(SUITE)),
        ("README.md", fill(README)),
    ]
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the .wasm the webhook loads; rlib: the same code for native `cargo test`.
crate-type = ["cdylib", "rlib"]

[dependencies]
ck8s-policy-sdk = { path = {{sdk}} }
serde = { version = "1", features = ["derive"] }

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = true

# A crate of its own, even when created inside another workspace.
[workspace]
"#;

const CARGO_CONFIG: &str = r#"# Policy guests are small core modules: a 64 KiB shadow stack keeps every instance's
# linear memory small, which is most of the per-evaluation cost.
[target.wasm32-unknown-unknown]
rustflags = ["-C", "link-arg=-zstack-size=65536"]
"#;

const LIB_RS: &str = r#"//! {{name}}: container images must be pinned, never `:latest` (or untagged, which means latest).

use ck8s_policy_sdk::serde_json::json;
use ck8s_policy_sdk::{Policy, PolicyMetadata, Request, SettingSpec, Violation, ViolationExt, export_policy, rules, violation};
use serde::Deserialize;

pub struct {{Type}};

#[derive(Deserialize)]
pub struct Settings {
    /// Tags that are refused.
    pub tags: Vec<String>,
}

impl Policy for {{Type}} {
    type Settings = Settings;

    fn metadata() -> PolicyMetadata {
        PolicyMetadata {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "container images must be pinned, never :latest".into(),
            rules: rules::pod_bearing(),
            settings: vec![SettingSpec { name: "tags".into(), description: "image tags that are refused".into(), default: json!(["latest"]) }],
            // true only if validate() reads request.raw_object(): the view covers this policy.
            raw_object: false,
        }
    }

    fn validate(request: &Request<'_>, settings: &Settings) -> Vec<Violation> {
        let mut out = Vec::new();
        for c in request.object.containers() {
            let image = c.container.image.as_deref().unwrap_or("");
            if is_floating(image, &settings.tags) {
                out.push(
                    violation(format!("{}.image", c.path), format!("image {image} is not pinned to a version"))
                        .value(image)
                        .fix("use an explicit version tag or a digest: image:1.2.3 or image@sha256:..."),
                );
            }
        }
        out
    }
}

/// Whether `image` floats: untagged, or tagged with one of `tags`. A digest pins it.
pub fn is_floating(image: &str, tags: &[String]) -> bool {
    if image.is_empty() || image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image); // a registry may have a :port
    match last.split_once(':') {
        None => true,
        Some((_, tag)) => tags.iter().any(|t| t == tag),
    }
}

export_policy!({{Type}});
"#;

const RULES_RS: &str = r#"//! {{name}}, table-driven: native `cargo test`, no WebAssembly needed.

use ck8s_policy_sdk::serde_json::json;
use ck8s_policy_sdk::testing::{POD_BEARING, review, with_pod_spec};
use {{crate}}::{{Type}};

#[test]
fn pinned_images_pass_floating_ones_are_refused() {
    for (image, allowed) in [
        ("nginx:1.27", true),
        ("registry.local:5000/app:v3", true),
        ("nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true),
        ("nginx:latest", false),
        ("nginx", false),
        ("registry.local:5000/app", false),
    ] {
        let pod = with_pod_spec("v1", "Pod", json!({ "containers": [{ "name": "app", "image": image }] }));
        let verdict = review::<{{Type}}>("CREATE", &pod, &json!({}));
        assert_eq!(verdict.allowed(), allowed, "{image}: {verdict:?}");
    }
}

#[test]
fn every_pod_bearing_kind_names_the_field() {
    for (api_version, kind, pod_path) in POD_BEARING {
        let object = with_pod_spec(api_version, kind, json!({ "initContainers": [{ "name": "init", "image": "busybox" }] }));
        let verdict = review::<{{Type}}>("CREATE", &object, &json!({}));
        let paths: Vec<_> = verdict.violations.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, [format!("{pod_path}.initContainers[0].image")], "{kind}");
    }
}

#[test]
fn settings_change_the_refused_tags() {
    let pod = with_pod_spec("v1", "Pod", json!({ "containers": [{ "name": "app", "image": "nginx:edge" }] }));
    assert!(review::<{{Type}}>("CREATE", &pod, &json!({})).allowed());
    assert!(!review::<{{Type}}>("CREATE", &pod, &json!({ "tags": ["latest", "edge"] })).allowed());
}
"#;

const SUITE: &str = r#"# kubectl ck8s policy test .   (after: cargo build --release --target wasm32-unknown-unknown)
# The .wasm is judged by the webhook's own runtime; the format is in ck8s's policies/README.md.
policy: ../target/wasm32-unknown-unknown/release/{{crate}}.wasm
cases:
  - name: a pinned image passes
    resource:
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: web, namespace: demo}
      spec:
        template:
          spec:
            containers: [{name: web, image: "nginx:1.27"}]
    expect: allow
  - name: a :latest image is refused
    resource:
      apiVersion: v1
      kind: Pod
      metadata: {name: web, namespace: demo}
      spec:
        containers: [{name: web, image: "nginx:latest"}]
    expect: deny
    messages: ["not pinned"]
    paths: ["spec.containers[0].image"]
"#;

const README: &str = r#"# {{name}}

A ck8s admission policy (see ck8s's `policies/README.md`).

    cargo test                                              # native rule tests
    cargo build --release --target wasm32-unknown-unknown   # -> target/wasm32-unknown-unknown/release/{{crate}}.wasm
    kubectl ck8s policy test .                              # tests/suite.ck8s-test.yaml against the .wasm
    kubectl ck8s policy inspect target/wasm32-unknown-unknown/release/{{crate}}.wasm

Ship it by copying the `.wasm` into the webhook's policies directory (`ck8s-admission --policies DIR`).
"#;
