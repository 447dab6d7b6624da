//! The wasm level: hand-written WAT modules against every limit, on wasmtime.
//!
//! Run with `cargo test --features wasm --test wasm` (without the feature this file is empty).
#![cfg(feature = "wasm")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nebula_memory::IsolationError;
use nebula_memory::isolation::wasm::{
    Trap, WASM_PAGE, WasmConfig, WasmError, WasmIsolation, WasmValue,
};
use nebula_memory::violation::{ViolationInfo, ViolationKind};

/// [`WASM_PAGE`] as a wasm32 address argument.
#[allow(clippy::cast_possible_truncation)] // 64 KiB: an i32 holds it
const PAGE_ADDR: i32 = WASM_PAGE as i32;

/// A small pool, so parallel tests do not reserve terabytes each.
fn config() -> WasmConfig {
    WasmConfig {
        max_contexts: 4,
        memory_limit: 2 * WASM_PAGE,
        deadline: Some(Duration::from_secs(10)),
        ..WasmConfig::default()
    }
}

/// A config whose violation reports land in the returned list.
fn recording(mut cfg: WasmConfig) -> (WasmConfig, Arc<Mutex<Vec<ViolationInfo>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    cfg.on_violation = Some(Arc::new(move |v: &ViolationInfo| {
        sink.lock().unwrap().push(v.clone())
    }));
    (cfg, seen)
}

fn traps(seen: &Mutex<Vec<ViolationInfo>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|v| match &v.kind {
            ViolationKind::WasmTrap { trap } => trap.clone(),
            other => panic!("not a wasm trap: {other:?}"),
        })
        .collect()
}

const ARITH: &str = r#"
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "nebula")
  (func (export "add") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.add)
  (func (export "mul64") (param i64 i64) (result i64)
    local.get 0 local.get 1 i64.mul)
  (func (export "half") (param f64) (result f64)
    local.get 0 f64.const 0.5 f64.mul)
  (func (export "divmod") (param i32 i32) (result i32 i32)
    local.get 0 local.get 1 i32.div_u
    local.get 0 local.get 1 i32.rem_u)
  (func (export "sum") (param $p i32) (param $n i32) (result i32)
    (local $acc i32)
    (block $done
      (loop $next
        local.get $n i32.eqz br_if $done
        local.get $acc local.get $p i32.load8_u i32.add local.set $acc
        local.get $p i32.const 1 i32.add local.set $p
        local.get $n i32.const 1 i32.sub local.set $n
        br $next))
    local.get $acc)
  (func (export "div") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.div_s)
  (func (export "boom") unreachable))
"#;

#[test]
fn normal_calls_return_values() {
    let iso = WasmIsolation::new(config()).unwrap();
    let mut ctx = iso.load(ARITH.as_bytes()).unwrap();
    let r = iso
        .call(&mut ctx, "add", &[WasmValue::I32(40), WasmValue::I32(2)])
        .unwrap();
    assert_eq!(r, vec![WasmValue::I32(42)]);
    let r = iso
        .call(
            &mut ctx,
            "mul64",
            &[WasmValue::I64(1 << 40), WasmValue::I64(3)],
        )
        .unwrap();
    assert_eq!(r, vec![WasmValue::I64(3 << 40)]);
    let r = iso.call(&mut ctx, "half", &[WasmValue::F64(5.0)]).unwrap();
    assert_eq!(r, vec![WasmValue::F64(2.5)]);
    let r = iso
        .call(&mut ctx, "divmod", &[WasmValue::I32(17), WasmValue::I32(5)])
        .unwrap();
    assert_eq!(r, vec![WasmValue::I32(3), WasmValue::I32(2)]);
    let typed: i32 = iso.call_typed(&mut ctx, "add", (7i32, 8i32)).unwrap();
    assert_eq!(typed, 15);
    let s = ctx.stats();
    assert_eq!(s.calls, 5);
    assert_eq!(s.traps, 0);
    assert_eq!(s.memory_bytes, WASM_PAGE);
}

#[test]
fn host_reads_and_writes_linear_memory() {
    let iso = WasmIsolation::new(config()).unwrap();
    let mut ctx = iso.load(ARITH.as_bytes()).unwrap();
    let mut buf = [0u8; 6];
    ctx.read_memory(16, &mut buf).unwrap();
    assert_eq!(&buf, b"nebula", "the data segment is in the memory");
    ctx.write_memory(1000, &[1, 2, 3, 250]).unwrap();
    let r: i32 = iso.call_typed(&mut ctx, "sum", (1000i32, 4i32)).unwrap();
    assert_eq!(r, 256, "the module sees what the host wrote");
    let e = ctx.write_memory(WASM_PAGE - 2, &[0; 4]).unwrap_err();
    assert!(
        matches!(e, WasmError::MemoryAccess { offset, len: 4, size, .. } if offset == WASM_PAGE - 2 && size == WASM_PAGE),
        "{e}"
    );
    assert!(matches!(
        IsolationError::from(e),
        IsolationError::AccessViolation { address, .. } if address == WASM_PAGE - 2
    ));
}

#[test]
fn wrong_export_or_arguments_are_refused() {
    let iso = WasmIsolation::new(config()).unwrap();
    let mut ctx = iso.load(ARITH.as_bytes()).unwrap();
    let e = iso.call(&mut ctx, "nope", &[]).unwrap_err();
    assert!(matches!(e, WasmError::ExportNotFound { ref export, .. } if export == "nope"));
    let e = iso
        .call(&mut ctx, "add", &[WasmValue::I64(1), WasmValue::I32(2)])
        .unwrap_err();
    assert!(
        matches!(e, WasmError::SignatureMismatch { ref expected, ref given, .. } if expected == "i32, i32" && given == "i64, i32"),
        "{e}"
    );
    let e = iso
        .call_typed::<(i64,), i32>(&mut ctx, "add", (1,))
        .unwrap_err();
    assert!(matches!(e, WasmError::SignatureMismatch { .. }), "{e}");
    assert!(matches!(
        IsolationError::from(e),
        IsolationError::InvalidConfig(_)
    ));
}

const GROW: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "grow") (param i32) (result i32)
    local.get 0 memory.grow)
  (func (export "size") (result i32) memory.size))
"#;

#[test]
fn memory_grow_past_the_limit_returns_minus_one() {
    let (cfg, seen) = recording(config()); // limit: 2 pages
    let iso = WasmIsolation::new(cfg).unwrap();
    let mut ctx = iso.load(GROW.as_bytes()).unwrap();
    let grow = |iso: &WasmIsolation, ctx: &mut _, n: i32| -> i32 {
        iso.call_typed(ctx, "grow", (n,)).unwrap()
    };
    assert_eq!(
        grow(&iso, &mut ctx, 1),
        1,
        "1 -> 2 pages is within the limit"
    );
    assert_eq!(grow(&iso, &mut ctx, 1), -1, "2 -> 3 pages is refused");
    assert_eq!(grow(&iso, &mut ctx, 1000), -1);
    let size: i32 = iso.call_typed(&mut ctx, "size", ()).unwrap();
    assert_eq!(size, 2, "the module still sees 2 pages");
    let s = ctx.stats();
    assert_eq!(s.memory_bytes, 2 * WASM_PAGE);
    assert_eq!(s.grow_refusals, 2);
    assert_eq!(s.traps, 0, "a -1 from memory.grow is not a trap");
    assert!(traps(&seen).is_empty());
    // The refused pages really are not there: the host cannot write into them either.
    assert!(ctx.write_memory(2 * WASM_PAGE, &[1]).is_err());
}

#[test]
fn memory_grow_past_the_limit_traps_when_configured() {
    let (cfg, seen) = recording(WasmConfig {
        trap_on_grow_failure: true,
        ..config()
    });
    let iso = WasmIsolation::new(cfg).unwrap();
    let mut ctx = iso.load(GROW.as_bytes()).unwrap();
    assert_eq!(
        iso.call_typed::<_, i32>(&mut ctx, "grow", (1i32,)).unwrap(),
        1
    );
    let e = iso
        .call_typed::<_, i32>(&mut ctx, "grow", (1i32,))
        .unwrap_err();
    let (p, lim) = (WASM_PAGE as u64, "memory");
    assert!(
        matches!(e, WasmError::LimitRefused { limit, requested, used, max, .. }
            if limit == lim && requested == 3 * p && used == 2 * p && max == 2 * p),
        "{e}"
    );
    let id = ctx.id();
    assert!(matches!(
        IsolationError::from(e),
        IsolationError::LimitExceeded { context, limit: "memory", .. } if context == id
    ));
    assert_eq!(traps(&seen), vec!["LimitRefused(memory)".to_string()]);
    let v = seen.lock().unwrap()[0].clone();
    assert_eq!(v.context, Some(id));
    assert_eq!(v.pid, Some(std::process::id() as i32));
    assert_eq!(ctx.stats().traps, 1);
}

#[test]
fn initial_memory_above_the_limit_is_refused_at_creation() {
    let (cfg, seen) = recording(config());
    let iso = WasmIsolation::new(cfg).unwrap();
    let e = iso
        .load(br#"(module (memory (export "memory") 3))"#)
        .unwrap_err();
    assert!(
        matches!(e, WasmError::LimitRefused { limit: "memory", requested, max, .. }
            if requested == 3 * WASM_PAGE as u64 && max == 2 * WASM_PAGE as u64),
        "{e}"
    );
    assert_eq!(traps(&seen), vec!["LimitRefused(memory)".to_string()]);
    assert_eq!(iso.live_contexts(), 0, "the slot was given back");
}

#[test]
fn table_counts_and_growth_are_limited() {
    let iso = WasmIsolation::new(WasmConfig {
        table_elements: 8,
        ..config()
    })
    .unwrap();
    let two_tables = r#"(module (memory (export "memory") 1)
        (table 1 funcref) (table 1 funcref))"#;
    let e = iso.load(two_tables.as_bytes()).unwrap_err();
    assert!(
        matches!(
            e,
            WasmError::LimitRefused {
                limit: "tables",
                requested: 2,
                max: 1,
                ..
            }
        ),
        "{e}"
    );
    let big = r#"(module (memory (export "memory") 1) (table 9 funcref))"#;
    let e = iso.load(big.as_bytes()).unwrap_err();
    assert!(
        matches!(
            e,
            WasmError::LimitRefused {
                limit: "table elements",
                requested: 9,
                max: 8,
                ..
            }
        ),
        "{e}"
    );
    let grow = r#"(module (memory (export "memory") 1) (table $t 4 funcref)
        (func (export "grow") (param i32) (result i32)
          ref.null func local.get 0 table.grow $t))"#;
    let mut ctx = iso.load(grow.as_bytes()).unwrap();
    assert_eq!(
        iso.call_typed::<_, i32>(&mut ctx, "grow", (4i32,)).unwrap(),
        4
    );
    assert_eq!(
        iso.call_typed::<_, i32>(&mut ctx, "grow", (1i32,)).unwrap(),
        -1
    );
    assert_eq!(ctx.stats().grow_refusals, 1);
}

const SPIN: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "spin") (loop $l br $l))
  (func (export "add") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.add))
"#;

#[test]
fn an_endless_loop_is_stopped_by_fuel() {
    let (cfg, seen) = recording(WasmConfig {
        fuel: Some(100_000),
        deadline: None,
        ..config()
    });
    let iso = WasmIsolation::new(cfg).unwrap();
    let mut ctx = iso.load(SPIN.as_bytes()).unwrap();
    let e = iso.call(&mut ctx, "spin", &[]).unwrap_err();
    assert!(
        matches!(e, WasmError::OutOfFuel { budget: 100_000, ref export, .. } if export == "spin"),
        "{e}"
    );
    assert_eq!(ctx.stats().last_fuel_used, 100_000);
    assert!(matches!(
        IsolationError::from(e),
        IsolationError::LimitExceeded {
            limit: "fuel",
            max: 100_000,
            ..
        }
    ));
    assert_eq!(traps(&seen), vec!["OutOfFuel".to_string()]);
    // The context goes on with a fresh budget.
    let r: i32 = iso.call_typed(&mut ctx, "add", (1i32, 2i32)).unwrap();
    assert_eq!(r, 3);
    let used = ctx.stats().last_fuel_used;
    assert!(
        used > 0 && used < 100,
        "a tiny call uses little fuel: {used}"
    );
    // A per-context budget.
    ctx.set_fuel(Some(10)).unwrap();
    assert!(matches!(
        iso.call(&mut ctx, "spin", &[]),
        Err(WasmError::OutOfFuel { budget: 10, .. })
    ));
}

#[test]
fn an_endless_loop_is_stopped_by_the_deadline() {
    let (cfg, seen) = recording(WasmConfig {
        fuel: None,
        deadline: Some(Duration::from_millis(100)),
        epoch_tick: Duration::from_millis(5),
        ..config()
    });
    let iso = WasmIsolation::new(cfg).unwrap();
    let mut ctx = iso.load(SPIN.as_bytes()).unwrap();
    let t = std::time::Instant::now();
    let e = iso.call(&mut ctx, "spin", &[]).unwrap_err();
    let wall = t.elapsed();
    let WasmError::DeadlineExceeded { limit, elapsed, .. } = e else {
        panic!("{e}")
    };
    assert_eq!(limit, Duration::from_millis(100));
    assert!(elapsed >= limit, "stopped early: {elapsed:?}");
    // One tick of lateness is the design; allow for a loaded 2-core machine and TCG.
    assert!(wall < Duration::from_secs(5), "stopped late: {wall:?}");
    eprintln!("deadline 100 ms: stopped after {elapsed:?}");
    assert_eq!(traps(&seen), vec!["Interrupt".to_string()]);
    let r: i32 = iso.call_typed(&mut ctx, "add", (1i32, 2i32)).unwrap();
    assert_eq!(r, 3, "the context goes on with a fresh deadline");
    // Without a deadline the ticker never interrupts a (finite) call.
    ctx.set_deadline(None);
    let r: i32 = iso.call_typed(&mut ctx, "add", (2i32, 2i32)).unwrap();
    assert_eq!(r, 4);
}

#[test]
fn a_start_function_that_never_ends_is_stopped() {
    let (cfg, seen) = recording(WasmConfig {
        deadline: Some(Duration::from_millis(50)),
        ..config()
    });
    let iso = WasmIsolation::new(cfg).unwrap();
    let m = r#"(module (memory (export "memory") 1)
        (func $s (loop $l br $l)) (start $s))"#;
    let e = iso.load(m.as_bytes()).unwrap_err();
    assert!(matches!(e, WasmError::DeadlineExceeded { .. }), "{e}");
    assert_eq!(traps(&seen), vec!["Interrupt".to_string()]);
    assert_eq!(iso.live_contexts(), 0);
}

const OOB: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "load") (param i32) (result i32)
    local.get 0 i32.load)
  (func (export "store") (param i32)
    local.get 0 i32.const 7 i32.store)
  (func (export "far") (result i32)
    i32.const -1 i32.load offset=0xfffffff0))
"#;

#[test]
fn an_out_of_bounds_access_traps() {
    let (cfg, seen) = recording(config());
    let iso = WasmIsolation::new(cfg).unwrap();
    let mut ctx = iso.load(OOB.as_bytes()).unwrap();
    assert_eq!(
        iso.call_typed::<_, i32>(&mut ctx, "load", (0i32,)).unwrap(),
        0
    );
    for (export, arg) in [
        ("load", Some(PAGE_ADDR)),
        ("load", Some(PAGE_ADDR - 3)),
        ("store", Some(3 * PAGE_ADDR)),
        ("load", Some(-4)),
        ("far", None),
    ] {
        let args: Vec<WasmValue> = arg.map(WasmValue::I32).into_iter().collect();
        let e = iso.call(&mut ctx, export, &args).unwrap_err();
        assert!(
            matches!(
                e,
                WasmError::Trap {
                    trap: Trap::MemoryOutOfBounds,
                    ..
                }
            ),
            "{export}({arg:?}): {e}"
        );
        assert!(matches!(
            IsolationError::from(e),
            IsolationError::AccessViolation { .. }
        ));
    }
    assert_eq!(traps(&seen), vec!["MemoryOutOfBounds".to_string(); 5]);
    // The store at 3 pages did not land anywhere the module or the host can see.
    let mut b = [0u8; 4];
    ctx.read_memory(0, &mut b).unwrap();
    assert_eq!(b, [0; 4]);
    assert_eq!(ctx.stats().traps, 5);
    assert_eq!(
        iso.call_typed::<_, i32>(&mut ctx, "load", (0i32,)).unwrap(),
        0
    );
}

#[test]
fn other_traps_are_reported() {
    let (cfg, seen) = recording(config());
    let iso = WasmIsolation::new(cfg).unwrap();
    let mut ctx = iso.load(ARITH.as_bytes()).unwrap();
    let e = iso.call(&mut ctx, "boom", &[]).unwrap_err();
    assert!(
        matches!(
            e,
            WasmError::Trap {
                trap: Trap::UnreachableCodeReached,
                ..
            }
        ),
        "{e}"
    );
    let e = iso
        .call_typed::<_, i32>(&mut ctx, "div", (1i32, 0i32))
        .unwrap_err();
    assert!(
        matches!(
            e,
            WasmError::Trap {
                trap: Trap::IntegerDivisionByZero,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        traps(&seen),
        vec![
            "UnreachableCodeReached".to_string(),
            "IntegerDivisionByZero".to_string()
        ]
    );
}

#[test]
fn runaway_recursion_exhausts_the_wasm_stack() {
    let (cfg, seen) = recording(WasmConfig {
        max_wasm_stack: 64 << 10,
        ..config()
    });
    let iso = WasmIsolation::new(cfg).unwrap();
    let m = r#"(module (memory (export "memory") 1)
        (func $f (export "f") (param i32) (result i32)
          local.get 0 i32.const 1 i32.add call $f))"#;
    let mut ctx = iso.load(m.as_bytes()).unwrap();
    let e = iso
        .call_typed::<_, i32>(&mut ctx, "f", (0i32,))
        .unwrap_err();
    assert!(
        matches!(e, WasmError::StackExhausted { max_stack, .. } if max_stack == 64 << 10),
        "{e}"
    );
    assert_eq!(traps(&seen), vec!["StackOverflow".to_string()]);
}

#[test]
fn a_module_without_a_memory_export_is_refused() {
    let iso = WasmIsolation::new(config()).unwrap();
    for m in [
        "(module (func (export \"f\")))",
        "(module (memory 1) (func (export \"f\")))",
    ] {
        let e = iso.load(m.as_bytes()).unwrap_err();
        assert!(matches!(e, WasmError::NoMemoryExport), "{m}: {e}");
        assert!(matches!(
            IsolationError::from(e),
            IsolationError::NoMemoryExport
        ));
    }
    // Any exported memory will do.
    let ok = r#"(module (memory (export "heap") 1))"#;
    assert!(iso.load(ok.as_bytes()).is_ok());
}

#[test]
fn imports_and_invalid_modules_are_refused() {
    let iso = WasmIsolation::new(config()).unwrap();
    let m = r#"(module (import "env" "open" (func)) (memory (export "memory") 1))"#;
    let e = iso.load(m.as_bytes()).unwrap_err();
    assert!(
        matches!(e, WasmError::UnresolvedImport { ref module, ref name } if module == "env" && name == "open"),
        "{e}"
    );
    assert!(matches!(
        IsolationError::from(e),
        IsolationError::Unsupported { .. }
    ));
    for bad in [&b"\0asm\x01\0\0\0\xff"[..], b"not wasm at all", b""] {
        let e = iso.load(bad).unwrap_err();
        assert!(matches!(e, WasmError::Compile { .. }), "{e}");
    }
    let small = WasmIsolation::new(WasmConfig {
        max_module_bytes: 64,
        ..config()
    })
    .unwrap();
    let e = small.load(ARITH.as_bytes()).unwrap_err();
    assert!(
        matches!(
            e,
            WasmError::LimitRefused {
                limit: "module bytes",
                max: 64,
                ..
            }
        ),
        "{e}"
    );
    // Two memories need the multi-memory limit raised.
    let two = r#"(module (memory (export "memory") 1) (memory 1))"#;
    let e = iso.load(two.as_bytes()).unwrap_err();
    assert!(
        matches!(
            e,
            WasmError::LimitRefused {
                limit: "memories",
                requested: 2,
                max: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn module_bytes_are_compiled_once() {
    let iso = WasmIsolation::new(config()).unwrap();
    let a = iso.load(ARITH.as_bytes()).unwrap();
    let b = iso.load(ARITH.as_bytes()).unwrap();
    assert_eq!(iso.cached_modules(), 1);
    // Same length and ends, different middle: a different module.
    let other = ARITH.replace("nebula", "NEBULA");
    let mut c = iso.load(other.as_bytes()).unwrap();
    assert_eq!(iso.cached_modules(), 2);
    let mut buf = [0u8; 6];
    c.read_memory(16, &mut buf).unwrap();
    assert_eq!(&buf, b"NEBULA");
    assert_eq!(
        iso.call_typed::<_, i32>(&mut c, "add", (1i32, 1i32))
            .unwrap(),
        2
    );
    drop((a, b));
    iso.clear_module_cache();
    assert_eq!(iso.cached_modules(), 0);
    assert!(iso.load(ARITH.as_bytes()).is_ok());
}

#[test]
fn the_pool_bounds_live_contexts() {
    let iso = WasmIsolation::new(WasmConfig {
        max_contexts: 2,
        ..config()
    })
    .unwrap();
    let a = iso.load(ARITH.as_bytes()).unwrap();
    let _b = iso.load(ARITH.as_bytes()).unwrap();
    let e = iso.load(ARITH.as_bytes()).unwrap_err();
    assert!(
        matches!(
            e,
            WasmError::LimitRefused {
                limit: "wasm contexts",
                used: 2,
                max: 2,
                ..
            }
        ),
        "{e}"
    );
    drop(a);
    let mut c = iso.load(ARITH.as_bytes()).unwrap();
    let r: i32 = iso.call_typed(&mut c, "add", (1i32, 1i32)).unwrap();
    assert_eq!(r, 2);
    assert_eq!(iso.live_contexts(), 2);
}

#[test]
fn contexts_do_not_share_memory() {
    let iso = WasmIsolation::new(config()).unwrap();
    let mut a = iso.load(ARITH.as_bytes()).unwrap();
    let mut b = iso.load(ARITH.as_bytes()).unwrap();
    a.write_memory(100, &[9; 8]).unwrap();
    let mut buf = [0u8; 8];
    b.read_memory(100, &mut buf).unwrap();
    assert_eq!(buf, [0; 8]);
    assert_eq!(
        iso.call_typed::<_, i32>(&mut a, "sum", (100i32, 8i32))
            .unwrap(),
        72
    );
    assert_eq!(
        iso.call_typed::<_, i32>(&mut b, "sum", (100i32, 8i32))
            .unwrap(),
        0
    );
    // A slot reused after a drop starts from the module's image again.
    drop(a);
    let c = iso.load(ARITH.as_bytes()).unwrap();
    c.read_memory(100, &mut buf).unwrap();
    assert_eq!(buf, [0; 8], "a reused slot is zeroed");
}

#[test]
fn a_runaway_context_does_not_stop_its_neighbours() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<WasmIsolation>();
    send::<nebula_memory::isolation::wasm::WasmContext>();

    let iso = Arc::new(
        WasmIsolation::new(WasmConfig {
            deadline: Some(Duration::from_millis(300)),
            ..config()
        })
        .unwrap(),
    );
    let spinner = {
        let iso = Arc::clone(&iso);
        std::thread::spawn(move || {
            let mut ctx = iso.load(SPIN.as_bytes()).unwrap();
            iso.call(&mut ctx, "spin", &[]).unwrap_err()
        })
    };
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let iso = Arc::clone(&iso);
            std::thread::spawn(move || {
                let mut ctx = iso.load(ARITH.as_bytes()).unwrap();
                let mut n = 0u32;
                let t = std::time::Instant::now();
                while t.elapsed() < Duration::from_millis(200) {
                    let r: i32 = iso.call_typed(&mut ctx, "add", (w, 1i32)).unwrap();
                    assert_eq!(r, w + 1);
                    n += 1;
                }
                n
            })
        })
        .collect();
    for w in workers {
        assert!(w.join().unwrap() > 0);
    }
    let e = spinner.join().unwrap();
    assert!(matches!(e, WasmError::DeadlineExceeded { .. }), "{e}");
}

#[test]
fn a_thousand_create_drop_cycles_leave_no_mapping() {
    let iso = WasmIsolation::new(config()).unwrap();
    for _ in 0..10 {
        drop(iso.load(ARITH.as_bytes()).unwrap());
    }
    let before = maps_lines();
    for i in 0..1000 {
        let mut ctx = iso.load(ARITH.as_bytes()).unwrap();
        let r: i32 = iso.call_typed(&mut ctx, "add", (i, 1i32)).unwrap();
        assert_eq!(r, i + 1);
    }
    let after = maps_lines();
    // Other test threads map and unmap too; a leak here would be a thousand mappings.
    assert!(
        after <= before + 50,
        "mappings grew from {before} to {after}"
    );
    assert_eq!(iso.live_contexts(), 0);
}

#[test]
fn striping_follows_the_probe() {
    let iso = WasmIsolation::new(config()).unwrap();
    let pk = &nebula_memory::features().pkeys;
    eprintln!("wasm pool striping: {:?}", iso.striping());
    if !pk.available {
        assert!(!iso.striping().enabled);
        assert!(iso.striping().reason.contains("not available"));
    } else {
        // wasmtime's own check also wants a GenuineIntel CPUID vendor.
        assert_eq!(
            iso.striping().enabled,
            wasmtime_mpk(),
            "{:?}",
            iso.striping()
        );
    }
    let off = WasmIsolation::new(WasmConfig {
        pkey_striping: false,
        ..config()
    })
    .unwrap();
    assert!(!off.striping().enabled);
}

#[test]
fn striping_leaves_the_callers_pkru_alone() {
    if !common::require(
        nebula_memory::features().pkeys.available,
        "needs protection keys (PKU): runs in the VM tier (make vm-test)",
    ) {
        return;
    }
    if !common::require(
        wasmtime_mpk(),
        "wasmtime's MPK check wants a GenuineIntel CPUID vendor (the VM tier's qemu sets it)",
    ) {
        return;
    }
    run_helper_ok("helper_pkru_is_restored");
}

/// wasmtime's own answer (PKU in CPUID, and an Intel vendor).
fn wasmtime_mpk() -> bool {
    wasmtime::PoolingAllocationConfig::are_memory_protection_keys_available()
}

#[test]
#[ignore = "helper: run by striping_leaves_the_callers_pkru_alone in a child process"]
fn helper_pkru_is_restored() {
    use nebula_memory::pkey::{Pkeys, Rights};
    if std::env::var_os("NEBULA_HELPER").is_none() {
        return;
    }
    let pkeys = Pkeys::probe().unwrap();
    let iso = WasmIsolation::new(config()).unwrap();
    assert!(iso.striping().enabled, "{:?}", iso.striping());
    let mut ctx = iso.load(ARITH.as_bytes()).unwrap();
    let key = pkeys.alloc(Rights::ReadWrite).unwrap();
    let closed = pkeys.pkru().with(key.id(), Rights::NoAccess);
    pkeys.set_pkru(closed);
    let r: i32 = iso.call_typed(&mut ctx, "add", (1i32, 2i32)).unwrap();
    assert_eq!(r, 3);
    assert_eq!(
        pkeys.pkru().0,
        closed.0,
        "wasmtime opened every key on return"
    );
    let _ = iso.call(&mut ctx, "boom", &[]).unwrap_err();
    assert_eq!(pkeys.pkru().0, closed.0, "after a trap too");
}

#[test]
fn traps_work_whichever_sigsegv_handler_came_first() {
    for helper in [
        "helper_nebula_handler_first",
        "helper_wasmtime_handler_first",
    ] {
        run_helper_ok(helper);
    }
}

fn oob_traps_cleanly() {
    let iso = WasmIsolation::new(config()).unwrap();
    let mut ctx = iso.load(OOB.as_bytes()).unwrap();
    for _ in 0..3 {
        let e = iso
            .call_typed::<_, i32>(&mut ctx, "load", (PAGE_ADDR,))
            .unwrap_err();
        assert!(matches!(e, WasmError::Trap { .. }), "{e}");
    }
}

#[test]
#[ignore = "helper: run by traps_work_whichever_sigsegv_handler_came_first in a child process"]
fn helper_nebula_handler_first() {
    if std::env::var_os("NEBULA_HELPER").is_none() {
        return;
    }
    nebula_memory::violation::install().unwrap();
    oob_traps_cleanly();
}

#[test]
#[ignore = "helper: run by traps_work_whichever_sigsegv_handler_came_first in a child process"]
fn helper_wasmtime_handler_first() {
    if std::env::var_os("NEBULA_HELPER").is_none() {
        return;
    }
    let iso = WasmIsolation::new(config()).unwrap();
    nebula_memory::violation::install().unwrap();
    oob_traps_cleanly();
    // No callback: the trap goes through the process-wide dispatch (stderr here).
    let mut ctx = iso.load(OOB.as_bytes()).unwrap();
    assert!(iso.call(&mut ctx, "far", &[]).is_err());
    assert!(nebula_memory::violation::flush(Duration::from_secs(5)));
}

#[test]
fn the_epoch_ticker_stops_with_the_last_user() {
    run_helper_ok("helper_ticker_lifetime");
}

#[test]
#[ignore = "helper: run by the_epoch_ticker_stops_with_the_last_user in a child process"]
fn helper_ticker_lifetime() {
    if std::env::var_os("NEBULA_HELPER").is_none() {
        return;
    }
    assert_eq!(ticker_threads(), 0);
    let iso = WasmIsolation::new(config()).unwrap();
    // The thread names itself once it runs.
    let t = std::time::Instant::now();
    while ticker_threads() == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ticker_threads(), 1);
    let ctx = iso.load(ARITH.as_bytes()).unwrap();
    drop(iso);
    assert_eq!(
        ticker_threads(),
        1,
        "a live context keeps its deadline clock"
    );
    drop(ctx);
    assert_eq!(ticker_threads(), 0, "the kernel no longer lists the thread");
}

/// Threads of this process named like the epoch ticker, as /proc lists them.
fn ticker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim_end() == "nebula-wasm-epo")
        .count()
}

fn maps_lines() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// Re-executes this test binary to run one ignored helper test in a child process; the
/// helper must pass.
fn run_helper_ok(name: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NEBULA_HELPER", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
