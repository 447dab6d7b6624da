//! VM tier: the cgroup v2 manager against a real kernel, asserting on what the kernel reports
//! (`memory.events`, `memory.peak`, `pids.events`, `cpu.stat`, PSI, `cgroup.events`,
//! `/proc/<pid>/cgroup`, exit signals).
//!
//! Every test is ignored by default (with a reason string): it needs root and cgroup v2 mounted at `/sys/fs/cgroup`, which
//! the VM tier provides (`make vm-test`: `tools/vm/vm-test.sh` boots a Debian 6.1 kernel with
//! every controller enabled in the root's `cgroup.subtree_control` and runs the binary with
//! `--include-ignored`). Each test first checks that `/sys/fs/cgroup` is cgroup2 (statfs
//! magic); on a cgroup v1 or hybrid host it prints `skipped:` and returns without touching
//! anything, and under `NEBULA_TEST_REQUIRE=all` that skip is a failure.
//!
//! Each test works in a nebula root of its own (`/sys/fs/cgroup/nebula-test-<test>-<pid>`),
//! so the tests may run in parallel, and each ends by checking that no leaf is left under it
//! and removing it. The CPU figure is steadier with `--test-threads=1`, as the VM tier runs.
//!
//! Children are `/bin/sh -c 'read go; ...'` (busybox in the guest): they block on stdin
//! until [`Leaf::add_process`] has moved them into the leaf, so no work happens outside it.
//! Under TCG everything is 10 to 50 times slower than native: deadlines are generous.

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nebula_memory::cgroup::{
    CGROUP2_SUPER_MAGIC, CgroupError, CgroupRoot, Controller, Leaf, Limit, PsiKind,
    parse_cpu_share, parse_size, process_cgroup, verify_cgroup2,
};
use rustix::process::Pid;

const MOUNT: &str = "/sys/fs/cgroup";
/// Deadline for anything a child must do (start, get killed, hit a limit) under TCG.
const DEADLINE: Duration = Duration::from_secs(60);

/// The gate at the start of every test: cgroup2 at /sys/fs/cgroup (statfs magic) and root.
/// Nothing under /sys/fs/cgroup is touched before this returned true.
fn cgroup2_here() -> bool {
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() || verify_cgroup2(MOUNT).is_err() {
        common::skip(
            "needs cgroup v2 at /sys/fs/cgroup (this host has cgroup v1 or hybrid there): \
             runs in the VM tier (make vm-test)",
        );
        return false;
    }
    common::require(common::is_root(), "needs root to create cgroups")
}

/// A nebula root for one test. [`TestRoot::finish`] asserts that nothing is left in it and
/// removes it; on a panic, drop removes it best effort (after the leaves, declared later,
/// were dropped and so killed and removed).
struct TestRoot(Option<CgroupRoot>);

impl TestRoot {
    fn new(test: &str, controllers: &[Controller]) -> TestRoot {
        let name = format!("nebula-test-{test}-{}", std::process::id());
        let root = CgroupRoot::open(MOUNT, &name, controllers)
            .unwrap_or_else(|e| panic!("CgroupRoot::open({MOUNT}, {name}): {}", chain(&e)));
        TestRoot(Some(root))
    }

    fn finish(mut self) {
        let root = self.0.take().unwrap();
        let path = root.path().to_owned();
        assert_eq!(
            root.leaves().unwrap(),
            Vec::<String>::new(),
            "leaves left under {}",
            path.display()
        );
        root.remove().unwrap();
        assert!(!path.exists(), "{} still exists", path.display());
    }
}

impl std::ops::Deref for TestRoot {
    type Target = CgroupRoot;
    fn deref(&self) -> &CgroupRoot {
        self.0.as_ref().unwrap()
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        if let Some(root) = self.0.take() {
            let _ = root.remove();
        }
    }
}

/// The error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Spawns `/bin/sh -c 'read go; <script>'`, moves it into `leaf`, checks with
/// `/proc/<pid>/cgroup` that the kernel put it there, then lets it go.
fn spawn_in(leaf: &Leaf, script: &str) -> Child {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("read go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn /bin/sh");
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    leaf.add_process(pid)
        .unwrap_or_else(|e| panic!("add_process: {}", chain(&e)));
    let cg = process_cgroup(Some(pid))
        .unwrap()
        .expect("a cgroup v2 line");
    assert_eq!(
        Path::new(MOUNT).join(cg.trim_start_matches('/')),
        leaf.path(),
        "/proc/{}/cgroup says {cg}",
        pid.as_raw_pid()
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"go\n")
        .expect("release the child");
    child
}

/// Waits for `child` to exit, up to `deadline`.
fn wait_child(child: &mut Child, deadline: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            t0.elapsed() < deadline,
            "child {} still running after {deadline:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Calls `f` every 20 ms until it returns `Some`, up to `deadline`.
fn eventually<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < deadline, "{what}: not within {deadline:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills what is left in `leaf`, reaps `child`, removes the leaf.
fn teardown(leaf: Leaf, mut child: Child) -> ExitStatus {
    leaf.kill().unwrap();
    leaf.wait_empty(Duration::from_secs(30)).unwrap();
    let st = wait_child(&mut child, DEADLINE);
    leaf.remove().unwrap();
    st
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn memory_max_oom_kills_and_memory_events_tells() {
    if !cgroup2_here() {
        return;
    }
    let root = TestRoot::new("oom", &[Controller::Memory]);
    let leaf = root.create_leaf("hog").unwrap();
    leaf.set_memory_max(parse_size("32M").unwrap()).unwrap();
    leaf.set_memory_swap_max(Limit::Value(0)).unwrap();
    assert_eq!(leaf.memory_max().unwrap(), Limit::Value(32 << 20));
    assert_eq!(leaf.memory_swap_max().unwrap(), Limit::Value(0));

    let t0 = Instant::now();
    // dd allocates one 64 MiB buffer and reads /dev/zero into it: every page gets touched.
    let mut child = spawn_in(
        &leaf,
        "exec dd if=/dev/zero of=/dev/null bs=67108864 count=1",
    );
    let status = wait_child(&mut child, DEADLINE);
    let died = t0.elapsed();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "expected an OOM kill, got {status:?}"
    );
    // Read before removal: this is what tells an OOM kill from any other SIGKILL.
    let ev = leaf.memory_events().unwrap();
    assert_eq!(ev.oom_kill, 1, "{ev:?}");
    assert!(ev.oom >= 1 && ev.max >= 1, "{ev:?}");
    let peak = leaf
        .memory_peak()
        .unwrap()
        .expect("memory.peak (Linux 5.19+; the VM runs 6.1)");
    assert!(
        (28 << 20..=32 << 20).contains(&peak),
        "memory.peak {peak} is not close to 32 MiB"
    );
    println!("oom: killed after {died:?}, {ev:?}, memory.peak {peak}");
    leaf.wait_empty(Duration::from_secs(30)).unwrap();
    leaf.remove().unwrap();
    root.finish();
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn pids_max_stops_a_fork_loop() {
    if !cgroup2_here() {
        return;
    }
    let root = TestRoot::new("pids", &[Controller::Pids]);
    let leaf = root.create_leaf("forker").unwrap();
    leaf.set_pids_max(Limit::Value(8)).unwrap();
    assert_eq!(leaf.pids_max().unwrap(), Limit::Value(8));
    let events = leaf.watch("pids.events").unwrap();

    let t0 = Instant::now();
    let child = spawn_in(
        &leaf,
        "i=0; while [ $i -lt 32 ]; do sleep 1000 & i=$((i+1)); done 2>/dev/null; wait",
    );
    // Woken by the kernel's notification on pids.events, not by sleeping.
    let refused = loop {
        let max = events.read_flat().unwrap()["max"];
        if max > 0 {
            break max;
        }
        assert!(t0.elapsed() < DEADLINE, "pids.events max stayed 0");
        events.wait(DEADLINE.saturating_sub(t0.elapsed())).unwrap();
    };
    let current = leaf.pids_current().unwrap();
    assert!(current <= 8, "pids.current {current} > pids.max 8");
    assert!(leaf.pids_events().unwrap().max >= refused);
    println!(
        "pids: first refusal after {:?}, pids.events max {refused}, pids.current {current}",
        t0.elapsed()
    );
    teardown(leaf, child);
    root.finish();
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn cpu_max_holds_a_busy_loop_near_its_quota() {
    if !cgroup2_here() {
        return;
    }
    let root = TestRoot::new("cpu", &[Controller::Cpu]);
    let leaf = root.create_leaf("spinner").unwrap();
    let quota = parse_cpu_share("20%").unwrap();
    leaf.set_cpu_max(quota).unwrap();
    assert_eq!(leaf.cpu_max().unwrap(), quota);
    assert_eq!(quota.to_string(), "20000 100000");

    let child = spawn_in(&leaf, "while :; do :; done");
    std::thread::sleep(Duration::from_millis(500)); // let the loop start under TCG
    let (t0, s0) = (Instant::now(), leaf.cpu_stat().unwrap());
    std::thread::sleep(Duration::from_secs(3));
    let (wall, s1) = (t0.elapsed(), leaf.cpu_stat().unwrap());
    let used = s1.usage_usec - s0.usage_usec;
    let ratio = used as f64 / wall.as_micros() as f64;
    let throttled = s1.nr_throttled.unwrap() - s0.nr_throttled.unwrap();
    println!(
        "cpu: {used} us in {wall:?} = {:.1} % of one CPU (cpu.max {quota}), \
         throttled {throttled} of {} periods",
        ratio * 100.0,
        s1.nr_periods.unwrap() - s0.nr_periods.unwrap()
    );
    teardown(leaf, child);
    assert!(
        ratio <= 0.60,
        "cpu.max 20% not enforced: {:.1} %",
        ratio * 100.0
    );
    assert!(
        ratio >= 0.10,
        "the busy loop got only {:.1} %",
        ratio * 100.0
    );
    if ratio > 0.35 {
        println!(
            "warning: {:.1} % is above the 10-35 % band (TCG noise?)",
            ratio * 100.0
        );
    }
    assert!(throttled > 0, "cpu.stat nr_throttled did not grow");
    root.finish();
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn memory_high_raises_a_psi_trigger_and_throttles_without_killing() {
    if !cgroup2_here() {
        return;
    }
    let root = TestRoot::new("psi", &[Controller::Memory]);
    let leaf = root.create_leaf("squeezed").unwrap();
    leaf.set_memory_high(parse_size("16M").unwrap()).unwrap();
    leaf.set_memory_max(parse_size("128M").unwrap()).unwrap(); // backstop
    leaf.set_memory_swap_max(Limit::Value(0)).unwrap();
    // A 2 s window is valid with or without CAP_SYS_RESOURCE.
    let trigger = leaf
        .memory_pressure_trigger(
            PsiKind::Some,
            Duration::from_millis(150),
            Duration::from_secs(2),
        )
        .unwrap_or_else(|e| panic!("PSI trigger: {}", chain(&e)));
    assert_eq!(trigger.trigger(), "some 150000 2000000");

    let t0 = Instant::now();
    // The string doubles until memory.max; the copies fault pages in from user space, so the
    // memory.high penalty applies on each return to user mode (a single read(2) into a big
    // buffer would be charged in full before the first return).
    let mut child = spawn_in(
        &leaf,
        "exec awk 'BEGIN { s = \"0123456789abcdef\"; while (1) s = s s }'",
    );
    let fired = trigger.wait(Duration::from_secs(45)).unwrap();
    let after = t0.elapsed();
    assert!(
        fired,
        "no PSI event within 45 s; memory.pressure: {:?}, memory.events: {:?}",
        leaf.memory_pressure(),
        leaf.memory_events()
    );
    let ev = leaf.memory_events().unwrap();
    let current = leaf.memory_current().unwrap();
    println!("psi: trigger fired after {after:?}; memory.current {current}; {ev:?}");
    // Throttled, not stopped: a second later it is alive and still held near memory.high,
    // far below the 128M backstop it would reach unthrottled.
    std::thread::sleep(Duration::from_secs(1));
    let later = leaf.memory_current().unwrap();
    println!("psi: memory.current 1 s later {later}");
    assert!(
        later < 32 << 20,
        "memory.current {later} is not held near 16M"
    );
    assert!(ev.high > 0, "{ev:?}");
    assert_eq!(
        ev.oom_kill, 0,
        "memory.high must throttle, not kill: {ev:?}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the child died above memory.high"
    );
    assert!(leaf.memory_pressure().unwrap().some.total_usec > 0);
    let st = teardown(leaf, child);
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    root.finish();
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn cgroup_kill_empties_fifty_processes() {
    if !cgroup2_here() {
        return;
    }
    let root = TestRoot::new("kill", &[Controller::Pids]);
    let leaf = root.create_leaf("crowd").unwrap();
    let t0 = Instant::now();
    let mut child = spawn_in(
        &leaf,
        "i=0; while [ $i -lt 50 ]; do sleep 1000 & i=$((i+1)); done; wait",
    );
    let n = eventually(Duration::from_secs(120), "51 processes in the leaf", || {
        let n = leaf.procs().unwrap().len();
        (n == 51).then_some(n)
    });
    let started = t0.elapsed();
    assert_eq!(leaf.pids_current().unwrap(), 51);
    assert!(leaf.cgroup_events().unwrap().populated);

    let t1 = Instant::now();
    leaf.kill().unwrap();
    leaf.wait_empty(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let emptied = t1.elapsed();
    println!(
        "kill: {n} processes started in {started:?}; cgroup.kill to populated 0 in {emptied:?}"
    );
    assert!(!leaf.cgroup_events().unwrap().populated);
    assert!(leaf.procs().unwrap().is_empty());
    let st = wait_child(&mut child, DEADLINE);
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    let path = leaf.path().to_owned();
    leaf.remove().unwrap();
    assert!(!path.exists(), "{} is still there", path.display());
    root.finish();
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn freeze_stops_a_busy_loop_and_thaw_resumes_it() {
    if !cgroup2_here() {
        return;
    }
    let root = TestRoot::new("freeze", &[]);
    let leaf = root.create_leaf("ice").unwrap();
    let child = spawn_in(&leaf, "while :; do :; done");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    leaf.freeze().unwrap();
    leaf.wait_frozen(Duration::from_secs(30)).unwrap();
    let froze = t0.elapsed();
    assert!(leaf.cgroup_events().unwrap().frozen);
    let u0 = leaf.cpu_stat().unwrap().usage_usec;
    std::thread::sleep(Duration::from_millis(500));
    let frozen_use = leaf.cpu_stat().unwrap().usage_usec - u0;
    assert!(frozen_use < 20_000, "{frozen_use} us of CPU while frozen");
    leaf.thaw().unwrap();
    eventually(DEADLINE, "frozen 0 after thaw", || {
        (!leaf.cgroup_events().unwrap().frozen).then_some(())
    });
    let u1 = leaf.cpu_stat().unwrap().usage_usec;
    eventually(DEADLINE, "CPU use after thaw", || {
        (leaf.cpu_stat().unwrap().usage_usec > u1).then_some(())
    });
    println!("freeze: frozen 1 after {froze:?}; {frozen_use} us of CPU in 500 ms frozen");
    teardown(leaf, child);
    root.finish();
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn dropping_a_leaf_kills_and_removes_it_and_errors_name_the_fix() {
    if !cgroup2_here() {
        return;
    }
    let root = TestRoot::new("drop", &[Controller::Memory]);
    let leaf = root.create_leaf("doomed").unwrap();
    // clone3(CLONE_INTO_CGROUP) wants an fd on a cgroup2 directory
    let st = rustix::fs::fstatfs(leaf.dir_fd()).unwrap();
    assert_eq!(
        u64::try_from(st.f_type).unwrap() & 0xffff_ffff,
        CGROUP2_SUPER_MAGIC
    );

    let e = root.create_leaf("doomed").unwrap_err();
    assert!(matches!(e, CgroupError::LeafExists { .. }), "{e}");
    // pids is enabled in the VM's root but not in this nebula root: the leaf has no pids.max
    let e = leaf.set_pids_max(Limit::Value(8)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "controller \"pids\" is not enabled in {}/cgroup.subtree_control; \
             nebula-ctl probe shows why",
            root.path().display()
        )
    );
    assert_eq!(leaf.controllers().unwrap(), ["memory"]);

    let mut child = spawn_in(&leaf, "exec sleep 1000");
    let path = leaf.path().to_owned();
    let t0 = Instant::now();
    drop(leaf);
    println!("drop: killed, emptied and removed in {:?}", t0.elapsed());
    assert!(!path.exists(), "{} survived the drop", path.display());
    let status = wait_child(&mut child, DEADLINE);
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    root.finish();
}
