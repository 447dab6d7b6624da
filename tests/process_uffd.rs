//! The supervisor watching a process context:
//!
//! - memory, through the context's userfaultfd (passed over `SCM_RIGHTS`): a write to a
//!   watched range kills that context, the outcome carries the kernel's fault report
//!   (address, thread), and a context running at the same time is unaffected. Host tier:
//!   root, user namespaces and userfaultfd write-protect mode; no cgroups needed (the kill is
//!   `SIGKILL` to pid 1 on the host, `cgroup.kill` in the VM).
//! - memory pressure, through a PSI trigger on the leaf's `memory.pressure`: a context
//!   throttled at `memory.high` is reported, and killed when asked. Needs cgroup v2, so it
//!   says `skipped:` on the host and runs in the VM tier.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nebula_memory::cgroup::PsiKind;
use nebula_memory::isolation::process::uffd_watch::{self, WatchError};
use nebula_memory::isolation::process::{
    CgroupUse, ClosureError, Command, ExitStatus, MemoryPressureWatch, ProcessConfig, ProcessError,
    ProcessIsolation, Stdio,
};
use nebula_memory::violation::{ViolationInfo, ViolationKind};

fn ready() -> bool {
    common::require(common::is_root(), "needs root (namespaces)")
        && common::require(
            nebula_memory::features().user_namespaces.available,
            "needs user namespaces (nebula-ctl probe)",
        )
        && common::require(
            nebula_memory::features().userfaultfd.available,
            "needs userfaultfd (nebula-ctl probe)",
        )
}

fn watched() -> ProcessConfig {
    ProcessConfig::new()
        .watch_regions(true)
        .output(Stdio::Capture, Stdio::Capture)
        .wall_time(Duration::from_secs(60))
}

/// Page-aligned, populated heap memory of `pages` pages (leaked: the context exits anyway).
fn pages(pages: usize) -> &'static mut [u8] {
    let page = rustix::param::page_size();
    let layout = std::alloc::Layout::from_size_align(pages * page, page).unwrap();
    let v: Box<[u8]> = {
        let mut v = Vec::with_capacity(layout.size() + page);
        v.resize(layout.size() + page, 1u8);
        v.into_boxed_slice()
    };
    let s = Box::leak(v);
    let off = s.as_ptr().align_offset(page);
    &mut s[off..off + pages * page]
}

fn gettid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// In the context: watch two pages, say where the write will go, then write.
fn violate(delay: Duration) -> u32 {
    let mem = pages(2);
    mem[100] = 7; // before the watch: an ordinary write
    let start = mem.as_ptr() as usize;
    uffd_watch::watch(start, mem.len()).expect("watch");
    // Reads of a watched range never fault.
    let seen = mem[100];
    let target = rustix::param::page_size() + 5;
    // Straight to fd 1 (print! would go to libtest's capture, inherited through the fork).
    let mut out = std::io::stdout().lock();
    writeln!(out, "{} {} {seen}", start + target, gettid()).unwrap();
    out.flush().unwrap();
    drop(out);
    std::thread::sleep(delay);
    // black_box: the store must happen (nothing reads it afterwards).
    std::hint::black_box(&mut *mem)[target] = 9;
    // Never reached: the writer stays blocked until the context is killed.
    1
}

#[test]
fn a_write_to_a_watched_range_kills_only_that_context() {
    if !ready() {
        return;
    }
    let seen: Arc<Mutex<Vec<ViolationInfo>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    let bad =
        ProcessIsolation::new(watched().on_violation(move |v| s2.lock().unwrap().push(v.clone())))
            .unwrap();
    let good = ProcessIsolation::new(watched()).unwrap();
    let t0 = Instant::now();
    let (b, g) = std::thread::scope(|s| {
        let g = s.spawn(|| {
            good.run_closure(|| {
                // Watched too, but never written: it must run to its end while the other
                // context is killed.
                let mem = pages(1);
                uffd_watch::watch(mem.as_ptr() as usize, mem.len()).unwrap();
                std::thread::sleep(Duration::from_millis(1500));
                let own = pages(1);
                own[0] = 42;
                u32::from(own[0]) + u32::from(mem[0])
            })
        });
        std::thread::sleep(Duration::from_millis(200));
        let b = bad.run_closure(|| violate(Duration::from_millis(300)));
        (b.unwrap(), g.join().unwrap().unwrap())
    });
    // The violating context: killed (SIGKILL), the fault reported by the kernel with the
    // exact address and the writer's thread id as the context printed them before the write.
    assert_eq!(
        b.result,
        Err(ClosureError::Died(ExitStatus::Signaled {
            signal: libc::SIGKILL,
            core_dumped: false
        })),
        "{:?}",
        b.outcome
    );
    let text = b.outcome.stdout_text();
    let mut f = text.split_whitespace().map(|x| x.parse::<usize>().unwrap());
    let mut next = || {
        f.next()
            .unwrap_or_else(|| panic!("stdout {text:?}: {:?}", b.outcome))
    };
    let (addr, tid, read_back) = (next(), next(), next());
    assert_eq!(read_back, 7);
    let v = &b.outcome.violations;
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, ViolationKind::WriteToFrozen);
    assert_eq!(v[0].address, Some(addr));
    assert_eq!(v[0].thread_id, Some(i32::try_from(tid).unwrap()));
    assert_eq!(v[0].pid, Some(b.outcome.pid));
    assert_eq!(seen.lock().unwrap().len(), 1);
    // The other context ran to its end, untouched.
    assert_eq!(g.result, Ok(43), "{:?}", g.outcome);
    assert!(g.outcome.status.success());
    assert!(
        g.outcome.violations.is_empty(),
        "{:?}",
        g.outcome.violations
    );
    assert!(g.outcome.wall_time >= Duration::from_millis(1500));
    assert!(t0.elapsed() < Duration::from_secs(30));
    // The killed context is gone from the host.
    assert!(!std::path::Path::new(&format!("/proc/{}", b.outcome.pid)).exists());
}

#[test]
fn watching_needs_a_watched_closure_context() {
    if !ready() {
        return;
    }
    // Here, in the test runner: not a context.
    assert!(matches!(
        uffd_watch::watch(0x1000, 0x1000),
        Err(WatchError::NotWatched)
    ));
    // A context without watch_regions: the closure is told so.
    let iso = ProcessIsolation::new(watched().watch_regions(false)).unwrap();
    let r = iso
        .run_closure(|| uffd_watch::watch(0x1000, 0x1000).map_err(|e| e.to_string()))
        .unwrap();
    assert!(
        r.result
            .unwrap()
            .unwrap_err()
            .contains("not a watched context")
    );
    // Misaligned ranges and unmapped memory are the kernel's (or our) refusal, not a kill.
    let iso = ProcessIsolation::new(watched()).unwrap();
    let r = iso
        .run_closure(|| {
            let a = uffd_watch::watch(0x1001, 0x1000).map_err(|e| e.to_string());
            let b = uffd_watch::watch(0x1000, 0x1000).map_err(|e| e.to_string());
            (uffd_watch::is_watched(), a, b)
        })
        .unwrap();
    let (is, a, b) = r.result.unwrap();
    assert!(is);
    assert!(a.unwrap_err().contains("page-aligned"));
    assert!(b.unwrap_err().contains("UFFDIO_REGISTER"));
    assert!(r.outcome.violations.is_empty());
    // Commands cannot be watched.
    assert!(matches!(
        iso.spawn_command(&Command::new("/bin/true")),
        Err(ProcessError::InvalidConfig(_))
    ));
}

// ---------------------------------------------------------------------------------------
// Memory pressure: a PSI trigger on the context's memory.pressure (cgroup v2; the VM tier).

fn memory_controller() -> bool {
    let cg = &nebula_memory::features().cgroup_v2;
    common::require(cg.available, "needs cgroup v2 (nebula-ctl probe)")
        && common::require(
            cg.controllers.get("memory").is_some_and(|a| a.available),
            "needs the cgroup v2 memory controller",
        )
}

/// `memory.high` of 8 MiB, no swap, and a workload that keeps touching 64 MiB: throttled
/// for ever (memory.high never kills), which is what the PSI watch is for.
fn throttled(watch: MemoryPressureWatch, wall: Duration) -> ProcessConfig {
    let mut c = ProcessConfig::new()
        .cgroup(CgroupUse::Required)
        .memory_high(8 << 20)
        .memory_pressure(watch)
        .output(Stdio::Capture, Stdio::Capture)
        .wall_time(wall);
    let swap = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    if swap.lines().count() > 1 {
        c.limits.memory_swap_max = Some(0);
    }
    c
}

fn hog() -> u64 {
    let mut v = vec![0u8; 64 << 20];
    let mut rounds = 0u64;
    loop {
        for i in (0..v.len()).step_by(4096) {
            v[i] = v[i].wrapping_add(1);
        }
        rounds += 1;
        if std::hint::black_box(rounds) == u64::MAX {
            return rounds;
        }
    }
}

fn pressure(v: &ViolationInfo) -> Option<bool> {
    match v.kind {
        ViolationKind::MemoryPressure { killed, .. } => Some(killed),
        _ => None,
    }
}

#[test]
fn sustained_memory_pressure_is_reported_then_kills() {
    if !ready() || !memory_controller() {
        return;
    }
    let watch = MemoryPressureWatch {
        kind: PsiKind::Some,
        stall: Duration::from_millis(200),
        window: Duration::from_secs(2),
        kill_after: Some(Duration::from_secs(1)),
    };
    let iso = ProcessIsolation::new(throttled(watch, Duration::from_secs(300))).unwrap();
    let r = iso.run_closure(hog).unwrap();
    let o = &r.outcome;
    assert_eq!(
        r.result,
        Err(ClosureError::Died(ExitStatus::Signaled {
            signal: libc::SIGKILL,
            core_dumped: false
        })),
        "{o:?}"
    );
    assert!(!o.timed_out && !o.oom_killed, "{o:?}");
    // The kernel throttled it at memory.high (memory.events high) ...
    assert!(o.memory_high_events > 0, "{o:?}");
    // ... the trigger fired at least twice (first report, then the kill a window later) ...
    assert!(o.memory_pressure_events >= 2, "{o:?}");
    let kinds: Vec<Option<bool>> = o.violations.iter().map(pressure).collect();
    assert_eq!(kinds, vec![Some(false), Some(true)], "{:?}", o.violations);
    assert!(o.violations.iter().all(|v| v.pid == Some(o.pid)));
    // ... and the kill came a window or more after the first report.
    let gap = o.violations[1]
        .timestamp
        .duration_since(o.violations[0].timestamp)
        .unwrap();
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
}

#[test]
fn memory_pressure_is_reported_while_the_context_runs() {
    if !ready() || !memory_controller() {
        return;
    }
    let watch = MemoryPressureWatch {
        kind: PsiKind::Some,
        stall: Duration::from_millis(200),
        window: Duration::from_secs(2),
        kill_after: None,
    };
    let fired: Arc<Mutex<Vec<(Instant, ViolationKind)>>> = Arc::default();
    let f2 = Arc::clone(&fired);
    let wall = Duration::from_secs(20);
    let iso = ProcessIsolation::new(
        throttled(watch, wall)
            .on_violation(move |v| f2.lock().unwrap().push((Instant::now(), v.kind.clone()))),
    )
    .unwrap();
    let r = iso.run_closure(hog).unwrap();
    let ended = Instant::now();
    let o = &r.outcome;
    // Report only: the wall-clock limit ends it; one pressure report, delivered while the
    // context was still running (well before it ended).
    assert!(o.timed_out, "{o:?}");
    let kinds: Vec<ViolationKind> = o.violations.iter().map(|v| v.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            ViolationKind::MemoryPressure {
                stall_us: 200_000,
                window_us: 2_000_000,
                killed: false
            },
            ViolationKind::TimeLimit
        ]
    );
    let fired = fired.lock().unwrap();
    assert_eq!(fired.len(), 2);
    assert!(matches!(fired[0].1, ViolationKind::MemoryPressure { .. }));
    assert!(
        ended - fired[0].0 >= Duration::from_secs(2),
        "{:?}",
        ended - fired[0].0
    );
    assert!(o.memory_high_events > 0, "{o:?}");
}

#[test]
fn a_pressure_watch_without_cgroup_v2_is_unsupported() {
    if nebula_memory::features().cgroup_v2.available {
        return; // the VM tier has it: nothing to refuse there
    }
    let watch = MemoryPressureWatch {
        kind: PsiKind::Some,
        stall: Duration::from_millis(200),
        window: Duration::from_secs(2),
        kill_after: None,
    };
    let e = ProcessIsolation::new(ProcessConfig::new().memory_pressure(watch)).unwrap_err();
    assert!(matches!(e, ProcessError::Unsupported { .. }), "{e}");
}
