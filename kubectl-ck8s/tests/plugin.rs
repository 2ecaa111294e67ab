//! The real `kubectl-ck8s` binary against the in-process stand-in API server, one fixture
//! cluster per broken state: verdicts, exit codes, the lines a user sees, JSON shape, no
//! secrets, and what only a stand-in can show (every request the plugin made, 503s and 403s on
//! one verb). The flows on a real control plane (controllers, kwok nodes, port-forward, the
//! real authorizer, `kubectl create job --from`) are in `tests/tests/real_plugin.rs`; a test
//! here that only repeated one of those was removed.

use ck8s_tests::TestApiServer;
use ck8s_tests::report::check;
use serde_json::Value;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// A local HTTP/1.1 keep-alive listener standing in for the pods behind port-forward; counts
/// the connections it accepted.
fn app(mode: App) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(s) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || serve(s, mode));
        }
    });
    (addr, accepted)
}

/// Answers every request on one connection until the client closes it.
fn serve(s: std::net::TcpStream, mode: App) {
    let mut w = s.try_clone().unwrap();
    let mut r = std::io::BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut length = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        {
            let path = path.as_str();
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
            if w.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    }
}

struct Cluster {
    server: TestApiServer,
    dir: tempfile::TempDir,
    app: String,
    /// Connections the app behind the (simulated) port-forward accepted.
    connections: Arc<AtomicUsize>,
}

impl Cluster {
    fn new(fixture: &str) -> Self {
        Self::with_app(fixture, App::Healthy)
    }

    fn with_app(fixture: &str, mode: App) -> Self {
        let (app, connections) = app(mode);
        Cluster {
            server: TestApiServer::start(fixture),
            dir: tempfile::tempdir().unwrap(),
            app,
            connections,
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
        // The guard's six checks skip: ck8s-admission is not installed on this cluster.
        stdout.contains("smoke: 18 pass, 0 warn, 0 fail, 6 skip -> PASS"),
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
    assert_eq!(
        c.connections.load(Ordering::SeqCst),
        2,
        "one connection to the codex-k8s pod (healthz, readyz, metrics), one to oauth2-proxy"
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
    assert!(r.get("host").is_none(), "{r}");
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
            "oauth2-proxy.skip-auth",
            "guard.pause",
            "guard.replicas",
            "guard.endpoints",
            "guard.certificate",
            "guard.settings",
            "guard.decides"
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
fn tls_reuse_is_best_effort_when_forbidden() {
    let c = Cluster::new("healthy");
    c.server.deny("list", "secrets");
    let (code, r) = c.json(&["smoke", "--only", "tls.reuse"]);
    assert_eq!(code, 0);
    assert_eq!(status(&r, "tls.reuse"), "warn");
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
        stdout.contains("codex-k8s-codegen-check-m4n5b") && stdout.contains("window: since "),
        "{stdout}"
    );
    let (_, r) = c.json(&["diagnose", "build"]);
    let finding = &r["details"]["signature_b"][0];
    assert_eq!(finding["pod"], "codex-k8s-codegen-check-m4n5b");
    assert_eq!(finding["container"], "codegen-check");
    assert_eq!(finding["example"], "+ git checkout --detach -b feature/x");
    assert!(finding["lines"].as_u64().unwrap() >= 2, "{finding}");
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

fn patches(c: &Cluster) -> Vec<ck8s_tests::apiserver::Recorded> {
    c.server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect()
}

const RUNTIME_CM: &str = "/api/v1/namespaces/codex-k8s-prod/configmaps/codex-k8s-runtime";
const CONTROL_PLANE: &str =
    "/apis/apps/v1/namespaces/codex-k8s-prod/deployments/codex-k8s-control-plane";

#[test]
fn mitigate_kaniko_cache_restarts_and_verifies() {
    let c = Cluster::new("kaniko-cache-on");
    c.server.roll_out_deployments();
    let (code, r) = c.json(&["mitigate", "kaniko-cache"]);
    assert_eq!(code, 0, "{r:#}");
    let p = patches(&c);
    let seen: Vec<(&str, bool)> = p
        .iter()
        .map(|r| (r.path.as_str(), r.query.contains("dryRun=All")))
        .collect();
    assert_eq!(
        seen,
        [
            (RUNTIME_CM, true),
            (CONTROL_PLANE, true),
            (RUNTIME_CM, false),
            (CONTROL_PLANE, false)
        ],
        "every change dry-run on the server first"
    );
    let cm = c
        .server
        .object("ConfigMap", NS, "codex-k8s-runtime")
        .unwrap();
    assert_eq!(cm["data"]["CODEXK8S_KANIKO_CACHE_ENABLED"], "false");
    let d = c
        .server
        .object("Deployment", NS, "codex-k8s-control-plane")
        .unwrap();
    let restarted =
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .as_str()
            .unwrap();
    assert_eq!(r["details"]["restartedAt"], restarted);
    assert!(
        check(&r, "mitigate.wiring")["detail"]
            .as_str()
            .unwrap()
            .contains("container codex-k8s-control-plane reads configmap/codex-k8s-runtime through envFrom")
    );
    assert!(
        check(&r, "mitigate.patch")["detail"]
            .as_str()
            .unwrap()
            .contains("CODEXK8S_KANIKO_CACHE_ENABLED: \"true\" -> \"false\"")
    );
    assert_eq!(status(&r, "mitigate.rollout"), "pass");
    assert_eq!(status(&r, "mitigate.verify"), "pass");
    assert_eq!(r["details"]["pods"][0]["afterPatch"], true);
    // Waited by kube's watcher (its list of the one object), not by polling GETs.
    let requests = c.server.requests();
    assert!(
        requests.iter().any(|q| q.path.ends_with("/deployments")
            && q.query
                .contains("fieldSelector=metadata.name%3Dcodex-k8s-control-plane")),
        "{requests:?}"
    );
    assert_eq!(
        requests
            .iter()
            .filter(|q| q.method == "GET" && q.path == CONTROL_PLANE)
            .count(),
        1,
        "one GET (the wiring), no polling: {requests:?}"
    );
}

#[test]
fn mitigate_exits_1_when_the_restart_cannot_be_verified() {
    // No controller: the restart is stored but no new pod ever starts.
    let c = Cluster::new("kaniko-cache-on");
    let (code, r) = c.json(&["mitigate", "kaniko-cache", "--timeout", "3s"]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(status(&r, "mitigate.patch"), "pass");
    assert_eq!(status(&r, "mitigate.restart"), "pass");
    let rollout = check(&r, "mitigate.rollout")["detail"].as_str().unwrap();
    assert!(
        rollout.contains("not rolled out within --timeout 3s")
            && rollout.contains("spec update to be observed"),
        "{rollout}"
    );
    assert_eq!(status(&r, "mitigate.verify"), "fail");
    let detail = check(&r, "mitigate.verify")["detail"].as_str().unwrap();
    assert!(
        detail.contains("not verified within --timeout 3s"),
        "{detail}"
    );
}

#[test]
fn mitigate_waits_through_api_server_errors() {
    let c = Cluster::new("kaniko-cache-on");
    c.server.roll_out_deployments();
    c.server.fail_next("list", "deployments", 2);
    c.server.fail_next("list", "pods", 1);
    let (code, r) = c.json(&["mitigate", "kaniko-cache", "--timeout", "60s"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(status(&r, "mitigate.verify"), "pass");
    let lists = c
        .server
        .requests()
        .iter()
        .filter(|q| {
            q.method == "GET" && q.path.ends_with("/deployments") && !q.query.contains("watch=true")
        })
        .count();
    assert!(lists >= 3, "two 503s, then a list that succeeds: {lists}");
}

#[test]
fn mitigate_forbidden_watch_names_verb_and_resource() {
    let c = Cluster::new("kaniko-cache-on");
    c.server.roll_out_deployments();
    c.server.deny("list", "pods");
    let out = c.ck8s(&["mitigate", "kaniko-cache"]);
    assert_eq!(code(&out), 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: forbidden: cannot list pods in namespace codex-k8s-prod"),
        "{stderr}"
    );
}

#[test]
fn mitigate_dry_runs() {
    let c = Cluster::new("kaniko-cache-on");
    let (code, r) = c.json(&["mitigate", "kaniko-cache", "--dry-run=client"]);
    assert_eq!(code, 0, "{r:#}");
    assert!(patches(&c).is_empty(), "client dry run sends nothing");
    assert!(
        check(&r, "mitigate.patch")["detail"]
            .as_str()
            .unwrap()
            .contains(r#"would merge-patch configmap/codex-k8s-runtime with {"data":{"CODEXK8S_KANIKO_CACHE_ENABLED":"false"}}"#)
    );
    assert_eq!(status(&r, "mitigate.verify"), "skip");
    let (code, r) = c.json(&["mitigate", "kaniko-cache", "--dry-run=server"]);
    assert_eq!(code, 0, "{r:#}");
    let p = patches(&c);
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|r| r.query.contains("dryRun=All")), "{p:?}");
    assert!(c.server.writes().is_empty());
    assert_eq!(
        c.server
            .object("ConfigMap", NS, "codex-k8s-runtime")
            .unwrap()["data"]["CODEXK8S_KANIKO_CACHE_ENABLED"],
        "true"
    );
    let out = c.ck8s(&["mitigate", "kaniko-cache", "--dry-run=maybe"]);
    assert_eq!(code_of(&out), 2);
}

#[test]
fn mitigate_says_plainly_when_the_control_plane_does_not_read_the_config() {
    let c = Cluster::new("runtime-unwired");
    let (code, r) = c.json(&["mitigate", "kaniko-cache"]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(status(&r, "mitigate.wiring"), "fail");
    assert!(
        check(&r, "mitigate.wiring")["detail"]
            .as_str()
            .unwrap()
            .contains("reads codex-k8s-runtime neither as a ConfigMap nor as a Secret")
    );
    assert!(c.server.writes().is_empty());
    assert!(patches(&c).is_empty());
}

#[test]
fn mitigate_build_ref_refuses_what_the_policy_rejects() {
    let c = Cluster::new("build-ref-bad");
    c.server.roll_out_deployments();
    let out = c.ck8s(&["mitigate", "build-ref", "--ref=-b feature/x"]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("the build-ref policy rejects it"),
        "{}",
        text(&out.stderr)
    );
    assert!(c.server.writes().is_empty());
    let out = c.ck8s(&["mitigate", "build-ref", "--ref", "main"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        c.server
            .object("ConfigMap", NS, "codex-k8s-runtime")
            .unwrap()["data"]["CODEXK8S_BUILD_REF"],
        "main"
    );
}

#[test]
fn diagnose_reads_every_container_and_previous_logs() {
    let c = Cluster::new("sidecar-restarted");
    let (code, r) = c.json(&["diagnose", "build", "--since", "1h"]);
    assert_eq!(code, 1, "{r:#}");
    let a = &r["details"]["signature_a"];
    assert_eq!(a.as_array().unwrap().len(), 1, "{a:#}");
    assert_eq!(a[0]["pod"], "codex-k8s-control-plane-7d9f8b6c5-abcde");
    assert_eq!(a[0]["container"], "codex-k8s-control-plane");
    assert_eq!(a[0]["previous"], true);
    assert_eq!(a[0]["lines"], 2);
    assert!(
        a[0]["first"].is_string() && a[0]["last"].is_string(),
        "{a:#}"
    );
    let read: Vec<(String, bool)> = r["details"]["logs_read"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["container"].as_str().unwrap().to_string(),
                l["previous"].as_bool().unwrap(),
            )
        })
        .collect();
    for want in [
        ("codex-k8s-control-plane".to_string(), false),
        ("codex-k8s-control-plane".to_string(), true),
        ("log-shipper".to_string(), false),
        ("codex-k8s-worker".to_string(), false),
    ] {
        assert!(read.contains(&want), "{want:?} not read: {read:?}");
    }
    assert_eq!(status(&r, "build.logs"), "pass");
    assert_eq!(r["details"]["window"]["flag"], "--since 1h");
    assert_eq!(r["details"]["window"]["seconds"], 3600);
    // Every log request names its container.
    let logs: Vec<_> = c
        .server
        .requests()
        .into_iter()
        .filter(|q| q.path.ends_with("/log"))
        .collect();
    assert!(!logs.is_empty());
    assert!(
        logs.iter().all(|q| q.query.contains("container=")),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|q| q.query.contains("previous=true")),
        "{logs:?}"
    );
}

#[test]
fn diagnose_reports_logs_it_cannot_read() {
    let c = Cluster::new("healthy");
    c.server.deny("get", "pods/log");
    // Every log refused: nothing to judge the signatures on, so no all-clear (this asserted
    // exit 0 with the signatures passing before).
    let (code, r) = c.json(&["diagnose", "build"]);
    assert_eq!(code, 1, "no log read is no evidence: {r:#}");
    assert_eq!(status(&r, "build.logs"), "fail");
    let detail = check(&r, "build.logs")["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("read 0 container logs of 0 pods")
            && detail
                .contains("pod/codex-k8s-control-plane-7d9f8b6c5-abcde -c codex-k8s-control-plane")
            && detail.contains("(403)"),
        "{detail}"
    );
    for id in ["build.signature-a", "build.signature-b", "build.escalation"] {
        assert_eq!(status(&r, id), "skip", "{id}: {r:#}");
    }
    let (code, r) = c.json(&["diagnose", "build", "--verify"]);
    assert_eq!(
        code, 1,
        "recovery cannot be confirmed on unread logs: {r:#}"
    );
    assert!(
        check(&r, "build.verify")["detail"]
            .as_str()
            .unwrap()
            .contains("(--verify, the last 30m)")
    );
}

#[test]
fn gc_run_wait_times_out_with_exit_1() {
    let c = Cluster::new("healthy");
    let (code, r) = c.json(&["gc", "run", "--wait", "--timeout", "2s"]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(status(&r, "gc.run"), "fail");
    assert!(
        check(&r, "gc.run")["detail"]
            .as_str()
            .unwrap()
            .contains("not finished within --timeout 2s"),
        "{r:#}"
    );
}

#[test]
fn gc_run_wait_survives_transient_errors() {
    let c = Cluster::new("healthy");
    c.server.complete_jobs(
        "codex-k8s-registry-gc-manual-",
        "1 blobs marked, 0 blobs and 0 manifests eligible for deletion\n",
    );
    c.server.fail_next("list", "jobs", 2);
    let (code, r) = c.json(&["gc", "run", "--wait", "--timeout", "60s"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(status(&r, "gc.run"), "pass");
}

/// Every command's `-o json` has the one report shape, `report.schema.json`.
#[test]
fn every_command_json_matches_the_report_schema() {
    let schema: Value = serde_json::from_str(include_str!("../report.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port().to_string();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bad = fixtures.join("bad");
    let c = Cluster::new("kaniko-cache-on");
    c.server.roll_out_deployments();
    c.server.complete_jobs(
        "codex-k8s-registry-gc-manual-",
        "1 blobs marked, 0 blobs and 0 manifests eligible for deletion\n",
    );
    let commands: Vec<Vec<&str>> = vec![
        vec!["smoke"],
        vec!["smoke", "--only", "tls"],
        vec!["ports", "127.0.0.1", "--open", &open_port, "--closed", "1"],
        vec!["runs"],
        vec!["runs", "env"],
        vec!["labels", "--objects"],
        vec!["labels", "--objects", "--fix", "--dry-run"],
        vec!["gc", "status"],
        vec!["gc", "run"],
        vec!["gc", "run", "--wait"],
        vec!["gc", "logs"],
        vec!["diagnose", "build"],
        vec!["diagnose", "build", "--verify"],
        vec!["mitigate", "kaniko-cache", "--dry-run=client"],
        vec!["mitigate", "kaniko-cache", "--dry-run=server"],
        vec!["mitigate", "kaniko-cache"],
        vec!["mitigate", "build-ref", "--ref", "main"],
        vec!["policy", "check", "-f", bad.to_str().unwrap()],
        vec!["policy", "inspect", "builtin:build-ref"],
        vec!["policy", "list"],
        vec!["policy", "webhook-rules"],
        vec!["policy", "audit"],
        vec!["policy", "audit", "--exit-zero"],
    ];
    for args in &commands {
        if args[0] == "gc" && args[1] == "run" {
            // Manual GC Jobs are named by the second: two in one second collide (409).
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let (code, report) = c.json(args);
        assert!(code == 0 || code == 1, "{args:?} exit {code}: {report:#}");
        let errors: Vec<String> = validator
            .iter_errors(&report)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{args:?}: {errors:#?}\n{report:#}");
        assert_eq!(
            report["verdict"] == "fail",
            code == 1,
            "{args:?}: the exit code follows the verdict"
        );
        assert!(
            args.join(" ")
                .starts_with(report["command"].as_str().unwrap()),
            "{args:?}: command {}",
            report["command"]
        );
    }
    // The schema is not a formality: a report of another shape fails it.
    for broken in [
        serde_json::json!({"command": "smoke", "verdict": "ok", "checks": []}),
        serde_json::json!({"command": "smoke", "verdict": "pass"}),
        serde_json::json!({"command": "smoke", "verdict": "pass", "checks": [{"id": "a", "status": "pass", "detail": "", "remedy": "x"}]}),
        serde_json::json!({"command": "ports", "namespace": "x", "verdict": "pass", "checks": [], "extra": 1}),
    ] {
        assert!(!validator.is_valid(&broken), "{broken}");
    }
    // Text-only commands refuse -o json rather than ignore it.
    for args in [
        &["policy", "test", "-o", "json"][..],
        &["completion", "bash", "-o", "json"],
    ] {
        let out = c.ck8s(args);
        assert_eq!(code_of(&out), 2, "{args:?}");
        assert!(
            text(&out.stderr).contains("prints text only"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn completion_offers_flag_values() {
    let c = Cluster::new("healthy");
    let kubeconfig = c.server.write_kubeconfig(c.dir.path());
    let complete = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("__complete")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        text(&out.stdout)
    };
    assert_eq!(complete(&["smoke", "-o", ""]), "table\njson\nyaml\n:4\n");
    assert_eq!(complete(&["--context", ""]), "test\n:4\n");
    let ns = complete(&["-n", "codex-k8s-"]);
    assert!(
        ns.contains("codex-k8s-prod\n") && ns.contains("codex-k8s-run-42\n"),
        "{ns}"
    );
    let dir = c.dir.path().display().to_string();
    let files = complete(&["policy", "check", "-f", &format!("{dir}/kube")]);
    assert_eq!(files, format!("{dir}/kubeconfig\n:4\n"));
    // A cluster that does not answer: no namespaces, no hang.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = c.dir.path().join("silent");
    std::fs::write(
        &silent,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://{}'}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n", port.local_addr().unwrap()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["__complete", "-n", ""])
        .env("KUBECONFIG", &silent)
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), ":4\n");
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

/// Typed errors: a missing object and a failing API server are told apart, both exit 2.
#[test]
fn not_found_and_server_errors_are_named() {
    let c = Cluster::new("healthy");
    // A Job that does not exist has no log: exit 2 naming it, never an empty log and exit 0.
    let out = c.ck8s(&["gc", "logs", "--job", "no-such-job"]);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("error: job/no-such-job not found in namespace codex-k8s-prod"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
    c.server.fail_next("get", "cronjobs", 1);
    let out = c.ck8s(&["gc", "run"]);
    assert_eq!(code(&out), 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: the API server at http://127.0.0.1:")
            && stderr.contains("failed to get cronjobs.batch in namespace codex-k8s-prod")
            && stderr.contains("(503)"),
        "{stderr}"
    );
    let c = Cluster::new("missing-tls");
    c.server.deny("get", "deployments");
    let out = c.ck8s(&["mitigate", "kaniko-cache"]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr)
            .contains("forbidden: cannot get deployments.apps in namespace codex-k8s-prod"),
        "{}",
        text(&out.stderr)
    );
    // A namespace that does not exist is said once, up front, before anything is read there.
    let out = c.ck8s(&["-n", "elsewhere", "gc", "run"]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains(
            "error: namespace elsewhere not found (context test, server http://127.0.0.1:"
        ),
        "{}",
        text(&out.stderr)
    );
}

/// Every flow of the production namespace checks, once and first, that it exists: exit 2
/// naming the namespace and the context, the help naming -n/--namespace, --context and
/// $CODEXK8S_PRODUCTION_NAMESPACE, no report. A user who may not read namespaces goes on,
/// warned that it could not be verified.
#[test]
fn the_namespace_is_checked_once_before_every_flow() {
    let c = Cluster::new("healthy");
    for args in [
        &["smoke"][..],
        &["runs"],
        &["runs", "env"],
        &["labels"],
        &["gc", "status"],
        &["gc", "run"],
        &["gc", "logs"],
        &["diagnose", "build"],
        &["mitigate", "kaniko-cache"],
        &["mitigate", "build-ref", "--ref", "main"],
    ] {
        let before = c.server.requests().len();
        let mut all = vec!["-n", "codex-k8s-nowhere"];
        all.extend_from_slice(args);
        let out = c.ck8s(&all);
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 2, "{args:?}: {stderr}");
        assert!(
            text(&out.stdout).is_empty(),
            "{args:?}: no report: {}",
            text(&out.stdout)
        );
        assert!(
            stderr
                .starts_with("error: namespace codex-k8s-nowhere not found (context test, server "),
            "{args:?}: {stderr}"
        );
        let help = stderr
            .lines()
            .find(|l| l.starts_with("help: "))
            .unwrap_or("");
        for word in [
            "-n/--namespace",
            "--context",
            "$CODEXK8S_PRODUCTION_NAMESPACE",
        ] {
            assert!(help.contains(word), "{args:?}: {help}");
        }
        // One request, the namespace's: nothing else was read or written.
        let made = c.server.requests();
        let paths: Vec<&str> = made[before..].iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/api/v1/namespaces/codex-k8s-nowhere"], "{args:?}");
    }
    // May not read namespaces: the flow goes on, and says what it could not verify.
    c.server.deny("get", "namespaces");
    let (code, report) = c.json(&["gc", "status"]);
    assert_eq!(code, 0, "{report:#}");
    let out = c.ck8s(&["gc", "status"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .contains("warning: cannot verify that namespace codex-k8s-prod exists (context test")
            && stderr.contains("forbidden"),
        "{stderr}"
    );
}
