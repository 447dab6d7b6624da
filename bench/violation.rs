//! Violation report latency against the kernel mechanism underneath, in one run.
//!
//! A write into a nebula frozen region (userfaultfd write-protect: the kernel parks the
//! writer, nebula's service thread reads the event, builds the report with thread id and
//! exact address, queues it for the violation handler, unprotects the page and wakes the
//! writer; `refreeze` protects it again) vs the same round trip done by hand on a bare
//! userfaultfd with a minimal resolver thread (poll, read the event, unprotect; protect
//! again). Median of `ROUNDS` write + refreeze cycles each, interleaved.
//!
//! (A pkey fault report under the Audit policy is the other fast violation path; this
//! machine has no PKU, and under TCG emulation its figures mean nothing, so it is not
//! measured here.)
//!
//! Run: `make bench` (or `cargo bench --bench violation`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nebula_memory::isolation::MemoryIsolation;
use nebula_memory::uffd::{Event, FrozenRegion, Userfaultfd, WritePolicy};

const ROUNDS: usize = 2000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[allow(unsafe_code)]
fn poke(addr: usize) {
    // SAFETY: `addr` is the first byte of a page this benchmark owns, mapped read-write and
    // write-protected through userfaultfd: the write parks until the resolver unprotects it.
    unsafe { (addr as *mut u8).write_volatile(1) };
}

fn main() {
    if !nebula_memory::features().userfaultfd.available {
        println!("skipped: userfaultfd is not available here");
        return;
    }
    // The peer: a bare userfaultfd on one anonymous page of a region context.
    let iso = MemoryIsolation::new();
    let ctx = iso.create_context().build().unwrap();
    let page = ctx.allocate_aligned(4096, 4096).unwrap().as_ptr() as usize;
    poke(page); // populate it, so write protection has a page to protect
    let (wp_feature, tid_feature) = (1u64 << 0, 1u64 << 8);
    let uffd = Arc::new(Userfaultfd::open(wp_feature | tid_feature).expect("userfaultfd"));
    uffd.register(page, 4096, false, true).expect("register");
    let stop = Arc::new(AtomicBool::new(false));
    let resolver = {
        let (uffd, stop) = (Arc::clone(&uffd), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                if !uffd.poll(100).unwrap_or(false) {
                    continue;
                }
                while let Ok(Some(ev)) = uffd.read_event() {
                    if let Event::PageFault { address, .. } = ev {
                        uffd.write_protect(address & !4095, 4096, false).unwrap();
                    }
                }
            }
        })
    };
    let frozen =
        FrozenRegion::new(&[0u8; 4096], WritePolicy::Audit, Some(ctx.id())).expect("frozen region");
    nebula_memory::violation::set_violation_handler(|_| {});
    let (mut neb, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        uffd.write_protect(page, 4096, true).unwrap();
        let t = Instant::now();
        poke(page);
        raw.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        frozen.write_violating(0, &[1]).unwrap();
        neb.push(t.elapsed().as_secs_f64() * 1e6);
        frozen.refreeze().unwrap();
    }
    stop.store(true, Ordering::Release);
    resolver.join().unwrap();
    nebula_memory::violation::flush(Duration::from_secs(5));
    let (n, r) = (median(neb), median(raw));
    println!(
        "violation: write to a write-protected page until it lands, median of {ROUNDS}, microseconds"
    );
    println!(
        "nebula frozen region (report + audit) {n:.2}   bare userfaultfd resolver {r:.2}   ratio {:.2}x",
        n / r
    );
    println!(
        "reports delivered: {} (lost {})",
        frozen.writes_reported(),
        nebula_memory::violation::lost_reports()
    );
}
