//! kaniko-cache, table-driven: truthy values, every location, executor flags.

use ck8s_policy_kaniko_cache::{KanikoCache, is_cache_flag_on, is_truthy};
use ck8s_policy_sdk::testing::{POD_BEARING, pod_spec_with_env, review, with_pod_spec};
use ck8s_policy_sdk::{ValueSource, Verdict};
use serde_json::{Value, json};

fn check(object: &Value) -> Verdict {
    review::<KanikoCache>("CREATE", object, &json!({}))
}

#[test]
fn truthy_values() {
    for (v, on) in [
        ("true", true),
        ("TRUE", true),
        (" True ", true),
        ("1", true),
        ("yes", true),
        ("YES", true),
        ("on", true),
        ("On", true),
        ("false", false),
        ("0", false),
        ("no", false),
        ("off", false),
        ("", false),
        ("enabled", false),
        ("truee", false),
    ] {
        assert_eq!(is_truthy(v), on, "{v:?}");
    }
}

#[test]
fn executor_flags() {
    for (arg, on) in [
        ("--cache", true),
        ("--cache=true", true),
        ("--cache=TRUE", true),
        ("--cache=1", true),
        ("--cache=t", true),
        ("--cache=false", false),
        ("--cache=0", false),
        ("--cache-repo=registry/cache", false),
        ("--cache-dir=/cache", false),
        ("--cache-ttl=6h", false),
        ("--no-push", false),
        ("cache", false),
    ] {
        assert_eq!(is_cache_flag_on(arg), on, "{arg:?}");
    }
}

#[test]
fn env_in_every_pod_bearing_kind() {
    for (api_version, kind, pod_path) in POD_BEARING {
        let obj = with_pod_spec(
            api_version,
            kind,
            pod_spec_with_env(
                json!([{ "name": "CODEXK8S_KANIKO_CACHE_ENABLED", "value": "true" }]),
            ),
        );
        let verdict = check(&obj);
        assert_eq!(verdict.violations.len(), 1, "{kind}");
        assert_eq!(
            verdict.violations[0].path,
            format!("{pod_path}.containers[0].env[CODEXK8S_KANIKO_CACHE_ENABLED]")
        );
        assert!(
            verdict.violations[0]
                .fix
                .contains("CODEXK8S_KANIKO_CACHE_ENABLED=false")
        );
        let off = with_pod_spec(
            api_version,
            kind,
            pod_spec_with_env(
                json!([{ "name": "CODEXK8S_KANIKO_CACHE_ENABLED", "value": "false" }]),
            ),
        );
        assert!(check(&off).allowed(), "{kind}");
    }
}

#[test]
fn configmap_and_secret() {
    let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "codex-k8s-runtime" }, "data": { "CODEXK8S_KANIKO_CACHE_ENABLED": " Yes " } });
    assert_eq!(
        check(&cm).violations[0].path,
        "data.CODEXK8S_KANIKO_CACHE_ENABLED"
    );
    let secret = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s" }, "data": { "CODEXK8S_KANIKO_CACHE_ENABLED": "dHJ1ZQ==" } });
    let verdict = check(&secret);
    assert_eq!(verdict.violations[0].source, ValueSource::Secret);
    assert_eq!(verdict.violations[0].value, None);
    let off = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s" }, "stringData": { "CODEXK8S_KANIKO_CACHE_ENABLED": "false" } });
    assert!(check(&off).allowed());
}

#[test]
fn kaniko_executor_with_cache_flag() {
    let pod = |image: &str, args: Value| {
        with_pod_spec(
            "batch/v1",
            "Job",
            json!({ "containers": [{ "name": "kaniko", "image": image, "args": args }] }),
        )
    };
    let verdict = check(&pod(
        "gcr.io/kaniko-project/executor:v1.23.2",
        json!(["--dockerfile=Dockerfile", "--cache=true"]),
    ));
    assert_eq!(verdict.violations.len(), 1);
    assert_eq!(
        verdict.violations[0].path,
        "spec.template.spec.containers[0].args[1]"
    );
    assert_eq!(verdict.violations[0].value.as_deref(), Some("--cache=true"));
    assert!(
        check(&pod(
            "gcr.io/kaniko-project/executor:debug",
            json!(["--cache=false", "--cache-repo=r/c"])
        ))
        .allowed()
    );
    // the same flag on some other image is not Kaniko's business
    assert!(check(&pod("busybox", json!(["--cache"]))).allowed());
}

#[test]
fn contains_fragment_agrees_with_str_contains() {
    use ck8s_policy_kaniko_cache::contains_fragment;
    let hays = [
        "",
        "k",
        "gcr.io/kaniko-project/executor:v1.23.2",
        "gcr.io/kaniko-project/executo",
        "kaniko-project/executor",
        "mirror.local/kaniko-project/kaniko-project/executor@sha256:ab",
        "ééé-kaniko-project/executor",
        "busybox",
    ];
    let needles = [
        "",
        "k",
        "kaniko-project/executor",
        "executor:v1",
        "é",
        "busybox!",
    ];
    for h in hays {
        for n in needles {
            assert_eq!(contains_fragment(h, n), h.contains(n), "{h:?} / {n:?}");
        }
    }
}
