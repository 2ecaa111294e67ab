//! ck8s-admission as a real process on loopback, registered with the real control plane
//! ([`crate::cluster`]) by the ValidatingWebhookConfiguration rendered from deploy/base with
//! only `clientConfig` changed (`url:` + `caBundle`): the namespace selector, match conditions,
//! timeout and failure policy in force are the shipped ones. `$CK8S_ADMISSION_BIN` picks another
//! binary (a release or static build, for benchmarks).

use crate::cluster::{ControlPlane, free_port};
use base64::Engine;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The webhook's name in deploy/base.
pub const WEBHOOK: &str = "ck8s-admission.codex-k8s.dev";

/// The webhook's serving certificate, signed by a CA of its own (the `caBundle`).
pub struct Certs {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn certs() -> &'static Certs {
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
pub struct Ck8s {
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// The plain-HTTP `--metrics-listen` port.
    pub metrics_port: u16,
}

pub fn webhook_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| free_port().unwrap())
}

impl Ck8s {
    /// Starts the binary with `config` (policies.yaml) and extra policy files, waits for
    /// `/readyz`.
    pub fn start(config: &str, policies: &[(&str, Vec<u8>)], extra: &[&str]) -> Ck8s {
        let bin = std::env::var_os("CK8S_ADMISSION_BIN").map(PathBuf::from);
        Self::start_bin(bin, config, policies, extra)
    }

    /// [`Ck8s::start`] with the binary given (`None`: the workspace's build).
    pub fn start_bin(
        bin: Option<PathBuf>,
        config: &str,
        policies: &[(&str, Vec<u8>)],
        extra: &[&str],
    ) -> Ck8s {
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
        let metrics_port = free_port().unwrap();
        let child = Command::new(bin.unwrap_or_else(|| crate::workspace_binary("ck8s-admission")))
            .arg(format!("--listen=127.0.0.1:{}", webhook_port()))
            .arg(format!("--metrics-listen=127.0.0.1:{metrics_port}"))
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
        let mut ck8s = Ck8s {
            child,
            dir,
            metrics_port,
        };
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
        let client = crate::webhook::client_trusting(&certs().ca_pem)
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

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .expect("connect to --metrics-listen");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "/metrics: {text}");
        text
    }

    /// One sample of [`Ck8s::metrics`], 0 when the series is absent.
    pub fn metric(&self, series: &str) -> u64 {
        self.metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
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
pub fn webhook_configuration(cp: &ControlPlane) -> String {
    let base = crate::repo().join("deploy/base");
    let rendered = cp
        .kubectl_output(&["kustomize", base.to_str().unwrap()])
        .unwrap();
    let mut vwc = serde_saphyr::from_multiple::<Value>(&rendered)
        .unwrap()
        .into_iter()
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

/// The benchmarks' Deployment of about 4 KB: the control plane's shape, 41 env vars (the
/// build ref last, `main`) and labels; `replicas: 0`, so a create makes no Pods.
pub fn bench_deployment(name: &str) -> Value {
    let env: Vec<Value> = (0..40)
        .map(|i| serde_json::json!({ "name": format!("CODEXK8S_SETTING_{i:02}"), "value": format!("value-{i:02}-abcdefghijklmnopqrstuvwxyz") }))
        .chain(std::iter::once(serde_json::json!({"name": "CODEXK8S_BUILD_REF", "value": "main"})))
        .collect();
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "labels": { "app.kubernetes.io/name": name, "codex-k8s.dev/project-id": "3" } },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": name } },
                "spec": { "containers": [{ "name": "main", "image": "registry.codex-k8s.dev/codex-k8s:1.0.0", "env": env }] }
            }
        }
    })
}

/// Registers the webhook (once per test binary; later calls re-apply the same object).
pub fn register(cp: &ControlPlane) {
    cp.apply(&webhook_configuration(cp)).unwrap();
}

pub fn unregister(cp: &ControlPlane) {
    cp.kubectl_output(&[
        "delete",
        "validatingwebhookconfiguration",
        "ck8s-admission",
        "--ignore-not-found",
    ])
    .unwrap();
}

/// The output of `kubectl <args>` with `manifest` on stdin: (success, stdout, stderr).
pub fn kubectl_in(cp: &ControlPlane, args: &[&str], manifest: &str) -> (bool, String, String) {
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
pub fn wait_active(cp: &ControlPlane, ns: &str) {
    let probe = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: ck8s-probe\n  namespace: {ns}\nstringData: {{CODEXK8S_BUILD_REF: \"-b x\"}}\n"
    );
    cp.wait_until(Duration::from_secs(30), "the webhook to be called", || {
        let (ok, _, err) = kubectl_in(cp, &["create", "--dry-run=server", "-f", "-"], &probe);
        Ok(!ok && err.contains("[build-ref]"))
    })
    .unwrap();
}
