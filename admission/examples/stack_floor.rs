//! The floor of ck8s-admission's stack: tokio, rustls (ring) and hyper's HTTP/1.1 server
//! answering every POST with an allowed review, no parse beyond finding the request's uid (as
//! ck8s-admission finds it when overloaded), no policy, no deadlines or metrics. What it costs
//! per review is what the transport alone costs on this machine; the webhook's figure minus
//! this one is what ck8s-admission adds.
//!
//! Posted to directly by `admission/bench/paced.sh`:
//!
//!   cargo build --release -p ck8s-admission --example stack_floor
//!   BIN=target/release/examples/stack_floor admission/bench/paced.sh
//!
//! and registered behind the real API server by the create-cost benchmark
//! (`CK8S_FLOOR_BIN=target/release/examples/stack_floor`, see `tests/examples/create_cost.rs`),
//! which gives it ck8s-admission's flags: `--listen`, `--metrics-listen`, `--tls-cert`,
//! `--tls-key` (`--name=value` or `--name value`; a self-signed certificate without the last
//! two; other flags are ignored). The plain listener answers any request with
//! `stack_floor_reviews_total N`, the reviews answered so far.
//!
//! `STACK_FLOOR_RUNTIME=current` runs it on one single-threaded runtime instead of the
//! webhook's multi-threaded one: the lowest a tokio server can go.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ck8s_admission::body::uid_in_prefix;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

static REVIEWS: AtomicU64 = AtomicU64::new(0);

/// The value of flag `name`, given as `--name=value` or `--name value`.
fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix(name)?.strip_prefix('=') {
            Some(value) => Some(value.to_owned()),
            None if a == name => args.get(i + 1).cloned(),
            None => None,
        })
}

fn required(name: &str) -> String {
    flag(name).unwrap_or_else(|| panic!("stack_floor needs {name}"))
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    REVIEWS.fetch_add(1, Ordering::Relaxed);
    let answer = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":"{}","allowed":true}}}}"#,
        uid_in_prefix(&body).unwrap_or_default()
    );
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer)))
        .expect("a response of a static header and a body"))
}

fn certificate() -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    match (flag("--tls-cert"), flag("--tls-key")) {
        (Some(cert), Some(key)) => (
            CertificateDer::pem_file_iter(&cert)
                .expect("--tls-cert")
                .collect::<Result<_, _>>()
                .expect("--tls-cert"),
            PrivateKeyDer::from_pem_file(&key).expect("--tls-key"),
        ),
        _ => {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
            let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
            (vec![cert.cert.der().clone()], key)
        }
    }
}

fn main() {
    let mut builder = if std::env::var("STACK_FLOOR_RUNTIME").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder.enable_all().build().expect("runtime");
    runtime.block_on(async {
        let (chain, key) = certificate();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let plain = TcpListener::bind(required("--metrics-listen"))
            .await
            .expect("bind");
        tokio::spawn(async move {
            loop {
                let (mut s, _) = plain.accept().await.expect("accept");
                // The request read first: closing with it unread would reset the connection.
                let mut request = [0u8; 1024];
                let _ = s.read(&mut request).await;
                let body = format!(
                    "stack_floor_reviews_total {}\n",
                    REVIEWS.load(Ordering::Relaxed)
                );
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        let listener = TcpListener::bind(required("--listen")).await.expect("bind");
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), hyper::service::service_fn(answer))
                    .await;
            });
        }
    });
}
