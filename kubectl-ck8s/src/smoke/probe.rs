//! HTTP probes through a port-forward, behind a seam.
//!
//! [`Prober`] opens a byte stream to a pod's port; [`exchange`] speaks just enough HTTP/1.1 to
//! read a status line and a `Location` header. Production uses kube's port-forward
//! ([`PortForward`]); tests use a local TCP listener ([`Direct`]).

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where a probe goes: a pod and one of its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pod: String,
    pub port: u16,
}

/// One HTTP request a smoke check makes.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// What came back (or why nothing did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResponse {
    pub status: u16,
    pub location: Option<String>,
}

pub type ProbeResult = Result<ProbeResponse, String>;

pub trait Prober: Send + Sync {
    fn probe(
        &self,
        target: &Target,
        req: &ProbeRequest,
    ) -> impl Future<Output = ProbeResult> + Send;
}

pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Port-forward through the API server (`kubectl port-forward`).
pub struct PortForward {
    pub pods: Api<Pod>,
}

impl Prober for PortForward {
    async fn probe(&self, target: &Target, req: &ProbeRequest) -> ProbeResult {
        let work = async {
            let mut pf = self
                .pods
                .portforward(&target.pod, &[target.port])
                .await
                .map_err(|e| {
                    let why = match &e {
                        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
                        other => other.to_string(),
                    };
                    format!(
                        "port-forward to {}:{} failed: {why}",
                        target.pod, target.port
                    )
                })?;
            let stream = pf
                .take_stream(target.port)
                .ok_or("port-forward gave no stream")?;
            let r = exchange(stream, req).await;
            pf.abort();
            r
        };
        tokio::time::timeout(PROBE_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    }
}

/// Straight to one TCP address, ignoring the target pod (tests, and `--probe-direct`).
pub struct Direct {
    pub addr: String,
}

impl Prober for Direct {
    async fn probe(&self, _target: &Target, req: &ProbeRequest) -> ProbeResult {
        let work = async {
            let stream = tokio::net::TcpStream::connect(&self.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            exchange(stream, req).await
        };
        tokio::time::timeout(PROBE_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    }
}

/// One HTTP/1.1 request with `Connection: close`; reads the head of the response only.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    req: &ProbeRequest,
) -> ProbeResult {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: kubectl-ck8s\r\nConnection: close\r\nContent-Length: {}\r\n",
        req.method,
        req.path,
        req.body.len()
    );
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&req.body);
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_head(&String::from_utf8_lossy(&buf))
}

fn parse_head(text: &str) -> ProbeResult {
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {status_line:?}"))?;
    let location = lines.take_while(|l| !l.is_empty()).find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.trim().to_string())
    });
    Ok(ProbeResponse { status, location })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_location() {
        assert_eq!(
            parse_head("HTTP/1.1 302 Found\r\nLocation: /oauth2/start?rd=x\r\n\r\n"),
            Ok(ProbeResponse {
                status: 302,
                location: Some("/oauth2/start?rd=x".into())
            })
        );
        assert_eq!(
            parse_head("HTTP/1.1 401 Unauthorized\r\n\r\n"),
            Ok(ProbeResponse {
                status: 401,
                location: None
            })
        );
        assert!(parse_head("garbage").is_err());
    }

    #[tokio::test]
    async fn direct_probe_against_a_local_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
        });
        let req = ProbeRequest {
            method: "GET",
            path: "/healthz".into(),
            headers: vec![],
            body: String::new(),
        };
        let r = Direct { addr }
            .probe(
                &Target {
                    pod: "p".into(),
                    port: 8080,
                },
                &req,
            )
            .await;
        assert_eq!(
            r,
            Ok(ProbeResponse {
                status: 200,
                location: None
            })
        );
    }
}
