//! Where a policy set comes from, and the one constructor that builds it: the webhook (at
//! start and at every reload), `policy check`, `policy audit` and the plugin's build-ref
//! judge all describe their policies as [`PolicySources`] and call [`PolicySet::build`].

use crate::config::SettingsFile;
use crate::engine::Runtime;
use crate::error::{BuildError, LoadError};
use crate::policy::{LoadedPolicy, PolicySource};
use crate::set::PolicySet;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The policies of a set, loaded in the order given, and their configuration: e.g.
/// `PolicySources::new().builtin(ck8s_builtin_policies::BUNDLE).dir(dir).config_file(path)`.
#[derive(Debug, Clone, Default)]
pub struct PolicySources {
    policies: Vec<Source>,
    config: ConfigSource,
}

/// One place policies come from. A new kind of policy is a new variant (or a new file type
/// in a directory), loaded here: callers do not change.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Source {
    /// Policies compiled into the binary: a wasm module (one policy or a bundle) whose
    /// policies are each called `builtin:NAME`. The runtime has none of its own; the caller
    /// hands the bytes in (`ck8s_builtin_policies::BUNDLE`).
    Builtin(&'static [u8]),
    /// Every policy file in a directory, sorted by name: `*.wasm` (modules of one policy or
    /// bundles) and `*.yaml` / `*.yml` (ValidatingAdmissionPolicies, their bindings and the
    /// params beside them; a binding may be in another file than its policy). One file that
    /// does not load fails the whole set, so that a half-loaded directory never goes into
    /// service.
    Dir(PathBuf),
    /// One file of ValidatingAdmissionPolicies (multi-document YAML or JSON).
    VapFile(PathBuf),
    /// ValidatingAdmissionPolicies already read (from a cluster): multi-document YAML or JSON,
    /// `origin` naming it in errors.
    VapText { origin: String, text: String },
}

/// Where the policies' modes and settings come from.
#[derive(Debug, Clone, Default)]
pub enum ConfigSource {
    /// None: every policy with its defaults.
    #[default]
    Defaults,
    /// A settings file (`--config FILE`), read when the set is built.
    File(PathBuf),
    /// Settings read elsewhere (from the cluster, from a test suite).
    Given(SettingsFile),
}

impl PolicySources {
    /// No policies, default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the policies of a module compiled into the binary ([`Source::Builtin`]).
    pub fn builtin(mut self, wasm: &'static [u8]) -> Self {
        self.policies.push(Source::Builtin(wasm));
        self
    }

    /// Adds every policy file in `dir` ([`Source::Dir`]).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.policies.push(Source::Dir(dir.into()));
        self
    }

    /// Adds ValidatingAdmissionPolicies already read ([`Source::VapText`]).
    pub fn vap_text(mut self, origin: impl Into<String>, text: impl Into<String>) -> Self {
        self.policies.push(Source::VapText {
            origin: origin.into(),
            text: text.into(),
        });
        self
    }

    /// Adds one file of ValidatingAdmissionPolicies ([`Source::VapFile`]).
    pub fn vap_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.policies.push(Source::VapFile(path.into()));
        self
    }

    /// The configuration: a settings file, read at every [`PolicySet::build`].
    pub fn config_file(self, path: impl Into<PathBuf>) -> Self {
        self.config(ConfigSource::File(path.into()))
    }

    /// The configuration: settings already read.
    pub fn settings(self, settings: SettingsFile) -> Self {
        self.config(ConfigSource::Given(settings))
    }

    pub fn config(mut self, config: ConfigSource) -> Self {
        self.config = config;
        self
    }

    pub fn sources(&self) -> &[Source] {
        &self.policies
    }

    /// A digest of what a build would read from disk: the name and contents of every policy
    /// file in the directories, and the settings. Contents, not mtimes: a ConfigMap update
    /// swaps a symlink and keeps the old mtimes. A reload rebuilds only when it changes.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for source in &self.policies {
            match source {
                // Compiled in: cannot change under a running process.
                Source::Builtin(_) => h.update(b"builtin"),
                Source::Dir(dir) => {
                    for file in policy_files(dir).unwrap_or_default() {
                        h.update(file.to_string_lossy().as_bytes());
                        h.update(std::fs::read(&file).unwrap_or_default());
                    }
                }
                Source::VapFile(file) => {
                    h.update(file.to_string_lossy().as_bytes());
                    h.update(std::fs::read(file).unwrap_or_default());
                }
                Source::VapText { text, .. } => h.update(text.as_bytes()),
            }
        }
        match &self.config {
            ConfigSource::Defaults => {}
            ConfigSource::File(path) => {
                h.update(b"config");
                h.update(std::fs::read(path).unwrap_or_default());
            }
            ConfigSource::Given(settings) => {
                h.update(b"config");
                h.update(serde_json::to_vec(settings).unwrap_or_default());
            }
        }
        hex::encode(h.finalize())
    }
}

impl PolicySet {
    /// The one constructor of a set from its sources: reads the configuration, loads every
    /// source in order on `runtime` (compiled modules are reused from its caches), and checks
    /// the configuration against the policies ([`PolicySet::new`]). An empty set is not an
    /// error here: whether it is one is the caller's decision.
    pub fn build(runtime: &Runtime, sources: &PolicySources) -> Result<PolicySet, BuildError> {
        let config = match &sources.config {
            ConfigSource::Defaults => SettingsFile::default(),
            ConfigSource::File(path) => SettingsFile::read(path)?,
            ConfigSource::Given(settings) => settings.clone(),
        };
        let mut loaded = Loaded::default();
        for source in &sources.policies {
            source.load_into(runtime, &mut loaded)?;
        }
        let policies = loaded.wasm.into_iter().map(Arc::new).collect();
        Ok(PolicySet::assemble(policies, loaded.vaps, &config)?)
    }
}

/// What the sources of a set hold, as they are loaded.
#[derive(Default)]
struct Loaded {
    wasm: Vec<LoadedPolicy>,
    /// Every VAP file's documents in one set: a binding may name a policy of another file.
    vaps: Option<ck8s_policy_cel::PolicySet>,
}

impl Source {
    /// The wasm policies of this source, loaded on `runtime`, in order (a VAP file's
    /// policies are judged as a set: see [`PolicySet::vap_policies`]).
    pub fn load(&self, runtime: &Runtime) -> Result<Vec<LoadedPolicy>, LoadError> {
        let mut loaded = Loaded::default();
        self.load_into(runtime, &mut loaded)?;
        Ok(loaded.wasm)
    }

    fn load_into(&self, runtime: &Runtime, loaded: &mut Loaded) -> Result<(), LoadError> {
        match self {
            Source::Builtin(wasm) => loaded
                .wasm
                .extend(runtime.load_module(PolicySource::Builtin("bundle".into()), wasm)?),
            Source::Dir(dir) => {
                let files = policy_files(dir).map_err(|source| LoadError::ReadDir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
                for path in files {
                    load_file(runtime, path, loaded)?;
                }
            }
            Source::VapFile(path) => load_file(runtime, path.clone(), loaded)?,
            Source::VapText { origin, text } => loaded
                .vaps
                .get_or_insert_with(Default::default)
                .add(origin, text)
                .map_err(|error| LoadError::Vap {
                    path: PathBuf::from(origin),
                    error: Box::new(error),
                })?,
        }
        Ok(())
    }
}

/// A file of a policy directory: a wasm module, or ValidatingAdmissionPolicies.
fn load_file(runtime: &Runtime, path: PathBuf, loaded: &mut Loaded) -> Result<(), LoadError> {
    let bytes = std::fs::read(&path).map_err(|source| LoadError::Read {
        path: path.clone(),
        source,
    })?;
    if is_wasm(&path) {
        loaded
            .wasm
            .extend(runtime.load_module(PolicySource::File(path), &bytes)?);
        return Ok(());
    }
    let vap_error = |error| LoadError::Vap {
        path: path.clone(),
        error: Box::new(error),
    };
    let text = String::from_utf8(bytes).map_err(|_| {
        vap_error(ck8s_policy_cel::LoadError::Yaml {
            source_name: path.display().to_string(),
            message: "not UTF-8 text".into(),
        })
    })?;
    loaded
        .vaps
        .get_or_insert_with(Default::default)
        .add(&path.display().to_string(), &text)
        .map_err(vap_error)
}

fn is_wasm(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "wasm")
}

/// The policy files of `dir`, sorted by name: `*.wasm`, `*.yaml`, `*.yml`.
fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            // Hidden files are editors' and ConfigMap volumes' own (`..data`, `.x.swp`); a
            // policy's test suites (`*.ck8s-test.yaml`) may sit beside it.
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let hidden = name.starts_with('.') || name.contains(".ck8s-test.");
            p.extension()
                .is_some_and(|x| x == "wasm" || x == "yaml" || x == "yml")
                && !hidden
                && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_the_policy_files_and_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("policies.yaml");
        std::fs::write(&config, "policies: {}\n").unwrap();
        let sources = PolicySources::new()
            .builtin(b"")
            .dir(dir.path())
            .config_file(&config);
        let first = sources.fingerprint();
        assert_eq!(sources.fingerprint(), first, "stable");
        std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
        assert_eq!(sources.fingerprint(), first, "other files do not count");
        std::fs::write(dir.path().join("a.wasm"), "x").unwrap();
        let with_file = sources.fingerprint();
        assert_ne!(with_file, first);
        std::fs::write(dir.path().join("a.wasm"), "y").unwrap();
        assert_ne!(sources.fingerprint(), with_file, "contents, not names");
        let before = sources.fingerprint();
        std::fs::write(&config, "policies: { a: {} }\n").unwrap();
        assert_ne!(sources.fingerprint(), before);
    }

    #[test]
    fn a_settings_file_names_itself_in_its_errors() {
        use crate::ConfigError;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policies.yaml");
        let err = SettingsFile::read(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {}: ", path.display())),
            "{err}"
        );
        std::fs::write(&path, "policies: { a: { mode: block } }\n").unwrap();
        let err = SettingsFile::read(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: invalid policy config: ", path.display())),
            "{err}"
        );
    }

    #[test]
    fn no_sources_make_an_empty_set_and_a_config_for_no_policy_is_refused() {
        let runtime = Runtime::new(crate::Limits::one_shot(), None).unwrap();
        let set = PolicySet::build(&runtime, &PolicySources::new()).unwrap();
        assert!(set.is_empty());
        let settings = SettingsFile::parse("policies: { build-ref: {} }").unwrap();
        let err = PolicySet::build(&runtime, &PolicySources::new().settings(settings));
        assert!(
            matches!(&err, Err(BuildError::Set(crate::SetError::NotLoaded { policy, loaded }))
                if policy == "build-ref" && loaded.is_empty()),
            "{:?}",
            err.err()
        );
        let missing = PolicySources::new().dir("/nonexistent/ck8s-policies");
        let err = PolicySet::build(&runtime, &missing).err().unwrap();
        assert_eq!(
            err.to_string(),
            "cannot read policies directory /nonexistent/ck8s-policies: No such file or directory (os error 2)"
        );
    }
}
