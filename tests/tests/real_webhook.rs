//! ck8s-admission called by a real kube-apiserver (tests/src/cluster.rs).
//!
//! The webhook runs as the real binary on loopback; it is registered by the
//! ValidatingWebhookConfiguration rendered from deploy/base with only `clientConfig` changed
//! (`url:` + `caBundle`), so the namespace selector, match conditions, timeout and failure
//! policy under test are the shipped ones. Writes go through the real kubectl.

use ck8s_tests::cluster::ControlPlane;
use ck8s_tests::cluster_webhook::{Ck8s, WEBHOOK, kubectl_in, register, unregister, wait_active};
use ck8s_tests::eventually_blocking;
use ck8s_tests::webhook::wat_policy;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One webhook configuration is registered for the whole cluster: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn deployment(ns: &str, name: &str, build_ref: &str, template_labels: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}{template_labels}}}
    spec:
      containers:
      - name: main
        image: ghcr.io/codex-k8s/codex-k8s:1.0.0
        env:
        - name: CODEXK8S_BUILD_REF
          value: "{build_ref}"
"#
    )
}

const DEFAULT_CONFIG: &str = include_str!("../../deploy/base/policies.yaml");

#[test]
fn the_api_server_rejects_what_the_policies_deny_with_field_and_fix() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let _ck8s = Ck8s::start(DEFAULT_CONFIG, &[], &[]);
    register(cp);
    let ns = cp.namespace("ck8s-deny").unwrap();

    // build-ref: the runbook's failure, a CLI flag in CODEXK8S_BUILD_REF.
    let bad = deployment(&ns, "codex-k8s-worker", "-b feature/x", "");
    wait_active(cp, &ns);
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &bad);
    assert!(!ok, "a bad CODEXK8S_BUILD_REF was admitted");
    assert!(
        err.contains(&format!(
            "admission webhook \"{WEBHOOK}\" denied the request"
        )),
        "{err}"
    );
    assert!(err.contains("[build-ref]"), "{err}");
    assert!(
        err.contains("spec.template.spec.containers[0].env[CODEXK8S_BUILD_REF]"),
        "the message names the field: {err}"
    );
    assert!(err.contains("fix:"), "the message names the fix: {err}");

    // An empty CODEXK8S_BUILD_REF: the API server drops the empty `value` before calling the
    // webhook (its normal form), which must still see the variable set, to "".
    let empty = deployment(&ns, "codex-k8s-worker", "", "");
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &empty);
    assert!(!ok, "an empty CODEXK8S_BUILD_REF was admitted");
    assert!(err.contains("[build-ref]"), "{err}");
    assert!(err.contains("it is empty"), "{err}");

    // legacy-labels on a ConfigMap's metadata.
    let legacy = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: legacy\n  namespace: {ns}\n  labels:\n    codexk8s.io/run-id: r1\ndata: {{}}\n"
    );
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &legacy);
    assert!(!ok, "a legacy label was admitted");
    assert!(err.contains("[legacy-labels]"), "{err}");
    assert!(err.contains("metadata.labels"), "{err}");
    assert!(
        err.contains("codex-k8s.dev/"),
        "names the key to use: {err}"
    );

    // kaniko-cache re-enabled in the runtime ConfigMap.
    let kaniko = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: codex-k8s-runtime\n  namespace: {ns}\ndata:\n  CODEXK8S_KANIKO_CACHE_ENABLED: \"true\"\n"
    );
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &kaniko);
    assert!(!ok, "a re-enabled Kaniko cache was admitted");
    assert!(err.contains("[kaniko-cache]"), "{err}");
    assert!(err.contains("CODEXK8S_KANIKO_CACHE_ENABLED"), "{err}");

    // A good object goes through.
    let good = deployment(&ns, "codex-k8s-worker", "main", "");
    let (ok, out, err) = kubectl_in(cp, &["apply", "-f", "-"], &good);
    assert!(ok, "a valid Deployment was rejected: {err}");
    assert!(out.contains("created"), "{out}");
    unregister(cp);
}

#[test]
fn warn_mode_shows_as_kubectl_warnings_and_audit_mode_reaches_the_audit_log() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let config = "policies:\n  legacy-labels: { mode: warn }\n  kaniko-cache: { mode: audit }\n";
    let _ck8s = Ck8s::start(config, &[], &[]);
    register(cp);
    let ns = cp.namespace("ck8s-warn").unwrap();

    let legacy = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: legacy\n  namespace: {ns}\n  labels:\n    codexk8s.io/run-id: r1\ndata: {{}}\n"
    );
    wait_active(cp, &ns);
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &legacy);
    assert!(ok, "warn mode must admit: {err}");
    let warning = err
        .lines()
        .find(|l| l.starts_with("Warning: [legacy-labels]"))
        .unwrap_or_else(|| panic!("kubectl printed no Warning: line: {err}"));
    assert!(warning.contains("codex-k8s.dev/"), "{warning}");

    let kaniko = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: codex-k8s-runtime\n  namespace: {ns}\ndata:\n  CODEXK8S_KANIKO_CACHE_ENABLED: \"true\"\n"
    );
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &kaniko);
    assert!(ok, "audit mode must admit: {err}");
    assert!(
        !err.contains("Warning:"),
        "audit mode prints nothing: {err}"
    );
    // The API server keeps the webhook's audit annotations, prefixed with the webhook's name.
    cp.wait_until(Duration::from_secs(20), "the audit event", || {
        Ok(cp.audit_events()?.iter().any(|e| {
            e["objectRef"]["namespace"] == ns.as_str()
                && e["objectRef"]["name"] == "codex-k8s-runtime"
                && e["annotations"].as_object().is_some_and(|a| {
                    a.iter().any(|(k, v)| {
                        k.starts_with(WEBHOOK)
                            && k.ends_with("kaniko-cache")
                            && v.as_str()
                                .is_some_and(|v| v.contains("CODEXK8S_KANIKO_CACHE_ENABLED"))
                    })
                })
        }))
    })
    .unwrap();
    unregister(cp);
}

#[test]
fn with_ck8s_down_fail_closed_in_judged_namespaces_only() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    // Prove the webhook is called first, then stop it.
    let ck8s = Ck8s::start(DEFAULT_CONFIG, &[], &[]);
    register(cp);
    let ns = cp.namespace("ck8s-down").unwrap();
    let good = |name: &str, ns: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\ndata: {{CODEXK8S_BUILD_REF: main}}\n"
        )
    };
    let bad = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  namespace: {ns}\ndata: {{CODEXK8S_BUILD_REF: \"--force\"}}\n"
    );
    wait_active(cp, &ns);
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &bad);
    assert!(!ok && err.contains("[build-ref]"), "{err}");
    drop(ck8s);

    // smoke names the outage: the guard cannot be reached and does not decide.
    let (code, checks) = smoke_guard(cp, &ns);
    assert_eq!(code, 1, "{checks:#?}");
    assert_eq!(status_of(&checks, "guard.certificate"), "fail");
    assert_eq!(status_of(&checks, "guard.decides"), "fail");
    let detail = checks["guard.decides"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("could not reach ck8s-admission under failurePolicy Fail"),
        "{detail}"
    );

    // failurePolicy: Fail, the webhook unreachable: a judged write is refused...
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &good("while-down", &ns));
    assert!(
        !ok,
        "a write in a judged namespace went through with ck8s down"
    );
    assert!(
        err.contains(&format!("failed calling webhook \"{WEBHOOK}\"")),
        "{err}"
    );
    // ...while the control plane's own writes keep flowing for minutes: the controller
    // manager's leader election (its Lease in kube-system, renewed every 2 s) and kwok's node
    // heartbeats (Leases in kube-node-lease, every 10 s), and judged writes stay refused.
    let lease = |ns: &str, name: &str| {
        let out = cp
            .kubectl_output(&["-n", ns, "get", "lease", name, "-o", "json"])
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (
            v["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            v["spec"]["renewTime"].as_str().unwrap_or("").to_string(),
        )
    };
    let leader = || lease("kube-system", "kube-controller-manager");
    let heartbeat = || lease("kube-node-lease", ck8s_tests::cluster::NODES[0]);
    let (holder, mut renewed) = leader();
    assert!(!holder.is_empty(), "the controller manager holds no lease");
    let mut beat = heartbeat().1;
    let (mut leader_renewals, mut heartbeats) = (0, 0);
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_secs(12));
        let (now_holder, now_renewed) = leader();
        assert_eq!(
            now_holder, holder,
            "the controller manager lost its lease during the outage"
        );
        if now_renewed != renewed {
            leader_renewals += 1;
            renewed = now_renewed;
        }
        let now_beat = heartbeat().1;
        if now_beat != beat {
            heartbeats += 1;
            beat = now_beat;
        }
        let (ok, _, _) = kubectl_in(cp, &["apply", "-f", "-"], &good("still-down", &ns));
        assert!(!ok, "a judged write went through with ck8s down");
    }
    assert!(
        leader_renewals >= 6,
        "leader election stalled: {leader_renewals} renewals seen in 2 min"
    );
    assert!(
        heartbeats >= 6,
        "node heartbeats stalled: {heartbeats} seen in 2 min"
    );

    // ...but kube-system and the webhook's own namespace stay writable.
    cp.kubectl_output(&["create", "namespace", "ck8s-system"])
        .or_else(|e| {
            if e.to_string().contains("AlreadyExists") {
                Ok(String::new())
            } else {
                Err(e)
            }
        })
        .unwrap();
    for exempt in ["kube-system", "ck8s-system"] {
        let (ok, _, err) = kubectl_in(
            cp,
            &["apply", "-f", "-"],
            &good(&format!("ck8s-down-{}", std::process::id()), exempt),
        );
        assert!(ok, "{exempt} must stay writable with ck8s down: {err}");
    }
    // Leases and Events are excluded by the match conditions, in any namespace.
    let event = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: e1\n  namespace: {ns}\ninvolvedObject: {{kind: ConfigMap, name: x, namespace: {ns}}}\nreason: Test\nmessage: hello\ntype: Normal\n"
    );
    let (ok, _, err) = kubectl_in(cp, &["create", "-f", "-"], &event);
    assert!(ok, "Events must not be judged: {err}");
    unregister(cp);
}

#[test]
fn a_policy_slower_than_timeout_seconds_is_a_webhook_timeout() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    // A policy that never returns, with a CPU deadline longer than the webhook's
    // timeoutSeconds (5 s in deploy/base): the API server gives up first.
    let looping = wat_policy("slow", "", &["configmaps"], "loop");
    let _ck8s = Ck8s::start(
        DEFAULT_CONFIG,
        &[("slow.wasm", looping)],
        &["--policy-timeout=8s"],
    );
    register(cp);
    let ns = cp.namespace("ck8s-slow").unwrap();
    wait_active(cp, &ns);
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: slow\n  namespace: {ns}\ndata: {{a: b}}\n"
    );
    let start = Instant::now();
    let (ok, _, err) = kubectl_in(cp, &["apply", "-f", "-"], &cm);
    let took = start.elapsed();
    assert!(!ok, "a write judged by a hung policy went through");
    assert!(
        err.contains(&format!("failed calling webhook \"{WEBHOOK}\"")),
        "{err}"
    );
    assert!(
        err.contains("context deadline exceeded") || err.contains("timeout"),
        "the API server reports a timeout: {err}"
    );
    assert!(
        took >= Duration::from_secs(5),
        "the API server waited timeoutSeconds before giving up ({took:?})"
    );
    unregister(cp);
}

/// `kubectl -n ns rollout status deploy/name` succeeds within 2 minutes.
fn rolled_out(cp: &ControlPlane, ns: &str, name: &str) {
    let out = cp
        .kubectl_output(&[
            "-n",
            ns,
            "rollout",
            "status",
            &format!("deploy/{name}"),
            "--timeout=120s",
        ])
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\n{}",
                cp.kubectl_output(&["-n", ns, "get", "events", "--sort-by=.lastTimestamp"])
                    .unwrap_or_default()
            )
        });
    assert!(out.contains("successfully rolled out"), "{out}");
}

#[test]
fn controllers_scale_and_roll_objects_that_held_violations_before_the_webhook() {
    // Issue 13: the Deployment controller's ReplicaSet updates are ratcheted against the old
    // ReplicaSet, and the Pods and new ReplicaSets the controllers create from a template that
    // already held the violation inherit it (policies/README.md, "Existing violations").
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    unregister(cp);
    let ns = cp.namespace("ck8s-ratchet").unwrap();
    // Before ck8s: a bad ref, and a legacy label on the pod template.
    cp.apply(&deployment(&ns, "bad-ref", "-b feature/x", ""))
        .unwrap();
    cp.apply(&deployment(
        &ns,
        "legacy",
        "main",
        ", codexk8s.io/run-id: r1",
    ))
    .unwrap();
    rolled_out(cp, &ns, "bad-ref");
    rolled_out(cp, &ns, "legacy");

    let ck8s = Ck8s::start(DEFAULT_CONFIG, &[], &[]);
    register(cp);
    wait_active(cp, &ns);

    for name in ["bad-ref", "legacy"] {
        // Scale: the Deployment controller updates the ReplicaSet, the ReplicaSet controller
        // creates pods from the same template.
        cp.kubectl_output(&[
            "-n",
            &ns,
            "scale",
            &format!("deploy/{name}"),
            "--replicas=3",
        ])
        .unwrap();
        rolled_out(cp, &ns, name);
        let ready = cp
            .kubectl_output(&[
                "-n",
                &ns,
                "get",
                &format!("deploy/{name}"),
                "-o",
                "jsonpath={.status.readyReplicas}",
            ])
            .unwrap();
        assert_eq!(ready, "3", "{name}: scaled to 3 under the webhook");
        // Roll: a new ReplicaSet from the unchanged template. The restart itself is an
        // UPDATE of the Deployment that keeps its violation: allowed, with a warning.
        let out = cp
            .kubectl()
            .args(["-n", &ns, "rollout", "restart", &format!("deploy/{name}")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{name}: rollout restart denied: {stderr}"
        );
        assert!(
            stderr.contains("Warning:") && stderr.contains("existing violation kept"),
            "{name}: the kept violation is shown as a warning: {stderr}"
        );
        rolled_out(cp, &ns, name);
        let sets = cp
            .kubectl_output(&[
                "-n",
                &ns,
                "get",
                "rs",
                "-l",
                &format!("app={name}"),
                "-o",
                "name",
            ])
            .unwrap();
        assert_eq!(
            sets.lines().count(),
            2,
            "{name}: the rollout made a new ReplicaSet: {sets}"
        );
    }

    // The requests let through by the ratchet are counted apart from clean ones: the
    // Deployments' own updates kept their violations, the controllers' writes inherited them.
    for decision in ["kept", "inherited"] {
        let series = format!(r#"ck8s_admission_requests_total{{decision="{decision}"}}"#);
        assert!(
            ck8s.metric(&series) > 0,
            "no {series} in\n{}",
            ck8s.metrics()
        );
    }

    // A new violation is still denied, whoever sends it: the bad ref changed into another.
    let out = cp
        .kubectl()
        .args([
            "-n",
            &ns,
            "set",
            "env",
            "deploy/bad-ref",
            "CODEXK8S_BUILD_REF=--force",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a changed bad value was admitted");
    assert!(
        stderr.contains("[build-ref]") && stderr.contains("--force"),
        "{stderr}"
    );
    unregister(cp);
}

/// Cases of the built-ins' suites the API server cannot send as written, and why.
const NOT_SENDABLE: &[(&str, &str)] = &[
    (
        "a custom resource is judged by its metadata",
        "its kind (example.com/v1) is not served by this API server",
    ),
    (
        "an unquoted YAML true is rejected too",
        "the API server refuses a bool in a ConfigMap's data before admission: it is never stored",
    ),
    (
        "a Secret's truthy value is rejected but not shown",
        "the API server merges stringData over data: the value stored and judged is \"yes-hunter2\", not truthy",
    ),
];

/// The fields the API server requires of a workload and a suite leaves out (a selector and
/// the template's labels): added, so that the object reaches admission; what the policies
/// judge is left as written.
fn complete(object: &mut serde_json::Value) {
    let kind = object["kind"].as_str().unwrap_or("").to_string();
    if ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"].contains(&kind.as_str())
        && object["spec"].get("selector").is_none()
    {
        object["spec"]["selector"] = serde_json::json!({"matchLabels": {"ck8s-suite": "case"}});
        object["spec"]["template"]["metadata"]["labels"]["ck8s-suite"] = "case".into();
    }
}

/// Every case of the built-ins' own suites (`policies/*/tests/suite.ck8s-test.yaml`), sent
/// through the real API server with the real kubectl (`create --dry-run=server`), so that
/// what is judged is what the API server sends (its normal form): the suite's expectation
/// holds there too, with its messages, and what must stay hidden is not shown. Cases that
/// need their own configuration (`mode`, `settings`), hand-made reviews or other operations
/// are judged where those are given (`kubectl ck8s policy test`), and listed here.
#[test]
fn the_builtin_suites_hold_behind_the_api_server() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let _ck8s = Ck8s::start(DEFAULT_CONFIG, &[], &[]);
    register(cp);
    let ns = cp.namespace("ck8s-suites").unwrap();
    wait_active(cp, &ns);
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let (mut judged, mut elsewhere, mut problems) = (0, Vec::new(), Vec::new());
    for policy in ["build-ref", "legacy-labels", "kaniko-cache"] {
        let path = repo.join(format!("policies/{policy}/tests/suite.ck8s-test.yaml"));
        let suite: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (i, case) in suite["cases"].as_array().unwrap().iter().enumerate() {
            let name = case["name"].as_str().unwrap();
            let own = ["mode", "settings", "review", "operation"]
                .into_iter()
                .find(|k| case.get(*k).is_some());
            if let Some(key) = own {
                elsewhere.push(format!("{policy}: {name} (`{key}`)"));
                continue;
            }
            if NOT_SENDABLE.iter().any(|(n, _)| *n == name) {
                elsewhere.push(format!("{policy}: {name} (not sendable)"));
                continue;
            }
            let mut object: serde_json::Value = match (case.get("resource"), case.get("file")) {
                (Some(r), None) => r.clone(),
                (None, Some(f)) => serde_saphyr::from_str(
                    &std::fs::read_to_string(path.parent().unwrap().join(f.as_str().unwrap()))
                        .unwrap(),
                )
                .unwrap(),
                _ => panic!("{policy}: {name}: no object"),
            };
            complete(&mut object);
            if object["kind"] == "Namespace" {
                object["metadata"]["name"] = format!("{ns}-{policy}-{i}").into();
            } else {
                object["metadata"]["namespace"] = ns.clone().into();
            }
            let (ok, out, err) = kubectl_in(
                cp,
                &["create", "--dry-run=server", "-f", "-"],
                &object.to_string(),
            );
            judged += 1;
            let shown = format!("{out}{err}");
            let expect = case["expect"].as_str().unwrap();
            let mut problem = |p: String| problems.push(format!("{policy}: {name}: {p}"));
            match expect {
                "deny" => {
                    if ok {
                        problem(format!(
                            "expected a denial, the API server admitted it: {shown}"
                        ));
                    } else if !err.contains(&format!(
                        "admission webhook \"{WEBHOOK}\" denied the request"
                    )) {
                        problem(format!("refused, but not by ck8s: {err}"));
                    }
                    for m in case["messages"].as_array().into_iter().flatten() {
                        let m = m.as_str().unwrap();
                        if !err.contains(m) {
                            problem(format!("message {m:?} not in: {err}"));
                        }
                    }
                }
                "allow" => {
                    if !ok {
                        problem(format!("expected it admitted: {err}"));
                    } else if err.contains("Warning:") {
                        problem(format!("admitted with warnings: {err}"));
                    }
                }
                other => problem(format!("expectation {other} needs its mode: list it")),
            }
            for h in case["hidden"].as_array().into_iter().flatten() {
                let h = h.as_str().unwrap();
                if shown.contains(h) {
                    problem(format!("{h:?} is shown: {shown}"));
                }
            }
        }
    }
    unregister(cp);
    eprintln!(
        "real_webhook: {judged} suite cases through the API server; judged by `policy test` only:\n  {}",
        elsewhere.join("\n  ")
    );
    assert!(judged >= 20, "{judged} cases");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `kubectl ck8s admission lint -o json` as admin: (exit code, the checks by id).
fn lint(cp: &ControlPlane) -> (i32, std::collections::BTreeMap<String, serde_json::Value>) {
    let out = std::process::Command::new(ck8s_tests::workspace_binary("kubectl-ck8s"))
        .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
        .args(["admission", "lint", "-o", "json"])
        .output()
        .expect("run kubectl-ck8s");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "admission lint -o json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let checks = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    (out.status.code().unwrap_or(-1), checks)
}

/// `kubectl ck8s smoke --only guard -o json` as admin, with `ns` as the production
/// namespace: (exit code, the checks by id).
fn smoke_guard(
    cp: &ControlPlane,
    ns: &str,
) -> (i32, std::collections::BTreeMap<String, serde_json::Value>) {
    let out = std::process::Command::new(ck8s_tests::workspace_binary("kubectl-ck8s"))
        .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
        .args(["-n", ns, "smoke", "--only", "guard", "-o", "json"])
        .output()
        .expect("run kubectl-ck8s");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "smoke -o json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let checks = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    (out.status.code().unwrap_or(-1), checks)
}

fn status_of(checks: &std::collections::BTreeMap<String, serde_json::Value>, id: &str) -> String {
    checks
        .get(id)
        .unwrap_or_else(|| panic!("no check {id} in {checks:#?}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_lint_passes_the_shipped_configuration_and_names_what_is_dangerous() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let ck8s = Ck8s::start(DEFAULT_CONFIG, &[], &[]);
    register(cp);
    let ours = |aspect: &str| format!("validating/ck8s-admission/{WEBHOOK}:{aspect}");

    // The configuration deploy/ ships, serving over TLS verified by its caBundle.
    let (code, checks) = lint(cp);
    for aspect in ["lockout", "timeout", "ca", "scope"] {
        assert_eq!(
            status_of(&checks, &ours(aspect)),
            "pass",
            "{aspect}: {checks:#?}"
        );
    }
    assert_eq!(code, 0, "{checks:#?}");

    // smoke's guard checks on the same guard: it serves a certificate the caBundle verifies,
    // holds deploy/'s safety settings and decides (registered by URL: no Deployment or
    // Service to look at).
    let ns = cp.namespace("ck8s-guard").unwrap();
    wait_active(cp, &ns);
    let (code, checks) = smoke_guard(cp, &ns);
    for id in ["guard.certificate", "guard.settings", "guard.decides"] {
        assert_eq!(status_of(&checks, id), "pass", "{id}: {checks:#?}");
    }
    for id in ["guard.replicas", "guard.endpoints"] {
        assert_eq!(status_of(&checks, id), "skip", "{id}: {checks:#?}");
    }
    assert_eq!(code, 0, "{checks:#?}");

    // The serving certificate rotated without the caBundle (a new CA): smoke and the lint say
    // so.
    let key = rcgen::KeyPair::generate().unwrap();
    let rotated = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let write_certs = |cert: &str, key: &str| {
        std::fs::write(ck8s.dir.path().join("tls.key"), key).unwrap();
        std::fs::write(ck8s.dir.path().join("tls.crt"), cert).unwrap();
    };
    write_certs(&rotated.pem(), &key.serialize_pem());
    let start = Instant::now();
    let checks = loop {
        let (code, checks) = smoke_guard(cp, &ns);
        if status_of(&checks, "guard.certificate") == "fail" {
            assert_eq!(code, 1, "{checks:#?}");
            break checks;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the rotated certificate was not noticed: {checks:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let detail = checks["guard.certificate"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("does not verify with the caBundle"),
        "{detail}"
    );
    let (code, checks) = lint(cp);
    assert_eq!(status_of(&checks, &ours("ca")), "fail", "{checks:#?}");
    assert_eq!(code, 1);
    let certs = ck8s_tests::cluster_webhook::certs();
    write_certs(&certs.cert_pem, &certs.key_pem);
    let start = Instant::now();
    while status_of(&smoke_guard(cp, &ns).1, "guard.certificate") != "pass" {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the restored certificate"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A third-party configuration as the reports describe it: everything, Fail, 30 s. It is
    // pointed at ck8s (which allows the control plane's writes) so that the cluster stays
    // usable while it exists. And one left behind by an uninstall: a Service with no
    // endpoints and no caBundle (it selects no namespace, so nothing is refused meanwhile).
    let ca = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        &ck8s_tests::cluster_webhook::certs().ca_pem,
    );
    let port = ck8s_tests::cluster_webhook::webhook_port();
    let third_party = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: ck8s-lint-dangerous}}
webhooks:
- name: everything.example.com
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 30
  clientConfig: {{url: "https://127.0.0.1:{port}/validate", caBundle: "{ca}"}}
  rules: [{{apiGroups: ["*"], apiVersions: ["*"], resources: ["*"], operations: [CREATE, UPDATE]}}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: ck8s-lint-orphan}}
webhooks:
- name: orphan.example.com
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 5
  clientConfig: {{service: {{namespace: uninstalled, name: gone}}}}
  namespaceSelector: {{matchLabels: {{ck8s-lint: never}}}}
  rules: [{{apiGroups: [""], apiVersions: [v1], resources: [configmaps], operations: [CREATE]}}]
"#
    );
    cp.apply(&third_party).unwrap();
    let (code, checks) = lint(cp);
    cp.kubectl_output(&[
        "delete",
        "validatingwebhookconfiguration",
        "ck8s-lint-dangerous",
        "ck8s-lint-orphan",
    ])
    .unwrap();
    assert_eq!(code, 1, "{checks:#?}");
    let dangerous =
        |aspect: &str| format!("validating/ck8s-lint-dangerous/everything.example.com:{aspect}");
    let orphan = |aspect: &str| format!("validating/ck8s-lint-orphan/orphan.example.com:{aspect}");
    assert_eq!(status_of(&checks, &dangerous("lockout")), "fail");
    let detail = checks[&dangerous("lockout")]["detail"].as_str().unwrap();
    for named in [
        "leases.coordination.k8s.io in kube-node-lease",
        "tokenreviews",
        "kube-system",
    ] {
        assert!(detail.contains(named), "{named}: {detail}");
    }
    assert_eq!(status_of(&checks, &dangerous("timeout")), "fail");
    assert_eq!(status_of(&checks, &dangerous("scope")), "warn");
    assert_eq!(status_of(&checks, &dangerous("ca")), "pass");
    assert_eq!(status_of(&checks, &orphan("endpoints")), "fail");
    assert_eq!(status_of(&checks, &orphan("ca")), "fail");
    assert_eq!(status_of(&checks, &orphan("lockout")), "pass");
    for aspect in ["lockout", "timeout", "ca", "scope"] {
        assert_eq!(status_of(&checks, &ours(aspect)), "pass", "{aspect}");
    }

    // The serving certificate rotated to a new CA while the caBundle kept the old one: the
    // lint says so (as the API server's calls are about to fail).
    let rotated_ca = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    };
    let stale = ck8s_tests::cluster_webhook::webhook_configuration(cp).replace(
        &ca,
        &base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &rotated_ca),
    );
    cp.apply(&stale).unwrap();
    let (code, checks) = lint(cp);
    register(cp);
    assert_eq!(code, 1, "{checks:#?}");
    assert_eq!(status_of(&checks, &ours("ca")), "fail");
    let detail = checks[&ours("ca")]["detail"].as_str().unwrap();
    assert!(
        detail.contains("does not verify with the caBundle"),
        "{detail}"
    );
    unregister(cp);
    drop(ck8s);
}

/// `kubectl ck8s <args>` as admin: (exit code, stdout, stderr).
fn plugin(cp: &ControlPlane, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(ck8s_tests::workspace_binary("kubectl-ck8s"))
        .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
        .args(args)
        .output()
        .expect("run kubectl-ck8s");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pause_lets_writes_through_in_both_emergencies_and_the_guard_restores_itself() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let kubeconfig = format!("--kubeconfig={}", cp.kubeconfig().display());
    let restorer = ["--restore-pause=ck8s-admission", kubeconfig.as_str()];
    let ck8s = Ck8s::start(DEFAULT_CONFIG, &[], &restorer);
    register(cp);
    if let Err(e) = cp.kubectl_output(&["create", "namespace", "ck8s-system"])
        && !e.to_string().contains("AlreadyExists")
    {
        panic!("{e:#}");
    }
    let ns = cp.namespace("ck8s-pause").unwrap();
    wait_active(cp, &ns);
    // A hotfix the guard wrongly denies, written with a server-side dry run (through the
    // webhooks, nothing stored).
    let hotfix = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hotfix\n  namespace: {ns}\ndata: {{CODEXK8S_BUILD_REF: \"-b hotfix\"}}\n"
    );
    let write = || kubectl_in(cp, &["apply", "--dry-run=server", "-f", "-"], &hotfix);
    let (ok, _, err) = write();
    assert!(!ok && err.contains("denied the request"), "{err}");
    let paused = |cp: &ControlPlane| {
        cp.kubectl_output(&[
            "get",
            "validatingwebhookconfiguration",
            "ck8s-admission",
            "-o",
            "json",
        ])
        .unwrap()
        .contains("ck8s-paused")
    };

    // Emergency 1: the guard up and wrongly denying.
    let (code, paused_out, err) = plugin(
        cp,
        &[
            "admission",
            "pause",
            "--for",
            "1h",
            "--reason",
            "build-ref denies the hotfix",
        ],
    );
    assert_eq!(code, 0, "{paused_out}{err}");
    assert!(paused_out.contains("paused by "), "{paused_out}");
    eventually_blocking("the paused guard still denies", || write().0);
    let (code, out, _) = plugin(cp, &["admission", "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("build-ref denies the hotfix") && out.contains("left"),
        "{out}"
    );
    let (_, checks) = smoke_guard(cp, &ns);
    assert_eq!(status_of(&checks, "guard.pause"), "warn", "{checks:#?}");
    assert_eq!(status_of(&checks, "guard.decides"), "skip", "{checks:#?}");
    assert_eq!(status_of(&checks, "guard.settings"), "pass", "{checks:#?}");
    let events = cp
        .kubectl_output(&[
            "-n",
            "default",
            "get",
            "events",
            "--field-selector",
            "reason=Paused",
            "-o",
            "json",
        ])
        .unwrap();
    assert!(events.contains("build-ref denies the hotfix"), "{events}");
    assert!(
        !paused_out.contains("admission.event"),
        "the Event was written: {paused_out}"
    );

    // Emergency 2: every replica down; the pause still lets writes through (Fail otherwise).
    drop(ck8s);
    let (ok, _, err) = write();
    assert!(ok, "paused with the guard down: {err}");
    let (code, out, err) = plugin(cp, &["admission", "resume"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!paused(cp));
    let (ok, _, err) = write();
    assert!(
        !ok && err.contains("failed calling webhook"),
        "resumed with the guard down: {err}"
    );

    // The end comes without the operator's terminal: a short pause, no client running, and
    // the guard restores its configuration when it ends.
    let ck8s = Ck8s::start(DEFAULT_CONFIG, &[], &restorer);
    let (code, out, err) = plugin(
        cp,
        &["admission", "pause", "--for", "3s", "--reason", "short"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(paused(cp));
    eventually_blocking(
        "the guard did not restore its configuration after the pause",
        || !paused(cp),
    );
    assert!(
        ck8s.metric("ck8s_admission_pause_restores_total") >= 1,
        "{}",
        ck8s.metrics()
    );
    assert!(
        ck8s.log().contains("break-glass pause ended"),
        "{}",
        ck8s.log()
    );
    let (ok, _, err) = write();
    assert!(
        !ok && err.contains("denied the request"),
        "judged again: {err}"
    );
    let (code, out, _) = plugin(cp, &["admission", "status"]);
    assert_eq!(code, 0);
    assert!(out.contains("not paused"), "{out}");
    unregister(cp);
}
