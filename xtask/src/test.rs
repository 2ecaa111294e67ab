//! `cargo xtask test`: the whole suite of `cargo test --workspace`, with its test binaries run
//! side by side.
//!
//! Most of the suite's time is spent in a few binaries that each start a control plane of their
//! own (`tests/tests/real_*.rs`) or build the release (`xtask/tests/dist.rs`), and they mostly
//! wait: for controllers, for rollouts, for the API server. `cargo test` runs binaries one after
//! another; this runs `--jobs` of them at once, the longest first, while the control plane's Go
//! build (`tests/cluster/build.sh`, flock-guarded, a no-op when cached) runs beside the Rust
//! build. Each binary's output is printed whole when it ends, in cargo's format, then a summary
//! with every binary's time and the closing `tests: N passed, N failed, N ignored` line.
//!
//! What is run is exactly what `cargo test --workspace` runs: every test target of every
//! member (found from `cargo test --no-run`'s artifacts, not from a list kept here) and the
//! doc tests, each binary in its package's directory as cargo runs it.

use anyhow::{Context, Result, bail};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct TestArgs {
    /// How many test binaries run at once.
    #[arg(long, short = 'j', default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    /// Arguments for every test binary (libtest's: a name filter, `--nocapture`, ...).
    #[arg(last = true)]
    test_args: Vec<String>,
}

/// `ck8s_tests::BINARIES_BUILT_ENV` (xtask does not link the test support crate).
const BINARIES_BUILT_ENV: &str = "CK8S_BINARIES_BUILT";

/// The binaries of the workspace the tests run as processes: the test build makes them.
const WORKSPACE_BINARIES: &[&str] = &["ck8s-admission", "kubectl-ck8s"];

/// The binaries known to take longest, started first (names of test targets; measured by this
/// command's own summary). The rest follow in cargo's order.
const LONGEST_FIRST: &[&str] = &[
    "dist",
    "real_restart",
    "real_plugin",
    "real_evidence",
    "real_deploy",
    "real_webhook",
    "real_audit",
    "real_cel",
];

/// One test binary of the workspace.
#[derive(Debug, Clone)]
struct TestBinary {
    /// `package/target`, as the summary names it.
    name: String,
    target: String,
    executable: PathBuf,
    /// The package's directory: cargo runs a test binary there.
    package_dir: PathBuf,
}

/// What one run ended with.
struct Finished {
    name: String,
    took: Duration,
    success: bool,
    counts: Counts,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Counts {
    /// Adds up libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...` lines.
    fn of_output(text: &str) -> Counts {
        let mut c = Counts::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("test result: ") else {
                continue;
            };
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => c.passed += n,
                    "failed" => c.failed += n,
                    "ignored" => c.ignored += n,
                    _ => {}
                }
            }
        }
        c
    }

    fn add(&mut self, o: Counts) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.ignored += o.ignored;
    }
}

pub fn run(root: &Path, args: TestArgs) -> Result<()> {
    let started = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let logs = crate::target_dir(root).join("xtask-test");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    // The control plane's Go build beside the Rust build: the real_* binaries need it, and
    // build.sh (flock) makes any of them that starts first wait for it.
    let cluster_log = logs.join("cluster-build.log");
    let mut cluster = Command::new("bash")
        .arg(root.join("tests/cluster/build.sh"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&cluster_log)?)
        .spawn()
        .context("starting tests/cluster/build.sh")?;

    let binaries = build(root, &cargo)?;
    eprintln!(
        "xtask test: {} test binaries built in {:.0} s; running {} at a time",
        binaries.len(),
        started.elapsed().as_secs_f64(),
        args.jobs
    );

    let mut queue: Vec<TestBinary> = binaries;
    queue.sort_by_key(|b| {
        LONGEST_FIRST
            .iter()
            .position(|n| *n == b.target)
            .unwrap_or(LONGEST_FIRST.len())
    });
    let queue = Arc::new(Mutex::new(VecDeque::from(queue)));
    let finished = Arc::new(Mutex::new(Vec::<Finished>::new()));
    // Printing a binary's whole output is one write under this lock.
    let print = Arc::new(Mutex::new(()));
    let workers: Vec<_> = (0..args.jobs)
        .map(|_| {
            let (queue, finished, print) = (queue.clone(), finished.clone(), print.clone());
            let test_args = args.test_args.clone();
            let logs = logs.clone();
            std::thread::spawn(move || {
                loop {
                    let Some(b) = queue.lock().unwrap().pop_front() else {
                        return;
                    };
                    let done = run_binary(&b, &test_args, &logs, &print);
                    finished.lock().unwrap().push(done);
                }
            })
        })
        .collect();
    // The doc tests on this thread meanwhile (rustdoc compiles them: no test binary to run).
    let doc = run_doc_tests(root, &cargo, &args.test_args, &logs, &print);
    for w in workers {
        w.join().expect("a test runner thread panicked");
    }
    let cluster_ok = cluster.wait().map(|s| s.success()).unwrap_or(false);

    let mut finished = std::mem::take(&mut *finished.lock().unwrap());
    finished.push(doc);
    finished.sort_by_key(|f| std::cmp::Reverse(f.took));
    let mut total = Counts::default();
    println!(
        "\nxtask test: {} binaries in {:.0} s (wall, build included)",
        finished.len(),
        started.elapsed().as_secs_f64()
    );
    for f in &finished {
        total.add(f.counts);
        println!(
            "  {:>6.1} s  {:<4} {}",
            f.took.as_secs_f64(),
            if f.success { "ok" } else { "FAIL" },
            f.name
        );
    }
    let failed: Vec<&str> = finished
        .iter()
        .filter(|f| !f.success)
        .map(|f| f.name.as_str())
        .collect();
    if !cluster_ok {
        println!(
            "  the control plane's build failed: see {}",
            cluster_log.display()
        );
    }
    println!(
        "tests: {} passed, {} failed, {} ignored",
        total.passed, total.failed, total.ignored
    );
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    if total.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// `cargo test --workspace --no-run`: builds every test target and returns its binaries.
fn build(root: &Path, cargo: &str) -> Result<Vec<TestBinary>> {
    let out = Command::new(cargo)
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --workspace --no-run failed");
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let Some(executable) = msg["executable"].as_str() else {
            continue;
        };
        let manifest = Path::new(msg["manifest_path"].as_str().unwrap_or_default());
        let package_dir = manifest
            .parent()
            .context("a manifest path without a parent")?;
        let package = package_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = msg["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        binaries.push(TestBinary {
            name: format!("{package}/{target}"),
            target,
            executable: executable.into(),
            package_dir: package_dir.to_path_buf(),
        });
    }
    if binaries.is_empty() {
        bail!("cargo test --no-run built no test binary");
    }
    let profile_dir = binaries[0]
        .executable
        .parent()
        .and_then(Path::parent)
        .context("test binaries live in <target>/<profile>/deps")?;
    for name in WORKSPACE_BINARIES {
        if !profile_dir.join(name).is_file() {
            bail!(
                "cargo test --workspace --no-run did not build {name} in {}",
                profile_dir.display()
            );
        }
    }
    Ok(binaries)
}

fn run_binary(b: &TestBinary, test_args: &[String], logs: &Path, print: &Mutex<()>) -> Finished {
    let mut cmd = Command::new(&b.executable);
    cmd.args(test_args)
        .current_dir(&b.package_dir)
        .env("CARGO_MANIFEST_DIR", &b.package_dir)
        // the test build made them (see `ck8s_tests::workspace_binary`)
        .env(BINARIES_BUILT_ENV, "1");
    let log = logs.join(format!("{}.log", b.name.replace('/', "-")));
    let header = |took: Duration| {
        let (name, exe, s) = (&b.name, b.executable.display(), took.as_secs_f64());
        format!("     Running {name} ({exe}) [{s:.1} s]")
    };
    run_logged(b.name.clone(), cmd, &log, header, print)
}

fn run_doc_tests(
    root: &Path,
    cargo: &str,
    test_args: &[String],
    logs: &Path,
    print: &Mutex<()>,
) -> Finished {
    let mut cmd = Command::new(cargo);
    cmd.args(["test", "--workspace", "--doc", "--"])
        .args(test_args)
        .current_dir(root);
    let log = logs.join("doc-tests.log");
    let header = |took: Duration| format!("   Doc-tests [{:.1} s]", took.as_secs_f64());
    run_logged("doc tests".into(), cmd, &log, header, print)
}

/// Runs `cmd` with its output into `log`, then prints `header` and the log whole, in one write.
fn run_logged(
    name: String,
    mut cmd: Command,
    log: &Path,
    header: impl Fn(Duration) -> String,
    print: &Mutex<()>,
) -> Finished {
    let start = Instant::now();
    let status = std::fs::File::create(log).and_then(|f| {
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .status()
    });
    let took = start.elapsed();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let _g = print.lock().unwrap();
    println!("{}", header(took));
    print!("{text}");
    if let Err(e) = &status {
        println!(
            "error: cannot run {}: {e}",
            cmd.get_program().to_string_lossy()
        );
    }
    Finished {
        name,
        took,
        success: matches!(&status, Ok(s) if s.success()),
        counts: Counts::of_output(&text),
    }
}

#[cfg(test)]
mod tests {
    use super::Counts;

    #[test]
    fn libtest_result_lines_are_added_up() {
        let text = "running 2 tests\ntest a ... ok\n\ntest result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
                    test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1.2s\n";
        let c = Counts::of_output(text);
        assert_eq!((c.passed, c.failed, c.ignored), (5, 2, 1));
        let none = Counts::of_output("warning: unused\nrunning 0 tests\n");
        assert_eq!((none.passed, none.failed, none.ignored), (0, 0, 0));
    }
}
