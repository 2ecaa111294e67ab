//! The real `ck8s-admission` binary: flags, start-up errors, SIGTERM.

use ck8s_tests::cluster::free_port;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ck8s-admission");

#[test]
fn help_and_usage_errors() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--tls-cert",
        "--tls-key",
        "--policies",
        "--config",
        "--metrics-listen",
        "--client-ca",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let out = Command::new(BIN).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn start_up_errors_exit_non_zero_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--listen=127.0.0.1:0", "--metrics-listen=127.0.0.1:0"])
        .arg(format!(
            "--tls-cert={}",
            dir.path().join("missing.crt").display()
        ))
        .arg(format!(
            "--tls-key={}",
            dir.path().join("missing.key").display()
        ))
        .env("CK8S_CACHE_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.crt"));
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_port().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--listen=127.0.0.1:0",
            &format!("--metrics-listen=127.0.0.1:{metrics}"),
            "--log-format=json",
        ])
        .env("CK8S_CACHE_DIR", dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", metrics)) {
            use std::io::Write;
            s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp);
            if resp.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "{code:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        logs.contains("\"message\":\"shutdown signal received\""),
        "{logs}"
    );
    assert!(logs.contains("development mode"), "{logs}");
}
