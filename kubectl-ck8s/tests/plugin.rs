//! The real `kubectl-ck8s` binary against the in-process test API server, one fixture cluster
//! per broken state: verdicts, exit codes, the lines a user sees, JSON shape, and no secrets.

use ck8s_tests::TestApiServer;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-ck8s");
const NS: &str = "codex-k8s-prod";
const DOMAIN: &str = "platform.codex-k8s.dev";
/// Every secret value planted in the fixtures (plain and as stored, base64).
const SECRETS: &[&str] = &[
    "sk-test-SECRET-VALUE-0001",
    "c2stdGVzdC1TRUNSRVQtVkFMVUUtMDAwMQ==",
    "whsec-SECRET-VALUE-0002",
    "d2hzZWMtU0VDUkVULVZBTFVFLTAwMDI=",
    "PRIVATE-KEY-SECRET-VALUE-0003",
    "UFJJVkFURS1LRVktU0VDUkVULVZBTFVFLTAwMDM=",
    "sk-live-SECRET-VALUE-0004",
];

/// What the app answers through the (simulated) port-forward.
#[derive(Clone, Copy)]
enum App {
    Healthy,
    /// The webhook path goes through OAuth (no --skip-auth-regex).
    WebhookRedirects,
}

/// A local HTTP listener standing in for the pods behind port-forward.
fn app(mode: App) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let resp = match (path, mode) {
                ("/healthz" | "/readyz", _) => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                ("/metrics", _) => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                ("/api/v1/webhooks/github", App::Healthy) => {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
                }
                ("/api/v1/webhooks/github", App::WebhookRedirects) => {
                    "HTTP/1.1 302 Found\r\nLocation: /oauth2/start?rd=%2Fapi%2Fv1%2Fwebhooks%2Fgithub\r\nContent-Length: 0\r\n\r\n"
                }
                _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            };
            let _ = s.write_all(resp.as_bytes());
        }
    });
    addr
}

struct Cluster {
    server: TestApiServer,
    dir: tempfile::TempDir,
    app: String,
}

impl Cluster {
    fn new(fixture: &str) -> Self {
        Self::with_app(fixture, App::Healthy)
    }

    fn with_app(fixture: &str, mode: App) -> Self {
        Cluster {
            server: TestApiServer::start(fixture),
            dir: tempfile::tempdir().unwrap(),
            app: app(mode),
        }
    }

    fn ck8s(&self, args: &[&str]) -> Output {
        let kubeconfig = self.server.write_kubeconfig(self.dir.path());
        run(&kubeconfig, &self.app, args)
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ck8s(&all);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        (code(&out), v)
    }
}

fn run(kubeconfig: &std::path::Path, app: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--domain", DOMAIN, "--request-timeout", "5s"])
        .args(args)
        .env_remove("CODEXK8S_PRODUCTION_NAMESPACE")
        .env_remove("CODEXK8S_PRODUCTION_DOMAIN")
        .env("CK8S_PROBE_DIRECT", app)
        .env(
            "CK8S_CACHE_DIR",
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ck8s-cache"),
        )
        .output()
        .expect("run kubectl-ck8s")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

fn status<'a>(report: &'a Value, id: &str) -> &'a str {
    check(report, id)["status"].as_str().unwrap()
}

fn assert_no_secret(out: &str) {
    for s in SECRETS {
        assert!(!out.contains(s), "secret value {s} printed:\n{out}");
    }
}

#[test]
fn smoke_on_a_healthy_cluster_passes() {
    let c = Cluster::new("healthy");
    let out = c.ck8s(&["smoke"]);
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 0, "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("smoke: 18 pass, 0 warn, 0 fail, 0 skip -> PASS"),
        "{stdout}"
    );
    assert!(
        stdout.contains("codex-k8s-production-tls: certificate valid"),
        "{stdout}"
    );
    assert!(
        c.server.writes().is_empty(),
        "smoke never writes: {:?}",
        c.server.writes()
    );
    assert_no_secret(&stdout);
}

#[test]
fn smoke_json_is_the_full_report() {
    let c = Cluster::new("healthy");
    let (code, r) = c.json(&["smoke"]);
    assert_eq!(code, 0);
    assert_eq!(r["command"], "smoke");
    assert_eq!(r["namespace"], NS);
    assert_eq!(r["verdict"], "pass");
    let ids: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "pods.ready",
            "pods.restarts",
            "rollout.control-plane",
            "rollout.api-gateway",
            "rollout.worker",
            "rollout.oauth2-proxy",
            "migrate.latest",
            "health.healthz",
            "health.readyz",
            "health.metrics",
            "webhook.unauthorized",
            "tls.production",
            "tls.reuse",
            "ingress.domain",
            "web-console.5173",
            "gc.cronjob",
            "retention.heavy-fields",
            "oauth2-proxy.skip-auth"
        ]
    );
    for c in r["checks"].as_array().unwrap() {
        assert!(c["detail"].is_string(), "{c}");
    }
    assert_no_secret(&r.to_string());
}

#[test]
fn smoke_yaml_output() {
    let c = Cluster::new("healthy");
    let out = c.ck8s(&["smoke", "--only", "tls", "-o", "yaml"]);
    let y = text(&out.stdout);
    assert!(
        y.contains("command: smoke") && y.contains("id: tls.production"),
        "{y}"
    );
}

#[test]
fn smoke_failed_rollout_and_restart_storm() {
    let c = Cluster::new("failed-rollout");
    let (code, r) = c.json(&["smoke"]);
    assert_eq!(code, 1);
    assert_eq!(r["verdict"], "fail");
    assert_eq!(status(&r, "rollout.worker"), "fail");
    assert!(
        check(&r, "rollout.worker")["detail"]
            .as_str()
            .unwrap()
            .contains("exceeded its progress deadline")
    );
    assert!(
        check(&r, "rollout.worker")["remedy"]
            .as_str()
            .unwrap()
            .contains("logs deploy/codex-k8s-worker --tail=200")
    );
    assert_eq!(status(&r, "pods.restarts"), "fail");
    assert_eq!(status(&r, "pods.ready"), "fail");
    assert_eq!(status(&r, "rollout.control-plane"), "pass");
}

#[test]
fn smoke_newest_migration_failed() {
    let c = Cluster::new("migrate-failed");
    let (code, r) = c.json(&["smoke"]);
    assert_eq!(code, 1);
    assert_eq!(status(&r, "migrate.latest"), "fail");
    assert!(
        check(&r, "migrate.latest")["detail"]
            .as_str()
            .unwrap()
            .contains("codex-k8s-migrate-20260222 failed")
    );
}

#[test]
fn smoke_missing_tls_secret() {
    let c = Cluster::new("missing-tls");
    let out = c.ck8s(&["smoke", "--only", "tls"]);
    assert_eq!(code(&out), 1);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("secret codex-k8s-production-tls not found"),
        "{stdout}"
    );
    assert!(
        stdout.contains("CODEXK8S_PRODUCTION_DOMAIN must resolve"),
        "the runbook remedy is shown: {stdout}"
    );
}

#[test]
fn smoke_webhook_redirected_to_oauth_fails() {
    let c = Cluster::with_app("healthy", App::WebhookRedirects);
    let (code, r) = c.json(&["smoke", "--only", "webhook"]);
    assert_eq!(code, 1);
    assert_eq!(r["checks"].as_array().unwrap().len(), 1);
    assert!(
        check(&r, "webhook.unauthorized")["detail"]
            .as_str()
            .unwrap()
            .contains("redirected (302) to /oauth2/start")
    );
}

#[test]
fn smoke_only_and_skip() {
    let c = Cluster::new("failed-rollout");
    let (code, r) = c.json(&["smoke", "--only", "rollout", "--skip", "rollout.worker"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["checks"].as_array().unwrap().len(), 3);
    let out = c.ck8s(&["smoke", "--only", "nope"]);
    assert_eq!(code_of(&out), 2);
    assert!(text(&out.stderr).contains("unknown check id \"nope\""));
}

fn code_of(o: &Output) -> i32 {
    code(o)
}

#[test]
fn unreachable_server_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n"),
    )
    .unwrap();
    let out = run(&kubeconfig, "127.0.0.1:1", &["smoke"]);
    assert_eq!(code(&out), 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: cannot reach the API server at http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("help: "), "{stderr}");
}

#[test]
fn forbidden_names_the_missing_rbac_verb_and_resource() {
    let c = Cluster::new("healthy");
    c.server.deny("list", "pods");
    let out = c.ck8s(&["smoke"]);
    assert_eq!(code(&out), 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: forbidden: cannot list pods in namespace codex-k8s-prod"),
        "{stderr}"
    );
    assert!(
        stderr.contains("help: grant the verb \"list\" on resource \"pods\""),
        "{stderr}"
    );
}

#[test]
fn tls_reuse_is_best_effort_when_forbidden() {
    let c = Cluster::new("healthy");
    c.server.deny("list", "secrets");
    let (code, r) = c.json(&["smoke", "--only", "tls.reuse"]);
    assert_eq!(code, 0);
    assert_eq!(status(&r, "tls.reuse"), "warn");
}

#[test]
fn runs_lists_run_namespaces_and_env_names_only() {
    let c = Cluster::new("healthy");
    let out = c.ck8s(&["runs"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("codex-k8s-run-42"), "{stdout}");
    let (code, r) = c.json(&["runs"]);
    assert_eq!(code, 0);
    assert_eq!(
        r["details"]["namespaces"][0]["resource_quotas"],
        serde_json::json!(["codex-k8s-run"])
    );
    let out = c.ck8s(&["runs", "env"]);
    assert_eq!(code_of(&out), 0);
    let (code, r) = c.json(&["runs", "env"]);
    assert_eq!(code, 0);
    assert_eq!(
        r["details"]["pods"][0]["present"].as_array().unwrap().len(),
        5
    );
    assert_no_secret(&text(&out.stdout));
    assert_no_secret(&r.to_string());
}

#[test]
fn labels_clean_cluster_passes() {
    let c = Cluster::new("healthy");
    let out = c.ck8s(&["labels", "--objects"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stdout));
}

#[test]
fn labels_finds_legacy_keys_without_writing() {
    let c = Cluster::new("legacy-labels");
    let (code, r) = c.json(&["labels"]);
    assert_eq!(code, 1);
    assert_eq!(status(&r, "labels.namespace/codex-k8s-run-17"), "fail");
    let (_, r) = c.json(&["labels", "--objects"]);
    assert_eq!(
        status(&r, "labels.configmap/codex-k8s-run-42/run-17-env"),
        "fail"
    );
    let out = c.ck8s(&["labels", "--objects", "--fix", "--dry-run"]);
    assert_eq!(code_of(&out), 1);
    assert!(
        text(&out.stdout).contains("would patch namespace/codex-k8s-run-17"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        c.server.writes().is_empty(),
        "no write without --fix or with --dry-run: {:?}",
        c.server.writes()
    );
}

#[test]
fn labels_fix_rewrites_keys() {
    let c = Cluster::new("legacy-labels");
    let out = c.ck8s(&["labels", "--objects", "--fix"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stdout));
    let ns = c
        .server
        .object("Namespace", "", "codex-k8s-run-17")
        .unwrap();
    assert_eq!(
        ns["metadata"]["labels"],
        serde_json::json!({"codex-k8s.dev/managed-by": "codex-k8s-worker", "codex-k8s.dev/namespace-purpose": "run", "codex-k8s.dev/run-id": "17"})
    );
    let cm = c
        .server
        .object("ConfigMap", "codex-k8s-run-42", "run-17-env")
        .unwrap();
    assert_eq!(
        cm["metadata"]["annotations"],
        serde_json::json!({"codex-k8s.dev/correlation-id": "abc-123"})
    );
    assert_eq!(c.server.writes().len(), 2);
    assert_eq!(
        code(&c.ck8s(&["labels", "--objects"])),
        0,
        "clean after --fix"
    );
}

#[test]
fn gc_status_flags_registry_left_at_zero() {
    let c = Cluster::new("healthy");
    let out = c.ck8s(&["gc", "status"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("codex-k8s-registry-gc-29530000"));
    let c = Cluster::new("registry-at-zero");
    let (code, r) = c.json(&["gc", "status"]);
    assert_eq!(code, 1);
    assert!(
        check(&r, "gc.registry-replicas")["detail"]
            .as_str()
            .unwrap()
            .contains("left at 0 replicas")
    );
}

/// Drops Go's empty values (`null`, `{}`) that kubectl prints and a JSON client omits.
fn prune(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), prune(v)))
                .filter(|(_, v)| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(prune).collect()),
        other => other.clone(),
    }
}

/// The Job fields `kubectl create job --from=cronjob/...` sets, without server-assigned ones.
fn comparable(job: &Value) -> Value {
    prune(&serde_json::json!({
        "apiVersion": job["apiVersion"], "kind": job["kind"],
        "annotations": job["metadata"]["annotations"], "labels": job["metadata"]["labels"],
        "ownerReferences": job["metadata"]["ownerReferences"], "spec": job["spec"],
    }))
}

#[test]
fn gc_run_creates_the_job_kubectl_would() {
    let c = Cluster::new("healthy");
    let out = c.ck8s(&["gc", "run"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let writes = c.server.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        (writes[0].method.as_str(), writes[0].path.as_str()),
        ("POST", "/apis/batch/v1/namespaces/codex-k8s-prod/jobs")
    );
    let jobs: Vec<Value> = c
        .server
        .objects("Job")
        .into_iter()
        .filter(|j| {
            j["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("codex-k8s-registry-gc-manual-")
        })
        .collect();
    assert_eq!(jobs.len(), 1);
    let name = jobs[0]["metadata"]["name"].as_str().unwrap();
    assert!(
        name["codex-k8s-registry-gc-manual-".len()..]
            .parse::<i64>()
            .is_ok(),
        "{name}"
    );
    // What the real kubectl builds from the same CronJob.
    let kubeconfig = c.server.write_kubeconfig(c.dir.path());
    let kubectl = Command::new("/usr/bin/kubectl")
        .args([
            "-n",
            NS,
            "create",
            "job",
            "--from=cronjob/codex-k8s-registry-gc",
            name,
            "--dry-run=client",
            "-o",
            "json",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", c.dir.path())
        .output()
        .unwrap();
    assert!(kubectl.status.success(), "{}", text(&kubectl.stderr));
    let want: Value = serde_json::from_slice(&kubectl.stdout).unwrap();
    assert_eq!(comparable(&jobs[0]), comparable(&want));
    assert_eq!(
        jobs[0]["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(
        jobs[0]["metadata"]["ownerReferences"][0]["controller"],
        true
    );
}

#[test]
fn gc_run_wait_parses_the_summary() {
    let c = Cluster::new("healthy");
    c.server.complete_jobs(
        "codex-k8s-registry-gc-manual-",
        "marking manifests\n\n42 blobs marked, 7 blobs and 3 manifests eligible for deletion\n",
    );
    let (code, r) = c.json(&["gc", "run", "--wait"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        r["details"]["summary"],
        serde_json::json!({"blobs_marked": 42, "blobs_eligible": 7, "manifests_eligible": 3})
    );
    assert_eq!(status(&r, "gc.registry-replicas"), "pass");
    let out = c.ck8s(&["gc", "logs"]);
    assert!(
        text(&out.stdout).contains("42 blobs marked"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn diagnose_build_healthy() {
    let c = Cluster::new("healthy");
    let out = c.ck8s(&["diagnose", "build"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("CODEXK8S_BUILD_REF=\"main\" accepted by the build-ref policy"),
        "{}",
        text(&out.stdout)
    );
    let out = c.ck8s(&["diagnose", "build", "--verify"]);
    assert_eq!(code(&out), 0);
    assert!(c.server.writes().is_empty());
}

#[test]
fn diagnose_build_signature_a_kaniko_cache() {
    let c = Cluster::new("kaniko-cache-on");
    let (code, r) = c.json(&["diagnose", "build", "--since", "6h"]);
    assert_eq!(code, 1);
    assert_eq!(status(&r, "build.signature-a"), "fail");
    assert!(
        check(&r, "build.signature-a")["detail"]
            .as_str()
            .unwrap()
            .starts_with("2 cache MANIFEST_UNKNOWN log lines"),
        "the 8h-old line is outside --since 6h: {r}"
    );
    assert_eq!(status(&r, "build.kaniko-cache"), "fail");
    assert_eq!(status(&r, "build.failed-jobs"), "fail");
    assert_eq!(status(&r, "build.signature-b"), "pass");
    assert_eq!(r["details"]["kaniko_cache_enabled"], "true");
    assert!(
        r["details"]["mitigation"][0]
            .as_str()
            .unwrap()
            .contains("CODEXK8S_KANIKO_CACHE_ENABLED=false")
    );
    let (code, r) = c.json(&["diagnose", "build", "--verify"]);
    assert_eq!(code, 1);
    assert_eq!(status(&r, "build.verify"), "fail");
}

#[test]
fn diagnose_build_signature_b_build_ref() {
    let c = Cluster::new("build-ref-bad");
    let out = c.ck8s(&["diagnose", "build"]);
    assert_eq!(code(&out), 1);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("[job/codex-k8s-codegen-check] fatal: '-b feature/x' is not a commit"),
        "{stdout}"
    );
    let (_, r) = c.json(&["diagnose", "build"]);
    assert_eq!(status(&r, "build.build-ref"), "fail");
    assert_eq!(status(&r, "build.signature-b"), "fail");
    let detail = check(&r, "build.build-ref")["detail"].as_str().unwrap();
    assert!(
        detail.contains("rejected by the build-ref policy"),
        "{detail}"
    );
    assert_eq!(
        r["details"]["failed_jobs"],
        serde_json::json!(["codex-k8s-codegen-check"])
    );
}

#[test]
fn mitigate_kaniko_cache_dry_runs_then_patches() {
    let c = Cluster::new("kaniko-cache-on");
    let out = c.ck8s(&["mitigate", "kaniko-cache"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let patches: Vec<_> = c
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 2);
    assert!(patches[0].query.contains("dryRun=All") && !patches[1].query.contains("dryRun"));
    assert_eq!(
        patches[1].path,
        "/api/v1/namespaces/codex-k8s-prod/configmaps/codex-k8s-runtime"
    );
    let cm = c
        .server
        .object("ConfigMap", NS, "codex-k8s-runtime")
        .unwrap();
    assert_eq!(cm["data"]["CODEXK8S_KANIKO_CACHE_ENABLED"], "false");
    assert!(text(&out.stdout).contains("codex-k8s-control-plane: successfully rolled out"));
}

#[test]
fn mitigate_build_ref_refuses_what_the_policy_rejects() {
    let c = Cluster::new("build-ref-bad");
    let out = c.ck8s(&["mitigate", "build-ref", "--ref=-b feature/x"]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("the build-ref policy rejects it"),
        "{}",
        text(&out.stderr)
    );
    assert!(c.server.writes().is_empty());
    let out = c.ck8s(&["mitigate", "build-ref", "--ref", "main"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_eq!(
        c.server
            .object("ConfigMap", NS, "codex-k8s-runtime")
            .unwrap()["data"]["CODEXK8S_BUILD_REF"],
        "main"
    );
}

#[test]
fn ports_open_and_closed() {
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port().to_string();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let c = Cluster::new("healthy");
    let out = c.ck8s(&[
        "ports",
        "127.0.0.1",
        "--open",
        &open_port,
        "--closed",
        &closed_port,
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stdout));
    let out = c.ck8s(&[
        "ports",
        "127.0.0.1",
        "--open",
        &closed_port,
        "--closed",
        &open_port,
    ]);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stdout).contains(&format!("{open_port} open, must be closed")));
}

#[test]
fn completion_scripts_and_kubectl_protocol() {
    let c = Cluster::new("healthy");
    let out = c.ck8s(&["completion", "bash"]);
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).contains("kubectl-ck8s"));
    let out = Command::new(BIN)
        .args(["__complete", "gc", ""])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "logs\nrun\nstatus\n:4\n");
}

#[test]
fn kubectl_discovers_the_plugin() {
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let plugin_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BIN, plugin_dir.path().join("kubectl-ck8s")).unwrap();
    let path = format!("{}:/usr/bin:/bin", plugin_dir.path().display());
    let _ = bin_dir;
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("/usr/bin/kubectl")
        .args(["ck8s", "--help"])
        .env("PATH", &path)
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("The codex-k8s runbooks as one kubectl plugin"));
    let out = Command::new("/usr/bin/kubectl")
        .args(["plugin", "list"])
        .env("PATH", &path)
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("kubectl-ck8s"),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // kubectl's plugin completion: kubectl_complete-ck8s on PATH answers for `kubectl ck8s <TAB>`.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kubectl_complete-ck8s");
    std::os::unix::fs::symlink(script, plugin_dir.path().join("kubectl_complete-ck8s")).unwrap();
    let out = Command::new("/usr/bin/kubectl")
        .args(["__complete", "ck8s", "gc", ""])
        .env("PATH", &path)
        .env("HOME", home.path())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("logs\nrun\nstatus\n"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
}

/// The table the SRE sees, as a snapshot (tests/snapshots/); regenerate by copying the output.
#[test]
fn smoke_table_snapshot() {
    let c = Cluster::new("failed-rollout");
    let out = c.ck8s(&["smoke", "--only", "rollout"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        text(&out.stdout),
        include_str!("snapshots/smoke-only-rollout.failed-rollout.txt")
    );
}
