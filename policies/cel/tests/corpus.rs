//! The corpus of `testdata/` offline: every policy loads, every object is judged, the refused
//! policies are refused (the API server's side of both is `tests/tests/real_cel.rs`).

use ck8s_policy_cel::{Operation, PolicySet, Request};
use serde_json::json;
use std::path::{Path, PathBuf};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(testdata().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn corpus() -> PolicySet {
    let mut set = PolicySet::default();
    for f in files("policies") {
        set.add(
            &f.display().to_string(),
            &std::fs::read_to_string(&f).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    set
}

fn namespace(name: &str) -> serde_json::Value {
    let env = if name == "cel-a" { "prod" } else { "dev" };
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"env": env, "kubernetes.io/metadata.name": name}}})
}

#[test]
fn every_policy_loads_and_every_object_is_judged() {
    let set = corpus();
    assert!(set.policies.len() >= 20, "{}", set.policies.len());
    let objects: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(testdata().join("objects.json")).unwrap())
            .unwrap();
    assert!(objects.len() >= 200);
    let (mut denied, mut warned) = (0, 0);
    for o in objects {
        let mut r = Request::for_object(Operation::Create, o);
        if !r.namespace.is_empty() && r.kind.kind != "Namespace" {
            r.namespace_object = Some(namespace(&r.namespace).into());
        }
        let d = set.evaluate(&r, None).decision();
        denied += usize::from(!d.allowed);
        warned += usize::from(!d.warnings.is_empty());
    }
    assert!(
        denied > 30 && warned > 10,
        "denied {denied}, warned {warned}"
    );
}

#[test]
fn the_built_in_rules_in_cel() {
    let set = corpus();
    let pod = |env: serde_json::Value, args: serde_json::Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "cel-b", "labels": {"codexk8s.io/run-id": "1"}},
            "spec": {"containers": [{"name": "k", "image": "gcr.io/kaniko-project/executor:v1",
                "env": env, "args": args}]}})
    };
    let judge = |o: serde_json::Value| {
        let mut r = Request::for_object(Operation::Create, o);
        r.namespace_object = Some(namespace("cel-b").into());
        let d = set.evaluate(&r, None).decision();
        d.denials
            .into_iter()
            .map(|d| d.message)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let m = judge(pod(
        json!([{"name": "CODEXK8S_BUILD_REF", "value": "-b feature/x"},
               {"name": "CODEXK8S_KANIKO_CACHE_ENABLED", "value": " True "}]),
        json!(["--cache=true"]),
    ));
    assert!(
        m.contains("ck8s-build-ref") && m.contains("\"-b feature/x\""),
        "{m}"
    );
    assert!(
        m.contains("CODEXK8S_KANIKO_CACHE_ENABLED re-enables"),
        "{m}"
    );
    assert!(
        m.contains("Kaniko executor started with the cache enabled (--cache=true)"),
        "{m}"
    );
    assert!(
        m.contains("codexk8s.io/run-id (use codex-k8s.dev/run-id)"),
        "{m}"
    );
    for ok in [
        "main",
        "feature/x",
        "refs/tags/v1.2.3",
        "a1b2c3d",
        "user@feature",
    ] {
        let m = judge(pod(
            json!([{"name": "CODEXK8S_BUILD_REF", "value": ok}]),
            json!(["--cache=false"]),
        ));
        assert!(
            !m.contains("build-ref") && !m.contains("Kaniko"),
            "{ok}: {m}"
        );
    }
    for bad in [
        "--orphan", "a..b", "x.lock", "/main", "main.", "@", "a:b", "", "a b", "a\tb", "x/.y",
    ] {
        let m = judge(pod(
            json!([{"name": "CODEXK8S_BUILD_REF", "value": bad}]),
            json!([]),
        ));
        assert!(
            m.contains("CODEXK8S_BUILD_REF is not a valid git ref"),
            "{bad:?}: {m}"
        );
    }
}

#[test]
fn refused_policies() {
    for f in files("refused") {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# expect: ")
            .to_string();
        let r = PolicySet::load(&f.display().to_string(), &text);
        match expect.as_str() {
            "both" | "crate-only" => assert!(r.is_err(), "{} loads", f.display()),
            "server-only" => assert!(r.is_ok(), "{}: {}", f.display(), r.unwrap_err()),
            other => panic!("{other}"),
        }
    }
}
