//! Hardware contexts (`SecurityLevel::Critical`): each test boots real qemu guests (TCG) with
//! the Debian cloud kernel. Host tier: the VM tier's guest has no qemu (nested TCG would be
//! far too slow), so there these tests say so and return.
//!
//! The tests hold one lock so their VMs boot one at a time, as the VM tier does: TCG on two
//! cores gets slow and its timers erratic when guests compete.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nebula_memory::IsolationError;
use nebula_memory::isolation::hardware::{
    self, Accel, GuestCommand, HardwareConfig, HardwareError, HardwareIsolation, Output,
};
use nebula_memory::violation::ViolationKind;

static ONE_VM: Mutex<()> = Mutex::new(());

fn log(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// The lock, or `None` when this machine cannot run the tests (reported).
fn host_tier() -> Option<MutexGuard<'static, ()>> {
    let qemu = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("qemu-system-x86_64").is_file());
    let busybox = Path::new("/bin/busybox").is_file();
    if !(qemu && busybox) {
        if common::require_all() {
            // the VM tier: no qemu inside the guest, by design
            log("hardware tests run on the host tier (no qemu in the VM tier's guest)");
        } else {
            common::skip(
                "needs qemu-system-x86_64 and a static /bin/busybox (apt-get install qemu-system-x86 busybox-static)",
            );
        }
        return None;
    }
    Some(ONE_VM.lock().unwrap_or_else(|p| p.into_inner()))
}

fn tcg() -> HardwareConfig {
    HardwareConfig::new()
        .accel(Accel::Tcg)
        .memory(128 << 20)
        .output(Output::Capture, Output::Capture)
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nebula-hw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Host processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                found.push(format!("{}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn output_and_exit_code_come_back() {
    let Some(_vm) = host_tier() else { return };
    let iso = HardwareIsolation::new(tcg().env("GREETING", "it's me")).unwrap();
    let t = Instant::now();
    let o = iso
        .run_command(&GuestCommand::busybox("sh").args([
            "-c",
            "echo hi; echo \"$GREETING\"; echo oops >&2; cat /proc/sys/kernel/osrelease >&2; exit 7",
        ]))
        .unwrap();
    log(&format!(
        "boot {:?}, run {:?}, wall {:?} (total {:?}), host peak rss {:?}",
        o.boot_time,
        o.run_time,
        o.wall_time,
        t.elapsed(),
        o.host_peak_rss
    ));
    assert_eq!(o.stdout_text(), "hi\nit's me\n", "{o:?}");
    let mut err = o.stderr_text();
    assert!(err.starts_with("oops\n"), "{err:?}");
    // the guest ran its own kernel, not the host's
    let guest_kernel = err.split_off(5);
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(guest_kernel.contains("cloud-amd64"), "{guest_kernel:?}");
    assert_ne!(guest_kernel, host_kernel);
    assert_eq!(o.status, Some(7));
    assert_eq!(o.exit_code(), 7);
    assert!(!o.timed_out && !o.oom_killed && !o.guest_panic);
    assert!(o.violations.is_empty());
    assert!(o.error(None).is_none());
}

#[test]
fn host_program_with_libraries_and_files_and_a_warm_cache() {
    let Some(_vm) = host_tier() else { return };
    let dir = tempdir("files");
    let data = dir.join("data.txt");
    // unique content: the first context cannot find this initramfs in the cache
    let marker = format!("marker {:?}\n", std::time::SystemTime::now());
    std::fs::write(&data, &marker).unwrap();
    let iso = HardwareIsolation::new(tcg().file(&data, "/data/in.txt")).unwrap();
    // coreutils cat: a dynamic host program, copied with the libraries ldd names
    let cmd = GuestCommand::new("cat").arg("/data/in.txt");
    let cold = iso.run_command(&cmd).unwrap();
    let warm = iso.run_command(&cmd).unwrap();
    log(&format!(
        "cold: boot {:?} wall {:?}; warm: boot {:?} wall {:?}",
        cold.boot_time, cold.wall_time, warm.boot_time, warm.wall_time
    ));
    for o in [&cold, &warm] {
        assert_eq!(o.stdout_text(), marker, "{o:?}");
        assert_eq!(o.status, Some(0), "{}", o.stderr_text());
        assert!(o.success());
    }
    assert!(
        !cold.initramfs_cached,
        "a new input must build a new initramfs"
    );
    assert!(warm.initramfs_cached, "the same inputs must hit the cache");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn guest_out_of_memory_is_reported_and_the_host_is_untouched() {
    let Some(_vm) = host_tier() else { return };
    let memory = 96u64 << 20;
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let iso = HardwareIsolation::new(
        tcg()
            .memory(memory)
            .wall_time(Duration::from_secs(120))
            .on_violation(move |v| s2.lock().unwrap().push(v.kind.clone())),
    )
    .unwrap();
    // doubles a shell string until the guest's memory is gone
    let o = iso
        .run_command(&GuestCommand::busybox("sh").args(["-c", "x=a; while :; do x=$x$x; done"]))
        .unwrap();
    log(&format!(
        "oom: status {:?}, run {:?}, reports {:?}, host peak rss {:?}",
        o.status, o.run_time, o.kernel_reports, o.host_peak_rss
    ));
    assert!(o.oom_killed, "console: {}", o.console_tail);
    assert!(
        o.kernel_reports
            .iter()
            .any(|l| l.contains("Out of memory: Killed process")),
        "{:?}",
        o.kernel_reports
    );
    // the shell was killed by SIGKILL: the guest's /init saw 128 + 9
    assert_eq!(o.status, Some(137));
    assert!(!o.timed_out && !o.success());
    assert!(matches!(
        o.violations[..],
        [nebula_memory::violation::ViolationInfo {
            kind: ViolationKind::OutOfMemory { memory_max: Some(m) },
            ..
        }] if m == memory
    ));
    assert_eq!(seen.lock().unwrap().len(), 1);
    match o.error(None) {
        Some(IsolationError::LimitExceeded {
            limit,
            requested,
            max,
            ..
        }) => {
            assert_eq!(limit, "guest memory");
            assert_eq!(max, memory);
            assert!(requested > 0);
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    // the host only ever gave qemu the guest's RAM plus qemu's own overhead
    let rss = o.host_peak_rss.expect("qemu's VmHWM was sampled");
    assert!(
        rss < memory + (256 << 20),
        "qemu peaked at {rss} bytes for a {memory}-byte guest"
    );
}

#[test]
fn a_guest_that_loops_forever_is_killed_at_the_time_limit() {
    let Some(_vm) = host_tier() else { return };
    let limit = Duration::from_secs(2);
    let iso = HardwareIsolation::new(tcg().wall_time(limit)).unwrap();
    let o = iso
        .run_command(&GuestCommand::busybox("sh").args(["-c", "echo looping; while :; do :; done"]))
        .unwrap();
    log(&format!(
        "time limit: run {:?}, wall {:?}",
        o.run_time, o.wall_time
    ));
    assert!(o.timed_out);
    assert_eq!(o.status, None);
    assert_eq!(o.stdout_text(), "looping\n");
    assert!(
        o.run_time >= limit && o.run_time < limit + Duration::from_secs(2),
        "{:?}",
        o.run_time
    );
    assert!(matches!(o.violations[0].kind, ViolationKind::TimeLimit));
    assert!(matches!(
        o.error(Some(limit)),
        Some(IsolationError::DeadlineExceeded { .. })
    ));
    assert_eq!(o.exit_code(), 137);
    // qemu was killed and reaped: its pid is gone (or reused by something else)
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", o.pid)).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&cmdline).contains("qemu"));
}

#[test]
fn nothing_is_left_behind_after_twenty_contexts() {
    let Some(_vm) = host_tier() else { return };
    let work = tempdir("leak");
    let work_s = work.to_string_lossy().into_owned();
    let iso = HardwareIsolation::new(
        tcg()
            .memory(hardware::MIN_MEMORY)
            .work_dir(&work)
            .wall_time(Duration::from_secs(60)),
    )
    .unwrap();
    let fds = fd_count();
    let t = Instant::now();
    for i in 0..20 {
        let o = iso
            .run_command(&GuestCommand::busybox("sh").args(["-c", &format!("echo {i}")]))
            .unwrap();
        assert_eq!(o.stdout_text(), format!("{i}\n"), "{o:?}");
        assert_eq!(o.status, Some(0), "{o:?}");
        assert!(
            processes_mentioning(&work_s).is_empty(),
            "after context {i}"
        );
    }
    log(&format!("20 contexts in {:?}", t.elapsed()));
    // an error path: the guest cannot boot in 50 ms; qemu is killed, its files removed
    let iso_fast = HardwareIsolation::new(
        tcg()
            .memory(hardware::MIN_MEMORY)
            .work_dir(&work)
            .boot_timeout(Duration::from_millis(50)),
    )
    .unwrap();
    let e = iso_fast
        .run_command(&GuestCommand::busybox("true"))
        .unwrap_err();
    assert!(matches!(e, HardwareError::BootTimeout { .. }), "{e}");
    assert!(processes_mentioning(&work_s).is_empty());
    let left: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(fd_count(), fds, "file descriptors leaked");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn probe_reports_the_accelerator_and_the_startup_cost() {
    let Some(_vm) = host_tier() else { return };
    let cache = hardware::default_cache_dir();
    let t = Instant::now();
    let p = hardware::probe(&cache).unwrap();
    log(&format!(
        "probe: kvm {} ({}), accel {}, start-up {:?} (probe took {:?})",
        p.kvm,
        p.kvm_reason,
        p.accel,
        p.startup,
        t.elapsed()
    ));
    assert_eq!(p.kvm, p.accel == Accel::Kvm);
    assert!(p.accel != Accel::Auto);
    assert!(p.startup > Duration::from_millis(10));
    if !p.kvm {
        assert_ne!(p.kvm_reason, "ok");
    }
    // answered from the cache the second time
    let t = Instant::now();
    assert_eq!(hardware::probe(&cache).unwrap(), p);
    assert!(t.elapsed() < Duration::from_millis(500));
    // Auto follows the probe
    let iso = HardwareIsolation::new(HardwareConfig::new()).unwrap();
    assert_eq!(iso.accel(), p.accel);
}

#[test]
fn the_cli_entry_point_runs_a_host_shell_and_returns_its_exit_code() {
    let Some(_vm) = host_tier() else { return };
    // what `nebula-ctl run --level critical -- sh -c 'echo hi; exit 3'` calls; `sh` is the
    // host's (dash on Debian), copied with its libraries; "hi" goes to this process's stdout
    let argv: Vec<std::ffi::OsString> = ["sh", "-c", "echo hi; exit 3"]
        .iter()
        .map(Into::into)
        .collect();
    let o = hardware::run_cli(&argv, Some(128 << 20), Some(Duration::from_secs(60))).unwrap();
    assert_eq!(o.status, Some(3), "{}", o.console_tail);
    assert_eq!(o.exit_code(), 3);
    assert!(
        o.stdout.is_empty(),
        "inherited output is streamed, not captured"
    );
    assert!(hardware::run_cli(&[], None, None).is_err());
}

/// The escape attempts of the process-level suite that make sense in a guest: read and
/// write host files, reach a host network interface, see host processes. None may reach
/// the host: the guest has its own kernel, an initramfs for a root and no network device.
#[test]
fn escape_attempts_from_inside_the_vm_never_reach_the_host() {
    let Some(_vm) = host_tier() else { return };
    let dir = tempdir("escape");
    let secret = dir.join("secret");
    std::fs::write(&secret, "host-secret-7f3a").unwrap();
    let planted = dir.join("planted");
    let host_pid = std::process::id();
    let script = format!(
        "cat {s} 2>/dev/null && echo READ-HOST-FILE; \
         mkdir -p {d} && echo x > {p} && echo wrote-guest-copy; \
         echo ifaces: $(ls /sys/class/net); \
         [ -e /proc/{pid} ] && echo SAW-HOST-PID; \
         echo procs: $(ls -d /proc/[0-9]* | wc -l); \
         grep -rqs host-secret-7f3a /bin /etc /tmp /root && echo FOUND-SECRET; \
         exit 0",
        s = secret.display(),
        d = dir.display(),
        p = planted.display(),
        pid = host_pid,
    );
    let iso = HardwareIsolation::new(tcg()).unwrap();
    let o = iso
        .run_command(&GuestCommand::busybox("sh").args(["-c", &script]))
        .unwrap();
    let out = o.stdout_text();
    log(&format!("guest said: {out:?}"));
    assert_eq!(o.status, Some(0), "{o:?}");
    assert!(
        !out.contains("READ-HOST-FILE") && !out.contains("host-secret"),
        "{out}"
    );
    assert!(!out.contains("FOUND-SECRET"), "{out}");
    // The write landed in the guest's own memory, never on the host.
    assert!(out.contains("wrote-guest-copy"), "{out}");
    assert!(
        !planted.exists(),
        "a guest write reached the host filesystem"
    );
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "host-secret-7f3a"
    );
    let ifaces = out
        .lines()
        .find_map(|l| l.strip_prefix("ifaces: "))
        .unwrap_or("")
        .trim()
        .to_string();
    assert_eq!(ifaces, "lo", "no network device in the guest: {out}");
    assert!(!out.contains("SAW-HOST-PID") || host_pid < 100, "{out}");
    let procs: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("procs: "))
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap();
    assert!(
        procs > 0 && procs < 200,
        "the guest sees its own few processes: {procs}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
