//! The floor of ck8s-admission's stack: tokio (the same multi-thread runtime), rustls (ring) and
//! hyper's HTTP/1.1 server answering every POST with a fixed allowed review, no parse, no
//! policy. `admission/bench/paced.sh` runs it like the webhook:
//!
//!   cargo build --release -p ck8s-admission --example stack_floor
//!   BIN=target/release/examples/stack_floor admission/bench/paced.sh
//!
//! What paced.sh reports for it is what the transport costs per review on this machine; the
//! webhook's figure minus this one is what ck8s-admission adds.
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const ANSWER: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"b5f4c8a2-0000-4000-8000-000000000001","allowed":true}}"#;

fn arg(name: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name).expect(name);
    args[at + 1].clone()
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let _body = req.into_body().collect().await?.to_bytes();
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(ANSWER.as_bytes())))
        .expect("a fixed response"))
}

fn main() {
    // `STACK_FLOOR_RUNTIME=current`: one single-threaded runtime instead of the webhook's
    // multi-threaded one, to see what the scheduler itself costs per review.
    let mut builder = if std::env::var("STACK_FLOOR_RUNTIME").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder.enable_all().build().expect("runtime");
    runtime.block_on(async {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let readiness = TcpListener::bind(arg("--metrics-listen"))
            .await
            .expect("bind");
        tokio::spawn(async move {
            loop {
                let (mut s, _) = readiness.accept().await.expect("accept");
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            }
        });
        let listener = TcpListener::bind(arg("--listen")).await.expect("bind");
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
