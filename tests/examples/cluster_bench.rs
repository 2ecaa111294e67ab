//! Benchmarks on the real control plane (issue 12, Performance), side by side in one run:
//!
//! 1. the admission latency kube-apiserver itself measures for the webhook
//!    (`apiserver_admission_webhook_admission_duration_seconds`) over N creates of a ~4 KB
//!    Deployment by a client in a loop, and the client's own create latency, with ck8s
//!    registered versus no webhook at all;
//! 2. `kubectl ck8s smoke` versus the runbook's own kubectl sequence, on the same API server.
//!
//! ```sh
//! cargo run -p ck8s-tests --example cluster_bench            # 2000 creates, 5 smoke rounds
//! CK8S_ADMISSION_BIN=path/to/ck8s-admission cargo run -p ck8s-tests --example cluster_bench -- 2000 5
//! ```
//! Without `CK8S_ADMISSION_BIN` the webhook is the workspace's `ck8s-admission` of the
//! example's profile; BENCHMARKS.md says which binary each recorded run used.

use ck8s_tests::cluster::ControlPlane;
use ck8s_tests::cluster_webhook::{Ck8s, WEBHOOK, register, unregister, wait_active};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let creates: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let cp = ControlPlane::shared();
    let rt = tokio::runtime::Runtime::new()?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cp.ca_pem.as_bytes())?)
        .build()?;

    println!("# admission latency, {creates} creates of a 4 KB Deployment each\n");
    let ns = cp.namespace("bench")?;
    let without = rt.block_on(create_loop(&client, &cp.server, &ns, "plain", creates))?;
    let ck8s = Ck8s::start(include_str!("../../deploy/base/policies.yaml"), &[], &[]);
    register(cp);
    wait_active(cp, &ns);
    let before = webhook_histogram(&cp.metrics()?);
    let with = rt.block_on(create_loop(&client, &cp.server, &ns, "judged", creates))?;
    let after = webhook_histogram(&cp.metrics()?);
    unregister(cp);
    drop(ck8s);
    let measured = after.minus(&before);
    println!("| | client create p50 | p99 | mean | webhook (API server) mean | p50 | p99 |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| no webhook | {} | {} | {} | - | - | - |",
        ms(pct(&without, 0.50)),
        ms(pct(&without, 0.99)),
        ms(mean(&without))
    );
    println!(
        "| ck8s registered | {} | {} | {} | {} | {} | {} |",
        ms(pct(&with, 0.50)),
        ms(pct(&with, 0.99)),
        ms(mean(&with)),
        ms(Duration::from_secs_f64(
            measured.sum / measured.count.max(1.0)
        )),
        measured.quantile(0.50),
        measured.quantile(0.99),
    );
    println!(
        "\n(webhook calls counted by the API server: {}; its quantiles are bucket upper bounds)\n",
        measured.count
    );

    println!("# kubectl ck8s smoke vs the runbook's kubectl sequence, {rounds} rounds\n");
    let prod = "codex-k8s-prod";
    let _ = cp.kubectl_output(&["create", "namespace", prod]);
    cp.wait_until(
        Duration::from_secs(60),
        "the default ServiceAccount",
        || {
            Ok(cp
                .kubectl_output(&["-n", prod, "get", "serviceaccount", "default", "-o", "name"])
                .is_ok())
        },
    )?;
    cp.apply_fixture("healthy", prod)?;
    let plugin = ck8s_tests::workspace_binary("kubectl-ck8s");
    let kubeconfig = cp.kubeconfig();
    let (mut smoke, mut runbook) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        Command::new(&plugin)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "-n",
                prod,
                "smoke",
                "--skip",
                "health,webhook",
                "-o",
                "json",
            ])
            .output()?;
        smoke.push(t.elapsed());
        let t = Instant::now();
        for line in ck8s_tests::RUNBOOK_SMOKE {
            cp.kubectl().args(line.split(' ')).output()?;
        }
        runbook.push(t.elapsed());
    }
    println!("| | min | median | max |\n| --- | --- | --- | --- |");
    for (name, v) in [
        ("kubectl ck8s smoke (probes skipped)", &smoke),
        ("runbook kubectl sequence (19 processes)", &runbook),
    ] {
        let mut v = v.clone();
        v.sort();
        println!(
            "| {name} | {} | {} | {} |",
            ms(v[0]),
            ms(v[v.len() / 2]),
            ms(v[v.len() - 1])
        );
    }
    println!("\nkubectl: {}", cp.kubectl_path().display());
    Ok(())
}

/// Creates `n` Deployments of about 4 KB in `ns` one after the other, each timed by the client.
async fn create_loop(
    client: &reqwest::Client,
    server: &str,
    ns: &str,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let url = format!("{server}/apis/apps/v1/namespaces/{ns}/deployments");
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let body = deployment(&format!("{prefix}-{i}"));
        let t = Instant::now();
        let resp = client
            .post(&url)
            .bearer_auth("admin-token")
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            anyhow::bail!("create {i}: {status}: {}", resp.text().await?);
        }
        times.push(t.elapsed());
    }
    Ok(times)
}

/// A Deployment of about 4 KB: the control plane's shape, env and labels included.
fn deployment(name: &str) -> Value {
    let env: Vec<Value> = (0..40)
        .map(|i| json!({ "name": format!("CODEXK8S_SETTING_{i:02}"), "value": format!("value-{i:02}-abcdefghijklmnopqrstuvwxyz") }))
        .chain(std::iter::once(json!({"name": "CODEXK8S_BUILD_REF", "value": "main"})))
        .collect();
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "labels": { "app.kubernetes.io/name": name, "codex-k8s.dev/project-id": "3" } },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": name } },
                "spec": { "containers": [{ "name": "main", "image": "registry.codex-k8s.dev/codex-k8s:1.0.0", "env": env }] }
            }
        }
    })
}

/// The API server's histogram of ck8s's validating CREATE calls.
#[derive(Default)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

fn webhook_histogram(metrics: &str) -> Histogram {
    let mut h = Histogram::default();
    let ours = |l: &str| {
        l.contains(&format!("name=\"{WEBHOOK}\""))
            && l.contains("operation=\"CREATE\"")
            && l.contains("type=\"validating\"")
    };
    for line in metrics.lines().filter(|l| ours(l)) {
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if line.starts_with("apiserver_admission_webhook_admission_duration_seconds_bucket") {
            let le = line
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("+Inf");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            match h.buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += value,
                None => h.buckets.push((le, value)),
            }
        } else if line.starts_with("apiserver_admission_webhook_admission_duration_seconds_sum") {
            h.sum += value;
        } else if line.starts_with("apiserver_admission_webhook_admission_duration_seconds_count") {
            h.count += value;
        }
    }
    h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    h
}

impl Histogram {
    fn minus(&self, before: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| {
                    let b = before
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |x| x.1);
                    (*le, c - b)
                })
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// The upper bound of the bucket that holds quantile `q`.
    fn quantile(&self, q: f64) -> String {
        let want = q * self.count;
        match self.buckets.iter().find(|(_, c)| *c >= want) {
            Some((le, _)) if le.is_finite() => format!("≤ {} ms", le * 1000.0),
            _ => "> largest bucket".into(),
        }
    }
}

fn pct(v: &[Duration], q: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / v.len().max(1) as u32
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
