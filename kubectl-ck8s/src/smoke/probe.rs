//! HTTP probes through a port-forward, behind a seam.
//!
//! [`Prober`] opens one byte stream to a pod's port and sends every probe for that pod over
//! it, one after another, as HTTP/1.1 keep-alive requests (hyper's client connection).
//! Production uses kube's port-forward ([`PortForward`]): one port-forward per pod, not one
//! per probe. Tests use a local TCP listener ([`Direct`]).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

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
    /// Sends `reqs` in order over one connection to `target`; one result per request.
    fn probe_all(
        &self,
        target: &Target,
        reqs: &[ProbeRequest],
    ) -> impl Future<Output = Vec<ProbeResult>> + Send;
}

/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn all_failed(n: usize, why: String) -> Vec<ProbeResult> {
    vec![Err(why); n]
}

/// Port-forward through the API server (`kubectl port-forward`): one per pod.
pub struct PortForward {
    pub pods: Api<Pod>,
}

impl Prober for PortForward {
    async fn probe_all(&self, target: &Target, reqs: &[ProbeRequest]) -> Vec<ProbeResult> {
        // One port-forward for all the probes, and another whenever the app closes the
        // connection between two of them (`Connection: close`).
        let mut out = Vec::with_capacity(reqs.len());
        while out.len() < reqs.len() {
            let rest = &reqs[out.len()..];
            let open = async {
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
                Ok::<_, String>((pf, stream))
            };
            match tokio::time::timeout(PROBE_TIMEOUT, open).await {
                Err(_) => out.extend(all_failed(rest.len(), "port-forward timed out".into())),
                Ok(Err(e)) => out.extend(all_failed(rest.len(), e)),
                Ok(Ok((pf, stream))) => {
                    let results = exchange_all(stream, rest).await;
                    pf.abort();
                    out.extend(results);
                }
            }
        }
        out
    }
}

/// Straight to one TCP address, ignoring the target pod (tests, and `--probe-direct`).
pub struct Direct {
    pub addr: String,
}

impl Prober for Direct {
    async fn probe_all(&self, _target: &Target, reqs: &[ProbeRequest]) -> Vec<ProbeResult> {
        // A new connection whenever the app closes one between two probes.
        let mut out = Vec::with_capacity(reqs.len());
        while out.len() < reqs.len() {
            let rest = &reqs[out.len()..];
            let connect = tokio::net::TcpStream::connect(&self.addr);
            out.extend(match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
                Err(_) => all_failed(rest.len(), format!("connect {}: timed out", self.addr)),
                Ok(Err(e)) => all_failed(rest.len(), format!("connect {}: {e}", self.addr)),
                Ok(Ok(stream)) => exchange_all(stream, rest).await,
            });
        }
        out
    }
}

/// The requests, in order, over one HTTP/1.1 connection on `stream`. Stops early (fewer
/// results than requests, never none) when the server closes the connection after an answer;
/// the caller sends the rest on a new one.
pub async fn exchange_all<S>(stream: S, reqs: &[ProbeRequest]) -> Vec<ProbeResult>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    );
    let (mut sender, conn) = match tokio::time::timeout(PROBE_TIMEOUT, handshake).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return all_failed(reqs.len(), e.to_string()),
        Err(_) => return all_failed(reqs.len(), "timed out".into()),
    };
    let driver = tokio::spawn(conn);
    let mut out = Vec::with_capacity(reqs.len());
    for req in reqs {
        if !out.is_empty() && sender.ready().await.is_err() {
            break;
        }
        let one = async {
            sender.ready().await.map_err(|e| e.to_string())?;
            let mut builder = hyper::Request::builder()
                .method(req.method)
                .uri(req.path.as_str())
                .header("Host", "localhost")
                .header("User-Agent", "kubectl-ck8s");
            for (k, v) in &req.headers {
                builder = builder.header(*k, v.as_str());
            }
            let request = builder
                .body(Full::new(Bytes::from(req.body.clone())))
                .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            // Read the body to its end so the connection can carry the next request.
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok(ProbeResponse { status, location })
        };
        out.push(
            tokio::time::timeout(PROBE_TIMEOUT, one)
                .await
                .unwrap_or_else(|_| Err("timed out".into())),
        );
    }
    drop(sender);
    driver.abort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A keep-alive HTTP server answering each request line with its status, counting the
    /// connections it accepted.
    async fn server(
        answers: &'static [(&'static str, &'static str)],
    ) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut lines = BufReader::new(r).lines();
                    let mut path = String::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if path.is_empty() {
                            path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        } else if line.is_empty() {
                            let head = answers
                                .iter()
                                .find(|(p, _)| *p == path)
                                .map(|(_, h)| *h)
                                .unwrap_or("404 Not Found");
                            let resp = format!("HTTP/1.1 {head}\r\nContent-Length: 2\r\n\r\nok");
                            w.write_all(resp.as_bytes()).await.unwrap();
                            path.clear();
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get(path: &str) -> ProbeRequest {
        ProbeRequest {
            method: "GET",
            path: path.into(),
            headers: vec![],
            body: String::new(),
        }
    }

    #[tokio::test]
    async fn every_probe_of_a_pod_shares_one_connection() {
        let (addr, accepted) = server(&[
            ("/healthz", "200 OK"),
            ("/readyz", "503 Service Unavailable"),
            ("/login", "302 Found\r\nLocation: /oauth2/start"),
        ])
        .await;
        let target = Target {
            pod: "p".into(),
            port: 8080,
        };
        let r = Direct { addr }
            .probe_all(&target, &[get("/healthz"), get("/readyz"), get("/login")])
            .await;
        assert_eq!(
            r,
            vec![
                Ok(ProbeResponse {
                    status: 200,
                    location: None
                }),
                Ok(ProbeResponse {
                    status: 503,
                    location: None
                }),
                Ok(ProbeResponse {
                    status: 302,
                    location: Some("/oauth2/start".into())
                }),
            ]
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_fails_every_probe() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = Direct {
            addr: format!("127.0.0.1:{port}"),
        }
        .probe_all(
            &Target {
                pod: "p".into(),
                port: 1,
            },
            &[get("/a"), get("/b")],
        )
        .await;
        assert_eq!(r.len(), 2);
        assert!(
            r.iter()
                .all(|x| x.as_ref().is_err_and(|e| e.contains("connect"))),
            "{r:?}"
        );
    }
}
