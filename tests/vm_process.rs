//! Process contexts with cgroup v2, VM tier: `memory.max` OOM reported as an OOM kill with
//! `memory.peak`, `pids.max` hits counted, the wall-clock limit via `cgroup.kill`, the CPU-time
//! limit, `clone3(CLONE_INTO_CGROUP)` placement, and nothing left under nebula's root.
//!
//! Every test is ignored by default: it needs root and cgroup v2 at `/sys/fs/cgroup`, which the
//! VM tier provides (`make vm-test` runs this binary with `--include-ignored`). Each test
//! checks `features().cgroup_v2` first; on a cgroup v1 or hybrid host it says `skipped:` and
//! touches nothing (under `NEBULA_TEST_REQUIRE=all` that is a failure). Under TCG everything
//! is 10 to 50 times slower: deadlines are generous.

mod common;

use std::time::Duration;

use nebula_memory::cgroup::CpuMax;
use nebula_memory::isolation::process::{
    CgroupUse, ClosureError, Command, Namespaces, ProcessConfig, ProcessIsolation, Stdio,
};
use nebula_memory::violation::ViolationKind;

fn cgroup_ready() -> bool {
    let f = nebula_memory::features();
    common::require(
        f.cgroup_v2.available,
        "needs cgroup v2 with the memory controller: runs in the VM tier (make vm-test)",
    ) && common::require(common::is_root(), "needs root to create cgroups")
}

fn config() -> ProcessConfig {
    ProcessConfig::new()
        .cgroup(CgroupUse::Required)
        .output(Stdio::Capture, Stdio::Capture)
        .wall_time(Duration::from_secs(120))
}

/// No leaf of this test process is left under nebula's root.
fn assert_nothing_left(iso: &ProcessIsolation) {
    let root = iso.cgroup_root().expect("cgroups are used");
    let mine = format!("ctx-{}-", std::process::id());
    let left: Vec<String> = root
        .leaves()
        .unwrap()
        .into_iter()
        .filter(|l| l.starts_with(&mine))
        .collect();
    assert!(
        left.is_empty(),
        "leaves left under {}: {left:?}",
        root.path().display()
    );
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn memory_max_oom_is_reported_as_an_oom_kill() {
    if !cgroup_ready() {
        return;
    }
    const MAX: u64 = 32 << 20;
    let mut c = config().memory_max(MAX);
    c.limits.memory_swap_max = Some(0);
    let iso = ProcessIsolation::new(c).unwrap();
    let r = iso
        .run_closure(|| {
            let mut v: Vec<u8> = Vec::with_capacity(128 << 20);
            // Touch every page: the memory is charged only when it is written.
            for _ in 0..(128 << 20) / 4096 {
                v.extend_from_slice(&[1u8; 4096]);
            }
            v.len()
        })
        .unwrap();
    let o = &r.outcome;
    assert!(
        matches!(r.result, Err(ClosureError::Died(_))),
        "{:?}",
        r.result
    );
    assert!(o.oom_killed, "{o:?}");
    assert!(o.oom_kills >= 1);
    assert_eq!(o.status.signal(), Some(9), "{o:?}");
    assert!(!o.timed_out);
    let peak = o.memory_peak.expect("memory.peak (Linux 5.19+)");
    assert!(
        (MAX - (4 << 20)..=MAX + (1 << 20)).contains(&peak),
        "peak {peak}"
    );
    assert!(
        o.violations.iter().any(|v| v.kind
            == ViolationKind::OutOfMemory {
                memory_max: Some(MAX)
            }),
        "{:?}",
        o.violations
    );
    assert!(!o.cgroup.as_ref().unwrap().exists(), "the leaf was removed");
    assert_nothing_left(&iso);
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn pids_max_hits_are_counted() {
    if !cgroup_ready() {
        return;
    }
    let iso = ProcessIsolation::new(config().pids_max(6)).unwrap();
    let o = iso
        .run_command(
            &Command::new("/bin/sh")
                .arg("-c")
                .arg("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 2 & done; wait; true"),
        )
        .unwrap();
    assert!(o.pids_limit_hits > 0, "{o:?}");
    assert!(!o.oom_killed);
    assert!(o.violations.iter().any(
        |v| matches!(v.kind, ViolationKind::PidsLimit { refused } if refused == o.pids_limit_hits)
    ));
    assert_nothing_left(&iso);
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn the_wall_clock_limit_kills_the_whole_cgroup() {
    if !cgroup_ready() {
        return;
    }
    let iso = ProcessIsolation::new(config().wall_time(Duration::from_millis(800))).unwrap();
    let o = iso
        .run_command(
            &Command::new("/bin/sh")
                .arg("-c")
                .arg("sleep 100 & sleep 100 & sleep 100"),
        )
        .unwrap();
    assert!(o.timed_out, "{o:?}");
    assert!(!o.oom_killed, "a timeout kill is not an OOM kill");
    assert_eq!(o.status.signal(), Some(9));
    assert!(
        o.violations
            .iter()
            .any(|v| v.kind == ViolationKind::TimeLimit)
    );
    assert!(!o.cgroup.as_ref().unwrap().exists());
    assert_nothing_left(&iso);
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn clone_into_cgroup_places_the_context_in_its_leaf() {
    if !cgroup_ready() {
        return;
    }
    // Without a cgroup namespace the context sees its leaf's real path.
    let c = config().namespaces(Namespaces::all() - Namespaces::CGROUP);
    let iso = ProcessIsolation::new(c).unwrap();
    let o = iso
        .run_command(&Command::new("/bin/cat").arg("/proc/self/cgroup"))
        .unwrap();
    let text = o.stdout_text();
    let path = text
        .trim()
        .strip_prefix("0::")
        .unwrap_or_else(|| panic!("{text:?}"));
    let leaf = o.cgroup.as_ref().unwrap();
    assert!(
        leaf.ends_with(path.trim_start_matches('/')),
        "{path} is not {}",
        leaf.display()
    );
    assert!(path.contains("/nebula/ctx-"), "{path}");
    // With one, its leaf is its root.
    let iso = ProcessIsolation::new(config()).unwrap();
    let o = iso
        .run_command(&Command::new("/bin/cat").arg("/proc/self/cgroup"))
        .unwrap();
    assert_eq!(o.stdout_text().trim(), "0::/");
    assert!(o.cpu_time > Duration::ZERO, "cpu.stat usage of the context");
    assert!(o.memory_peak.is_some_and(|p| p > 0));
    assert_nothing_left(&iso);
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn the_cpu_time_limit_is_enforced_with_cpu_stat() {
    if !cgroup_ready() {
        return;
    }
    let iso = ProcessIsolation::new(config().cpu_time(Duration::from_secs(1))).unwrap();
    let r = iso
        .run_closure(|| -> u64 {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
        .unwrap();
    assert!(
        matches!(r.result, Err(ClosureError::Died(_))),
        "{:?}",
        r.result
    );
    let o = &r.outcome;
    assert!(o.cpu_time_exceeded, "{o:?}");
    assert!(o.cpu_time >= Duration::from_millis(900), "{:?}", o.cpu_time);
    assert!(!o.timed_out);
    assert_nothing_left(&iso);
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn a_cpu_hog_is_held_at_cpu_max() {
    if !cgroup_ready() {
        return;
    }
    let mut c = config().wall_time(Duration::from_secs(3));
    c.limits.cpu_max = Some(CpuMax::from_fraction(0.2).unwrap());
    let iso = ProcessIsolation::new(c).unwrap();
    let r = iso
        .run_closure(|| -> u64 {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
        .unwrap();
    let o = &r.outcome;
    assert!(o.timed_out, "{o:?}");
    // cpu.stat usage of the whole context over the wall time: about 0.2 (one CPU's worth of
    // quota is 20 ms per 100 ms period).
    let share = o.cpu_time.as_secs_f64() / o.wall_time.as_secs_f64();
    assert!(
        (0.05..=0.35).contains(&share),
        "cpu share {share:.3} ({o:?})"
    );
    assert!(!o.cpu_time_exceeded);
    assert_nothing_left(&iso);
}
