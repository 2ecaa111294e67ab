//! Benchmark (issue 4, Performance): `kubectl ck8s smoke` against the test API server, side by
//! side with the runbook's own sequence of kubectl commands against the same server.
//!
//! cargo test -p kubectl-ck8s --test bench_smoke -- --ignored --nocapture
//!
//! Port-forward + curl probes are left out of the kubectl sequence (the test server speaks no
//! SPDY/websocket port-forward); the plugin's probes go to a local listener and are included.

use ck8s_tests::TestApiServer;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-ck8s");
const ROUNDS: usize = 5;

/// The production runbook's smoke, as an SRE pastes it (one kubectl process per line).
const RUNBOOK: &[&str] = ck8s_tests::RUNBOOK_SMOKE;

fn app() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let webhook = String::from_utf8_lossy(&buf[..n]).contains("/webhooks/");
            let _ = s.write_all(if webhook {
                b"HTTP/1.1 401 Unauthorized\r\n\r\n" as &[u8]
            } else {
                b"HTTP/1.1 200 OK\r\n\r\n"
            });
        }
    });
    addr
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn smoke_vs_runbook_kubectl_sequence() {
    let server = TestApiServer::start("healthy");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path());
    let addr = app();
    let kubectl = |args: &str| {
        let out = Command::new("/usr/bin/kubectl")
            .args(args.split(' '))
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let smoke = || {
        let out = Command::new(BIN)
            .args([
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--domain",
                "platform.codex-k8s.dev",
                "smoke",
            ])
            .env("CK8S_PROBE_DIRECT", &addr)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    // Warm up both (kubectl's discovery cache, the page cache).
    RUNBOOK.iter().for_each(|c| kubectl(c));
    smoke();
    let (mut ck8s, mut runbook) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        smoke();
        ck8s.push(t.elapsed());
        let t = Instant::now();
        RUNBOOK.iter().for_each(|c| kubectl(c));
        runbook.push(t.elapsed());
    }
    let (c, r) = (median(ck8s), median(runbook));
    println!(
        "kubectl ck8s smoke:            median {:>7.1} ms over {ROUNDS} rounds",
        c.as_secs_f64() * 1e3
    );
    println!(
        "runbook kubectl sequence ({} commands): median {:>7.1} ms over {ROUNDS} rounds",
        RUNBOOK.len(),
        r.as_secs_f64() * 1e3
    );
    println!(
        "ratio: smoke takes {:.3} of the runbook's time ({:.1}x faster)",
        c.as_secs_f64() / r.as_secs_f64(),
        r.as_secs_f64() / c.as_secs_f64()
    );
    assert!(
        c * 5 <= r,
        "smoke must take at most 1/5 of the runbook sequence: {c:?} vs {r:?}"
    );
}
