//! ck8s-admission over real TLS with a real HTTP client: decisions, modes, bad input,
//! reloads of policies and certificates, TLS hardening, backpressure and shutdown.

use ck8s_tests::eventually;
use ck8s_tests::webhook::{FROZEN, TestWebhook, deployment, labelled_ns};
use serde_json::{Value, json};
use std::ops::Deref;
use std::path::Path;
use std::time::{Duration, Instant};

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

/// The shared harness with a self-signed certificate and a client that trusts it.
struct Webhook {
    hook: TestWebhook,
    client: reqwest::Client,
}

impl Deref for Webhook {
    type Target = TestWebhook;
    fn deref(&self) -> &TestWebhook {
        &self.hook
    }
}

impl Webhook {
    /// Starts a server with a fresh certificate; `prepare` can put policies/config in place.
    async fn start(extra: &[&str], prepare: impl FnOnce(&Path)) -> Webhook {
        let pki = pki("ck8s-admission");
        let hook = TestWebhook::start(&pki.cert_pem, &pki.key_pem, extra, prepare).await;
        let client = client_trusting(&pki.cert_pem, None);
        Webhook { hook, client }
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

    async fn shutdown(self) {
        self.hook.shutdown().await
    }
}

fn client_trusting(ca_pem: &str, identity: Option<reqwest::Identity>) -> reqwest::Client {
    let mut b = ck8s_tests::webhook::client_trusting(ca_pem);
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().unwrap()
}

fn review_of(object: Value, resource: &str) -> Value {
    ck8s_tests::webhook::review_of(object, resource, "e911857d-c318-11e8-bbad-025000000001")
}

/// A policy in WAT (ABI v1) for ConfigMaps that denies every one ([`FROZEN`]) or loops.
fn wat_policy(name: &str, body: &str) -> Vec<u8> {
    ck8s_tests::webhook::wat_policy(name, "", &["configmaps"], body)
}

/// A webhook whose one policy loops until its deadline (`--policy-timeout` among `flags`), for
/// configmaps, with `onError: ignore`.
async fn with_a_looping_policy(flags: &[&str]) -> Webhook {
    let flags: Vec<&str> = flags
        .iter()
        .copied()
        .chain(["--config={dir}/config.yaml"])
        .collect();
    Webhook::start(&flags, |d| {
        std::fs::write(d.join("policies/slow.wasm"), wat_policy("slow", "loop")).unwrap();
        std::fs::write(
            d.join("config.yaml"),
            "policies:\n  slow: { onError: ignore }\n",
        )
        .unwrap();
    })
    .await
}

fn configmap() -> Value {
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "codex-k8s-runtime" }, "data": { "A": "b" } })
}

/// Whether `line` of /metrics counts failed reloads of `what` (one or more: a save may be
/// seen half-written first on a loaded machine, which is a failed reload too).
fn failures_counted(line: &str, what: &str) -> bool {
    line.strip_prefix(&format!(
        r#"ck8s_admission_reloads_total{{what="{what}",result="failure"}} "#
    ))
    .and_then(|n| n.trim().parse::<u64>().ok())
    .is_some_and(|n| n >= 1)
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

/// Issue 24: the allocator (mimalloc) commits its arenas on demand, as `.cargo/config.toml`
/// asks of its C build; committed eagerly, the webhook's peak RSS under load doubled
/// (BENCHMARKS.md). A build that lost the define fails here, not in a cluster's memory graph.
#[test]
fn the_allocator_commits_its_arenas_on_demand() {
    let out = std::process::Command::new(ck8s_tests::workspace_binary("ck8s-admission"))
        .arg("--version")
        .env("MIMALLOC_VERBOSE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("option 'arena_eager_commit': 0"),
        "mimalloc's options as it printed them:\n{stderr}"
    );
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
            .contains(&format!("[freeze-configmaps] {FROZEN}"))
    );

    // a broken replacement: reported, the previous set stays in service
    std::fs::write(w.dir.path().join("policies/freeze.wasm"), b"\0asm broken").unwrap();
    eventually("the failed reload is counted", async || {
        w.metrics_text()
            .await
            .lines()
            .any(|l| failures_counted(l, "policies"))
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

/// A ValidatingAdmissionPolicy file saved into `--policies DIR` is in force without waiting for
/// the reload interval (an hour here): the file event starts the reload. A broken one keeps
/// the previous set, naming the file, the policy and the expression's field path.
#[tokio::test]
async fn a_saved_validating_admission_policy_is_in_force_at_once() {
    const VAP: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: no-frozen-configmaps}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [configmaps]}
  validations:
  - expression: "!has(object.data) || !('frozen' in object.data)"
    messageExpression: "'ConfigMap ' + object.metadata.name + ' may not hold frozen'"
"#;
    let w = Webhook::start(&["--reload-interval=1h"], |_| {}).await;
    let mut cm = configmap();
    cm["data"] = json!({"frozen": "yes"});
    let review = review_of(cm, "configmaps");
    assert_eq!(w.review(&review).await["response"]["allowed"], true);

    std::fs::write(w.path("policies/frozen.yaml"), VAP).unwrap();
    eventually("the saved policy denies", async || {
        w.review(&review).await["response"]["allowed"] == false
    })
    .await;
    let r = w.review(&review).await;
    let message = r["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "ValidatingAdmissionPolicy 'no-frozen-configmaps' denied request: ConfigMap codex-k8s-runtime may not hold frozen"
        ),
        "{message}"
    );
    // Per-policy metrics, as for the WASM policies.
    let metrics = w.metrics_text().await;
    assert!(
        metrics.contains(
            r#"ck8s_admission_policy_evaluations_total{policy="no-frozen-configmaps",result="deny"} 2"#
        ) && metrics.contains(r#"ck8s_admission_policy_evaluation_duration_seconds_count{policy="no-frozen-configmaps"} 2"#),
        "{metrics}"
    );

    std::fs::write(
        w.path("policies/frozen.yaml"),
        VAP.replace("!('frozen' in object.data)", "!('frozen' in object.data"),
    )
    .unwrap();
    eventually("the failed reload is counted", async || {
        w.metrics_text()
            .await
            .lines()
            .any(|l| failures_counted(l, "policies"))
    })
    .await;
    assert_eq!(w.review(&review).await["response"]["allowed"], false);

    std::fs::remove_file(w.path("policies/frozen.yaml")).unwrap();
    eventually("the removed policy is gone", async || {
        w.review(&review).await["response"]["allowed"] == true
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
    let w = with_a_looping_policy(&[
        "--max-inflight=1",
        "--queue-timeout=100ms",
        "--policy-timeout=2s",
    ])
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

/// Evaluations run on the async worker that read the request, until one outlives the inline
/// budget: from then on that set runs off the workers, so slow evaluations in flight do not
/// hold up the other reviews (here on a runtime of two workers, both of which two slow
/// evaluations would otherwise hold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_policy_set_moves_off_the_async_workers() {
    let w = with_a_looping_policy(&["--policy-timeout=600ms"]).await;
    let cm = review_of(configmap(), "configmaps");
    // The first runs inline and takes its whole deadline.
    let start = Instant::now();
    assert_eq!(w.review(&cm).await["response"]["allowed"], true);
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
    // Two more at once: inline they would hold both workers for 600 ms.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (c, url, body) = (w.client.clone(), w.url("/validate"), cm.clone());
            tokio::spawn(async move {
                let r = c.post(url).json(&body).send().await.unwrap();
                r.json::<Value>().await.unwrap()
            })
        })
        .collect();
    // Not a tokio timer: with both workers held, the runtime's timers would not fire.
    std::thread::sleep(Duration::from_millis(150));
    // A review the slow policy does not concern, on a connection of its own.
    let probe = Instant::now();
    let quick = w
        .review(&review_of(deployment("main"), "deployments"))
        .await;
    let waited = probe.elapsed();
    assert_eq!(quick["response"]["allowed"], true, "{quick}");
    for s in slow {
        assert_eq!(s.await.unwrap()["response"]["allowed"], true);
    }
    assert!(
        waited < Duration::from_millis(300),
        "a quick review waited {waited:?} behind two slow evaluations"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let w = with_a_looping_policy(&["--policy-timeout=1500ms"]).await;
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

fn update_of(object: Value, old: Value, resource: &str) -> Value {
    ck8s_tests::webhook::update_of(
        object,
        old,
        resource,
        "e911857d-c318-11e8-bbad-025000000002",
    )
}

/// A ReplicaSet the Deployment controller made before the webhook was registered: its
/// template still carries a legacy label and a bad `CODEXK8S_BUILD_REF`.
fn legacy_replicaset(replicas: u32, env: Value) -> Value {
    json!({ "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": { "name": "codex-k8s-worker-7d9f", "ownerReferences": [{ "apiVersion": "apps/v1",
            "kind": "Deployment", "name": "codex-k8s-worker", "uid": "1", "controller": true }] },
        "spec": { "replicas": replicas, "template": {
            "metadata": { "labels": { "codexk8s.io/managed-by": "codex-k8s-worker" } },
            "spec": { "containers": [{ "name": "w", "image": "w:1", "env": env }] } } } })
}

fn runtime_cm(data: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "codex-k8s-runtime" }, "data": data })
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn updates_keep_existing_violations_and_deny_new_ones() {
    let w = Webhook::start(&[], |dir| {
        std::fs::write(
            dir.join("policies/frozen.wasm"),
            wat_policy("frozen", "deny"),
        )
        .unwrap();
    })
    .await;
    let bad_env = json!([{ "name": "CODEXK8S_BUILD_REF", "value": "-b feature/x" }]);

    // The Deployment controller scales the ReplicaSet: only spec.replicas changes.
    let r = w
        .review(&update_of(
            legacy_replicaset(3, bad_env.clone()),
            legacy_replicaset(1, bad_env.clone()),
            "replicasets",
        ))
        .await;
    assert_eq!(r["response"]["allowed"], true, "{r}");
    let warnings = strs(&r["response"]["warnings"]);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.starts_with(
        "existing violation kept: [build-ref] spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]"
    ) && w.contains("(got \"-b feature/x\"); fix: set CODEXK8S_BUILD_REF")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.starts_with(
        "existing violation kept: [legacy-labels] spec.template.metadata.labels[codexk8s.io/managed-by]"
    ) && w.contains("; fix: rename label codexk8s.io/managed-by to codex-k8s.dev/managed-by")), "{warnings:?}");

    // The same ReplicaSet created: denied as before.
    let r = w
        .review(&review_of(
            legacy_replicaset(3, bad_env.clone()),
            "replicasets",
        ))
        .await;
    assert_eq!(r["response"]["allowed"], false);
    assert!(r["response"].get("warnings").is_none(), "{r}");

    // A bad value changed into another bad value: new, denied, the new value named.
    let changed = json!([{ "name": "CODEXK8S_BUILD_REF", "value": "--orphan" }]);
    let r = w
        .review(&update_of(
            legacy_replicaset(1, changed),
            legacy_replicaset(1, bad_env.clone()),
            "replicasets",
        ))
        .await;
    assert_eq!(r["response"]["allowed"], false);
    let msg = r["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("(1 violation)") && msg.contains("\"--orphan\""),
        "{msg}"
    );

    // Old violations kept and a new one added: the new one is named, only it.
    let added = json!([{ "name": "CODEXK8S_BUILD_REF", "value": "-b feature/x" },
        { "name": "CODEXK8S_KANIKO_CACHE_ENABLED", "value": "true" }]);
    let r = w
        .review(&update_of(
            legacy_replicaset(1, added),
            legacy_replicaset(1, bad_env.clone()),
            "replicasets",
        ))
        .await;
    assert_eq!(r["response"]["allowed"], false);
    assert_eq!(r["response"]["status"]["code"], 403);
    let msg = r["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("(1 violation)"), "{msg}");
    assert!(
        msg.contains(
            "[kaniko-cache] spec.template.spec.containers[0].env[CODEXK8S_KANIKO_CACHE_ENABLED]"
        ),
        "{msg}"
    );
    assert!(
        !msg.contains("build-ref") && !msg.contains("legacy-labels"),
        "{msg}"
    );
    assert_eq!(strs(&r["response"]["warnings"]).len(), 2, "{r}");

    // Runbook mitigation A on a ConfigMap that still holds a bad CODEXK8S_BUILD_REF.
    let before = runtime_cm(
        json!({ "CODEXK8S_BUILD_REF": "-b feature/x", "CODEXK8S_KANIKO_CACHE_ENABLED": "true" }),
    );
    let mitigation_a = runtime_cm(
        json!({ "CODEXK8S_BUILD_REF": "-b feature/x", "CODEXK8S_KANIKO_CACHE_ENABLED": "false" }),
    );
    let r = w
        .review(&update_of(mitigation_a, before.clone(), "configmaps"))
        .await;
    // `frozen` (a user policy, ABI v1) denies every ConfigMap: ratcheted the same way.
    assert_eq!(r["response"]["allowed"], true, "{r}");
    let warnings = strs(&r["response"]["warnings"]);
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("existing violation kept: [build-ref] data.CODEXK8S_BUILD_REF")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w == &format!("existing violation kept: [frozen] {FROZEN}; fix: ask the SRE")),
        "{warnings:?}"
    );
    // Mitigation B while the cache flag is still on.
    let mitigation_b = runtime_cm(
        json!({ "CODEXK8S_BUILD_REF": "main", "CODEXK8S_KANIKO_CACHE_ENABLED": "true" }),
    );
    let r = w
        .review(&update_of(mitigation_b, before, "configmaps"))
        .await;
    assert_eq!(r["response"]["allowed"], true, "{r}");

    // A Namespace that kept an old codexk8s.io/run-id label gets an unrelated label.
    let mut relabelled = labelled_ns("codexk8s.io/run-id");
    relabelled["metadata"]["labels"]["team"] = json!("platform");
    let r = w
        .review(&update_of(
            relabelled,
            labelled_ns("codexk8s.io/run-id"),
            "namespaces",
        ))
        .await;
    assert_eq!(r["response"]["allowed"], true, "{r}");
    assert_eq!(
        strs(&r["response"]["warnings"]),
        [
            "existing violation kept: [legacy-labels] metadata.labels[codexk8s.io/run-id]: legacy label key codexk8s.io/run-id (the platform moved to codex-k8s.dev/) (got \"codex-k8s-worker\"); fix: rename label codexk8s.io/run-id to codex-k8s.dev/run-id"
        ]
    );

    let m = w.metrics_text().await;
    for line in [
        r#"ck8s_admission_policy_evaluations_total{policy="build-ref",result="kept"} 3"#,
        r#"ck8s_admission_policy_evaluations_total{policy="legacy-labels",result="kept"} 4"#,
        r#"ck8s_admission_policy_evaluations_total{policy="kaniko-cache",result="kept"} 1"#,
        r#"ck8s_admission_policy_evaluations_total{policy="frozen",result="kept"} 2"#,
        r#"ck8s_admission_requests_total{decision="kept"} 4"#,
        r#"ck8s_admission_requests_total{decision="deny"} 3"#,
    ] {
        assert!(m.contains(line), "missing {line} in\n{m}");
    }
    w.shutdown().await;
}

#[tokio::test]
async fn kept_secret_values_are_compared_not_shown_and_warnings_stay_in_budget() {
    use base64::Engine as _;
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let w = Webhook::start(&[], |_| {}).await;
    let secret = |v: &str| {
        json!({ "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "codex-k8s-runtime" }, "data": { "CODEXK8S_BUILD_REF": b64(v) } })
    };
    let r = w
        .review(&update_of(
            secret("-b feature/x"),
            secret("-b feature/x"),
            "secrets",
        ))
        .await;
    assert_eq!(r["response"]["allowed"], true, "{r}");
    let warnings = strs(&r["response"]["warnings"]);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("(value from a Secret, not shown)"),
        "{warnings:?}"
    );
    assert!(!r.to_string().contains("feature/x"));
    // The masked text is the same; the value is not.
    let r = w
        .review(&update_of(
            secret("--orphan"),
            secret("-b feature/x"),
            "secrets",
        ))
        .await;
    assert_eq!(r["response"]["allowed"], false, "{r}");
    assert!(!r.to_string().contains("orphan"));

    // 200 kept legacy labels: the warnings still fit the API server's 4 KiB.
    let labels: serde_json::Map<String, Value> = (0..200)
        .map(|i| (format!("codexk8s.io/key-{i:03}"), json!("v")))
        .collect();
    let ns = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "n", "labels": labels } });
    let r = w.review(&update_of(ns.clone(), ns, "namespaces")).await;
    assert_eq!(r["response"]["allowed"], true);
    let warnings = strs(&r["response"]["warnings"]);
    let total: usize = warnings.iter().map(String::len).sum();
    assert!(total <= 4096, "{total}");
    assert!(warnings[0].starts_with("existing violation kept: [legacy-labels]"));
    assert!(
        warnings
            .last()
            .unwrap()
            .contains("more warning(s) not shown"),
        "{warnings:?}"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn strict_mode_denies_existing_violations_as_before() {
    let w = Webhook::start(&["--config={dir}/config.yaml"], |dir| {
        std::fs::write(
            dir.join("config.yaml"),
            "policies:\n  build-ref: { allowExistingViolations: false }\n  legacy-labels: { allowExistingViolations: false }\n",
        )
        .unwrap();
    })
    .await;
    let bad_env = json!([{ "name": "CODEXK8S_BUILD_REF", "value": "-b feature/x" }]);
    let r = w
        .review(&update_of(
            legacy_replicaset(3, bad_env.clone()),
            legacy_replicaset(1, bad_env),
            "replicasets",
        ))
        .await;
    assert_eq!(r["response"]["allowed"], false);
    let msg = r["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("(2 violations)")
            && msg.contains("[build-ref]")
            && msg.contains("[legacy-labels]"),
        "{msg}"
    );
    assert!(r["response"].get("warnings").is_none(), "{r}");
    // DELETE and objects being deleted are allowed, as ever.
    let mut del = review_of(labelled_ns("codexk8s.io/run-id"), "namespaces");
    del["request"]["operation"] = json!("DELETE");
    assert_eq!(w.review(&del).await["response"]["allowed"], true);
    let mut finalizing = labelled_ns("codexk8s.io/run-id");
    finalizing["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let r = w
        .review(&update_of(
            finalizing,
            labelled_ns("codexk8s.io/other"),
            "namespaces",
        ))
        .await;
    assert_eq!(r["response"]["allowed"], true);
    w.shutdown().await;
}

/// A CA and a client identity (cert + key PEM) it signed.
fn client_pki() -> (String, reqwest::Identity) {
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
    let identity = reqwest::Identity::from_pem(
        format!("{}{}", client_cert.pem(), client_key.serialize_pem()).as_bytes(),
    )
    .unwrap();
    (ca.pem(), identity)
}

#[tokio::test]
async fn client_ca_is_reloaded_on_change() {
    let (old_ca, old_client) = client_pki();
    let (new_ca, new_client) = client_pki();
    let w = Webhook::start(&["--client-ca={dir}/client-ca.crt"], |d| {
        std::fs::write(d.join("client-ca.crt"), &old_ca).unwrap()
    })
    .await;
    let server_pem = std::fs::read_to_string(w.path("tls.crt")).unwrap();
    // A fresh client per attempt: every try is a new handshake against the CA in service.
    let served = async |identity: &reqwest::Identity| {
        client_trusting(&server_pem, Some(identity.clone()))
            .post(w.url("/validate"))
            .json(&review_of(deployment("main"), "deployments"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    };
    assert!(served(&old_client).await);
    assert!(!served(&new_client).await);

    // A bundle that does not parse: counted as a failed reload, the old CA stays.
    std::fs::write(w.path("client-ca.crt"), "not a certificate\n").unwrap();
    eventually("a failed client CA reload is counted", async || {
        w.metrics_text()
            .await
            .lines()
            .any(|l| failures_counted(l, "client_ca"))
    })
    .await;
    assert!(served(&old_client).await);

    // The rotated CA: new connections need a certificate it signed.
    let tmp = w.path("client-ca.tmp");
    std::fs::write(&tmp, &new_ca).unwrap();
    std::fs::rename(&tmp, w.path("client-ca.crt")).unwrap();
    eventually("the new client CA is in service", async || {
        served(&new_client).await
    })
    .await;
    assert!(!served(&old_client).await);
    let m = w.metrics_text().await;
    assert!(
        m.contains(r#"ck8s_admission_reloads_total{what="client_ca",result="success"} 1"#),
        "{m}"
    );
    w.shutdown().await;
}
