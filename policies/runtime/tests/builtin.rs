//! The built-in policies run as WebAssembly through the runtime: request rules, modes,
//! settings validation, and the artifact cache.

use ck8s_policy_api::Operation;
use ck8s_policy_runtime::admission::parse_review;
use ck8s_policy_runtime::{
    Decision, Evaluation, FindingKind, Limits, LoadedPolicy, NotJudged, OutcomeResult, PolicySet,
    PolicySources, Runtime, SettingsFile, Source, Subject,
};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(Limits::default(), None).unwrap())
}

fn set(config: &str) -> PolicySet {
    set_on(runtime(), config)
}

/// The built-ins on `rt` with the settings file `config`.
fn set_on(rt: &Runtime, config: &str) -> PolicySet {
    let sources = PolicySources::new()
        .builtin(ck8s_builtin_policies::BUNDLE)
        .settings(SettingsFile::parse(config).unwrap());
    PolicySet::build(rt, &sources).unwrap()
}

/// The built-in policies, which the runtime does not have: its callers hand them in.
const BUILTIN: Source = Source::Builtin(ck8s_builtin_policies::BUNDLE);

fn review(operation: &str, object: &Value, extra: Value) -> String {
    let mut request = json!({
        "uid": "0b6f6d3c-1111-2222-3333-444455556666",
        "kind": { "group": "apps", "version": "v1", "kind": "Deployment" },
        "resource": { "group": "apps", "version": "v1", "resource": "deployments" },
        "namespace": "codex-k8s-prod", "name": "codex-k8s-worker",
        "operation": operation,
        "userInfo": { "username": "dev" },
        "object": object,
    });
    for (k, v) in extra.as_object().unwrap() {
        request[k] = v.clone();
    }
    json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request })
        .to_string()
}

fn bad_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "codex-k8s-worker", "labels": { "codexk8s.io/managed-by": "codex-k8s-worker" } },
        "spec": { "template": { "metadata": {}, "spec": { "containers": [{ "name": "w", "image": "w:1", "env": [
            { "name": "CODEXK8S_BUILD_REF", "value": "-b feature/x" },
            { "name": "CODEXK8S_KANIKO_CACHE_ENABLED", "value": "TRUE" },
        ]}]}}}
    })
}

fn decide(set: &PolicySet, body: &str) -> (Evaluation, Decision) {
    let req = parse_review(body.as_bytes()).unwrap();
    let eval = set.evaluate(&Subject::from_admission(&req));
    let d = Decision::from_evaluation(&eval);
    (eval, d)
}

#[test]
fn one_object_three_policies_every_violation_named() {
    let (_, d) = decide(&set(""), &review("CREATE", &bad_deployment(), json!({})));
    assert!(!d.allowed);
    let msg = d.denial_message();
    for needle in [
        "[build-ref] spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]",
        "\"-b feature/x\"",
        "[legacy-labels] metadata.labels[codexk8s.io/managed-by]",
        "rename label codexk8s.io/managed-by to codex-k8s.dev/managed-by",
        "[kaniko-cache] spec.template.spec.containers[0].env[CODEXK8S_KANIKO_CACHE_ENABLED]",
        "CODEXK8S_KANIKO_CACHE_ENABLED=false",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
    assert_eq!(d.denials.len(), 3);
}

#[test]
fn request_rules_shared_by_all_policies() {
    let s = set("");
    let body = |op: &str, extra: Value| review(op, &bad_deployment(), extra);
    for (name, body, expect) in [
        (
            "DELETE is allowed",
            body("DELETE", json!({})),
            Some(NotJudged::Operation(Operation::Delete)),
        ),
        (
            "CONNECT is allowed",
            body("CONNECT", json!({})),
            Some(NotJudged::Operation(Operation::Connect)),
        ),
        (
            "status subresource is not judged",
            body("UPDATE", json!({ "subResource": "status" })),
            Some(NotJudged::SubResource),
        ),
        (
            "scale subresource is not judged",
            body("UPDATE", json!({ "subResource": "scale" })),
            Some(NotJudged::SubResource),
        ),
        (
            "dry-run is judged like any other",
            body("CREATE", json!({ "dryRun": true })),
            None,
        ),
        ("UPDATE is judged", body("UPDATE", json!({})), None),
    ] {
        let (eval, d) = decide(&s, &body);
        match expect {
            Some(reason) => {
                assert!(
                    matches!(eval, Evaluation::NotJudged(r) if r == reason),
                    "{name}: {eval:?}"
                );
                assert!(d.allowed, "{name}");
            }
            None => assert!(!d.allowed, "{name}"),
        }
    }
    let mut deleting = bad_deployment();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-11-25T10:00:00Z");
    let (eval, d) = decide(&s, &review("UPDATE", &deleting, json!({})));
    assert!(matches!(
        eval,
        Evaluation::NotJudged(NotJudged::BeingDeleted)
    ));
    assert!(d.allowed);
    // a CREATE with a deletionTimestamp is still judged (only finalizer removal is exempt)
    assert!(
        !decide(&s, &review("CREATE", &deleting, json!({})))
            .1
            .allowed
    );
}

#[test]
fn policies_are_only_asked_about_what_they_inspect() {
    let s = set("");
    let ns = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "run-1", "labels": { "codexk8s.io/run-id": "1" } } });
    let body = review(
        "CREATE",
        &ns,
        json!({
            "kind": { "group": "", "version": "v1", "kind": "Namespace" },
            "resource": { "group": "", "version": "v1", "resource": "namespaces" },
        }),
    );
    let (eval, d) = decide(&s, &body);
    let Evaluation::Judged(outcomes) = eval else {
        panic!()
    };
    let by_name = |n: &str| {
        outcomes
            .iter()
            .find(|o| o.policy == n)
            .unwrap()
            .result
            .clone()
    };
    assert_eq!(by_name("build-ref"), OutcomeResult::NotInspected);
    assert_eq!(by_name("kaniko-cache"), OutcomeResult::NotInspected);
    assert!(matches!(
        by_name("legacy-labels"),
        OutcomeResult::Violations(_)
    ));
    assert!(!d.allowed);
}

#[test]
fn modes_warn_and_audit_allow() {
    let s = set(
        "policies: { build-ref: { mode: warn }, legacy-labels: { mode: audit }, kaniko-cache: { mode: warn } }",
    );
    let (_, d) = decide(&s, &review("CREATE", &bad_deployment(), json!({})));
    assert!(d.allowed);
    assert_eq!(d.warnings.len(), 2);
    assert_eq!(d.audits.len(), 1);
    assert!(
        matches!(&d.audits[0].kind, FindingKind::Violation(v) if v.path == "metadata.labels[codexk8s.io/managed-by]")
    );
}

#[test]
fn settings_reach_the_guest_and_typos_are_refused() {
    let s = set("policies: { build-ref: { settings: { names: [OTHER_REF] } } }");
    let (_, d) = decide(&s, &review("CREATE", &bad_deployment(), json!({})));
    assert!(d.denials.iter().all(|f| f.policy != "build-ref"), "{d:?}");

    let policies: Vec<_> = BUILTIN
        .load(runtime())
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    let err = PolicySet::new(
        policies.clone(),
        &SettingsFile::parse("policies: { build-ref: { settings: { nmes: [X] } } }").unwrap(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("no setting \"nmes\" (known: names)"), "{err}");
    let err = PolicySet::new(
        policies,
        &SettingsFile::parse("policies: { no-such-policy: {} }").unwrap(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("not loaded"), "{err}");
    assert!(SettingsFile::parse("policies: { build-ref: { mode: block } }").is_err());
}

/// The built-ins read their settings once, when put in service (`ck8s_configure`): a setting
/// of the wrong type is refused then, naming the policy and the setting, where it used to
/// fail every request; and settings read once decide exactly as settings passed to every call.
#[test]
fn settings_are_read_once_at_load_and_a_wrong_type_is_refused_there() {
    let policies: Vec<Arc<LoadedPolicy>> = BUILTIN
        .load(runtime())
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    assert!(policies.iter().all(|p| p.configurable()));
    for (config, policy, wrong) in [
        (
            "policies: { build-ref: { settings: { names: CODEXK8S_BUILD_REF } } }",
            "build-ref",
            "invalid type: string \"CODEXK8S_BUILD_REF\", expected a sequence",
        ),
        (
            "policies: { kaniko-cache: { settings: { executorImage: [kaniko] } } }",
            "kaniko-cache",
            "invalid type: sequence, expected a string",
        ),
    ] {
        let err = PolicySet::new(policies.clone(), &SettingsFile::parse(config).unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(&format!("policy {policy} does not take its settings: "))
                && err.contains("settings do not parse")
                && err.contains(wrong),
            "{err}"
        );
    }

    // The same request judged by the set (settings read once) and by each policy called
    // with its settings as JSON: the same violations, under defaults and under overrides.
    let body = review("CREATE", &bad_deployment(), json!({}));
    let request = parse_review(body.as_bytes()).unwrap();
    let subject = Subject::from_admission(&request);
    let input = subject.input().unwrap();
    for config in [
        "{}",
        "policies: { build-ref: { settings: { names: [OTHER_REF, CODEXK8S_BUILD_REF] } }, legacy-labels: { settings: { legacyPrefix: codexk8s.io/managed } } }",
    ] {
        let config = SettingsFile::parse(config).unwrap();
        let set = PolicySet::new(policies.clone(), &config).unwrap();
        let Evaluation::Judged(outcomes) = set.evaluate(&subject) else {
            panic!("the Deployment is judged")
        };
        for policy in &policies {
            let mut settings = policy.metadata.default_settings();
            if let Some(given) = config.policies.get(policy.name()) {
                settings.extend(given.settings.clone());
            }
            let settings = serde_json::to_vec(&settings).unwrap();
            let per_call = policy.evaluate_input(&input, &settings).unwrap();
            let outcome = outcomes.iter().find(|o| o.policy == policy.name()).unwrap();
            let OutcomeResult::Violations(read_once) = &outcome.result else {
                panic!("{}: {:?}", policy.name(), outcome.result)
            };
            assert_eq!(read_once, &per_call.violations, "{}", policy.name());
        }
    }

    // What configuring leaves in a fresh instance is a difference, not the memory.
    let defaults: Vec<Vec<u8>> = policies
        .iter()
        .map(|p| serde_json::to_vec(&p.metadata.default_settings()).unwrap())
        .collect();
    let calls: Vec<(&LoadedPolicy, &[u8])> = policies
        .iter()
        .zip(&defaults)
        .map(|(p, s)| (&**p, &s[..]))
        .collect();
    let configured = LoadedPolicy::configure(&calls).unwrap().unwrap();
    assert!(
        (1..16 << 10).contains(&configured.bytes()),
        "{configured:?}"
    );
}

#[test]
fn secret_values_never_reach_the_message() {
    let s = set("");
    let secret = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s" }, "stringData": { "CODEXK8S_BUILD_REF": "--hunter2" } });
    let body = review(
        "CREATE",
        &secret,
        json!({
            "kind": { "group": "", "version": "v1", "kind": "Secret" },
            "resource": { "group": "", "version": "v1", "resource": "secrets" },
        }),
    );
    let (_, d) = decide(&s, &body);
    let msg = d.denial_message();
    assert!(!d.allowed);
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("value from a Secret, not shown"), "{msg}");
}

/// The private artifact directory a runtime made under `root`, and its `.cwasm` files.
fn artifact_files(root: &std::path::Path) -> (std::path::PathBuf, Vec<std::path::PathBuf>) {
    let dirs: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "one private directory: {dirs:?}");
    let dir = dirs[0].clone();
    assert!(
        dir.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("artifacts-")
    );
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    files.sort();
    (dir, files)
}

#[test]
fn artifacts_are_cached_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let first = Runtime::new(Limits::default(), Some(root.path().to_path_buf())).unwrap();
    BUILTIN.load(&first).unwrap();
    let (dir, artifacts) = artifact_files(root.path());
    // One module: the built-ins are one bundle.
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("key")), 0o600);
    assert_eq!(mode(&artifacts[0]), 0o600);
    // a second process-like runtime loads from the artifacts and behaves the same
    let written = std::fs::read(&artifacts[0]).unwrap();
    let second = Runtime::new(Limits::default(), Some(root.path().to_path_buf())).unwrap();
    let names: Vec<_> = BUILTIN
        .load(&second)
        .unwrap()
        .into_iter()
        .map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, ["build-ref", "legacy-labels", "kaniko-cache"]);
    assert_eq!(
        std::fs::read(&artifacts[0]).unwrap(),
        written,
        "reused, not rewritten"
    );
    // a corrupt artifact is ignored and rewritten, never trusted
    std::fs::write(&artifacts[0], b"garbage").unwrap();
    let third = Runtime::new(Limits::default(), Some(root.path().to_path_buf())).unwrap();
    assert_eq!(BUILTIN.load(&third).unwrap().len(), 3);
    assert_eq!(std::fs::read(&artifacts[0]).unwrap(), written);
}

/// An artifact this cache did not write is never deserialized: a real artifact of the same
/// wasm from another cache (a valid module, but under another key), one that anyone may
/// write, and a symlink to one are all compiled over; a directory others may write is not
/// used at all.
#[test]
fn foreign_artifacts_are_never_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let load_in = |dir: &std::path::Path| {
        let rt = Runtime::new(Limits::default(), Some(dir.to_path_buf())).unwrap();
        BUILTIN.load(&rt).unwrap()
    };
    load_in(ours.path());
    load_in(theirs.path());
    let (_, mine) = artifact_files(ours.path());
    let (_, foreign) = artifact_files(theirs.path());
    let genuine = std::fs::read(&mine[0]).unwrap();
    let planted = std::fs::read(&foreign[0]).unwrap();
    assert_ne!(genuine, planted, "each cache has its own key");
    let reload = || {
        let rt = Runtime::new(Limits::default(), Some(ours.path().to_path_buf())).unwrap();
        assert_eq!(BUILTIN.load(&rt).unwrap().len(), 3);
    };

    // another cache's artifact, planted under the right name: recompiled and replaced
    std::fs::write(&mine[0], &planted).unwrap();
    reload();
    assert_eq!(std::fs::read(&mine[0]).unwrap(), genuine);

    // the genuine bytes in a file others may write: not trusted, rewritten private
    std::fs::set_permissions(&mine[0], std::fs::Permissions::from_mode(0o666)).unwrap();
    reload();
    let mode = std::fs::metadata(&mine[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // a symlink in place of the artifact is not followed
    std::fs::remove_file(&mine[0]).unwrap();
    std::os::unix::fs::symlink(&foreign[0], &mine[0]).unwrap();
    reload();
    assert!(
        !std::fs::symlink_metadata(&mine[0])
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&mine[0]).unwrap(), genuine);

    // a private directory someone loosened: the cache is off (nothing read or written)
    let (dir, _) = artifact_files(theirs.path());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::remove_file(&foreign[0]).unwrap();
    load_in(theirs.path());
    assert!(
        !foreign[0].exists(),
        "nothing cached in an untrusted directory"
    );
}

/// Every evaluation gives its instance slot back: a pool of two serves any number of
/// evaluations in a row.
#[test]
fn a_small_pool_serves_any_number_of_evaluations_in_a_row() {
    let rt = Runtime::new(
        Limits {
            max_instances: 2,
            ..Limits::default()
        },
        None,
    )
    .unwrap();
    let set = set_on(&rt, "");
    let body = review("CREATE", &bad_deployment(), json!({}));
    for round in 0..50 {
        let (eval, d) = decide(&set, &body);
        assert!(!d.allowed, "round {round}: {eval:?}");
        let Evaluation::Judged(outcomes) = eval else {
            panic!("round {round}: not judged");
        };
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o.result, OutcomeResult::Violations(_))),
            "round {round}: {outcomes:?}"
        );
    }
}

/// The one-shot runtime of the plugin's build-ref judge (one slot, no epoch thread) decides as
/// the webhook's does, an UPDATE's ratchet (a second evaluation, of the old object) included,
/// even once the runtime itself is gone: the set holds what it needs.
#[test]
fn a_one_shot_runtime_decides_as_the_webhooks() {
    let set = set_on(&Runtime::new(Limits::one_shot(), None).unwrap(), "");
    let webhook = set_on(runtime(), "");
    let create = review("CREATE", &bad_deployment(), json!({}));
    let update = review(
        "UPDATE",
        &bad_deployment(),
        json!({ "oldObject": bad_deployment() }),
    );
    for body in [&create, &update, &create] {
        let (_, one_shot) = decide(&set, body);
        assert_eq!(one_shot, decide(&webhook, body).1);
    }
    assert!(!decide(&set, &create).1.allowed);
    assert!(decide(&set, &update).1.allowed);
}
