//! Benchmarks on the real control plane (issue 12, Performance), side by side in one run:
//!
//! 1. the admission latency kube-apiserver itself measures for the webhook
//!    (`apiserver_admission_webhook_admission_duration_seconds`) over N creates of a ~4 KB
//!    Deployment by a client in a loop, and the client's own create latency, with ck8s
//!    registered versus no webhook at all;
//! 2. `kubectl ck8s smoke` (every check, its probes through port-forward to kwok's nodes)
//!    versus the runbook's own kubectl sequence (`ck8s_tests::RUNBOOK_SMOKE`, one process per
//!    line), on the same API server and the `healthy` fixture rolled out by the real
//!    controllers in `codex-k8s-prod`: one warm-up each, then alternately, wall time and the
//!    child processes' CPU time.
//!
//! ```sh
//! cargo run -q -p ck8s-tests --example cluster_bench -- 2000 5   # creates, smoke rounds
//! CK8S_ADMISSION_BIN=path/to/ck8s-admission CK8S_PLUGIN_BIN=path/to/kubectl-ck8s \
//!   cargo run -q -p ck8s-tests --example cluster_bench -- 2000 5
//! ```
//! Without `CK8S_ADMISSION_BIN` / `CK8S_PLUGIN_BIN` the webhook and the plugin are the
//! workspace's binaries of the example's profile; BENCHMARKS.md says which binaries each
//! recorded run used.

use ck8s_tests::cluster::{ControlPlane, codex_app};
use ck8s_tests::cluster_webhook::{
    Ck8s, WEBHOOK, bench_deployment, register, unregister, wait_active,
};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let creates: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let cp = ControlPlane::shared();
    // The smoke half first, on a control plane with no backlog: after thousands of creates the
    // deployment controller (20 requests/s, kube-controller-manager's default) would still be
    // making their ReplicaSets when the fixture wants rolling out.
    smoke_vs_runbook(cp, rounds)?;
    admission_latency(cp, creates)
}

/// The smoke half: `kubectl ck8s smoke` against the runbook's kubectl sequence.
fn smoke_vs_runbook(cp: &ControlPlane, rounds: usize) -> anyhow::Result<()> {
    println!("# kubectl ck8s smoke vs the runbook's kubectl sequence, {rounds} rounds\n");
    let prod = "codex-k8s-prod";
    cp.kubectl_output(&["create", "namespace", prod])?;
    // The fixture's bare Pods are admitted only once the namespace has its ServiceAccount.
    cp.wait_until(
        Duration::from_secs(60),
        "the default ServiceAccount",
        || {
            Ok(cp
                .kubectl_output(&["-n", prod, "get", "serviceaccount", "default", "-o", "name"])
                .is_ok())
        },
    )?;
    cp.serve_app_ports(prod, codex_app())?;
    // The fixture has logs for the control plane and the worker; the runbook reads codex-k8s's too.
    let now = format!("{:.9}", jiff::Timestamp::now());
    cp.serve_logs(
        &format!("{prod}-codex-k8s"),
        prod,
        &[],
        "codex-k8s",
        &[(now, "level=info msg=\"api-gateway started\"".to_string())],
        None,
    )?;
    cp.apply_fixture("healthy", prod)?;
    for d in ["codex-k8s", "codex-k8s-worker", "codex-k8s-control-plane"] {
        cp.wait_until(Duration::from_secs(60), "kwok serving the logs", || {
            Ok(cp
                .kubectl_output(&["-n", prod, "logs", &format!("deploy/{d}"), "--tail=1"])
                .is_ok())
        })?;
    }
    // smoke judges the newest migrate Job: its pod completes on kwok.
    cp.kubectl_output(&[
        "-n",
        prod,
        "wait",
        "--for=condition=Complete",
        "job",
        "--all",
        "--timeout=120s",
    ])?;
    let plugin = std::env::var_os("CK8S_PLUGIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| ck8s_tests::workspace_binary("kubectl-ck8s"));
    let kubeconfig = cp.kubeconfig();
    let smoke = || -> anyhow::Result<usize> {
        let out = Command::new(&plugin)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "-n",
                prod,
                "--domain",
                "platform.codex-k8s.dev",
                "smoke",
                "-o",
                "json",
            ])
            .env_remove("CK8S_PROBE_DIRECT")
            .output()?;
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.code() != Some(0) {
            anyhow::bail!(
                "smoke did not pass on the healthy fixture (exit {:?}): {report:#}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(report["checks"].as_array().map_or(0, |c| c.len()))
    };
    let runbook = || -> anyhow::Result<()> {
        for line in ck8s_tests::RUNBOOK_SMOKE {
            let out = cp.kubectl().args(line.split(' ')).output()?;
            if !out.status.success() {
                anyhow::bail!("kubectl {line}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(())
    };
    // One warm-up of each (kubectl's discovery cache, the page cache, kwok's forwards), then
    // A B A B: both see the same drift of a shared machine.
    let checks = smoke()?;
    runbook()?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(timed(|| smoke().map(|_| ()))?);
        b.push(timed(runbook)?);
    }
    let mut ratios: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| x.wall.as_secs_f64() / y.wall.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!("| | wall min | median | max | CPU (user+sys) median |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, runs) in [
        (
            format!("kubectl ck8s smoke ({checks} checks, probes through port-forward)"),
            &a,
        ),
        (
            format!(
                "runbook kubectl sequence ({} processes)",
                ck8s_tests::RUNBOOK_SMOKE.len()
            ),
            &b,
        ),
    ] {
        let mut wall: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
        let mut cpu: Vec<Duration> = runs.iter().map(|r| r.cpu).collect();
        wall.sort();
        cpu.sort();
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(wall[0]),
            ms(wall[wall.len() / 2]),
            ms(wall[wall.len() - 1]),
            ms(cpu[cpu.len() / 2]),
        );
    }
    println!(
        "\nwall-time ratio smoke / runbook, pair by pair: min {:.3}, median {:.3}, max {:.3}",
        ratios[0],
        ratios[ratios.len() / 2],
        ratios[ratios.len() - 1]
    );
    println!(
        "plugin: {}\nkubectl: {}",
        plugin.display(),
        cp.kubectl_path().display()
    );
    Ok(())
}

/// The admission half: creates with no webhook, then with ck8s registered; the API server's histogram.
fn admission_latency(cp: &ControlPlane, creates: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cp.ca_pem.as_bytes())?)
        .build()?;
    println!("# admission latency, {creates} creates of a 4 KB Deployment each\n");
    let ns = cp.namespace("bench")?;
    let without = rt.block_on(create_loop(&client, &cp.server, &ns, "plain", creates))?;
    // Both loops run beside the controller making their Deployments' ReplicaSets: the second
    // starts once the first one's are made.
    cp.wait_until(
        Duration::from_secs(900),
        "the deployment controller's ReplicaSets",
        || {
            Ok(cp
                .kubectl_output(&["-n", &ns, "get", "rs", "-o", "name"])?
                .lines()
                .count()
                >= creates)
        },
    )?;
    let ck8s = Ck8s::start(include_str!("../../deploy/base/policies.yaml"), &[], &[]);
    register(cp);
    wait_active(cp, &ns);
    let before = webhook_histogram(&cp.metrics()?);
    let with = rt.block_on(create_loop(&client, &cp.server, &ns, "judged", creates))?;
    let after = webhook_histogram(&cp.metrics()?);
    // What else the webhook may have judged meanwhile: the controller's ReplicaSets.
    let judged_rs = cp
        .kubectl_output(&["-n", &ns, "get", "rs", "-o", "name"])?
        .lines()
        .filter(|l| l.starts_with("replicaset.apps/judged-"))
        .count();
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
        "\n(validating CREATE calls of ck8s counted by the API server during the judged loop: {}; \
         ReplicaSets of the judged Deployments made by the controller by its end: {judged_rs}; \
         the API server's quantiles are bucket upper bounds)\n",
        measured.count
    );
    Ok(())
}

/// One timed run: wall time, and the CPU time of the child processes it ran and reaped.
struct Run {
    wall: Duration,
    cpu: Duration,
}

fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Run> {
    let (cpu0, t) = (children_cpu(), Instant::now());
    f()?;
    Ok(Run {
        wall: t.elapsed(),
        cpu: children_cpu().saturating_sub(cpu0),
    })
}

/// User + system time of this process's terminated and reaped children (`RUSAGE_CHILDREN`);
/// the control plane's processes run until the end, so they are not in it.
fn children_cpu() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
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
        let body = bench_deployment(&format!("{prefix}-{i}"));
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
