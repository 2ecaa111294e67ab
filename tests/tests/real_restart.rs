//! The plugin's waits (`mitigate`'s rollout, `gc run --wait`) across a real kube-apiserver
//! restart (tests/src/cluster.rs, `restart_apiserver`): the watch resumes and the flow
//! succeeds; an outage past `--timeout` is a failed check (exit 1) naming the interrupted
//! watch, never a success.
//!
//! A binary of its own: restarting the API server would break the tests of any other binary
//! sharing its control plane. The tests here restart it one at a time.

use ck8s_tests::cluster::ControlPlane;
use ck8s_tests::report::{check, json};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

const CONTROL_PLANE: &str = "deploy/codex-k8s-control-plane";

fn fixture(cp: &ControlPlane, name: &str) -> String {
    let ns = cp.namespace(&format!("restart-{name}")).unwrap();
    cp.fixture_in(name, &ns);
    ns
}

/// Starts `kubectl ck8s` as admin in the background.
fn spawn_ck8s(cp: &ControlPlane, ns: &str, args: &[&str]) -> Child {
    Command::new(ck8s_tests::workspace_binary("kubectl-ck8s"))
        .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
        .args(["-n", ns, "--request-timeout", "10s"])
        .args(args)
        .env_remove("CODEXK8S_PRODUCTION_NAMESPACE")
        .env_remove("CODEXK8S_PRODUCTION_DOMAIN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl-ck8s")
}

/// Polls the kubectl query until it prints something non-empty.
fn wait_for(cp: &ControlPlane, what: &str, args: &[&str]) -> String {
    let mut got = String::new();
    cp.wait_until(Duration::from_secs(60), what, || {
        got = cp.kubectl_output(args)?;
        Ok(!got.trim().is_empty())
    })
    .unwrap();
    got
}

/// The flow is still waiting (it did not give up on the outage).
fn still_running(child: &mut Child, what: &str) {
    if let Some(status) = child.try_wait().unwrap() {
        let out = std::mem::replace(child, Command::new("true").spawn().unwrap());
        let out = out.wait_with_output().unwrap();
        panic!(
            "{what} ended ({status}) during the outage: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Starts `mitigate kaniko-cache` on a paused control-plane Deployment (a rollout that
/// cannot finish yet) and returns once the flow has restarted it: it is waiting now.
fn mitigate_waiting(cp: &ControlPlane, ns: &str, timeout: &str) -> Child {
    cp.kubectl_output(&["-n", ns, "rollout", "pause", CONTROL_PLANE])
        .unwrap();
    let child = spawn_ck8s(
        cp,
        ns,
        &[
            "mitigate",
            "kaniko-cache",
            "--timeout",
            timeout,
            "-o",
            "json",
        ],
    );
    wait_for(
        cp,
        "mitigate's restart of the control plane",
        &[
            "-n",
            ns,
            "get",
            CONTROL_PLANE,
            "-o",
            "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
        ],
    );
    child
}

#[test]
fn mitigate_resumes_its_rollout_watch_across_an_api_server_restart() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "kaniko-cache-on");
    let before = jiff::Timestamp::now();
    let mut child = mitigate_waiting(cp, &ns, "300s");
    // Give the flow a moment to be inside its watch, then take the API server away.
    std::thread::sleep(Duration::from_secs(1));
    still_running(&mut child, "mitigate");
    cp.restart_apiserver(Duration::from_secs(3)).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    still_running(&mut child, "mitigate");
    // Only now can the rollout proceed: what the flow reports comes from its resumed watch.
    cp.kubectl_output(&["-n", &ns, "rollout", "resume", CONTROL_PLANE])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = json(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in [
        "mitigate.patch",
        "mitigate.restart",
        "mitigate.rollout",
        "mitigate.verify",
    ] {
        assert_eq!(check(&report, id)["status"], "pass", "{id}: {report:#}");
    }
    // The verification holds on the server: every running pod started after the patch.
    let running = cp
        .running_pods(&ns, "app.kubernetes.io/name=codex-k8s-control-plane")
        .unwrap();
    assert!(!running.is_empty());
    for (name, created) in running {
        assert!(
            created >= before - jiff::SignedDuration::from_secs(1),
            "pod {name} predates the patch"
        );
    }
}

#[test]
fn mitigate_with_the_api_server_down_past_its_timeout_exits_1_naming_the_outage() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "kaniko-cache-on");
    let child = mitigate_waiting(cp, &ns, "15s");
    let started = Instant::now();
    // Down for longer than what is left of the 15 s; the flow must give up meanwhile.
    let outage = std::thread::spawn(|| {
        ControlPlane::shared()
            .restart_apiserver(Duration::from_secs(25))
            .unwrap()
    });
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    outage.join().unwrap();
    let report = json(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a rollout not seen to finish is a failed check: {report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(25),
        "bounded by --timeout: {took:?}"
    );
    let rollout = check(&report, "mitigate.rollout");
    assert_eq!(rollout["status"], "fail", "{report:#}");
    let detail = rollout["detail"].as_str().unwrap();
    assert!(
        detail.contains("not rolled out within --timeout 15s")
            && detail.contains("the watch of deployments.apps was interrupted")
            && detail.contains("onnection refused"),
        "says the API server could not be reached: {detail}"
    );
    assert_eq!(
        check(&report, "mitigate.verify")["status"],
        "fail",
        "{report:#}"
    );
    // The server is back: the rollout is left paused for the SRE, as the flow found it.
    cp.kubectl_output(&["-n", &ns, "rollout", "resume", CONTROL_PLANE])
        .unwrap();
}

/// Starts `gc run --wait` on a fixture whose CronJob makes suspended Jobs (a Job that cannot
/// finish until the test lets it) and returns once the Job exists: the flow is waiting now.
fn gc_waiting(cp: &ControlPlane, ns: &str, timeout: &str) -> (Child, String) {
    cp.kubectl_output(&[
        "-n",
        ns,
        "patch",
        "cronjob/codex-k8s-registry-gc",
        "--type=merge",
        "-p",
        r#"{"spec":{"jobTemplate":{"spec":{"suspend":true}}}}"#,
    ])
    .unwrap();
    let line = |t: &str| (format!("{:.9}", jiff::Timestamp::now()), t.to_string());
    cp.serve_logs(
        &format!("{ns}-gc"),
        ns,
        &[],
        "gc",
        &[line(
            "4 blobs marked, 1 blobs and 0 manifests eligible for deletion",
        )],
        None,
    )
    .unwrap();
    cp.serve_logs(
        &format!("{ns}-gc-scale-down"),
        ns,
        &[],
        "scale-down",
        &[line("deployment.apps/codex-k8s-registry scaled")],
        None,
    )
    .unwrap();
    let child = spawn_ck8s(
        cp,
        ns,
        &["gc", "run", "--wait", "--timeout", timeout, "-o", "json"],
    );
    let mut job = String::new();
    cp.wait_until(Duration::from_secs(60), "the manual GC Job", || {
        let jobs = cp.kubectl_output(&[
            "-n",
            ns,
            "get",
            "jobs",
            "-l",
            "app.kubernetes.io/name=codex-k8s-registry-gc",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
        ])?;
        // (the fixture's own scheduled Job is there from the start)
        if let Some(j) = jobs
            .lines()
            .find(|j| j.starts_with("codex-k8s-registry-gc-manual-"))
        {
            job = j.to_string();
        }
        Ok(!job.is_empty())
    })
    .unwrap();
    (child, job)
}

#[test]
fn gc_run_wait_resumes_its_job_watch_across_an_api_server_restart() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "healthy");
    let (mut child, job) = gc_waiting(cp, &ns, "300s");
    std::thread::sleep(Duration::from_secs(1));
    still_running(&mut child, "gc run --wait");
    cp.restart_apiserver(Duration::from_secs(3)).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    still_running(&mut child, "gc run --wait");
    cp.kubectl_output(&[
        "-n",
        &ns,
        "patch",
        "job",
        &job,
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ])
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = json(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        check(&report, "gc.run")["detail"],
        format!("{job} complete: 4 blobs marked, 1 blobs and 0 manifests eligible for deletion"),
        "{report:#}"
    );
    assert_eq!(report["details"]["state"], "Complete", "{report:#}");
}

#[test]
fn gc_run_wait_with_the_api_server_down_past_its_timeout_exits_1_naming_the_outage() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "healthy");
    let (child, job) = gc_waiting(cp, &ns, "15s");
    let started = Instant::now();
    let outage = std::thread::spawn(|| {
        ControlPlane::shared()
            .restart_apiserver(Duration::from_secs(25))
            .unwrap()
    });
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    outage.join().unwrap();
    let report = json(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a Job not seen to finish is a failed check, even with the server still down: {report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(25),
        "bounded by --timeout: {took:?}"
    );
    let run = check(&report, "gc.run");
    assert_eq!(run["status"], "fail", "{report:#}");
    let detail = run["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{job} not finished within --timeout 15s"))
            && detail.contains("the watch of jobs.batch was interrupted")
            && detail.contains("onnection refused"),
        "says the API server could not be reached: {detail}"
    );
    // The registry could not be read either: said, not passed.
    assert_eq!(
        check(&report, "gc.registry-replicas")["status"],
        "warn",
        "{report:#}"
    );
    assert_eq!(report["details"]["state"], "Timeout", "{report:#}");
}
