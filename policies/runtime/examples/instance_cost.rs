//! What a fresh instance costs before a policy does any work, and what in a module makes it
//! cost more: a function table, a data segment, dirtied pages. The engine is configured as
//! `Runtime::new` configures it (pooling, pagemap scan, epoch interruption, 256 KiB resident).
//!
//! `cargo run --release -p ck8s-policy-runtime --example instance_cost`
//! (after a build, so that `target/wasm-policies/` holds the built-in guests)

use std::time::Instant;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, TypedFunc,
};

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

fn engine() -> Engine {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(256)
        .total_memories(256)
        .total_tables(256)
        .max_memory_size(64 << 20)
        .linear_memory_keep_resident(256 << 10)
        .table_keep_resident(256 << 10)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(512 << 10)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).unwrap()
}

fn store(engine: &Engine) -> Store<()> {
    let mut store = Store::new(engine, ());
    store.set_epoch_deadline(100);
    store
}

/// Instantiate + drop, and instantiate + one call to `export` + drop.
fn cost(engine: &Engine, pre: &InstancePre<()>, module: &Module, export: &str) -> (f64, f64) {
    let index = module.get_export_index(export).unwrap();
    let bare = mean_us(|| {
        let mut s = store(engine);
        pre.instantiate(&mut s).unwrap();
    });
    let called = mean_us(|| {
        let mut s = store(engine);
        let instance = pre.instantiate(&mut s).unwrap();
        let func = instance
            .get_module_export(&mut s, &index)
            .unwrap()
            .into_func()
            .unwrap();
        // SAFETY: every module here exports `ck8s_abi_version: () -> i32`.
        let typed = unsafe { TypedFunc::<(), i32>::new_unchecked(&s, func) };
        typed.call(&mut s, ()).unwrap();
    });
    (bare, called)
}

fn main() {
    let engine = engine();
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
    let built = "target/wasm-policies/wasm32-unknown-unknown/wasm-policy";
    for name in ["build_ref", "legacy_labels", "kaniko_cache"] {
        match std::fs::read(format!("{built}/ck8s_policy_{name}.wasm")) {
            Ok(wasm) => modules.push((format!("built-in {name}"), wasm)),
            Err(e) => eprintln!("skipping built-in {name}: {e} (build the workspace first)"),
        }
    }
    println!(
        "{:<32} {:>14} {:>14}",
        "module", "inst+drop µs", "+1 call µs"
    );
    for (name, wasm) in &modules {
        let module = Module::new(&engine, wasm).unwrap();
        let pre = Linker::new(&engine).instantiate_pre(&module).unwrap();
        let (bare, called) = cost(&engine, &pre, &module, "ck8s_abi_version");
        println!("{name:<32} {bare:>14.2} {called:>14.2}");
    }

    // Dirtied pages: each must be found (PAGEMAP_SCAN) and restored when the instance goes.
    let touch = wat::parse_str(
        r#"(module (memory (export "memory") 5)
          (func (export "touch") (param $pages i32) (local $i i32)
            (loop $l
              (i32.store (i32.mul (local.get $i) (i32.const 4096)) (i32.const 1))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get $i) (local.get $pages))))))"#,
    )
    .unwrap();
    let module = Module::new(&engine, &touch).unwrap();
    let pre = Linker::new(&engine).instantiate_pre(&module).unwrap();
    let index = module.get_export_index("touch").unwrap();
    for pages in [1, 2, 4, 8, 16] {
        let us = mean_us(|| {
            let mut s = store(&engine);
            let instance = pre.instantiate(&mut s).unwrap();
            let func = instance
                .get_module_export(&mut s, &index)
                .unwrap()
                .into_func()
                .unwrap();
            // SAFETY: `touch` is `(i32) -> ()` in the module above.
            let typed = unsafe { TypedFunc::<i32, ()>::new_unchecked(&s, func) };
            typed.call(&mut s, pages).unwrap();
        });
        println!("instance writing {pages:>2} pages (4 KiB): {us:.2} µs");
    }
}
