//! ck8s-admission called by a real kube-apiserver (tests/src/cluster.rs).
//!
//! The webhook runs as the real binary on loopback; it is registered by the
//! ValidatingWebhookConfiguration rendered from deploy/base with only `clientConfig` changed
//! (`url:` + `caBundle`), so the namespace selector, match conditions, timeout and failure
//! policy under test are the shipped ones. Writes go through the real kubectl.

use base64::Engine;
use ck8s_tests::cluster::{ControlPlane, free_port};
use ck8s_tests::webhook::wat_policy;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One webhook configuration is registered for the whole cluster: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const WEBHOOK: &str = "ck8s-admission.codex-k8s.dev";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The webhook's serving certificate, signed by a CA of its own (the `caBundle`).
struct Certs {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        Certs {
            ca_pem,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    })
}

/// ck8s-admission as a process on a fixed loopback port (the registered URL's).
struct Ck8s {
    child: Child,
    dir: tempfile::TempDir,
}

fn webhook_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| free_port().unwrap())
}

impl Ck8s {
    /// Starts the binary with `config` (policies.yaml) and extra policy files, waits for
    /// `/readyz`.
    fn start(config: &str, policies: &[(&str, Vec<u8>)], extra: &[&str]) -> Ck8s {
        let dir = tempfile::tempdir().unwrap();
        let c = certs();
        std::fs::write(dir.path().join("tls.crt"), &c.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &c.key_pem).unwrap();
        std::fs::write(dir.path().join("policies.yaml"), config).unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        for (name, wasm) in policies {
            std::fs::write(dir.path().join("policies").join(name), wasm).unwrap();
        }
        let p = |f: &str| dir.path().join(f).display().to_string();
        let log = std::fs::File::create(dir.path().join("ck8s.log")).unwrap();
        let child = Command::new(ck8s_tests::workspace_binary("ck8s-admission"))
            .arg(format!("--listen=127.0.0.1:{}", webhook_port()))
            .arg(format!("--metrics-listen=127.0.0.1:{}", free_port().unwrap()))
            .arg(format!("--tls-cert={}", p("tls.crt")))
            .arg(format!("--tls-key={}", p("tls.key")))
            .arg(format!("--config={}", p("policies.yaml")))
            .arg(format!("--policies={}", p("policies")))
            .arg(format!("--cache-dir={}", p("cache")))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut ck8s = Ck8s { child, dir };
        ck8s.wait_ready();
        ck8s
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        let url = format!("https://127.0.0.1:{}/readyz", webhook_port());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = ck8s_tests::webhook::client_trusting(&certs().ca_pem)
            .build()
            .unwrap();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ck8s-admission exited with {status}: {}", self.log());
            }
            let ok = rt.block_on(async {
                matches!(client.get(&url).send().await, Ok(r) if r.status().is_success())
            });
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "ck8s-admission not ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ck8s.log")).unwrap_or_default()
    }
}

impl Drop for Ck8s {
    fn drop(&mut self) {
        // SIGTERM: the server drains and exits.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped webhook configuration (deploy/base), pointed at the loopback webhook.
fn webhook_configuration(cp: &ControlPlane) -> String {
    use serde::Deserialize;
    let base = repo().join("deploy/base");
    let rendered = cp
        .kubectl_output(&["kustomize", base.to_str().unwrap()])
        .unwrap();
    let mut vwc = serde_yaml::Deserializer::from_str(&rendered)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|v| v["kind"] == "ValidatingWebhookConfiguration")
        .expect("deploy/base renders a ValidatingWebhookConfiguration");
    let ca = base64::engine::general_purpose::STANDARD.encode(&certs().ca_pem);
    for hook in vwc["webhooks"].as_array_mut().unwrap() {
        hook["clientConfig"] = serde_json::json!({
            "url": format!("https://127.0.0.1:{}/validate", webhook_port()),
            "caBundle": ca,
        });
    }
    serde_json::to_string(&vwc).unwrap()
}

/// Registers the webhook (once per test binary; later calls re-apply the same object).
fn register(cp: &ControlPlane) {
    cp.apply(&webhook_configuration(cp)).unwrap();
}

fn unregister(cp: &ControlPlane) {
    cp.kubectl_output(&[
        "delete",
        "validatingwebhookconfiguration",
        "ck8s-admission",
        "--ignore-not-found",
    ])
    .unwrap();
}

/// The output of `kubectl <args>` with `manifest` on stdin: (success, stdout, stderr).
fn kubectl_in(cp: &ControlPlane, args: &[&str], manifest: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = cp
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The API server starts calling a webhook a moment after its configuration is created: waits
/// until a server-side dry run of a Secret with a bad `CODEXK8S_BUILD_REF` in `ns` is denied by
/// ck8s (build-ref denies in every configuration these tests use).
fn wait_active(cp: &ControlPlane, ns: &str) {
    let probe = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: ck8s-probe\n  namespace: {ns}\nstringData: {{CODEXK8S_BUILD_REF: \"-b x\"}}\n"
    );
    cp.wait_until(Duration::from_secs(30), "the webhook to be called", || {
        let (ok, _, err) = kubectl_in(cp, &["create", "--dry-run=server", "-f", "-"], &probe);
        Ok(!ok && err.contains("[build-ref]"))
    })
    .unwrap();
}

fn deployment(ns: &str, name: &str, build_ref: &str, template_labels: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}{template_labels}}}
    spec:
      containers:
      - name: main
        image: ghcr.io/codex-k8s/codex-k8s:1.0.0
        env:
        - name: CODEXK8S_BUILD_REF
          value: "{build_ref}"
"#
    )
}

const DEFAULT_CONFIG: &str = include_str!("../../deploy/base/policies.yaml");

#[test]
fn the_api_server_rejects_what_the_policies_deny_with_field_and_fix() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let _ck8s = Ck8s::start(DEFAULT_CONFIG, &[], &[]);
    register(cp);
    let ns = cp.namespace("ck8s-deny").unwrap();

    // build-ref: the runbook's failure, a CLI flag in CODEXK8S_BUILD_REF.
    let bad = deployment(&ns, "codex-k8s-worker", "-b feature/x", "");
    wait_active(cp, &ns);
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &bad);
    assert!(!ok, "a bad CODEXK8S_BUILD_REF was admitted");
    assert!(
        err.contains(&format!("admission webhook \"{WEBHOOK}\" denied the request")),
        "{err}"
    );
    assert!(err.contains("[build-ref]"), "{err}");
    assert!(
        err.contains("spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]"),
        "the message names the field: {err}"
    );
    assert!(err.contains("fix:"), "the message names the fix: {err}");

    // legacy-labels on a ConfigMap's metadata.
    let legacy = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: legacy\n  namespace: {ns}\n  labels:\n    codexk8s.io/run-id: r1\ndata: {{}}\n"
    );
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &legacy);
    assert!(!ok, "a legacy label was admitted");
    assert!(err.contains("[legacy-labels]"), "{err}");
    assert!(err.contains("metadata.labels"), "{err}");
    assert!(err.contains("codex-k8s.dev/"), "names the key to use: {err}");

    // kaniko-cache re-enabled in the runtime ConfigMap.
    let kaniko = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: codex-k8s-runtime\n  namespace: {ns}\ndata:\n  CODEXK8S_KANIKO_CACHE_ENABLED: \"true\"\n"
    );
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &kaniko);
    assert!(!ok, "a re-enabled Kaniko cache was admitted");
    assert!(err.contains("[kaniko-cache]"), "{err}");
    assert!(err.contains("CODEXK8S_KANIKO_CACHE_ENABLED"), "{err}");

    // A good object goes through.
    let good = deployment(&ns, "codex-k8s-worker", "main", "");
    let (ok, out, err) = kubectl_in(cp, &["apply", "-f", "-"], &good);
    assert!(ok, "a valid Deployment was rejected: {err}");
    assert!(out.contains("created"), "{out}");
    unregister(cp);
}

#[test]
fn warn_mode_shows_as_kubectl_warnings_and_audit_mode_reaches_the_audit_log() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let config = "policies:\n  legacy-labels: { mode: warn }\n  kaniko-cache: { mode: audit }\n";
    let _ck8s = Ck8s::start(config, &[], &[]);
    register(cp);
    let ns = cp.namespace("ck8s-warn").unwrap();

    let legacy = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: legacy\n  namespace: {ns}\n  labels:\n    codexk8s.io/run-id: r1\ndata: {{}}\n"
    );
    wait_active(cp, &ns);
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &legacy);
    assert!(ok, "warn mode must admit: {err}");
    let warning = err
        .lines()
        .find(|l| l.starts_with("Warning: [legacy-labels]"))
        .unwrap_or_else(|| panic!("kubectl printed no Warning: line: {err}"));
    assert!(warning.contains("codex-k8s.dev/"), "{warning}");

    let kaniko = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: codex-k8s-runtime\n  namespace: {ns}\ndata:\n  CODEXK8S_KANIKO_CACHE_ENABLED: \"true\"\n"
    );
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &kaniko);
    assert!(ok, "audit mode must admit: {err}");
    assert!(!err.contains("Warning:"), "audit mode prints nothing: {err}");
    // The API server keeps the webhook's audit annotations, prefixed with the webhook's name.
    cp.wait_until(Duration::from_secs(20), "the audit event", || {
        Ok(cp.audit_events()?.iter().any(|e| {
            e["objectRef"]["namespace"] == ns.as_str()
                && e["objectRef"]["name"] == "codex-k8s-runtime"
                && e["annotations"]
                    .as_object()
                    .is_some_and(|a| {
                        a.iter().any(|(k, v)| {
                            k.starts_with(WEBHOOK)
                                && k.ends_with("kaniko-cache")
                                && v.as_str().is_some_and(|v| v.contains("CODEXK8S_KANIKO_CACHE_ENABLED"))
                        })
                    })
        }))
    })
    .unwrap();
    unregister(cp);
}

#[test]
fn with_ck8s_down_fail_closed_in_judged_namespaces_only() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    // Prove the webhook is called first, then stop it.
    let ck8s = Ck8s::start(DEFAULT_CONFIG, &[], &[]);
    register(cp);
    let ns = cp.namespace("ck8s-down").unwrap();
    let good = |name: &str, ns: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\ndata: {{CODEXK8S_BUILD_REF: main}}\n")
    };
    let bad = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  namespace: {ns}\ndata: {{CODEXK8S_BUILD_REF: \"--force\"}}\n"
    );
    wait_active(cp, &ns);
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &bad);
    assert!(!ok && err.contains("[build-ref]"), "{err}");
    drop(ck8s);

    // failurePolicy: Fail, the webhook unreachable: a judged write is refused...
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &good("while-down", &ns));
    assert!(!ok, "a write in a judged namespace went through with ck8s down");
    assert!(
        err.contains(&format!("failed calling webhook \"{WEBHOOK}\"")),
        "{err}"
    );
    // ...but kube-system and the webhook's own namespace stay writable.
    cp.kubectl_output(&["create", "namespace", "ck8s-system"])
        .or_else(|e| {
            if e.to_string().contains("AlreadyExists") {
                Ok(String::new())
            } else {
                Err(e)
            }
        })
        .unwrap();
    for exempt in ["kube-system", "ck8s-system"] {
        let (ok, _, err) =
            kubectl_in(cp, &["apply", "-f", "-"], &good(&format!("ck8s-down-{}", std::process::id()), exempt));
        assert!(ok, "{exempt} must stay writable with ck8s down: {err}");
    }
    // Leases and Events are excluded by the match conditions, in any namespace.
    let event = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: e1\n  namespace: {ns}\ninvolvedObject: {{kind: ConfigMap, name: x, namespace: {ns}}}\nreason: Test\nmessage: hello\ntype: Normal\n"
    );
    let (ok, _, err) = kubectl_in(cp, &["create", "-f", "-"], &event);
    assert!(ok, "Events must not be judged: {err}");
    unregister(cp);
}

#[test]
fn a_policy_slower_than_timeout_seconds_is_a_webhook_timeout() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    // A policy that never returns, with a CPU deadline longer than the webhook's
    // timeoutSeconds (5 s in deploy/base): the API server gives up first.
    let looping = wat_policy("slow", "", &["configmaps"], "loop");
    let _ck8s = Ck8s::start(
        DEFAULT_CONFIG,
        &[("slow.wasm", looping)],
        &["--policy-timeout=8s"],
    );
    register(cp);
    let ns = cp.namespace("ck8s-slow").unwrap();
    wait_active(cp, &ns);
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: slow\n  namespace: {ns}\ndata: {{a: b}}\n"
    );
    let start = Instant::now();
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &cm);
    let took = start.elapsed();
    assert!(!ok, "a write judged by a hung policy went through");
    assert!(
        err.contains(&format!("failed calling webhook \"{WEBHOOK}\"")),
        "{err}"
    );
    assert!(
        err.contains("context deadline exceeded") || err.contains("timeout"),
        "the API server reports a timeout: {err}"
    );
    assert!(
        took >= Duration::from_secs(5),
        "the API server waited timeoutSeconds before giving up ({took:?})"
    );
    unregister(cp);
}

/// `kubectl -n ns rollout status deploy/name` succeeds within 2 minutes.
fn rolled_out(cp: &ControlPlane, ns: &str, name: &str) {
    let out = cp
        .kubectl_output(&["-n", ns, "rollout", "status", &format!("deploy/{name}"), "--timeout=120s"])
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\n{}",
                cp.kubectl_output(&["-n", ns, "get", "events", "--sort-by=.lastTimestamp"])
                    .unwrap_or_default()
            )
        });
    assert!(out.contains("successfully rolled out"), "{out}");
}

#[test]
fn controllers_scale_and_roll_objects_that_held_violations_before_the_webhook() {
    // Needs issue 13 ("Safe in a cluster that already holds violations"): the Deployment
    // controller's ReplicaSet updates and the ReplicaSet controller's pods copy a template
    // that already held the violation.
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    unregister(cp);
    let ns = cp.namespace("ck8s-ratchet").unwrap();
    // Before ck8s: a bad ref, and a legacy label on the pod template.
    cp.apply(&deployment(&ns, "bad-ref", "-b feature/x", "")).unwrap();
    cp.apply(&deployment(&ns, "legacy", "main", ", codexk8s.io/run-id: r1"))
        .unwrap();
    rolled_out(cp, &ns, "bad-ref");
    rolled_out(cp, &ns, "legacy");

    let _ck8s = Ck8s::start(DEFAULT_CONFIG, &[], &[]);
    register(cp);
    wait_active(cp, &ns);

    for name in ["bad-ref", "legacy"] {
        // Scale: the Deployment controller updates the ReplicaSet, the ReplicaSet controller
        // creates pods from the same template.
        cp.kubectl_output(&["-n", &ns, "scale", &format!("deploy/{name}"), "--replicas=3"])
            .unwrap();
        rolled_out(cp, &ns, name);
        let ready = cp
            .kubectl_output(&["-n", &ns, "get", &format!("deploy/{name}"), "-o", "jsonpath={.status.readyReplicas}"])
            .unwrap();
        assert_eq!(ready, "3", "{name}: scaled to 3 under the webhook");
        // Roll: a new ReplicaSet from the unchanged template. The restart itself is an
        // UPDATE of the Deployment that keeps its violation: allowed, with a warning.
        let out = cp
            .kubectl()
            .args(["-n", &ns, "rollout", "restart", &format!("deploy/{name}")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: rollout restart denied: {stderr}");
        assert!(
            stderr.contains("Warning:") && stderr.contains("existing violation kept"),
            "{name}: the kept violation is shown as a warning: {stderr}"
        );
        rolled_out(cp, &ns, name);
        let sets = cp
            .kubectl_output(&["-n", &ns, "get", "rs", "-l", &format!("app={name}"), "-o", "name"])
            .unwrap();
        assert_eq!(sets.lines().count(), 2, "{name}: the rollout made a new ReplicaSet: {sets}");
    }

    // A new violation is still denied, whoever sends it: the bad ref changed into another.
    let out = cp
        .kubectl()
        .args(["-n", &ns, "set", "env", "deploy/bad-ref", "CODEXK8S_BUILD_REF=--force"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a changed bad value was admitted");
    assert!(stderr.contains("[build-ref]") && stderr.contains("--force"), "{stderr}");
    unregister(cp);
}
