//! Naming the denied system call: process contexts install their seccomp profile with kills
//! as `SECCOMP_RET_USER_NOTIF`, the supervisor reads the call from the listener and kills the
//! context. Every assertion reads what the kernel gave: the notification's number, the wait
//! status, the workload's own output, `/proc/self/fd` inside the context, and the errno of an
//! escape attempt.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use nebula_memory::isolation::process::{
    ClosureError, Command, ExitStatus, ProcessConfig, ProcessIsolation, Stdio,
};
use nebula_memory::seccomp::{
    AUDIT_ARCH_X86_64, Action, CompiledFilter, DeniedSyscall, Profile, syscalls,
};
use nebula_memory::violation::ViolationKind;

const SIGSYS: i32 = 31;

fn ready() -> bool {
    let f = nebula_memory::features();
    common::require(common::is_root(), "needs root (namespaces, mounts)")
        && common::require(
            f.user_namespaces.available,
            "needs user namespaces (nebula-ctl probe)",
        )
        && common::require(
            f.seccomp.actions.contains(&"user_notif"),
            "the kernel lacks SECCOMP_RET_USER_NOTIF (Linux 5.0)",
        )
}

fn iso(p: Profile) -> ProcessIsolation {
    ProcessIsolation::new(
        ProcessConfig::new()
            .seccomp(p)
            .output(Stdio::Capture, Stdio::Capture)
            .wall_time(Duration::from_secs(30)),
    )
    .unwrap_or_else(|e| panic!("ProcessIsolation::new: {e}"))
}

fn native(name: &str) -> DeniedSyscall {
    let number = syscalls::number(name).unwrap();
    DeniedSyscall {
        nr: number as i32,
        name: Some(syscalls::name(number).unwrap()),
        arch: AUDIT_ARCH_X86_64,
    }
}

const SIGSYS_STATUS: ExitStatus = ExitStatus::Signaled {
    signal: SIGSYS,
    core_dumped: false,
};

#[test]
fn strict_names_the_loaders_openat() {
    if !ready() {
        return;
    }
    // A dynamically linked program (busybox, a static one, would die at arch_prctl first):
    // the loader's first open is the call strict kills, before any code of the program runs.
    let (iso, cmd) = calling(Profile::Strict, 39);
    let o = iso.run_command(&cmd).unwrap();
    assert_eq!(o.denied_syscall, Some(native("openat")), "{o:?}");
    assert!(o.seccomp_killed);
    assert_eq!(o.status, SIGSYS_STATUS);
    assert_eq!(o.status.shell_code(), 128 + SIGSYS);
    assert!(o.stdout.is_empty(), "the program ran: {}", o.stdout_text());
    let v = o
        .violations
        .iter()
        .find(|v| matches!(v.kind, ViolationKind::Seccomp { .. }))
        .expect("a seccomp violation");
    assert_eq!(
        v.kind,
        ViolationKind::Seccomp {
            syscall: Some(native("openat"))
        }
    );
    // The notifying thread, in our pid namespace: a real task id, not pid 1 of the context.
    let tid = v.thread_id.expect("the notification names the thread");
    assert!(tid > 0 && tid != o.pid, "{tid} vs pid 1 {}", o.pid);
}

/// A context running this test binary's `helper_raw_syscall`, which calls system call `nr`
/// with zero arguments and prints `survived ...` if it returns (see `common::raw_syscall_helper`).
fn calling(p: Profile, nr: u32) -> (ProcessIsolation, Command) {
    let iso = ProcessIsolation::new(
        ProcessConfig::new()
            .seccomp(p)
            .env("NEBULA_HELPER", "1")
            .env("NEBULA_HELPER_SYSCALL", nr.to_string())
            .output(Stdio::Capture, Stdio::Capture)
            .wall_time(Duration::from_secs(30)),
    )
    .unwrap_or_else(|e| panic!("ProcessIsolation::new: {e}"));
    let cmd = Command::new(common::shared_exe()).args(common::helper_args("helper_raw_syscall"));
    (iso, cmd)
}

#[test]
#[ignore = "helper: run inside a context by the tests above"]
fn helper_raw_syscall() {
    common::raw_syscall_helper();
}

#[test]
fn default_names_a_hostile_call_and_it_never_returns() {
    if !ready() {
        return;
    }
    for name in ["reboot", "kexec_load", "init_module"] {
        let nr = syscalls::number(name).unwrap();
        assert_eq!(
            Profile::Default
                .table()
                .expected(AUDIT_ARCH_X86_64, nr as i32, &[0; 6]),
            Action::KillProcess,
            "{name} is on the hostile list"
        );
        let (iso, cmd) = calling(Profile::Default, nr);
        let o = iso.run_command(&cmd).unwrap();
        assert_eq!(o.denied_syscall, Some(native(name)), "{name}: {o:?}");
        assert_eq!(o.status, SIGSYS_STATUS, "{name}");
        // The listener stays open until the context is reaped: closing it earlier let the
        // kernel fail the call with ENOSYS and the workload print this before it died.
        assert!(
            !o.stdout_text().contains("survived"),
            "{name} returned to the workload: {}",
            o.stdout_text()
        );
    }
}

#[allow(unsafe_code)]
fn raw(nr: libc::c_long, a: [u64; 6]) -> i64 {
    // SAFETY: the callers pass numbers and null pointers only; the calls fail in the kernel
    // (or are stopped by the filter) before touching memory.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r < 0 {
        -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        r
    }
}

#[test]
fn closures_get_the_call_named_too() {
    if !ready() {
        return;
    }
    let r = iso(Profile::Strict)
        .run_closure(|| std::fs::read_to_string("/etc/hostname").is_ok())
        .unwrap();
    assert_eq!(r.result, Err(ClosureError::Died(SIGSYS_STATUS)));
    assert_eq!(r.outcome.denied_syscall, Some(native("openat")));
    let r = iso(Profile::Default)
        .run_closure(|| raw(libc::SYS_delete_module, [0; 6]))
        .unwrap();
    assert_eq!(r.result, Err(ClosureError::Died(SIGSYS_STATUS)));
    assert_eq!(r.outcome.denied_syscall, Some(native("delete_module")));
}

/// `/proc/self/fd` of the calling process: each descriptor's link, and for sockets their
/// type (`SO_TYPE`), e.g. `socket:[123] type 5` for a `SOCK_SEQPACKET` one.
#[allow(unsafe_code)]
fn fd_links() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            let mut link = link.to_string_lossy().into_owned();
            if link.starts_with("socket:") {
                let mut ty = 0i32;
                let mut len = libc::socklen_t::try_from(size_of::<i32>()).unwrap();
                // SAFETY: getsockopt writes one int into `ty`, live on this stack.
                unsafe {
                    libc::getsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_TYPE,
                        (&mut ty as *mut i32).cast(),
                        &mut len,
                    )
                };
                link = format!("{link} type {ty}");
            }
            Some(link)
        })
        .collect()
}

fn holds_a_listener_or_handover(links: &[String]) -> bool {
    let seqpacket = format!("type {}", libc::SOCK_SEQPACKET);
    links
        .iter()
        .any(|l| l.contains("seccomp notify") || l.ends_with(&seqpacket))
}

#[test]
fn the_workload_holds_no_listener_and_no_handover_socket() {
    if !ready() {
        return;
    }
    // The closure way: a glibc fork copies every descriptor of the supervisor, and no
    // execve closes them; other contexts may be alive in this process (libtest runs tests
    // in parallel), with their listeners and handover sockets.
    let i = iso(Profile::Default);
    let before = fd_links();
    let fds = std::thread::scope(|scope| {
        // One context whose listener the supervisor holds (waited for in another thread),
        // one whose handover socket still holds it (not waited for yet).
        let waited = scope.spawn(|| i.run_command(&Command::new("/bin/sleep").arg("1")));
        let pending = i
            .spawn_command(&Command::new("/bin/sleep").arg("1"))
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let fds = i.run_closure(fd_links).unwrap().result.unwrap();
        assert!(waited.join().unwrap().unwrap().status.success());
        drop(pending);
        fds
    });
    assert!(!fds.is_empty());
    assert!(!holds_a_listener_or_handover(&fds), "{fds:?}");
    // Nor the id lease files of the other two contexts (read-write, locked by the
    // supervisor): the closure closed them too.
    assert!(!fds.iter().any(|l| l.contains("nebula/ids/")), "{fds:?}");
    // Nor their pipes (their output, reports and release) or pidfds: what is left of the
    // pipes the test process did not hold before is at most this context's own five (sync,
    // report, stdout, stderr, result).
    let pipes: std::collections::BTreeSet<&String> = fds
        .iter()
        .filter(|l| l.starts_with("pipe:") && !before.contains(l))
        .collect();
    assert!(pipes.len() <= 5, "{fds:?}");
    assert!(!fds.iter().any(|l| l.contains("[pidfd]")), "{fds:?}");
    // Control: the check sees a listener and a SEQPACKET socket where there are some (a
    // context without a filter may take a listener of its own).
    let control = iso(Profile::None)
        .run_closure(|| {
            let _pair = std::os::unix::net::UnixStream::pair();
            let _l = own_listener_filter();
            let _s = nebula_memory_seqpacket();
            fd_links()
        })
        .unwrap()
        .result
        .unwrap();
    assert!(
        control.iter().any(|l| l.contains("seccomp notify")),
        "{control:?}"
    );
    assert!(holds_a_listener_or_handover(&control), "{control:?}");
    // The exec way: execve closed the supervisor's descriptors (close-on-exec), and the
    // workload closed its listener and socket before it.
    let o = i
        .run_command(
            &Command::new("/bin/sh")
                .arg("-c")
                .arg("for f in /proc/self/fd/*; do readlink $f; done; exit 0"),
        )
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let out = o.stdout_text();
    assert!(
        !out.contains("seccomp") && !out.contains("socket:"),
        "{out}"
    );
}

/// A `SOCK_SEQPACKET` pair, the handover's socket type, kept open by the caller.
#[allow(unsafe_code)]
fn nebula_memory_seqpacket() -> [i32; 2] {
    let mut fds = [-1i32; 2];
    // SAFETY: socketpair writes two ints into `fds`, live on this stack.
    unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) };
    fds
}

/// x86_64 `int 0x80` with eax = 20: i386 `getpid`.
#[allow(unsafe_code)]
fn int80_getpid() -> i64 {
    let ret: i32;
    // SAFETY: int 0x80 with eax=20 (i386 getpid) takes no arguments and reads no memory;
    // the compat entry may clobber r8-r11, declared here.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inlateout("eax") 20i32 => ret,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    i64::from(ret)
}

#[test]
fn a_sigsys_without_notification_names_no_call() {
    if !ready() {
        return;
    }
    // The x32 guard stays KILL_PROCESS: the kernel kills, nothing is notified.
    let r = iso(Profile::Default)
        .run_closure(|| raw(libc::SYS_getpid | 0x4000_0000, [0; 6]))
        .unwrap();
    assert_eq!(r.result, Err(ClosureError::Died(SIGSYS_STATUS)));
    assert!(r.outcome.seccomp_killed);
    assert_eq!(r.outcome.denied_syscall, None);
    if int80_getpid() != i64::from(std::process::id()) {
        common::skip("IA-32 emulation (int 0x80) is off in this kernel");
        return;
    }
    let r = iso(Profile::Default).run_closure(int80_getpid).unwrap();
    assert_eq!(r.result, Err(ClosureError::Died(SIGSYS_STATUS)));
    assert!(r.outcome.seccomp_killed);
    assert_eq!(r.outcome.denied_syscall, None);
}

// ---------------------------------------------------------------------------------------
// The escape: a workload stacks a USER_NOTIF filter of its own, with its own listener, and
// answers CONTINUE to what the supervisor's filter denies. Each case runs in a re-executed
// helper (it installs filters on its thread).

/// `seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER)` of a 3-instruction filter notifying
/// `reboot(2)` and allowing everything else; the listener or `-errno`.
#[allow(unsafe_code)]
fn own_listener_filter() -> Result<i32, i32> {
    let prog = [
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        }, // ld [nr]
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: u32::try_from(libc::SYS_reboot).unwrap(),
        }, // jeq reboot
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_USER_NOTIF,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).unwrap(),
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: fprog points at `prog`, live for the call; the kernel copies it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(i32::try_from(r).unwrap())
    }
}

/// The workload's accomplice: receives one notification on `listener` and answers CONTINUE.
#[allow(unsafe_code)]
fn answer_continue(listener: i32) {
    // SAFETY: zeroed seccomp_notif/resp are valid (integers); the ioctls write/read exactly
    // these structs, live on this stack.
    unsafe {
        let mut n: libc::seccomp_notif = std::mem::zeroed();
        if libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV as _, &mut n) != 0 {
            return;
        }
        let mut resp: libc::seccomp_notif_resp = std::mem::zeroed();
        resp.id = n.id;
        resp.flags = u32::try_from(libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE).unwrap();
        libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND as _, &mut resp);
    }
}

fn escape_attempt(table: nebula_memory::seccomp::ProfileTable) {
    // The accomplice thread exists before any filter, so none covers it.
    let (tx, rx) = std::sync::mpsc::channel::<i32>();
    let accomplice = std::thread::spawn(move || {
        if let Ok(l) = rx.recv() {
            answer_continue(l);
        }
    });
    let ours = CompiledFilter::compile(&table.with_kill_as(Action::UserNotif)).unwrap();
    // The supervisor's listener, as a process context gets it.
    let listener = ours.install_current_thread_with_listener().unwrap();
    let errno = |r: Result<i32, i32>| match r {
        Ok(_) => "installed".to_owned(),
        Err(e) => format!("errno {e}"),
    };
    let first = own_listener_filter();
    println!("while the supervisor listens: {}", errno(first));
    // The supervisor is gone: its listener closes.
    drop(listener);
    let second = own_listener_filter();
    println!("after the supervisor died: {}", errno(second));
    if let Ok(l) = second {
        tx.send(l).unwrap();
    }
    drop(tx);
    // Invalid magic: if the call runs in the kernel it fails with EINVAL, touching nothing.
    let r = raw(libc::SYS_reboot, [0; 6]);
    println!("reboot returned {r}");
    accomplice.join().unwrap();
    println!("helper done");
}

#[test]
#[ignore = "helper: run by a_workload_cannot_answer_its_own_denials"]
fn helper_escape_control() {
    if !common::in_helper() {
        return;
    }
    // The default table without its NEW_LISTENER rule: seccomp(2) is a plain allow.
    let mut t = Profile::Default.table();
    let rule = t
        .rules
        .get_mut(&u32::try_from(libc::SYS_seccomp).unwrap())
        .unwrap();
    rule.cases.clear();
    rule.otherwise = Action::Allow;
    escape_attempt(t);
}

#[test]
#[ignore = "helper: run by a_workload_cannot_answer_its_own_denials"]
fn helper_escape_real() {
    if !common::in_helper() {
        return;
    }
    escape_attempt(Profile::Default.table());
}

#[test]
fn a_workload_cannot_answer_its_own_denials() {
    if !ready() {
        return;
    }
    let run = |name: &str| {
        let out = common::run_helper(name);
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{name}: {:?}\n{text}",
            out.status.signal()
        );
        assert!(text.contains("helper done"), "{name}\n{text}");
        text
    };
    let einval = -i64::from(libc::EINVAL);
    let enosys = -i64::from(libc::ENOSYS);
    // The control shows the escape is real: the kernel itself refuses a second listener
    // while ours is open (EBUSY), but once ours closed, the workload's own listener wins
    // over our USER_NOTIF and its CONTINUE lets the denied reboot(2) run in the kernel.
    let c = run("helper_escape_control");
    assert!(
        c.contains(&format!(
            "while the supervisor listens: errno {}",
            libc::EBUSY
        )),
        "{c}"
    );
    assert!(c.contains("after the supervisor died: installed"), "{c}");
    assert!(c.contains(&format!("reboot returned {einval}")), "{c}");
    // With the profile's rule the filter refuses the listener itself (EPERM outranks
    // USER_NOTIF), and the call is not run (our listener is gone: ENOSYS).
    let r = run("helper_escape_real");
    let eperm = format!("errno {}", libc::EPERM);
    assert!(
        r.contains(&format!("while the supervisor listens: {eperm}")),
        "{r}"
    );
    assert!(
        r.contains(&format!("after the supervisor died: {eperm}")),
        "{r}"
    );
    assert!(r.contains(&format!("reboot returned {enosys}")), "{r}");
}
