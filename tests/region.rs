//! Region contexts: accounting under contention, every error path, hierarchy, and no
//! mapping left behind.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use nebula_memory::IsolationError;
use nebula_memory::isolation::{IsolatedContext, MemoryIsolation, Permissions};

fn maps_lines() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// Runs `f` on `n` threads released together; returns their results.
fn race<T: Send + 'static>(
    n: usize,
    ctx: &Arc<IsolatedContext>,
    f: fn(&IsolatedContext, usize) -> T,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|t| {
            let (ctx, barrier) = (Arc::clone(ctx), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                f(&ctx, t)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn many_threads_get_disjoint_spans_and_exact_accounting() {
    let iso = MemoryIsolation::new();
    let ctx = Arc::new(
        iso.create_context()
            .with_memory_limit(64 << 20)
            .build()
            .unwrap(),
    );
    let per_thread = race(8, &ctx, |ctx, t| {
        let mut spans = Vec::new();
        let mut slices = Vec::new();
        let fill = u8::try_from(t + 1).unwrap();
        for i in 0..2000 {
            let size = 1 + (i * 7 + t) % 200;
            let s = ctx.alloc_slice(size).unwrap();
            s.fill(fill);
            spans.push((s.as_ptr() as usize, size));
            slices.push(s);
        }
        // Another thread writing into one of our spans would show up here.
        for s in &slices {
            assert!(
                s.iter().all(|&b| b == fill),
                "a span of thread {t} was overwritten"
            );
        }
        spans
    });
    let mut spans: Vec<(usize, usize)> = per_thread.into_iter().flatten().collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "spans overlap: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    for &(addr, size) in &spans {
        assert!(ctx.region().contains(addr, size));
        assert_eq!(addr % 16, 0);
    }
    let expected: u64 = spans
        .iter()
        .map(|&(_, s)| s.next_multiple_of(16) as u64)
        .sum();
    let st = ctx.stats();
    assert_eq!(st.allocations, 16_000);
    assert_eq!(st.memory_used, expected);
    assert_eq!(st.region_used, expected);
}

#[test]
fn memory_limit_holds_under_contention() {
    let iso = MemoryIsolation::new();
    let ctx = Arc::new(
        iso.create_context()
            .with_memory_limit(1 << 20)
            .with_region_size(4 << 20)
            .build()
            .unwrap(),
    );
    let counts = race(8, &ctx, |ctx, _| {
        let mut ok = 0u64;
        loop {
            match ctx.allocate(64) {
                Ok(_) => ok += 1,
                Err(IsolationError::LimitExceeded {
                    limit: "memory",
                    max,
                    ..
                }) => {
                    assert_eq!(max, 1 << 20);
                    return ok;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    });
    let total: u64 = counts.iter().sum();
    assert_eq!(total * 64, 1 << 20, "exactly the budget was handed out");
    assert_eq!(ctx.stats().memory_used, 1 << 20);
    assert_eq!(ctx.stats().allocations, total);
}

#[test]
fn allocation_limit_holds_under_contention() {
    let iso = MemoryIsolation::new();
    let ctx = Arc::new(
        iso.create_context()
            .with_max_allocations(1000)
            .build()
            .unwrap(),
    );
    let counts = race(8, &ctx, |ctx, _| {
        let mut ok = 0u64;
        while ctx.allocate(16).is_ok() {
            ok += 1;
        }
        ok
    });
    assert_eq!(counts.iter().sum::<u64>(), 1000);
    let st = ctx.stats();
    assert_eq!(st.allocations, 1000);
    assert_eq!(st.memory_used, 16_000);
    assert_eq!(st.refused, 8);
}

#[test]
fn memory_limit_error_leaves_nothing_charged() {
    let iso = MemoryIsolation::new();
    let ctx = iso
        .create_context()
        .with_memory_limit(4096)
        .build()
        .unwrap();
    ctx.allocate(4000).unwrap();
    let before = ctx.stats();
    match ctx.allocate(200) {
        Err(IsolationError::LimitExceeded {
            context,
            limit: "memory",
            requested: 208,
            used: 4000,
            max: 4096,
        }) => {
            assert_eq!(context, ctx.id())
        }
        other => panic!("expected memory LimitExceeded, got {other:?}"),
    }
    let after = ctx.stats();
    assert_eq!(
        (after.memory_used, after.allocations, after.region_used),
        (before.memory_used, before.allocations, before.region_used)
    );
    assert_eq!(after.refused, 1);
    // What still fits is still handed out.
    ctx.allocate(96).unwrap();
    assert_eq!(ctx.stats().memory_used, 4096);
}

#[test]
fn allocation_count_limit() {
    let iso = MemoryIsolation::new();
    let ctx = iso
        .create_context()
        .with_max_allocations(3)
        .build()
        .unwrap();
    for _ in 0..3 {
        ctx.allocate(1).unwrap();
    }
    assert!(matches!(
        ctx.allocate(1),
        Err(IsolationError::LimitExceeded {
            limit: "allocations",
            requested: 1,
            used: 3,
            max: 3,
            ..
        })
    ));
    assert_eq!(ctx.stats().memory_used, 48);
}

#[test]
fn permission_denied_without_write() {
    let iso = MemoryIsolation::new();
    let ctx = iso
        .create_context()
        .with_permissions(Permissions::READ)
        .build()
        .unwrap();
    let err = ctx.allocate(8).unwrap_err();
    assert!(
        matches!(
            err,
            IsolationError::PermissionDenied {
                needed: "WRITE",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("permission denied"));
    assert_eq!(ctx.stats().allocations, 0);
}

#[test]
fn out_of_memory_when_the_region_is_smaller_than_the_budget() {
    let iso = MemoryIsolation::new();
    let ctx = iso
        .create_context()
        .with_memory_limit(1 << 30)
        .with_region_size(8192)
        .build()
        .unwrap();
    assert_eq!(ctx.stats().region_size, 8192);
    ctx.allocate(8000).unwrap();
    let err = ctx.allocate(500).unwrap_err();
    match &err {
        IsolationError::OutOfMemory {
            requested: 512,
            available: 192,
            capacity: 8192,
            ..
        } => {}
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    assert!(
        err.to_string().contains("raise the context's region size"),
        "the message names the fix: {err}"
    );
    let st = ctx.stats();
    assert_eq!(
        (st.memory_used, st.allocations, st.region_used),
        (8000, 1, 8000)
    );
}

#[test]
fn bad_requests_and_configurations_are_refused() {
    let iso = MemoryIsolation::new();
    let ctx = iso.create_context().build().unwrap();
    assert!(matches!(
        ctx.allocate(0),
        Err(IsolationError::InvalidConfig(_))
    ));
    assert!(matches!(
        ctx.allocate_aligned(8, 24),
        Err(IsolationError::InvalidConfig(_))
    ));
    assert!(matches!(
        ctx.allocate(usize::MAX),
        Err(IsolationError::OutOfMemory { .. })
    ));
    assert!(matches!(
        ctx.allocate(usize::MAX - 8),
        Err(IsolationError::OutOfMemory { .. })
    ));
    assert_eq!(ctx.stats().memory_used, 0);
    for builder in [
        iso.create_context().with_memory_limit(0),
        iso.create_context().with_region_size(0),
        iso.create_context().with_max_allocations(0),
    ] {
        assert!(matches!(
            builder.build(),
            Err(IsolationError::InvalidConfig(_))
        ));
    }
    let ro = iso
        .create_context()
        .with_permissions(Permissions::READ)
        .build()
        .unwrap();
    let err = iso.create_context().with_parent(&ro).build().unwrap_err();
    assert!(
        err.to_string().contains("never gets more than its parent"),
        "{err}"
    );
    let huge = iso
        .create_context()
        .with_region_size(1 << 62)
        .build()
        .unwrap_err();
    assert!(
        matches!(huge, IsolationError::InvalidConfig(_)) && huge.to_string().contains("1 TiB"),
        "{huge}"
    );
}

#[test]
fn aligned_allocations_are_aligned_and_padding_is_charged() {
    let iso = MemoryIsolation::new();
    let ctx = iso.create_context().build().unwrap();
    ctx.allocate(16).unwrap();
    let p = ctx.allocate_aligned(100, 4096).unwrap();
    assert_eq!(p.as_ptr() as usize % 4096, 0);
    let st = ctx.stats();
    assert_eq!(
        st.memory_used, st.region_used,
        "padding is charged like the bytes it wastes"
    );
    assert_eq!(st.region_used, 4096 + 112);
}

#[test]
fn children_charge_their_ancestors() {
    let iso = MemoryIsolation::new();
    let root = iso
        .create_context()
        .with_memory_limit(64 * 1024)
        .build()
        .unwrap();
    let mid = iso
        .create_context()
        .with_parent(&root)
        .with_memory_limit(1 << 20)
        .build()
        .unwrap();
    let leaf = iso.create_context().with_parent(&mid).build().unwrap();
    leaf.allocate(16 * 1024).unwrap();
    mid.allocate(16 * 1024).unwrap();
    root.allocate(16 * 1024).unwrap();
    assert_eq!(leaf.stats().memory_used, 16 * 1024);
    assert_eq!(mid.stats().memory_used, 32 * 1024);
    assert_eq!(root.stats().memory_used, 48 * 1024);
    // The leaf's and mid's own limits allow it; the root's budget does not.
    let err = leaf.allocate(20 * 1024).unwrap_err();
    assert!(
        matches!(err, IsolationError::LimitExceeded { context, .. } if context == root.id()),
        "{err}"
    );
    assert_eq!(
        (
            leaf.stats().memory_used,
            mid.stats().memory_used,
            root.stats().memory_used
        ),
        (16384, 32768, 49152)
    );
    // A parent dropped before its child: its own bytes leave every budget, the child's stay.
    let extra = iso.create_context().with_parent(&mid).build().unwrap();
    let grandchild = iso.create_context().with_parent(&extra).build().unwrap();
    extra.allocate(1024).unwrap();
    grandchild.allocate(2048).unwrap();
    assert_eq!(root.stats().memory_used, 48 * 1024 + 3072);
    drop(extra);
    assert_eq!(root.stats().memory_used, 48 * 1024 + 2048);
    drop(grandchild);
    drop(leaf);
    assert_eq!(mid.stats().memory_used, 16 * 1024);
    assert_eq!(root.stats().memory_used, 32 * 1024);
    let mut mid = mid;
    mid.reset().unwrap();
    assert_eq!(root.stats().memory_used, 16 * 1024);
}

#[test]
fn reset_restarts_accounting_and_release_zeroes() {
    let iso = MemoryIsolation::new();
    let mut ctx = iso
        .create_context()
        .with_max_allocations(2)
        .build()
        .unwrap();
    let first = {
        let s = ctx.alloc_slice(8192).unwrap();
        s.fill(0x5A);
        s.as_ptr() as usize
    };
    ctx.allocate(1).unwrap();
    assert!(ctx.allocate(1).is_err());
    ctx.reset().unwrap();
    let st = ctx.stats();
    assert_eq!((st.memory_used, st.allocations, st.region_used), (0, 0, 0));
    let s = ctx.alloc_slice(8192).unwrap();
    assert_eq!(
        s.as_ptr() as usize,
        first,
        "the region is reused from its start"
    );
    assert!(
        s.iter().all(|&b| b == 0x5A),
        "reset keeps the pages (and this context's bytes)"
    );
    ctx.reset_and_release().unwrap();
    let s = ctx.alloc_slice(8192).unwrap();
    assert_eq!(s.as_ptr() as usize, first);
    assert!(
        s.iter().all(|&b| b == 0),
        "reset_and_release gives back zeroed pages"
    );
}

#[test]
fn execute_sets_the_current_context_and_reports_overruns() {
    let iso = MemoryIsolation::new();
    let ctx = iso
        .create_context()
        .with_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    assert_eq!(IsolatedContext::current(), None);
    let seen = ctx
        .execute(|c| (IsolatedContext::current(), c.allocate(10).is_ok()))
        .unwrap();
    assert_eq!(seen, (Some(ctx.id()), true));
    assert_eq!(IsolatedContext::current(), None);
    let err = ctx
        .execute(|_| std::thread::sleep(Duration::from_millis(60)))
        .unwrap_err();
    assert!(
        matches!(err, IsolationError::DeadlineExceeded { limit, elapsed, .. } if elapsed > limit),
        "{err}"
    );
    let err = ctx.execute(|_| panic!("tenant bug")).unwrap_err();
    assert!(
        matches!(&err, IsolationError::ThreadPanicked(m) if m == "tenant bug"),
        "{err}"
    );
    assert_eq!(
        IsolatedContext::current(),
        None,
        "the current context is restored after a panic"
    );
}

#[test]
fn dropped_contexts_are_not_found() {
    let iso = MemoryIsolation::new();
    let ctx = iso.create_context().with_name("tenant-a").build().unwrap();
    let id = ctx.id();
    assert_eq!(iso.context_stats(id).unwrap().name, "tenant-a");
    assert_eq!(iso.contexts(), vec![id]);
    drop(ctx);
    assert!(matches!(iso.context_stats(id), Err(IsolationError::ContextNotFound(x)) if x == id));
    assert!(iso.contexts().is_empty());
}

#[test]
fn ten_thousand_create_drop_cycles_leave_no_mapping() {
    let iso = MemoryIsolation::new();
    // Warm up allocator and thread-local state so they do not count as leaks.
    for _ in 0..10 {
        iso.create_context().build().unwrap().allocate(100).unwrap();
    }
    let before = maps_lines();
    for i in 0..10_000 {
        let parent = iso
            .create_context()
            .with_memory_limit(1 << 20)
            .build()
            .unwrap();
        let child = iso.create_context().with_parent(&parent).build().unwrap();
        child.alloc_slice(64 + i % 5000).unwrap()[0] = 1;
        assert!(parent.allocate(200_000).is_ok());
    }
    let after = maps_lines();
    // Other test threads map and unmap too; a leak here would be 20,000 regions.
    assert!(
        after <= before + 20,
        "mappings grew from {before} to {after}"
    );
    assert!(iso.contexts().is_empty());
}

/// Re-executes this test binary to run one ignored helper test in a child process.
fn run_helper(name: &str) -> std::process::ExitStatus {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NEBULA_HELPER", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
}

#[test]
fn a_write_past_the_region_hits_the_guard_page() {
    use std::os::unix::process::ExitStatusExt;
    for helper in ["helper_overrun_after_end", "helper_underrun_before_start"] {
        let status = run_helper(helper);
        assert_eq!(status.signal(), Some(libc_sigsegv()), "{helper}: {status}");
    }
}

fn libc_sigsegv() -> i32 {
    11
}

#[allow(unsafe_code)]
fn poke(ctx: &IsolatedContext, offset: isize) {
    let base = ctx.region().start().as_ptr();
    // SAFETY: none intended: a deliberate out-of-bounds write onto a PROT_NONE guard page,
    // run only in a child process that is expected to die of SIGSEGV.
    unsafe { base.offset(offset).write_volatile(1) };
}

#[test]
#[ignore = "helper: run by a_write_past_the_region_hits_the_guard_page in a child process"]
fn helper_overrun_after_end() {
    if std::env::var_os("NEBULA_HELPER").is_none() {
        return;
    }
    let iso = MemoryIsolation::new();
    let ctx = iso
        .create_context()
        .with_memory_limit(8192)
        .build()
        .unwrap();
    ctx.alloc_slice(8192).unwrap().fill(1);
    poke(&ctx, 8192);
}

#[test]
#[ignore = "helper: run by a_write_past_the_region_hits_the_guard_page in a child process"]
fn helper_underrun_before_start() {
    if std::env::var_os("NEBULA_HELPER").is_none() {
        return;
    }
    let iso = MemoryIsolation::new();
    let ctx = iso.create_context().build().unwrap();
    ctx.alloc_slice(16).unwrap()[0] = 1;
    poke(&ctx, -1);
}

#[test]
fn monitors_fire_once_per_crossing_including_for_ancestors() {
    use std::sync::Mutex;
    let iso = MemoryIsolation::new();
    let parent = iso
        .create_context()
        .with_memory_limit(100 * 1024)
        .build()
        .unwrap();
    let child = iso.create_context().with_parent(&parent).build().unwrap();
    let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let log = Arc::clone(&seen);
    parent
        .set_monitor_at(0.9, move |s| {
            log.lock().unwrap().push((s.name.clone(), s.memory_used))
        })
        .unwrap();
    parent.allocate(50 * 1024).unwrap();
    assert!(seen.lock().unwrap().is_empty());
    child.allocate(39 * 1024).unwrap(); // 89 KiB of 100: below the 90 KiB threshold
    assert!(seen.lock().unwrap().is_empty());
    child.allocate(2 * 1024).unwrap(); // 91 KiB: crosses
    child.allocate(1024).unwrap(); // still above: no second call
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls, vec![(parent.name().to_string(), 91 * 1024)]);
    assert!(
        child.set_monitor_at(0.9, |_| {}).is_err(),
        "no limit of its own"
    );
    assert!(parent.set_monitor_at(1.5, |_| {}).is_err());
    // Dropping the child falls below; crossing again fires again.
    drop(child);
    parent.allocate(1024).unwrap();
    let again = iso.create_context().with_parent(&parent).build().unwrap();
    again.allocate(45 * 1024).unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn a_terminated_context_and_its_descendants_allocate_and_run_nothing_more() {
    let iso = MemoryIsolation::new();
    let parent = iso
        .create_context()
        .with_memory_limit(1 << 20)
        .build()
        .unwrap();
    let child = iso.create_context().with_parent(&parent).build().unwrap();
    let other = iso.create_context().build().unwrap();
    parent.allocate(64).unwrap();
    iso.terminate_context(parent.id()).unwrap();
    for ctx in [&parent, &child] {
        let id = ctx.id();
        assert!(
            matches!(ctx.allocate(64), Err(IsolationError::ContextTerminated(x)) if x == id),
            "{id}"
        );
        assert!(matches!(
            ctx.execute(|_| ()),
            Err(IsolationError::ContextTerminated(x)) if x == id
        ));
    }
    assert!(matches!(
        iso.create_context().with_parent(&parent).build(),
        Err(IsolationError::ContextTerminated(x)) if x == parent.id()
    ));
    // Nothing else is touched: a context outside the tree goes on.
    other.allocate(64).unwrap();
    other.execute(|_| ()).unwrap();
    drop(other);
    let gone = nebula_memory::isolation::ContextId::new();
    assert!(matches!(
        iso.terminate_context(gone),
        Err(IsolationError::ContextNotFound(x)) if x == gone
    ));
}
