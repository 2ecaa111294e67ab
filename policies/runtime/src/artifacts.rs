//! The precompiled-artifact cache, and why it may be trusted.
//!
//! `Module::deserialize` maps native code as it finds it, so an artifact is code this process
//! will run. It is used only when all of this holds, otherwise the policy is compiled again:
//!
//! - the artifacts live in `<cache dir>/artifacts-<euid>/`, a directory (not a symlink) owned
//!   by this process's effective uid with no group or other permissions (created `0700`);
//! - that directory holds `key`: 32 random bytes, `0600`, owned by the uid, made once per cache;
//! - each artifact file is a regular file (opened without following symlinks) owned by the uid,
//!   writable by it alone, and starts with an HMAC-SHA256, under that key, of its name (wasm
//!   digest and engine compatibility hash) and of the artifact bytes.
//!
//! So only a process that could read the key (the same uid, or root) can make an artifact this
//! process will run; a file planted in a shared or loosened directory is recompiled over.
//! Unix only: elsewhere the cache is off.

use std::path::{Path, PathBuf};

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 32;
const DOMAIN: &[u8] = b"ck8s-artifact-v1\0";

/// An artifact directory that passed the checks, with its key.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    key: ring::hmac::Key,
}

impl ArtifactCache {
    /// Opens (creating if needed) the private directory under `root`. `Err` says why the
    /// cache cannot be trusted; the caller then compiles without it.
    pub(crate) fn open(root: &Path) -> Result<ArtifactCache, String> {
        imp::open(root)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the tag covers: the name (wasm digest, engine hash) and a digest of the bytes.
    fn signed(name: &str, bytes: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        let mut m = Vec::with_capacity(DOMAIN.len() + name.len() + 33);
        m.extend_from_slice(DOMAIN);
        m.extend_from_slice(name.as_bytes());
        m.push(0);
        m.extend_from_slice(&sha2::Sha256::digest(bytes));
        m
    }

    /// The artifact bytes of `name` if the file exists and is authentic. `Ok(None)`: absent.
    pub(crate) fn read(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(mut file) = imp::read_owned(&self.dir.join(name))? else {
            return Ok(None);
        };
        if file.len() < TAG_LEN {
            return Err("shorter than its authentication tag".into());
        }
        let (tag, bytes) = file.split_at(TAG_LEN);
        ring::hmac::verify(&self.key, &Self::signed(name, bytes), tag)
            .map_err(|_| "authentication tag does not match: not written by this cache")?;
        file.drain(..TAG_LEN);
        Ok(Some(file))
    }

    /// Writes `bytes` as `name`, tagged, atomically (temp file + rename), mode 0600.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tag = ring::hmac::sign(&self.key, &Self::signed(name, bytes));
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp{}", std::process::id()));
        let mut data = Vec::with_capacity(TAG_LEN + bytes.len());
        data.extend_from_slice(tag.as_ref());
        data.extend_from_slice(bytes);
        imp::write_private(&tmp, &data)?;
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

#[cfg(unix)]
mod imp {
    use super::{ArtifactCache, KEY_LEN};
    use std::fs::{File, OpenOptions};
    use std::io::{Read, Write};
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    fn euid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    /// Owned by us, a regular file, nobody else may write it (and, for `private`, read it).
    fn check_file(path: &Path, md: &std::fs::Metadata, private: bool) -> Result<(), String> {
        let forbidden = if private { 0o077 } else { 0o022 };
        if !md.file_type().is_file() {
            return Err(format!("{} is not a regular file", path.display()));
        }
        if md.uid() != euid() {
            return Err(format!(
                "{} is owned by uid {}, not by this process (uid {})",
                path.display(),
                md.uid(),
                euid()
            ));
        }
        if md.permissions().mode() & forbidden != 0 {
            return Err(format!(
                "{} has mode {:o}: others may change it",
                path.display(),
                md.permissions().mode() & 0o7777
            ));
        }
        Ok(())
    }

    fn open_nofollow(path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    }

    pub(super) fn open(root: &Path) -> Result<ArtifactCache, String> {
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let dir = root.join(format!("artifacts-{}", euid()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
        let md = std::fs::symlink_metadata(&dir)
            .map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
        if !md.file_type().is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        if md.uid() != euid() {
            return Err(format!(
                "{} is owned by uid {}, not by this process (uid {})",
                dir.display(),
                md.uid(),
                euid()
            ));
        }
        if md.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "{} has mode {:o}; it must be 0700",
                dir.display(),
                md.permissions().mode() & 0o7777
            ));
        }
        let key = key(&dir)?;
        Ok(ArtifactCache {
            dir,
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        })
    }

    /// The cache's key: read if present (and private), else made and published atomically
    /// (a hard link fails if another process got there first; its key is then read).
    fn key(dir: &Path) -> Result<[u8; KEY_LEN], String> {
        let path = dir.join("key");
        for _ in 0..3 {
            match open_nofollow(&path) {
                Ok(mut f) => {
                    let md = f.metadata().map_err(|e| e.to_string())?;
                    check_file(&path, &md, true)?;
                    let mut key = [0u8; KEY_LEN];
                    let mut rest = Vec::new();
                    f.read_exact(&mut key)
                        .and_then(|()| f.read_to_end(&mut rest))
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    if !rest.is_empty() {
                        return Err(format!("{} is not a {KEY_LEN}-byte key", path.display()));
                    }
                    return Ok(key);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let mut key = [0u8; KEY_LEN];
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                        .map_err(|_| "no random bytes for the cache key".to_string())?;
                    let tmp = dir.join(format!(".key.tmp{}", std::process::id()));
                    write_private(&tmp, &key).map_err(|e| format!("{}: {e}", tmp.display()))?;
                    let linked = std::fs::hard_link(&tmp, &path);
                    let _ = std::fs::remove_file(&tmp);
                    match linked {
                        Ok(()) => return Ok(key),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(format!("{}: {e}", path.display())),
                    }
                }
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Err(format!("{}: could not be read or created", path.display()))
    }

    /// The file's bytes if it exists and passes [`check_file`]; `Ok(None)` if absent.
    pub(super) fn read_owned(path: &Path) -> Result<Option<Vec<u8>>, String> {
        let mut f = match open_nofollow(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let md = f.metadata().map_err(|e| e.to_string())?;
        check_file(path, &md, false)?;
        let mut bytes = Vec::with_capacity(md.len() as usize);
        f.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        Ok(Some(bytes))
    }

    /// A new file, 0600, never through a symlink (`O_EXCL`).
    pub(super) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        f.write_all(data)?;
        f.sync_all()
    }
}

#[cfg(not(unix))]
mod imp {
    use super::ArtifactCache;
    use std::path::Path;

    pub(super) fn open(_root: &Path) -> Result<ArtifactCache, String> {
        Err("the artifact cache needs Unix file ownership; compiling every start".into())
    }
    pub(super) fn read_owned(_path: &Path) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    pub(super) fn write_private(_path: &Path, _data: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("no artifact cache on this platform"))
    }
}
