//! Benchmark (issue 4, Performance): `kubectl ck8s smoke` against the in-process stand-in API
//! server, side by side with the runbook's own sequence of kubectl commands against the same
//! server. Exits non-zero when smoke takes more than 1/5 of the sequence's time.
//!
//! ```sh
//! cargo run -q -p ck8s-tests --example smoke_bench
//! ```
//! `CK8S_PLUGIN_BIN` runs another build of the plugin (default: the workspace's `kubectl-ck8s`
//! of the example's profile); `CK8S_BENCH_KUBECTL` another kubectl (default /usr/bin/kubectl).
//!
//! Port-forward + curl probes are left out of the kubectl sequence (the test server speaks no
//! SPDY/websocket port-forward); the plugin's probes go to a local listener and are included.

use ck8s_tests::TestApiServer;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

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

fn main() {
    let plugin = std::env::var_os("CK8S_PLUGIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| ck8s_tests::workspace_binary("kubectl-ck8s"));
    let kubectl_bin = std::env::var_os("CK8S_BENCH_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/kubectl"));
    let server = TestApiServer::start("healthy");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path());
    let addr = app();
    let kubectl = |args: &str| {
        let out = Command::new(&kubectl_bin)
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
        let out = Command::new(&plugin)
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
    if c * 5 > r {
        eprintln!("smoke must take at most 1/5 of the runbook sequence: {c:?} vs {r:?}");
        std::process::exit(1);
    }
}
