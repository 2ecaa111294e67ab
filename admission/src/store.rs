//! The policy set in service, and its reload.
//!
//! A reload builds a complete new [`PolicySet`] (built-ins + the policies directory + the
//! config) and swaps it in atomically; requests already running keep the set they started
//! with. If anything fails to load, the previous set stays in service and the failure is
//! logged and counted.

use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use ck8s_policy_runtime::{LoadedPolicy, PolicySet, Runtime, SettingsFile};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

pub struct PolicyStore {
    runtime: Runtime,
    builtin: Vec<Arc<LoadedPolicy>>,
    dir: Option<PathBuf>,
    config: Option<PathBuf>,
    current: ArcSwap<PolicySet>,
    /// Fingerprint of the directory and config the current set was built from.
    loaded_from: Mutex<String>,
}

impl PolicyStore {
    /// Loads everything once; an error here is fatal (there is no previous set to keep).
    pub fn open(
        runtime: Runtime,
        with_builtin: bool,
        dir: Option<PathBuf>,
        config: Option<PathBuf>,
        metrics: &Metrics,
    ) -> Result<Self, String> {
        let start = Instant::now();
        let builtin = if with_builtin {
            runtime
                .load_builtin()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(Arc::new)
                .collect()
        } else {
            Vec::new()
        };
        let store = PolicyStore {
            runtime,
            builtin,
            dir,
            config,
            current: ArcSwap::from_pointee(PolicySet::new(Vec::new(), &SettingsFile::default())?),
            loaded_from: Mutex::new(String::new()),
        };
        let fingerprint = store.fingerprint();
        let set = store.build()?;
        if set.is_empty() {
            return Err(
                "no policies to serve: the built-in ones are off and --policies holds no .wasm"
                    .into(),
            );
        }
        store.install(set, fingerprint, metrics, start);
        Ok(store)
    }

    /// The set in service.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Reloads if the directory or the config changed. `Ok(true)` if a new set went into
    /// service, `Err` (old set kept) if the new one did not load.
    pub fn reload_if_changed(&self, metrics: &Metrics) -> Result<bool, String> {
        let fingerprint = self.fingerprint();
        if *self.loaded_from.lock().unwrap() == fingerprint {
            return Ok(false);
        }
        let start = Instant::now();
        match self.build() {
            Ok(set) => {
                self.install(set, fingerprint, metrics, start);
                metrics.reload("policies", true);
                Ok(true)
            }
            Err(e) => {
                // Remember the broken state so the same error is not logged every interval.
                *self.loaded_from.lock().unwrap() = fingerprint;
                metrics.reload("policies", false);
                Err(e)
            }
        }
    }

    fn install(&self, set: PolicySet, fingerprint: String, metrics: &Metrics, start: Instant) {
        let names: Vec<String> = set
            .policies()
            .map(|(p, c)| format!("{}@{} ({})", p.name(), p.metadata.version, c.mode.as_str()))
            .collect();
        metrics.policies_loaded.set(set.len() as i64);
        metrics
            .policy_load_seconds
            .set(start.elapsed().as_secs_f64());
        self.current.store(Arc::new(set));
        *self.loaded_from.lock().unwrap() = fingerprint;
        tracing::info!(policies = %names.join(", "), elapsed_ms = start.elapsed().as_secs_f64() * 1e3, "policy set in service");
    }

    fn build(&self) -> Result<PolicySet, String> {
        let mut policies = self.builtin.clone();
        if let Some(dir) = &self.dir {
            policies.extend(
                self.runtime
                    .load_dir(dir)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(Arc::new),
            );
        }
        let config = match &self.config {
            Some(path) => SettingsFile::read(path)?,
            None => SettingsFile::default(),
        };
        PolicySet::new(policies, &config)
    }

    /// A digest of every `.wasm` in the directory (names and contents) and of the config.
    /// Contents, not mtimes: a ConfigMap update swaps a symlink and keeps old mtimes.
    fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        if let Some(dir) = &self.dir {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            for f in files {
                h.update(f.to_string_lossy().as_bytes());
                h.update(std::fs::read(&f).unwrap_or_default());
            }
        }
        if let Some(c) = &self.config {
            h.update(b"config");
            h.update(std::fs::read(c).unwrap_or_default());
        }
        hex::encode(h.finalize())
    }
}
