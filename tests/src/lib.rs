//! Test support shared across ck8s:
//! - [`cluster`]: a real control plane (etcd, kube-apiserver, kube-controller-manager,
//!   kube-scheduler, kwok nodes) on loopback, for everything that is about cluster behaviour;
//! - [`apiserver`]: the in-process stand-in API server, kept for fast tests and for faults a
//!   real server cannot be made to produce; it stores and serves fixture objects over the REST
//!   paths and reconciles nothing;
//! - [`cluster_webhook`]: ck8s-admission as a process, registered with the real control plane;
//! - [`webhook`]: ck8s-admission started in-process over real TLS;
//! - [`report`]: reading the plugin's `-o json` reports;
//! - [`repo`] and [`eventually`]: the repository's root, and polling for a condition.

pub mod apiserver;
pub mod cluster;
pub mod cluster_webhook;
pub mod report;
pub mod webhook;

pub use apiserver::TestApiServer;

/// Set by `cargo xtask test`: its `cargo test --workspace --no-run` built every binary of the
/// workspace beside the test binaries.
pub const BINARIES_BUILT_ENV: &str = "CK8S_BINARIES_BUILT";

/// A binary of the workspace (`ck8s-admission`, `kubectl-ck8s`), built fresh in the target
/// directory this test runs from, by the workspace's test build (a no-op after `cargo test
/// --workspace`); under `cargo xtask test` ([`BINARIES_BUILT_ENV`]) taken as built.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    use std::sync::Mutex;
    static BUILT: Mutex<()> = Mutex::new(());
    let _g = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    // <target>/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binaries live in <target>/<profile>/deps");
    let path = profile_dir.join(name);
    if std::env::var_os(BINARIES_BUILT_ENV).is_some() {
        assert!(
            path.is_file(),
            "{BINARIES_BUILT_ENV} is set but {} was not built",
            path.display()
        );
        return path;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let package = match name {
        "ck8s-admission" => "ck8s-admission",
        "kubectl-ck8s" => "kubectl-ck8s",
        other => panic!("{other} is not a workspace binary"),
    };
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        cmd.args([
            "build",
            "--quiet",
            "--release",
            "-p",
            package,
            "--bin",
            name,
        ]);
    } else {
        // The suite's own build: the same feature unification as `cargo test --workspace`,
        // so a no-op after it (a `cargo build -p` of one package would compile wasmtime,
        // kube and the rest again with other features).
        cmd.args(["test", "--quiet", "--workspace", "--no-run"]);
    }
    if let Some(target) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target);
    }
    let status = cmd.status().expect("run cargo");
    assert!(status.success(), "building {package} failed");
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// The production runbook's smoke, as an SRE pastes it: one kubectl process per line, in the
/// production namespace `codex-k8s-prod`. The smoke benchmarks run it beside `kubectl ck8s smoke`.
pub const RUNBOOK_SMOKE: &[&str] = &[
    "-n codex-k8s-prod get pods -o wide",
    "-n codex-k8s-prod get deploy,job,ingress",
    "-n codex-k8s-prod logs deploy/codex-k8s --tail=200",
    "-n codex-k8s-prod logs deploy/codex-k8s-worker --tail=200",
    "-n codex-k8s-prod logs deploy/codex-k8s-control-plane --tail=200",
    "-n codex-k8s-prod rollout status deploy/codex-k8s-control-plane --timeout=180s",
    "-n codex-k8s-prod rollout status deploy/codex-k8s --timeout=180s",
    "-n codex-k8s-prod rollout status deploy/codex-k8s-worker --timeout=180s",
    "-n codex-k8s-prod rollout status deploy/oauth2-proxy --timeout=180s",
    "-n codex-k8s-prod get jobs --sort-by=.metadata.creationTimestamp",
    "-n codex-k8s-prod get secret codex-k8s-production-tls",
    "-n codex-k8s-system get secrets",
    "-n codex-k8s-prod get ingress",
    "-n codex-k8s-prod describe ingress codex-k8s",
    "-n codex-k8s-prod get deploy codex-k8s-web-console -o wide",
    "-n codex-k8s-prod get cronjob codex-k8s-registry-gc",
    "-n codex-k8s-prod get jobs -l app.kubernetes.io/name=codex-k8s-registry-gc",
    "-n codex-k8s-prod get configmap codex-k8s-runtime -o yaml",
    "-n codex-k8s-prod get deploy oauth2-proxy -o jsonpath={.spec.template.spec.containers[*].args}",
];

/// The repository's root (the workspace's directory).
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ck8s-tests lives in the workspace")
        .to_path_buf()
}

/// The limit of [`eventually`] and [`eventually_blocking`].
const EVENTUALLY: std::time::Duration = std::time::Duration::from_secs(20);

/// [`eventually`] for a test without an async runtime: polls `check` every 50 ms.
pub fn eventually_blocking(what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed() < EVENTUALLY,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after 20 s.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < EVENTUALLY,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
