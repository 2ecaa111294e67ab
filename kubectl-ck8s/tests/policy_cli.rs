//! `kubectl ck8s policy ...`, run as the real binary on the fixtures in `tests/fixtures/`:
//! exit codes, the text a user sees, `-o json`, and that a Secret's value never shows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-ck8s");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_in(dir: &Path, args: &[&str]) -> Run {
    let out: Output = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run kubectl-ck8s");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ck8s(args: &[&str]) -> Run {
    run_in(&fixtures(), args)
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

// ---- policy check ----

#[test]
fn check_good_manifests_pass() {
    let r = ck8s(&["policy", "check", "-f", "good"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("allowed: 0 denials, 0 warnings, 0 audit findings in 3 objects"),
        "{r:?}"
    );
}

#[test]
fn check_bad_manifests_fail_with_paths_and_fixes() {
    let r = ck8s(&[
        "policy",
        "check",
        "-f",
        "bad/build-ref.yaml",
        "-f",
        "bad/legacy-namespace.yaml",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    for text in [
        "bad/build-ref.yaml#1",
        "Deployment/codex-k8s-control-plane -n codex-k8s-prod",
        "spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]",
        "(got \"-b feature/x\")",
        "main, feature/<branch> or a commit SHA",
        "stringData.CODEXK8S_BUILD_REF",
        "(value from a Secret, not shown)",
        "metadata.labels[codexk8s.io/managed-by]",
        "rename label codexk8s.io/managed-by to codex-k8s.dev/managed-by",
        "denied: 3 denials, 0 warnings, 0 audit findings in 3 objects",
    ] {
        assert!(r.stdout.contains(text), "missing {text:?}\n{r:?}");
    }
    assert!(
        !r.stdout.contains("hunter2") && !r.stderr.contains("hunter2"),
        "a Secret value was printed\n{r:?}"
    );
}

#[test]
fn check_json_output_for_scripts() {
    let r = ck8s(&["policy", "check", "-f", "bad", "-o", "json"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        !r.stdout.contains("hunter2"),
        "a Secret value was printed\n{r:?}"
    );
    let envelope: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(envelope["command"], "policy check");
    assert_eq!(envelope["verdict"], "fail");
    let report = &envelope["details"];
    assert_eq!(report["allowed"], false);
    assert_eq!(report["denials"], 3);
    let findings = report["findings"].as_array().unwrap();
    let deployment = &findings[0];
    assert_eq!(deployment["document"], 1);
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["policy"], "build-ref");
    assert_eq!(deployment["effect"], "deny");
    assert_eq!(
        deployment["path"],
        "spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]"
    );
    assert_eq!(deployment["value"], "-b feature/x");
    let secret = &findings[1];
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["document"], 2);
    assert!(secret.get("value").is_none(), "{secret}");
}

#[test]
fn check_reads_stdin_and_lists() {
    let mut child = Command::new(BIN)
        .args(["policy", "check", "-f", "-", "--operation", "UPDATE"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let manifest = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: ok}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: runtime}\n  data: {CODEXK8S_KANIKO_CACHE_ENABLED: \"true\"}\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("-#1.2") && stdout.contains("data.CODEXK8S_KANIKO_CACHE_ENABLED"),
        "{stdout}"
    );
}

#[test]
fn check_warn_mode_prints_but_passes() {
    let r = ck8s(&[
        "policy",
        "check",
        "-f",
        "bad/build-ref.yaml",
        "--config",
        "warn-build-ref.yaml",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(" warn ") && r.stdout.contains("allowed: 0 denials, 2 warnings"),
        "{r:?}"
    );
}

#[test]
fn check_invalid_yaml_is_exit_2_with_file_and_document() {
    let r = ck8s(&["policy", "check", "-f", "good", "-f", "invalid.yaml"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("error: invalid.yaml: document 2: invalid YAML"),
        "{r:?}"
    );
    let r = ck8s(&["policy", "check", "-f", "no-such-file.yaml"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("no-such-file.yaml: no such file or directory"),
        "{r:?}"
    );
}

/// A setting the policy does not declare, or one of the wrong type (which the policy itself
/// refuses when its settings are handed to it, once): exit 2 before any object is judged.
#[test]
fn check_unknown_or_mistyped_setting_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    for (settings, says) in [
        ("{nmaes: [X]}", "policy build-ref has no setting \"nmaes\""),
        (
            "{names: CODEXK8S_BUILD_REF}",
            "policy build-ref does not take its settings: settings do not parse: invalid type: string \"CODEXK8S_BUILD_REF\", expected a sequence",
        ),
    ] {
        let yaml = format!("policies:\n  build-ref:\n    settings: {settings}\n");
        std::fs::write(&config, yaml).unwrap();
        let r = ck8s(&[
            "policy",
            "check",
            "-f",
            "good",
            "--config",
            config.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.stderr.contains(says), "{r:?}");
        assert!(r.stdout.is_empty(), "{r:?}");
    }
}

// ---- policy test ----

fn summary_line(stdout: &str) -> &str {
    stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed"))
        .unwrap_or("")
}

#[test]
fn test_the_builtin_suites_all_pass() {
    let r = run_in(&workspace(), &["policy", "test", "policies"]);
    assert_eq!(r.code, 0, "{r:?}");
    for suite in ["build-ref", "legacy-labels", "kaniko-cache"] {
        assert!(
            r.stdout.contains(&format!(
                "policies/{suite}/tests/suite.ck8s-test.yaml (builtin:{suite})"
            )),
            "{r:?}"
        );
    }
    assert!(
        r.stdout
            .contains("case \"-b feature/x\" is rejected ... ok"),
        "{r:?}"
    );
    let line = summary_line(&r.stdout);
    let passed: usize = line
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 25, "{line:?}\n{r:?}");
}

#[test]
fn test_a_wrong_suite_fails_with_a_diff() {
    let r = ck8s(&["policy", "test", "suites/wrong.ck8s-test.yaml"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("case a wrong expectation ... FAILED"),
        "{r:?}"
    );
    assert!(
        r.stdout.contains("expected: allow") && r.stdout.contains("got: deny"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("missing message: \"this text is in no finding\""),
        "{r:?}"
    );
    assert_eq!(summary_line(&r.stdout), "0 passed, 1 failed");
}

#[test]
fn test_a_broken_suite_is_exit_2() {
    let r = ck8s(&["policy", "test", "suites/broken.ck8s-test.yaml"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("no built-in policy called \"no-such-policy\""),
        "{r:?}"
    );
    let r = ck8s(&["policy", "test", "good"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no test suites"), "{r:?}");
}

// ---- policy new ----

#[test]
fn new_scaffolds_a_crate_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_in(dir.path(), &["policy", "new", "no-latest-tag"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("cargo build --release --target wasm32-unknown-unknown"),
        "{r:?}"
    );
    let root = dir.path().join("no-latest-tag");
    for file in [
        "Cargo.toml",
        ".cargo/config.toml",
        "src/lib.rs",
        "tests/rules.rs",
        "tests/suite.ck8s-test.yaml",
    ] {
        assert!(root.join(file).is_file(), "{file} missing");
    }
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(
        cargo.contains("crate-type = [\"cdylib\", \"rlib\"]") && cargo.contains("[workspace]"),
        "{cargo}"
    );
    let sdk = workspace().join("policies/sdk").canonicalize().unwrap();
    assert!(
        cargo.contains(&format!(
            "ck8s-policy-sdk = {{ path = \"{}\" }}",
            sdk.display()
        )),
        "{cargo}"
    );
    let config = std::fs::read_to_string(root.join(".cargo/config.toml")).unwrap();
    assert!(config.contains("-zstack-size=65536"), "{config}");
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    assert!(
        lib.contains("pub struct NoLatestTag;") && lib.contains("export_policy!(NoLatestTag);"),
        "{lib}"
    );

    let again = run_in(dir.path(), &["policy", "new", "no-latest-tag"]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(
        again
            .stderr
            .contains("already exists; refusing to overwrite it"),
        "{again:?}"
    );

    let bad = run_in(dir.path(), &["policy", "new", "No_Latest"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("lower-kebab-case"), "{bad:?}");
}

/// The whole author loop on the scaffold: build to wasm, then its suite against the `.wasm`.
/// About 25 s on a 2-core machine (a cold build of serde and the SDK for wasm32).
#[test]
fn new_scaffold_builds_to_wasm_and_its_suite_passes() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_in(
        dir.path(),
        &["policy", "new", "no-latest-tag", "--path", "p"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let root = dir.path().join("p");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"]);
    for var in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
    ] {
        build.env_remove(var);
    }
    let out = build.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        root.join("target/wasm32-unknown-unknown/release/no_latest_tag.wasm")
            .is_file()
    );

    let t = run_in(&root, &["policy", "test", "."]);
    assert_eq!(t.code, 0, "{t:?}");
    assert_eq!(summary_line(&t.stdout), "2 passed, 0 failed");
    let i = run_in(
        &root,
        &[
            "policy",
            "inspect",
            "target/wasm32-unknown-unknown/release/no_latest_tag.wasm",
        ],
    );
    assert_eq!(i.code, 0, "{i:?}");
    assert!(i.stdout.contains("Name:        no-latest-tag"), "{i:?}");
}

// ---- policy inspect, webhook-rules, list ----

#[test]
fn inspect_builtin_build_ref() {
    let r = ck8s(&["policy", "inspect", "builtin:build-ref"]);
    assert_eq!(r.code, 0, "{r:?}");
    for text in [
        "Name:        build-ref",
        "Source:      builtin:build-ref",
        "Loads:       yes, in ",
        "within the runtime's limits (time 100 ms, memory 64 MiB, output 1 MiB, no imports)",
        " names  [\"CODEXK8S_BUILD_REF\"] ",
        "configmaps",
        "ValidatingWebhookConfiguration rules:\nrules:\n- apiGroups:\n  - ''",
    ] {
        assert!(r.stdout.contains(text), "missing {text:?}\n{r:?}");
    }
    let json = ck8s(&["policy", "inspect", "builtin:build-ref", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(v["command"], "policy inspect");
    let v = &v["details"];
    assert_eq!(v["name"], "build-ref");
    assert_eq!(v["loads"], true);
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert!(v["wasmBytes"].as_u64().unwrap() > 1000);
    assert_eq!(
        v["settings"][0]["default"],
        serde_json::json!(["CODEXK8S_BUILD_REF"])
    );
}

#[test]
fn inspect_a_file_that_is_not_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm\x01\0\0\0").unwrap(); // an empty module: no exports
    let r = ck8s(&["policy", "inspect", bogus.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("Loads:       NO: ") && r.stdout.contains("missing or mistyped export"),
        "{r:?}"
    );
    let missing = ck8s(&["policy", "inspect", "nope.wasm"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    let unknown = ck8s(&["policy", "inspect", "builtin:nope"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(
        unknown
            .stderr
            .contains("help: built-in policies: build-ref"),
        "{unknown:?}"
    );
}

/// A bundle file holds several policies: `FILE.wasm#NAME` picks one, the bare file says which
/// names it has.
#[test]
fn inspect_one_policy_of_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("builtins.wasm");
    std::fs::write(&bundle, ck8s_builtin_policies::BUNDLE).unwrap();
    let bundle = bundle.to_str().unwrap();

    let one = ck8s(&["policy", "inspect", &format!("{bundle}#legacy-labels")]);
    assert_eq!(one.code, 0, "{one:?}");
    assert!(one.stdout.contains("Name:        legacy-labels"), "{one:?}");

    let all = ck8s(&["policy", "inspect", bundle, "-o", "json"]);
    assert_eq!(all.code, 1, "{all:?}");
    let v: serde_json::Value = serde_json::from_str(&all.stdout).expect("JSON");
    assert_eq!(v["verdict"], "fail");
    let error = v["details"]["loadError"].as_str().unwrap();
    assert!(
        error.contains("is a bundle of 3 policies")
            && error.contains("build-ref, legacy-labels, kaniko-cache"),
        "{error}"
    );

    let wrong = ck8s(&["policy", "inspect", &format!("{bundle}#nope")]);
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(
        wrong.stdout.contains("has no policy called \"nope\""),
        "{wrong:?}"
    );
}

#[test]
fn webhook_rules_are_the_union_of_all_policies() {
    let r = ck8s(&["policy", "webhook-rules"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: serde_json::Value = serde_saphyr::from_str(&r.stdout).expect("YAML");
    // legacy-labels judges every object, so the union is one all-resources rule.
    let rules = doc["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{r:?}");
    assert_eq!(rules[0]["resources"][0], "*");
    assert_eq!(
        rules[0]["operations"],
        serde_saphyr::from_str::<serde_json::Value>("[CREATE, UPDATE]").unwrap()
    );
}

#[test]
fn list_shows_the_builtins() {
    let r = ck8s(&["policy", "list", "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let names: Vec<&str> = v["details"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["build-ref", "legacy-labels", "kaniko-cache"]);
}

// ---- ValidatingAdmissionPolicy files (CEL, no compile step) ----

/// The policy author's loop without a compile step: scaffold, test, check manifests, inspect,
/// list; a broken expression refused with the file, the field path and the position.
#[test]
fn a_cel_policy_is_scaffolded_tested_and_checked_without_a_build() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = run_in(d, &["policy", "new", "no-latest", "--cel", "--path", "p"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(d.join("p/no-latest.yaml").is_file() && d.join("p/no-latest.ck8s-test.yaml").is_file());
    let again = run_in(d, &["policy", "new", "no-latest", "--cel", "--path", "p"]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("refusing to overwrite"), "{again:?}");

    let r = run_in(d, &["policy", "test", "p"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(summary_line(&r.stdout), "2 passed, 0 failed", "{r:?}");

    std::fs::write(
        d.join("pods.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: default}\nspec:\n  containers: [{name: a, image: 'nginx:latest'}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: default}\nspec:\n  containers: [{name: b, image: 'nginx:1.27.3'}]\n",
    )
    .unwrap();
    let r = run_in(
        d,
        &[
            "policy",
            "check",
            "--no-builtin",
            "--policies",
            "p",
            "-f",
            "pods.yaml",
            "-o",
            "json",
        ],
    );
    assert_eq!(r.code, 1, "{r:?}");
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let findings = report["details"]["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(findings.len(), 1, "{r:?}");
    assert_eq!(findings[0]["name"], "a");
    assert_eq!(findings[0]["policy"], "no-latest");
    assert_eq!(findings[0]["path"], "spec.validations[0].expression");
    assert_eq!(
        findings[0]["message"],
        "ValidatingAdmissionPolicy 'no-latest' with binding 'no-latest' denied request: image nginx:latest has no tag or uses :latest; pin a version (name:1.2.3) or a digest (name@sha256:...)"
    );

    let r = run_in(d, &["policy", "inspect", "p/no-latest.yaml"]);
    assert_eq!(r.code, 0, "{r:?}");
    for text in [
        "Policy:      no-latest",
        "Variables:   spec",
        "Bindings:    no-latest [Deny]",
    ] {
        assert!(r.stdout.contains(text), "{text:?} in {r:?}");
    }
    let r = run_in(d, &["policy", "list", "--policies", "p", "-o", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("\"no-latest\"") && r.stdout.contains("ValidatingAdmissionPolicy"),
        "{r:?}"
    );

    let policy = std::fs::read_to_string(d.join("p/no-latest.yaml")).unwrap();
    std::fs::write(
        d.join("p/no-latest.yaml"),
        policy.replace("c.image.contains('@') ||", "c.image.contains('@') ||| "),
    )
    .unwrap();
    let r = run_in(
        d,
        &[
            "policy",
            "check",
            "--no-builtin",
            "--policies",
            "p",
            "-f",
            "pods.yaml",
        ],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("no-latest.yaml: ValidatingAdmissionPolicy \"no-latest\" is invalid: spec.validations[0].expression: Invalid value:")
            && r.stderr.contains("ERROR: <input>:"),
        "{r:?}"
    );
    let r = run_in(d, &["policy", "inspect", "p/no-latest.yaml"]);
    assert_eq!(r.code, 1, "{r:?}");
}

/// Offline, a `namespaceSelector` sees the Namespaces given among the manifests; without one
/// the namespace is not known, and the policy fails closed saying so.
#[test]
fn check_matches_namespace_selectors_on_the_namespaces_given() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("p")).unwrap();
    std::fs::write(
        d.join("p/prod-only.yaml"),
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: prod-replicas}
spec:
  matchConstraints:
    namespaceSelector: {matchLabels: {env: prod}}
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}
  validations:
  - expression: "object.spec.replicas >= 2"
    message: production runs at least 2 replicas
"#,
    )
    .unwrap();
    let deployment = |ns: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec: {{replicas: 1}}\n"
        )
    };
    let namespaces = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {env: prod}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: lab, labels: {env: dev}}\n";
    std::fs::write(d.join("ns.yaml"), namespaces).unwrap();
    std::fs::write(d.join("shop.yaml"), deployment("shop")).unwrap();
    std::fs::write(d.join("lab.yaml"), deployment("lab")).unwrap();
    let check = |files: &[&str]| {
        let mut args = vec!["policy", "check", "--no-builtin", "--policies", "p"];
        for f in files {
            args.extend(["-f", f]);
        }
        run_in(d, &args)
    };
    let r = check(&["ns.yaml", "shop.yaml"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("production runs at least 2 replicas"),
        "{r:?}"
    );
    let r = check(&["ns.yaml", "lab.yaml"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = check(&["lab.yaml"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("namespace \\\"lab\\\" is not known")
            || r.stdout.contains("namespace \"lab\" is not known"),
        "{r:?}"
    );
}
