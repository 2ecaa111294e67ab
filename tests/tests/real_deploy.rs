//! deploy/ on a real kube-apiserver (tests/src/cluster.rs): every object of the base, of each
//! overlay and of rbac/ is accepted, and the README's two-step install works as written.
//!
//! The webhook configuration itself is only dry-run here: registered for real, it would send
//! every judged write to a Service whose pods run on kwok's fake nodes (no process behind them).
//! The webhook through the API server is tested in `real_webhook.rs`, with ck8s-admission on
//! loopback.

use ck8s_tests::cluster::ControlPlane;
use ck8s_tests::repo;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// The tests share cluster-scoped objects (CRDs, the ck8s-system namespace): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A copy of deploy/ in a temporary directory, with the self-signed overlay's certificates
/// made by its own `gen-certs.sh`, as the README's install does.
fn deploy_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .args(["-r"])
        .arg(repo().join("deploy"))
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(status.success());
    let overlay = tmp.path().join("deploy/overlays/self-signed");
    let out = Command::new("sh")
        .arg(overlay.join("gen-certs.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen-certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tmp
}

/// `kubectl <args>` as admin; panics with stderr on failure.
fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    cp.kubectl_output(args)
        .unwrap_or_else(|e| panic!("{e:#}\napiserver log:\n{}", cp.log_tail("kube-apiserver")))
}

/// cert-manager's CRDs (../shared/crds), installed and Established.
fn install_cert_manager_crds(cp: &ControlPlane) {
    let crds = repo().join("../shared/crds");
    for f in [
        "cert-manager.io_certificaterequests.yaml",
        "cert-manager.io_certificates.yaml",
        "cert-manager.io_clusterissuers.yaml",
        "cert-manager.io_issuers.yaml",
    ] {
        let path = crds.join(f);
        kubectl(
            cp,
            &["apply", "--server-side", "-f", path.to_str().unwrap()],
        );
    }
    cp.wait_established(&["certificates.cert-manager.io", "issuers.cert-manager.io"])
        .unwrap_or_else(|e| panic!("{e:#}\napiserver log:\n{}", cp.log_tail("kube-apiserver")));
}

/// What `kubectl kustomize DIR` renders, as `kubectl -o name` names it (`kind.group/name`).
fn rendered_names(cp: &ControlPlane, dir: &str) -> Vec<String> {
    let text = kubectl(cp, &["kustomize", dir]);
    let mut names: Vec<String> = serde_saphyr::from_multiple::<serde_json::Value>(&text)
        .unwrap()
        .into_iter()
        .map(|v| {
            let group = v["apiVersion"]
                .as_str()
                .unwrap()
                .rsplit_once('/')
                .map(|(g, _)| g);
            let kind = v["kind"].as_str().unwrap().to_lowercase();
            let name = v["metadata"]["name"].as_str().unwrap();
            match group {
                Some(g) => format!("{kind}.{g}/{name}"),
                None => format!("{kind}/{name}"),
            }
        })
        .collect();
    names.sort();
    names
}

fn delete_ck8s_system(cp: &ControlPlane) {
    let _ = cp.kubectl_output(&[
        "delete",
        "namespace",
        "ck8s-system",
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
    ]);
}

#[test]
fn every_object_of_base_overlays_and_rbac_is_accepted() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    install_cert_manager_crds(cp);
    let tmp = deploy_copy();
    let deploy = tmp.path().join("deploy");
    for dir in [
        "base",
        "overlays/cert-manager",
        "overlays/self-signed",
        "rbac",
    ] {
        let path = deploy.join(dir);
        let path = path.to_str().unwrap();
        // Server-side dry run of the whole render, webhook configuration included: schema
        // validation, defaulting and every admission plugin (Pod Security on the Deployment's
        // pods included), nothing persisted. The namespace must exist for its objects.
        if dir == "rbac" {
            // Its Roles live in the platform's namespaces, which a codex-k8s cluster has.
            cp.platform_namespaces().unwrap();
        } else {
            kubectl(
                cp,
                &[
                    "apply",
                    "--server-side",
                    "-f",
                    deploy.join("base/namespace.yaml").to_str().unwrap(),
                ],
            );
        }
        let out = kubectl(
            cp,
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager=ck8s-test",
                "-k",
                path,
                "-o",
                "name",
            ],
        );
        let mut accepted: Vec<&str> = out.lines().collect();
        accepted.sort();
        assert_eq!(
            accepted,
            rendered_names(cp, path),
            "{dir}: the API server did not accept every rendered object:\n{out}"
        );
        // Everything but the webhook configuration is applied for real too (it would route
        // judged writes to pods that kwok only pretends to run).
        if dir != "base" {
            let out = kubectl(
                cp,
                &[
                    "apply",
                    "--server-side",
                    "--field-manager=ck8s-test",
                    "-k",
                    path,
                    "-l",
                    "app.kubernetes.io/component!=webhook-configuration",
                    "-o",
                    "name",
                ],
            );
            assert!(
                !out.contains("validatingwebhookconfiguration"),
                "{dir}: the label filter let the webhook configuration through:\n{out}"
            );
        }
    }
    // rbac/: every role is stored as written (the API server would refuse an escalation).
    for role in [
        "clusterrole/ck8s-reader",
        "clusterrole/ck8s-operator",
        "clusterrole/ck8s-labels-secrets",
    ] {
        kubectl(cp, &["get", role, "-o", "name"]);
    }
    delete_ck8s_system(cp);
}

#[test]
fn readme_two_step_install_of_the_self_signed_overlay_works_as_written() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cp = ControlPlane::shared();
    let tmp = deploy_copy();
    let overlay = tmp.path().join("deploy/overlays/self-signed");
    let overlay = overlay.to_str().unwrap();

    // 2. Everything except the webhook configuration.
    let out = kubectl(
        cp,
        &[
            "apply",
            "-k",
            overlay,
            "-l",
            "app.kubernetes.io/component!=webhook-configuration",
        ],
    );
    assert!(out.contains("deployment.apps/ck8s-admission"), "{out}");
    assert!(out.contains("secret/ck8s-admission-tls"), "{out}");
    assert!(!out.contains("validatingwebhookconfiguration"), "{out}");
    // The Deployment's pods pass Pod Security `restricted`, are scheduled on kwok's nodes and
    // become Ready: `rollout status` returns as the README says.
    let out = kubectl(
        cp,
        &[
            "-n",
            "ck8s-system",
            "rollout",
            "status",
            "deploy/ck8s-admission",
            "--timeout=2m",
        ],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let ready = kubectl(
        cp,
        &[
            "-n",
            "ck8s-system",
            "get",
            "deploy/ck8s-admission",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
    );
    assert_eq!(ready, "2", "both replicas are Ready");

    // 3. The webhook configuration with ca.crt as its caBundle: accepted by the server
    // (dry run, see the module comment), and the caBundle is the overlay's CA.
    let out = kubectl(
        cp,
        &[
            "apply",
            "--dry-run=server",
            "-k",
            overlay,
            "-o",
            "jsonpath={range .items[?(@.kind==\"ValidatingWebhookConfiguration\")]}{.webhooks[0].clientConfig.caBundle}{end}",
        ],
    );
    let ca = std::fs::read(Path::new(overlay).join("ca.crt")).unwrap();
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(out.trim())
            .unwrap(),
        ca,
        "the dry-run webhook configuration carries ca.crt as its caBundle"
    );
    delete_ck8s_system(cp);
    cp.wait_until(Duration::from_secs(120), "ck8s-system deleted", || {
        Ok(cp
            .kubectl_output(&[
                "get",
                "namespace",
                "ck8s-system",
                "--ignore-not-found",
                "-o",
                "name",
            ])?
            .trim()
            .is_empty())
    })
    .unwrap();
}
