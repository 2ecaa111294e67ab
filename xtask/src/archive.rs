//! `ck8s-<version>-<target>.tar.gz`: the binaries, the completion helper, LICENSE, README.

use crate::{BINARIES, Target, VERSION};
use anyhow::{Context, Result};
use flate2::{Compression, GzBuilder};
use std::path::{Path, PathBuf};

/// The archive's file name and its single top-level directory (without `.tar.gz`).
pub fn stem(target: &Target) -> String {
    format!("ck8s-{VERSION}-{}", target.triple)
}

/// Every file of the archive: (path under the top-level directory, source, mode).
fn members(root: &Path, bin_dir: &Path) -> Vec<(String, PathBuf, u32)> {
    let mut files: Vec<(String, PathBuf, u32)> = BINARIES
        .iter()
        .map(|b| (b.to_string(), bin_dir.join(b), 0o755))
        .collect();
    files.push((
        "kubectl_complete-ck8s".into(),
        root.join("kubectl-ck8s/kubectl_complete-ck8s"),
        0o755,
    ));
    files.push(("LICENSE".into(), root.join("LICENSE"), 0o644));
    files.push(("README.md".into(), root.join("README.md"), 0o644));
    files
}

/// Writes the archive for `target` into `out`; entries are owned by root and stamped `epoch`.
pub fn write(
    root: &Path,
    bin_dir: &Path,
    target: &Target,
    out: &Path,
    epoch: i64,
) -> Result<PathBuf> {
    let stem = stem(target);
    let path = out.join(format!("{stem}.tar.gz"));
    let file = std::fs::File::create(&path)?;
    // No file name or time in the gzip header: same inputs, same bytes.
    let gz = GzBuilder::new()
        .mtime(0)
        .write(file, Compression::default());
    let mut tar = tar::Builder::new(gz);
    append_dir(&mut tar, &format!("{stem}/"), epoch)?;
    for (name, source, mode) in members(root, bin_dir) {
        let data =
            std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        append_file(&mut tar, &format!("{stem}/{name}"), &data, mode, epoch)?;
    }
    tar.into_inner()?.finish()?;
    Ok(path)
}

fn header(kind: tar::EntryType, size: u64, mode: u32, epoch: i64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(epoch.max(0) as u64);
    h
}

/// A directory entry (`path` ends with `/`), mode 0755, owned by root.
pub fn append_dir<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    epoch: i64,
) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0, 0o755, epoch);
    tar.append_data(&mut h, path, std::io::empty())?;
    Ok(())
}

/// A regular file entry owned by root.
pub fn append_file<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
    mode: u32,
    epoch: i64,
) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, mode, epoch);
    tar.append_data(&mut h, path, data)?;
    Ok(())
}
