//! Profile-guided optimisation of the release (admission/pgo/README.md): the profile committed
//! for a target, `admission/pgo/<triple>.profdata.gz`, goes to rustc as `-Cprofile-use`.
//!
//! The profile is unpacked to a path named by its content hash, so that a regenerated profile
//! changes the flags and cargo rebuilds (it does not watch files named in RUSTFLAGS). A profile
//! older than the code is never wrong, only less useful: LLVM ignores the counters of a function
//! whose control flow changed.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The committed profile of `triple`, if there is one.
pub fn committed_profile(root: &Path, triple: &str) -> Option<PathBuf> {
    let path = root
        .join("admission/pgo")
        .join(format!("{triple}.profdata.gz"));
    path.is_file().then_some(path)
}

/// What `cargo xtask dist` says of the profile: the commit it was trained at (from
/// `<triple>.trained-at`) and how many commits have changed Rust code or Cargo.lock since.
pub fn provenance(root: &Path, triple: &str) -> String {
    let stamp = root
        .join("admission/pgo")
        .join(format!("{triple}.trained-at"));
    let Some(commit) = std::fs::read_to_string(&stamp).ok().and_then(|s| {
        s.split_whitespace()
            .find(|w| w.len() == 40 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
    }) else {
        return format!("no commit recorded in {}", stamp.display());
    };
    let since = crate::git(
        root,
        &[
            "rev-list",
            "--count",
            &format!("{commit}..HEAD"),
            "--",
            "*.rs",
            "Cargo.lock",
        ],
    );
    match since {
        Ok(n) if n == "0" => format!(
            "trained at {}, the Rust code since unchanged",
            &commit[..12]
        ),
        Ok(n) => format!(
            "trained at {}; {n} commit(s) since changed Rust code: functions changed since run without \
             their profile (admission/pgo/README.md, \"When to regenerate\")",
            &commit[..12]
        ),
        Err(_) => format!(
            "trained at {} (not in this checkout's history)",
            &commit[..12]
        ),
    }
}

/// Unpacks `gz` under `dir` as `<sha256 prefix>.profdata` (kept if already there); returns it.
pub fn unpack(gz: &Path, dir: &Path) -> Result<PathBuf> {
    let packed = std::fs::read(gz).with_context(|| format!("reading {}", gz.display()))?;
    let mut profile = Vec::new();
    flate2::read::GzDecoder::new(&packed[..])
        .read_to_end(&mut profile)
        .with_context(|| format!("{} is not a gzip file", gz.display()))?;
    let hash = hex::encode(Sha256::digest(&profile));
    let path = dir.join(format!("{}.profdata", &hash[..16]));
    if !path.is_file() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Written whole, then renamed: a build interrupted mid-write leaves no half profile.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, &profile)
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &path)?;
    }
    Ok(path)
}

/// The environment variable and value that add `-Cprofile-use=<profile>` to the target's
/// flags without dropping any the caller set: cargo reads `CARGO_ENCODED_RUSTFLAGS`, else
/// `RUSTFLAGS`, else `CARGO_TARGET_<TRIPLE>_RUSTFLAGS`, and only the first it finds.
/// `env` looks a variable up (`std::env::var`, in tests a table).
pub fn rustflags_with_profile(
    triple: &str,
    profile: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> (String, String) {
    let flag = format!("-Cprofile-use={}", profile.display());
    // Set but empty still counts in cargo (it overrides the rest with no flags).
    let join = |name: &str, separator: char| match env(name) {
        Some(flags) if flags.is_empty() => Some(flag.clone()),
        Some(flags) => Some(format!("{flags}{separator}{flag}")),
        None => None,
    };
    if let Some(value) = join("CARGO_ENCODED_RUSTFLAGS", '\u{1f}') {
        return ("CARGO_ENCODED_RUSTFLAGS".into(), value);
    }
    if let Some(value) = join("RUSTFLAGS", ' ') {
        return ("RUSTFLAGS".into(), value);
    }
    let name = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        triple.to_uppercase().replace('-', "_")
    );
    let value = join(&name, ' ').unwrap_or(flag);
    (name, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_profile_is_unpacked_once_under_its_content_hash() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("p.profdata.gz");
        let pack = |bytes: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            std::fs::write(&gz, e.finish().unwrap()).unwrap();
        };
        pack(b"first profile");
        let out = dir.path().join("out");
        let first = unpack(&gz, &out).unwrap();
        assert_eq!(std::fs::read(&first).unwrap(), b"first profile");
        assert_eq!(unpack(&gz, &out).unwrap(), first);
        // A regenerated profile gets another path, so the flags change and cargo rebuilds.
        pack(b"second profile");
        let second = unpack(&gz, &out).unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::read(&second).unwrap(), b"second profile");
    }

    #[test]
    fn the_profile_joins_the_flags_cargo_would_read() {
        let profile = Path::new("/t/p.profdata");
        let triple = "x86_64-unknown-linux-musl";
        let with = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            rustflags_with_profile(triple, profile, move |name| {
                vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            })
        };
        let target = "CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS";
        assert_eq!(
            with(&[]),
            (target.into(), "-Cprofile-use=/t/p.profdata".into())
        );
        assert_eq!(
            with(&[(target, "-Ctarget-cpu=x86-64-v2")]),
            (
                target.into(),
                "-Ctarget-cpu=x86-64-v2 -Cprofile-use=/t/p.profdata".into()
            )
        );
        // RUSTFLAGS wins over the target's flags in cargo, so the profile goes there.
        assert_eq!(
            with(&[("RUSTFLAGS", "-g"), (target, "-Ctarget-cpu=native")]),
            ("RUSTFLAGS".into(), "-g -Cprofile-use=/t/p.profdata".into())
        );
        assert_eq!(
            with(&[("CARGO_ENCODED_RUSTFLAGS", "-g"), ("RUSTFLAGS", "-O")]),
            (
                "CARGO_ENCODED_RUSTFLAGS".into(),
                "-g\u{1f}-Cprofile-use=/t/p.profdata".into()
            )
        );
        // Set but empty overrides the target's flags in cargo too.
        assert_eq!(
            with(&[("RUSTFLAGS", ""), (target, "-g")]),
            ("RUSTFLAGS".into(), "-Cprofile-use=/t/p.profdata".into())
        );
    }

    #[test]
    fn a_file_that_is_not_gzip_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("broken.profdata.gz");
        std::fs::write(&gz, b"not gzip").unwrap();
        let e = unpack(&gz, dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("broken.profdata.gz"), "{e:#}");
    }
}
