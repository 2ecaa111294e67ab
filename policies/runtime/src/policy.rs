//! One validated policy module and the evaluation of it in a fresh instance. Built on the
//! engine (`engine.rs`), which knows nothing of policies.

use crate::engine::{EpochTicker, Running, Runtime};
use crate::error::{LoadError, PolicyError};
use crate::resident;
use crate::stores::{PooledStore, StorePool};
use ck8s_policy_api::codec::EncodedInput;
use ck8s_policy_api::{ABI_VERSION, ABI_VERSION_JSON, PolicyMetadata, Verdict, exports, unpack};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{
    Engine, Instance, InstancePre, Linker, Memory, Module, ModuleExport, ResourceLimiter, Store,
    StoreContextMut, Trap, TypedFunc, UpdateDeadline,
};

/// Where a policy came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    Builtin(String),
    File(PathBuf),
    Inline(String),
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Builtin(name) => write!(f, "builtin:{name}"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Inline(name) => write!(f, "{name}"),
        }
    }
}

/// A policy ready to evaluate: compiled, linked against an empty import set, exports
/// checked, metadata read. A clone is the same policy (of the same bundle, if any).
#[derive(Clone)]
pub struct LoadedPolicy {
    pub metadata: PolicyMetadata,
    pub source: PolicySource,
    /// sha256 of the wasm bytes.
    pub digest: String,
    pub wasm_size: usize,
    engine: Engine,
    pre: InstancePre<StoreState>,
    exports: Exports,
    /// [`ABI_VERSION`] (binary input) or [`ABI_VERSION_JSON`] (JSON request).
    abi: i32,
    memory_bytes: usize,
    deadline: Duration,
    max_output: usize,
    /// Where the policy sits in its bundle; `None` for a module of one policy.
    member: Option<Member>,
    /// Keeps the runtime's epoch thread, which enforces `deadline`, running.
    _ticker: Option<Arc<EpochTicker>>,
    /// The runtime's stores, which this policy's instances are made in.
    stores: Arc<StorePool>,
}

/// A policy's place in a bundle module (several policies, `ck8s_validate_policy`).
#[derive(Clone)]
struct Member {
    index: u32,
    /// Shared by the members of one loaded bundle: who may share an instance.
    bundle: Arc<()>,
}

/// Export handles resolved once per module, so a call does no string lookups.
#[derive(Clone)]
struct Exports {
    memory: ModuleExport,
    alloc: ModuleExport,
    metadata: ModuleExport,
    validate: ModuleExport,
    abi_version: ModuleExport,
    /// `ck8s_configure` (`ck8s_configure_policy` of a bundle), if the module has it.
    configure: Option<ModuleExport>,
}

/// `ck8s_validate` of a single policy, or `ck8s_validate_policy` of a bundle.
enum Validate {
    One(TypedFunc<(i32, i32, i32, i32), i64>),
    Member(TypedFunc<(i32, i32, i32, i32, i32), i64>),
}

/// What configuring the policies of one module (`ck8s_configure`) left in its memory: its
/// difference from a fresh instance's, written into the fresh instance of every evaluation
/// before the input, so that no evaluation parses settings (see `ck8s_policy_api`, "Settings
/// read once"). Made by [`LoadedPolicy::configure`].
pub struct ConfiguredMemory {
    /// The module it was taken from: it means nothing in another module's memory.
    module: Module,
    /// The memory's size after configuring, in wasm pages.
    pages: u64,
    /// `(offset, bytes)`: the runs of memory that differ from a fresh instance's.
    runs: Vec<(usize, Box<[u8]>)>,
}

impl fmt::Debug for ConfiguredMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredMemory")
            .field("pages", &self.pages)
            .field("runs", &self.runs.len())
            .field("bytes", &self.bytes())
            .field(
                "at",
                &self
                    .runs
                    .iter()
                    .map(|(o, r)| (*o, r.len()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ConfiguredMemory {
    /// Bytes written into each evaluation's instance.
    pub fn bytes(&self) -> usize {
        self.runs.iter().map(|(_, run)| run.len()).sum()
    }

    /// The runs of the configured memory that differ from a fresh instance's memory,
    /// compared by cache line and merged when adjacent. `populated` holds the configured
    /// memory's populated pages as `(offset, bytes)` (the others are as in a fresh instance);
    /// past the end of `fresh`, memory is zero.
    fn diff(module: Module, pages: u64, fresh: &[u8], populated: &[(usize, Vec<u8>)]) -> Self {
        const LINE: usize = 64;
        let mut runs: Vec<(usize, Box<[u8]>)> = Vec::new();
        for (base, after) in populated {
            let mut open: Option<usize> = None;
            for start in (0..after.len()).step_by(LINE) {
                let end = (start + LINE).min(after.len());
                let now = &after[start..end];
                let (from, to) = (base + start, base + end);
                let was = fresh
                    .get(from.min(fresh.len())..to.min(fresh.len()))
                    .unwrap_or(&[]);
                let differs = was != &now[..was.len()] || now[was.len()..].iter().any(|&b| b != 0);
                match (differs, open) {
                    (true, None) => open = Some(start),
                    (false, Some(first)) => {
                        runs.push((base + first, after[first..start].into()));
                        open = None;
                    }
                    _ => {}
                }
            }
            if let Some(first) = open {
                runs.push((base + first, after[first..].into()));
            }
        }
        ConfiguredMemory {
            module,
            pages,
            runs,
        }
    }

    /// Writes the configured state into a fresh instance's memory, grown to its size first.
    fn write_into(
        &self,
        policy: &LoadedPolicy,
        store: &mut PooledStore,
        memory: Memory,
    ) -> Result<(), PolicyError> {
        let pages = memory.size(&*store);
        if pages < self.pages {
            memory
                .grow(&mut *store, self.pages - pages)
                .map_err(|e| policy.classify(store, e))?;
        }
        let data = memory.data_mut(&mut *store);
        for (offset, run) in &self.runs {
            data.get_mut(*offset..offset + run.len())
                .ok_or_else(|| PolicyError::Trap("configured memory lies outside memory".into()))?
                .copy_from_slice(run);
        }
        Ok(())
    }
}

/// A fresh instance with the input and the settings written into it.
struct Session {
    store: PooledStore,
    instance: Instance,
    memory: Memory,
    validate: Validate,
    /// `(ptr, len)` of the input in guest memory.
    input: (i32, i32),
    /// Where the settings of the next call start: the settings blobs follow the input, in
    /// the order of the calls.
    next_settings: i32,
}

impl Session {
    /// Calls `policy` (the session's own policy, or a member of its bundle) with the next
    /// settings blob, `settings`, under a fresh deadline.
    fn call(&mut self, policy: &LoadedPolicy, settings: &[u8]) -> Result<Verdict, PolicyError> {
        let (settings_ptr, settings_len) = self.next_call(policy, settings);
        let (input_ptr, input_len) = self.input;
        let packed = match &self.validate {
            Validate::One(f) => f.call(
                &mut self.store,
                (input_ptr, input_len, settings_ptr, settings_len),
            ),
            Validate::Member(f) => {
                let index = policy.member.as_ref().map_or(0, |m| m.index) as i32;
                f.call(
                    &mut self.store,
                    (index, input_ptr, input_len, settings_ptr, settings_len),
                )
            }
        }
        .map_err(|e| policy.classify(&mut self.store, e))?;
        self.verdict(policy, packed)
    }

    /// Calls `ck8s_configure` of `policy` (the session's own policy, or a member of its
    /// bundle) with the next settings blob, `settings`, under a fresh deadline: `Ok` if the
    /// guest took them.
    fn configure(&mut self, policy: &LoadedPolicy, settings: &[u8]) -> Result<(), PolicyError> {
        let export = (policy.exports.configure.as_ref())
            .ok_or_else(|| PolicyError::BadOutput("the module reads no settings once".into()))?;
        let configure = policy.func_export(&mut self.store, &self.instance, export)?;
        let (ptr, len) = self.next_call(policy, settings);
        let packed = match &policy.member {
            Some(member) => configure
                .typed::<(i32, i32, i32), i64>(&self.store)
                .and_then(|f| f.call(&mut self.store, (member.index as i32, ptr, len))),
            None => configure
                .typed::<(i32, i32), i64>(&self.store)
                .and_then(|f| f.call(&mut self.store, (ptr, len))),
        }
        .map_err(|e| policy.classify(&mut self.store, e))?;
        self.verdict(policy, packed).map(drop)
    }

    /// Arms a fresh deadline for a call of `policy` and returns `(ptr, len)` of its settings
    /// blob, `settings`, the next in the buffer.
    fn next_call(&mut self, policy: &LoadedPolicy, settings: &[u8]) -> (i32, i32) {
        self.store.data_mut().deadline_at = Instant::now() + policy.deadline;
        self.store.set_epoch_deadline(1);
        let blob = (self.next_settings, settings.len() as i32);
        self.next_settings += blob.1;
        blob
    }

    /// The verdict a call returned (`packed`); a guest's `error` is [`PolicyError::Guest`].
    fn verdict(&self, policy: &LoadedPolicy, packed: i64) -> Result<Verdict, PolicyError> {
        if policy.abi == ABI_VERSION && unpack(packed).1 == 0 {
            // ABI v2: an empty output is "allowed, nothing to say" (see ck8s_policy_api).
            return Ok(Verdict::default());
        }
        let out = policy.read_output_from(&self.store, self.memory, packed)?;
        let verdict: Verdict =
            serde_json::from_slice(&out).map_err(|e| PolicyError::BadOutput(e.to_string()))?;
        match verdict.error {
            Some(message) => Err(PolicyError::Guest(message)),
            None => Ok(verdict),
        }
    }
}

/// Per-instance state: the memory limiter.
pub(crate) struct StoreState {
    limiter: MemoryCap,
    /// Keeps the epoch ticking while this store's guest code may run.
    _running: Option<Running>,
    /// When the guest's current call must end: every epoch tick asks [`deadline_passed`].
    deadline_at: Instant,
}

impl StoreState {
    /// A store's state before its first evaluation, and between evaluations while kept: no
    /// guard keeps the epoch thread awake.
    pub(crate) fn idle_state() -> Self {
        StoreState {
            limiter: MemoryCap {
                limit: 0,
                exceeded: false,
            },
            _running: None,
            deadline_at: Instant::now(),
        }
    }

    /// Ready for an evaluation: the memory cap, the epoch thread kept awake by `running`,
    /// the deadline of the first call.
    fn resume(&mut self, memory_bytes: usize, running: Option<Running>, deadline_at: Instant) {
        self.limiter = MemoryCap {
            limit: memory_bytes,
            exceeded: false,
        };
        self._running = running;
        self.deadline_at = deadline_at;
    }

    /// Kept idle between evaluations: the epoch thread may sleep.
    pub(crate) fn idle(&mut self) {
        self._running = None;
    }
}

/// The epoch callback of every store: a tick interrupts the guest only once its own deadline
/// has passed (the epoch thread ticks for all the guests that run, whenever they started).
fn deadline_passed(store: StoreContextMut<'_, StoreState>) -> wasmtime::Result<UpdateDeadline> {
    Ok(if Instant::now() >= store.data().deadline_at {
        UpdateDeadline::Interrupt
    } else {
        UpdateDeadline::Continue(1)
    })
}

struct MemoryCap {
    limit: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            // Trap rather than return -1: a Rust guest would abort anyway, and a trap we
            // can attribute says "memory limit" instead of "unreachable".
            wasmtime::bail!("memory limit reached");
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Loading policies: what the engine's modules mean as policies.
impl Runtime {
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
    /// `ck8s_policy_api`), in the bundle's order. The runtime has no policies of its own:
    /// the built-in ones are handed in as bytes like any other
    /// ([`PolicySources::builtin`](crate::PolicySources::builtin)).
    pub fn load_module(
        &self,
        source: PolicySource,
        wasm: &[u8],
    ) -> Result<Vec<LoadedPolicy>, LoadError> {
        let (digest, module) = self.compile(&source.to_string(), wasm)?;
        LoadedPolicy::load_module(self, source, digest, wasm.len(), module)
    }
}

impl LoadedPolicy {
    /// Validates a module and reads who it is: one policy, or every policy of a bundle.
    fn load_module(
        runtime: &Runtime,
        source: PolicySource,
        digest: String,
        wasm_size: usize,
        module: Module,
    ) -> Result<Vec<Self>, LoadError> {
        let name = source.to_string();
        if let Some(import) = module.imports().next() {
            return Err(LoadError::Import {
                source_name: name,
                import: format!("{}::{}", import.module(), import.name()),
            });
        }
        let export = |e: &str| {
            module.get_export_index(e).ok_or_else(|| LoadError::Export {
                source_name: name.clone(),
                export: e.to_string(),
            })
        };
        // A bundle exports `ck8s_validate_policy` instead of `ck8s_validate`.
        let is_bundle = module.get_export_index(exports::VALIDATE_POLICY).is_some();
        let validate_export = if is_bundle {
            exports::VALIDATE_POLICY
        } else {
            exports::VALIDATE
        };
        let configure_export = if is_bundle {
            exports::CONFIGURE_POLICY
        } else {
            exports::CONFIGURE
        };
        let exports = Exports {
            memory: export(exports::MEMORY)?,
            alloc: export(exports::ALLOC)?,
            metadata: export(exports::METADATA)?,
            validate: export(validate_export)?,
            abi_version: export(exports::ABI_VERSION)?,
            configure: module.get_export_index(configure_export),
        };
        let linker: Linker<StoreState> = Linker::new(runtime.engine());
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Invalid {
                source_name: name.clone(),
                message: format!("{e:#}"),
            })?;
        let limits = runtime.limits();
        let mut policy = LoadedPolicy {
            metadata: PolicyMetadata::default(),
            source,
            digest,
            wasm_size,
            engine: runtime.engine().clone(),
            pre,
            exports,
            abi: ABI_VERSION,
            memory_bytes: limits.memory_bytes,
            deadline: limits.deadline,
            max_output: limits.max_output_bytes,
            member: None,
            _ticker: runtime.ticker(),
            stores: runtime.stores(),
        };

        // Ask the module who it is, inside the same limits as any evaluation.
        let (mut store, instance) = policy.instantiate().map_err(|error| LoadError::Start {
            source_name: name.clone(),
            error,
        })?;
        let abi: TypedFunc<(), i32> = policy
            .func(&mut store, &instance, &policy.exports.abi_version)
            .ok_or_else(|| LoadError::Export {
                source_name: name.clone(),
                export: exports::ABI_VERSION.into(),
            })?;
        let found = abi.call(&mut store, ()).map_err(|e| LoadError::Start {
            source_name: name.clone(),
            error: policy.classify(&mut store, e),
        })?;
        let expected = if is_bundle {
            found == ABI_VERSION
        } else {
            found == ABI_VERSION || found == ABI_VERSION_JSON
        };
        if !expected {
            return Err(LoadError::AbiVersion {
                source_name: name,
                found,
                expected: ABI_VERSION,
            });
        }
        policy.abi = found;
        let meta: TypedFunc<(), i64> = policy
            .func(&mut store, &instance, &policy.exports.metadata)
            .ok_or_else(|| LoadError::Export {
                source_name: name.clone(),
                export: exports::METADATA.into(),
            })?;
        let packed = meta.call(&mut store, ()).map_err(|e| LoadError::Start {
            source_name: name.clone(),
            error: policy.classify(&mut store, e),
        })?;
        let bytes = policy
            .read_output(&mut store, &instance, packed)
            .map_err(|error| LoadError::Start {
                source_name: name.clone(),
                error,
            })?;
        let metadata_error = |message: String| LoadError::Metadata {
            source_name: name.clone(),
            message,
        };
        // A bundle describes its policies as an array, a single policy as one object.
        let metadata: Vec<PolicyMetadata> = if is_bundle {
            serde_json::from_slice(&bytes).map_err(|e| metadata_error(e.to_string()))?
        } else {
            vec![serde_json::from_slice(&bytes).map_err(|e| metadata_error(e.to_string()))?]
        };
        if metadata.is_empty() {
            return Err(metadata_error("the bundle declares no policies".into()));
        }
        for (i, m) in metadata.iter().enumerate() {
            validate_metadata(m).map_err(&metadata_error)?;
            if metadata[..i].iter().any(|other| other.name == m.name) {
                return Err(metadata_error(format!(
                    "the bundle declares two policies called {}",
                    m.name
                )));
            }
        }
        // Check the exports' signatures once; calls skip the check.
        let validate = &policy.exports.validate;
        let typed = if is_bundle {
            let f = policy.func::<(i32, i32, i32, i32, i32), i64>(&mut store, &instance, validate);
            f.is_some()
        } else {
            let f = policy.func::<(i32, i32, i32, i32), i64>(&mut store, &instance, validate);
            f.is_some()
        };
        if !typed {
            return Err(LoadError::Export {
                source_name: name,
                export: validate_export.into(),
            });
        }
        // Only the binary ABI has it: a version-1 module keeps JSON settings per call.
        if policy.abi != ABI_VERSION {
            policy.exports.configure = None;
        }
        if let Some(configure) = &policy.exports.configure {
            let typed = if is_bundle {
                policy
                    .func::<(i32, i32, i32), i64>(&mut store, &instance, configure)
                    .is_some()
            } else {
                policy
                    .func::<(i32, i32), i64>(&mut store, &instance, configure)
                    .is_some()
            };
            if !typed {
                return Err(LoadError::Export {
                    source_name: name,
                    export: configure_export.into(),
                });
            }
        }
        policy
            .func::<i32, i32>(&mut store, &instance, &policy.exports.alloc)
            .ok_or_else(|| LoadError::Export {
                source_name: name,
                export: exports::ALLOC.into(),
            })?;

        if !is_bundle {
            policy.metadata = metadata.into_iter().next().expect("one, checked above");
            return Ok(vec![policy]);
        }
        let shared = Arc::new(());
        Ok(metadata
            .into_iter()
            .enumerate()
            .map(|(index, metadata)| {
                let mut member = policy.clone();
                // A built-in bundle's members are each `builtin:<name>`.
                if let PolicySource::Builtin(_) = member.source {
                    member.source = PolicySource::Builtin(metadata.name.clone());
                }
                member.metadata = metadata;
                member.member = Some(Member {
                    index: index as u32,
                    bundle: shared.clone(),
                });
                member
            })
            .collect())
    }

    /// Whether `self` and `other` are policies of the same loaded bundle, which
    /// [`LoadedPolicy::evaluate_together`] runs in one instance.
    pub fn same_bundle(&self, other: &LoadedPolicy) -> bool {
        match (&self.member, &other.member) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a.bundle, &b.bundle),
            _ => false,
        }
    }

    /// Whether the policy is one of several in its module.
    pub fn is_bundled(&self) -> bool {
        self.member.is_some()
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The ABI version the module speaks, which decides the input [`LoadedPolicy::evaluate`]
    /// expects: [`ABI_VERSION`] the binary input of `ck8s_policy_api::codec`,
    /// [`ABI_VERSION_JSON`] a JSON `EvaluationRequest`.
    pub fn abi_version(&self) -> i32 {
        self.abi
    }

    /// A fresh instance, in a kept store if one is waiting (`stores.rs`), else in a new one.
    fn instantiate(&self) -> Result<(PooledStore, Instance), PolicyError> {
        let mut store = match self.stores.take() {
            Some(kept) => kept,
            None => {
                let mut store = Store::new(&self.engine, StoreState::idle_state());
                store.limiter(|s| &mut s.limiter);
                store.epoch_deadline_callback(deadline_passed);
                self.stores.wrap(store)
            }
        };
        store.data_mut().resume(
            self.memory_bytes,
            self._ticker.as_ref().map(|t| t.running()),
            Instant::now() + self.deadline,
        );
        store.set_epoch_deadline(1);
        match self.pre.instantiate(&mut store) {
            Ok(instance) => {
                store.instantiated();
                Ok((store, instance))
            }
            // The pool is full: wasmtime says so with its own error type.
            Err(e) if e.is::<wasmtime::PoolConcurrencyLimitError>() => {
                store.failed();
                Err(PolicyError::Capacity(format!("{e:#}")))
            }
            Err(e) => Err(self.classify(&mut store, e)),
        }
    }

    /// A function export with its signature checked (at load; calls use
    /// [`LoadedPolicy::func_export`] and skip the check).
    fn func<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &self,
        store: &mut Store<StoreState>,
        instance: &Instance,
        export: &ModuleExport,
    ) -> Option<TypedFunc<P, R>> {
        self.func_export(store, instance, export)
            .ok()?
            .typed(&*store)
            .ok()
    }

    fn memory(
        &self,
        store: &mut Store<StoreState>,
        instance: &Instance,
    ) -> Result<Memory, PolicyError> {
        instance
            .get_module_export(&mut *store, &self.exports.memory)
            .and_then(|e| e.into_memory())
            .ok_or_else(|| PolicyError::BadOutput("export `memory` is not a memory".into()))
    }

    /// Evaluates one request in a fresh instance. `request` is the input for the module's
    /// ABI version ([`Subject::input`](crate::Subject::input) or
    /// [`Subject::request_json`](crate::Subject::request_json)), `settings` the policy's
    /// merged settings as JSON.
    pub fn evaluate(&self, request: &[u8], settings: &[u8]) -> Result<Verdict, PolicyError> {
        self.session(&[request], [settings], None)?
            .call(self, settings)
    }

    /// Evaluates an ABI v2 input (a policy of [`ABI_VERSION`]), with the raw object JSON in
    /// it only if the policy's metadata asks for it.
    pub fn evaluate_input(
        &self,
        input: &EncodedInput<'_>,
        settings: &[u8],
    ) -> Result<Verdict, PolicyError> {
        self.session(&input.parts(self.metadata.raw_object), [settings], None)?
            .call(self, settings)
    }

    /// Evaluates policies of one module (one policy, or members of one bundle, each with its
    /// settings) on one ABI v2 input, in one fresh instance, in order: the input is written
    /// once and decoded once by the guest. With `configured` (from [`LoadedPolicy::configure`]
    /// on this module), each instance starts from it, and a policy given empty settings uses
    /// those it was configured with. A call that fails for any reason but the policy's own
    /// verdict error ends that instance, and the policies after it get a new one. Each result
    /// comes with its time, the instance's set-up counted in the first call made on it.
    ///
    /// # Panics
    ///
    /// If the policies are not all of one module ([`LoadedPolicy::same_bundle`]), or
    /// `configured` was taken from another.
    pub fn evaluate_together(
        policies: &[(&LoadedPolicy, &[u8])],
        input: &EncodedInput<'_>,
        configured: Option<&ConfiguredMemory>,
    ) -> Vec<(Result<Verdict, PolicyError>, Duration)> {
        let Some(((first, _), rest)) = policies.split_first() else {
            return Vec::new();
        };
        assert!(
            rest.iter().all(|(p, _)| p.same_bundle(first)),
            "evaluate_together needs policies of one bundle"
        );
        assert!(
            configured.is_none_or(|c| Module::same(&c.module, first.pre.module())),
            "configured memory of another module"
        );
        let with_raw = policies.iter().any(|(p, _)| p.metadata.raw_object);
        let mut out = Vec::with_capacity(policies.len());
        let mut session: Option<Session> = None;
        for (i, (policy, settings)) in policies.iter().enumerate() {
            let start = Instant::now();
            let mut current = match session.take() {
                Some(open) => open,
                None => {
                    let rest = policies[i..].iter().map(|(_, s)| *s);
                    match first.session(&input.parts(with_raw), rest, configured) {
                        Ok(opened) => opened,
                        Err(error) => {
                            out.push((Err(error), start.elapsed()));
                            continue;
                        }
                    }
                }
            };
            let result = current.call(policy, settings);
            // A verdict, even one saying "cannot judge", leaves the instance sound.
            if matches!(result, Ok(_) | Err(PolicyError::Guest(_))) {
                session = Some(current);
            }
            out.push((result, start.elapsed()));
        }
        out
    }

    /// Whether the module reads its settings once (`ck8s_configure`), so that
    /// [`LoadedPolicy::configure`] applies.
    pub fn configurable(&self) -> bool {
        self.exports.configure.is_some()
    }

    /// Hands each policy (of one module, in the module's order) its settings once, in one
    /// instance, and returns what that left in the instance's memory, for
    /// [`LoadedPolicy::evaluate_together`] to start every evaluation from; `Ok(None)` if the
    /// module does not read settings once ([`LoadedPolicy::configurable`]). `Err` names the
    /// position in `policies` of the policy that refused its settings, or could not take them.
    ///
    /// # Panics
    ///
    /// If the policies are not all of one module (one policy, or members of one bundle).
    pub fn configure(
        policies: &[(&LoadedPolicy, &[u8])],
    ) -> Result<Option<ConfiguredMemory>, (usize, PolicyError)> {
        let Some(((first, _), rest)) = policies.split_first() else {
            return Ok(None);
        };
        assert!(
            rest.iter().all(|(p, _)| p.same_bundle(first)),
            "configure needs the policies of one module"
        );
        if !first.configurable() {
            return Ok(None);
        }
        let blobs = policies.iter().map(|(_, settings)| *settings);
        let mut session = first.session(&[], blobs, None).map_err(|e| (0, e))?;
        for (i, (policy, settings)) in policies.iter().enumerate() {
            session.configure(policy, settings).map_err(|e| (i, e))?;
        }
        // Only the populated pages are read, here and in the fresh instance below, so that
        // no other page of the pool slot gets populated (see `resident.rs`).
        let pages = session.memory.size(&session.store);
        let populated = populated_runs(session.memory.data(&session.store));
        drop(session);
        let (mut store, instance) = first.instantiate().map_err(|e| (0, e))?;
        let fresh = first.memory(&mut store, &instance).map_err(|e| (0, e))?;
        Ok(Some(ConfiguredMemory::diff(
            first.pre.module().clone(),
            pages,
            fresh.data(&store),
            &populated,
        )))
    }

    /// A fresh instance with the input (written from `parts`) and the settings blob of each
    /// call to come, in order, in one guest buffer from one `ck8s_alloc` call; the memory of
    /// `configured` written into it first.
    fn session<'s>(
        &self,
        parts: &[&'s [u8]],
        settings: impl IntoIterator<Item = &'s [u8], IntoIter: Clone>,
        configured: Option<&ConfiguredMemory>,
    ) -> Result<Session, PolicyError> {
        let settings = settings.into_iter();
        let (mut store, instance) = self.instantiate()?;
        let alloc = self.func_export(&mut store, &instance, &self.exports.alloc)?;
        let validate = self.func_export(&mut store, &instance, &self.exports.validate)?;
        // SAFETY: `load_module` checked both signatures on this very module, and every
        // instance of a module has the same export types; skipping the per-call check saves
        // a type-registry lookup per export on every evaluation.
        let (alloc, validate) = unsafe {
            (
                TypedFunc::<i32, i32>::new_unchecked(&store, alloc),
                if self.member.is_some() {
                    Validate::Member(TypedFunc::new_unchecked(&store, validate))
                } else {
                    Validate::One(TypedFunc::new_unchecked(&store, validate))
                },
            )
        };
        let memory = self.memory(&mut store, &instance)?;
        if let Some(configured) = configured {
            configured.write_into(self, &mut store, memory)?;
        }

        let input_len: usize = parts.iter().map(|p| p.len()).sum();
        let total = settings
            .clone()
            .try_fold(input_len, |n, s| n.checked_add(s.len()))
            .and_then(|n| i32::try_from(n).ok())
            .ok_or(PolicyError::MemoryLimit(self.memory_bytes))?;
        let ptr = alloc
            .call(&mut store, total)
            .map_err(|e| self.classify(&mut store, e))? as u32 as usize;
        let mut buffer = memory
            .data_mut(&mut store)
            .get_mut(ptr..ptr + total as usize)
            .ok_or_else(|| {
                PolicyError::Trap("ck8s_alloc returned a buffer outside memory".into())
            })?;
        for part in parts.iter().copied().chain(settings) {
            let (dst, rest) = buffer.split_at_mut(part.len());
            dst.copy_from_slice(part);
            buffer = rest;
        }
        Ok(Session {
            store,
            instance,
            memory,
            validate,
            input: (ptr as i32, input_len as i32),
            next_settings: (ptr + input_len) as i32,
        })
    }

    fn func_export(
        &self,
        store: &mut Store<StoreState>,
        instance: &Instance,
        export: &ModuleExport,
    ) -> Result<wasmtime::Func, PolicyError> {
        instance
            .get_module_export(&mut *store, export)
            .and_then(|e| e.into_func())
            .ok_or_else(|| PolicyError::BadOutput("a function export is missing".into()))
    }

    fn read_output(
        &self,
        store: &mut Store<StoreState>,
        instance: &Instance,
        packed: i64,
    ) -> Result<Vec<u8>, PolicyError> {
        let memory = self.memory(store, instance)?;
        self.read_output_from(store, memory, packed)
    }

    fn read_output_from(
        &self,
        store: &Store<StoreState>,
        memory: Memory,
        packed: i64,
    ) -> Result<Vec<u8>, PolicyError> {
        let (ptr, len) = unpack(packed);
        if len as usize > self.max_output {
            return Err(PolicyError::OutputTooLarge(len as usize, self.max_output));
        }
        memory
            .data(store)
            .get(ptr as usize..ptr as usize + len as usize)
            .map(|s| s.to_vec())
            .ok_or_else(|| {
                PolicyError::BadOutput(format!("output {ptr:#x}+{len} lies outside memory"))
            })
    }

    /// What a failed call means as a [`PolicyError`]; the store is not kept after it.
    fn classify(&self, store: &mut PooledStore, error: wasmtime::Error) -> PolicyError {
        store.failed();
        if store.data().limiter.exceeded {
            return PolicyError::MemoryLimit(self.memory_bytes);
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PolicyError::Timeout(self.deadline),
            Some(Trap::StackOverflow) => PolicyError::StackOverflow,
            Some(trap) => PolicyError::Trap(trap.to_string()),
            None => PolicyError::Trap(format!("{error:#}")),
        }
    }
}

/// Copies of the populated pages of `memory` (all of it when that cannot be told), runs of
/// consecutive pages merged: `(offset, bytes)`.
fn populated_runs(memory: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let Some(populated) = resident::populated_pages(memory) else {
        return vec![(0, memory.to_vec())];
    };
    let page = resident::page_size();
    // The first entry is the page holding memory[0], which may start before it.
    let skew = memory.as_ptr() as usize % page;
    let mut runs: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, _) in populated.iter().enumerate().filter(|(_, p)| **p) {
        let from = (i * page).saturating_sub(skew);
        let to = ((i + 1) * page - skew).min(memory.len());
        match runs.last_mut() {
            Some((start, bytes)) if *start + bytes.len() == from => {
                bytes.extend_from_slice(&memory[from..to])
            }
            _ => runs.push((from, memory[from..to].to_vec())),
        }
    }
    runs
}

fn validate_metadata(m: &PolicyMetadata) -> Result<(), String> {
    let ok_name = !m.name.is_empty()
        && m.name.len() <= 63
        && m.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !m.name.starts_with('-')
        && !m.name.ends_with('-');
    if !ok_name {
        return Err(format!(
            "policy name {:?} must be lower-kebab-case, 1-63 characters",
            m.name
        ));
    }
    if m.rules.is_empty() {
        return Err(format!(
            "policy {} declares no rules, so it would never be called",
            m.name
        ));
    }
    for r in &m.rules {
        if r.api_groups.is_empty()
            || r.api_versions.is_empty()
            || r.resources.is_empty()
            || r.operations.is_empty()
        {
            return Err(format!(
                "policy {} has a rule with an empty list: {r:?}",
                m.name
            ));
        }
        if r.resources.iter().any(|res| res.contains('/')) {
            return Err(format!(
                "policy {}: subresources are never judged, rule resources may not contain '/'",
                m.name
            ));
        }
    }
    Ok(())
}
