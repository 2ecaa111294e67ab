//! The workload that trains the release's profile (admission/pgo/train.py) still runs clean
//! against the server as admission/pgo/regenerate.sh starts it: every review answered 200 with
//! its uid, in both phases. A workload that broke would train the error paths instead, and
//! only show as a slower release; here it fails the suite.

use ck8s_tests::cluster::free_port;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ck8s-admission");

/// `/readyz` on the metrics port answers 200.
fn ready(metrics: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", metrics)) else {
        return false;
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

#[test]
fn the_training_workload_is_answered_in_full() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for source in [
        "deploy/components/vap-policies/policies",
        "policies/cel/testdata/policies",
    ] {
        for entry in std::fs::read_dir(root.join(source)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                std::fs::copy(&path, policies.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let (https, metrics) = (free_port().unwrap(), free_port().unwrap());
    let mut server = Command::new(BIN)
        .current_dir(root)
        .args([
            &format!("--listen=127.0.0.1:{https}"),
            &format!("--metrics-listen=127.0.0.1:{metrics}"),
            "--config=deploy/base/policies.yaml",
            &format!("--policies={}", policies.display()),
            &format!("--cache-dir={}", dir.path().join("cache").display()),
            "--log-format=json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ready(metrics) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // One second of each phase (regenerate.sh runs 20).
    let out = Command::new("python3")
        .current_dir(root)
        .args([
            "admission/pgo/train.py",
            &https.to_string(),
            &metrics.to_string(),
            "1",
            "1",
        ])
        .output()
        .expect("python3 runs the training workload");
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "train.py failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "trained on N paced and M concurrent reviews (K distinct)", N and M above 0.
    let counts: Vec<u64> = stdout
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        counts.len() == 2 && counts.iter().all(|&n| n > 0) && stdout.contains("distinct"),
        "{stdout}"
    );
}
