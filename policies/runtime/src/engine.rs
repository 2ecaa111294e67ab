//! One engine per process, with every limit named and defaulted here.

use crate::artifacts::ArtifactCache;
use crate::error::LoadError;
use crate::policy::{LoadedPolicy, PolicySource};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig};

/// The limits every evaluation runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    /// CPU wall-clock deadline of one evaluation (enforced by epoch interruption).
    pub deadline: Duration,
    /// Largest linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Largest verdict a policy may return.
    pub max_output_bytes: usize,
    /// Wasm stack limit (deep recursion traps cleanly at this depth).
    pub max_wasm_stack: usize,
    /// Instances that may exist at once; evaluations beyond it fail fast with
    /// [`crate::PolicyError::Capacity`]. Callers bound their concurrency below this.
    pub max_instances: u32,
    /// Memory kept mapped between instances of a pool slot: a small policy's whole working
    /// set, so reusing a slot costs no page faults.
    pub keep_resident_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
            max_output_bytes: 1 << 20,
            max_wasm_stack: 512 << 10,
            max_instances: 256,
            keep_resident_bytes: 256 << 10,
        }
    }
}

/// How often the epoch advances. A deadline is rounded up to whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// The engine, its limits, and the compiled-module caches.
pub struct Runtime {
    engine: Engine,
    limits: Limits,
    deadline_ticks: u64,
    /// `None` when no directory was given or it did not pass the trust checks.
    artifacts: Option<ArtifactCache>,
    compat_hash: String,
    /// Modules by wasm digest: a reload that finds the same bytes reuses the module.
    modules: Mutex<HashMap<String, Module>>,
    _ticker: Arc<EpochTicker>,
}

struct EpochTicker {
    stop: std::sync::atomic::AtomicBool,
}

impl Runtime {
    /// A runtime with `limits`, caching precompiled artifacts under `artifact_dir` if given
    /// and trustworthy (see the README's trust model; otherwise it compiles and says why).
    pub fn new(limits: Limits, artifact_dir: Option<PathBuf>) -> Result<Self, LoadError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(limits.max_instances)
            .total_memories(limits.max_instances)
            .total_tables(limits.max_instances)
            .max_memory_size(limits.memory_bytes)
            .linear_memory_keep_resident(limits.keep_resident_bytes)
            .table_keep_resident(limits.keep_resident_bytes);
        // Reset only the pages an instance dirtied (Linux 6.7+, else the plain reset):
        // halves the fixed cost of an evaluation here.
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(limits.max_wasm_stack)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        #[cfg(feature = "perfmap")]
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        let engine = Engine::new(&config)
            .map_err(|e| LoadError::Io(format!("cannot start the wasm engine: {e}")))?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat_hash = format!("{:016x}", h.finish());

        let ticker = Arc::new(EpochTicker { stop: false.into() });
        {
            let engine = engine.clone();
            let ticker = Arc::downgrade(&ticker);
            std::thread::Builder::new()
                .name("ck8s-epoch".into())
                .spawn(move || {
                    while let Some(t) = ticker.upgrade() {
                        if t.stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        drop(t);
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| LoadError::Io(format!("cannot start the epoch thread: {e}")))?;
        }
        let deadline_ticks = limits
            .deadline
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos())
            .max(1) as u64;
        let artifacts = artifact_dir.and_then(|root| match ArtifactCache::open(&root) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::warn!(cache = %root.display(), error = %e, "not using the precompiled artifact cache; policies are compiled at every start");
                None
            }
        });
        Ok(Runtime {
            engine,
            limits,
            deadline_ticks,
            artifacts,
            compat_hash,
            modules: Mutex::new(HashMap::new()),
            _ticker: ticker,
        })
    }

    /// The default artifact cache: `$CK8S_CACHE_DIR`, else `$XDG_CACHE_HOME/ck8s`, else
    /// `~/.cache/ck8s`.
    pub fn default_artifact_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("CK8S_CACHE_DIR") {
            return Some(d.into());
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("ck8s"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("ck8s"))
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The engine every policy of this runtime is compiled for (diagnostics and tools that
    /// must measure exactly this configuration, like `examples/instance_cost.rs`).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn deadline_ticks(&self) -> u64 {
        self.deadline_ticks
    }

    /// Loads and validates a module of one policy from wasm bytes (or WAT text, for tests).
    /// A bundle is refused here: see [`Runtime::load_module`].
    pub fn load(&self, source: PolicySource, wasm: &[u8]) -> Result<LoadedPolicy, LoadError> {
        let name = source.to_string();
        let mut policies = self.load_module(source, wasm)?;
        if policies.len() != 1 {
            return Err(LoadError::Metadata {
                source_name: name,
                message: format!(
                    "a bundle of {} policies where one was expected",
                    policies.len()
                ),
            });
        }
        Ok(policies.remove(0))
    }

    /// Loads and validates a module: its one policy, or every policy of a bundle (see
    /// `ck8s_policy_api`), in the bundle's order.
    pub fn load_module(
        &self,
        source: PolicySource,
        wasm: &[u8],
    ) -> Result<Vec<LoadedPolicy>, LoadError> {
        let digest = hex::encode(Sha256::digest(wasm));
        let module = self.module(&source, &digest, wasm)?;
        LoadedPolicy::load_module(self, source, digest, wasm.len(), module)
    }

    /// Every built-in policy, loaded from the built-in bundle (one instance per request for
    /// all of them).
    pub fn load_builtin(&self) -> Result<Vec<LoadedPolicy>, LoadError> {
        self.load_module(
            PolicySource::Builtin("bundle".into()),
            ck8s_builtin_policies::BUNDLE,
        )
    }

    /// Loads every `*.wasm` file in `dir` (modules of one policy or bundles), sorted by name;
    /// one error fails the whole set so that a half-loaded directory never goes into service.
    pub fn load_dir(&self, dir: &std::path::Path) -> Result<Vec<LoadedPolicy>, LoadError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            LoadError::Io(format!(
                "cannot read policies directory {}: {e}",
                dir.display()
            ))
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let wasm = std::fs::read(&path)
                    .map_err(|e| LoadError::Io(format!("cannot read {}: {e}", path.display())))?;
                self.load_module(PolicySource::File(path), &wasm)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|modules| modules.into_iter().flatten().collect())
    }

    fn module(
        &self,
        source: &PolicySource,
        digest: &str,
        wasm: &[u8],
    ) -> Result<Module, LoadError> {
        if let Some(m) = self.modules.lock().unwrap().get(digest) {
            return Ok(m.clone());
        }
        let name = format!("{digest}-{}.cwasm", self.compat_hash);
        let mut module = None;
        if let Some(cache) = &self.artifacts {
            // Read, not mmap (`deserialize_file`): a file truncated under a mapped module
            // would kill the process with SIGBUS; a copy of a few hundred KiB costs ~0.1 ms.
            match cache.read(&name) {
                Ok(None) => {}
                // SAFETY: the bytes passed `ArtifactCache::read`: a file of this uid in its
                // private directory, tagged with the cache's key, which only this uid can
                // read, over this name (wasm digest, engine compatibility hash) and these
                // bytes; so they are what `Module::serialize` below wrote for this wasm.
                // deserialize also checks the engine configuration.
                Ok(Some(bytes)) => match unsafe { Module::deserialize(&self.engine, bytes) } {
                    Ok(m) => module = Some(m),
                    Err(e) => {
                        tracing::warn!(artifact = %cache.dir().join(&name).display(), error = %e, "ignoring unusable precompiled artifact")
                    }
                },
                Err(e) => {
                    tracing::warn!(artifact = %cache.dir().join(&name).display(), error = %e, "not trusting a precompiled artifact; compiling")
                }
            }
        }
        let module = match module {
            Some(m) => m,
            None => {
                let m = Module::new(&self.engine, wasm).map_err(|e| LoadError::Invalid {
                    source_name: source.to_string(),
                    message: format!("{e:#}"),
                })?;
                if let Some(cache) = &self.artifacts
                    && let Err(e) = m
                        .serialize()
                        .map_err(|e| std::io::Error::other(e.to_string()))
                        .and_then(|bytes| cache.write(&name, &bytes))
                {
                    tracing::warn!(artifact = %cache.dir().join(&name).display(), error = %e, "cannot cache precompiled policy");
                }
                m
            }
        };
        self.modules
            .lock()
            .unwrap()
            .insert(digest.to_string(), module.clone());
        Ok(module)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self._ticker
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
