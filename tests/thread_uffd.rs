//! userfaultfd: frozen (write-protected, shmem) regions and lazily populated regions with a
//! page budget, on the host. Each body runs in a re-executed child: the uffd service thread
//! and the violation core are process-wide, and a refused writer stays parked for good.

mod common;

use common::{in_helper, mark, run_helper, say};

use std::process::Output;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nebula_memory::uffd::{FrozenRegion, LazyRegion, Userfaultfd, WritePolicy};
use nebula_memory::violation::{self, ViolationInfo, ViolationKind};

fn available() -> bool {
    common::require(
        nebula_memory::features().userfaultfd.available,
        "needs userfaultfd",
    )
}

fn check(o: &Output) {
    assert!(
        o.status.success(),
        "helper failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        mark(o, "done").as_deref(),
        Some("1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn tid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// Collects delivered violations.
fn collect() -> Arc<Mutex<Vec<ViolationInfo>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    violation::set_violation_handler(move |info| s.lock().unwrap().push(info.clone()));
    seen
}

#[test]
fn the_wrapper_reports_the_kernels_feature_mask() {
    if !available() {
        return;
    }
    let uffd = Userfaultfd::open(u64::MAX).unwrap();
    let probe = &nebula_memory::features().userfaultfd;
    assert_eq!(uffd.available_features(), probe.api_features);
    // Asking for everything enables exactly what the kernel has, minus nothing.
    assert_eq!(uffd.enabled_features() & !uffd.available_features(), 0);
    assert!(
        !uffd.poll(0).unwrap(),
        "nothing is registered, nothing is pending"
    );
    assert_eq!(uffd.read_event().unwrap(), None);
}

#[test]
fn a_write_to_a_frozen_region_is_reported_with_the_writers_thread_id_then_allowed() {
    if !available() {
        return;
    }
    let o = run_helper("helper_frozen_audit");
    check(&o);
    assert_eq!(mark(&o, "kind").as_deref(), Some("WriteToFrozen"));
    assert_eq!(mark(&o, "report_tid"), mark(&o, "writer_tid"));
    assert_eq!(
        mark(&o, "report_addr"),
        mark(&o, "write_addr"),
        "exact address"
    );
    assert_eq!(
        mark(&o, "after").as_deref(),
        Some("X"),
        "the audited write landed"
    );
}

#[test]
#[ignore = "helper: run by a_write_to_a_frozen_region_is_reported_with_the_writers_thread_id_then_allowed"]
fn helper_frozen_audit() {
    if !in_helper() {
        return;
    }
    let seen = collect();
    let region = FrozenRegion::new(&[b'a'; 10_000], WritePolicy::Audit, None).unwrap();
    let writer = AtomicI32::new(0);
    let addr = region.start() + 5000;
    std::thread::scope(|s| {
        s.spawn(|| {
            writer.store(tid(), Ordering::Relaxed);
            region.write_violating(5000, b"X").unwrap();
        });
    });
    assert!(violation::flush(Duration::from_secs(5)));
    let v = {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        seen[0].clone()
    };
    assert_eq!(region.writes_reported(), 1);
    assert_eq!(region.thawed_pages(), 1);
    say("kind", format!("{:?}", v.kind));
    say("report_tid", v.thread_id.unwrap());
    say("writer_tid", writer.load(Ordering::Relaxed));
    say("report_addr", format!("{:#x}", v.address.unwrap()));
    say("write_addr", format!("{addr:#x}"));
    assert_eq!(v.region, Some(region.start()));
    let mut b = [0u8; 1];
    region.read(5000, &mut b).unwrap();
    say("after", b[0] as char);
    // Refreezing protects the thawed page again: the next write is reported too.
    region.refreeze().unwrap();
    region.write_violating(5001, b"Y").unwrap();
    assert!(violation::flush(Duration::from_secs(5)));
    assert_eq!(region.writes_reported(), 2);
    say("done", 1);
}

#[test]
fn a_refused_write_parks_the_writer_and_the_data_stays_unchanged() {
    if !available() {
        return;
    }
    let o = run_helper("helper_frozen_refuse");
    check(&o);
    // The kernel's view of the writer: sleeping in handle_userfault.
    assert_eq!(mark(&o, "state").as_deref(), Some("S"));
    assert_eq!(mark(&o, "wchan").as_deref(), Some("handle_userfault"));
    assert_eq!(mark(&o, "report_tid"), mark(&o, "writer_tid"));
    assert_eq!(mark(&o, "parked_tid"), mark(&o, "writer_tid"));
    assert_eq!(mark(&o, "data").as_deref(), Some("secret"));
}

#[test]
#[ignore = "helper: run by a_refused_write_parks_the_writer_and_the_data_stays_unchanged"]
fn helper_frozen_refuse() {
    if !in_helper() {
        return;
    }
    let seen = collect();
    let region: &'static FrozenRegion = Box::leak(Box::new(
        FrozenRegion::new(b"secret", WritePolicy::Refuse, None).unwrap(),
    ));
    // MADV_DONTNEED first: on shmem the write protection survives it.
    region.discard_pages().unwrap();
    let writer = Arc::new(AtomicI32::new(0));
    let w = Arc::clone(&writer);
    std::thread::spawn(move || {
        w.store(tid(), Ordering::SeqCst);
        let _ = region.write_violating(0, b"XXXXXX");
        say("writer_returned", 1);
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while region.parked_writers().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no parked writer");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(violation::flush(Duration::from_secs(5)));
    let t = writer.load(Ordering::SeqCst);
    say("writer_tid", t);
    say("parked_tid", region.parked_writers()[0].0);
    say("report_tid", seen.lock().unwrap()[0].thread_id.unwrap());
    std::thread::sleep(Duration::from_millis(50));
    let stat = std::fs::read_to_string(format!("/proc/self/task/{t}/stat")).unwrap();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    say("state", state);
    say(
        "wchan",
        std::fs::read_to_string(format!("/proc/self/task/{t}/wchan")).unwrap(),
    );
    let mut b = [0u8; 6];
    region.read(0, &mut b).unwrap();
    say("data", String::from_utf8_lossy(&b));
    say("done", 1);
    // The parked writer dies with the process (exit_group is a fatal signal for it).
    std::process::exit(0);
}

#[test]
fn a_lazy_region_reports_the_page_past_its_budget() {
    if !available() {
        return;
    }
    let o = run_helper("helper_lazy_budget");
    check(&o);
    assert_eq!(mark(&o, "populated").as_deref(), Some("5"));
    assert_eq!(
        mark(&o, "kind").as_deref(),
        Some("PageBudgetExceeded { budget: 4 }")
    );
    assert_eq!(mark(&o, "report_tid"), mark(&o, "toucher_tid"));
    assert_eq!(mark(&o, "refused_parked").as_deref(), Some("1"));
}

#[test]
#[ignore = "helper: run by a_lazy_region_reports_the_page_past_its_budget"]
fn helper_lazy_budget() {
    if !in_helper() {
        return;
    }
    let seen = collect();
    let page = nebula_memory::page_size();
    let lazy = LazyRegion::new(16 * page, 4, WritePolicy::Audit, None).unwrap();
    assert_eq!(lazy.populated_pages(), 0);
    for i in 0..4 {
        lazy.write(i * page, &[1]).unwrap();
        lazy.write(i * page + 7, &[2]).unwrap();
    }
    // Touching a populated page again costs nothing.
    let mut b = [0u8; 1];
    lazy.read(3 * page + 7, &mut b).unwrap();
    assert_eq!(b[0], 2);
    assert_eq!(lazy.populated_pages(), 4);
    assert!(violation::flush(Duration::from_secs(5)));
    assert!(seen.lock().unwrap().is_empty(), "within budget: no report");
    let toucher = AtomicI32::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            toucher.store(tid(), Ordering::Relaxed);
            lazy.write(9 * page, &[3]).unwrap();
        });
    });
    assert!(violation::flush(Duration::from_secs(5)));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        say("kind", format!("{:?}", seen[0].kind));
        say("report_tid", seen[0].thread_id.unwrap());
        assert_eq!(seen[0].address, Some(lazy.start() + 9 * page));
    }
    say("toucher_tid", toucher.load(Ordering::Relaxed));
    say("populated", lazy.populated_pages());
    assert_eq!(lazy.overruns_reported(), 1);
    // Refuse: the toucher past the budget is parked.
    let refusing: &'static LazyRegion = Box::leak(Box::new(
        LazyRegion::new(4 * page, 1, WritePolicy::Refuse, None).unwrap(),
    ));
    refusing.write(0, &[1]).unwrap();
    std::thread::spawn(move || {
        let _ = refusing.write(page, &[1]);
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refusing.parked_threads().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no parked thread");
        std::thread::sleep(Duration::from_millis(5));
    }
    say("refused_parked", refusing.parked_threads().len());
    drop(lazy);
    say("done", 1);
    std::process::exit(0);
}

#[test]
fn frozen_and_lazy_regions_leave_no_mapping_or_fd_behind() {
    if !available() {
        return;
    }
    let o = run_helper("helper_uffd_cycles");
    check(&o);
    assert_eq!(mark(&o, "maps_delta").as_deref(), Some("0"));
    assert_eq!(mark(&o, "fds_delta").as_deref(), Some("0"));
}

#[test]
#[ignore = "helper: run by frozen_and_lazy_regions_leave_no_mapping_or_fd_behind"]
fn helper_uffd_cycles() {
    if !in_helper() {
        return;
    }
    let maps = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count()
    };
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    // Warm up: the service thread has run (its stack and signal stack are mapped) once a
    // fault was served.
    drop(FrozenRegion::new(b"x", WritePolicy::Audit, None).unwrap());
    let warm = LazyRegion::new(8192, 2, WritePolicy::Audit, None).unwrap();
    warm.write(0, &[1]).unwrap();
    drop(warm);
    let (m0, f0) = (maps(), fds());
    for i in 0..2000u32 {
        let f = FrozenRegion::new(&i.to_ne_bytes(), WritePolicy::Audit, None).unwrap();
        let mut b = [0u8; 4];
        f.read(0, &mut b).unwrap();
        assert_eq!(b, i.to_ne_bytes());
        let l = LazyRegion::new(8192, 2, WritePolicy::Audit, None).unwrap();
        l.write(0, &[1]).unwrap();
    }
    let m1 = maps();
    if m1 != m0 {
        eprintln!("{}", std::fs::read_to_string("/proc/self/maps").unwrap());
    }
    say("maps_delta", m1 as i64 - m0 as i64);
    say("fds_delta", fds() as i64 - f0 as i64);
    let _ = ViolationKind::WriteToFrozen;
    say("done", 1);
}
