//! The real `ck8s-admission` binary under a burst of large reviews (issue 15): dozens of
//! concurrent ~6 MiB UPDATE reviews, sent at full speed or held open just before their last
//! bytes, keep the process's peak RSS (`VmHWM` from `/proc`) under the Deployment's memory
//! limit; every review is answered right or "overloaded" with its own uid; SIGTERM while
//! reviews are in flight still answers them and exits 0.
//!
//! 200 idle keep-alive connections stay open all along, as a busy API server's pool would.
//! Loopback only; every request loop is bounded in count and in time.

use ck8s_tests::cluster::free_port;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

/// The binary under test; `CK8S_ADMISSION_BIN` measures another build (e.g. the release one).
fn bin() -> String {
    std::env::var("CK8S_ADMISSION_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ck8s-admission").to_string())
}

/// `resources.limits.memory` of deploy/base/deployment.yaml.
const DEPLOYMENT_MEMORY_LIMIT_MIB: u64 = 128;

/// Each of object and oldObject: what the API server allows for one object.
const OBJECT_BYTES: usize = 3 << 20;

struct Server {
    child: Child,
    https: u16,
    metrics: u16,
    tls: TlsConnector,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The binary with its default limits, a fresh certificate, a loopback-only listener.
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert.cert.pem()).unwrap();
        std::fs::write(dir.path().join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
        let (https, metrics) = (free_port().unwrap(), free_port().unwrap());
        let child = Command::new(bin())
            .arg(format!("--listen=127.0.0.1:{https}"))
            .arg(format!("--metrics-listen=127.0.0.1:{metrics}"))
            .arg(format!(
                "--tls-cert={}",
                dir.path().join("tls.crt").display()
            ))
            .arg(format!(
                "--tls-key={}",
                dir.path().join("tls.key").display()
            ))
            .arg(format!(
                "--cache-dir={}",
                dir.path().join("cache").display()
            ))
            .arg("--log-format=json")
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server = Server {
            child,
            https,
            metrics,
            tls: TlsConnector::from(Arc::new(config)),
            _dir: dir,
        };
        let start = Instant::now();
        while !server.ready() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "never became ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn get(&self, path: &str) -> String {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.metrics)) else {
            return String::new();
        };
        use std::io::Write;
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp
    }

    fn ready(&self) -> bool {
        self.get("/readyz").starts_with("HTTP/1.1 200")
    }

    /// (VmHWM, VmRSS) of the server process, in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    fn sample(&self, series: &str) -> u64 {
        self.get("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An UPDATE review of a ConfigMap whose object and oldObject are [`OBJECT_BYTES`] each,
/// as (the part before the uid, the part after it); `build_ref` decides the verdict. The old
/// object had a valid ref, so a bad one is a new violation (ratcheting keeps only old ones).
fn big_review(build_ref: &str) -> (Vec<u8>, Vec<u8>) {
    let filler = "a".repeat(OBJECT_BYTES - 300);
    let config_map = |build_ref: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big","namespace":"codex-k8s-prod"}},"data":{{"CODEXK8S_BUILD_REF":"{build_ref}","blob":"{filler}"}}}}"#
        )
    };
    let (object, old) = (config_map(build_ref), config_map("main"));
    let head =
        br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":""#
            .to_vec();
    let tail = format!(
        r#"","kind":{{"group":"","version":"v1","kind":"ConfigMap"}},"resource":{{"group":"","version":"v1","resource":"configmaps"}},"namespace":"codex-k8s-prod","name":"big","operation":"UPDATE","userInfo":{{"username":"sre@codex-k8s.dev"}},"object":{object},"oldObject":{old},"dryRun":false}}}}"#
    );
    (head, tail.into_bytes())
}

#[derive(Debug, PartialEq)]
enum Answer {
    /// 200 with this uid and `allowed`.
    Judged(bool),
    /// 200 with this uid, a 429 status and "overloaded" (or a plain 429).
    Overloaded,
    /// 408: the body came too slowly.
    TooSlow,
    Other(String),
}

/// Sends one review over a fresh TLS connection; with `hold`, all but the last bytes, then
/// a pause of `hold`, then the rest.
async fn send(
    server_port: u16,
    tls: TlsConnector,
    review: Arc<(Vec<u8>, Vec<u8>)>,
    uid: String,
    hold: Option<Duration>,
) -> Answer {
    let run = async {
        let tcp = TcpStream::connect(("127.0.0.1", server_port)).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut s = tls.connect(name, tcp).await?;
        let (head, tail) = (&review.0, &review.1);
        let len = head.len() + uid.len() + tail.len();
        s.write_all(
            format!(
                "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        s.write_all(head).await?;
        s.write_all(uid.as_bytes()).await?;
        let cut = tail.len() - 64;
        // A refused body ends the connection early: the answer is read below anyway.
        let mut written = s.write_all(&tail[..cut]).await;
        if written.is_ok() {
            if let Some(pause) = hold {
                s.flush().await?;
                tokio::time::sleep(pause).await;
            }
            written = s.write_all(&tail[cut..]).await;
        }
        let _ = written;
        let _ = s.flush().await;
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp).await;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&resp).into_owned())
    };
    let resp = match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Answer::Other(format!("transport: {e}")),
        Err(_) => return Answer::Other("no answer in 60 s".into()),
    };
    let status = resp.get(9..12).unwrap_or("").to_string();
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    match status.as_str() {
        "200" => {
            let v: serde_json::Value = match serde_json::from_str(body) {
                Ok(v) => v,
                Err(_) => return Answer::Other(format!("200 without a review: {resp:.300}")),
            };
            let r = &v["response"];
            if r["uid"] != uid.as_str() {
                return Answer::Other(format!("wrong uid: {resp:.300}"));
            }
            if r["status"]["code"] == 429 {
                assert!(
                    r["status"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("overloaded")
                );
                return Answer::Overloaded;
            }
            Answer::Judged(r["allowed"].as_bool().unwrap())
        }
        "429" => Answer::Overloaded,
        "408" => Answer::TooSlow,
        _ => Answer::Other(format!("unexpected answer: {resp:.300}")),
    }
}

/// Sends `n` reviews at once, alternately allowed and denied by build-ref; returns how
/// many were judged right, overloaded, too slow. Any other answer fails the test.
async fn burst(
    server: &Server,
    n: usize,
    hold: Option<Duration>,
    wave: &str,
) -> (usize, usize, usize) {
    let good = Arc::new(big_review("main"));
    let bad = Arc::new(big_review("-b feature/x"));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let review = if i % 2 == 0 {
                good.clone()
            } else {
                bad.clone()
            };
            let uid = format!("{wave}-{i}");
            tokio::spawn(send(server.https, server.tls.clone(), review, uid, hold))
        })
        .collect();
    let (mut right, mut overloaded, mut slow) = (0, 0, 0);
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Answer::Judged(allowed) => {
                assert_eq!(allowed, i % 2 == 0, "{wave}-{i}: wrong decision");
                right += 1;
            }
            Answer::Overloaded => overloaded += 1,
            Answer::TooSlow => slow += 1,
            Answer::Other(e) => panic!("{wave}-{i}: {e}"),
        }
    }
    (right, overloaded, slow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_large_reviews_stays_within_the_memory_limit() {
    // Other budgets or limits to measure with: CK8S_BURST_ARGS="--max-inflight-bytes=48000000"
    let extra = std::env::var("CK8S_BURST_ARGS").unwrap_or_default();
    let mut server = Server::start(&extra.split_whitespace().collect::<Vec<_>>());
    const N: usize = 40;
    const IDLE: usize = 200;

    // Keep-alive connections left idle after one small review each, open all along.
    let (_, rss_before) = server.memory_kib();
    let mut idle = Vec::new();
    for i in 0..IDLE {
        let tcp = TcpStream::connect(("127.0.0.1", server.https))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut s = server.tls.connect(name, tcp).await.unwrap();
        let body = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"idle-{i}","kind":{{"group":"","version":"v1","kind":"ConfigMap"}},"resource":{{"group":"","version":"v1","resource":"configmaps"}},"operation":"CREATE","userInfo":{{"username":"u"}},"object":{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c"}},"data":{{"CODEXK8S_BUILD_REF":"main"}}}}}}}}"#
        );
        s.write_all(
            format!(
                "POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(&format!("idle-{i}")) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "idle-{i}: closed before its answer");
            got.extend_from_slice(&buf[..n]);
        }
        idle.push(s);
    }
    let (_, rss_idle) = server.memory_kib();
    assert_eq!(
        server.sample("ck8s_admission_open_connections"),
        IDLE as u64
    );
    // One handshake per connection, counted by kind (rustls' client resumes after the first).
    let handshakes = |kind: &str| {
        server.sample(&format!(
            "ck8s_admission_tls_handshakes_total{{kind=\"{kind}\"}}"
        ))
    };
    assert!(handshakes("full") >= 1);
    assert_eq!(handshakes("full") + handshakes("resumed"), IDLE as u64);

    // Sent at full speed.
    let fast = burst(&server, N, None, "fast").await;
    let (peak_fast, _) = server.memory_kib();
    // Held open before the last bytes, longer than the queue timeout.
    let held = burst(&server, N, Some(Duration::from_millis(1500)), "held").await;
    let (peak, rss) = server.memory_kib();
    let budget_waits = server.sample("ck8s_admission_body_budget_waits_total");
    println!(
        "{IDLE} idle connections: VmRSS {:.1} -> {:.1} MiB ({:.0} KiB each)",
        rss_before as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        rss_idle.saturating_sub(rss_before) as f64 / IDLE as f64
    );
    println!(
        "{N} x {:.1} MiB reviews: fast {fast:?}, held {held:?} (right, overloaded, too slow); \
         VmHWM {:.1} MiB after the fast wave, {:.1} MiB after both, VmRSS now {:.1} MiB; {budget_waits} budget waits",
        2.0 * OBJECT_BYTES as f64 / (1 << 20) as f64,
        peak_fast as f64 / 1024.0,
        peak as f64 / 1024.0,
        rss as f64 / 1024.0,
    );
    assert!(
        peak < DEPLOYMENT_MEMORY_LIMIT_MIB << 10,
        "peak RSS {:.1} MiB over the Deployment's {DEPLOYMENT_MEMORY_LIMIT_MIB} MiB",
        peak as f64 / 1024.0
    );
    // Some reviews of each wave were judged, and the budget made others wait.
    assert!(fast.0 > 0 && held.0 > 0, "fast {fast:?}, held {held:?}");
    assert!(budget_waits > 0);
    assert_eq!(fast.0 + fast.1 + fast.2, N);
    drop(idle);

    // SIGTERM while held reviews are in flight: those being read are still answered.
    let good = Arc::new(big_review("main"));
    let in_flight: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(send(
                server.https,
                server.tls.clone(),
                good.clone(),
                format!("drain-{i}"),
                Some(Duration::from_millis(1500)),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for t in in_flight {
        assert_eq!(
            t.await.unwrap(),
            Answer::Judged(true),
            "answered while draining"
        );
    }
    let start = Instant::now();
    let code = loop {
        if let Some(code) = server.child.try_wait().unwrap() {
            break code;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(code.success(), "{code:?}");
}
