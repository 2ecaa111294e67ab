//! What a create costs the cluster with each guard (issues 19 and 24), side by side in one run
//! on the real control plane: no policy, the three built-in rules as a native
//! ValidatingAdmissionPolicy (CEL in the API server, `policies/cel/testdata/policies/08..10`),
//! ck8s-admission with the WASM built-ins, and ck8s-admission serving the same three VAP files.
//!
//! Each run creates N Deployments of about 4 KB, by 1 client in a loop or by 8 at once; the
//! variants alternate within each round, and each run's Deployments are deleted before the
//! next; each round starts one variant later than the one before. Per variant and client
//! count, the median over the rounds (and the spread, min–max) of: the client's create
//! latency p50 and p99, creates per second, the CPU time per create of
//! kube-apiserver, etcd and ck8s-admission (from /proc: the threads' run time in nanoseconds,
//! or the process's 10 ms ticks when one of its threads ended during the run), and the
//! admission time the API server itself records (`apiserver_admission_webhook_admission_duration_seconds` for the webhook,
//! `apiserver_admission_controller_admission_duration_seconds{name="ValidatingAdmissionPolicy"}`
//! for the VAP), and the TLS handshakes ck8s-admission completed per 1000 creates (its
//! `ck8s_admission_tls_handshakes_total`: how well the API server reuses its connections). The
//! controller manager is stopped (SIGSTOP) while it runs, so that no ReplicaSet is made
//! meanwhile.
//!
//! A second table pairs each ck8s variant with the native VAP round by round (their
//! difference in the client's p50 and in all processes' CPU per create, and in how many rounds
//! ck8s was lower): a round runs its variants within seconds, so the pairs cancel most of the
//! drift of a noisy machine between rounds, which the medians of the first table carry.
//!
//! `CK8S_ADMISSION_BIN_B` adds a fifth variant: that other build of ck8s-admission with the
//! WASM built-ins, alternated with the rest, to compare two builds in one run; a last table
//! gives their ratio round by round (the whole process, and above the floor with `CK8S_FLOOR_BIN`).
//!
//! `CK8S_FLOOR_BIN` adds the transport's floor: `admission/examples/stack_floor.rs` registered
//! as the webhook (TLS, HTTP/1.1, an allowed answer, no other work), on one single-threaded
//! runtime, the least any webhook on this stack can cost. Its CPU per review, measured in the
//! same rounds, is the part of ck8s-admission's that is the transport and the wake-ups, and a
//! third table gives ck8s-admission's own CPU above it, round by round.
//!
//! A third argument paces the one-client runs at that many creates a second (a cluster's rate,
//! 150, rather than as fast as one client goes): each create starts on its slot of a fixed
//! schedule, so every review finds the webhook idle, as at a real cluster's rate.
//!
//! ```sh
//! CARGO_TARGET_DIR=target/rel cargo build --release -p ck8s-admission
//! CK8S_ADMISSION_BIN=target/rel/release/ck8s-admission \
//!   cargo run -q -p ck8s-tests --example create_cost -- 1000 3 [150]   # creates per run, rounds, pace
//! ```

use ck8s_tests::cluster::ControlPlane;
use ck8s_tests::cluster_webhook::{
    Ck8s, WEBHOOK, bench_deployment, register, unregister, wait_active,
};
use ck8s_tests::repo;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    NoPolicy,
    NativeVap,
    Ck8sWasm,
    Ck8sCel,
    /// `CK8S_ADMISSION_BIN_B` with the WASM built-ins.
    Ck8sWasmB,
    /// `CK8S_FLOOR_BIN`: the transport alone.
    Floor,
}

impl Variant {
    /// The variants of this run: the four, and the B build when one is given.
    fn all() -> Vec<Variant> {
        let mut all = vec![
            Variant::NoPolicy,
            Variant::NativeVap,
            Variant::Ck8sWasm,
            Variant::Ck8sCel,
        ];
        if bin_b().is_some() {
            all.push(Variant::Ck8sWasmB);
        }
        if floor_bin().is_some() {
            all.push(Variant::Floor);
        }
        all
    }

    fn label(self) -> &'static str {
        match self {
            Variant::NoPolicy => "no policy",
            Variant::NativeVap => "native VAP (CEL in the API server)",
            Variant::Ck8sWasm => "ck8s-admission, WASM built-ins",
            Variant::Ck8sCel => "ck8s-admission, the same VAP files",
            Variant::Ck8sWasmB => "ck8s-admission B (CK8S_ADMISSION_BIN_B), WASM built-ins",
            Variant::Floor => "transport floor (CK8S_FLOOR_BIN: TLS, HTTP/1.1, no work)",
        }
    }

    /// Whether the variant is a webhook process this run starts and measures.
    fn is_webhook(self) -> bool {
        matches!(
            self,
            Variant::Ck8sWasm | Variant::Ck8sCel | Variant::Ck8sWasmB | Variant::Floor
        )
    }
}

fn bin_b() -> Option<PathBuf> {
    std::env::var_os("CK8S_ADMISSION_BIN_B").map(PathBuf::from)
}

fn floor_bin() -> Option<PathBuf> {
    std::env::var_os("CK8S_FLOOR_BIN").map(PathBuf::from)
}

/// One run's figures.
struct Sample {
    latencies: Vec<Duration>,
    wall: Duration,
    /// CPU time of kube-apiserver, etcd, ck8s-admission.
    cpu: [Duration; 3],
    /// The API server's own admission time: (sum in seconds, count).
    admission: (f64, f64),
    /// TLS handshakes ck8s-admission completed during the run.
    handshakes: f64,
}

fn vap_files() -> Vec<PathBuf> {
    [
        "08-ck8s-build-ref.yaml",
        "09-ck8s-legacy-labels.yaml",
        "10-ck8s-kaniko-cache.yaml",
    ]
    .iter()
    .map(|f| repo().join("policies/cel/testdata/policies").join(f))
    .collect()
}

fn main() -> anyhow::Result<()> {
    if floor_bin().is_some() {
        // The floor on one single-threaded runtime (ck8s-admission ignores the variable).
        // SAFETY: no other thread has started yet.
        unsafe { std::env::set_var("STACK_FLOOR_RUNTIME", "current") };
    }
    let mut args = std::env::args().skip(1);
    let creates: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let pace: Option<f64> = args.next().map(|a| a.parse()).transpose()?;
    anyhow::ensure!(
        pace.is_none_or(|r| r.is_finite() && r > 0.0),
        "the pace must be a positive number of creates a second"
    );
    let cp = ControlPlane::shared();
    let ns = cp.namespace("cost")?;
    let apiserver: u32 = std::fs::read_to_string(cp.dir.join("kube-apiserver.pid"))?
        .trim()
        .parse()?;
    let etcd = child_named("etcd").ok_or_else(|| anyhow::anyhow!("no etcd child"))?;
    let controllers = child_named("kube-controller")
        .ok_or_else(|| anyhow::anyhow!("no kube-controller-manager child"))?;
    let rt = tokio::runtime::Runtime::new()?;
    // A client per run: connections idle through a variant's setup may have been closed.
    let new_client = || -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(cp.ca_pem.as_bytes())?)
            .http1_only()
            .build()?)
    };
    let paced = pace.map_or(String::new(), |r| {
        format!(", one client paced at {r} creates/s")
    });
    println!(
        "# the cost of a create, {creates} creates of a 4 KB Deployment per run, {rounds} rounds, variants alternated{paced}\n"
    );
    // SAFETY: signalling a child process of this one.
    unsafe { libc::kill(controllers as i32, libc::SIGSTOP) };
    let mut samples: Vec<(Variant, usize, usize, Sample)> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for clients in [1usize, 8] {
            for round in 0..rounds {
                // Each round starts one variant later, so that no variant always runs first
                // (or always right after another's teardown).
                let mut order = Variant::all();
                let len = order.len();
                order.rotate_left(round % len);
                for v in order {
                    let guard = setup(cp, &ns, v)?;
                    let handshakes_before = guard.as_ref().map_or(0.0, handshakes);
                    let ck8s_pid = guard.as_ref().map(|c| c.child.id());
                    let before = (
                        CpuClock::of(apiserver),
                        CpuClock::of(etcd),
                        ck8s_pid.map(CpuClock::of),
                        admission_time(&cp.metrics()?, v),
                    );
                    let prefix = format!("{}-{round}-{clients}", v as u8);
                    let t = Instant::now();
                    let client = new_client()?;
                    let latencies = rt.block_on(create_concurrently(
                        &client,
                        &cp.server,
                        &ns,
                        &prefix,
                        creates,
                        clients,
                        pace.filter(|_| clients == 1),
                    ))?;
                    let wall = t.elapsed();
                    let after_admission = admission_time(&cp.metrics()?, v);
                    let sample = Sample {
                        latencies,
                        wall,
                        cpu: [
                            CpuClock::of(apiserver).since(&before.0),
                            CpuClock::of(etcd).since(&before.1),
                            ck8s_pid
                                .zip(before.2.as_ref())
                                .map_or(Duration::ZERO, |(pid, b)| CpuClock::of(pid).since(b)),
                        ],
                        admission: (
                            after_admission.0 - before.3.0,
                            after_admission.1 - before.3.1,
                        ),
                        handshakes: guard.as_ref().map_or(0.0, handshakes) - handshakes_before,
                    };
                    teardown(cp, &ns, v, guard)?;
                    eprintln!(
                        "{:<40} clients {clients} round {round}: {:.0} creates/s",
                        v.label(),
                        creates as f64 / wall.as_secs_f64()
                    );
                    samples.push((v, clients, round, sample));
                    // One deletecollection: the run's Deployments gone before the next (again
                    // if the connection it was sent on was closed meanwhile).
                    let url = format!("{}/apis/apps/v1/namespaces/{ns}/deployments", cp.server);
                    let mut attempt = 0;
                    while let Err(e) = rt.block_on(async {
                        client
                            .delete(&url)
                            .bearer_auth("admin-token")
                            .send()
                            .await?
                            .error_for_status()
                    }) {
                        attempt += 1;
                        anyhow::ensure!(attempt < 5, "delete the run's Deployments: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        }
        Ok(())
    })();
    // SAFETY: as above.
    unsafe { libc::kill(controllers as i32, libc::SIGCONT) };
    result?;
    report(&samples, creates);
    report_paired(&samples, creates);
    report_above_floor(&samples, creates);
    report_builds(&samples, creates);
    Ok(())
}

/// Puts the variant's guard in force and waits until a bad Deployment is denied by it.
fn setup(cp: &ControlPlane, ns: &str, v: Variant) -> anyhow::Result<Option<Ck8s>> {
    let guard = match v {
        Variant::NoPolicy => None,
        Variant::NativeVap => {
            for f in vap_files() {
                cp.apply(&std::fs::read_to_string(f)?)?;
            }
            None
        }
        Variant::Ck8sWasm | Variant::Ck8sWasmB => {
            let config = include_str!("../../deploy/base/policies.yaml");
            let c = match v {
                Variant::Ck8sWasmB => Ck8s::start_bin(bin_b(), config, &[], &[]),
                _ => Ck8s::start(config, &[], &[]),
            };
            register(cp);
            wait_active(cp, ns);
            Some(c)
        }
        Variant::Ck8sCel => {
            let files: Vec<(String, Vec<u8>)> = vap_files()
                .iter()
                .map(|f| {
                    (
                        f.file_name().unwrap().to_string_lossy().into_owned(),
                        std::fs::read(f).unwrap(),
                    )
                })
                .collect();
            let files: Vec<(&str, Vec<u8>)> =
                files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
            let kubeconfig = format!("--kubeconfig={}", cp.kubeconfig().display());
            let c = Ck8s::start("policies: {}\n", &files, &["--no-builtin", &kubeconfig]);
            register(cp);
            Some(c)
        }
        Variant::Floor => {
            let c = Ck8s::start_bin(floor_bin(), "", &[], &[]);
            register(cp);
            // The floor allows everything: in force once a dry run has reached it.
            cp.wait_until(Duration::from_secs(60), "the floor called", || {
                dry_run_bad(cp, ns);
                Ok(c.metric("stack_floor_reviews_total") > 0)
            })?;
            return Ok(Some(c));
        }
    };
    if v != Variant::NoPolicy {
        cp.wait_until(Duration::from_secs(60), "the guard in force", || {
            Ok(!dry_run_bad(cp, ns))
        })?;
    }
    Ok(guard)
}

fn teardown(cp: &ControlPlane, ns: &str, v: Variant, guard: Option<Ck8s>) -> anyhow::Result<()> {
    match v {
        Variant::NoPolicy => return Ok(()),
        Variant::NativeVap => {
            for f in vap_files() {
                let _ =
                    cp.kubectl_output(&["delete", "-f", f.to_str().unwrap(), "--ignore-not-found"]);
            }
        }
        Variant::Ck8sWasm | Variant::Ck8sCel | Variant::Ck8sWasmB => {
            unregister(cp);
            drop(guard);
        }
        Variant::Floor => {
            // Stopped first: while it is registered and gone, the API server's calls fail
            // (failurePolicy Fail), so an allowed dry run below means the registration is gone.
            drop(guard);
            unregister(cp);
        }
    }
    cp.wait_until(Duration::from_secs(60), "the guard gone", || {
        Ok(dry_run_bad(cp, ns))
    })?;
    Ok(())
}

/// Whether a server-side dry run of a Deployment with a bad build ref is allowed.
fn dry_run_bad(cp: &ControlPlane, ns: &str) -> bool {
    let mut bad = bench_deployment("probe");
    bad["spec"]["template"]["spec"]["containers"][0]["env"][40]["value"] = json!("-b x");
    bad["metadata"]["namespace"] = json!(ns);
    let (ok, _, _) = ck8s_tests::cluster_webhook::kubectl_in(
        cp,
        &["create", "--dry-run=server", "-f", "-"],
        &bad.to_string(),
    );
    ok
}

/// The pid of this process's child whose command name starts with `name`.
fn child_named(name: &str) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (comm, rest) = stat.split_once(") ")?;
        let comm = comm.split_once('(')?.1;
        let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
        (ppid == me && comm.starts_with(name)).then_some(pid)
    })
}

/// A process's CPU time so far: each thread's run time from the scheduler, in nanoseconds
/// (`/proc/<pid>/task/*/schedstat`), and the process's user + system time in clock ticks
/// (`/proc/<pid>/stat`, 10 ms), which also holds the threads that have ended.
struct CpuClock {
    ticks: Duration,
    threads: HashMap<u32, u64>,
}

impl CpuClock {
    fn of(pid: u32) -> CpuClock {
        let mut threads = HashMap::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
                let ns = std::fs::read_to_string(task.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split(' ').next()?.parse().ok());
                if let (Some(tid), Some(ns)) = (tid, ns) {
                    threads.insert(tid, ns);
                }
            }
        }
        CpuClock {
            ticks: ticks_of(pid),
            threads,
        }
    }

    /// The CPU used since `before`: to the nanosecond when every thread of `before` is still
    /// there (a thread that ended took its run time with it), else in the process's ticks.
    fn since(&self, before: &CpuClock) -> Duration {
        if before.threads.is_empty() || before.threads.keys().any(|t| !self.threads.contains_key(t))
        {
            eprintln!(
                "note: a thread ended during the run; its process's CPU counted in clock ticks"
            );
            return self.ticks.saturating_sub(before.ticks);
        }
        let ns: u64 = self
            .threads
            .iter()
            .map(|(t, ns)| ns.saturating_sub(before.threads.get(t).copied().unwrap_or(0)))
            .sum();
        Duration::from_nanos(ns)
    }
}

/// User + system CPU time of `pid` so far, in clock ticks.
fn ticks_of(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1))
}

/// TLS handshakes ck8s-admission has completed (full and resumed).
fn handshakes(ck8s: &Ck8s) -> f64 {
    ck8s.metrics()
        .lines()
        .filter(|l| l.starts_with("ck8s_admission_tls_handshakes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `(sum, count)` of the API server's admission time for CREATEs by the variant's guard.
fn admission_time(metrics: &str, v: Variant) -> (f64, f64) {
    let webhook = format!("name=\"{WEBHOOK}\"");
    let (family, name) = match v {
        Variant::NoPolicy | Variant::NativeVap => (
            "apiserver_admission_controller_admission_duration_seconds",
            "name=\"ValidatingAdmissionPolicy\"",
        ),
        Variant::Ck8sWasm | Variant::Ck8sCel | Variant::Ck8sWasmB | Variant::Floor => (
            "apiserver_admission_webhook_admission_duration_seconds",
            webhook.as_str(),
        ),
    };
    let mine = |l: &str| l.contains(name) && l.contains("operation=\"CREATE\"");
    let mut out = (0.0, 0.0);
    for line in metrics.lines().filter(|l| mine(l)) {
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if line.starts_with(&format!("{family}_sum")) {
            out.0 += value;
        } else if line.starts_with(&format!("{family}_count")) {
            out.1 += value;
        }
    }
    out
}

/// `n` creates by `clients` loops at once, each loop's creates `pace` a second if given (on a
/// fixed schedule: a late create does not push back the ones after it); every create's latency.
async fn create_concurrently(
    client: &reqwest::Client,
    server: &str,
    ns: &str,
    prefix: &str,
    n: usize,
    clients: usize,
    pace: Option<f64>,
) -> anyhow::Result<Vec<Duration>> {
    let url = format!("{server}/apis/apps/v1/namespaces/{ns}/deployments");
    let start = tokio::time::Instant::now();
    let loops = (0..clients).map(|c| {
        let url = url.clone();
        async move {
            let mut times = Vec::new();
            for (k, i) in (c..n).step_by(clients).enumerate() {
                if let Some(rate) = pace {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / rate))
                        .await;
                }
                let body = bench_deployment(&format!("{prefix}-{i}"));
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .bearer_auth("admin-token")
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("create {i}: {e:?}"))?;
                let status = resp.status();
                if !status.is_success() {
                    anyhow::bail!("create {i}: {status}: {}", resp.text().await?);
                }
                times.push(t.elapsed());
            }
            Ok(times)
        }
    });
    let all = futures::future::try_join_all(loops).await?;
    Ok(all.into_iter().flatten().collect())
}

fn report(samples: &[(Variant, usize, usize, Sample)], creates: usize) {
    let ms = |d: f64| format!("{:.2}", d * 1e3);
    println!(
        "| variant | clients | client p50 ms | p99 ms | creates/s | CPU/create ms: apiserver | etcd | ck8s | all | admission mean ms (API server) | TLS handshakes per 1000 creates |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for clients in [1usize, 8] {
        for v in Variant::all() {
            let runs: Vec<&Sample> = samples
                .iter()
                .filter(|(x, c, _, _)| *x == v && *c == clients)
                .map(|(_, _, _, s)| s)
                .collect();
            // Median (min–max) over the rounds.
            let stat = |f: &dyn Fn(&Sample) -> f64, show: &dyn Fn(f64) -> String| {
                spread(runs.iter().map(|s| f(s)).collect(), show)
            };
            let q = |s: &Sample, q: f64| {
                let mut v = s.latencies.clone();
                v.sort();
                v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64()
            };
            let per = |d: Duration| d.as_secs_f64() / creates as f64;
            println!(
                "| {} | {clients} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                v.label(),
                stat(&|s| q(s, 0.5), &ms),
                stat(&|s| q(s, 0.99), &ms),
                stat(&|s| creates as f64 / s.wall.as_secs_f64(), &|x| format!(
                    "{x:.0}"
                )),
                stat(&|s| per(s.cpu[0]), &ms),
                stat(&|s| per(s.cpu[1]), &ms),
                stat(&|s| per(s.cpu[2]), &ms),
                stat(&|s| per(s.cpu[0] + s.cpu[1] + s.cpu[2]), &ms),
                stat(
                    &|s| if s.admission.1 > 0.0 {
                        s.admission.0 / s.admission.1
                    } else {
                        0.0
                    },
                    &ms
                ),
                stat(&|s| s.handshakes * 1000.0 / creates as f64, &|x| format!(
                    "{x:.1}"
                )),
            );
        }
    }
}

/// The goal's comparison (ck8s against the native VAP), paired round by round: a round runs
/// every variant within seconds of each other, so the difference in a round cancels most of
/// the machine's drift between rounds, which the medians above carry.
fn report_paired(samples: &[(Variant, usize, usize, Sample)], creates: usize) {
    let p50 = |s: &Sample| {
        let mut v = s.latencies.clone();
        v.sort();
        v[((v.len() as f64 - 1.0) * 0.5).round() as usize].as_secs_f64() * 1e3
    };
    let cpu_all =
        |s: &Sample| s.cpu.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / creates as f64;
    println!(
        "\nPaired by round, ck8s minus the native VAP (median, min–max; rounds where ck8s is lower):\n"
    );
    println!("| variant | clients | client p50 ms | CPU/create ms, all processes |");
    println!("| --- | --- | --- | --- |");
    for clients in [1usize, 8] {
        for v in Variant::all() {
            if !v.is_webhook() || v == Variant::Floor {
                continue;
            }
            let pairs: Vec<(&Sample, &Sample)> = samples
                .iter()
                .filter(|(x, c, _, _)| *x == v && *c == clients)
                .filter_map(|(_, _, r, s)| {
                    Some((s, in_round(samples, Variant::NativeVap, clients, *r)?))
                })
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let column = |f: &dyn Fn(&Sample) -> f64| {
                let d: Vec<f64> = pairs.iter().map(|(s, vap)| f(s) - f(vap)).collect();
                let lower = d.iter().filter(|x| **x < 0.0).count();
                let n = d.len();
                format!("{}; {lower} of {n}", spread(d, &|x| format!("{x:+.2}")))
            };
            println!(
                "| {} | {clients} | {} | {} |",
                v.label(),
                column(&p50),
                column(&cpu_all)
            );
        }
    }
}

/// ck8s-admission's CPU per review above the transport's floor, round by round: what it costs
/// beyond the least any webhook on this stack costs in the same minute.
fn report_above_floor(samples: &[(Variant, usize, usize, Sample)], creates: usize) {
    if floor_bin().is_none() {
        return;
    }
    let own = |s: &Sample| webhook_ms_per_review(s, creates);
    println!(
        "\nPaired by round, the webhook process's CPU per review: the floor, and each ck8s variant minus the floor (median, min–max):\n"
    );
    println!("| variant | clients | CPU per review ms | minus the floor's, same round |");
    println!("| --- | --- | --- | --- |");
    for clients in [1usize, 8] {
        for v in Variant::all().into_iter().filter(|v| v.is_webhook()) {
            let mut own_ms = Vec::new();
            let mut above = Vec::new();
            for (_, _, round, s) in samples
                .iter()
                .filter(|(x, c, _, _)| *x == v && *c == clients)
            {
                own_ms.push(own(s));
                if let Some(f) = in_round(samples, Variant::Floor, clients, *round) {
                    above.push(own(s) - own(f));
                }
            }
            let ms = |x: f64| format!("{x:.3}");
            // The floor has nothing above itself.
            let above = if above.is_empty() || v == Variant::Floor {
                "-".to_owned()
            } else {
                spread(above, &ms)
            };
            println!(
                "| {} | {clients} | {} | {above} |",
                v.label(),
                spread(own_ms, &ms)
            );
        }
    }
}

/// With `CK8S_ADMISSION_BIN_B`, the two builds' ratio round by round: ck8s-admission's CPU per
/// review over B's, the whole process and (with the floor) above the floor. A ratio within one
/// run is what these noisy machines let compare: both builds see the same minute.
fn report_builds(samples: &[(Variant, usize, usize, Sample)], creates: usize) {
    if bin_b().is_none() {
        return;
    }
    let own = |s: &Sample| webhook_ms_per_review(s, creates);
    let find =
        |v: Variant, clients: usize, round: usize| in_round(samples, v, clients, round).map(own);
    println!(
        "\nPaired by round, ck8s-admission's CPU per review over B's, WASM built-ins (median, min–max; rounds where ck8s-admission is lower):\n"
    );
    println!("| clients | whole process | above the floor's, same round |");
    println!("| --- | --- | --- |");
    for clients in [1usize, 8] {
        let mut whole = Vec::new();
        let mut above = Vec::new();
        for (_, _, round, s) in samples
            .iter()
            .filter(|(x, c, _, _)| *x == Variant::Ck8sWasm && *c == clients)
        {
            let Some(b) = find(Variant::Ck8sWasmB, clients, *round) else {
                continue;
            };
            whole.push(own(s) / b);
            // A round whose B cost no more than the floor (noise) has no ratio above it.
            if let Some(floor) = find(Variant::Floor, clients, *round)
                && b > floor
            {
                above.push((own(s) - floor) / (b - floor));
            }
        }
        let column = |xs: Vec<f64>| {
            if xs.is_empty() {
                return "-".to_owned();
            }
            let lower = xs.iter().filter(|x| **x < 1.0).count();
            let n = xs.len();
            format!("{}; {lower} of {n}", spread(xs, &|x| format!("{x:.3}")))
        };
        println!("| {clients} | {} | {} |", column(whole), column(above));
    }
}

/// The sample of `variant` at `clients` in `round`, if the run has one.
fn in_round(
    samples: &[(Variant, usize, usize, Sample)],
    variant: Variant,
    clients: usize,
    round: usize,
) -> Option<&Sample> {
    samples
        .iter()
        .find(|(v, c, r, _)| *v == variant && *c == clients && *r == round)
        .map(|(_, _, _, s)| s)
}

/// The webhook process's CPU per review in ms (its CPU is the third of a sample's processes).
fn webhook_ms_per_review(s: &Sample, creates: usize) -> f64 {
    s.cpu[2].as_secs_f64() * 1e3 / creates as f64
}

/// `median (min–max)` of `xs` (not empty), each shown by `show`.
fn spread(mut xs: Vec<f64>, show: &dyn Fn(f64) -> String) -> String {
    xs.sort_by(f64::total_cmp);
    let (min, median, max) = (xs[0], xs[xs.len() / 2], xs[xs.len() - 1]);
    format!("{} ({}–{})", show(median), show(min), show(max))
}
