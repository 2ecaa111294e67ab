//! One engine per process, with every limit named and defaulted here. It compiles and
//! caches modules; what a module means as a policy is `policy.rs`'s business, not this one's.

use crate::artifacts::ArtifactCache;
use crate::error::{LoadError, StartError};
use crate::stores::StorePool;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
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
    /// Evaluations that may run at once; beyond the pool's slots they fail fast with
    /// [`crate::PolicyError::Capacity`]. Callers bound their concurrency below this. The pool
    /// has these slots plus those the kept stores may hold ([`Limits::kept_stores`]).
    pub max_instances: u32,
    /// Memory kept mapped between instances of a pool slot: a small policy's whole working
    /// set, so reusing a slot costs no page faults.
    pub keep_resident_bytes: usize,
    /// Evaluations one wasmtime store serves before it is dropped, each in a fresh instance
    /// of its own (see `stores.rs`): a store's set-up and teardown are paid once for them
    /// all. 1: a store per evaluation.
    pub evaluations_per_store: u32,
    /// Stores kept between evaluations at most. The pool has `max_instances` slots for the
    /// evaluations in flight plus `kept_stores * (evaluations_per_store - 1)` for the
    /// instances the kept stores still hold.
    pub kept_stores: u32,
    /// Whether [`Limits::deadline`] is enforced, by a thread that advances the engine's epoch
    /// (see [`EpochTicker`]). Off only in [`Limits::one_shot`].
    pub enforce_deadline: bool,
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
            evaluations_per_store: 8,
            kept_stores: 2,
            enforce_deadline: true,
        }
    }
}

impl Limits {
    /// For a short-lived process that judges a few objects, one at a time, with the built-in
    /// policies only (the plugin's build-ref judge): one instance slot instead of a pool, and
    /// no epoch thread, so no deadline. Never for policies from a file: a loop would hang.
    pub fn one_shot() -> Self {
        Limits {
            max_instances: 1,
            evaluations_per_store: 1,
            enforce_deadline: false,
            ..Limits::default()
        }
    }
}

/// How often the epoch advances while an evaluation runs: a deadline holds to within one tick.
const EPOCH_TICK: Duration = Duration::from_millis(20);

/// How long the epoch thread keeps waking after the last evaluation started before it parks.
/// At a cluster's steady rate it never parks, so an evaluation that starts costs no wake-up
/// of it; idle, it parks after this and costs nothing.
const EPOCH_GRACE: Duration = Duration::from_secs(1);

/// The engine, its limits, and the compiled-module caches.
pub struct Runtime {
    engine: Engine,
    limits: Limits,
    /// `None` when no directory was given or it did not pass the trust checks.
    artifacts: Option<ArtifactCache>,
    compat_hash: String,
    /// Modules by wasm digest: a reload that finds the same bytes reuses the module.
    modules: Mutex<HashMap<String, Module>>,
    ticker: Option<Arc<EpochTicker>>,
    /// The stores kept between evaluations of every policy loaded on this runtime.
    stores: Arc<StorePool>,
}

/// The thread that advances the engine's epoch, which is what enforces
/// [`Limits::deadline`]: every tick interrupts the guests that run, and each store's deadline
/// callback lets its guest go on until its own deadline has passed (`policy.rs`). The thread
/// ticks every [`EPOCH_TICK`] while a guest runs; while none runs it sleeps one deadline (at
/// most [`EPOCH_GRACE`]) between ticks, so a guest that starts meanwhile gets its first tick
/// within its deadline and then one every tick; after [`EPOCH_GRACE`] with no evaluation
/// started it parks until one starts. So an idle webhook spends nothing on it, one at a
/// cluster's rate a wake-up per deadline (10 a second by default), not one per evaluation, and
/// a deadline holds to within [`EPOCH_TICK`]. It ends when the runtime and every policy loaded on it (each holds the
/// ticker) are gone, so a policy's deadline holds even after its runtime is dropped.
pub(crate) struct EpochTicker {
    shared: Arc<TickShared>,
}

struct TickShared {
    /// Stores in which guest code may run now.
    running: AtomicUsize,
    /// Evaluations started so far: the thread parks only after a grace with none.
    started: AtomicU64,
    /// The thread waits on `wake`: only then does an evaluation that starts need to wake it
    /// (a lock and a futex call, which busy evaluations back to back would otherwise pay).
    parked: AtomicBool,
    /// `true` once the last holder of the ticker is gone.
    stopped: Mutex<bool>,
    wake: Condvar,
    /// Ticks so far (tests read it).
    ticks: AtomicU64,
}

/// An evaluation in progress: the epoch advances while one exists.
pub(crate) struct Running(Arc<TickShared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EpochTicker {
    /// Starts the thread; `idle_tick` is how long it sleeps between ticks while no guest
    /// runs (at most the deadline: a guest that starts meanwhile gets its first tick within it).
    fn start(engine: Engine, idle_tick: Duration) -> std::io::Result<Arc<EpochTicker>> {
        let shared = Arc::new(TickShared {
            running: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
            ticks: AtomicU64::new(0),
        });
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("ck8s-epoch".into())
            .spawn(move || {
                // When an evaluation last started or ran, as far as this thread has seen (none
                // yet: it parks at once).
                let mut active: Option<Instant> = None;
                let mut seen = thread.started.load(Ordering::SeqCst);
                loop {
                    if active.is_none_or(|at| at.elapsed() >= EPOCH_GRACE) {
                        let mut stopped = thread.stopped.lock().unwrap();
                        while !*stopped && thread.running.load(Ordering::SeqCst) == 0 {
                            // Parked first, then the count checked again: an evaluation that
                            // started in between either is seen here or sees `parked` and
                            // notifies under the lock this thread holds until it waits.
                            thread.parked.store(true, Ordering::SeqCst);
                            if thread.running.load(Ordering::SeqCst) != 0 {
                                thread.parked.store(false, Ordering::SeqCst);
                                break;
                            }
                            stopped = thread.wake.wait(stopped).unwrap();
                            thread.parked.store(false, Ordering::SeqCst);
                        }
                        if *stopped {
                            return;
                        }
                        active = Some(Instant::now());
                    } else if *thread.stopped.lock().unwrap() {
                        return;
                    }
                    let running = thread.running.load(Ordering::SeqCst) != 0;
                    std::thread::sleep(if running { EPOCH_TICK } else { idle_tick });
                    engine.increment_epoch();
                    thread.ticks.fetch_add(1, Ordering::Relaxed);
                    let started = thread.started.load(Ordering::SeqCst);
                    if started != seen || thread.running.load(Ordering::SeqCst) != 0 {
                        active = Some(Instant::now());
                        seen = started;
                    }
                }
            })?;
        Ok(Arc::new(EpochTicker { shared }))
    }

    /// Marks a store whose guest code may run, until the guard is dropped. Only the first of
    /// concurrent evaluations, and only when the thread is parked, wakes it (under its lock,
    /// so the wake-up is not lost).
    pub(crate) fn running(&self) -> Running {
        self.shared.started.fetch_add(1, Ordering::Relaxed);
        if self.shared.running.fetch_add(1, Ordering::SeqCst) == 0
            && self.shared.parked.load(Ordering::SeqCst)
        {
            let _stopped = self.shared.stopped.lock().unwrap();
            self.shared.wake.notify_one();
        }
        Running(self.shared.clone())
    }

    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }

    /// Guards alive now (tests).
    #[cfg(test)]
    pub(crate) fn running_now(&self) -> usize {
        self.shared.running.load(Ordering::SeqCst)
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        *self.shared.stopped.lock().unwrap() = true;
        self.shared.wake.notify_one();
    }
}

impl Runtime {
    /// A runtime with `limits`, caching precompiled artifacts under `artifact_dir` if given
    /// and trustworthy (see the README's trust model; otherwise it compiles and says why).
    pub fn new(limits: Limits, artifact_dir: Option<PathBuf>) -> Result<Self, StartError> {
        let stores = StorePool::new(limits.evaluations_per_store, limits.kept_stores);
        let slots = limits.max_instances.saturating_add(stores.kept_slots());
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
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
        let engine = Engine::new(&config).map_err(|e| StartError::Engine(e.to_string()))?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat_hash = format!("{:016x}", h.finish());

        let ticker = if limits.enforce_deadline {
            // At most the grace: a runtime dropped meanwhile lets its thread end that soon.
            let idle_tick = limits.deadline.clamp(EPOCH_TICK, EPOCH_GRACE);
            Some(EpochTicker::start(engine.clone(), idle_tick).map_err(StartError::EpochThread)?)
        } else {
            None
        };
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
            stores,
            artifacts,
            compat_hash,
            modules: Mutex::new(HashMap::new()),
            ticker,
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

    /// The stores every policy loaded on this runtime instantiates in.
    pub(crate) fn stores(&self) -> Arc<StorePool> {
        self.stores.clone()
    }

    /// What a policy loaded on this runtime holds to keep the epoch thread running.
    pub(crate) fn ticker(&self) -> Option<Arc<EpochTicker>> {
        self.ticker.clone()
    }

    /// The compiled module of `wasm` and its sha256 (hex): from this runtime's cache, else
    /// from the artifact cache, else compiled (and cached in both). `name` is for messages.
    pub(crate) fn compile(&self, name: &str, wasm: &[u8]) -> Result<(String, Module), LoadError> {
        let digest = hex::encode(Sha256::digest(wasm));
        let module = self.module(name, &digest, wasm)?;
        Ok((digest, module))
    }

    fn module(&self, source_name: &str, digest: &str, wasm: &[u8]) -> Result<Module, LoadError> {
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
                    source_name: source_name.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks_over(ticker: &EpochTicker, d: Duration) -> u64 {
        let before = ticker.ticks();
        std::thread::sleep(d);
        ticker.ticks() - before
    }

    /// Whether the epoch advances within `limit` (returning as soon as it does): a loaded
    /// machine may run the ticking thread late, never not at all.
    fn ticks_within(ticker: &EpochTicker, limit: Duration) -> bool {
        let (before, start) = (ticker.ticks(), std::time::Instant::now());
        while start.elapsed() < limit {
            if ticker.ticks() != before {
                return true;
            }
            std::thread::sleep(EPOCH_TICK / 4);
        }
        false
    }

    /// Whether six ticks' time passes with no tick within `limit`.
    fn idle_within(ticker: &EpochTicker, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if ticks_over(ticker, EPOCH_TICK * 6) == 0 {
                return true;
            }
        }
        false
    }

    /// Issue 24: the epoch advances while an evaluation runs and for a grace after the last
    /// one started; then nothing ticks.
    #[test]
    fn the_epoch_advances_while_evaluations_run_and_stops_when_idle() {
        let runtime = Runtime::new(Limits::default(), None).unwrap();
        let ticker = runtime.ticker().expect("deadlines are enforced by default");
        let grace = EPOCH_GRACE;
        assert_eq!(
            ticks_over(&ticker, EPOCH_TICK * 6),
            0,
            "idle from the start"
        );
        let running = ticker.running();
        assert!(ticks_within(&ticker, grace), "no tick while evaluating");
        drop(running);
        // Still ticking in the grace after the evaluation (what spares the next one a wake-up).
        assert!(ticks_within(&ticker, grace / 2), "the grace");
        // ... but a deadline apart while nothing runs, not a tick apart (late ticks on a loaded
        // machine only make fewer).
        let sparse = ticks_over(&ticker, EPOCH_TICK * 10);
        assert!(
            sparse <= 3,
            "{sparse} ticks in ten ticks' time with nothing running"
        );
        std::thread::sleep(grace);
        assert!(idle_within(&ticker, grace * 3), "idle again");
        // A long evaluation keeps it ticking past the grace; concurrent ones until the last ends.
        let (a, b) = (ticker.running(), ticker.running());
        drop(a);
        std::thread::sleep(grace + EPOCH_TICK * 5);
        assert!(ticks_within(&ticker, grace), "b still runs");
        drop(b);
    }

    #[test]
    fn one_shot_runtimes_start_no_epoch_thread() {
        let runtime = Runtime::new(Limits::one_shot(), None).unwrap();
        assert!(runtime.ticker().is_none());
    }
}
