//! Benchmark (issue 13): `kubectl ck8s policy audit` over N objects (default 10,000).
//!
//! ```sh
//! cargo run -q -p ck8s-tests --example audit_bench -- 10000           # the real control plane
//! cargo run -q -p ck8s-tests --example audit_bench -- 10000 --stand-in  # the in-process stand-in
//! ```
//! Options: `--runs R` (timed runs after one warm-up, default 5); `CK8S_PLUGIN_BIN` runs
//! another build of the plugin (default: the workspace's `kubectl-ck8s` of the example's
//! profile).
//!
//! Real control plane (tests/src/cluster.rs): N objects created through kube-apiserver, a mix
//! of the kinds the built-in policies judge in 20 namespaces, one in 100 violating (see
//! [`real_object`]); the controllers add what they derive (a ReplicaSet per Deployment, an
//! EndpointSlice and Endpoints per Service), which the audit judges too. Stand-in: what
//! `bench_audit_10k_objects` measured before (the `existing-violations` fixture plus N
//! ConfigMaps, Secrets, Pods and Deployments carrying `CODEXK8S_BUILD_REF`, one in 100 bad)
//! served by `ck8s_tests::apiserver`.
//!
//! Each run is one process, `kubectl-ck8s policy audit -o json` with its defaults (pages of
//! 500, 4 kinds at once, the built-in policies), the binary kubectl execs for
//! `kubectl ck8s`; each must find exactly the violations planted. Printed: wall time, CPU time
//! (user + sys) and peak RSS of each run (wait4's rusage), then min / median / max.

use ck8s_tests::cluster::ControlPlane;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NAMESPACES: usize = 20;

fn main() -> anyhow::Result<()> {
    let mut n = 10_000usize;
    let mut runs = 5usize;
    let mut stand_in = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--stand-in" => stand_in = true,
            "--runs" => runs = args.next().unwrap_or_default().parse()?,
            other => {
                n = other.parse().map_err(|_| {
                    anyhow::anyhow!("usage: audit_bench [N] [--runs R] [--stand-in]")
                })?
            }
        }
    }
    anyhow::ensure!(runs >= 1, "--runs must be at least 1");
    let plugin = std::env::var_os("CK8S_PLUGIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| ck8s_tests::workspace_binary("kubectl-ck8s"));
    let dir = tempfile::tempdir()?;
    if stand_in {
        let (kubeconfig, planted, _server) = stand_in_cluster(n, dir.path())?;
        let what = format!(
            "the stand-in API server, {n} objects added to the fixture existing-violations"
        );
        bench(&plugin, &kubeconfig, runs, &what, |report| {
            let found = report["details"]["violations"]
                .as_array()
                .map_or(0, Vec::len);
            anyhow::ensure!(
                found == planted,
                "{found} violations found, {planted} planted"
            );
            Ok(())
        })
    } else {
        let cp = ControlPlane::shared();
        let planted = create_real(cp, n)?;
        let what = format!(
            "the real control plane (kube-apiserver {}), {n} objects created",
            ck8s_tests::cluster::KUBERNETES_VERSION
        );
        bench(&plugin, &cp.kubeconfig(), runs, &what, |report| {
            check_real(report, &planted)
        })
    }
}

/// One warm-up, then `runs` timed runs of the audit; prints each and the summary.
fn bench(
    plugin: &Path,
    kubeconfig: &Path,
    runs: usize,
    what: &str,
    check: impl Fn(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    println!("# kubectl ck8s policy audit over {what}\n");
    println!("plugin: {}", plugin.display());
    let mut samples = Vec::new();
    for i in 0..=runs {
        let (sample, report) = run_audit(plugin, kubeconfig)?;
        check(&report)?;
        let s = &report["details"]["summary"];
        println!(
            "{} wall {:>8.3} s  cpu {:>7.3} s  peak RSS {:>6.1} MiB  ({} objects judged in {} kinds, {} violations on {} objects)",
            if i == 0 { "warm-up" } else { "run    " },
            sample.wall.as_secs_f64(),
            sample.cpu.as_secs_f64(),
            sample.max_rss_kib as f64 / 1024.0,
            s["objects"],
            s["resources"].as_array().map_or(0, Vec::len),
            s["violations"],
            s["violatingObjects"],
        );
        if i > 0 {
            samples.push(sample);
        }
    }
    let stat = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let rows = [
        (
            "wall (s)",
            stat(samples.iter().map(|s| s.wall.as_secs_f64()).collect()),
        ),
        (
            "cpu, user + sys (s)",
            stat(samples.iter().map(|s| s.cpu.as_secs_f64()).collect()),
        ),
        (
            "peak RSS (MiB)",
            stat(
                samples
                    .iter()
                    .map(|s| s.max_rss_kib as f64 / 1024.0)
                    .collect(),
            ),
        ),
    ];
    println!(
        "\n| {} runs | min | median | max |\n| --- | --- | --- | --- |",
        samples.len()
    );
    for (name, (lo, mid, hi)) in rows {
        println!("| {name} | {lo:.3} | {mid:.3} | {hi:.3} |");
    }
    Ok(())
}

struct Sample {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: i64,
}

/// One `policy audit -o json` process, measured by the kernel's accounting of it (wait4).
fn run_audit(plugin: &Path, kubeconfig: &Path) -> anyhow::Result<(Sample, Value)> {
    let out = tempfile::NamedTempFile::new()?;
    let err = tempfile::NamedTempFile::new()?;
    let start = Instant::now();
    let child = Command::new(plugin)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["--request-timeout", "60s", "policy", "audit", "-o", "json"])
        .env_remove("CODEXK8S_PRODUCTION_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(out.reopen()?)
        .stderr(err.reopen()?)
        .spawn()?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 reaps our own child and fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waiting for our own child, with valid pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    anyhow::ensure!(r == pid, "wait4: {}", std::io::Error::last_os_error());
    let code = std::process::ExitStatus::from_raw(status).code();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let sample = Sample {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss,
    };
    let stdout = std::fs::read(out.path())?;
    anyhow::ensure!(
        code == Some(1),
        "policy audit exited {code:?}, not 1 (violations found): {}",
        std::fs::read_to_string(err.path())?
    );
    Ok((sample, serde_json::from_slice(&stdout)?))
}

/// The in-process stand-in: the fixture plus `n` objects; (kubeconfig, violations planted).
fn stand_in_cluster(
    n: usize,
    dir: &Path,
) -> anyhow::Result<(PathBuf, usize, ck8s_tests::TestApiServer)> {
    use base64::Engine as _;
    let (mut objects, logs) = ck8s_tests::apiserver::load_fixture("existing-violations")?;
    // What the stand-in test of the fixture finds (kubectl-ck8s/tests/audit.rs, expected()).
    let mut planted = 12;
    for i in 0..n {
        let ns = format!("codex-k8s-run-{}", i % NAMESPACES);
        let r = if i % 100 == 0 { "-b feature/x" } else { "main" };
        planted += usize::from(i % 100 == 0);
        let env = json!([{ "name": "CODEXK8S_BUILD_REF", "value": r }]);
        objects.push(match i % 4 {
            0 => json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": format!("cm-{i}"), "namespace": ns }, "data": { "CODEXK8S_BUILD_REF": r } }),
            1 => json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": format!("s-{i}"), "namespace": ns },
                "data": { "CODEXK8S_BUILD_REF": base64::engine::general_purpose::STANDARD.encode(r) } }),
            2 => json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": format!("p-{i}"), "namespace": ns },
                "spec": { "containers": [{ "name": "w", "image": "w:1", "env": env }] } }),
            _ => json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": format!("d-{i}"), "namespace": ns },
                "spec": { "selector": { "matchLabels": { "app": "w" } }, "template": { "metadata": { "labels": { "app": "w" } },
                    "spec": { "containers": [{ "name": "w", "image": "w:1", "env": env }] } } } }),
        });
    }
    for i in 0..NAMESPACES {
        let name = format!("codex-k8s-run-{i}");
        objects.push(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name, "labels": { "kubernetes.io/metadata.name": name } } }));
    }
    let server = ck8s_tests::TestApiServer::with_objects(objects, logs);
    let kubeconfig = server.write_kubeconfig(dir);
    Ok((kubeconfig, planted, server))
}

/// Object `i` of the real mix, in `ns`: (collection path, body, violating?). Per hundred:
/// 30 ConfigMaps, 20 Secrets, 15 Deployments (0 replicas), 10 Pods (held by a scheduling
/// gate: no node runs them), 10 Services, 10 ServiceAccounts, 5 CronJobs (suspended). One
/// object in each hundred violates, in the k-th hundred the k-th (so every kind has its
/// share): a bad `CODEXK8S_BUILD_REF` (ConfigMap, Secret, Deployment) or a legacy
/// `codexk8s.io/` key (the others).
fn real_object(i: usize, ns: &str) -> (String, Value, bool) {
    use base64::Engine as _;
    let bad = i % 100 == (i / 100) % 100;
    let build_ref = if bad { "-b feature/x" } else { "release/1.4" };
    let labels = if bad {
        json!({ "app.kubernetes.io/name": "w", "codexk8s.io/managed-by": "ck8s" })
    } else {
        json!({ "app.kubernetes.io/name": "w", "codex-k8s.dev/managed-by": "ck8s" })
    };
    let env = json!([{ "name": "CODEXK8S_BUILD_REF", "value": build_ref }, { "name": "CODEXK8S_MODE", "value": "worker" }]);
    let container = json!({ "name": "w", "image": "ghcr.io/codex-k8s/worker:1.4.2", "env": env });
    let core = format!("/api/v1/namespaces/{ns}");
    let apps = format!("/apis/apps/v1/namespaces/{ns}");
    let batch = format!("/apis/batch/v1/namespaces/{ns}");
    let (path, body) = match i % 100 {
        0..30 => (
            format!("{core}/configmaps"),
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": format!("cm-{i}") },
                "data": { "CODEXK8S_BUILD_REF": build_ref, "CODEXK8S_KANIKO_CACHE_ENABLED": "false", "settings.yaml": "a: 1\nb: two\n" } }),
        ),
        30..50 => (
            format!("{core}/secrets"),
            json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": format!("s-{i}") },
                "data": { "CODEXK8S_BUILD_REF": base64::engine::general_purpose::STANDARD.encode(build_ref), "token": "c2VjcmV0" } }),
        ),
        50..65 => (
            format!("{apps}/deployments"),
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": format!("d-{i}") },
                "spec": { "replicas": 0, "selector": { "matchLabels": { "app.kubernetes.io/name": format!("d-{i}") } },
                    "template": { "metadata": { "labels": { "app.kubernetes.io/name": format!("d-{i}") } },
                        "spec": { "containers": [container] } } } }),
        ),
        65..75 => (
            format!("{core}/pods"),
            json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": format!("p-{i}"), "labels": labels },
                "spec": { "schedulingGates": [{ "name": "codex-k8s.dev/bench" }],
                    "containers": [{ "name": "w", "image": "ghcr.io/codex-k8s/worker:1.4.2", "env": [{ "name": "CODEXK8S_BUILD_REF", "value": "main" }] }] } }),
        ),
        75..85 => (
            format!("{core}/services"),
            json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": format!("svc-{i}"), "labels": labels },
                "spec": { "selector": { "app.kubernetes.io/name": format!("d-{i}") }, "ports": [{ "port": 80, "targetPort": 8080 }] } }),
        ),
        85..95 => (
            format!("{core}/serviceaccounts"),
            json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": format!("sa-{i}"), "labels": labels } }),
        ),
        _ => (
            format!("{batch}/cronjobs"),
            json!({ "apiVersion": "batch/v1", "kind": "CronJob", "metadata": { "name": format!("cj-{i}") },
                "spec": { "schedule": "0 3 * * *", "suspend": true, "jobTemplate": { "spec": { "template": {
                    "metadata": { "labels": labels },
                    "spec": { "restartPolicy": "OnFailure", "containers": [{ "name": "w", "image": "ghcr.io/codex-k8s/worker:1.4.2" }] } } } } } }),
        ),
    };
    (path, body, bad)
}

/// `(kind, namespace, name)` of what the bench planted as violating, and of every object it
/// created.
struct Planted {
    violating: BTreeSet<(String, String, String)>,
    created: BTreeSet<(String, String, String)>,
}

/// Creates the namespaces and `n` objects through the API server (16 requests at a time),
/// then waits for the controllers' ReplicaSets.
fn create_real(cp: &ControlPlane, n: usize) -> anyhow::Result<Planted> {
    use futures::StreamExt;
    let rt = tokio::runtime::Runtime::new()?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cp.ca_pem.as_bytes())?)
        // One request per connection at a time, as kubectl's clients: over one HTTP/2
        // connection, 16 streams at once trip h2's reset guard on a busy API server.
        .http1_only()
        .build()?;
    let namespaces: Vec<String> = (0..NAMESPACES).map(|i| format!("bench-{i}")).collect();
    for ns in &namespaces {
        cp.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
        ))?;
    }
    // Pods need their namespace's default ServiceAccount (the ServiceAccount admission).
    for ns in &namespaces {
        cp.wait_until(
            Duration::from_secs(60),
            "the default ServiceAccount",
            || {
                Ok(cp
                    .kubectl_output(&["-n", ns, "get", "serviceaccount", "default", "-o", "name"])
                    .is_ok())
            },
        )?;
    }
    let mut planted = Planted {
        violating: BTreeSet::new(),
        created: BTreeSet::new(),
    };
    let objects: Vec<(String, Value)> = (0..n)
        .map(|i| {
            let ns = &namespaces[i % NAMESPACES];
            let (path, body, bad) = real_object(i, ns);
            let key = (
                body["kind"].as_str().unwrap_or("").to_string(),
                ns.clone(),
                body["metadata"]["name"].as_str().unwrap_or("").to_string(),
            );
            if bad {
                planted.violating.insert(key.clone());
            }
            planted.created.insert(key);
            (path, body)
        })
        .collect();
    let start = Instant::now();
    rt.block_on(async {
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(objects.iter())
            .map(|(path, body)| {
                let (client, url) = (&client, format!("{}{path}", cp.server));
                async move {
                    let resp = client
                        .post(&url)
                        .bearer_auth("admin-token")
                        .json(body)
                        .send()
                        .await?;
                    let status = resp.status();
                    // A rerun of the example on a kept control plane finds them there.
                    if !status.is_success() && status != reqwest::StatusCode::CONFLICT {
                        anyhow::bail!("POST {url}: {status}: {}", resp.text().await?);
                    }
                    Ok(())
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()
    })?;
    let deployments = objects
        .iter()
        .filter(|(_, b)| b["kind"] == "Deployment")
        .count();
    println!(
        "created {n} objects in {NAMESPACES} namespaces in {:.1} s; waiting for the controllers",
        start.elapsed().as_secs_f64()
    );
    cp.wait_until(
        Duration::from_secs(600),
        "a ReplicaSet per Deployment",
        || {
            let out = cp.kubectl_output(&["get", "replicasets", "-A", "-o", "name"])?;
            Ok(out.lines().filter(|l| l.contains("/d-")).count() >= deployments)
        },
    )?;
    Ok(planted)
}

/// The audit found every planted violation, nothing else among the objects created, and
/// beyond them only the controllers' copies of violating objects.
fn check_real(report: &Value, planted: &Planted) -> anyhow::Result<()> {
    let mut found = BTreeSet::new();
    for v in report["details"]["violations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = (
            v["kind"].as_str().unwrap_or("").to_string(),
            v["namespace"].as_str().unwrap_or("").to_string(),
            v["name"].as_str().unwrap_or("").to_string(),
        );
        // A controller's copy of a violating object: a Deployment's ReplicaSet (its
        // template), a Service's Endpoints and EndpointSlices (its labels).
        let copy_of = |owner: &str| match key.0.as_str() {
            "ReplicaSet" => owner == "Deployment",
            "Endpoints" | "EndpointSlice" => owner == "Service",
            _ => false,
        };
        let copied = planted.violating.iter().any(|(k, ns, n)| {
            copy_of(k) && *ns == key.1 && (key.2 == *n || key.2.starts_with(&format!("{n}-")))
        });
        if planted.created.contains(&key) {
            found.insert(key);
        } else if !copied {
            anyhow::bail!("an unexpected violation: {v}");
        }
    }
    anyhow::ensure!(
        found == planted.violating,
        "found {} of the {} planted violating objects",
        found.len(),
        planted.violating.len()
    );
    Ok(())
}
