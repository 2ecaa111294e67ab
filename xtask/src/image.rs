//! The webhook image, assembled without a container engine.
//!
//! From scratch: one layer holding `/usr/local/bin/ck8s-admission` (and its parent
//! directories), user 65532:65532, the binary as entrypoint and no default arguments (the
//! Deployment passes its own `args`, which replace an image's CMD and keep its ENTRYPOINT).
//! umoci writes the OCI image layout; skopeo converts it to a docker-archive for `docker load`.
//! `deploy/Dockerfile` describes the same image for people with Docker (a test compares them).

use crate::archive::{append_dir, append_file};
use crate::{IMAGE_NAME, REPOSITORY, VERSION, run};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The binary's path in the image; the Deployment runs it as the container's entrypoint.
pub const ENTRYPOINT: &str = "/usr/local/bin/ck8s-admission";
/// The Deployment's `runAsUser`/`runAsGroup` (distroless' "nonroot").
pub const USER: &str = "65532:65532";
/// 8443 HTTPS (/validate), 9090 plain HTTP (/healthz, /readyz, /metrics).
pub const PORTS: &[&str] = &["8443/tcp", "9090/tcp"];

const UMOCI_HINT: &str = "install umoci (Debian: apt-get install umoci), or pass --no-image";
const SKOPEO_HINT: &str = "install skopeo (Debian: apt-get install skopeo), or pass --no-image";

pub struct Spec<'a> {
    pub binary: &'a Path,
    pub arch: &'a str,
    pub revision: &'a str,
    pub epoch: i64,
    pub out: &'a Path,
}

pub struct Built {
    pub layout: PathBuf,
    pub docker_archive: PathBuf,
}

/// The OCI labels, the same as `deploy/Dockerfile`'s LABEL.
pub fn labels(revision: &str) -> Vec<(&'static str, String)> {
    vec![
        ("org.opencontainers.image.title", "ck8s-admission".into()),
        (
            "org.opencontainers.image.description",
            "ck8s validating admission webhook for the codex-k8s platform".into(),
        ),
        ("org.opencontainers.image.source", REPOSITORY.into()),
        ("org.opencontainers.image.version", VERSION.into()),
        ("org.opencontainers.image.revision", revision.into()),
        ("org.opencontainers.image.licenses", "Apache-2.0".into()),
    ]
}

pub fn build(spec: &Spec) -> Result<Built> {
    let layout = spec.out.join(format!("ck8s-admission-{VERSION}-oci"));
    let docker_archive = spec.out.join(format!(
        "ck8s-admission-{VERSION}-linux-{}.docker.tar",
        spec.arch
    ));
    let work = spec.out.join(".image-work");
    std::fs::create_dir_all(&work)?;
    let layer = work.join("layer.tar");
    write_layer(spec.binary, &layer, spec.epoch)?;

    let created = jiff::Timestamp::from_second(spec.epoch)
        .context("timestamp out of range")?
        .to_string();
    let layout_s = layout.to_str().context("non-UTF-8 output path")?;
    let image = format!("{layout_s}:{VERSION}");
    run("umoci", &["init", "--layout", layout_s], UMOCI_HINT)?;
    run("umoci", &["new", "--image", &image], UMOCI_HINT)?;
    let created_by = format!("cargo xtask dist: COPY ck8s-admission {ENTRYPOINT}");
    run(
        "umoci",
        &[
            "raw",
            "add-layer",
            "--image",
            &image,
            "--history.created",
            &created,
            "--history.created_by",
            &created_by,
            layer.to_str().context("non-UTF-8 output path")?,
        ],
        UMOCI_HINT,
    )?;
    let mut config: Vec<String> = [
        "config",
        "--image",
        &image,
        "--no-history",
        "--os",
        "linux",
        "--architecture",
        spec.arch,
        "--created",
        &created,
        "--config.user",
        USER,
        "--config.entrypoint",
        ENTRYPOINT,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for port in PORTS {
        config.extend(["--config.exposedports".into(), port.to_string()]);
    }
    for (key, value) in labels(spec.revision) {
        config.extend(["--config.label".into(), format!("{key}={value}")]);
    }
    run(
        "umoci",
        &config.iter().map(String::as_str).collect::<Vec<_>>(),
        UMOCI_HINT,
    )?;
    run("umoci", &["gc", "--layout", layout_s], UMOCI_HINT)?;

    let archive_s = docker_archive.to_str().context("non-UTF-8 output path")?;
    run(
        "skopeo",
        &[
            // The conversion reads and writes local files only; no signature policy applies.
            "--insecure-policy",
            "copy",
            "--quiet",
            &format!("oci:{image}"),
            &format!("docker-archive:{archive_s}:{IMAGE_NAME}:{VERSION}"),
        ],
        SKOPEO_HINT,
    )?;
    std::fs::remove_dir_all(&work)?;
    Ok(Built {
        layout,
        docker_archive,
    })
}

/// The image's only layer, uncompressed (umoci compresses it): the parent directories and the
/// binary, owned by root, as Docker's `COPY` makes them.
fn write_layer(binary: &Path, path: &Path, epoch: i64) -> Result<()> {
    let data = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let mut tar = tar::Builder::new(std::fs::File::create(path)?);
    let rel = ENTRYPOINT.trim_start_matches('/');
    let mut dir = String::new();
    for part in rel.split('/').take(rel.split('/').count() - 1) {
        dir.push_str(part);
        dir.push('/');
        append_dir(&mut tar, &dir, epoch)?;
    }
    append_file(&mut tar, rel, &data, 0o755, epoch)?;
    tar.into_inner()?;
    Ok(())
}
