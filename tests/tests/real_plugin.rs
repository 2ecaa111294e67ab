//! `kubectl ck8s` against a real control plane (tests/src/cluster.rs): codex-k8s fixture
//! clusters applied with kubectl, Deployments rolled out by the real controllers into pods that
//! run on kwok's nodes, logs from files and port-forwards to local listeners through the API
//! server, and the roles of deploy/rbac/ enforced by the real authorizer.
//!
//! Each test applies its fixture into a production namespace of its own (`-n`), so tests run
//! side by side on the one control plane of this binary.

use ck8s_tests::cluster::{ControlPlane, codex_app, free_port};
use ck8s_tests::repo;
use ck8s_tests::report::{check, json};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Command, Output};

const DOMAIN: &str = "platform.codex-k8s.dev";

/// The legacy-labels fixture has a cluster-scoped Namespace with legacy keys (codex-k8s-run-17),
/// a run namespace once `labels --fix` has rewritten them: the tests that plant and fix it, and
/// those that judge every run namespace, run one at a time; the former delete it when done.
static LEGACY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A fixture applied into a fresh production namespace, its pods' ports forwarded to [`codex_app`].
fn fixture(cp: &ControlPlane, name: &str) -> String {
    let ns = cp.namespace(&format!("prod-{name}")).unwrap();
    cp.serve_app_ports(&ns, codex_app()).unwrap();
    cp.fixture_in(name, &ns);
    ns
}

fn ck8s_as(cp: &ControlPlane, user: &str, ns: &str, args: &[&str]) -> Output {
    Command::new(ck8s_tests::workspace_binary("kubectl-ck8s"))
        .arg(format!(
            "--kubeconfig={}",
            cp.write_kubeconfig(user).unwrap().display()
        ))
        .args(["-n", ns, "--domain", DOMAIN, "--request-timeout", "20s"])
        .args(args)
        .env_remove("CODEXK8S_PRODUCTION_NAMESPACE")
        .env_remove("CODEXK8S_PRODUCTION_DOMAIN")
        .env_remove("CK8S_PROBE_DIRECT")
        .output()
        .expect("run kubectl-ck8s")
}

#[test]
fn smoke_passes_on_a_healthy_cluster_with_probes_through_port_forward() {
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "healthy");
    // The migrate Jobs' pods complete on kwok; smoke judges the newest one.
    cp.kubectl_output(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Complete",
        "job",
        "--all",
        "--timeout=120s",
    ])
    .unwrap();
    let out = ck8s_as(cp, "admin", &ns, &["smoke", "-o", "json"]);
    let report = json(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "smoke on a healthy cluster: {report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in [
        "pods.ready",
        "rollout.control-plane",
        "rollout.api-gateway",
        "rollout.worker",
        "rollout.oauth2-proxy",
        "migrate.latest",
        "health.healthz",
        "health.readyz",
        "health.metrics",
        "webhook.unauthorized",
        "tls.production",
        "gc.cronjob",
    ] {
        assert_eq!(check(&report, id)["status"], "pass", "{id}: {report:#}");
    }
}

#[test]
fn smoke_fails_when_the_app_behind_port_forward_is_down() {
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "healthy");
    // Point codex-k8s's port at a listener that is gone: the probes fail, smoke exits 1.
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    cp.serve_port(&format!("{ns}-codex-k8s"), &ns, &[], 8080, dead)
        .unwrap();
    let report = loop_until_probe(cp, &ns, "fail");
    assert_eq!(
        check(&report, "health.healthz")["status"],
        "fail",
        "{report:#}"
    );
}

/// Runs smoke until `health.healthz` has `status` (kwok picks a changed forward up within
/// seconds), returning that report; fails after a minute.
fn loop_until_probe(cp: &ControlPlane, ns: &str, status: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let out = ck8s_as(
            cp,
            "admin",
            ns,
            &["smoke", "--only", "health", "-o", "json"],
        );
        let report = json(&out);
        if check(&report, "health.healthz")["status"] == status {
            assert_eq!(
                out.status.code(),
                Some(if status == "fail" { 1 } else { 0 })
            );
            return report;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "health.healthz never became {status}: {report:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn runs_and_runs_env_on_real_run_namespaces() {
    let _g = LEGACY.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "healthy");
    let out = ck8s_as(cp, "admin", &ns, &["runs", "-o", "json"]);
    let report = json(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(
        check(&report, "runs.codex-k8s-run-42")["status"],
        "pass",
        "{report:#}"
    );
    let run42 = report["details"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "codex-k8s-run-42")
        .unwrap_or_else(|| panic!("codex-k8s-run-42 not listed: {report:#}"));
    assert_eq!(
        run42["resource_quotas"],
        serde_json::json!(["codex-k8s-run"]),
        "{report:#}"
    );
    let table = ck8s_as(cp, "admin", &ns, &["runs"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("codex-k8s-run-42"),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );
    // Env names only: the values planted in the run pod are never printed.
    let secret = "sk-live-SECRET-VALUE-0004";
    let env_table = ck8s_as(cp, "admin", &ns, &["runs", "env"]);
    assert_eq!(env_table.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&env_table.stdout).contains(secret));
    let out = ck8s_as(cp, "admin", &ns, &["runs", "env", "-o", "json"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains(secret), "a secret value was printed");
    let report = json(&out);
    let pod = report["details"]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"] == "codex-k8s-run-42-agent-q8w3z")
        .unwrap_or_else(|| panic!("the run pod is not judged: {report:#}"));
    assert_eq!(
        pod["present"].as_array().unwrap().len(),
        5,
        "the five env names of the runbook: {report:#}"
    );
    let env = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["id"]
                .as_str()
                .unwrap_or("")
                .starts_with("runs.env.codex-k8s-run-42.")
        })
        .unwrap_or_else(|| panic!("no runs.env check for the run pod: {report:#}"));
    assert_eq!(env["status"], "pass", "{report:#}");
}

#[test]
fn gc_run_creates_the_job_kubectl_create_job_from_would() {
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "healthy");
    // What the runbook's command makes, on the same API server (protobuf and all).
    let expected: Value = serde_json::from_str(
        &cp.kubectl_output(&[
            "-n",
            &ns,
            "create",
            "job",
            "--from=cronjob/codex-k8s-registry-gc",
            "codex-k8s-registry-gc-expected",
            "--dry-run=server",
            "-o",
            "json",
        ])
        .unwrap(),
    )
    .unwrap();
    // The Job's pod logs (kwok serves them for any pod of the namespace with these containers):
    // the scale-down init container's and the registry's garbage-collect summary.
    let gc_log = [
        (
            ago(1),
            "level=info msg=\"marking blob sha256:aa\"".to_string(),
        ),
        (
            ago(1),
            "3 blobs marked, 5 blobs and 2 manifests eligible for deletion".to_string(),
        ),
    ];
    let scale_log = [(
        ago(1),
        "deployment.apps/codex-k8s-registry scaled".to_string(),
    )];
    cp.serve_logs(&format!("{ns}-gc"), &ns, &[], "gc", &gc_log, None)
        .unwrap();
    cp.serve_logs(
        &format!("{ns}-gc-scale-down"),
        &ns,
        &[],
        "scale-down",
        &scale_log,
        None,
    )
    .unwrap();
    let out = ck8s_as(
        cp,
        "admin",
        &ns,
        &["gc", "run", "--wait", "--timeout", "120s", "-o", "json"],
    );
    let report = json(&out);
    let jobs: Value = serde_json::from_str(
        &cp.kubectl_output(&["-n", &ns, "get", "jobs", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    let manual: Vec<&Value> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            j["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("codex-k8s-registry-gc-manual-")
        })
        .collect();
    assert_eq!(manual.len(), 1, "gc run makes one Job: {report:#}");
    let job = manual[0];
    // The runbook's name: codex-k8s-registry-gc-manual-$(date +%s).
    let name = job["metadata"]["name"].as_str().unwrap();
    assert!(
        name["codex-k8s-registry-gc-manual-".len()..]
            .parse::<i64>()
            .is_ok(),
        "{name}"
    );
    // Field by field, what the API server stored against what kubectl's would be.
    assert_eq!(job["metadata"]["labels"], expected["metadata"]["labels"]);
    assert_eq!(
        job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    for key in expected["metadata"]["annotations"]
        .as_object()
        .unwrap()
        .keys()
    {
        assert_eq!(
            job["metadata"]["annotations"][key], expected["metadata"]["annotations"][key],
            "annotation {key}"
        );
    }
    let owner = |j: &Value| {
        let o = &j["metadata"]["ownerReferences"][0];
        (
            o["kind"].clone(),
            o["name"].clone(),
            o["controller"].clone(),
            o["uid"].clone(),
        )
    };
    assert_eq!(
        owner(job),
        owner(&expected),
        "owned by the CronJob as kubectl sets it"
    );
    let mut spec = job["spec"].clone();
    let mut want = expected["spec"].clone();
    // Generated per Job: the selector's and the template's controller-uid / job-name labels;
    // kubectl's client-side object also says `creationTimestamp: null`, which stores as absent.
    for s in [&mut spec, &mut want] {
        let o = s.as_object_mut().unwrap();
        o.remove("selector");
        let meta = o["template"]["metadata"].as_object_mut().unwrap();
        meta.remove("labels");
        meta.retain(|_, v| !v.is_null());
    }
    assert_eq!(
        spec, want,
        "the Job's spec equals kubectl create job --from's"
    );
    // The Job ran to completion on kwok (its init container first), the flow waited for it
    // and read the summary from the pod's log.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = job["metadata"]["name"].as_str().unwrap();
    let run = check(&report, "gc.run");
    assert_eq!(run["status"], "pass", "{report:#}");
    assert_eq!(
        run["detail"],
        format!("{name} complete: 3 blobs marked, 5 blobs and 2 manifests eligible for deletion"),
        "{report:#}"
    );
    assert_eq!(report["details"]["state"], "Complete", "{report:#}");
    let state = cp
        .kubectl_output(&[
            "-n",
            &ns,
            "get",
            "job",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Complete\")].status}",
        ])
        .unwrap();
    assert_eq!(state, "True", "the API server holds the Job Complete");
    assert_eq!(
        check(&report, "gc.registry-replicas")["status"],
        "pass",
        "{report:#}"
    );
    // gc logs of that Job: every container's log through pods/log, init container first.
    let out = ck8s_as(cp, "admin", &ns, &["gc", "logs", "--job", name]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "deployment.apps/codex-k8s-registry scaled\nlevel=info msg=\"marking blob sha256:aa\"\n3 blobs marked, 5 blobs and 2 manifests eligible for deletion\n"
    );
    let out = ck8s_as(cp, "admin", &ns, &["gc", "logs", "-o", "json"]);
    let logs = json(&out);
    assert_eq!(logs["details"]["job"], name, "the newest GC Job: {logs:#}");
}

#[test]
fn labels_finds_and_fixes_legacy_keys_on_a_real_api_server() {
    let _g = LEGACY.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "legacy-labels");
    let out = ck8s_as(cp, "admin", &ns, &["labels", "--objects", "-o", "json"]);
    let report = json(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    for id in [
        "labels.namespace/codex-k8s-run-17",
        "labels.configmap/codex-k8s-run-42/run-17-env",
    ] {
        assert_eq!(check(&report, id)["status"], "fail", "{id}: {report:#}");
    }
    let out = ck8s_as(cp, "admin", &ns, &["labels", "--objects", "--fix"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ck8s_as(cp, "admin", &ns, &["labels", "--objects", "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "after --fix: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Each legacy key rewritten to its codex-k8s.dev/ name, its value kept, nothing else
    // touched (the API server's own kubernetes.io/metadata.name stays).
    let get = |args: &[&str]| -> Value {
        serde_json::from_str(&cp.kubectl_output(args).unwrap()).unwrap()
    };
    let run17 = get(&["get", "namespace", "codex-k8s-run-17", "-o", "json"]);
    assert_eq!(
        run17["metadata"]["labels"],
        serde_json::json!({
            "codex-k8s.dev/managed-by": "codex-k8s-worker",
            "codex-k8s.dev/namespace-purpose": "run",
            "codex-k8s.dev/run-id": "17",
            "kubernetes.io/metadata.name": "codex-k8s-run-17",
        })
    );
    let cm = get(&[
        "-n",
        "codex-k8s-run-42",
        "get",
        "configmap",
        "run-17-env",
        "-o",
        "json",
    ]);
    assert_eq!(
        cm["metadata"]["annotations"],
        serde_json::json!({"codex-k8s.dev/correlation-id": "abc-123"})
    );
    assert_eq!(
        cm["metadata"]["labels"],
        serde_json::json!({"codex-k8s.dev/project-id": "3"})
    );
    let namespaces = cp
        .kubectl_output(&["get", "namespaces", "-o", "json"])
        .unwrap();
    assert!(
        !namespaces.contains("\"codexk8s.io/"),
        "a legacy key is left"
    );
    remove_legacy_run_namespace(cp);
}

fn remove_legacy_run_namespace(cp: &ControlPlane) {
    cp.kubectl_output(&[
        "delete",
        "namespace",
        "codex-k8s-run-17",
        "--ignore-not-found",
        "--wait=true",
    ])
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// RBAC: the roles of deploy/rbac/, bound to token users, enforced by the real authorizer
// ---------------------------------------------------------------------------------------

/// Binds ClusterRole `role` to `user`, cluster-wide or (with `namespace`) in one namespace.
fn bind(cp: &ControlPlane, role: &str, user: &str, namespace: Option<&str>) {
    let out = match namespace {
        None => cp.kubectl_output(&[
            "create",
            "clusterrolebinding",
            &format!("{user}-{role}"),
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ]),
        Some(ns) => cp.kubectl_output(&[
            "-n",
            ns,
            "create",
            "rolebinding",
            &format!("{user}-{role}"),
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ]),
    };
    if let Err(e) = out
        && !e.to_string().contains("AlreadyExists")
    {
        panic!("{e:#}");
    }
}

fn install_rbac(cp: &ControlPlane) {
    // Its Roles live in the platform's namespaces, which a codex-k8s cluster has.
    cp.platform_namespaces().unwrap();
    let dir = repo().join("deploy/rbac");
    cp.kubectl_output(&["apply", "--server-side", "-k", dir.to_str().unwrap()])
        .unwrap();
}

#[test]
fn reader_role_runs_the_read_only_flows_and_nothing_else() {
    let _g = LEGACY.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    install_rbac(cp);
    let ns = fixture(cp, "healthy");
    bind(cp, "ck8s-reader", "user-reader", None);
    // Reading flows pass as the reader...
    // (`labels` reads cluster-wide; the legacy-labels tests may have a violation planted.)
    for args in [&["runs"][..], &["gc", "status"]] {
        let out = ck8s_as(cp, "user-reader", &ns, args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?} as ck8s-reader: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // ...and writing ones are refused by the authorizer with the verb and resource named.
    let out = ck8s_as(cp, "user-reader", &ns, &["gc", "run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "gc run as reader: {stderr}");
    assert!(stderr.contains("forbidden"), "{stderr}");
    assert!(
        stderr.contains("create") && stderr.contains("jobs"),
        "names verb and resource: {stderr}"
    );
}

#[test]
fn a_user_without_a_binding_exits_2_naming_verb_and_resource() {
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "healthy");
    for args in [&["runs"][..], &["gc", "status"], &["smoke"]] {
        let out = ck8s_as(cp, "user-nobody", &ns, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} as nobody: {stderr}");
        // `error: forbidden: cannot <verb> <resource> in namespace <ns>: <the authorizer's
        // message>`, then the help naming the same verb and resource.
        let refused = stderr
            .lines()
            .find_map(|l| l.strip_prefix("error: forbidden: cannot "))
            .unwrap_or_else(|| panic!("{args:?}: no forbidden error: {stderr}"));
        let mut words = refused.split(' ');
        let verb = words.next().unwrap();
        // `... cannot list namespaces: <message>` when the request has no namespace
        let resource = words.next().unwrap().trim_end_matches(':');
        assert!(
            ["get", "list", "watch"].contains(&verb),
            "{args:?}: {stderr}"
        );
        let plural = resource.split('.').next().unwrap();
        assert!(
            refused.contains(&format!(
                "User \"user-nobody\" cannot {verb} resource \"{plural}\""
            )),
            "{args:?}: the real authorizer's refusal is quoted: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "help: grant the verb \"{verb}\" on resource \"{resource}\""
            )),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn operator_role_runs_gc_run_and_labels_fix() {
    let _g = LEGACY.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    install_rbac(cp);
    let ns = fixture(cp, "legacy-labels");
    bind(cp, "ck8s-reader", "user-operator", None);
    bind(cp, "ck8s-operator", "user-operator", None);
    let out = ck8s_as(cp, "user-operator", &ns, &["gc", "run"]);
    assert_ne!(
        out.status.code(),
        Some(2),
        "gc run as operator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ck8s_as(cp, "user-operator", &ns, &["labels", "--fix"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "labels --fix as operator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    remove_legacy_run_namespace(cp);
}

/// RFC 3339 time `minutes` ago.
fn ago(minutes: i64) -> String {
    format!(
        "{:.9}",
        jiff::Timestamp::now() - jiff::SignedDuration::from_mins(minutes)
    )
}

#[test]
fn diagnose_build_reads_the_control_plane_container_beside_a_sidecar() {
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "healthy");
    // The control plane with a log-shipping sidecar: the real API server answers pods/log
    // without ?container= with 400 for such a pod.
    cp.kubectl_output(&[
        "-n",
        &ns,
        "patch",
        "deploy/codex-k8s-control-plane",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/spec/containers/-","value":{"name":"log-shipper","image":"registry.codex-k8s.dev/log-shipper:1.0.0"}}]"#,
    ])
    .unwrap();
    cp.kubectl_output(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "deploy/codex-k8s-control-plane",
        "--timeout=120s",
    ])
    .unwrap();
    let main_log = [
        (ago(50), "level=info msg=\"control-plane started\"".to_string()),
        (ago(20), "level=error msg=\"kaniko build failed\" err=\"MANIFEST_UNKNOWN: manifest unknown; retrieving image from cache\"".to_string()),
        (ago(5), "level=error msg=\"kaniko build failed\" err=\"MANIFEST_UNKNOWN: manifest unknown\"".to_string()),
    ];
    let sidecar_log = [(ago(3), "shipped 42 lines".to_string())];
    cp.serve_logs(
        // the fixture's own ClusterLogs for this container, replaced (kwok takes the first
        // ClusterLogs that names the container, in no set order)
        &format!("{ns}-codex-k8s-control-plane"),
        &ns,
        &[],
        "codex-k8s-control-plane",
        &main_log,
        None,
    )
    .unwrap();
    cp.serve_logs(
        &format!("{ns}-cp-sidecar"),
        &ns,
        &[],
        "log-shipper",
        &sidecar_log,
        None,
    )
    .unwrap();
    let pod = cp
        .kubectl_output(&[
            "-n",
            &ns,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=codex-k8s-control-plane",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .unwrap();
    cp.wait_logs(&ns, &pod, "codex-k8s-control-plane").unwrap();
    cp.wait_logs(&ns, &pod, "log-shipper").unwrap();
    // The API call without ?container= is refused by the real API server.
    let raw = cp.kubectl_output(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/pods/{pod}/log"),
    ]);
    assert!(
        raw.as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("a container name must be specified")),
        "the real API server refuses pods/log without container for two containers: {raw:?}"
    );

    let out = ck8s_as(cp, "admin", &ns, &["diagnose", "build", "-o", "json"]);
    let report = json(&out);
    assert_eq!(out.status.code(), Some(1), "signature A found: {report:#}");
    let a = check(&report, "build.signature-a");
    assert_eq!(a["status"], "fail", "{report:#}");
    let detail = a["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("pod/{pod}"))
            && detail.contains("codex-k8s-control-plane")
            && detail.contains("2 lines"),
        "names pod, container and count: {detail}"
    );
    assert!(!detail.contains("log-shipper"), "{detail}");
}

#[test]
fn mitigate_kaniko_cache_restarts_the_control_plane_and_verifies_it() {
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "kaniko-cache-on");
    let before = jiff::Timestamp::now();
    let out = ck8s_as(
        cp,
        "admin",
        &ns,
        &[
            "mitigate",
            "kaniko-cache",
            "--timeout",
            "120s",
            "-o",
            "json",
        ],
    );
    let report = json(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "mitigation A: {report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The ConfigMap holds the value...
    let value = cp
        .kubectl_output(&[
            "-n",
            &ns,
            "get",
            "configmap",
            "codex-k8s-runtime",
            "-o",
            "jsonpath={.data.CODEXK8S_KANIKO_CACHE_ENABLED}",
        ])
        .unwrap();
    assert_eq!(value, "false");
    // ...and every running control-plane pod started after the patch (envFrom is read at start).
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

/// The one Running pod of Deployment `name` (app.kubernetes.io/name label).
fn running_pod(cp: &ControlPlane, ns: &str, name: &str) -> String {
    let pod = cp
        .kubectl_output(&[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/name={name}"),
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .unwrap();
    assert!(!pod.is_empty(), "no Running pod of {name}");
    pod
}

/// Makes `container` of `pod` look restarted once, its previous instance ended `minutes` ago,
/// as the kubelet reports it: `restartCount` and `lastState.terminated` in the status
/// subresource (kwok's stages never touch a Running pod's container statuses again).
fn mark_restarted(cp: &ControlPlane, ns: &str, pod: &str, container: &str, minutes: i64) {
    let status = serde_json::json!({"status": {"containerStatuses": [{
        // merged by name into kwok's status: image, ready and the rest are kept
        "name": container,
        "restartCount": 1,
        "state": {"running": {"startedAt": ago(minutes)}},
        "lastState": {"terminated": {
            "exitCode": 1, "reason": "Error",
            "startedAt": ago(minutes + 60), "finishedAt": ago(minutes),
        }},
    }]}});
    cp.kubectl_output(&[
        "-n",
        ns,
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=strategic",
        "-p",
        &status.to_string(),
    ])
    .unwrap();
}

/// Waits until `kubectl logs [--previous]` of the container shows `needle` (kwok has picked
/// the changed ClusterLogs up).
fn wait_log_text(
    cp: &ControlPlane,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
    needle: &str,
) {
    let previous = format!("--previous={previous}");
    cp.wait_until(
        std::time::Duration::from_secs(60),
        &format!("kwok serving {needle:?} in {pod} -c {container} {previous}"),
        || {
            Ok(cp
                .kubectl_output(&["-n", ns, "logs", pod, "-c", container, &previous])?
                .contains(needle))
        },
    )
    .unwrap();
}

#[test]
fn diagnose_build_reads_the_previous_instance_of_a_container_restarted_in_the_window() {
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "healthy");
    let cp_pod = running_pod(cp, &ns, "codex-k8s-control-plane");
    let worker_pod = running_pod(cp, &ns, "codex-k8s-worker");
    // The control plane restarted 10 minutes ago: signature B only in its previous instance.
    let clean = [(
        ago(5),
        "level=info msg=\"control-plane started\"".to_string(),
    )];
    let crashed = [
        (
            ago(40),
            "level=info msg=\"codegen-check started\"".to_string(),
        ),
        (
            ago(15),
            "level=error msg=\"git checkout --detach -b feature/x: error: unknown switch `b'\""
                .to_string(),
        ),
        (
            ago(11),
            "level=error msg=\"git checkout --detach -b feature/x: error: unknown switch `b'\""
                .to_string(),
        ),
    ];
    // (The fixture's own ClusterLogs for each container, replaced: kwok takes the first one that
    // names a container.)
    cp.serve_logs(
        &format!("{ns}-codex-k8s-control-plane"),
        &ns,
        &[],
        "codex-k8s-control-plane",
        &clean,
        Some(&crashed),
    )
    .unwrap();
    // The worker restarted 7 hours ago, before the 6 h window: its previous log is not read.
    let old = [(
        ago(7 * 60 + 5),
        "level=error msg=\"kaniko build failed\" err=\"MANIFEST_UNKNOWN: manifest unknown\""
            .to_string(),
    )];
    cp.serve_logs(
        &format!("{ns}-codex-k8s-worker"),
        &ns,
        &[],
        "codex-k8s-worker",
        &clean,
        Some(&old),
    )
    .unwrap();
    mark_restarted(cp, &ns, &cp_pod, "codex-k8s-control-plane", 10);
    mark_restarted(cp, &ns, &worker_pod, "codex-k8s-worker", 7 * 60);
    wait_log_text(
        cp,
        &ns,
        &cp_pod,
        "codex-k8s-control-plane",
        true,
        "unknown switch",
    );
    wait_log_text(
        cp,
        &ns,
        &cp_pod,
        "codex-k8s-control-plane",
        false,
        "control-plane started",
    );
    wait_log_text(
        cp,
        &ns,
        &worker_pod,
        "codex-k8s-worker",
        true,
        "MANIFEST_UNKNOWN",
    );
    wait_log_text(
        cp,
        &ns,
        &worker_pod,
        "codex-k8s-worker",
        false,
        "control-plane started",
    );
    // The status patch holds (kwok does not rewrite it).
    let restarts = cp
        .kubectl_output(&[
            "-n",
            &ns,
            "get",
            "pod",
            &cp_pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ])
        .unwrap();
    assert_eq!(restarts, "1");

    let out = ck8s_as(cp, "admin", &ns, &["diagnose", "build", "-o", "json"]);
    let report = json(&out);
    assert_eq!(out.status.code(), Some(1), "signature B found: {report:#}");
    let b = check(&report, "build.signature-b");
    assert_eq!(b["status"], "fail", "{report:#}");
    let detail = b["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "pod/{cp_pod} -c codex-k8s-control-plane --previous: 2 lines"
        )),
        "names pod, container, the previous instance and the count: {detail}"
    );
    let found = &report["details"]["signature_b"];
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found:#}");
    assert_eq!(found[0]["pod"], cp_pod.as_str());
    assert_eq!(found[0]["container"], "codex-k8s-control-plane");
    assert_eq!(found[0]["previous"], true);
    // Signature A sits only in the worker's previous instance, which ended before the window:
    // it is neither read nor found.
    assert_eq!(
        check(&report, "build.signature-a")["status"],
        "pass",
        "{report:#}"
    );
    let read = report["details"]["logs_read"].as_array().unwrap();
    let previous: Vec<(&str, &str)> = read
        .iter()
        .filter(|r| r["previous"] == true)
        .map(|r| (r["pod"].as_str().unwrap(), r["container"].as_str().unwrap()))
        .collect();
    assert_eq!(
        previous,
        [(cp_pod.as_str(), "codex-k8s-control-plane")],
        "only the restart inside the window is read with --previous: {read:#?}"
    );
    assert!(
        check(&report, "build.logs")["detail"]
            .as_str()
            .unwrap()
            .contains("(1 --previous)"),
        "{report:#}"
    );
}

/// `kubectl __complete ck8s WORDS...`, as bash/zsh's kubectl completion calls it on <TAB>:
/// kubectl finds `kubectl_complete-ck8s` on PATH beside `kubectl-ck8s` and hands it the
/// words typed after `kubectl ck8s`; `KUBECONFIG` is the shell's.
fn complete(cp: &ControlPlane, kubeconfig: &str, words: &[&str]) -> String {
    let plugins = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        ck8s_tests::workspace_binary("kubectl-ck8s"),
        plugins.path().join("kubectl-ck8s"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        repo().join("kubectl-ck8s/kubectl_complete-ck8s"),
        plugins.path().join("kubectl_complete-ck8s"),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(cp.kubectl_path())
        .arg("__complete")
        .arg("ck8s")
        .args(words)
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", plugins.path().display()),
        )
        .env("HOME", home.path())
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{words:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The candidates of a cobra answer, without the `:<directive>` line.
fn candidates(answer: &str) -> Vec<&str> {
    answer.lines().filter(|l| !l.starts_with(':')).collect()
}

#[test]
fn completion_through_kubectl_offers_the_real_clusters_namespaces_and_contexts() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("complete").unwrap();
    let admin = cp.kubeconfig().display().to_string();
    // -n <TAB>: the namespaces of the cluster the current context points at.
    let answer = complete(cp, &admin, &["smoke", "-n", ""]);
    let names = candidates(&answer);
    for want in [ns.as_str(), "default", "kube-system"] {
        assert!(names.contains(&want), "-n <TAB> lacks {want}: {answer}");
    }
    assert!(answer.ends_with(":4\n"), "no file completion: {answer}");
    // A prefix narrows them; --context picks the user the list is made as (the reader role
    // may not list namespaces: nothing, and no error on the terminal).
    let answer = complete(cp, &admin, &["-n", &ns[..ns.len() - 1]]);
    assert_eq!(candidates(&answer), [ns.as_str()], "{answer}");
    let nobody = cp.write_kubeconfig("user-nobody").unwrap();
    let answer = complete(cp, &nobody.display().to_string(), &["-n", ""]);
    assert_eq!(answer, ":4\n", "forbidden: no candidates");
    // --context <TAB>: the contexts of KUBECONFIG, a list of files merged as kubectl does.
    let sre = cp.write_kubeconfig("user-sre").unwrap();
    let merged = format!("{admin}:{}", sre.display());
    assert_eq!(
        complete(cp, &merged, &["--context", ""]),
        "admin\nuser-sre\n:4\n"
    );
    assert_eq!(
        complete(cp, &merged, &["gc", "status", "--context=user"]),
        "--context=user-sre\n:4\n"
    );
    // -n after --context: as that context's user (user-nobody may not list namespaces).
    let with_nobody = format!("{merged}:{}", nobody.display());
    let answer = complete(cp, &with_nobody, &["--context", "user-nobody", "-n", ""]);
    assert_eq!(answer, ":4\n", "as user-nobody: {answer}");
    let answer = complete(cp, &with_nobody, &["--context", "admin", "-n", ""]);
    assert!(
        candidates(&answer).contains(&ns.as_str()),
        "as admin: {answer}"
    );
    // -o <TAB>: the formats; -f <TAB>: files and directories.
    assert_eq!(
        complete(cp, &admin, &["smoke", "-o", ""]),
        "table\njson\nyaml\n:4\n"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deploy.yaml"), "").unwrap();
    std::fs::create_dir(dir.path().join("manifests")).unwrap();
    let base = format!("{}/", dir.path().display());
    assert_eq!(
        complete(cp, &admin, &["policy", "check", "-f", &base]),
        format!("{base}deploy.yaml\n{base}manifests/\n:6\n")
    );
}

#[test]
fn smoke_probes_a_ready_pod_when_another_is_not_ready() {
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "healthy");
    cp.kubectl_output(&["-n", &ns, "scale", "deploy/codex-k8s", "--replicas=2"])
        .unwrap();
    cp.kubectl_output(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "deploy/codex-k8s",
        "--timeout=120s",
    ])
    .unwrap();
    let pods = cp
        .kubectl_output(&[
            "-n",
            &ns,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=codex-k8s",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
        ])
        .unwrap();
    let mut pods: Vec<&str> = pods.lines().collect();
    pods.sort();
    assert_eq!(pods.len(), 2, "{pods:?}");
    // The pod listed first answers nothing, the other one is healthy.
    let (first, second) = (pods[0], pods[1]);
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    cp.serve_port(
        &format!("{ns}-codex-k8s"),
        &ns,
        &[second],
        8080,
        codex_app(),
    )
    .unwrap();
    cp.serve_port(&format!("{ns}-codex-k8s-first"), &ns, &[first], 8080, dead)
        .unwrap();
    // Both Ready: smoke probes the first, which fails (kwok has the new forwards).
    loop_until_probe(cp, &ns, "fail");
    // The first pod turns not Ready, as the kubelet reports a failing readiness probe.
    let now = ago(0);
    let status = serde_json::json!({"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now},
    ]}});
    cp.kubectl_output(&[
        "-n",
        &ns,
        "patch",
        "pod",
        first,
        "--subresource=status",
        "--type=strategic",
        "-p",
        &status.to_string(),
    ])
    .unwrap();
    let out = ck8s_as(cp, "admin", &ns, &["smoke", "-o", "json"]);
    let report = json(&out);
    for id in ["health.healthz", "health.readyz", "health.metrics"] {
        assert_eq!(
            check(&report, id)["status"],
            "pass",
            "{id}: the Ready pod is probed: {report:#}"
        );
    }
    let ready = check(&report, "pods.ready");
    assert_eq!(ready["status"], "fail", "{report:#}");
    assert!(
        ready["detail"].as_str().unwrap().contains(first),
        "{report:#}"
    );
    assert_eq!(out.status.code(), Some(1), "{report:#}");
}

/// The running (not terminating) control-plane pods of `ns`, with their creation times.
fn control_plane_pods(cp: &ControlPlane, ns: &str) -> Vec<(String, jiff::Timestamp)> {
    cp.running_pods(ns, "app.kubernetes.io/name=codex-k8s-control-plane")
        .unwrap()
}

fn build_ref(cp: &ControlPlane, ns: &str) -> String {
    cp.kubectl_output(&[
        "-n",
        ns,
        "get",
        "configmap",
        "codex-k8s-runtime",
        "-o",
        "jsonpath={.data.CODEXK8S_BUILD_REF}",
    ])
    .unwrap()
}

#[test]
fn mitigate_build_ref_refuses_a_flag_dry_runs_on_the_server_then_takes_effect() {
    let cp = ControlPlane::shared();
    let ns = fixture(cp, "build-ref-bad");
    assert_eq!(build_ref(cp, &ns), "-b feature/x");
    let pods_before = control_plane_pods(cp, &ns);
    assert!(!pods_before.is_empty(), "the fixture's control plane runs");

    // Runbook signature B's own value is refused before anything is sent.
    let out = ck8s_as(
        cp,
        "admin",
        &ns,
        &["mitigate", "build-ref", "--ref=-b feature/x"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the build-ref policy rejects it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(build_ref(cp, &ns), "-b feature/x");

    // --dry-run=server: the real API server admits and validates the patch, stores nothing,
    // and no rollout is started.
    let generation = |cp: &ControlPlane| {
        cp.kubectl_output(&[
            "-n",
            &ns,
            "get",
            "deployment",
            "codex-k8s-control-plane",
            "-o",
            "jsonpath={.metadata.generation}",
        ])
        .unwrap()
    };
    let generation_before = generation(cp);
    let out = ck8s_as(
        cp,
        "admin",
        &ns,
        &[
            "mitigate",
            "build-ref",
            "--ref",
            "main",
            "--dry-run=server",
            "-o",
            "json",
        ],
    );
    let report = json(&out);
    assert_eq!(out.status.code(), Some(0), "dry run: {report:#}");
    assert_eq!(
        build_ref(cp, &ns),
        "-b feature/x",
        "a server dry run stores nothing"
    );
    assert_eq!(
        generation(cp),
        generation_before,
        "a dry run restarts nothing"
    );

    // For real: patched, restarted, rolled out, and every running pod started after the patch.
    let before = jiff::Timestamp::now();
    let out = ck8s_as(
        cp,
        "admin",
        &ns,
        &[
            "mitigate",
            "build-ref",
            "--ref",
            "main",
            "--timeout",
            "120s",
            "-o",
            "json",
        ],
    );
    let report = json(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "mitigation B: {report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in [
        "mitigate.wiring",
        "mitigate.patch",
        "mitigate.restart",
        "mitigate.rollout",
        "mitigate.verify",
    ] {
        assert_eq!(check(&report, id)["status"], "pass", "{id}: {report:#}");
    }
    assert_eq!(build_ref(cp, &ns), "main");
    let pods_after = control_plane_pods(cp, &ns);
    assert!(!pods_after.is_empty());
    for (name, created) in &pods_after {
        assert!(
            *created >= before - jiff::SignedDuration::from_secs(1),
            "pod {name} predates the patch"
        );
        assert!(
            !pods_before.iter().any(|(old, _)| old == name),
            "pod {name} was not replaced"
        );
    }

    // And the diagnosis agrees: the ref is accepted by the build-ref policy now.
    let out = ck8s_as(cp, "admin", &ns, &["diagnose", "build", "-o", "json"]);
    let report = json(&out);
    assert_eq!(
        check(&report, "build.build-ref")["status"],
        "pass",
        "{report:#}"
    );
}

#[test]
fn ports_reports_the_real_api_servers_port_as_one_that_must_be_closed() {
    let cp = ControlPlane::shared();
    // The API server listens on loopback: production must not expose it (the runbook's 6443).
    let api_port = cp.server.rsplit(':').next().unwrap().to_string();
    let closed = free_port().unwrap().to_string();
    let out = ck8s_as(
        cp,
        "admin",
        "default",
        &[
            "ports",
            "127.0.0.1",
            "--open",
            &api_port,
            "--closed",
            &closed,
            "-o",
            "json",
        ],
    );
    let report = json(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(
        check(&report, &format!("port.{api_port}"))["status"],
        "pass"
    );
    assert_eq!(check(&report, &format!("port.{closed}"))["status"], "pass");

    let out = ck8s_as(
        cp,
        "admin",
        "default",
        &[
            "ports",
            "127.0.0.1",
            "--open",
            &closed,
            "--closed",
            &api_port,
            "-o",
            "json",
        ],
    );
    let report = json(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let exposed = check(&report, &format!("port.{api_port}"));
    assert_eq!(exposed["status"], "fail");
    assert!(
        exposed["detail"]
            .as_str()
            .unwrap()
            .contains("open, must be closed"),
        "{report:#}"
    );
    assert_eq!(check(&report, &format!("port.{closed}"))["status"], "fail");
}
