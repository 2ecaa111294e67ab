//! Failures a script must be able to trust: no cluster, a broken kubeconfig, bad usage all
//! exit 2 with an `error:` line, and nothing panics.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-ck8s");

fn run(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("KUBECONFIG")
        // Not in a pod, even when the tests run in one (see the in-cluster test below).
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", "/nonexistent-home");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains(needle),
        "expected {needle:?} in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn no_kubeconfig_at_all_is_exit_2() {
    for args in [
        &["smoke"][..],
        &["runs"],
        &["labels"],
        &["gc", "status"],
        &["diagnose", "build"],
    ] {
        let out = run(&[], args);
        assert_clean_error(&out, "kubeconfig");
    }
}

#[test]
fn a_malformed_kubeconfig_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, "apiVersion: v1\nclusters: [this is: not valid\n").unwrap();
    let out = run(&[("KUBECONFIG", path.to_str().unwrap())], &["smoke"]);
    assert_clean_error(&out, "kubeconfig");
}

#[test]
fn an_unknown_context_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:9'}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\nusers:\n- name: u\n  user: {}\n",
    )
    .unwrap();
    let out = run(
        &[("KUBECONFIG", path.to_str().unwrap())],
        &["--context", "nope", "runs"],
    );
    assert_clean_error(&out, "nope");
}

#[test]
fn usage_errors_are_exit_2() {
    for args in [
        &["no-such-command"][..],
        &["mitigate"],
        &["mitigate", "build-ref"],
        &["ports"],
        &["smoke", "-o", "xml"],
    ] {
        let out = run(&[], args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// In a pod (`KUBERNETES_SERVICE_HOST` set) without a kubeconfig, the plugin uses its
/// ServiceAccount, as kubectl does (the audit CronJob); with none mounted it says so. An
/// explicit --kubeconfig or --context is never replaced by it.
#[test]
fn in_a_pod_without_a_kubeconfig_the_service_account_is_used() {
    let in_pod = [
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
        ("KUBERNETES_SERVICE_PORT", "9"),
    ];
    if std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists() {
        panic!("this test needs a machine without a mounted ServiceAccount token");
    }
    let out = run(&in_pod, &["policy", "audit"]);
    assert_clean_error(&out, "service account");
    for args in [
        &["--kubeconfig", "/nonexistent/config", "runs"][..],
        &["--context", "prod", "runs"],
    ] {
        let out = run(&in_pod, args);
        assert_clean_error(&out, "kubeconfig");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("service account"),
            "{args:?}"
        );
    }
}

/// An API server that does not answer: ck8s's own `error:`/`help:` pair only, no dependency's
/// log line and no colour escape into a pipe; `-v` brings the dependencies' logs back.
#[test]
fn an_unreachable_cluster_prints_only_ck8ss_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let out = run(
        &[("KUBECONFIG", config)],
        &["smoke", "--request-timeout", "2s"],
    );
    assert_clean_error(&out, "cannot reach the api server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("kube_client"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI escapes into a pipe: {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "error and help only: {stderr}");

    let verbose = run(
        &[("KUBECONFIG", config)],
        &["smoke", "--request-timeout", "2s", "-v"],
    );
    let stderr = String::from_utf8_lossy(&verbose.stderr);
    assert_eq!(verbose.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("kube_client"),
        "-v shows the dependencies' logs: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
