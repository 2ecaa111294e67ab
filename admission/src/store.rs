//! The policy set in service, and its reload.
//!
//! A reload builds a complete new [`PolicySet`] from the same [`PolicySources`] (built-ins +
//! the policies directory + the config) and swaps it in atomically; requests already running keep the set they started
//! with. If anything fails to load, the previous set stays in service and the failure is
//! logged and counted.

use crate::metrics::{Metrics, SetSeries};
use arc_swap::ArcSwap;
use ck8s_policy_runtime::{BuildError, PolicySet, PolicySources, Runtime, SettingsFile};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

pub struct PolicyStore {
    runtime: Runtime,
    sources: PolicySources,
    current: ArcSwap<Served>,
    /// [`PolicySources::fingerprint`] of what the current set was built from.
    loaded_from: Mutex<String>,
}

/// A policy set in service, with its policies' metric series (found once, when it goes into
/// service, so that a review does not look them up).
pub struct Served {
    pub set: PolicySet,
    pub series: SetSeries,
}

impl Served {
    pub fn new(set: PolicySet) -> Self {
        let series = SetSeries::new(set.names());
        Served { set, series }
    }
}

/// Why no set could go into service.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(
        "no policies to serve: the built-in ones are off and --policies holds no .wasm or ValidatingAdmissionPolicy file"
    )]
    Empty,
}

impl PolicyStore {
    /// Loads everything once; an error here is fatal (there is no previous set to keep).
    pub fn open(
        runtime: Runtime,
        sources: PolicySources,
        metrics: &Metrics,
    ) -> Result<Self, StoreError> {
        let start = Instant::now();
        let fingerprint = sources.fingerprint();
        let set = PolicySet::build(&runtime, &sources)?;
        if set.is_empty() {
            return Err(StoreError::Empty);
        }
        let store = PolicyStore {
            runtime,
            sources,
            current: ArcSwap::from_pointee(Served::new(
                PolicySet::new(Vec::new(), &SettingsFile::default())
                    .expect("an empty set has nothing to refuse"),
            )),
            loaded_from: Mutex::new(String::new()),
        };
        store.install(set, fingerprint, metrics, start);
        Ok(store)
    }

    /// The set in service.
    pub fn current(&self) -> Arc<Served> {
        self.current.load_full()
    }

    /// Reloads if the directory or the config changed. `Ok(true)` if a new set went into
    /// service, `Err` (old set kept) if the new one did not load.
    pub fn reload_if_changed(&self, metrics: &Metrics) -> Result<bool, BuildError> {
        let fingerprint = self.sources.fingerprint();
        if *self.loaded_from.lock().unwrap() == fingerprint {
            return Ok(false);
        }
        let start = Instant::now();
        match PolicySet::build(&self.runtime, &self.sources) {
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
            .chain(
                set.vap_policies()
                    .iter()
                    .map(|p| format!("{} (ValidatingAdmissionPolicy)", p.name)),
            )
            .collect();
        metrics.policies_loaded.set(set.len() as i64);
        metrics
            .policy_load_seconds
            .set(start.elapsed().as_secs_f64());
        self.current.store(Arc::new(Served::new(set)));
        *self.loaded_from.lock().unwrap() = fingerprint;
        tracing::info!(policies = %names.join(", "), elapsed_ms = start.elapsed().as_secs_f64() * 1e3, "policy set in service");
    }
}
