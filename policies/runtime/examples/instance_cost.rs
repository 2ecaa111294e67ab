//! What a fresh instance costs before a policy does any work, and what in a module makes it
//! cost more: a function table, a data segment, dirtied pages; and how many pages the
//! built-in bundle dirties judging the benchmark's 4 KB Deployment. Measured on the engine of
//! a default `Runtime` (pooling, pagemap scan, epoch interruption), so the figures are the
//! webhook's.
//!
//! `cargo run --release -p ck8s-policy-runtime --example instance_cost`

use ck8s_policy_api::Operation;
use ck8s_policy_runtime::{Limits, Runtime};
use serde_json::value::RawValue;
use std::time::Instant;
use wasmtime::{Engine, InstancePre, Module, ModuleExport, Store, TypedFunc, WasmParams};

/// Mean microseconds per call of `f`, best of five runs of 50,000 after a warm-up.
fn mean_us(mut f: impl FnMut()) -> f64 {
    for _ in 0..20_000 {
        f();
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..50_000 {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / 50_000.0
        })
        .fold(f64::MAX, f64::min)
}

/// A module ready to instantiate over and over.
struct Subject {
    engine: Engine,
    pre: InstancePre<()>,
    module: Module,
}

impl Subject {
    fn new(engine: &Engine, wasm: &[u8]) -> Subject {
        let module = Module::new(engine, wasm).unwrap();
        let pre = wasmtime::Linker::new(engine)
            .instantiate_pre(&module)
            .unwrap();
        Subject {
            engine: engine.clone(),
            pre,
            module,
        }
    }

    fn store(&self) -> Store<()> {
        let mut store = Store::new(&self.engine, ());
        store.set_epoch_deadline(100);
        store
    }

    /// Instantiate + drop.
    fn bare(&self) -> f64 {
        mean_us(|| {
            let mut store = self.store();
            self.pre.instantiate(&mut store).unwrap();
        })
    }

    /// Instantiate + one call of `export`, whose signature must be `P -> R`, + drop.
    fn called<P: WasmParams + Copy, R: wasmtime::WasmResults>(&self, export: &str, args: P) -> f64 {
        let index: ModuleExport = self.module.get_export_index(export).unwrap();
        mean_us(|| {
            let mut store = self.store();
            let instance = self.pre.instantiate(&mut store).unwrap();
            let func = instance
                .get_module_export(&mut store, &index)
                .unwrap()
                .into_func()
                .unwrap();
            // SAFETY: the callers name exports whose signature is `P -> R`.
            let typed = unsafe { TypedFunc::<P, R>::new_unchecked(&store, func) };
            typed.call(&mut store, args).unwrap();
        })
    }
}

fn main() {
    let runtime = Runtime::new(Limits::default(), None).unwrap();
    let engine = runtime.engine();
    let abi = r#"(func (export "ck8s_abi_version") (result i32) (i32.const 2))"#;
    let funcs: String = (0..59)
        .map(|i| format!("(func $f{i} (result i32) (i32.const {i}))"))
        .collect();
    let names: String = (0..59).map(|i| format!(" $f{i}")).collect();
    let mut modules: Vec<(String, Vec<u8>)> = vec![
        (
            "5-page memory, nothing else".into(),
            wat::parse_str(format!(r#"(module (memory (export "memory") 5) {abi})"#)).unwrap(),
        ),
        (
            "+ a 59-entry function table".into(),
            wat::parse_str(format!(
                r#"(module (memory (export "memory") 5) {funcs} (table 60 60 funcref)
                   (elem (i32.const 1){names}) {abi})"#
            ))
            .unwrap(),
        ),
        (
            "+ a 40 KB data segment".into(),
            wat::parse_str(format!(
                r#"(module (memory (export "memory") 5) (data (i32.const 65536) "{}") {abi})"#,
                "x".repeat(40_000)
            ))
            .unwrap(),
        ),
    ];
    modules.extend(
        ck8s_builtin_policies::BUILTIN
            .iter()
            .map(|(name, wasm)| (format!("built-in {name}"), wasm.to_vec())),
    );
    modules.push((
        "built-in bundle (all three)".into(),
        ck8s_builtin_policies::BUNDLE.to_vec(),
    ));
    println!(
        "{:<32} {:>14} {:>14}",
        "module", "inst+drop µs", "+1 call µs"
    );
    for (name, wasm) in &modules {
        let subject = Subject::new(engine, wasm);
        let (bare, called) = (
            subject.bare(),
            subject.called::<(), i32>("ck8s_abi_version", ()),
        );
        println!("{name:<32} {bare:>14.2} {called:>14.2}");
    }

    // Dirtied pages: each must be found (PAGEMAP_SCAN) and restored when the instance goes.
    let touch = Subject::new(
        engine,
        &wat::parse_str(
            r#"(module (memory (export "memory") 5)
              (func (export "touch") (param $pages i32) (local $i i32)
                (loop $l
                  (i32.store (i32.mul (local.get $i) (i32.const 4096)) (i32.const 1))
                  (local.set $i (i32.add (local.get $i) (i32.const 1)))
                  (br_if $l (i32.lt_u (local.get $i) (local.get $pages))))))"#,
        )
        .unwrap(),
    );
    for pages in [1, 2, 4, 8, 16] {
        let us = touch.called::<i32, ()>("touch", pages);
        println!("instance writing {pages:>2} pages (4 KiB): {us:.2} µs");
    }
    bundle_dirty_pages(&runtime);
}

/// The 4 KiB pages of the built-in bundle's memory that judging the 4 KB Deployment changes
/// (the input, the decoded view, the settings, the stack), against a fresh instance: the
/// pages the pool must find and restore when the instance goes.
fn bundle_dirty_pages(runtime: &Runtime) {
    let subject = Subject::new(runtime.engine(), ck8s_builtin_policies::BUNDLE);
    let raw = RawValue::from_string(include_str!("../benches/deployment-4k.json").into()).unwrap();
    let request = ck8s_policy_runtime::Subject::from_manifest(&raw, Operation::Create).unwrap();
    let input = request.input().unwrap().to_vec(false);
    let settings: Vec<Vec<u8>> =
        ck8s_policy_runtime::Source::Builtin(ck8s_builtin_policies::BUNDLE)
            .load(runtime)
            .unwrap()
            .iter()
            .map(|p| serde_json::to_vec(&p.metadata.default_settings()).unwrap())
            .collect();

    let memory_of = |store: &mut Store<()>, instance: &wasmtime::Instance| {
        instance.get_memory(&mut *store, "memory").unwrap()
    };
    let mut fresh_store = subject.store();
    let fresh = subject.pre.instantiate(&mut fresh_store).unwrap();
    let before = memory_of(&mut fresh_store, &fresh)
        .data(&fresh_store)
        .to_vec();

    let mut store = subject.store();
    let instance = subject.pre.instantiate(&mut store).unwrap();
    let alloc = instance
        .get_typed_func::<i32, i32>(&mut store, "ck8s_alloc")
        .unwrap();
    let validate = instance
        .get_typed_func::<(i32, i32, i32, i32, i32), i64>(&mut store, "ck8s_validate_policy")
        .unwrap();
    let total = input.len() + settings.iter().map(Vec::len).sum::<usize>();
    let ptr = alloc.call(&mut store, total as i32).unwrap() as usize;
    let memory = memory_of(&mut store, &instance);
    let mut at = ptr;
    for part in std::iter::once(&input).chain(&settings) {
        memory.write(&mut store, at, part).unwrap();
        at += part.len();
    }
    let mut settings_at = ptr + input.len();
    for (index, s) in settings.iter().enumerate() {
        let args = (
            index as i32,
            ptr as i32,
            input.len() as i32,
            settings_at as i32,
            s.len() as i32,
        );
        let (_, out_len) = ck8s_policy_api::unpack(validate.call(&mut store, args).unwrap());
        assert_eq!(out_len, 0, "the benchmark Deployment is allowed");
        settings_at += s.len();
    }
    let after = memory.data(&store);
    let dirty: Vec<usize> = (before.chunks(4096).zip(after.chunks(4096)))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(page, _)| page)
        .collect();
    println!(
        "built-in bundle judging the 4 KB Deployment changes {} of {} pages (4 KiB): {dirty:?}",
        dirty.len(),
        after.len() / 4096
    );
}
