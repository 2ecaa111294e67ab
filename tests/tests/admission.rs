//! ck8s-admission over real TLS with a real HTTP client: decisions, modes, bad input,
//! reloads of policies and certificates, TLS hardening, backpressure and shutdown.

use ck8s_admission::Server;
use ck8s_admission::cli::Args;
use clap::Parser;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

struct Pki {
    cert_pem: String,
    key_pem: String,
}

fn pki(name: &str) -> Pki {
    let c = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        name.to_string(),
    ])
    .unwrap();
    Pki {
        cert_pem: c.cert.pem(),
        key_pem: c.signing_key.serialize_pem(),
    }
}

struct Webhook {
    https: SocketAddr,
    metrics: SocketAddr,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
    client: reqwest::Client,
}

impl Webhook {
    /// Starts a server with a fresh certificate; `prepare` can put policies/config in place.
    async fn start(extra: &[&str], prepare: impl FnOnce(&Path)) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki("ck8s-admission");
        std::fs::write(dir.path().join("tls.crt"), &pki.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &pki.key_pem).unwrap();
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
            "--reload-interval=50ms".into(),
        ];
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
        let client = client_trusting(&pki.cert_pem, None);
        Webhook {
            https,
            metrics,
            dir,
            stop: Some(tx),
            done,
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https.port())
    }

    async fn review(&self, body: &Value) -> Value {
        let r = self
            .client
            .post(self.url("/validate"))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn post_raw(&self, body: Vec<u8>) -> (u16, String) {
        let r = self
            .client
            .post(self.url("/validate"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.done)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn client_trusting(ca_pem: &str, identity: Option<reqwest::Identity>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(20));
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().unwrap()
}

fn review_of(object: Value, resource: &str) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap().to_string();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "e911857d-c318-11e8-bbad-025000000001",
            "kind": { "group": group, "version": version, "kind": object["kind"] },
            "resource": { "group": group, "version": version, "resource": resource },
            "namespace": "codex-k8s-prod", "name": object["metadata"]["name"], "operation": "CREATE",
            "userInfo": { "username": "sre@codex-k8s.dev" },
            "object": object, "oldObject": null, "dryRun": false
        }
    })
}

fn deployment(build_ref: &str) -> Value {
    json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "codex-k8s-worker" },
        "spec": { "template": { "spec": { "containers": [{ "name": "w", "image": "w:1",
            "env": [{ "name": "CODEXK8S_BUILD_REF", "value": build_ref }] }] } } } })
}

fn labelled_ns(key: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "run-1", "labels": { key: "codex-k8s-worker" } } })
}

/// A policy in WAT that denies every ConfigMap with one fixed violation, or loops forever.
fn wat_policy(name: &str, body: &str) -> Vec<u8> {
    let meta = format!(
        r#"{{"name":"{name}","version":"1.0.0","description":"test","rules":[{{"apiGroups":[""],"apiVersions":["*"],"resources":["configmaps"],"operations":["CREATE","UPDATE"]}}]}}"#
    );
    let verdict =
        r#"{"violations":[{"path":"data","message":"configmaps are frozen","fix":"ask the SRE"}]}"#;
    let esc = |s: &str| s.replace('"', "\\\"");
    let validate = match body {
        "deny" => format!(
            "(i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.const {}))",
            verdict.len()
        ),
        "loop" => "(loop $l (br $l)) (unreachable)".to_string(),
        other => panic!("{other}"),
    };
    let wat = format!(
        r#"(module (memory (export "memory") 2) (global $h (mut i32) (i32.const 8192))
  (data (i32.const 0) "{m}") (data (i32.const 2048) "{v}")
  (func (export "ck8s_abi_version") (result i32) (i32.const 1))
  (func (export "ck8s_alloc") (param i32) (result i32) (local i32)
    (local.set 1 (global.get $h)) (global.set $h (i32.add (global.get $h) (local.get 0)))
    (if (i32.gt_u (global.get $h) (i32.const 131072)) (then (drop (memory.grow (i32.const 64)))))
    (local.get 1))
  (func (export "ck8s_metadata") (result i64) (i64.const {ml}))
  (func (export "ck8s_validate") (param i32 i32 i32 i32) (result i64) {validate}))"#,
        m = esc(&meta),
        v = esc(verdict),
        ml = meta.len()
    );
    wat::parse_str(wat).unwrap()
}

fn configmap() -> Value {
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "codex-k8s-runtime" }, "data": { "A": "b" } })
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn allow_and_deny_with_every_violation_named() {
    let w = Webhook::start(&[], |_| {}).await;
    let ok = w
        .review(&review_of(deployment("feature/ai-slot"), "deployments"))
        .await;
    assert_eq!(ok["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(ok["kind"], "AdmissionReview");
    assert_eq!(
        ok["response"]["uid"],
        "e911857d-c318-11e8-bbad-025000000001"
    );
    assert_eq!(ok["response"]["allowed"], true);
    assert!(ok["response"].get("status").is_none());

    let bad = w
        .review(&review_of(deployment("-b feature/x"), "deployments"))
        .await;
    assert_eq!(bad["response"]["allowed"], false);
    assert_eq!(bad["response"]["status"]["code"], 403);
    let msg = bad["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("[build-ref] spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]"),
        "{msg}"
    );
    assert!(
        msg.contains("main, feature/<branch> or a commit SHA"),
        "{msg}"
    );

    let ns = w
        .review(&review_of(
            labelled_ns("codexk8s.io/managed-by"),
            "namespaces",
        ))
        .await;
    assert_eq!(ns["response"]["allowed"], false);
    assert!(
        ns["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("codex-k8s.dev/managed-by")
    );

    let m = w.metrics_text().await;
    assert!(
        m.contains(r#"ck8s_admission_requests_total{decision="allow"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ck8s_admission_requests_total{decision="deny"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"ck8s_admission_policy_evaluations_total{policy="build-ref",result="deny"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains("ck8s_admission_policy_evaluation_duration_seconds_bucket"),
        "{m}"
    );
    // metrics and probes are readable over HTTPS too
    let r = w.client.get(w.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    w.shutdown().await;
}

#[tokio::test]
async fn warn_and_audit_modes_allow_with_warnings_and_annotations() {
    let w = Webhook::start(&["--config={dir}/config.yaml"], |d| {
        std::fs::write(
            d.join("config.yaml"),
            "policies:\n  build-ref: { mode: warn }\n  legacy-labels: { mode: audit }\n",
        )
        .unwrap();
    })
    .await;
    let r = w
        .review(&review_of(deployment("-b feature/x"), "deployments"))
        .await;
    assert_eq!(r["response"]["allowed"], true);
    let warnings = r["response"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .starts_with("[build-ref] spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]")
    );

    let r = w
        .review(&review_of(labelled_ns("codexk8s.io/run-id"), "namespaces"))
        .await;
    assert_eq!(r["response"]["allowed"], true);
    let audit = r["response"]["auditAnnotations"]["legacy-labels"]
        .as_str()
        .unwrap();
    assert!(
        audit.contains("metadata.labels[codexk8s.io/run-id]"),
        "{audit}"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn warnings_stay_within_the_api_servers_budget() {
    let w = Webhook::start(&["--config={dir}/config.yaml"], |d| {
        std::fs::write(
            d.join("config.yaml"),
            "policies:\n  legacy-labels: { mode: warn }\n",
        )
        .unwrap();
    })
    .await;
    let labels: serde_json::Map<String, Value> = (0..200)
        .map(|i| (format!("codexk8s.io/key-{i:03}"), json!("v")))
        .collect();
    let ns = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "n", "labels": labels } });
    let r = w.review(&review_of(ns, "namespaces")).await;
    let warnings = r["response"]["warnings"].as_array().unwrap();
    let total: usize = warnings.iter().map(|w| w.as_str().unwrap().len()).sum();
    assert!(total <= 4096, "{total}");
    assert!(
        warnings
            .last()
            .unwrap()
            .as_str()
            .unwrap()
            .contains("more warning(s) not shown")
    );
    w.shutdown().await;
}

#[tokio::test]
async fn malformed_input_gets_a_plain_400_and_the_server_keeps_serving() {
    let w = Webhook::start(&["--max-body-bytes=1048576"], |_| {}).await;
    let good = review_of(deployment("main"), "deployments");
    let mut wrong_version = good.clone();
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut wrong_kind = good.clone();
    wrong_kind["kind"] = json!("Pod");
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    for (name, body, code, reason) in [
        (
            "not JSON",
            b"{ nope".to_vec(),
            400,
            "not an AdmissionReview",
        ),
        (
            "wrong apiVersion",
            wrong_version.to_string().into_bytes(),
            400,
            "apiVersion must be admission.k8s.io/v1",
        ),
        (
            "wrong kind",
            wrong_kind.to_string().into_bytes(),
            400,
            "kind must be AdmissionReview",
        ),
        (
            "no request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            400,
            "has no request",
        ),
        (
            "invalid UTF-8",
            b"{\"apiVersion\":\"\xff\xfe\"}".to_vec(),
            400,
            "UTF-8",
        ),
        (
            "absurd nesting",
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","x":{deep}}}"#
            )
            .into_bytes(),
            400,
            "nesting",
        ),
        ("over the body limit", vec![b' '; 2 << 20], 413, ""),
    ] {
        let (status, text) = w.post_raw(body).await;
        assert_eq!(status, code, "{name}: {text}");
        assert!(text.contains(reason), "{name}: {text}");
    }
    let r = w.client.get(w.url("/validate")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(w.review(&good).await["response"]["allowed"], true);
    let m = w.metrics_text().await;
    assert!(m.contains(r#"decision="bad_request"} 6"#), "{m}");
    assert!(m.contains(r#"decision="too_large"} 1"#), "{m}");
    w.shutdown().await;
}

#[tokio::test]
async fn no_plaintext_admission_endpoint() {
    let w = Webhook::start(&[], |_| {}).await;
    let plain = reqwest::Client::new()
        .post(format!("http://{}/validate", w.https))
        .body("{}")
        .send()
        .await;
    match plain {
        Err(_) => {}
        Ok(r) => panic!("plaintext got an HTTP answer: {}", r.status()),
    }
    // and the metrics listener has no /validate
    let r = reqwest::Client::new()
        .post(format!("http://{}/validate", w.metrics))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    w.shutdown().await;
}

#[tokio::test]
async fn tls_1_0_and_1_1_are_refused() {
    let w = Webhook::start(&[], |_| {}).await;
    let addr = format!("127.0.0.1:{}", w.https.port());
    let handshake = |flag: &'static str| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("openssl")
                .args(["s_client", "-connect", &addr, flag, "-brief"])
                .stdin(std::process::Stdio::null())
                .output()
                .expect("openssl is needed for this test");
            out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("CONNECTION ESTABLISHED")
        })
    };
    assert!(handshake("-tls1_2").await.unwrap(), "TLS 1.2 must work");
    assert!(handshake("-tls1_3").await.unwrap(), "TLS 1.3 must work");
    assert!(
        !handshake("-tls1_1").await.unwrap(),
        "TLS 1.1 must be refused"
    );
    assert!(
        !handshake("-tls1").await.unwrap(),
        "TLS 1.0 must be refused"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn policies_directory_reloads_atomically_and_keeps_the_last_good_set() {
    let w = Webhook::start(&[], |_| {}).await;
    let cm = review_of(configmap(), "configmaps");
    assert_eq!(w.review(&cm).await["response"]["allowed"], true);

    // add: picked up without restart
    std::fs::write(
        w.dir.path().join("policies/freeze.wasm"),
        wat_policy("freeze-configmaps", "deny"),
    )
    .unwrap();
    eventually("the added policy denies", async || {
        w.review(&cm).await["response"]["allowed"] == false
    })
    .await;
    let r = w.review(&cm).await;
    assert!(
        r["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("[freeze-configmaps] data: configmaps are frozen")
    );

    // a broken replacement: reported, the previous set stays in service
    std::fs::write(w.dir.path().join("policies/freeze.wasm"), b"\0asm broken").unwrap();
    eventually("the failed reload is counted", async || {
        w.metrics_text()
            .await
            .contains(r#"ck8s_admission_reloads_total{what="policies",result="failure"} 1"#)
    })
    .await;
    assert_eq!(
        w.review(&cm).await["response"]["allowed"],
        false,
        "the last good set must stay in service"
    );

    // remove: back to the built-ins alone
    std::fs::remove_file(w.dir.path().join("policies/freeze.wasm")).unwrap();
    eventually("the removed policy is gone", async || {
        w.review(&cm).await["response"]["allowed"] == true
    })
    .await;
    w.shutdown().await;
}

#[tokio::test]
async fn certificate_rotation_without_restart() {
    let w = Webhook::start(&[], |_| {}).await;
    let old_client = w.client.clone();
    assert_eq!(
        w.review(&review_of(deployment("main"), "deployments"))
            .await["response"]["allowed"],
        true
    );

    let rotated = pki("rotated");
    // as kubelet does for a Secret volume: write new files
    std::fs::write(w.dir.path().join("tls.key"), &rotated.key_pem).unwrap();
    std::fs::write(w.dir.path().join("tls.crt"), &rotated.cert_pem).unwrap();
    let new_client = client_trusting(&rotated.cert_pem, None);
    let url = w.url("/healthz");
    eventually("new connections get the rotated certificate", async || {
        new_client.get(&url).send().await.is_ok()
    })
    .await;
    // a client that only trusts the old certificate cannot open a new connection
    let fresh_old = client_trusting(&pki_pem_of(&old_client, &w).await, None);
    assert!(fresh_old.get(&url).send().await.is_err());
    w.shutdown().await;
}

/// The original certificate is gone from disk; fetch nothing, just build a client that
/// trusts a certificate nobody serves any more.
async fn pki_pem_of(_c: &reqwest::Client, _w: &Webhook) -> String {
    pki("someone-else").cert_pem
}

#[tokio::test]
async fn client_certificates_are_verified_with_client_ca() {
    // a CA and a client certificate it signed
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = rcgen::CertificateParams::new(vec!["kube-apiserver".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    let ca_pem = ca.pem();
    let w = Webhook::start(&["--client-ca={dir}/client-ca.crt"], |d| {
        std::fs::write(d.join("client-ca.crt"), &ca_pem).unwrap()
    })
    .await;
    let server_pem = std::fs::read_to_string(w.dir.path().join("tls.crt")).unwrap();

    let anonymous = client_trusting(&server_pem, None);
    assert!(
        anonymous
            .post(w.url("/validate"))
            .json(&review_of(deployment("main"), "deployments"))
            .send()
            .await
            .is_err()
    );

    let identity = reqwest::Identity::from_pem(
        format!("{}{}", client_cert.pem(), client_key.serialize_pem()).as_bytes(),
    )
    .unwrap();
    let apiserver = client_trusting(&server_pem, Some(identity));
    let r = apiserver
        .post(w.url("/validate"))
        .json(&review_of(deployment("main"), "deployments"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    w.shutdown().await;
}

#[tokio::test]
async fn overload_gives_a_fast_explicit_denial() {
    let w = Webhook::start(
        &[
            "--max-inflight=1",
            "--queue-timeout=100ms",
            "--policy-timeout=2s",
            "--config={dir}/config.yaml",
        ],
        |d| {
            std::fs::write(d.join("policies/slow.wasm"), wat_policy("slow", "loop")).unwrap();
            std::fs::write(
                d.join("config.yaml"),
                "policies:\n  slow: { onError: ignore }\n",
            )
            .unwrap();
        },
    )
    .await;
    let cm = review_of(configmap(), "configmaps");
    let slow = {
        let (c, url, body) = (w.client.clone(), w.url("/validate"), cm.clone());
        tokio::spawn(async move {
            c.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let r = w.review(&cm).await;
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(r["response"]["allowed"], false);
    assert_eq!(r["response"]["status"]["code"], 429);
    assert!(
        r["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("overloaded")
    );
    // the slow one finishes: its policy hit the deadline and is ignored (onError: ignore)
    let done = slow.await.unwrap();
    assert_eq!(done["response"]["allowed"], true);
    assert!(
        done["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("time limit")
    );
    let m = w.metrics_text().await;
    assert!(
        m.contains(r#"ck8s_admission_policy_errors_total{policy="slow",kind="timeout"} 1"#),
        "{m}"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let w = Webhook::start(
        &["--policy-timeout=1500ms", "--config={dir}/config.yaml"],
        |d| {
            std::fs::write(d.join("policies/slow.wasm"), wat_policy("slow", "loop")).unwrap();
            std::fs::write(
                d.join("config.yaml"),
                "policies:\n  slow: { onError: ignore }\n",
            )
            .unwrap();
        },
    )
    .await;
    let (c, url, body) = (
        w.client.clone(),
        w.url("/validate"),
        review_of(configmap(), "configmaps"),
    );
    let in_flight = tokio::spawn(async move {
        c.post(url)
            .json(&body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = w.metrics;
    w.shutdown().await;
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the in-flight review must be answered"
    );
    assert!(
        reqwest::get(format!("http://{metrics}/healthz"))
            .await
            .is_err(),
        "listeners are closed after shutdown"
    );
}
