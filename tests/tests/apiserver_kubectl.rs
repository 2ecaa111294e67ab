//! Fidelity of the stand-in API server: the real /usr/bin/kubectl talks to it as to a cluster,
//! for what the stand-in still serves (the plugin's fast tests, the smoke benchmark's runbook
//! sequence). What only a real API server does (protobuf writes such as `kubectl create job
//! --from`, controllers, the authorizer) is tested on the real control plane (`real_*.rs`).

use ck8s_tests::TestApiServer;
use serde_json::Value;
use std::process::Command;

const KUBECTL: &str = "/usr/bin/kubectl";

struct Kubectl {
    server: TestApiServer,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(fixture: &str) -> Self {
        Kubectl {
            server: TestApiServer::start(fixture),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let kubeconfig = self.server.write_kubeconfig(self.dir.path());
        Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", self.dir.path())
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .output()
            .expect("run kubectl")
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("kubectl printed JSON")
    }
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn kubectl_get_deployments_as_json() {
    let k = Kubectl::new("healthy");
    let list = k.json(&["get", "deploy", "-n", "codex-k8s-prod", "-o", "json"]);
    let mut got = names(&list);
    got.sort();
    assert_eq!(
        got,
        [
            "codex-k8s",
            "codex-k8s-control-plane",
            "codex-k8s-registry",
            "codex-k8s-web-console",
            "codex-k8s-worker",
            "oauth2-proxy"
        ]
    );
    assert_eq!(list["items"][0]["kind"], "Deployment");
}

#[test]
fn kubectl_label_selector_on_namespaces() {
    let k = Kubectl::new("legacy-labels");
    let list = k.json(&[
        "get",
        "ns",
        "-l",
        "codex-k8s.dev/managed-by=codex-k8s-worker",
        "-o",
        "json",
    ]);
    assert_eq!(names(&list), ["codex-k8s-run-42"]);
    let list = k.json(&[
        "get",
        "ns",
        "-l",
        "codex-k8s.dev/managed-by=codex-k8s-worker,codex-k8s.dev/namespace-purpose=run",
        "-o",
        "json",
    ]);
    assert_eq!(names(&list), ["codex-k8s-run-42"]);
}

#[test]
fn kubectl_get_one_object_and_not_found_status() {
    let k = Kubectl::new("healthy");
    let cj = k.json(&[
        "get",
        "cronjob",
        "codex-k8s-registry-gc",
        "-n",
        "codex-k8s-prod",
        "-o",
        "json",
    ]);
    assert_eq!(cj["spec"]["schedule"], "17 3 * * *");
    let out = k.run(&[
        "get",
        "secret",
        "codex-k8s-production-tls",
        "-n",
        "codex-k8s-prod",
        "-o",
        "name",
    ]);
    assert!(out.status.success());
    let k = Kubectl::new("missing-tls");
    let out = k.run(&[
        "get",
        "secret",
        "codex-k8s-production-tls",
        "-n",
        "codex-k8s-prod",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(NotFound)") && stderr.contains("\"codex-k8s-production-tls\" not found"),
        "{stderr}"
    );
}

#[test]
fn kubectl_sees_forbidden() {
    let k = Kubectl::new("healthy");
    k.server.deny("list", "secrets");
    let out = k.run(&["get", "secrets", "-n", "codex-k8s-system"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(Forbidden)") && stderr.contains("cannot list resource \"secrets\""),
        "{stderr}"
    );
}

#[test]
fn kubectl_create_from_file_dry_run_then_conflict() {
    let k = Kubectl::new("healthy");
    let job = serde_json::json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x", "namespace": "codex-k8s-prod"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
    let file = k.dir.path().join("job.json");
    std::fs::write(&file, job.to_string()).unwrap();
    let f = file.to_str().unwrap();
    let created = k.json(&[
        "create",
        "-f",
        f,
        "--validate=false",
        "--dry-run=server",
        "-o",
        "json",
    ]);
    assert!(
        created["metadata"]["uid"].is_string()
            && created["metadata"]["creationTimestamp"].is_string()
    );
    assert!(
        k.server.object("Job", "codex-k8s-prod", "x").is_none(),
        "dryRun=All stores nothing"
    );
    let out = k.run(&["create", "-f", f, "--validate=false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(k.server.object("Job", "codex-k8s-prod", "x").is_some());
    let out = k.run(&["create", "-f", f, "--validate=false"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(AlreadyExists)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kubectl_patch_and_logs() {
    let k = Kubectl::new("build-ref-bad");
    let out = k.run(&[
        "-n",
        "codex-k8s-prod",
        "patch",
        "configmap",
        "codex-k8s-runtime",
        "--type=merge",
        "-p",
        r#"{"data":{"CODEXK8S_BUILD_REF":"main"}}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        k.server
            .object("ConfigMap", "codex-k8s-prod", "codex-k8s-runtime")
            .unwrap()["data"]["CODEXK8S_BUILD_REF"],
        "main"
    );
    let out = k.run(&[
        "-n",
        "codex-k8s-prod",
        "logs",
        "job/codex-k8s-codegen-check",
        "--tail=2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "error: unknown switch `b'",
            "fatal: '-b feature/x' is not a commit"
        ]
    );
}

#[test]
fn kubectl_table_output_and_rollout_status() {
    let k = Kubectl::new("healthy");
    let out = k.run(&["-n", "codex-k8s-prod", "get", "pods", "-o", "wide"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("codex-k8s-worker-7d9f8b6c5-abcde"));
    let out = k.run(&[
        "-n",
        "codex-k8s-prod",
        "rollout",
        "status",
        "deploy/codex-k8s-control-plane",
        "--timeout=10s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("successfully rolled out"));
}
