//! `kubectl ck8s policy audit` on the real control plane (tests/src/cluster.rs): the
//! `existing-violations` fixture applied with kubectl, its Deployment, StatefulSet and Job run
//! by the real controllers (which derive ReplicaSets, Pods and ControllerRevisions from the
//! templates, legacy keys included), then ck8s-admission registered on loopback with the
//! fixture's own configuration: a cluster that held violations before ck8s was installed.
//!
//! A test binary of its own: the audit is cluster-wide, so every object of the control plane
//! is in its scope, and the objects of other test binaries' tests would be too. The tests here
//! run one at a time (`SERIAL`) and none adds a violation another could see.

use ck8s_tests::cluster::ControlPlane;
use ck8s_tests::cluster_webhook::{Ck8s, register, wait_active};
use ck8s_tests::repo;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

/// The fixture's production namespace, kept as the runbooks name it (this binary is alone on
/// its control plane).
const PROD: &str = "codex-k8s-prod";
const REPORT: &str = "ck8s-policy-audit";

/// The real `kubectl-ck8s` with `kubeconfig`.
fn ck8s(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(ck8s_tests::workspace_binary("kubectl-ck8s"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["--request-timeout", "30s"])
        .args(args)
        .env_remove("CODEXK8S_PRODUCTION_NAMESPACE")
        .env_remove("CODEXK8S_PRODUCTION_DOMAIN")
        .env(
            "CK8S_CACHE_DIR",
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ck8s-cache"),
        )
        .output()
        .expect("run kubectl-ck8s")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// `policy audit -o json` as admin: (exit code, report).
fn audit(cp: &ControlPlane, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["policy", "audit", "-o", "json"];
    args.extend(extra);
    let out = ck8s(&cp.kubeconfig(), &args);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "policy audit: not JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (code(&out), report)
}

type Row = (String, String, String, String, String);

/// `(kind, namespace/name, policy, effect, path)` of every violation, sorted.
fn rows(report: &Value) -> Vec<Row> {
    let mut rows: Vec<Row> = report["details"]["violations"]
        .as_array()
        .unwrap_or_else(|| panic!("no violations list: {report:#}"))
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let object = match s("namespace").as_str() {
                "" => s("name"),
                ns => format!("{ns}/{}", s("name")),
            };
            (s("kind"), object, s("policy"), s("effect"), s("path"))
        })
        .collect();
    rows.sort();
    rows
}

fn row(kind: &str, object: &str, policy: &str, effect: &str, path: &str) -> Row {
    (
        kind.into(),
        object.into(),
        policy.into(),
        effect.into(),
        path.into(),
    )
}

/// The one object of `kind` in `namespace` that `selector` selects (one a controller named).
fn only(cp: &ControlPlane, kind: &str, namespace: &str, selector: &str) -> String {
    let names = cp
        .kubectl_output(&[
            "-n",
            namespace,
            "get",
            kind,
            "-l",
            selector,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .unwrap();
    let names: Vec<&str> = names.split_whitespace().collect();
    assert_eq!(names.len(), 1, "one {kind} with {selector}: {names:?}");
    names[0].to_string()
}

/// Exactly what violates once the fixture is applied, written from the fixture's objects and
/// what the Kubernetes controllers make of them: a ReplicaSet carries its template's labels
/// (plus `pod-template-hash`) and a Pod its template's; a StatefulSet's ControllerRevision is
/// labelled with the template's labels; a batch/v1 Job without labels is given its
/// template's. kube-system and ck8s-system hold violations too and are exempt.
fn expected(cp: &ControlPlane) -> Vec<Row> {
    let o = |name: &str| format!("{PROD}/{name}");
    let rs = only(
        cp,
        "replicasets",
        PROD,
        "app.kubernetes.io/name=codex-k8s-worker",
    );
    let worker_pod = only(cp, "pods", PROD, "app.kubernetes.io/name=codex-k8s-worker");
    let job_pod = only(cp, "pods", PROD, "job-name=codex-k8s-run-cleanup-29530000");
    let revision = only(cp, "controllerrevisions", PROD, "codexk8s.io/app=postgres");
    let env = "spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]";
    let pod_env = "spec.containers[0].env[CODEXK8S_BUILD_REF]";
    let managed = "metadata.labels[codexk8s.io/managed-by]";
    let tmpl_managed = "spec.template.metadata.labels[codexk8s.io/managed-by]";
    let run_id = "metadata.labels[codexk8s.io/run-id]";
    let app = "metadata.labels[codexk8s.io/app]";
    let mut rows = vec![
        // Written by a person (the fixture).
        row(
            "ConfigMap",
            &o("codex-k8s-runtime-next"),
            "kaniko-cache",
            "warn",
            "data.CODEXK8S_KANIKO_CACHE_ENABLED",
        ),
        row(
            "CronJob",
            &o("codex-k8s-run-cleanup"),
            "legacy-labels",
            "deny",
            "spec.jobTemplate.spec.template.metadata.labels[codexk8s.io/run-id]",
        ),
        row(
            "Deployment",
            &o("codex-k8s-worker"),
            "build-ref",
            "deny",
            env,
        ),
        row(
            "Deployment",
            &o("codex-k8s-worker"),
            "legacy-labels",
            "deny",
            tmpl_managed,
        ),
        row(
            "Job",
            &o("codex-k8s-run-cleanup-29530000"),
            "legacy-labels",
            "deny",
            run_id,
        ),
        row(
            "Job",
            &o("codex-k8s-run-cleanup-29530000"),
            "legacy-labels",
            "deny",
            "spec.template.metadata.labels[codexk8s.io/run-id]",
        ),
        row(
            "Namespace",
            "codex-k8s-run-17",
            "legacy-labels",
            "deny",
            run_id,
        ),
        row(
            "Secret",
            &o("codex-k8s-build"),
            "build-ref",
            "deny",
            "data.CODEXK8S_BUILD_REF",
        ),
        row(
            "StatefulSet",
            &o("codex-k8s-postgres"),
            "legacy-labels",
            "deny",
            "spec.template.metadata.labels[codexk8s.io/app]",
        ),
        // Made by the controllers from those templates.
        row("ReplicaSet", &o(&rs), "build-ref", "deny", env),
        row("ReplicaSet", &o(&rs), "legacy-labels", "deny", managed),
        row("ReplicaSet", &o(&rs), "legacy-labels", "deny", tmpl_managed),
        row("Pod", &o(&worker_pod), "build-ref", "deny", pod_env),
        row("Pod", &o(&worker_pod), "legacy-labels", "deny", managed),
        row("Pod", &o(&job_pod), "legacy-labels", "deny", run_id),
        row(
            "Pod",
            &o("codex-k8s-postgres-0"),
            "legacy-labels",
            "deny",
            app,
        ),
        row(
            "ControllerRevision",
            &o(&revision),
            "legacy-labels",
            "deny",
            app,
        ),
    ];
    rows.sort();
    rows
}

/// The installed webhook's `--config` as the fixture holds it (its ConfigMap's policies.yaml):
/// the loopback webhook is started with the same, so what it enforces is what the audit reads.
fn fixture_config() -> String {
    let path = repo().join("tests/fixtures/clusters/existing-violations/webhook-install.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .find(|v| v["kind"] == "ConfigMap")
        .and_then(|cm| cm["data"]["policies.yaml"].as_str().map(String::from))
        .expect("the fixture's webhook ConfigMap holds policies.yaml")
}

/// A namespace of clean objects of the kinds the policies judge.
fn clean_objects(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels: {{codex-k8s.dev/run-id: "3"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: codex-k8s, namespace: {ns}, labels: {{codex-k8s.dev/managed-by: ck8s}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app.kubernetes.io/name: codex-k8s}}}}
  template:
    metadata: {{labels: {{app.kubernetes.io/name: codex-k8s, codex-k8s.dev/managed-by: ck8s}}}}
    spec:
      containers:
      - name: codex-k8s
        image: ghcr.io/codex-k8s/codex-k8s:1.4.2
        env: [{{name: CODEXK8S_BUILD_REF, value: release/1.4}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: codex-k8s-runtime, namespace: {ns}}}
data: {{CODEXK8S_BUILD_REF: main, CODEXK8S_KANIKO_CACHE_ENABLED: "false"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: codex-k8s-build, namespace: {ns}}}
stringData: {{CODEXK8S_BUILD_REF: v1.4.2}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: codex-k8s-registry-gc, namespace: {ns}}}
spec:
  schedule: "0 4 * * *"
  suspend: true
  jobTemplate:
    spec:
      template:
        metadata: {{labels: {{codex-k8s.dev/run-id: gc}}}}
        spec:
          restartPolicy: OnFailure
          containers: [{{name: gc, image: "registry:2"}}]
"#
    )
}

/// Documents of `kubectl ... -o policyreport`.
fn yaml_docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(text).unwrap()
}

/// What every test here starts from, once per binary: checked on the way (a clean cluster
/// audits clean; `--apply` without the CRDs is a clear error), the fixture applied and run
/// by the controllers, the PolicyReport CRDs installed, ck8s registered. The caller holds a
/// running [`Ck8s`] (the registration points at its fixed port).
fn setup(cp: &'static ControlPlane) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // 1. A clean namespace in a cluster that holds only the control plane's own objects
        //    (no webhook configuration yet: every namespace is judged): exit 0.
        cp.apply(&clean_objects("audit-clean")).unwrap();
        cp.kubectl_output(&[
            "-n",
            "audit-clean",
            "rollout",
            "status",
            "deploy/codex-k8s",
            "--timeout=120s",
        ])
        .unwrap();
        let (status, report) = audit(cp, &[]);
        assert_eq!(status, 0, "a clean cluster: {report:#}");
        assert_eq!(rows(&report), Vec::<Row>::new());
        assert_eq!(report["verdict"], "pass");
        let notes = report["details"]["summary"]["notes"].to_string();
        assert!(
            notes.contains("no ValidatingWebhookConfiguration ck8s-admission"),
            "{notes}"
        );
        // Judged, not skipped: the clean namespace's report counts its passes.
        let out = ck8s(&cp.kubeconfig(), &["policy", "audit", "-o", "policyreport"]);
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        let reports = yaml_docs(&text(&out.stdout));
        let clean = reports
            .iter()
            .find(|r| r["metadata"]["namespace"] == "audit-clean")
            .unwrap_or_else(|| panic!("no report for audit-clean: {reports:#?}"));
        // Namespace, Deployment, its ReplicaSet and Pod, ConfigMap, Secret, CronJob, the
        // default ServiceAccount, kube-root-ca.crt: each judged by at least one policy.
        let pass = clean["summary"]["pass"].as_u64().unwrap();
        assert!(pass >= 8, "{clean:#}");
        assert_eq!(clean["summary"]["fail"], 0);

        // 2. --apply without the PolicyReport CRDs: exit 2, what to install named.
        let lists = |user: &str| {
            requests_of(cp, user, 0)
                .iter()
                .filter(|r| r.0 == "list" && r.1 == "secrets")
                .count()
        };
        let listed = lists("admin");
        let out = ck8s(&cp.kubeconfig(), &["policy", "audit", "--apply"]);
        let err = text(&out.stderr);
        assert_eq!(code(&out), 2, "{err}\n{}", text(&out.stdout));
        assert_eq!(lists("admin"), listed, "checked before anything is listed");
        assert!(
            err.contains("does not serve") && err.contains("wgpolicyk8s.io"),
            "{err}"
        );
        assert!(err.contains("install the PolicyReport CRDs"), "{err}");

        // 3. The fixture, as a cluster holds it before ck8s.
        cp.apply_fixture("existing-violations", PROD)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.log_tail("kube-controller-manager")));
        cp.kubectl_output(&[
            "-n",
            PROD,
            "rollout",
            "status",
            "statefulset/codex-k8s-postgres",
            "--timeout=120s",
        ])
        .unwrap();
        cp.kubectl_output(&[
            "-n",
            PROD,
            "wait",
            "--for=condition=Complete",
            "job/codex-k8s-run-cleanup-29530000",
            "--timeout=120s",
        ])
        .unwrap();

        // 4. The PolicyReport CRDs, unchanged from ../shared/crds.
        let crds = repo().join("../shared/crds");
        for f in [
            "wgpolicyk8s.io_policyreports.yaml",
            "wgpolicyk8s.io_clusterpolicyreports.yaml",
        ] {
            cp.kubectl_output(&[
                "apply",
                "--server-side",
                "-f",
                crds.join(f).to_str().unwrap(),
            ])
            .unwrap();
        }
        cp.wait_established(&[
            "policyreports.wgpolicyk8s.io",
            "clusterpolicyreports.wgpolicyk8s.io",
        ])
        .unwrap();

        // 5. ck8s installed: the shipped webhook configuration, the fixture's config.
        register(cp);
        wait_active(cp, PROD);
    });
}

/// `kubectl get KIND -o json` items named `ck8s-policy-audit`, cluster-wide.
fn stored_reports(cp: &ControlPlane, kind: &str) -> Vec<Value> {
    let out = cp
        .kubectl_output(&["get", kind, "-A", "-o", "json"])
        .unwrap();
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["metadata"]["name"] == REPORT)
        .cloned()
        .collect()
}

fn report_of<'a>(reports: &'a [Value], namespace: &str) -> &'a Value {
    reports
        .iter()
        .find(|r| r["metadata"]["namespace"] == namespace)
        .unwrap_or_else(|| panic!("no PolicyReport in {namespace}: {reports:#?}"))
}

/// `(kind, name, policy, result, path)` of a stored report's results, sorted.
fn results(report: &Value) -> Vec<(String, String, String, String, String)> {
    let mut out: Vec<_> = report["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&r["resources"][0]["kind"]),
                s(&r["resources"][0]["name"]),
                s(&r["policy"]),
                s(&r["result"]),
                s(&r["properties"]["path"]),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn audit_finds_exactly_the_violating_objects_and_writes_reports_the_api_server_accepts() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let _ck8s = Ck8s::start(&fixture_config(), &[], &[]);
    setup(cp);

    // Exactly the violating objects of the fixture and what the controllers made of them.
    let (status, report) = audit(cp, &[]);
    let want = expected(cp);
    assert_eq!(rows(&report), want, "{report:#}");
    assert_eq!(status, 1, "violations found: exit 1");
    assert_eq!(report["verdict"], "fail");
    let s = &report["details"]["summary"];
    assert_eq!(
        s["config"],
        "ConfigMap ck8s-system/ck8s-admission-config-7f9c2hbk64 (policies.yaml), the webhook's --config"
    );
    let exempt: Vec<&str> = s["exemptNamespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(exempt, ["ck8s-system", "kube-node-lease", "kube-system"]);
    assert!(s.get("notes").is_none(), "{s}");
    let objects: BTreeSet<(String, String)> =
        want.iter().map(|r| (r.0.clone(), r.1.clone())).collect();
    assert_eq!(s["violatingObjects"], objects.len());
    assert!(
        !report.to_string().contains("LS1zZWNyZXQtcmVmLTAwMDE=")
            && !report.to_string().contains("--secret-ref-0001"),
        "a Secret's value is never printed"
    );
    // The same with pages of 2 (continue tokens from the real API server).
    let from = cp.audit_events().unwrap().len();
    let (status, paged) = audit(cp, &["--chunk-size", "2", "--concurrency", "2"]);
    let pages = cp
        .audit_events()
        .unwrap()
        .into_iter()
        .skip(from)
        .filter(|e| {
            e["verb"] == "list"
                && e["objectRef"]["resource"] == "configmaps"
                && e["requestURI"]
                    .as_str()
                    .is_some_and(|u| u.contains("limit=2") && u.contains("continue="))
        })
        .count();
    assert!(
        pages >= 2,
        "ConfigMaps listed over continue tokens: {pages} pages after the first"
    );
    assert_eq!(status, 1);
    assert_eq!(rows(&paged), want, "paged: {paged:#}");
    assert_eq!(
        paged["details"]["summary"]["objects"],
        report["details"]["summary"]["objects"]
    );

    // --apply: reports the API server accepts, read back with kubectl.
    let before = jiff::Timestamp::now().as_second();
    let out = ck8s(&cp.kubeconfig(), &["policy", "audit", "--apply"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("applied"),
        "{}",
        text(&out.stdout)
    );
    let after = jiff::Timestamp::now().as_second();
    let reports = stored_reports(cp, "policyreports");
    let prod = report_of(&reports, PROD);
    let expected_results: Vec<_> = want
        .iter()
        .filter(|r| r.1.starts_with(&format!("{PROD}/")))
        .map(|r| {
            let result = if r.3 == "deny" { "fail" } else { "warn" };
            (
                r.0.clone(),
                r.1[PROD.len() + 1..].to_string(),
                r.2.clone(),
                result.to_string(),
                r.4.clone(),
            )
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(results(prod), expected_results, "{prod:#}");
    assert_eq!(prod["summary"]["fail"], expected_results.len() - 1);
    assert_eq!(prod["summary"]["warn"], 1);
    let prod_passes = prod["summary"]["pass"].as_u64().unwrap();
    assert!(prod_passes > 0, "{prod:#}");
    let secret = prod["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"][0]["kind"] == "Secret")
        .unwrap();
    assert_eq!(secret["policy"], "build-ref");
    assert_eq!(secret["rule"], "build-ref");
    assert_eq!(secret["source"], "ck8s");
    let uid = cp
        .kubectl_output(&[
            "-n",
            PROD,
            "get",
            "secret",
            "codex-k8s-build",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap();
    assert_eq!(
        secret["resources"][0],
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "name": "codex-k8s-build", "namespace": PROD, "uid": uid})
    );
    let message = secret["message"].as_str().unwrap();
    assert!(message.contains("not a valid git ref"), "{message}");
    assert!(!message.contains("secret-ref-0001"), "{message}");
    let at = secret["timestamp"]["seconds"].as_i64().unwrap();
    assert!(
        (before..=after).contains(&at),
        "{before} <= {at} <= {after}"
    );
    assert!(secret["timestamp"]["nanos"].is_i64());
    let run17 = report_of(&reports, "codex-k8s-run-17");
    assert_eq!(results(run17), []);
    let cluster = stored_reports(cp, "clusterpolicyreports");
    assert_eq!(cluster.len(), 1, "{cluster:#?}");
    assert_eq!(
        results(&cluster[0]),
        [(
            "Namespace".to_string(),
            "codex-k8s-run-17".to_string(),
            "legacy-labels".to_string(),
            "fail".to_string(),
            "metadata.labels[codexk8s.io/run-id]".to_string()
        )]
    );
    // Exempt namespaces get no report.
    for ns in ["kube-system", "ck8s-system", "kube-node-lease"] {
        assert!(
            !reports.iter().any(|r| r["metadata"]["namespace"] == ns),
            "{ns} is exempt: {reports:#?}"
        );
    }

    // The Secret is fixed (an UPDATE that removes a violation: allowed by ck8s), and the
    // audit applied again: the same report objects updated in place, the fixed object's
    // result gone and counted as a pass.
    cp.kubectl_output(&[
        "-n",
        PROD,
        "patch",
        "secret",
        "codex-k8s-build",
        "--type=merge",
        "-p",
        r#"{"stringData":{"CODEXK8S_BUILD_REF":"main"}}"#,
    ])
    .unwrap();
    let out = ck8s(&cp.kubeconfig(), &["policy", "audit", "--apply"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let again = stored_reports(cp, "policyreports");
    assert_eq!(again.len(), reports.len(), "updated, not duplicated");
    let prod2 = report_of(&again, PROD);
    assert_eq!(prod2["metadata"]["uid"], prod["metadata"]["uid"]);
    assert_ne!(
        prod2["metadata"]["resourceVersion"],
        prod["metadata"]["resourceVersion"]
    );
    let without_secret: Vec<_> = expected_results
        .iter()
        .filter(|r| r.0 != "Secret")
        .cloned()
        .collect();
    assert_eq!(results(prod2), without_secret, "{prod2:#}");
    assert_eq!(prod2["summary"]["fail"], without_secret.len() - 1);
    // One more pass for the Secret, and one for each report of the first run now judged
    // in its namespace (clean).
    assert_eq!(
        prod2["summary"]["pass"].as_u64().unwrap(),
        prod_passes + 2,
        "{prod2:#}"
    );
    let cluster2 = stored_reports(cp, "clusterpolicyreports");
    assert_eq!(cluster2.len(), 1);
    assert_eq!(
        cluster2[0]["metadata"]["uid"],
        cluster[0]["metadata"]["uid"]
    );
    // The other test here asserts no list of violations: the Secret may stay fixed.
}

/// The component's objects as `kubectl kustomize` renders them on top of the base (the
/// CronJob's ConfigMap name filled in): the ServiceAccount, ClusterRole, ClusterRoleBinding
/// and CronJob, and the base's generated ConfigMap the CronJob mounts.
fn audit_component(cp: &ControlPlane) -> Vec<Value> {
    let tmp = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(repo().join("deploy"))
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(status.success());
    let overlay = tmp.path().join("deploy/overlays/with-audit");
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\ncomponents:\n  - ../../components/audit\n",
    )
    .unwrap();
    let rendered = cp
        .kubectl_output(&["kustomize", overlay.to_str().unwrap()])
        .unwrap();
    serde_saphyr::from_multiple::<Value>(&rendered)
        .unwrap()
        .into_iter()
        .filter(|v| {
            v["metadata"]["labels"]["app.kubernetes.io/name"] == "ck8s-audit"
                || (v["kind"] == "ConfigMap"
                    && v["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("ck8s-admission-config")))
        })
        .collect()
}

/// A kubeconfig for a bearer token (a ServiceAccount's).
fn token_kubeconfig(cp: &ControlPlane, dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("token.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
            cp.server,
            cp.dir.join("ca.crt").display()
        ),
    )
    .unwrap();
    path
}

/// `(verb, resource.group)` of every request the audit log holds from `user`, from the
/// `from`-th event on.
fn requests_of(cp: &ControlPlane, user: &str, from: usize) -> Vec<(String, String, u64)> {
    cp.audit_events()
        .unwrap()
        .into_iter()
        .skip(from)
        .filter(|e| e["user"]["username"] == user && e["objectRef"].is_object())
        .map(|e| {
            let r = &e["objectRef"];
            let res = match r["apiGroup"].as_str().unwrap_or("") {
                "" => r["resource"].as_str().unwrap_or("").to_string(),
                g => format!("{}.{g}", r["resource"].as_str().unwrap_or("")),
            };
            (
                e["verb"].as_str().unwrap_or("").to_string(),
                res,
                e["responseStatus"]["code"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn the_audit_component_is_accepted_and_its_service_account_can_do_exactly_the_audit() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let _ck8s = Ck8s::start(&fixture_config(), &[], &[]);
    setup(cp);

    // Accepted by the real API server, server-side.
    let objects = audit_component(cp);
    let kinds: BTreeSet<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "CronJob",
            "ServiceAccount"
        ])
    );
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let out = cp
        .kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=kustomize",
                "-f",
                "-",
            ],
            &list.to_string(),
        )
        .unwrap_or_else(|e| panic!("the API server refused the component: {e:#}"));
    assert_eq!(out.lines().count(), objects.len(), "{out}");
    let cronjob = objects.iter().find(|o| o["kind"] == "CronJob").unwrap();
    let stored = cp
        .kubectl_output(&[
            "-n",
            "ck8s-system",
            "get",
            "cronjob",
            "ck8s-audit",
            "-o",
            "json",
        ])
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        stored["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"],
        "ck8s-audit"
    );

    // The CronJob's own command, as its ServiceAccount (a token from the TokenRequest API),
    // with the config it mounts.
    let token = cp
        .kubectl_output(&[
            "-n",
            "ck8s-system",
            "create",
            "token",
            "ck8s-audit",
            "--duration=10m",
        ])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(cp, dir.path(), token.trim());
    let config_map = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let config = dir.path().join("policies.yaml");
    std::fs::write(
        &config,
        config_map["data"]["policies.yaml"].as_str().unwrap(),
    )
    .unwrap();
    let container = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| match a.as_str().unwrap() {
            a if a.starts_with("--config=") => format!("--config={}", config.display()),
            a => a.to_string(),
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Fresh reports, so that the run must create them, not only update.
    for kind in ["policyreports", "clusterpolicyreports"] {
        cp.kubectl_output(&["delete", kind, "-A", "--all"]).unwrap();
    }
    let sa = "system:serviceaccount:ck8s-system:ck8s-audit";
    // The API server's authorizer learns a new binding from its informer, a moment after the
    // apply: wait until it grants the writes, so that a refusal below is the role's, not the
    // cache's.
    for kind in [
        "policyreports.wgpolicyk8s.io",
        "clusterpolicyreports.wgpolicyk8s.io",
    ] {
        cp.wait_until(Duration::from_secs(30), "the audit role in force", || {
            Ok(cp
                .kubectl_output(&["auth", "can-i", "patch", kind, "-A", "--as", sa])
                .is_ok_and(|o| o.trim() == "yes"))
        })
        .unwrap();
    }
    let from = cp.audit_events().unwrap().len();
    let out = ck8s(&kubeconfig, &args);
    assert_eq!(
        code(&out),
        0,
        "the CronJob's audit as its ServiceAccount:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let reports = stored_reports(cp, "policyreports");
    let prod = report_of(&reports, PROD);
    assert!(
        prod["summary"]["fail"].as_u64().unwrap() > 0,
        "the fixture's violations reported: {prod:#}"
    );
    assert_eq!(stored_reports(cp, "clusterpolicyreports").len(), 1);

    // What it did, by the API server's audit log: every request allowed, and every verb the
    // ClusterRole grants used (nothing granted in excess).
    let done = requests_of(cp, sa, from);
    let refused: Vec<_> = done.iter().filter(|r| r.2 >= 400).collect();
    assert!(refused.is_empty(), "{refused:?}");
    let used: BTreeSet<(String, String)> =
        done.iter().map(|r| (r.0.clone(), r.1.clone())).collect();
    let role = objects.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
    for rule in role["rules"].as_array().unwrap() {
        let strs = |k: &str| -> Vec<String> {
            rule[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        // create is authorized inside an apply that creates (no request of its own in the
        // log): proven below by taking it away.
        for verb in strs("verbs").into_iter().filter(|v| v != "create") {
            for group in strs("apiGroups") {
                for resource in strs("resources") {
                    let hit = used.iter().any(|(v, r)| {
                        let (res, grp) = r.split_once('.').unwrap_or((r, ""));
                        *v == verb
                            && (resource == "*" || res == resource)
                            && (group == "*" || grp == group)
                    });
                    assert!(
                        hit,
                        "the ClusterRole grants {verb} on {resource}.{group}, which the audit never used: {used:?}"
                    );
                }
            }
        }
    }

    // The same identity is refused what it must not do: a fix of the Deployment's legacy
    // template key (patch deployments), named with verb and resource; exit 2.
    let out = ck8s(&kubeconfig, &["labels", "--fix"]);
    let err = text(&out.stderr);
    assert_eq!(code(&out), 2, "{err}\n{}", text(&out.stdout));
    assert!(err.contains("forbidden: cannot patch "), "{err}");
    assert!(err.contains("grant the verb \"patch\""), "{err}");
    for (verb, resource) in [
        ("patch", "deployments.apps"),
        ("create", "configmaps"),
        ("get", "secrets"),
        ("delete", "policyreports.wgpolicyk8s.io"),
        ("watch", "pods"),
    ] {
        let out = Command::new(cp.kubectl_path())
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["auth", "can-i", verb, resource, "-n", PROD])
            .output()
            .unwrap();
        assert_eq!(
            text(&out.stdout).trim(),
            "no",
            "{verb} {resource}: {}",
            text(&out.stderr)
        );
    }

    // Without create, a run that has to create its reports is refused, create named.
    let apply_role = |role: &Value| {
        cp.kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=kustomize",
                "--force-conflicts",
                "-f",
                "-",
            ],
            &role.to_string(),
        )
        .unwrap();
    };
    let can_create = |want: &str| {
        cp.wait_until(
            Duration::from_secs(30),
            "RBAC to follow the ClusterRole",
            || {
                let out = cp
                    .kubectl()
                    .args(["auth", "can-i", "create", "policyreports.wgpolicyk8s.io"])
                    .args(["-n", PROD, &format!("--as={sa}")])
                    .output()?;
                Ok(text(&out.stdout).trim() == want)
            },
        )
        .unwrap();
    };
    let mut without_create = role.clone();
    for rule in without_create["rules"].as_array_mut().unwrap() {
        if let Some(verbs) = rule["verbs"].as_array_mut() {
            verbs.retain(|v| v != "create");
        }
    }
    apply_role(&without_create);
    can_create("no");
    for kind in ["policyreports", "clusterpolicyreports"] {
        cp.kubectl_output(&["delete", kind, "-A", "--all"]).unwrap();
    }
    let out = ck8s(&kubeconfig, &args);
    apply_role(role);
    can_create("yes");
    let err = text(&out.stderr);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("forbidden: cannot create clusterpolicyreports.wgpolicyk8s.io"),
        "{err}"
    );
    assert!(err.contains("grant the verb \"create\""), "{err}");
}

/// `--cluster-vaps`: the cluster's own ValidatingAdmissionPolicies judge what predates them
/// (a VAP never sees an object created before it), each matched by its own constraints with
/// the cluster's Namespaces: exactly the violating object, in the API server's words.
#[test]
fn the_clusters_own_vaps_judge_the_objects_that_predate_them() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cp = ControlPlane::shared();
    // Registered by the other tests of this binary (failurePolicy Fail): it must answer.
    let _ck8s = Ck8s::start(&fixture_config(), &[], &[]);
    cp.apply(
        r#"apiVersion: v1
kind: Namespace
metadata: {name: vap-audit, labels: {audit-vap: "on"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: vap-other}
"#,
    )
    .unwrap();
    cp.wait_until(Duration::from_secs(60), "default ServiceAccounts", || {
        Ok(cp
            .kubectl_output(&["get", "sa", "default", "-n", "vap-audit"])
            .is_ok()
            && cp
                .kubectl_output(&["get", "sa", "default", "-n", "vap-other"])
                .is_ok())
    })
    .unwrap();
    let configmap = |ns: &str, name: &str, owner: bool| {
        let labels = if owner { "{owner: sre}" } else { "{}" };
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}}}\ndata: {{a: b}}\n---\n"
        )
    };
    cp.apply(&format!(
        "{}{}{}",
        configmap("vap-audit", "unowned", false),
        configmap("vap-audit", "owned", true),
        configmap("vap-other", "unowned", false)
    ))
    .unwrap();
    cp.apply(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: configmap-owner}
spec:
  matchConstraints:
    namespaceSelector: {matchLabels: {audit-vap: "on"}}
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [configmaps]}
  # The controller manager's CA bundle in every namespace is not the teams'.
  matchConditions:
  - {name: not-the-ca-bundle, expression: "object.metadata.name != 'kube-root-ca.crt'"}
  validations:
  - expression: "has(object.metadata.labels) && 'owner' in object.metadata.labels"
    messageExpression: "'ConfigMap ' + object.metadata.name + ' has no owner label'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: configmap-owner}
spec: {policyName: configmap-owner, validationActions: [Deny]}
"#,
    )
    .unwrap();

    let (code, report) = audit(cp, &["--cluster-vaps"]);
    let cleanup = || {
        let _ = cp.kubectl_output(&[
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            "configmap-owner",
            "--ignore-not-found",
        ]);
        let _ = cp.kubectl_output(&[
            "delete",
            "namespace",
            "vap-audit",
            "vap-other",
            "--wait=false",
        ]);
    };
    let found: Vec<Row> = rows(&report)
        .into_iter()
        .filter(|r| r.1.starts_with("vap-"))
        .collect();
    cleanup();
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        found,
        [row(
            "ConfigMap",
            "vap-audit/unowned",
            "configmap-owner",
            "deny",
            "spec.validations[0].expression"
        )],
        "{report:#}"
    );
    let message = report["details"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "unowned")
        .unwrap()["message"]
        .clone();
    assert_eq!(
        message,
        "ValidatingAdmissionPolicy 'configmap-owner' with binding 'configmap-owner' denied request: ConfigMap unowned has no owner label"
    );
    assert_eq!(
        report["details"]["summary"]["policies"],
        serde_json::json!(["configmap-owner"])
    );
}
