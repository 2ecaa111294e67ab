//! A cluster that already holds violations (fixture `existing-violations`), against the real
//! `kubectl-ck8s` binary and the in-process test API server: `policy audit` (table, JSON,
//! PolicyReports checked against their CRD schema, `--apply`, paging, metadata-only lists,
//! the in-cluster CronJob's arguments) and `labels` over pod templates.

use ck8s_tests::TestApiServer;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-ck8s");
const FIXTURE: &str = "existing-violations";
/// The Secret codex-k8s-build's bad CODEXK8S_BUILD_REF, plain and as stored.
const SECRET_VALUE: &str = "--secret-ref-0001";
const SECRET_B64: &str = "LS1zZWNyZXQtcmVmLTAwMDE=";

struct Cluster {
    server: TestApiServer,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Self {
        Cluster {
            server: TestApiServer::start(FIXTURE),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn ck8s(&self, args: &[&str]) -> Output {
        let kubeconfig = self.server.write_kubeconfig(self.dir.path());
        Command::new(BIN)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--request-timeout", "5s"])
            .args(args)
            .env_remove("CODEXK8S_PRODUCTION_NAMESPACE")
            .env(
                "CK8S_CACHE_DIR",
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ck8s-cache"),
            )
            .output()
            .expect("run kubectl-ck8s")
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ck8s(&all);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        (code(&out), v)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// `(kind, namespace/name, policy, effect, path)` of every violation in an audit report.
fn rows(report: &Value) -> Vec<(String, String, String, String, String)> {
    report["details"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            let object = match s("namespace").as_str() {
                "" => s("name"),
                ns => format!("{ns}/{}", s("name")),
            };
            (s("kind"), object, s("policy"), s("effect"), s("path"))
        })
        .collect()
}

/// Exactly what violates in the fixture, in the audit's order (kind, namespace, name, ...).
fn expected() -> Vec<(String, String, String, String, String)> {
    let worker = "codex-k8s-prod/codex-k8s-worker";
    let rs = "codex-k8s-prod/codex-k8s-worker-5d8f7c9b4";
    let env = "spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]";
    let tmpl = "spec.template.metadata.labels[codexk8s.io/managed-by]";
    [
        (
            "ConfigMap",
            "codex-k8s-prod/codex-k8s-runtime-next",
            "kaniko-cache",
            "warn",
            "data.CODEXK8S_KANIKO_CACHE_ENABLED",
        ),
        (
            "CronJob",
            "codex-k8s-prod/codex-k8s-run-cleanup",
            "legacy-labels",
            "deny",
            "spec.jobTemplate.spec.template.metadata.labels[codexk8s.io/run-id]",
        ),
        ("Deployment", worker, "build-ref", "deny", env),
        ("Deployment", worker, "legacy-labels", "deny", tmpl),
        (
            "Job",
            "codex-k8s-prod/codex-k8s-run-cleanup-29530000",
            "legacy-labels",
            "deny",
            "spec.template.metadata.labels[codexk8s.io/run-id]",
        ),
        (
            "Namespace",
            "codex-k8s-run-17",
            "legacy-labels",
            "deny",
            "metadata.labels[codexk8s.io/run-id]",
        ),
        (
            "Pod",
            "codex-k8s-prod/codex-k8s-worker-5d8f7c9b4-x2lqp",
            "build-ref",
            "deny",
            "spec.containers[0].env[CODEXK8S_BUILD_REF]",
        ),
        (
            "Pod",
            "codex-k8s-prod/codex-k8s-worker-5d8f7c9b4-x2lqp",
            "legacy-labels",
            "deny",
            "metadata.labels[codexk8s.io/managed-by]",
        ),
        ("ReplicaSet", rs, "build-ref", "deny", env),
        ("ReplicaSet", rs, "legacy-labels", "deny", tmpl),
        (
            "Secret",
            "codex-k8s-prod/codex-k8s-build",
            "build-ref",
            "deny",
            "data.CODEXK8S_BUILD_REF",
        ),
        (
            "StatefulSet",
            "codex-k8s-prod/codex-k8s-postgres",
            "legacy-labels",
            "deny",
            "spec.template.metadata.labels[codexk8s.io/app]",
        ),
    ]
    .iter()
    .map(|(a, b, c, d, e)| {
        (
            a.to_string(),
            b.to_string(),
            c.to_string(),
            d.to_string(),
            e.to_string(),
        )
    })
    .collect()
}

#[test]
fn audit_finds_exactly_the_violating_objects_with_the_webhooks_config() {
    let c = Cluster::new();
    let (code, report) = c.json(&["policy", "audit"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(rows(&report), expected(), "{report:#}");
    // The one report shape: the audit's result is its details.
    assert_eq!(report["command"], "policy audit");
    assert_eq!(report["verdict"], "fail");
    let s = &report["details"]["summary"];
    assert_eq!(s["violations"], 12);
    assert_eq!(s["violatingObjects"], 9);
    assert_eq!(
        s["config"],
        "ConfigMap ck8s-system/ck8s-admission-config-7f9c2hbk64 (policies.yaml), the webhook's --config"
    );
    assert_eq!(s["exemptNamespaces"], json!(["ck8s-system", "kube-system"]));
    assert_eq!(
        s["namespaces"],
        json!(["codex-k8s-prod", "codex-k8s-run-17"])
    );
    // The matchConditions' exclusions are honoured, and every one was understood.
    assert!(s.get("notes").is_none(), "{s}");
    let resources: Vec<&str> = s["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for r in [
        "deployments.apps",
        "replicasets.apps",
        "cronjobs.batch",
        "secrets",
        "namespaces",
        "validatingwebhookconfigurations.admissionregistration.k8s.io",
    ] {
        assert!(resources.contains(&r), "{r} judged: {resources:?}");
    }
    assert!(
        !resources.contains(&"events"),
        "matchConditions exclude events: {resources:?}"
    );
    // A Secret's value is never shown.
    let all = report.to_string();
    assert!(!all.contains(SECRET_VALUE) && !all.contains(SECRET_B64));
    let secret = &report["details"]["violations"][10];
    assert!(
        secret.get("value").is_none() && secret["message"].as_str().unwrap().contains("not shown")
    );

    // The table: kind, namespace/name, policy, field, fix; then the summary.
    let out = c.ck8s(&["policy", "audit"]);
    assert_eq!(code_of(&out), 1);
    let table = text(&out.stdout);
    assert!(
        table.contains("KIND") && table.contains("FIELD") && table.contains("FIX"),
        "{table}"
    );
    assert!(table.contains("codex-k8s-prod/codex-k8s-worker"), "{table}");
    assert!(table.contains("kaniko-cache (warn)"), "{table}");
    assert!(table.contains("12 violations on 9 objects"), "{table}");
    assert!(
        table.contains("exempt by the webhook's namespaceSelector: ck8s-system, kube-system"),
        "{table}"
    );
    assert!(!table.contains(SECRET_VALUE));

    // Nothing was written.
    assert!(c.server.writes().is_empty(), "{:?}", c.server.writes());
}

fn code_of(o: &Output) -> i32 {
    code(o)
}

#[test]
fn audit_pages_lists_and_fetches_metadata_only_where_the_policies_need_no_more() {
    let c = Cluster::new();
    let (code, paged) = c.json(&["policy", "audit", "--chunk-size", "2", "--concurrency", "1"]);
    assert_eq!(code, 1);
    assert_eq!(rows(&paged), expected());
    let lists: Vec<_> = c
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.query.contains("limit=2"))
        .collect();
    // Five ConfigMaps across the namespaces: three pages of at most two.
    let cm: Vec<_> = lists
        .iter()
        .filter(|r| r.path == "/api/v1/configmaps")
        .collect();
    assert_eq!(cm.len(), 3, "{cm:?}");
    assert!(cm[1].query.contains("continue=offset-2"), "{cm:?}");
    assert!(cm[2].query.contains("continue=offset-4"), "{cm:?}");
    // ConfigMaps, Secrets and pod-bearing kinds whole; everything else metadata only.
    let accept = |path: &str| {
        lists
            .iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("no list of {path}"))
            .accept
            .contains("as=PartialObjectMetadataList")
    };
    assert!(!accept("/api/v1/configmaps"));
    assert!(!accept("/apis/apps/v1/deployments"));
    assert!(!accept("/api/v1/secrets"));
    assert!(accept("/api/v1/namespaces"));
    assert!(accept("/api/v1/services"));
    assert!(accept("/apis/rbac.authorization.k8s.io/v1/roles"));
}

#[test]
fn audit_policyreports_match_their_crd_schema_and_apply_server_side() {
    let c = Cluster::new();
    let out = c.ck8s(&["policy", "audit", "-o", "policyreport"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let reports: Vec<Value> = serde_saphyr::from_multiple(&text(&out.stdout)).unwrap();
    let names: Vec<(String, String)> = reports
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("ClusterPolicyReport".to_string(), String::new()),
            ("PolicyReport".to_string(), "codex-k8s-prod".to_string()),
            ("PolicyReport".to_string(), "codex-k8s-run-17".to_string()),
        ]
    );
    for r in &reports {
        let crd = match r["kind"].as_str().unwrap() {
            "PolicyReport" => "wgpolicyk8s.io_policyreports.yaml",
            _ => "wgpolicyk8s.io_clusterpolicyreports.yaml",
        };
        let problems = schema::validate(&schema::of(crd), r);
        assert!(problems.is_empty(), "{crd}: {problems:?}\n{r:#}");
        assert_eq!(r["metadata"]["name"], "ck8s-policy-audit");
    }
    let cluster = &reports[0];
    // The Namespace, and the webhook configuration (clean): one fail, passes counted.
    assert_eq!(cluster["summary"]["fail"], 1);
    let prod = &reports[1];
    assert_eq!(prod["summary"]["fail"], 10);
    assert_eq!(prod["summary"]["warn"], 1);
    assert!(prod["summary"]["pass"].as_u64().unwrap() > 0);
    let result = prod["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"][0]["kind"] == "Deployment" && r["policy"] == "build-ref")
        .unwrap();
    assert_eq!(result["result"], "fail");
    assert_eq!(result["rule"], "build-ref");
    assert_eq!(
        result["properties"]["path"],
        "spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]"
    );
    assert_eq!(result["resources"][0]["name"], "codex-k8s-worker");
    assert_eq!(result["resources"][0]["namespace"], "codex-k8s-prod");
    assert_eq!(result["resources"][0]["apiVersion"], "apps/v1");
    assert!(result["resources"][0]["uid"].is_string());
    assert!(result["timestamp"]["seconds"].as_i64().unwrap() > 1_700_000_000);
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("\"-b feature/x\"")
    );
    assert!(!text(&out.stdout).contains(SECRET_B64));
    assert!(
        c.server.writes().is_empty(),
        "-o policyreport writes nothing"
    );

    // --apply: the same reports, created server-side; a second run updates them in place.
    for round in 0..2 {
        let out = c.ck8s(&["policy", "audit", "--apply"]);
        assert_eq!(code(&out), 1, "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("applied 3 policy reports"),
            "{}",
            text(&out.stdout)
        );
        let writes = c.server.writes();
        assert_eq!(writes.len(), 3 * (round + 1), "{writes:?}");
        assert!(
            writes.iter().all(|w| w.method == "PATCH"
                && w.path.starts_with("/apis/wgpolicyk8s.io/v1alpha2/")
                && w.path.ends_with("/ck8s-policy-audit")
                && w.query.contains("fieldManager=kubectl-ck8s-audit")),
            "{writes:?}"
        );
    }
    assert_eq!(c.server.objects("PolicyReport").len(), 2);
    let stored = c
        .server
        .object("PolicyReport", "codex-k8s-prod", "ck8s-policy-audit")
        .unwrap();
    // The second run also judged the first run's reports (clean): only `pass` grew.
    assert_eq!(stored["summary"]["fail"], prod["summary"]["fail"]);
    assert_eq!(stored["summary"]["warn"], prod["summary"]["warn"]);
    assert_eq!(stored["results"].as_array().unwrap().len(), 11);
    assert_eq!(c.server.objects("ClusterPolicyReport").len(), 1);
}

#[test]
fn the_in_cluster_cronjob_arguments_run_the_audit() {
    let c = Cluster::new();
    let cronjob: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/components/audit/cronjob.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let container = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let config = c.dir.path().join("policies.yaml");
    std::fs::write(&config, "policies:\n  kaniko-cache: { mode: warn }\n").unwrap();
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            match a.strip_prefix("--config=") {
                Some(_) => format!("--config={}", config.display()),
                None => a.to_string(),
            }
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.ck8s(&args);
    assert_eq!(
        code(&out),
        0,
        "--exit-zero: violations are the reports' content\n{}",
        text(&out.stderr)
    );
    assert_eq!(c.server.objects("PolicyReport").len(), 2);
}

#[test]
fn an_api_group_that_does_not_answer_is_reported_and_the_rest_audited() {
    let c = Cluster::new();
    c.server.unavailable_group("batch");
    let (code, report) = c.json(&["policy", "audit"]);
    assert_eq!(code, 1);
    let notes = report["details"]["summary"]["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0]
            .as_str()
            .unwrap()
            .starts_with("API group batch could not be discovered"),
        "{notes:?}"
    );
    let without_batch: Vec<_> = expected()
        .into_iter()
        .filter(|r| r.0 != "CronJob" && r.0 != "Job")
        .collect();
    assert_eq!(rows(&report), without_batch);
}

#[test]
fn audit_errors_are_exit_2_with_the_missing_permission_named() {
    let c = Cluster::new();
    c.server.deny("list", "secrets");
    let out = c.ck8s(&["policy", "audit"]);
    assert_eq!(code(&out), 2);
    let err = text(&out.stderr);
    assert!(err.contains("cannot list secrets"), "{err}");
    let out = c.ck8s(&["labels", "-o", "policyreport"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("only for `kubectl ck8s policy audit`"));
    let out = c.ck8s(&["policy", "audit", "--config", "/nonexistent/policies.yaml"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn labels_scans_pod_templates_and_fixes_them_through_the_owner() {
    let c = Cluster::new();
    let (code, r) = c.json(&["labels", "--objects"]);
    assert_eq!(code, 1);
    let findings = r["details"]["findings"].as_array().unwrap();
    let find = |kind: &str, name: &str| {
        findings
            .iter()
            .find(|f| f["kind"] == kind && f["name"] == name)
            .unwrap_or_else(|| panic!("no finding for {kind} {name}: {findings:#?}"))
    };
    assert_eq!(
        find("Deployment", "codex-k8s-worker")["templates"],
        json!(["spec.template.metadata.labels[codexk8s.io/managed-by]"])
    );
    assert_eq!(
        find("CronJob", "codex-k8s-run-cleanup")["templates"],
        json!(["spec.jobTemplate.spec.template.metadata.labels[codexk8s.io/run-id]"])
    );
    for (kind, name, owner) in [
        (
            "ReplicaSet",
            "codex-k8s-worker-5d8f7c9b4",
            "Deployment/codex-k8s-worker",
        ),
        (
            "Pod",
            "codex-k8s-worker-5d8f7c9b4-x2lqp",
            "Deployment/codex-k8s-worker",
        ),
        (
            "Job",
            "codex-k8s-run-cleanup-29530000",
            "CronJob/codex-k8s-run-cleanup",
        ),
    ] {
        assert_eq!(find(kind, name)["owner"], owner, "{kind} {name}");
    }
    assert_eq!(
        find("StatefulSet", "codex-k8s-postgres")["blocked"],
        json!(["spec.template.metadata.labels[codexk8s.io/app]"])
    );
    // The same objects the legacy-labels policy flags in the audited namespaces, no more.
    let (_, audit) = c.json(&["policy", "audit"]);
    let by_policy: std::collections::BTreeSet<(String, String)> = audit["details"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["policy"] == "legacy-labels")
        .map(|v| {
            (
                v["kind"].as_str().unwrap().to_string(),
                v["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let by_labels: std::collections::BTreeSet<(String, String)> = findings
        .iter()
        .filter(|f| !matches!(f["namespace"].as_str(), Some("kube-system" | "ck8s-system")))
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(by_labels, by_policy);

    let out = c.ck8s(&["labels", "--objects", "--fix"]);
    // The StatefulSet's selector cannot be patched: still a failure, named.
    assert_eq!(code_of(&out), 1, "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("fix the owner Deployment/codex-k8s-worker"),
        "{stdout}"
    );
    assert!(stdout.contains("selector is immutable"), "{stdout}");
    let patched: Vec<String> = c.server.writes().iter().map(|w| w.path.clone()).collect();
    assert!(
        patched.contains(
            &"/apis/apps/v1/namespaces/codex-k8s-prod/deployments/codex-k8s-worker".to_string()
        ),
        "{patched:?}"
    );
    assert!(
        patched.contains(
            &"/apis/batch/v1/namespaces/codex-k8s-prod/cronjobs/codex-k8s-run-cleanup".to_string()
        ),
        "{patched:?}"
    );
    for never in ["/pods/", "/replicasets/", "/jobs/", "/statefulsets/"] {
        assert!(
            !patched.iter().any(|p| p.contains(never)),
            "{never} is never patched: {patched:?}"
        );
    }
    let d = c
        .server
        .object("Deployment", "codex-k8s-prod", "codex-k8s-worker")
        .unwrap();
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"],
        json!({ "app.kubernetes.io/name": "codex-k8s-worker", "codex-k8s.dev/managed-by": "codex-k8s-worker" })
    );
    assert_eq!(
        d["spec"]["selector"],
        json!({ "matchLabels": { "app.kubernetes.io/name": "codex-k8s-worker" } })
    );
    // Next run: the owners are clean, what they own waits for the controller (warn).
    let (_, again) = c.json(&["labels", "--objects"]);
    let status = |id: &str| {
        again["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id}: {again:#}"))["status"]
            .clone()
    };
    assert_eq!(
        status("labels.replicaset/codex-k8s-prod/codex-k8s-worker-5d8f7c9b4"),
        "warn"
    );
    assert_eq!(
        status("labels.pod/codex-k8s-prod/codex-k8s-worker-5d8f7c9b4-x2lqp"),
        "warn"
    );
    assert_eq!(
        status("labels.job/codex-k8s-prod/codex-k8s-run-cleanup-29530000"),
        "warn"
    );
    assert_eq!(
        status("labels.statefulset/codex-k8s-prod/codex-k8s-postgres.selector"),
        "fail"
    );
    let cj = c
        .server
        .object("CronJob", "codex-k8s-prod", "codex-k8s-run-cleanup")
        .unwrap();
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
        json!({ "codex-k8s.dev/run-id": "cleanup" })
    );
}

/// A small structural-schema validator (what the API server checks of a custom resource):
/// types, enums, required fields, and no field the schema does not declare.
mod schema {
    use serde_json::Value;
    use std::path::Path;

    /// The v1alpha2 `openAPIV3Schema` of a CRD file in `../shared/crds/`.
    pub fn of(file: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/crds")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("cannot read the CRD {} ({e}): the PolicyReport CRDs live in shared/crds beside the repository", path.display())
        });
        let crd: Value = serde_saphyr::from_str(&text).unwrap();
        crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "v1alpha2")
            .expect("a v1alpha2 version")["schema"]["openAPIV3Schema"]
            .clone()
    }

    pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        walk(schema, value, "", &mut out);
        out
    }

    fn walk(schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
        let ok = match schema["type"].as_str() {
            Some("object") => v.is_object(),
            Some("array") => v.is_array(),
            Some("string") => v.is_string(),
            Some("integer") => v.is_i64() || v.is_u64(),
            Some("boolean") => v.is_boolean(),
            _ => true,
        };
        if !ok {
            out.push(format!("{at}: not a {}", schema["type"]));
            return;
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(v)
        {
            out.push(format!("{at}: {v} not in {allowed:?}"));
        }
        if let Some(obj) = v.as_object() {
            for r in schema["required"].as_array().into_iter().flatten() {
                if !obj.contains_key(r.as_str().unwrap()) {
                    out.push(format!("{at}: {} is required", r.as_str().unwrap()));
                }
            }
            let props = schema["properties"].as_object();
            for (k, child) in obj {
                let path = format!("{at}.{k}");
                match (
                    props.and_then(|p| p.get(k)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => walk(s, child, &path, out),
                    (None, Some(s)) => walk(s, child, &path, out),
                    (None, None) if props.is_some() => out.push(format!("{path}: unknown field")),
                    (None, None) => {}
                }
            }
        }
        if let (Some(items), Some(list)) = (schema.get("items"), v.as_array()) {
            for (i, item) in list.iter().enumerate() {
                walk(items, item, &format!("{at}[{i}]"), out);
            }
        }
    }

    #[test]
    fn the_validator_catches_what_the_api_server_would_refuse() {
        let s = of("wgpolicyk8s.io_policyreports.yaml");
        let good = serde_json::json!({ "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
            "metadata": { "name": "x" }, "results": [{ "policy": "p", "result": "fail" }] });
        assert!(validate(&s, &good).is_empty());
        let bad = serde_json::json!({ "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
            "metadata": {}, "results": [{ "result": "failed", "extra": 1, "timestamp": { "seconds": "x" } }] });
        let problems = validate(&s, &bad);
        for needle in [
            ".results[0]: policy is required",
            "not in",
            ".results[0].extra: unknown field",
            "nanos is required",
            "seconds: not a",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle}: {problems:?}"
            );
        }
    }
}
