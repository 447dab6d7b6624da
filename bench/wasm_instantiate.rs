//! Wasm contexts against bare wasmtime, measured in the same run.
//!
//! - Per cycle: create a context + instantiate + one call + drop, through nebula
//!   ([`WasmIsolation::load`], which also looks the bytes up in its module
//!   cache, and [`WasmIsolation::instantiate`] from a compiled module), vs wasmtime's own
//!   pooled instantiation (`Store::new` + `InstancePre::instantiate` + a typed call + drop)
//!   on an engine configured the same way (pooling allocator of the same size, epoch
//!   interruption, no fuel). Rounds interleaved; medians of per-round means; the ratio of
//!   the medians.
//! - Memory: RSS (`VmRSS` in /proc/self/status) at 1,000 live contexts, divided by 1,000,
//!   right after instantiation and after each context wrote to its memory; and the
//!   address space (`VmSize`) the 1,000-slot pool reserves.
//!
//! Run: `cargo bench --features wasm --bench wasm_instantiate`.

use std::hint::black_box;
use std::time::Instant;

use nebula_memory::isolation::wasm::{WasmConfig, WasmIsolation};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
    Store,
};

const WAT: &str = r#"
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "nebula")
  (func (export "add") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.add)
  (func (export "touch") (param i32)
    local.get 0 i32.const 1 i32.store))
"#;

const ROUNDS: usize = 31;
const PER_ROUND: usize = 2000;
const LIVE: usize = 1000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

/// The bare wasmtime engine: the pool nebula configures, without nebula.
fn bare_engine(slots: u32, memory_limit: usize) -> Engine {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .max_memory_size(memory_limit)
        .total_component_instances(0)
        .memory_protection_keys(Enabled::No);
    let mut cfg = Config::new();
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true);
    Engine::new(&cfg).expect("bare engine")
}

fn main() {
    let cfg = WasmConfig::default();
    let slots = cfg.max_contexts;
    let vm_before = status_kib("VmSize:");
    let t = Instant::now();
    let iso = WasmIsolation::new(cfg.clone()).expect("WasmIsolation::new");
    let iso_new = t.elapsed();
    let vm_pool = status_kib("VmSize:").saturating_sub(vm_before);
    println!(
        "nebula WasmIsolation::new ({slots} slots): {:.2} ms, VmSize +{:.1} GiB; striping: {}",
        iso_new.as_secs_f64() * 1e3,
        vm_pool as f64 / (1 << 20) as f64,
        iso.striping().reason
    );
    let bytes = WAT.as_bytes();
    let module = iso.compile(bytes).expect("compile");

    let engine = bare_engine(slots, 4 << 30);
    let bare_module = Module::new(&engine, bytes).expect("bare compile");
    let pre = Linker::<()>::new(&engine)
        .instantiate_pre(&bare_module)
        .expect("instantiate_pre");

    let nebula_bytes = || {
        let mut ctx = iso.load(black_box(bytes)).unwrap();
        let r: i32 = iso.call_typed(&mut ctx, "add", (1i32, 2i32)).unwrap();
        black_box(r);
    };
    let nebula_module = || {
        let mut ctx = iso.instantiate(black_box(&module)).unwrap();
        let r: i32 = iso.call_typed(&mut ctx, "add", (1i32, 2i32)).unwrap();
        black_box(r);
    };
    let bare = || {
        let mut store = Store::new(&engine, ());
        store.set_epoch_deadline(u64::MAX / 2);
        let inst = pre.instantiate(&mut store).unwrap();
        let f = inst
            .get_typed_func::<(i32, i32), i32>(&mut store, "add")
            .unwrap();
        black_box(f.call(&mut store, (1, 2)).unwrap());
    };
    let time = |f: &dyn Fn()| {
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            f();
        }
        t.elapsed().as_secs_f64() * 1e9 / PER_ROUND as f64
    };
    // Warm up: fill the pool's warm slots and the caches.
    for _ in 0..3 {
        time(&nebula_bytes);
        time(&nebula_module);
        time(&bare);
    }
    let (mut nb, mut nm, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        nb.push(time(&nebula_bytes));
        b.push(time(&bare));
        nm.push(time(&nebula_module));
    }
    let (nb, nm, b) = (median(nb), median(nm), median(b));
    println!("create+instantiate+call+drop, median of {ROUNDS} rounds x {PER_ROUND} (ns/cycle):");
    println!("  bare wasmtime (pooled, InstancePre)        {b:8.0}");
    println!(
        "  nebula instantiate(&WasmModule)            {nm:8.0}   ratio {:.2}x",
        nm / b
    );
    println!(
        "  nebula load(bytes)                        {nb:8.0}   ratio {:.2}x",
        nb / b
    );

    // Memory at 1,000 live contexts.
    let rss0 = status_kib("VmRSS:");
    let mut live: Vec<_> = (0..LIVE)
        .map(|_| iso.load(bytes).expect("context"))
        .collect();
    let rss1 = status_kib("VmRSS:");
    for ctx in &mut live {
        iso.call_typed::<_, ()>(ctx, "touch", (65536 - 4,)).unwrap();
    }
    let rss2 = status_kib("VmRSS:");
    println!(
        "nebula, {LIVE} live contexts: RSS +{:.1} KiB/context after instantiation, +{:.1} KiB/context after one write each",
        (rss1.saturating_sub(rss0)) as f64 / LIVE as f64,
        (rss2.saturating_sub(rss0)) as f64 / LIVE as f64
    );
    drop(live);
    let rss0 = status_kib("VmRSS:");
    let mut stores: Vec<_> = (0..LIVE)
        .map(|_| {
            let mut store = Store::new(&engine, ());
            store.set_epoch_deadline(u64::MAX / 2);
            let inst = pre.instantiate(&mut store).unwrap();
            (store, inst)
        })
        .collect();
    let rss1 = status_kib("VmRSS:");
    for (store, inst) in &mut stores {
        let f = inst
            .get_typed_func::<i32, ()>(&mut *store, "touch")
            .unwrap();
        f.call(&mut *store, 65536 - 4).unwrap();
    }
    let rss2 = status_kib("VmRSS:");
    println!(
        "bare wasmtime, {LIVE} live stores: RSS +{:.1} KiB/store after instantiation, +{:.1} KiB/store after one write each",
        (rss1.saturating_sub(rss0)) as f64 / LIVE as f64,
        (rss2.saturating_sub(rss0)) as f64 / LIVE as f64
    );
    drop(stores);
    let verdict = if nm / b <= 1.2 && nb / b <= 1.2 {
        "ok"
    } else {
        "OVER"
    };
    println!("target <= 1.2x: {verdict}");
}
