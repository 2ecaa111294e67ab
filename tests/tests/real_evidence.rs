//! No all-clear without evidence, on the real control plane: every flow of `kubectl ck8s`
//! against every state where what it needs cannot be read, one table row each.
//!
//! The states: the production namespace missing (a wrong `-n` or `--context`); the platform's
//! Deployments missing; a user whose role lacks the verb the flow needs (`pods/log`,
//! `pods/portforward`, `secrets`, `jobs`, `namespaces`), the roles derived from
//! `deploy/rbac/`'s ck8s-reader by removing that one resource, and enforced by the real
//! authorizer; and, last, the API server stopped. Each row asserts the exit code, the verdict (the JSON report agrees with the
//! exit code; exit 2 prints no report), what stderr says, and that no check claims `pass` on
//! what could not be read. One control plane for the whole table.

use ck8s_tests::cluster::ControlPlane;
use ck8s_tests::repo;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DOMAIN: &str = "platform.codex-k8s.dev";
/// A production namespace that does not exist.
const NOWHERE: &str = "codex-k8s-nowhere";

/// The plugin, built once for the whole table and copied aside: a shared target directory
/// may get another build of it while the table runs.
fn plugin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let built = ck8s_tests::workspace_binary("kubectl-ck8s");
        let copy = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("real-evidence-kubectl-ck8s-{}", std::process::id()));
        std::fs::copy(&built, &copy).expect("copy kubectl-ck8s");
        copy
    })
}

fn ck8s_as(cp: &ControlPlane, user: &str, ns: &str, args: &[&str]) -> Output {
    Command::new(plugin())
        .arg(format!(
            "--kubeconfig={}",
            cp.write_kubeconfig(user).unwrap().display()
        ))
        .args(["-n", ns, "--domain", DOMAIN, "--request-timeout", "20s"])
        .args(args)
        .args(["-o", "json"])
        .env_remove("CODEXK8S_PRODUCTION_NAMESPACE")
        .env_remove("CODEXK8S_PRODUCTION_DOMAIN")
        .env_remove("CK8S_PROBE_DIRECT")
        .env(
            "CK8S_CACHE_DIR",
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ck8s-cache"),
        )
        .output()
        .expect("run kubectl-ck8s")
}

/// Where a row runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// `-n` names a namespace the cluster does not have.
    NoNamespace,
    /// The healthy fixture with its Deployments (and so their pods) deleted.
    NoDeployments,
    /// The healthy fixture, rolled out.
    Healthy,
    /// The healthy fixture's namespace with kube-apiserver stopped (the table's last rows).
    ApiServerDown,
}

/// One row: as `user`, in `state`, `args` exit with `code`; `stderr` holds every one of
/// `says`; none of the checks `not_pass` is `pass` (a check missing from the report counts
/// as not passing only when the report has checks at all).
struct Row {
    state: State,
    user: &'static str,
    args: &'static [&'static str],
    code: i32,
    not_pass: &'static [&'static str],
    says: &'static [&'static str],
}

const fn row(
    state: State,
    user: &'static str,
    args: &'static [&'static str],
    code: i32,
    not_pass: &'static [&'static str],
    says: &'static [&'static str],
) -> Row {
    Row {
        state,
        user,
        args,
        code,
        not_pass,
        says,
    }
}

use State::*;

/// What a missing namespace says, for every flow of the production namespace.
const NS_MISSING: &[&str] = &[
    "error: namespace codex-k8s-nowhere not found (context admin, server https://127.0.0.1:",
    "help: name the production namespace with -n/--namespace or $CODEXK8S_PRODUCTION_NAMESPACE (now codex-k8s-nowhere), or the cluster with --context (now admin)",
];
const NO_CP: &[&str] = &["error: deployment codex-k8s-control-plane not found in namespace"];
const SIGNATURES: &[&str] = &[
    "build.logs",
    "build.signature-a",
    "build.signature-b",
    "build.escalation",
];
const UNVERIFIED: &str = "warning: cannot verify that namespace";

#[rustfmt::skip]
const TABLE: &[Row] = &[
    // -- the production namespace does not exist: one error, up front, for every flow ------
    row(NoNamespace, "admin", &["smoke"], 2, &[], NS_MISSING),
    row(NoNamespace, "admin", &["runs"], 2, &[], NS_MISSING),
    row(NoNamespace, "admin", &["runs", "env"], 2, &[], NS_MISSING),
    row(NoNamespace, "admin", &["labels"], 2, &[], NS_MISSING),
    row(NoNamespace, "admin", &["gc", "status"], 2, &[], NS_MISSING),
    row(NoNamespace, "admin", &["gc", "run"], 2, &[], NS_MISSING),
    row(NoNamespace, "admin", &["gc", "logs"], 2, &[], NS_MISSING),
    row(NoNamespace, "admin", &["diagnose", "build"], 2, &[], NS_MISSING),
    row(NoNamespace, "admin", &["diagnose", "build", "--verify"], 2, &[], NS_MISSING),
    row(NoNamespace, "admin", &["mitigate", "kaniko-cache"], 2, &[], NS_MISSING),
    row(NoNamespace, "admin", &["mitigate", "build-ref", "--ref", "main"], 2, &[], NS_MISSING),
    // `policy audit` is cluster-wide: no production namespace to check; it judges what it read.
    row(NoNamespace, "admin", &["policy", "audit", "--exit-zero"], 0, &[], &[]),
    // -- the platform's Deployments are gone: nothing of theirs passes ------------------------
    row(NoDeployments, "admin", &["smoke"], 1, &["pods.ready", "rollout.control-plane", "rollout.api-gateway", "rollout.worker", "rollout.oauth2-proxy", "health.healthz", "health.readyz", "health.metrics", "webhook.unauthorized", "web-console.5173", "oauth2-proxy.skip-auth"], &[]),
    row(NoDeployments, "admin", &["diagnose", "build"], 1, SIGNATURES, &[]),
    row(NoDeployments, "admin", &["diagnose", "build", "--verify"], 1, &["build.logs", "build.signature-a", "build.signature-b", "build.escalation", "build.verify"], &[]),
    row(NoDeployments, "admin", &["gc", "status"], 1, &["gc.registry-replicas"], &[]),
    // the fixture's GC Job ran, but its pod has no log to give: an error, never an empty log
    row(NoDeployments, "admin", &["gc", "logs"], 2, &[], &["error: the API server refused to get pods/log", "no logs found for container \"gc\""]),
    row(NoDeployments, "admin", &["mitigate", "kaniko-cache"], 2, &[], NO_CP),
    row(NoDeployments, "admin", &["mitigate", "build-ref", "--ref", "main"], 2, &[], NO_CP),
    row(NoDeployments, "admin", &["labels"], 0, &[], &[]),
    row(NoDeployments, "admin", &["runs"], 0, &[], &[]),
    row(NoDeployments, "admin", &["runs", "env"], 0, &[], &[]),
    row(NoDeployments, "admin", &["gc", "run"], 0, &[], &[]),
    // -- a role without pods/log: no log read, no signature judged ----------------------------
    row(Healthy, "user-nolog", &["diagnose", "build"], 1, SIGNATURES, &[]),
    row(Healthy, "user-nolog", &["gc", "logs"], 2, &[], &["error: forbidden: cannot get pods/log", "help: grant the verb \"get\" on resource \"pods/log\""]),
    // -- a role without pods/portforward (ck8s-reader): the probes fail, never pass ----------
    row(Healthy, "user-reader", &["smoke"], 1, &["health.healthz", "health.readyz", "health.metrics", "webhook.unauthorized", "tls.reuse"], &[]),
    // -- a role without secrets (ck8s-reader): exit 2 naming the verb, or a best-effort warn --
    row(Healthy, "user-reader", &["labels", "--objects"], 2, &[], &["error: forbidden: cannot list secrets"]),
    row(Healthy, "user-reader", &["policy", "audit"], 2, &[], &["error: forbidden: cannot list "]),
    row(Healthy, "user-reader", &["mitigate", "kaniko-cache"], 2, &[], &["error: forbidden: cannot patch"]),
    row(Healthy, "user-reader", &["mitigate", "build-ref", "--ref", "main"], 2, &[], &["error: forbidden: cannot patch"]),
    row(Healthy, "user-reader", &["gc", "run"], 2, &[], &["error: forbidden: cannot create jobs.batch"]),
    // with every log readable, the same diagnosis passes: the evidence is what differs
    row(Healthy, "user-reader", &["diagnose", "build"], 0, &[], &[]),
    // -- a role without jobs: every flow that judges Jobs stops, naming the verb -------------
    row(Healthy, "user-nojobs", &["smoke"], 2, &[], &["error: forbidden: cannot list jobs.batch"]),
    row(Healthy, "user-nojobs", &["gc", "status"], 2, &[], &["error: forbidden: cannot list jobs.batch"]),
    row(Healthy, "user-nojobs", &["gc", "logs"], 2, &[], &["error: forbidden: cannot list jobs.batch"]),
    row(Healthy, "user-nojobs", &["diagnose", "build"], 2, &[], &["error: forbidden: cannot list jobs.batch"]),
    row(Healthy, "user-nojobs", &["runs"], 2, &[], &["error: forbidden: cannot list jobs.batch"]),
    row(Healthy, "user-nojobs", &["policy", "audit"], 2, &[], &["error: forbidden: cannot list"]),
    // -- a user who may not read namespaces: the flow goes on and says it could not verify ---
    row(Healthy, "user-nons", &["gc", "status"], 0, &[], &[UNVERIFIED]),
    row(Healthy, "user-nons", &["diagnose", "build"], 0, &[], &[UNVERIFIED]),
    row(Healthy, "user-nons", &["runs"], 2, &[], &[UNVERIFIED, "error: forbidden: cannot list namespaces"]),
    // -- no rights at all: unverified, then the first refusal --------------------------------
    row(Healthy, "user-nobody", &["smoke"], 2, &[], &[UNVERIFIED, "error: forbidden: cannot"]),
    row(Healthy, "user-nobody", &["diagnose", "build"], 2, &[], &[UNVERIFIED, "error: forbidden: cannot"]),
    // -- the API server is gone: every flow is exit 2 naming it, no report, nothing passes ----
    row(ApiServerDown, "admin", &["smoke"], 2, &[], DOWN),
    row(ApiServerDown, "admin", &["runs"], 2, &[], DOWN),
    row(ApiServerDown, "admin", &["runs", "env"], 2, &[], DOWN),
    row(ApiServerDown, "admin", &["labels"], 2, &[], DOWN),
    row(ApiServerDown, "admin", &["gc", "status"], 2, &[], DOWN),
    row(ApiServerDown, "admin", &["gc", "run"], 2, &[], DOWN),
    row(ApiServerDown, "admin", &["gc", "logs"], 2, &[], DOWN),
    row(ApiServerDown, "admin", &["diagnose", "build"], 2, &[], DOWN),
    row(ApiServerDown, "admin", &["mitigate", "kaniko-cache"], 2, &[], DOWN),
    row(ApiServerDown, "admin", &["mitigate", "build-ref", "--ref", "main"], 2, &[], DOWN),
    row(ApiServerDown, "admin", &["policy", "audit"], 2, &[], DOWN),
];

/// What a stopped API server says (the waits across an outage: `real_restart.rs`).
const DOWN: &[&str] = &["error: cannot reach the API server at https://127.0.0.1:"];

/// A ClusterRole `name`: deploy/rbac's ck8s-reader without `resource` (every group).
fn reader_without(cp: &ControlPlane, name: &str, resource: &str) {
    let text = std::fs::read_to_string(repo().join("deploy/rbac/reader.yaml")).unwrap();
    let mut role: Value = serde_saphyr::from_str(&text).unwrap();
    role["metadata"] = serde_json::json!({ "name": name });
    for rule in role["rules"].as_array_mut().unwrap() {
        if let Some(resources) = rule["resources"].as_array_mut() {
            resources.retain(|r| r != resource);
        }
    }
    cp.apply(&role.to_string()).unwrap();
}

fn bind(cp: &ControlPlane, role: &str, user: &str) {
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{user}-{role}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    });
    cp.apply(&binding.to_string()).unwrap();
}

/// The healthy fixture in a fresh production namespace, rolled out.
fn healthy(cp: &ControlPlane, prefix: &str) -> String {
    let ns = cp.namespace(prefix).unwrap();
    cp.apply_fixture("healthy", &ns).unwrap_or_else(|e| {
        panic!(
            "fixture healthy: {e:#}\n{}",
            cp.log_tail("kube-controller-manager")
        )
    });
    ns
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Checks one row's run; returns what is wrong with it, if anything.
fn judge(row: &Row, out: &Output) -> Result<(), String> {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let code = out.status.code().unwrap_or(-1);
    if code != row.code {
        return Err(format!("exit {code}, want {}", row.code));
    }
    for s in row.says {
        if !stderr.contains(s) {
            return Err(format!("stderr does not say {s:?}"));
        }
    }
    if code == 2 {
        // An error is no report: nothing on stdout a script could take for a verdict.
        if !stdout.trim().is_empty() {
            return Err("exit 2 with a report on stdout".into());
        }
        return Ok(());
    }
    let report: Value =
        serde_json::from_str(&stdout).map_err(|e| format!("stdout is not JSON ({e})"))?;
    let want = if code == 0 { "pass" } else { "fail" };
    if report["verdict"] != want {
        return Err(format!("verdict {}, exit {code}", report["verdict"]));
    }
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    for id in row.not_pass {
        let c = checks.iter().find(|c| c["id"] == *id);
        match c {
            Some(c) if c["status"] == "pass" => {
                return Err(format!("{id} passes on what could not be read: {c}"));
            }
            None if !checks.is_empty() => return Err(format!("no check {id}")),
            _ => {}
        }
    }
    // No pass states a missing or forbidden input, nor a count of nothing read.
    for c in checks.iter().filter(|c| c["status"] == "pass") {
        let detail = c["detail"].as_str().unwrap_or("");
        if [
            "not found",
            "forbidden",
            "cannot",
            "read 0 ",
            "in the 0 logs",
        ]
        .iter()
        .any(|w| detail.contains(w))
        {
            return Err(format!("a pass without evidence: {c}"));
        }
    }
    // The audit has no checks: it passes on objects it read.
    if row.args.first() == Some(&"policy")
        && report["details"]["summary"]["objects"].as_u64() == Some(0)
    {
        return Err("the audit judged no object".into());
    }
    Ok(())
}

#[test]
fn no_flow_passes_on_what_it_could_not_read() {
    plugin();
    let cp = ControlPlane::shared();
    eprintln!("control plane up");
    // The users: deploy/rbac's roles, and ck8s-reader less one resource each.
    cp.platform_namespaces().unwrap();
    let rbac = repo().join("deploy/rbac");
    cp.kubectl_output(&["apply", "--server-side", "-k", rbac.to_str().unwrap()])
        .unwrap();
    reader_without(cp, "ck8s-evidence-no-pods-log", "pods/log");
    reader_without(cp, "ck8s-evidence-no-jobs", "jobs");
    reader_without(cp, "ck8s-evidence-no-namespaces", "namespaces");
    bind(cp, "ck8s-reader", "user-reader");
    bind(cp, "ck8s-evidence-no-pods-log", "user-nolog");
    bind(cp, "ck8s-evidence-no-jobs", "user-nojobs");
    bind(cp, "ck8s-evidence-no-namespaces", "user-nons");
    // `policy audit` reads the webhook's configuration first: let the reader roles do that, so
    // that the row is about what the audit lists.
    cp.apply(
        &serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "ck8s-evidence-webhook-reader"},
            "rules": [{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"], "verbs": ["get"]}],
        })
        .to_string(),
    )
    .unwrap();
    bind(cp, "ck8s-evidence-webhook-reader", "user-reader");
    bind(cp, "ck8s-evidence-webhook-reader", "user-nojobs");

    let healthy_ns = healthy(cp, "prod-evidence");
    eprintln!("fixture applied in {healthy_ns}");
    // The fixture's Jobs (the migrations, a GC run) complete: `gc logs` reads a pod's log.
    cp.kubectl_output(&[
        "-n",
        &healthy_ns,
        "wait",
        "--for=condition=Complete",
        "job",
        "--all",
        "--timeout=120s",
    ])
    .unwrap();
    eprintln!("jobs complete");
    let bare_ns = healthy(cp, "prod-nodeploy");
    cp.kubectl_output(&[
        "-n",
        &bare_ns,
        "delete",
        "deployments",
        "--all",
        "--cascade=foreground",
        "--wait=true",
        "--timeout=120s",
    ])
    .unwrap();
    cp.wait_until(
        std::time::Duration::from_secs(120),
        "the Deployments' pods gone",
        || {
            let left = cp.kubectl_output(&[
                "-n",
                &bare_ns,
                "get",
                "pods",
                "-l",
                "!job-name",
                "-o",
                "name",
            ])?;
            Ok(left.trim().is_empty())
        },
    )
    .unwrap();

    let mut failures = Vec::new();
    let mut stopped = false;
    for row in TABLE {
        let ns = match row.state {
            NoNamespace => NOWHERE,
            NoDeployments => bare_ns.as_str(),
            Healthy => healthy_ns.as_str(),
            ApiServerDown => healthy_ns.as_str(),
        };
        if row.state == ApiServerDown && !stopped {
            cp.stop_apiserver().unwrap();
            stopped = true;
        }
        assert_eq!(
            stopped,
            row.state == ApiServerDown,
            "the stopped rows come last"
        );
        let started = std::time::Instant::now();
        let out = ck8s_as(cp, row.user, ns, row.args);
        eprintln!(
            "{:?} as {} {}: exit {:?} in {:.1?}",
            row.state,
            row.user,
            row.args.join(" "),
            out.status.code(),
            started.elapsed()
        );
        if let Err(why) = judge(row, &out) {
            failures.push(format!(
                "{:?} as {} {}: {why}\n--- stdout\n{}\n--- stderr\n{}",
                row.state,
                row.user,
                row.args.join(" "),
                text(&out.stdout),
                text(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n\n{}",
        failures.len(),
        TABLE.len(),
        failures.join("\n\n")
    );
}
