//! Captures the `AdmissionReview` the real kube-apiserver sends a webhook for the create of the
//! benchmarks' 4 KB Deployment, so that the webhook's own benchmarks (`admission/bench/`) post
//! what a cluster posts: the object as stored (defaults, `managedFields`, uid), the user with
//! its groups, `requestKind`, `options`. Writes the review to the path given, byte for byte as the
//! API server sent it.
//!
//! ```sh
//! cargo run -q -p ck8s-tests --example capture_review -- admission/bench/apiserver-review.json
//! ```
//!
//! A loopback HTTPS server stands in for ck8s-admission at the registered URL (the shipped
//! ValidatingWebhookConfiguration, only `clientConfig` changed), records the first review of a
//! Deployment CREATE and allows everything. The Deployment is made by `kubectl create`, as a
//! user would.

use ck8s_tests::cluster::ControlPlane;
use ck8s_tests::cluster_webhook::{
    bench_deployment, certs, kubectl_in, register, unregister, webhook_port,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: capture_review OUT.json"))?;
    let cp = ControlPlane::shared();
    let ns = cp.namespace("capture")?;
    let rt = tokio::runtime::Runtime::new()?;
    let (reviews, mut captured) = mpsc::unbounded_channel::<Vec<u8>>();
    rt.spawn(serve(reviews));
    register(cp);
    let mut object = bench_deployment("codex-k8s");
    object["metadata"]["namespace"] = ns.clone().into();
    let (created, _, err) = kubectl_in(cp, &["create", "-f", "-"], &object.to_string());
    unregister(cp);
    anyhow::ensure!(created, "kubectl create: {err}");
    let review = rt.block_on(async {
        loop {
            let body = tokio::time::timeout(Duration::from_secs(30), captured.recv())
                .await
                .map_err(|_| anyhow::anyhow!("the API server sent no review of the create"))?
                .ok_or_else(|| anyhow::anyhow!("the capture server stopped"))?;
            let review: Value = serde_json::from_slice(&body)?;
            let request = &review["request"];
            if request["operation"] == "CREATE" && request["kind"]["kind"] == "Deployment" {
                return anyhow::Ok(body);
            }
        }
    })?;
    std::fs::write(&out, &review)?;
    eprintln!("wrote {out}: {} bytes", review.len());
    Ok(())
}

/// Answers every review on the webhook's port with "allowed", sending each to `reviews`.
async fn serve(reviews: mpsc::UnboundedSender<Vec<u8>>) -> anyhow::Result<()> {
    let c = certs();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes())?],
        PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())?,
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", webhook_port())).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, reviews) = (acceptor.clone(), reviews.clone());
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            // HTTP/1.1 with keep-alive: header, Content-Length body, answer; again.
            let mut buf = Vec::new();
            loop {
                let Some(end) = read_until_header_end(&mut tls, &mut buf).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + len {
                    let mut chunk = [0u8; 16384];
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body: Vec<u8> = buf.drain(..end + len).skip(end).collect();
                let uid =
                    serde_json::from_slice::<Value>(&body).unwrap_or_default()["request"]["uid"]
                        .take();
                let answer = serde_json::json!({
                    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "response": {"uid": uid, "allowed": true},
                })
                .to_string();
                let _ = reviews.send(body);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                if tls.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Reads until `buf` holds a whole request header; the offset just past it.
async fn read_until_header_end(
    tls: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    buf: &mut Vec<u8>,
) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut chunk = [0u8; 16384];
        match tls.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
