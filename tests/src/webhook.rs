//! ck8s-admission started in-process over real TLS, and the reviews and policies the webhook
//! tests send it: shared by `tests/admission.rs` and `tests/reliability.rs`.

use ck8s_admission::Server;
use ck8s_admission::cli::Args;
use clap::Parser;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server whose `tls.crt`, `tls.key`, `policies/` and artifact `cache/` live in a
/// temporary directory of its own.
pub struct TestWebhook {
    pub https: SocketAddr,
    pub metrics: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<anyhow::Result<()>>,
}

impl TestWebhook {
    /// Starts a server with the given certificate and key. `extra` flags may say `{dir}` for
    /// the server's directory and may set `--reload-interval` (50 ms otherwise); `prepare`
    /// puts policies or a config in place before the server starts.
    pub async fn start(
        cert_pem: &str,
        key_pem: &str,
        extra: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> TestWebhook {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), key_pem).unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        prepare(dir.path());
        let p = |f: &str| dir.path().join(f).display().to_string();
        let mut args = vec![
            "ck8s-admission".to_string(),
            "--listen=127.0.0.1:0".into(),
            "--metrics-listen=127.0.0.1:0".into(),
            format!("--tls-cert={}", p("tls.crt")),
            format!("--tls-key={}", p("tls.key")),
            format!("--cache-dir={}", p("cache")),
            format!("--policies={}", p("policies")),
        ];
        if !extra.iter().any(|a| a.starts_with("--reload-interval")) {
            args.push("--reload-interval=50ms".into());
        }
        args.extend(
            extra
                .iter()
                .map(|a| a.replace("{dir}", &dir.path().display().to_string())),
        );
        let server = Server::bind(Args::try_parse_from(args).unwrap())
            .await
            .unwrap();
        let (https, metrics) = (server.https_addr(), server.metrics_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        TestWebhook {
            https,
            metrics,
            dir,
            stop: Some(tx),
            done,
        }
    }

    /// A file in the server's directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https.port())
    }

    /// `/metrics` from the plain-HTTP listener.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Sends SIGTERM's equivalent and waits (30 s at most) for the drain to finish cleanly.
    pub async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.done)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// A client that trusts only `ca_pem` (the server's self-signed certificate or its CA).
pub fn client_trusting(ca_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(20))
}

/// An `admission.k8s.io/v1` CREATE review of `object` in `codex-k8s-prod`.
pub fn review_of(object: Value, resource: &str, uid: &str) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap().to_string();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": group, "version": version, "kind": object["kind"] },
            "resource": { "group": group, "version": version, "resource": resource },
            "namespace": "codex-k8s-prod", "name": object["metadata"]["name"], "operation": "CREATE",
            "userInfo": { "username": "sre@codex-k8s.dev" },
            "object": object, "oldObject": null, "dryRun": false
        }
    })
}

/// The worker Deployment with `CODEXK8S_BUILD_REF` set to `build_ref` in its container env.
pub fn deployment(build_ref: &str) -> Value {
    json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "codex-k8s-worker" },
        "spec": { "template": { "spec": { "containers": [{ "name": "w", "image": "w:1",
            "env": [{ "name": "CODEXK8S_BUILD_REF", "value": build_ref }] }] } } } })
}

/// A run Namespace labelled with `key`.
pub fn labelled_ns(key: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "run-1", "labels": { key: "codex-k8s-worker" } } })
}

/// The verdict of a `wat_policy(.., "deny")`: one violation at `data`.
pub const FROZEN: &str = "data: frozen by policy";

/// A policy in WAT (ABI v1) named `name`, inspecting `resources` of `group`, whose
/// `ck8s_validate` is `validate`: `"deny"` (one violation, see [`FROZEN`]), `"loop"` (never
/// returns) or `"grow"` (grows memory without bound).
pub fn wat_policy(name: &str, group: &str, resources: &[&str], validate: &str) -> Vec<u8> {
    let resources = resources
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(",");
    let meta = format!(
        r#"{{"name":"{name}","version":"1.0.0","description":"test","rules":[{{"apiGroups":["{group}"],"apiVersions":["*"],"resources":[{resources}],"operations":["CREATE","UPDATE"]}}]}}"#
    );
    let verdict =
        r#"{"violations":[{"path":"data","message":"frozen by policy","fix":"ask the SRE"}]}"#;
    let esc = |s: &str| s.replace('"', "\\\"");
    let body = match validate {
        "deny" => format!(
            "(i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.const {}))",
            verdict.len()
        ),
        "loop" => "(loop $l (br $l)) (unreachable)".to_string(),
        "grow" => "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) (unreachable)".to_string(),
        other => panic!("unknown test policy body {other}"),
    };
    let wat = format!(
        r#"(module (memory (export "memory") 2) (global $h (mut i32) (i32.const 8192))
  (data (i32.const 0) "{m}") (data (i32.const 2048) "{v}")
  (func (export "ck8s_abi_version") (result i32) (i32.const 1))
  (func (export "ck8s_alloc") (param i32) (result i32) (local i32)
    (local.set 1 (global.get $h)) (global.set $h (i32.add (global.get $h) (local.get 0)))
    (if (i32.gt_u (global.get $h) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (local.get 0) (i32.const 65536)) (i32.const 1))))))
    (local.get 1))
  (func (export "ck8s_metadata") (result i64) (i64.const {ml}))
  (func (export "ck8s_validate") (param i32 i32 i32 i32) (result i64) {body}))"#,
        m = esc(&meta),
        v = esc(verdict),
        ml = meta.len()
    );
    wat::parse_str(wat).unwrap()
}

/// An UPDATE review of `object` whose stored version is `old` (see [`review_of`]).
pub fn update_of(object: Value, old: Value, resource: &str, uid: &str) -> Value {
    let mut review = review_of(object, resource, uid);
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["oldObject"] = old;
    review
}
