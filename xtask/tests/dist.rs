//! The release, built once by `cargo xtask dist` and checked as a user would receive it:
//! - the archives hold static binaries that run, the completion helper, LICENSE and README,
//!   and SHA256SUMS matches them;
//! - `plugin.yaml` follows krew's validation rules and installs (krew's file operations,
//!   replayed) a `kubectl-ck8s` that runs;
//! - the OCI image is from scratch with only the binary, user 65532, the binary as entrypoint
//!   and the OCI labels; the docker-archive holds the same image; `deploy/Dockerfile`'s final
//!   stage describes the same files, user, entrypoint, ports and labels;
//! - the image, unpacked by umoci, runs under runc as `deploy/base/deployment.yaml` runs it
//!   (read-only root, uid/gid 65532, no capabilities, no privilege escalation, the certificate
//!   and the policy ConfigMap mounted where the Deployment mounts them, the emptyDir cache, its
//!   memory limit) and answers reviews over TLS, `/readyz`, `/metrics`, then drains on SIGTERM
//!   and exits 0.
//!
//! Needs (`.ci/run` installs them): the rust target x86_64-unknown-linux-musl, musl-gcc
//! (Debian musl-tools), umoci, skopeo and runc, and root with a memory cgroup for runc. A
//! missing piece fails the tests with the reason; nothing is skipped.
//!
//! The release build (`cargo build --release` of both binaries for musl) runs once per test
//! process, shared by every test here, into `target/dist-test`; it is the slow part (see
//! BENCHMARKS.md) and cargo makes a rebuild of unchanged sources a no-op.
//!
//! Run: `cargo test -p xtask --test dist`

use ck8s_tests::cluster::free_port;
use flate2::read::GzDecoder;
use k8s_openapi::api::core::v1::{Container, PodSecurityContext};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const X86: &str = "x86_64-unknown-linux-musl";
const IMAGE_NAME: &str = "ghcr.io/codex-k8s/ck8s-admission";
const REPOSITORY: &str = "https://github.com/codex-k8s/ck8s";
const ENTRYPOINT: &str = "/usr/local/bin/ck8s-admission";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------
// The shared release build
// ---------------------------------------------------------------------------------------

static DIST: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// `cargo xtask dist --out-dir target/dist-test`, once for all the tests of this process.
fn dist() -> &'static Path {
    let result = DIST.get_or_init(|| {
        let out = workspace().join("target/dist-test");
        let started = Instant::now();
        // The xtask binary cargo built for this test (not `cargo run`: this test process holds
        // the debug profile's build lock; the release build below takes other locks).
        let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .current_dir(workspace())
            .arg("dist")
            .arg("--out-dir")
            .arg(&out)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("error: could not run xtask: {e}"))?;
        if !status.success() {
            return Err(format!(
                "error: `cargo xtask dist` failed ({status}); its output is above\n\
                 help: it needs `rustup target add {X86}`, musl-gcc (apt-get install musl-tools), \
                 umoci and skopeo (apt-get install umoci skopeo); .ci/run installs them"
            ));
        }
        eprintln!(
            "cargo xtask dist took {:.0} s",
            started.elapsed().as_secs_f64()
        );
        Ok(out)
    });
    match result {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn git_head() -> String {
    let out = Command::new("git")
        .current_dir(workspace())
        .args(["rev-parse", "HEAD"])
        .output()
        .expect("git");
    assert!(out.status.success(), "git rev-parse HEAD failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `name -> sha256` from SHA256SUMS (sha256sum's format: `HEX  NAME`).
fn sha256sums(dir: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("SHA256SUMS");
    text.lines()
        .map(|l| {
            let (hash, name) = l
                .split_once("  ")
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (name.to_string(), hash.to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tar and ELF helpers
// ---------------------------------------------------------------------------------------

struct Entry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    data: Vec<u8>,
}

fn read_tar(data: &[u8]) -> Vec<Entry> {
    let mut archive = tar::Archive::new(data);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        let mut body = Vec::new();
        entry.read_to_end(&mut body).unwrap();
        let path = entry.path().unwrap().to_string_lossy().to_string();
        out.push(Entry {
            path: path
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string(),
            kind: h.entry_type(),
            mode: h.mode().unwrap() & 0o7777,
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            data: body,
        });
    }
    out
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(data).read_to_end(&mut out).unwrap();
    out
}

/// `(e_machine, has PT_INTERP)` of an ELF64 little-endian file: no interpreter = static.
fn elf_facts(data: &[u8]) -> (u16, bool) {
    assert_eq!(&data[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(data[4], 2, "not ELF64");
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap());
    let machine = u16_at(0x12);
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    let interp = (0..phnum as usize).any(|i| u32_at(phoff + i * phentsize as usize) == 3);
    (machine, interp)
}

fn archive_entries(dir: &Path, triple: &str) -> Vec<Entry> {
    let path = dir.join(format!("ck8s-{VERSION}-{triple}.tar.gz"));
    read_tar(&gunzip(&std::fs::read(&path).unwrap()))
}

// ---------------------------------------------------------------------------------------
// Archives
// ---------------------------------------------------------------------------------------

/// The released webhook is optimised with the committed profile (admission/pgo/README.md):
/// rustc lists the file it was given by `-Cprofile-use` in the binary's dep-info, and that
/// file is the committed profile, unpacked. A build that lost the flag fails here.
#[test]
fn the_webhook_is_built_with_the_committed_profile() {
    dist();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let depinfo_path = target.join(X86).join("release/ck8s-admission.d");
    let depinfo = std::fs::read_to_string(&depinfo_path)
        .unwrap_or_else(|e| panic!("{}: {e}", depinfo_path.display()));
    let used = depinfo
        .split_whitespace()
        .find(|w| w.ends_with(".profdata"))
        .unwrap_or_else(|| panic!("no profile among the build's inputs:\n{depinfo:.2000}"));
    let committed =
        std::fs::read(workspace().join(format!("admission/pgo/{X86}.profdata.gz"))).unwrap();
    assert!(
        std::fs::read(used).unwrap() == gunzip(&committed),
        "{used} is not the committed profile"
    );
}

#[test]
fn archives_hold_static_binaries_the_completion_helper_license_and_readme() {
    let dir = dist();
    let sums = sha256sums(dir);
    let archives: Vec<&String> = sums.keys().filter(|n| n.ends_with(".tar.gz")).collect();
    assert!(
        archives.contains(&&format!("ck8s-{VERSION}-{X86}.tar.gz")),
        "no x86_64 archive in SHA256SUMS: {archives:?}"
    );
    for (name, hash) in &sums {
        let data = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&sha256_hex(&data), hash, "SHA256SUMS is wrong for {name}");
    }

    for name in archives {
        let triple = name
            .strip_prefix(&format!("ck8s-{VERSION}-"))
            .and_then(|s| s.strip_suffix(".tar.gz"))
            .unwrap_or_else(|| panic!("archive name {name} is not ck8s-VERSION-TARGET.tar.gz"));
        let stem = format!("ck8s-{VERSION}-{triple}");
        let entries = archive_entries(dir, triple);
        let listed: BTreeMap<&str, &Entry> = entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let expected: BTreeSet<String> = [
            "",
            "/ck8s-admission",
            "/kubectl-ck8s",
            "/kubectl_complete-ck8s",
            "/LICENSE",
            "/README.md",
        ]
        .iter()
        .map(|f| format!("{stem}{f}"))
        .collect();
        assert_eq!(
            listed
                .keys()
                .map(|s| s.to_string())
                .collect::<BTreeSet<_>>(),
            expected,
            "{name}: unexpected members"
        );
        for e in &entries {
            assert_eq!((e.uid, e.gid), (0, 0), "{}: not owned by root", e.path);
        }
        let machine = match triple {
            "x86_64-unknown-linux-musl" => 0x3e,
            "aarch64-unknown-linux-musl" => 0xb7,
            other => panic!("unknown target {other}"),
        };
        for bin in ["ck8s-admission", "kubectl-ck8s"] {
            let e = listed[format!("{stem}/{bin}").as_str()];
            assert_eq!(e.mode, 0o755, "{bin} is not executable");
            let (m, interp) = elf_facts(&e.data);
            assert_eq!(m, machine, "{bin} is built for the wrong machine");
            assert!(!interp, "{bin} asks for a dynamic loader: not static");
        }
        assert_eq!(
            listed[format!("{stem}/kubectl_complete-ck8s").as_str()].mode,
            0o755
        );
        let license = &listed[format!("{stem}/LICENSE").as_str()].data;
        assert_eq!(
            license,
            &std::fs::read(workspace().join("LICENSE")).unwrap()
        );
        let license = String::from_utf8_lossy(license);
        assert!(
            license.contains("Apache License") && license.contains("Version 2.0, January 2004")
        );
        let readme = &listed[format!("{stem}/README.md").as_str()].data;
        assert_eq!(
            readme,
            &std::fs::read(workspace().join("README.md")).unwrap()
        );
    }

    // The x86_64 binaries run here, from a directory with nothing else: static indeed.
    let tmp = tempfile::tempdir().unwrap();
    for e in archive_entries(dir, X86) {
        if e.kind == tar::EntryType::Regular {
            let file = tmp.path().join(Path::new(&e.path).file_name().unwrap());
            std::fs::write(&file, &e.data).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(e.mode)).unwrap();
        }
    }
    for bin in ["ck8s-admission", "kubectl-ck8s"] {
        let out = Command::new(tmp.path().join(bin))
            .arg("--version")
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{bin} --version failed: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(VERSION), "{bin} --version said {stdout:?}");
    }
    // The completion helper finds kubectl-ck8s next to it on PATH and answers cobra's format.
    let out = Command::new(tmp.path().join("kubectl_complete-ck8s"))
        .arg("pol")
        .env("PATH", format!("{}:/usr/bin:/bin", tmp.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl_complete-ck8s failed: {out:?}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "policy\n:4\n");
}

// ---------------------------------------------------------------------------------------
// krew
// ---------------------------------------------------------------------------------------

/// krew's Plugin, strictly: an unknown or misplaced field fails to parse.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KrewPlugin {
    api_version: String,
    kind: String,
    metadata: KrewMeta,
    spec: KrewSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KrewMeta {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KrewSpec {
    version: String,
    homepage: Option<String>,
    short_description: String,
    description: Option<String>,
    caveats: Option<String>,
    platforms: Vec<KrewPlatform>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KrewPlatform {
    selector: KrewSelector,
    uri: String,
    sha256: String,
    files: Option<Vec<KrewFile>>,
    bin: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KrewSelector {
    match_labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KrewFile {
    from: String,
    to: String,
}

/// The real krew (`sigs.k8s.io/krew` v0.4.3, built by `tests/krew/build.sh` and cached)
/// installs the release's `plugin.yaml` and archive into a fresh krew root, kubectl finds and
/// runs the plugin through its `bin` link, and `krew uninstall` removes it.
#[test]
fn krew_installs_the_release_and_kubectl_runs_it() {
    let dir = dist();
    let built = Command::new(workspace().join("tests/krew/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/krew/build.sh");
    assert!(
        built.status.success(),
        "tests/krew/build.sh failed (it needs Go and the Go module proxy)"
    );
    let krew = PathBuf::from(String::from_utf8(built.stdout).unwrap().trim());
    let root = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let run = |program: &Path, args: &[&str]| {
        let path = format!(
            "{}:{}",
            root.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(program)
            .args(args)
            .env("KREW_ROOT", root.path())
            .env("HOME", home.path())
            .env("PATH", path)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let manifest = dir.join("plugin.yaml");
    let archive = dir.join(format!("ck8s-{VERSION}-{X86}.tar.gz"));
    let (ok, out) = run(
        &krew,
        &[
            "install",
            &format!("--manifest={}", manifest.display()),
            &format!("--archive={}", archive.display()),
        ],
    );
    assert!(ok, "krew install: {out}");
    assert!(out.contains("Installed plugin: ck8s"), "{out}");
    let link = root.path().join("bin/kubectl-ck8s");
    assert!(link.exists(), "krew linked no kubectl-ck8s: {out}");

    let (ok, out) = run(Path::new("kubectl"), &["plugin", "list"]);
    assert!(
        out.contains(&link.display().to_string()),
        "kubectl plugin list: {out} ({ok})"
    );
    let (ok, out) = run(Path::new("kubectl"), &["ck8s", "--help"]);
    assert!(ok, "kubectl ck8s --help: {out}");
    assert!(out.contains("smoke") && out.contains("admission"), "{out}");
    let (ok, out) = run(Path::new("kubectl"), &["ck8s", "--version"]);
    assert!(ok && out.contains(VERSION), "kubectl ck8s --version: {out}");

    // `krew list` and `krew uninstall` first check the local plugin index, which `krew
    // update` clones from GitHub (not reachable from the test machines); an empty git
    // repository in its place is the index of an air-gapped krew.
    let index = root.path().join("index/default");
    std::fs::create_dir_all(&index).unwrap();
    let (ok, out) = run(Path::new("git"), &["init", "-q", index.to_str().unwrap()]);
    assert!(ok, "git init: {out}");
    let (ok, out) = run(&krew, &["list"]);
    assert!(ok && out.contains("ck8s"), "krew list: {out}");

    let (ok, out) = run(&krew, &["uninstall", "ck8s"]);
    assert!(ok, "krew uninstall: {out}");
    assert!(!link.exists(), "the link stayed after uninstall");
    let (_, out) = run(Path::new("kubectl"), &["ck8s", "--help"]);
    assert!(
        out.contains("unknown command"),
        "kubectl still finds ck8s: {out}"
    );
}

/// The rules of krew's `validation.ValidatePlugin` (apiVersion, kind, a safe name, a one-line
/// short description, a `v`-prefixed semver, per platform: uri, a lowercase hex sha256, bin,
/// non-empty file operations, an os/arch selector), plus the index's one platform per os/arch.
#[test]
fn krew_manifest_follows_krews_rules_and_installs_a_working_plugin() {
    let dir = dist();
    let text = std::fs::read_to_string(dir.join("plugin.yaml")).unwrap();
    let p: KrewPlugin = serde_saphyr::from_str(&text).expect("plugin.yaml is not a krew Plugin");
    assert_eq!(
        p.api_version,
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(p.kind, "Plugin");
    let name_ok = !p.metadata.name.is_empty()
        && p.metadata
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    assert!(name_ok, "unsafe plugin name {:?}", p.metadata.name);
    // krew links `bin` as kubectl-<name>: the name must be the plugin's command.
    assert_eq!(p.metadata.name, "ck8s");
    assert!(!p.spec.short_description.is_empty());
    assert!(!p.spec.short_description.contains(['\r', '\n']));
    assert!(p.spec.description.as_deref().is_some_and(|d| !d.is_empty()));
    assert_eq!(p.spec.homepage.as_deref(), Some(REPOSITORY));
    assert!(p.spec.caveats.is_some());
    let semver = p
        .spec
        .version
        .strip_prefix('v')
        .expect("krew's version needs the v prefix");
    semver::Version::parse(semver).expect("version is not semver");
    assert_eq!(semver, VERSION);
    assert!(!p.spec.platforms.is_empty(), "no platforms");

    let base = format!("{REPOSITORY}/releases/download/v{VERSION}/");
    let sums = sha256sums(dir);
    let mut seen = BTreeSet::new();
    for pl in &p.spec.platforms {
        let labels = &pl.selector.match_labels;
        assert!(!labels.is_empty(), "empty selector");
        assert!(
            labels.keys().all(|k| k == "os" || k == "arch"),
            "selector keys other than os/arch: {labels:?}"
        );
        let os_arch = (labels.get("os").cloned(), labels.get("arch").cloned());
        assert!(os_arch.0.is_some() && os_arch.1.is_some(), "{labels:?}");
        assert!(
            seen.insert(os_arch.clone()),
            "two platforms for {os_arch:?}"
        );

        let file = pl
            .uri
            .strip_prefix(&base)
            .unwrap_or_else(|| panic!("uri {} is not under {base}", pl.uri));
        assert!(
            pl.sha256.len() == 64
                && pl
                    .sha256
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "bad sha256 {}",
            pl.sha256
        );
        let data = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(pl.sha256, sha256_hex(&data), "sha256 of {file}");
        assert_eq!(sums.get(file), Some(&pl.sha256), "SHA256SUMS disagrees");
        let triple = file
            .strip_prefix(&format!("ck8s-{VERSION}-"))
            .and_then(|s| s.strip_suffix(".tar.gz"))
            .unwrap();
        let arch = match triple {
            "x86_64-unknown-linux-musl" => "amd64",
            "aarch64-unknown-linux-musl" => "arm64",
            other => panic!("unknown target {other}"),
        };
        assert_eq!(os_arch, (Some("linux".into()), Some(arch.into())));

        // Replay krew's install: the archive unpacked, each `from` moved to `to`, then `bin`.
        let files = pl.files.as_ref().expect("files");
        assert!(!files.is_empty(), "files must be unspecified or non-empty");
        let entries = archive_entries(dir, triple);
        let install = tempfile::tempdir().unwrap();
        for op in files {
            assert!(!op.from.is_empty() && !op.to.is_empty());
            let e = entries
                .iter()
                .find(|e| e.path == op.from)
                .unwrap_or_else(|| panic!("files.from {} is not in {file}", op.from));
            assert_eq!(op.to, ".", "files are installed at the plugin's root");
            let dest = install
                .path()
                .join(Path::new(&op.from).file_name().unwrap());
            std::fs::write(&dest, &e.data).unwrap();
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(e.mode)).unwrap();
        }
        let bin = install.path().join(&pl.bin);
        assert!(
            bin.is_file(),
            "bin {} is not among the installed files",
            pl.bin
        );
        assert_eq!(pl.bin, "kubectl-ck8s");
        assert!(
            install.path().join("LICENSE").is_file(),
            "LICENSE not installed"
        );
        if arch == "amd64" {
            let out = Command::new(&bin).arg("--help").output().unwrap();
            assert!(
                out.status.success(),
                "installed kubectl-ck8s failed: {out:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The image
// ---------------------------------------------------------------------------------------

struct Image {
    config: Value,
    /// The only layer, uncompressed.
    layer: Vec<u8>,
}

fn layout_dir(dir: &Path) -> PathBuf {
    dir.join(format!("ck8s-admission-{VERSION}-oci"))
}

/// A blob of the layout, checked against its digest.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let data = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(
        sha256_hex(&data),
        hex,
        "blob {digest} does not match its digest"
    );
    data
}

fn oci_image(dir: &Path) -> Image {
    let layout = layout_dir(dir);
    let oci_layout: Value =
        serde_json::from_slice(&std::fs::read(layout.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "one image in the layout: {index}");
    let m = &manifests[0];
    assert_eq!(
        m["annotations"]["org.opencontainers.image.ref.name"], VERSION,
        "the layout's tag is the version"
    );
    let manifest: Value =
        serde_json::from_slice(&blob(&layout, m["digest"].as_str().unwrap())).unwrap();
    let config: Value = serde_json::from_slice(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = gunzip(&blob(&layout, layers[0]["digest"].as_str().unwrap()));
    assert_eq!(
        config["rootfs"]["diff_ids"],
        json!([format!("sha256:{}", sha256_hex(&layer))]),
        "diff_ids do not match the layer"
    );
    Image { config, layer }
}

fn layer_paths(layer: &[u8]) -> BTreeSet<String> {
    read_tar(layer).into_iter().map(|e| e.path).collect()
}

#[test]
fn image_is_from_scratch_with_the_binary_the_deployment_runs() {
    let dir = dist();
    let image = oci_image(dir);
    let c = &image.config;
    assert_eq!(c["os"], "linux");
    assert_eq!(c["architecture"], "amd64");
    let cfg = &c["config"];
    assert_eq!(cfg["User"], "65532:65532");
    assert_eq!(cfg["Entrypoint"], json!([ENTRYPOINT]));
    assert!(cfg["Cmd"].is_null(), "no default args: {cfg}");
    assert!(cfg["Env"].is_null(), "no environment: {cfg}");
    assert_eq!(
        cfg["ExposedPorts"],
        json!({ "8443/tcp": {}, "9090/tcp": {} })
    );
    let labels = &cfg["Labels"];
    assert_eq!(labels["org.opencontainers.image.source"], REPOSITORY);
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(labels["org.opencontainers.image.revision"], git_head());
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");

    // From scratch: the binary and its parent directories, nothing else.
    let entries = read_tar(&image.layer);
    assert_eq!(
        layer_paths(&image.layer),
        BTreeSet::from(
            [
                "usr",
                "usr/local",
                "usr/local/bin",
                "usr/local/bin/ck8s-admission"
            ]
            .map(String::from)
        )
    );
    let bin = entries
        .iter()
        .find(|e| e.path == "usr/local/bin/ck8s-admission")
        .unwrap();
    assert_eq!((bin.uid, bin.gid, bin.mode), (0, 0, 0o755));
    let released = archive_entries(dir, X86)
        .into_iter()
        .find(|e| e.path.ends_with("/ck8s-admission"))
        .unwrap();
    assert!(
        bin.data == released.data,
        "the image's binary is not the released one"
    );

    // The kustomization deploys this image: same name, the tag is the version.
    let kustomization: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(workspace().join("deploy/base/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        kustomization["images"],
        json!([{ "name": IMAGE_NAME, "newTag": VERSION }])
    );

    // The docker-archive (`docker load -i`): the same config and layer, tagged for the registry.
    let archive_name = format!("ck8s-admission-{VERSION}-linux-amd64.docker.tar");
    assert!(
        sha256sums(dir).contains_key(&archive_name),
        "not in SHA256SUMS"
    );
    let docker = read_tar(&std::fs::read(dir.join(&archive_name)).unwrap());
    let file = |name: &str| {
        &docker
            .iter()
            .find(|e| e.path == name)
            .unwrap_or_else(|| panic!("{name} missing from the docker archive"))
            .data
    };
    let manifest: Value = serde_json::from_slice(file("manifest.json")).unwrap();
    let manifest = manifest.as_array().unwrap();
    assert_eq!(manifest.len(), 1);
    assert_eq!(
        manifest[0]["RepoTags"],
        json!([format!("{IMAGE_NAME}:{VERSION}")])
    );
    let config: Value =
        serde_json::from_slice(file(manifest[0]["Config"].as_str().unwrap())).unwrap();
    assert_eq!(config["config"], image.config["config"]);
    assert_eq!(config["rootfs"], image.config["rootfs"]);
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let layer = file(layers[0].as_str().unwrap());
    let layer = if layer.starts_with(&[0x1f, 0x8b]) {
        gunzip(layer)
    } else {
        layer.clone()
    };
    assert!(layer == image.layer, "the docker archive's layer differs");
}

/// One instruction of a Dockerfile: keyword (upper case) and the rest of the line.
fn dockerfile_stages(text: &str) -> Vec<Vec<(String, String)>> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.starts_with('#') || trimmed.is_empty()) {
            continue;
        }
        if let Some(cont) = trimmed.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            joined.push(std::mem::take(&mut current));
        }
    }
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for ins in joined {
        let (kw, rest) = ins.split_once(' ').unwrap_or((&ins, ""));
        let kw = kw.to_ascii_uppercase();
        if kw == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push((kw, rest.trim().to_string()));
        }
    }
    stages
}

/// `k="v" k2="v2"` (LABEL's syntax, values in double quotes).
fn label_pairs(rest: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once("=\"").expect("LABEL key=\"value\"");
        let (value, after) = after.split_once('"').expect("closing quote");
        out.push((key.trim().to_string(), value.to_string()));
        s = after.trim();
    }
    out
}

#[test]
fn dockerfile_final_stage_describes_the_same_image() {
    let text = std::fs::read_to_string(workspace().join("deploy/Dockerfile")).unwrap();
    let stages = dockerfile_stages(&text);
    assert_eq!(stages.len(), 2, "a build stage and the final stage");
    let build = stages[0]
        .iter()
        .map(|(k, r)| format!("{k} {r}"))
        .collect::<Vec<_>>();
    assert!(
        build
            .iter()
            .any(|i| i.contains("cargo build --release --locked")
                && i.contains(&format!("--target {X86}"))
                && i.contains("/out/ck8s-admission")),
        "the build stage must build the same static binary: {build:?}"
    );
    let last = &stages[1];
    assert_eq!(last[0], ("FROM".into(), "scratch".into()), "from scratch");

    let mut args = BTreeMap::new();
    let mut labels = BTreeMap::new();
    let mut files = BTreeSet::new();
    let (mut user, mut entrypoint, mut ports) = (None, None, BTreeSet::new());
    for (kw, rest) in &last[1..] {
        match kw.as_str() {
            "ARG" => {
                let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
                args.insert(k.to_string(), v.to_string());
            }
            "LABEL" => labels.extend(label_pairs(rest)),
            "COPY" => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                assert_eq!(parts[0], "--from=build", "COPY only from the build stage");
                let dest = parts[parts.len() - 1].trim_start_matches('/');
                let mut acc = String::new();
                for part in dest.split('/') {
                    if !acc.is_empty() {
                        acc.push('/');
                    }
                    acc.push_str(part);
                    files.insert(acc.clone());
                }
            }
            "USER" => user = Some(rest.clone()),
            "EXPOSE" => ports.extend(rest.split_whitespace().map(|p| format!("{p}/tcp"))),
            "ENTRYPOINT" => entrypoint = Some(serde_json::from_str::<Value>(rest).unwrap()),
            other => panic!("unexpected instruction {other} in the final stage"),
        }
    }
    assert_eq!(args.get("VERSION").map(String::as_str), Some(VERSION));

    let dir = dist();
    let image = oci_image(dir);
    let cfg = &image.config["config"];
    assert_eq!(layer_paths(&image.layer), files, "file lists differ");
    assert_eq!(user.as_deref(), cfg["User"].as_str(), "users differ");
    assert_eq!(
        entrypoint.as_ref(),
        Some(&cfg["Entrypoint"]),
        "entrypoints differ"
    );
    let image_ports: BTreeSet<String> = cfg["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(ports, image_ports, "exposed ports differ");
    let image_labels = cfg["Labels"].as_object().unwrap();
    assert_eq!(
        labels.keys().collect::<BTreeSet<_>>(),
        image_labels.keys().collect::<BTreeSet<_>>(),
        "label keys differ"
    );
    for (k, v) in &labels {
        let expected = match v.as_str() {
            "${VERSION}" => args["VERSION"].clone(),
            // The Docker user passes the commit; the script's image carries HEAD.
            "${REVISION}" => git_head(),
            literal => literal.to_string(),
        };
        assert_eq!(image_labels[k], expected, "label {k}");
    }
}

// ---------------------------------------------------------------------------------------
// The image under runc
// ---------------------------------------------------------------------------------------

/// The pod's security context and its container, typed. (The volumes are left out: a YAML 1.2
/// reader does not read `defaultMode: 0440` as the octal the API server reads.)
fn deployment_container() -> (PodSecurityContext, Container) {
    let text = std::fs::read_to_string(workspace().join("deploy/base/deployment.yaml")).unwrap();
    let d: Value = serde_saphyr::from_str(&text).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    (
        serde_json::from_value(pod["securityContext"].clone()).unwrap(),
        serde_json::from_value(pod["containers"][0].clone()).unwrap(),
    )
}

/// A Kubernetes memory quantity in bytes (the suffixes the manifests use).
fn bytes_of(q: &str) -> u64 {
    let (num, mul) = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .iter()
        .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((q, 1));
    num.parse::<u64>().unwrap() * mul
}

fn runc(args: &[&str]) -> std::process::Output {
    Command::new("runc")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("error: running runc: {e}\nhelp: apt-get install runc"))
}

/// Deletes the container however the test ends.
struct RuncContainer(String);
impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = runc(&["delete", "--force", &self.0]);
    }
}

fn proc_status_field(pid: u64, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// Host networking: runc with a network namespace of its own has only a loopback that the
/// host cannot reach (no CNI here), so the container shares the host's network namespace and
/// the listeners bind 127.0.0.1 on free ports instead of the Deployment's 0.0.0.0:8443/9090.
/// Everything else comes from `deploy/base/deployment.yaml` as the kubelet would apply it;
/// the seccomp RuntimeDefault profile is the one part not reproduced (runc gets no profile).
#[tokio::test(flavor = "multi_thread")]
async fn image_runs_under_runc_as_the_deployment_runs_it() {
    // Preconditions, each a clear failure.
    let euid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(
        euid, 0,
        "error: runc runs containers as root here (euid {euid}); run the tests as root"
    );
    let version = runc(&["--version"]);
    assert!(
        version.status.success(),
        "error: runc --version failed: {version:?}"
    );
    assert!(
        Path::new("/sys/fs/cgroup/memory").is_dir()
            || Path::new("/sys/fs/cgroup/cgroup.controllers").is_file(),
        "error: no memory cgroup (/sys/fs/cgroup/memory or cgroup v2) for the memory limit"
    );
    let umoci = Command::new("umoci").arg("--version").output();
    assert!(
        umoci.is_ok_and(|o| o.status.success()),
        "error: umoci not found\nhelp: apt-get install umoci"
    );

    let dir = dist();
    let (pod_sc, container) = deployment_container();
    let sc = container.security_context.clone().unwrap();
    let uid = sc.run_as_user.unwrap() as u32;
    let gid = sc.run_as_group.unwrap() as u32;
    let fs_group = pod_sc.fs_group.unwrap() as u32;
    assert_eq!((uid, gid, fs_group), (65532, 65532, 65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    let limit = bytes_of(
        &container
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap()["memory"]
            .0,
    );
    let mount_of = |volume: &str| {
        container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == volume)
            .unwrap_or_else(|| panic!("no volumeMount {volume}"))
            .mount_path
            .clone()
    };
    let (tls_at, config_at, cache_at) = (mount_of("tls"), mount_of("config"), mount_of("cache"));

    // The bundle: umoci unpacks the image and writes the runtime config from its config.
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bundle = work.path().join("bundle");
    let layout = layout_dir(dir);
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{VERSION}", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci unpack failed: {out:?}");

    // The Secret (defaultMode 0440, group fsGroup) and the ConfigMap, as the kubelet mounts them.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let tls = work.path().join("tls");
    let config = work.path().join("config");
    let cache = work.path().join("cache");
    for d in [&tls, &config, &cache] {
        std::fs::create_dir(d).unwrap();
    }
    for (name, body) in [
        ("tls.crt", cert_pem.clone()),
        ("tls.key", cert.signing_key.serialize_pem()),
    ] {
        let f = tls.join(name);
        std::fs::write(&f, body).unwrap();
        std::os::unix::fs::chown(&f, Some(0), Some(fs_group)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    std::fs::copy(
        workspace().join("deploy/base/policies.yaml"),
        config.join("policies.yaml"),
    )
    .unwrap();
    // emptyDir: a directory on the node's disk, writable by the pod.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();

    let (https_port, metrics_port) = (free_port().unwrap(), free_port().unwrap());
    let mut process_args = vec![Value::from(ENTRYPOINT)];
    for a in container.args.as_ref().unwrap() {
        let a = if a.starts_with("--listen=") {
            format!("--listen=127.0.0.1:{https_port}")
        } else if a.starts_with("--metrics-listen=") {
            format!("--metrics-listen=127.0.0.1:{metrics_port}")
        } else {
            a.clone()
        };
        process_args.push(a.into());
    }

    let spec_path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    assert_eq!(
        spec["process"]["args"],
        json!([ENTRYPOINT]),
        "umoci's runtime config runs the image's entrypoint"
    );
    spec["process"]["args"] = Value::Array(process_args);
    spec["process"]["terminal"] = json!(false);
    spec["process"]["user"] = json!({ "uid": uid, "gid": gid, "additionalGids": [fs_group] });
    spec["process"]["noNewPrivileges"] = json!(true);
    spec["process"]["capabilities"] = json!({
        "bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []
    });
    spec["root"]["readonly"] = json!(true);
    let bind = |src: &Path, dest: &str, ro: bool| {
        let mut options = vec!["rbind", "nosuid", "nodev"];
        if ro {
            options.push("ro");
        }
        json!({ "destination": dest, "type": "bind", "source": src, "options": options })
    };
    let mounts = spec["mounts"].as_array_mut().unwrap();
    mounts.push(bind(&tls, &tls_at, true));
    mounts.push(bind(&config, &config_at, true));
    mounts.push(bind(&cache, &cache_at, false));
    let namespaces = spec["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|n| n["type"] != "network");
    spec["linux"]["resources"]["memory"] = json!({ "limit": limit });
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    let id = format!("ck8s-dist-test-{}", std::process::id());
    let _cleanup = RuncContainer(id.clone());
    let log_path = work.path().join("container.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("error: running runc\nhelp: apt-get install runc");
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Ready once the policies are loaded.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let readyz = format!("http://127.0.0.1:{metrics_port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the container exited before it was ready ({status})\n\
                 help: runc needs root and a memory cgroup; its output:\n{}",
                logs()
            );
        }
        if let Ok(r) = plain.get(&readyz).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready within 60 s:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // As the Deployment says: uid/gid 65532, no capabilities, no new privileges, read-only root.
    let state: Value = serde_json::from_slice(&runc(&["state", &id]).stdout).unwrap();
    let pid = state["pid"].as_u64().expect("container pid");
    let ids = |f: &str| {
        proc_status_field(pid, f)
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("Uid"), vec!["65532"; 4]);
    assert_eq!(ids("Gid"), vec!["65532"; 4]);
    assert_eq!(
        ids("Groups"),
        vec![fs_group.to_string()],
        "fsGroup as the supplementary group"
    );
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(proc_status_field(pid, cap), "0000000000000000", "{cap}");
    }
    assert_eq!(proc_status_field(pid, "NoNewPrivs"), "1");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let options_at = |point: &str| {
        mountinfo
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .rfind(|f| f[4] == point)
            .unwrap_or_else(|| panic!("{point} not mounted:\n{mountinfo}"))[5]
            .split(',')
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(
        options_at("/").contains(&"ro".into()),
        "root is not read-only"
    );
    assert!(options_at(&tls_at).contains(&"ro".into()));
    assert!(options_at(&config_at).contains(&"ro".into()));
    assert!(options_at(&cache_at).contains(&"rw".into()));

    // Reviews over TLS, with the certificate from the mounted Secret.
    let client = ck8s_tests::webhook::client_trusting(&cert_pem)
        .resolve(
            "localhost",
            std::net::SocketAddr::from(([127, 0, 0, 1], https_port)),
        )
        .build()
        .unwrap();
    let validate = format!("https://localhost:{https_port}/validate");
    let review = |build_ref: &str, uid: &str| {
        ck8s_tests::webhook::review_of(
            ck8s_tests::webhook::deployment(build_ref),
            "deployments",
            uid,
        )
    };
    let allow: Value = client
        .post(&validate)
        .json(&review("main", "uid-allow"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(allow["response"]["uid"], "uid-allow");
    assert_eq!(allow["response"]["allowed"], true, "{allow}");
    let deny: Value = client
        .post(&validate)
        .json(&review("-b feature/x", "uid-deny"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deny["response"]["uid"], "uid-deny");
    assert_eq!(deny["response"]["allowed"], false, "{deny}");
    assert_eq!(deny["response"]["status"]["code"], 403);
    let message = deny["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("build-ref") && message.contains("CODEXK8S_BUILD_REF"),
        "{message}"
    );

    // Health and metrics on the plain-HTTP port the probes use.
    let metrics = plain
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("# EOF"), "not OpenMetrics text: {metrics}");
    assert!(metrics.contains("ck8s"), "no ck8s metrics: {metrics}");
    let healthz = plain
        .get(format!("http://127.0.0.1:{metrics_port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    // The artifact cache went to the emptyDir, the only writable place.
    assert!(
        std::fs::read_dir(&cache).unwrap().next().is_some(),
        "nothing written to the cache emptyDir ({cache_at})"
    );

    // Within the Deployment's memory limit, which the cgroup enforces.
    let events = runc(&["events", "--stats", &id]);
    assert!(events.status.success(), "runc events failed: {events:?}");
    let stats: Value = serde_json::from_slice(&events.stdout).unwrap();
    let usage = &stats["data"]["memory"]["usage"];
    assert_eq!(
        usage["limit"].as_u64(),
        Some(limit),
        "cgroup limit: {stats}"
    );
    let peak = usage["max"].as_u64().or(usage["usage"].as_u64()).unwrap();
    assert!(peak < limit, "peak memory {peak} reached the limit {limit}");
    eprintln!(
        "container peak memory (cgroup): {:.1} MiB of {} MiB",
        peak as f64 / (1 << 20) as f64,
        limit >> 20
    );

    // SIGTERM (what the kubelet sends after preStop): drains, exits 0.
    let kill = runc(&["kill", &id, "TERM"]);
    assert!(kill.status.success(), "runc kill failed: {kill:?}");
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running 40 s after SIGTERM:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let logs = logs();
    assert!(
        status.success(),
        "exit status {status} after SIGTERM:\n{logs}"
    );
    assert!(
        logs.contains("draining in-flight requests"),
        "no drain in the logs:\n{logs}"
    );
    // --log-format=json, as in the Deployment: every line of the server's is JSON.
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not a JSON log line: {line}"
        );
    }
}
