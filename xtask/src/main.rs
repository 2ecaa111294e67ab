//! `cargo xtask dist`: the release of ck8s from a clean checkout; `cargo xtask test`: the
//! whole test suite with its test binaries side by side ([`test`]).
//!
//! The release:
//! 1. static `ck8s-admission` and `kubectl-ck8s` for each `--target` (musl, `cargo build --release`),
//!    optimised with the target's committed profile where there is one ([`pgo`]);
//! 2. `ck8s-<version>-<target>.tar.gz` per target: both binaries, `kubectl_complete-ck8s`,
//!    LICENSE and README.md under one top-level directory;
//! 3. the webhook image from the x86_64 binary, without a container engine (umoci, skopeo):
//!    an OCI image layout and a `docker load`-able archive;
//! 4. `plugin.yaml`, the krew manifest pointing at the archives' release URLs;
//! 5. `SHA256SUMS` over the archives and the image archive.
//!
//! Everything lands in `--out-dir` (`target/dist`), which is emptied first.

mod archive;
mod image;
mod krew;
mod pgo;
mod test;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The workspace version (`[workspace.package]`), which every crate inherits.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// `[workspace.package] repository`: the OCI source label and the default release URL.
pub const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");
/// The image name `deploy/base/kustomization.yaml` deploys (tag: [`VERSION`]).
pub const IMAGE_NAME: &str = "ghcr.io/codex-k8s/ck8s-admission";
/// The release targets this script knows, with krew's / OCI's os and arch names.
pub const TARGETS: &[Target] = &[
    Target {
        triple: "x86_64-unknown-linux-musl",
        os: "linux",
        arch: "amd64",
    },
    Target {
        triple: "aarch64-unknown-linux-musl",
        os: "linux",
        arch: "arm64",
    },
];
/// The binaries in every archive, built by one `cargo build`.
pub const BINARIES: &[&str] = &["ck8s-admission", "kubectl-ck8s"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub triple: &'static str,
    pub os: &'static str,
    pub arch: &'static str,
}

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "ck8s tasks: the release and the test suite"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the release: static binaries, archives, image, plugin.yaml, SHA256SUMS.
    Dist(DistArgs),
    /// Run every test of the workspace (what `cargo test --workspace` runs), test binaries
    /// side by side, the slowest first; then a summary with each binary's time.
    Test(test::TestArgs),
}

#[derive(clap::Args)]
struct DistArgs {
    /// Rust target to release for (repeatable). The image is built for x86_64 only.
    #[arg(long = "target", value_name = "TRIPLE", default_value = "x86_64-unknown-linux-musl",
          value_parser = clap::builder::PossibleValuesParser::new(TARGETS.iter().map(|t| t.triple)))]
    targets: Vec<String>,
    /// Where the release goes (emptied first).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Where the archives will be downloadable: plugin.yaml's URIs are BASE/<archive>.
    /// Default: the GitHub release of this version, REPOSITORY/releases/download/vVERSION.
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// The commit the release is built from (label org.opencontainers.image.revision).
    /// Default: `git rev-parse HEAD`.
    #[arg(long, value_name = "SHA")]
    revision: Option<String>,
    /// Skip the container image (no umoci/skopeo needed).
    #[arg(long)]
    no_image: bool,
    /// Build without the committed optimisation profile (admission/pgo/README.md).
    #[arg(long)]
    no_pgo: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Dist(args) => dist(args),
        Cmd::Test(args) => test::run(&workspace_root(), args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root: xtask/ lives directly under it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is a workspace member")
        .to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The default base URL of the archives: the GitHub release `vVERSION` of [`REPOSITORY`].
pub fn default_base_url() -> String {
    format!("{REPOSITORY}/releases/download/v{VERSION}")
}

fn dist(args: DistArgs) -> Result<()> {
    let root = workspace_root();
    let out = args
        .out_dir
        .unwrap_or_else(|| target_dir(&root).join("dist"));
    let base_url = args.base_url.unwrap_or_else(default_base_url);
    let base_url = base_url.trim_end_matches('/');
    let revision = match args.revision {
        Some(r) => r,
        None => git(&root, &["rev-parse", "HEAD"])?,
    };
    // Archive and image timestamps: the commit's, so that a rebuild of the same commit gives
    // the same bytes (SOURCE_DATE_EPOCH wins, as in every reproducible-builds tool).
    let epoch: i64 = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.parse().context("SOURCE_DATE_EPOCH is not a number")?,
        Err(_) => git(&root, &["log", "-1", "--format=%ct"])?
            .parse()
            .context("git log gave no commit time")?,
    };
    let targets: Vec<Target> = args
        .targets
        .iter()
        .map(|t| {
            *TARGETS
                .iter()
                .find(|k| k.triple == t)
                .expect("clap checked it")
        })
        .collect();

    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("emptying {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let mut archives = Vec::new();
    for target in &targets {
        let bin_dir = cargo_build(&root, target, !args.no_pgo)?;
        let path = archive::write(&root, &bin_dir, target, &out, epoch)?;
        eprintln!("wrote {}", path.display());
        archives.push((*target, path));
    }

    let mut summed: Vec<PathBuf> = archives.iter().map(|(_, p)| p.clone()).collect();
    if !args.no_image {
        let Some(x86) = targets.iter().find(|t| t.arch == "amd64") else {
            bail!(
                "the image is built from the x86_64 binary: add --target x86_64-unknown-linux-musl or pass --no-image"
            );
        };
        let binary = target_dir(&root)
            .join(x86.triple)
            .join("release")
            .join("ck8s-admission");
        let built = image::build(&image::Spec {
            binary: &binary,
            arch: x86.arch,
            revision: &revision,
            epoch,
            out: &out,
        })?;
        eprintln!("wrote {}", built.layout.display());
        eprintln!("wrote {}", built.docker_archive.display());
        summed.push(built.docker_archive);
    }

    let manifest = krew::manifest(&archives, base_url)?;
    std::fs::write(out.join("plugin.yaml"), manifest)?;
    eprintln!("wrote {}", out.join("plugin.yaml").display());

    let mut sums = String::new();
    for path in &summed {
        let name = path.file_name().unwrap().to_string_lossy();
        sums.push_str(&format!("{}  {name}\n", sha256_file(path)?));
    }
    std::fs::write(out.join("SHA256SUMS"), sums)?;
    eprintln!("wrote {}", out.join("SHA256SUMS").display());
    Ok(())
}

/// `cargo build --release` of [`BINARIES`] for `target`, with its committed optimisation
/// profile if `use_profile` and there is one; returns the directory holding them.
fn cargo_build(root: &Path, target: &Target, use_profile: bool) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--locked", "--target", target.triple]);
    for bin in BINARIES {
        cmd.args(["-p", bin]);
    }
    let profile = match pgo::committed_profile(root, target.triple) {
        Some(gz) if use_profile => {
            let profile = pgo::unpack(&gz, &target_dir(root).join("pgo"))?;
            let (name, value) =
                pgo::rustflags_with_profile(target.triple, &profile, |n| std::env::var(n).ok());
            cmd.env(name, value);
            format!(
                " with the profile {} ({})",
                gz.display(),
                pgo::provenance(root, target.triple)
            )
        }
        Some(_) => " without its profile (--no-pgo)".to_string(),
        None => String::new(),
    };
    eprintln!(
        "building {} for {}{profile}",
        BINARIES.join(", "),
        target.triple
    );
    let started = Instant::now();
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!(
            "cargo build for {t} failed ({status})\n\
             help: `rustup target add {t}`; ring (rustls) and mimalloc compile C for the target: for \
             x86_64-unknown-linux-musl that is musl-gcc (Debian: apt-get install musl-tools); \
             aarch64-unknown-linux-musl needs an aarch64 musl C toolchain and linker (see README)",
            t = target.triple
        );
    }
    eprintln!(
        "built {} in {:.0} s",
        target.triple,
        started.elapsed().as_secs_f64()
    );
    Ok(target_dir(root).join(target.triple).join("release"))
}

fn git(root: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .context("running git (the revision and timestamp come from the checkout; pass --revision and SOURCE_DATE_EPOCH without one)")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}\nhelp: outside a git checkout, pass --revision and SOURCE_DATE_EPOCH",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Runs a tool, with its stderr in the error when it fails.
pub fn run(program: &str, args: &[&str], install_hint: &str) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("running {program}: {e}\nhelp: {install_hint}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}
