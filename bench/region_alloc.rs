//! Region allocation vs glibc malloc and a plain bump allocator, in one run.
//!
//! For each size (64 B, 4 KiB): rounds of `BATCH` allocations, each allocation written
//! once (as a user would), then everything released (context reset / `free` each / bump
//! reset). Two figures per allocator, medians over `ROUNDS` rounds, in ns per allocation:
//! `alloc` times the allocation loop only, `cycle` includes the release. Ratios are
//! against glibc malloc measured in the same process, same run.
//!
//! glibc takes lock-free shortcuts while a process has a single thread (`SINGLE_THREAD_P`:
//! no atomics on its fastbins, no arena lock) and drops them for good once a second thread
//! exists. Contexts exist to be used by several threads, so the whole suite runs twice: first
//! single-threaded, then after parking one extra thread; the ratios compare the region and
//! malloc in the same mode.
//!
//! Run: `make bench` (or `cargo bench --bench region_alloc`).
#![allow(unsafe_code)]

use std::hint::black_box;
use std::time::Instant;

use nebula_memory::isolation::MemoryIsolation;

const BATCH: usize = 4096;
const ROUNDS: usize = 301;

struct Bump {
    buf: Vec<u8>,
    off: usize,
}

impl Bump {
    fn alloc(&mut self, size: usize) -> Option<*mut u8> {
        let start = self.off.next_multiple_of(16);
        let end = start.checked_add(size)?;
        if end > self.buf.len() {
            return None;
        }
        self.off = end;
        Some(self.buf[start..].as_mut_ptr())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `ROUNDS` rounds of `alloc_batch` then `release`; returns (alloc ns/op, cycle ns/op).
fn measure(mut alloc_batch: impl FnMut(), mut release: impl FnMut()) -> (f64, f64) {
    let (mut a, mut c) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS + 5 {
        let t0 = Instant::now();
        alloc_batch();
        let t1 = Instant::now();
        release();
        let t2 = Instant::now();
        if round >= 5 {
            a.push((t1 - t0).as_nanos() as f64 / BATCH as f64);
            c.push((t2 - t0).as_nanos() as f64 / BATCH as f64);
        }
    }
    (median(a), median(c))
}

fn main() {
    println!(
        "region_alloc: {BATCH} allocations per round, median of {ROUNDS} rounds, ns per allocation"
    );
    suite("single-threaded process");
    // Park a thread for the rest of the run: glibc switches to its multi-threaded paths.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let parked = std::thread::spawn(move || rx.recv().ok());
    suite("process with a second (parked) thread");
    drop(tx);
    parked.join().ok();
}

fn suite(mode: &str) {
    println!("\n{mode}");
    println!(
        "{:<8} {:<14} {:>9} {:>9} {:>12} {:>12}",
        "size", "allocator", "alloc", "cycle", "alloc/malloc", "cycle/malloc"
    );
    for size in [64usize, 4096] {
        let iso = MemoryIsolation::new();
        let region_bytes = (BATCH * (size + 16)) as u64 + (1 << 20);
        let ctx = iso
            .create_context()
            .with_memory_limit(region_bytes)
            .build()
            .expect("context");
        let ctx = std::cell::RefCell::new(ctx);
        let region = measure(
            || {
                let ctx = ctx.borrow();
                for _ in 0..BATCH {
                    let p = ctx.allocate(size).expect("region allocation");
                    // SAFETY: p is a fresh, committed, writable allocation of `size` bytes.
                    unsafe { p.as_ptr().write_volatile(1) };
                    black_box(p);
                }
            },
            || ctx.borrow_mut().reset().expect("reset"),
        );

        let mut ptrs: Vec<*mut u8> = Vec::with_capacity(BATCH);
        let ptrs_cell = std::cell::RefCell::new(&mut ptrs);
        let malloc = measure(
            || {
                let mut v = ptrs_cell.borrow_mut();
                for _ in 0..BATCH {
                    // SAFETY: plain malloc; checked for null; freed in the release step.
                    let p = unsafe { libc::malloc(size) }.cast::<u8>();
                    assert!(!p.is_null());
                    // SAFETY: p points to at least `size` writable bytes.
                    unsafe { p.write_volatile(1) };
                    v.push(black_box(p));
                }
            },
            || {
                let mut v = ptrs_cell.borrow_mut();
                for p in v.drain(..) {
                    // SAFETY: p came from malloc in this round and is freed once.
                    unsafe { libc::free(p.cast()) };
                }
            },
        );

        let bump = std::cell::RefCell::new(Bump {
            buf: vec![0u8; BATCH * (size + 16)],
            off: 0,
        });
        let plain = measure(
            || {
                let mut b = bump.borrow_mut();
                for _ in 0..BATCH {
                    let p = b.alloc(size).expect("bump");
                    // SAFETY: p points into b.buf with `size` bytes left.
                    unsafe { p.write_volatile(1) };
                    black_box(p);
                }
            },
            || bump.borrow_mut().off = 0,
        );
        for (name, (a, c)) in [
            ("nebula region", region),
            ("glibc malloc", malloc),
            ("plain bump", plain),
        ] {
            println!(
                "{:<8} {:<14} {:>9.2} {:>9.2} {:>11.2}x {:>11.2}x",
                if size == 64 { "64 B" } else { "4 KiB" },
                name,
                a,
                c,
                a / malloc.0,
                c / malloc.1
            );
        }
    }
}
