//! seccomp profiles: the oracle (a BPF interpreter replays every compiled profile against
//! the profile's own table) and the real kernel (each filter installed in a re-executed
//! child, checked by what the kernel answers and how the child dies).
// Syscall numbers (`libc::SYS_*`, i64) and errno constants narrowed to the i32/u32/u16 of
// the seccomp ABI are all small known constants.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

use nebula_memory::seccomp::bpf::SeccompData;
use nebula_memory::seccomp::{
    AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, Action, ArgWidth, CmpOp, CompiledFilter, Profile,
    ProfileTable, X32_SYSCALL_BIT, syscalls,
};

const SIGSYS: i32 = 31;
const EPERM: Action = Action::Errno(libc::EPERM as u16);
const ENOSYS: Action = Action::Errno(libc::ENOSYS as u16);

fn seccomp_here() -> bool {
    common::require(
        nebula_memory::features().seccomp.available,
        "seccomp filters are not available (nebula-ctl probe)",
    )
}

// ---------------------------------------------------------------------------------------
// The oracle.

/// Argument vectors that sit on both sides of every condition the table has for `nr`.
fn representative_args(table: &ProfileTable, nr: u32) -> Vec<[u64; 6]> {
    let mut per_arg: [Vec<u64>; 6] = Default::default();
    if let Some(rule) = table.rule(nr) {
        for case in &rule.cases {
            for c in case.any_of.iter().flatten() {
                let vals = &mut per_arg[usize::from(c.arg)];
                let v = c.value;
                vals.extend([v, v.wrapping_add(1), v.wrapping_sub(1), 0, u64::MAX]);
                // Garbage in the upper half must not change a 32-bit comparison.
                if c.width == ArgWidth::Dword {
                    vals.extend([v | 0xffff_ffff_0000_0000, v.wrapping_sub(1) | 1 << 40]);
                }
                if let CmpOp::MaskedEq(m) = c.op {
                    for bit in 0..64 {
                        if m & (1 << bit) != 0 {
                            vals.push((v & m) ^ (1 << bit));
                        }
                    }
                    vals.push(!m);
                }
            }
        }
    }
    for v in &mut per_arg {
        if v.is_empty() {
            v.push(0);
        }
        v.sort_unstable();
        v.dedup();
    }
    // Cartesian product over the arguments (at most two have conditions in any profile).
    let mut out = vec![[0u64; 6]];
    for (i, vals) in per_arg.iter().enumerate() {
        let mut next = Vec::with_capacity(out.len() * vals.len());
        for base in &out {
            for &v in vals {
                let mut a = *base;
                a[i] = v;
                next.push(a);
            }
        }
        out = next;
    }
    out
}

fn oracle(filter: &CompiledFilter) -> usize {
    let table = filter.table();
    let mut checked = 0;
    let mut check = |arch: u32, nr: i32, args: [u64; 6]| {
        let data = SeccompData {
            nr,
            arch,
            instruction_pointer: 0x7f00_dead_beef,
            args,
        };
        let got = filter
            .simulate(&data)
            .expect("the program passes the checker");
        let want = table.expected(arch, nr, &args);
        // The kernel's bits of `nr`: -1 is described as the large number the filter sees.
        #[allow(clippy::cast_sign_loss)]
        let describe = |nr: i32| table.describe(nr as u32);
        assert_eq!(
            got,
            Some(want),
            "{}: arch {arch:#x} nr {nr} args {args:x?}: BPF says {got:?}, table says {want:?} ({})",
            filter.profile(),
            describe(nr)
        );
        checked += 1;
    };
    for nr in 0..=500u32 {
        for args in representative_args(table, nr) {
            check(AUDIT_ARCH_X86_64, nr as i32, args);
        }
    }
    for nr in [0, 2, 39, 59, 101, 165, 425, 0x1ff, 0x3fff_ffff] {
        check(AUDIT_ARCH_X86_64, (X32_SYSCALL_BIT | nr) as i32, [0; 6]);
    }
    check(AUDIT_ARCH_X86_64, -1, [0; 6]);
    check(AUDIT_ARCH_X86_64, i32::MAX, [0; 6]);
    for arch in [AUDIT_ARCH_I386, 0xc000_00b7 /* aarch64 */, 0] {
        for nr in [0, 1, 11, 20, 39, 165] {
            check(arch, nr, [0; 6]);
        }
    }
    checked
}

#[test]
fn oracle_every_profile_agrees_with_its_own_table() {
    if !seccomp_here() {
        return;
    }
    for p in Profile::ALL {
        let f = p.compile().unwrap();
        let n = oracle(&f);
        assert!(n > 501, "{p}: only {n} cases replayed");
        if p == Profile::None {
            assert!(f.program().is_empty());
        } else {
            assert!(f.program().len() > 100, "{p}: {}", f.program().len());
        }
    }
    // The variant process contexts install: every kill of a system call notifies the
    // supervisor; the guards stay kills.
    for p in [Profile::Default, Profile::Strict, Profile::DenyNetwork] {
        let n = p.compile_notifying().unwrap();
        assert!(n.notifies() && !p.compile().unwrap().notifies(), "{p}");
        oracle(&n);
        let t = n.table();
        assert_eq!(
            t.expected(AUDIT_ARCH_X86_64, libc::SYS_reboot as i32, &[0; 6]),
            Action::UserNotif
        );
        assert_eq!(t.bad_arch, Action::KillProcess);
        assert_eq!(t.x32, Action::KillProcess);
    }
    // The debugging variant, with every kill of a system call turned into a trap.
    let trap =
        CompiledFilter::compile(&Profile::Strict.table().with_kill_as(Action::Trap)).unwrap();
    oracle(&trap);
    assert_eq!(
        trap.table()
            .expected(AUDIT_ARCH_X86_64, libc::SYS_open as i32, &[0; 6]),
        Action::Trap
    );
    assert_eq!(
        trap.table().expected(AUDIT_ARCH_I386, 5, &[0; 6]),
        Action::KillProcess,
        "the architecture check stays a kill"
    );
}

#[test]
fn filter_path_lengths() {
    if !seccomp_here() {
        return;
    }
    // How many BPF instructions one system call costs when the kernel's constant-action
    // cache does not answer (it does for unconditional allows on the native ABI).
    for p in [Profile::Default, Profile::Strict, Profile::DenyNetwork] {
        let f = p.compile().unwrap();
        let steps = |nr: i64, args: [u64; 6]| {
            nebula_memory::seccomp::bpf::run_counted(
                f.program(),
                &SeccompData::x86_64(nr as i32, args),
            )
            .unwrap()
            .1
        };
        let worst = (0..=500).map(|nr| steps(nr, [0; 6])).max().unwrap();
        let line = format!(
            "{p}: {} instructions; read {} futex {} socket {} mount {} worst {worst}",
            f.program().len(),
            steps(libc::SYS_read, [0; 6]),
            steps(libc::SYS_futex, [0, 0x89, 0, 0, 0, 0]),
            steps(libc::SYS_socket, [1, 1, 0, 0, 0, 0]),
            steps(libc::SYS_mount, [0; 6]),
        );
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{line}");
        assert!(worst < f.program().len(), "{line}");
        // The notifying variant costs nothing on any path: every system call takes the same
        // number of instructions as under the plain filter, and gets the same verdict except
        // that a kill of a system call is a notification (the guards stay kills).
        let n = p.compile_notifying().unwrap();
        let table = f.table();
        let mut paths = 0;
        let mut notified = 0;
        let mut cases: Vec<(u32, i32, [u64; 6])> = (0..=500u32)
            .flat_map(|nr| {
                representative_args(table, nr)
                    .into_iter()
                    .map(move |a| (AUDIT_ARCH_X86_64, nr as i32, a))
            })
            .collect();
        cases.extend([
            (AUDIT_ARCH_X86_64, (X32_SYSCALL_BIT | 39) as i32, [0; 6]),
            (AUDIT_ARCH_X86_64, -1, [0; 6]),
            (AUDIT_ARCH_I386, 5, [0; 6]),
        ]);
        for (arch, nr, args) in cases {
            let data = SeccompData {
                nr,
                arch,
                instruction_pointer: 0,
                args,
            };
            let run = |prog| nebula_memory::seccomp::bpf::run_counted(prog, &data).unwrap();
            let ((rp, sp), (rn, sn)) = (run(f.program()), run(n.program()));
            assert_eq!(
                sp, sn,
                "{p}: nr {nr} arch {arch:#x} args {args:x?}: path length"
            );
            match (Action::from_ret(rp), Action::from_ret(rn)) {
                (Some(Action::KillProcess), Some(Action::UserNotif)) => notified += 1,
                (a, b) => assert_eq!(a, b, "{p}: nr {nr} arch {arch:#x}"),
            }
            paths += 1;
        }
        assert!(notified > 0, "{p}: no kill became a notification");
        let _ = writeln!(
            std::io::stderr(),
            "{p} notifying: {paths} paths, all the same length; {notified} kills notify"
        );
    }
}

#[test]
fn oracle_catches_a_wrong_program() {
    if !seccomp_here() {
        return;
    }
    // The oracle must be able to fail: a table that disagrees with the program it is
    // compared to is caught.
    let f = Profile::Default.compile().unwrap();
    let mut wrong = Profile::Default.table();
    wrong
        .rules
        .get_mut(&(libc::SYS_mount as u32))
        .unwrap()
        .otherwise = Action::Allow;
    let mount = libc::SYS_mount as i32;
    let got = f
        .simulate(&SeccompData::x86_64(mount, [0; 6]))
        .unwrap()
        .unwrap();
    assert_ne!(got, wrong.expected(AUDIT_ARCH_X86_64, mount, &[0; 6]));
    assert_eq!(got, EPERM);
}

#[test]
fn tables_say_what_the_issue_promises() {
    let x = AUDIT_ARCH_X86_64;
    let nr = |n: &str| syscalls::number(n).unwrap() as i32;
    for p in [Profile::Default, Profile::Strict, Profile::DenyNetwork] {
        let t = p.table();
        assert_eq!(t.bad_arch, Action::KillProcess, "{p}");
        assert_eq!(t.x32, Action::KillProcess, "{p}");
        for n in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
            assert_eq!(t.expected(x, nr(n), &[0; 6]), EPERM, "{p} {n}");
        }
        assert_eq!(t.expected(x, nr("clone3"), &[0; 6]), ENOSYS, "{p}");
        for n in [
            "kexec_load",
            "init_module",
            "finit_module",
            "reboot",
            "iopl",
        ] {
            assert_eq!(
                t.expected(x, nr(n), &[0; 6]),
                Action::KillProcess,
                "{p} {n}"
            );
        }
    }
    let d = Profile::Default.table();
    for n in [
        "mount",
        "umount2",
        "ptrace",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "keyctl",
        "add_key",
        "request_key",
        "setns",
        "settimeofday",
        "clock_settime",
        "acct",
        "quotactl",
    ] {
        assert_eq!(d.expected(x, nr(n), &[0; 6]), EPERM, "default {n}");
    }
    assert!(
        d.describe(syscalls::number("clone").unwrap())
            .contains("0x7e020000"),
        "{}",
        d.describe(56)
    );
}

// ---------------------------------------------------------------------------------------
// The real kernel, each case in a re-executed child.

/// Re-executes this test binary to run one ignored helper test in a child process.
fn run_helper(name: &str) -> (ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
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
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

fn helper_mode() -> bool {
    std::env::var_os("NEBULA_HELPER").is_some()
}

/// The child is expected to die: no core file.
fn no_core_dump() {
    rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .unwrap();
}

/// `syscall(2)` with up to six arguments; returns the result or `-errno`.
#[allow(unsafe_code)]
fn raw(nr: libc::c_long, a: [u64; 6]) -> i64 {
    // SAFETY: the helpers pass only null pointers, invalid descriptors or numbers that make
    // the kernel fail before touching memory, or pointers to live locals.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r < 0 {
        -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        r
    }
}

fn status_field(path: &str, field: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("{field} missing in {path}"))
}

/// Leaves at once with `code` (no atexit, no libtest teardown under a filter).
#[allow(unsafe_code)]
fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: _exit ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

fn assert_helper_ok(name: &str) {
    let (status, out) = run_helper(name);
    assert!(status.success(), "{name}: {status}\n{out}");
    assert!(
        out.contains("helper done"),
        "{name} did not run to the end\n{out}"
    );
}

#[test]
fn every_profile_installs_on_this_kernel() {
    if !seccomp_here() {
        return;
    }
    assert_helper_ok("helper_install_every_profile");
}

#[test]
#[ignore = "helper: run by every_profile_installs_on_this_kernel in a child process"]
fn helper_install_every_profile() {
    if !helper_mode() {
        return;
    }
    let filters: Vec<_> = [
        Profile::None,
        Profile::Default,
        Profile::DenyNetwork,
        Profile::Strict,
    ]
    .into_iter()
    .map(|p| p.compile().unwrap())
    .collect();
    filters[0].install_current_thread().unwrap();
    assert_eq!(status_field("/proc/thread-self/status", "Seccomp"), "0");
    assert_eq!(status_field("/proc/thread-self/status", "NoNewPrivs"), "0");
    filters[1].install_current_thread().unwrap();
    filters[2].install_current_thread().unwrap();
    assert_eq!(status_field("/proc/thread-self/status", "Seccomp"), "2");
    assert_eq!(status_field("/proc/thread-self/status", "NoNewPrivs"), "1");
    assert_eq!(
        status_field("/proc/thread-self/status", "Seccomp_filters"),
        "2"
    );
    println!("helper done");
    // Strict forbids open: the status check above is the last one that reads a file.
    filters[3].install_current_thread().unwrap();
    exit_now(0);
}

#[test]
fn default_profile_on_the_kernel() {
    if !seccomp_here() {
        return;
    }
    let t = Profile::Default.table();
    assert_eq!(
        t.expected(AUDIT_ARCH_X86_64, libc::SYS_mount as i32, &[0; 6]),
        EPERM
    );
    assert_helper_ok("helper_default_profile");
}

#[test]
#[ignore = "helper: run by default_profile_on_the_kernel in a child process"]
fn helper_default_profile() {
    if !helper_mode() {
        return;
    }
    let f = Profile::Default.compile().unwrap();
    // Before: the kernel itself answers (EFAULT/EBADF), so the filter's EPERM is visible.
    assert_eq!(
        raw(libc::SYS_setns, [u64::MAX >> 32, 0, 0, 0, 0, 0]),
        -i64::from(libc::EBADF)
    );
    f.install_current_thread().unwrap();
    let tgt = c"/tmp".as_ptr() as u64;
    let fstype = c"tmpfs".as_ptr() as u64;
    assert_eq!(
        raw(libc::SYS_mount, [fstype, tgt, fstype, 0, 0, 0]),
        -i64::from(libc::EPERM),
        "mount"
    );
    assert_eq!(
        raw(libc::SYS_umount2, [tgt, 0, 0, 0, 0, 0]),
        -i64::from(libc::EPERM)
    );
    assert_eq!(
        raw(libc::SYS_io_uring_setup, [1, 0, 0, 0, 0, 0]),
        -i64::from(libc::EPERM),
        "io_uring_setup"
    );
    assert_eq!(
        raw(libc::SYS_clone3, [0, 0, 0, 0, 0, 0]),
        -i64::from(libc::ENOSYS)
    );
    assert_eq!(
        raw(
            libc::SYS_unshare,
            [libc::CLONE_NEWUTS as u64, 0, 0, 0, 0, 0]
        ),
        -i64::from(libc::EPERM)
    );
    assert_eq!(
        raw(libc::SYS_setns, [u64::MAX >> 32, 0, 0, 0, 0, 0]),
        -i64::from(libc::EPERM)
    );
    assert_eq!(
        raw(libc::SYS_personality, [0x0040000, 0, 0, 0, 0, 0]),
        -i64::from(libc::EPERM),
        "ADDR_NO_RANDOMIZE"
    );
    assert!(raw(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]) >= 0);
    // socket: AF_INET works, AF_ALG does not.
    let s = raw(
        libc::SYS_socket,
        [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
    );
    assert!(s >= 0, "socket(AF_INET) = {s}");
    raw(libc::SYS_close, [u64::try_from(s).unwrap(), 0, 0, 0, 0, 0]);
    assert_eq!(
        raw(
            libc::SYS_socket,
            [libc::AF_ALG as u64, libc::SOCK_SEQPACKET as u64, 0, 0, 0, 0]
        ),
        -i64::from(libc::EAFNOSUPPORT)
    );
    // glibc falls back from clone3 (ENOSYS) to clone, which the filter inspects and allows;
    // the new thread inherits the filter.
    let (value, in_thread) =
        std::thread::spawn(|| (42, raw(libc::SYS_setns, [u64::MAX >> 32, 0, 0, 0, 0, 0])))
            .join()
            .unwrap();
    assert_eq!(value, 42);
    assert_eq!(in_thread, -i64::from(libc::EPERM));
    // A fork (clone without namespace flags) and exec work too.
    let out = Command::new("/proc/self/exe").arg("--list").output();
    assert!(
        out.is_ok_and(|o| o.status.success()),
        "fork+exec under default"
    );
    // An ordinary shell pipeline runs; its children inherit the filter.
    if std::path::Path::new("/bin/sh").exists() {
        let out = Command::new("/bin/sh")
            .args([
                "-c",
                "echo hello | cat; ls / >/dev/null && grep Seccomp: /proc/self/status",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(text.contains("hello"), "{text}");
        assert!(text.contains("Seccomp:\t2"), "{text}");
    }
    println!("helper done");
}

fn expect_sigsys(helper: &str) {
    let (status, out) = run_helper(helper);
    assert_eq!(status.signal(), Some(SIGSYS), "{helper}: {status}\n{out}");
    assert!(
        out.contains("armed"),
        "{helper} died before the filter\n{out}"
    );
    assert!(!out.contains("survived"), "{out}");
}

#[test]
fn default_profile_kills_hostile_calls_and_foreign_abis() {
    if !seccomp_here() {
        return;
    }
    for h in ["helper_default_reboot", "helper_default_x32"] {
        expect_sigsys(h);
    }
    if int80_works() {
        expect_sigsys("helper_default_int80");
    } else {
        common::skip("IA-32 emulation (int 0x80) is off in this kernel");
    }
}

/// `getpid` through the i386 entry (`int 0x80`, eax = 20); `None` when the kernel has no
/// IA-32 emulation.
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

fn int80_works() -> bool {
    int80_getpid() == i64::from(std::process::id())
}

fn arm(f: &CompiledFilter) {
    no_core_dump();
    f.install_current_thread().unwrap();
    use std::io::Write;
    println!("armed");
    std::io::stdout().flush().unwrap();
}

#[test]
#[ignore = "helper: run by default_profile_kills_hostile_calls_and_foreign_abis"]
fn helper_default_reboot() {
    if !helper_mode() {
        return;
    }
    arm(&Profile::Default.compile().unwrap());
    // Invalid magic numbers: without the filter the kernel answers EINVAL (or EPERM).
    let r = raw(libc::SYS_reboot, [0, 0, 0, 0, 0, 0]);
    println!("survived {r}");
}

#[test]
#[ignore = "helper: run by default_profile_kills_hostile_calls_and_foreign_abis"]
fn helper_default_x32() {
    if !helper_mode() {
        return;
    }
    arm(&Profile::Default.compile().unwrap());
    let r = raw(libc::SYS_getpid | 0x4000_0000, [0; 6]);
    println!("survived {r}");
}

#[test]
#[ignore = "helper: run by default_profile_kills_hostile_calls_and_foreign_abis"]
fn helper_default_int80() {
    if !helper_mode() {
        return;
    }
    arm(&Profile::Default.compile().unwrap());
    let r = int80_getpid();
    println!("survived {r}");
}

#[test]
fn strict_profile_kills_open_with_sigsys() {
    if !seccomp_here() {
        return;
    }
    assert_eq!(
        Profile::Strict
            .table()
            .expected(AUDIT_ARCH_X86_64, libc::SYS_openat as i32, &[0; 6]),
        Action::KillProcess
    );
    expect_sigsys("helper_strict_open");
}

#[test]
#[ignore = "helper: run by strict_profile_kills_open_with_sigsys in a child process"]
fn helper_strict_open() {
    if !helper_mode() {
        return;
    }
    arm(&Profile::Strict.compile().unwrap());
    // Compute still works: memory, clocks, randomness, writes to an open descriptor.
    let v: Vec<u64> = (0..100_000).collect();
    let mut buf = [0u8; 8];
    assert_eq!(
        raw(
            libc::SYS_getrandom,
            [buf.as_mut_ptr() as u64, 8, 0, 0, 0, 0]
        ),
        8
    );
    let _ = std::time::Instant::now();
    println!("computed {}", v.iter().sum::<u64>());
    let r = std::fs::File::open("/etc/hostname");
    println!("survived {r:?}");
    exit_now(0);
}

mod trap {
    use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

    pub static CODE: AtomicI32 = AtomicI32::new(-1);
    pub static SYSCALL: AtomicI32 = AtomicI32::new(-1);
    pub static ARCH: AtomicU32 = AtomicU32::new(0);
    pub static ERRNO: AtomicI32 = AtomicI32::new(-1);

    /// x86_64 `siginfo_t`: signo, errno, code (3 x i32), padding, then for SIGSYS
    /// `_sigsys { void *_call_addr; int _syscall; unsigned int _arch; }` at offset 16.
    #[allow(unsafe_code)]
    pub extern "C" fn on_sigsys(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler; the reads
        // stay inside its 128 bytes, at the offsets of the x86_64 layout above.
        unsafe {
            let p = info as *const u8;
            ERRNO.store(*p.add(4).cast::<i32>(), Ordering::SeqCst);
            CODE.store(*p.add(8).cast::<i32>(), Ordering::SeqCst);
            SYSCALL.store(*p.add(24).cast::<i32>(), Ordering::SeqCst);
            ARCH.store(*p.add(28).cast::<u32>(), Ordering::SeqCst);
        }
    }
}

#[test]
fn strict_trap_variant_reports_the_system_call() {
    if !seccomp_here() {
        return;
    }
    let (status, out) = run_helper("helper_strict_trap");
    assert!(status.success(), "{status}\n{out}");
    // libtest prints "test helper_strict_trap ... " before the helper's first line.
    let line = out
        .lines()
        .find_map(|l| l.find("sigsys code=").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no report\n{out}"));
    // si_code SYS_SECCOMP (1), si_syscall openat, si_arch AUDIT_ARCH_X86_64.
    assert_eq!(
        line,
        format!(
            "sigsys code=1 syscall={} arch={:#x}",
            libc::SYS_openat,
            AUDIT_ARCH_X86_64,
        ),
        "{out}"
    );
    // The file was not opened: the call was skipped, it returned no descriptor.
    assert!(out.contains("opened nothing"), "{out}");
}

#[test]
#[ignore = "helper: run by strict_trap_variant_reports_the_system_call in a child process"]
#[allow(unsafe_code)]
fn helper_strict_trap() {
    use std::sync::atomic::Ordering;
    if !helper_mode() {
        return;
    }
    let f = CompiledFilter::compile(&Profile::Strict.table().with_kill_as(Action::Trap)).unwrap();
    // SAFETY: a zeroed sigaction with an SA_SIGINFO handler that only stores to atomics
    // (async-signal-safe); installed before the filter.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = trap::on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        assert_eq!(libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()), 0);
    }
    no_core_dump();
    f.install_current_thread().unwrap();
    let path = c"/etc/hostname";
    // AT_FDCWD (-100) goes in as the register's bits, as libc passes it.
    #[allow(clippy::cast_sign_loss)]
    let r = raw(
        libc::SYS_openat,
        [libc::AT_FDCWD as u64, path.as_ptr() as u64, 0, 0, 0, 0],
    );
    println!(
        "sigsys code={} syscall={} arch={:#x}",
        trap::CODE.load(Ordering::SeqCst),
        trap::SYSCALL.load(Ordering::SeqCst),
        trap::ARCH.load(Ordering::SeqCst),
    );
    println!(
        "si_errno {} returned {r}",
        trap::ERRNO.load(Ordering::SeqCst)
    );
    // After a trap the kernel skips the call; the value left in rax is the number itself
    // or -ENOSYS, never a descriptor: check that fcntl(F_GETFD) on it fails.
    let valid = u64::try_from(r)
        .is_ok_and(|fd| raw(libc::SYS_fcntl, [fd, libc::F_GETFD as u64, 0, 0, 0, 0]) >= 0);
    if !valid || r == libc::SYS_openat {
        println!("opened nothing");
    }
    exit_now(0);
}

#[test]
fn deny_network_allows_only_unix_sockets() {
    if !seccomp_here() {
        return;
    }
    assert_helper_ok("helper_deny_network");
}

#[test]
#[ignore = "helper: run by deny_network_allows_only_unix_sockets in a child process"]
fn helper_deny_network() {
    if !helper_mode() {
        return;
    }
    Profile::DenyNetwork
        .compile()
        .unwrap()
        .install_current_thread()
        .unwrap();
    let eaf = -i64::from(libc::EAFNOSUPPORT);
    let sock = |dom: i32, ty: i32| {
        let (dom, ty) = (u64::try_from(dom).unwrap(), u64::try_from(ty).unwrap());
        raw(libc::SYS_socket, [dom, ty, 0, 0, 0, 0])
    };
    assert_eq!(sock(libc::AF_INET, libc::SOCK_STREAM), eaf);
    assert_eq!(sock(libc::AF_INET6, libc::SOCK_DGRAM), eaf);
    assert_eq!(sock(libc::AF_NETLINK, libc::SOCK_RAW), eaf);
    assert_eq!(sock(libc::AF_PACKET, libc::SOCK_RAW), eaf);
    let u = sock(libc::AF_UNIX, libc::SOCK_STREAM);
    assert!(u >= 0, "socket(AF_UNIX) = {u}");
    raw(libc::SYS_close, [u64::try_from(u).unwrap(), 0, 0, 0, 0, 0]);
    assert!(std::net::TcpListener::bind("127.0.0.1:0").is_err());
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().expect("socketpair(AF_UNIX)");
    use std::io::{Read, Write};
    a.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    let mut fds = [0i32; 2];
    assert_eq!(
        raw(
            libc::SYS_socketpair,
            [
                libc::AF_INET as u64,
                libc::SOCK_STREAM as u64,
                0,
                fds.as_mut_ptr() as u64,
                0,
                0
            ]
        ),
        eaf
    );
    println!("helper done");
}

#[test]
fn tsync_covers_threads_that_exist_and_current_thread_does_not() {
    if !seccomp_here() {
        return;
    }
    let (status, out) = run_helper("helper_current_thread_only");
    assert!(status.success(), "{status}\n{out}");
    assert!(out.contains("helper done"), "{out}");
    let (status, out) = run_helper("helper_all_threads");
    assert!(status.success(), "{status}\n{out}");
    assert!(out.contains("helper done"), "{out}");
}

/// Spawns a thread that waits, then reports `setns(-1, 0)` (EBADF unfiltered, EPERM under
/// `default`) and its own `Seccomp:` status line.
fn bystander() -> (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<(i64, String)>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        rx.recv().unwrap();
        (
            raw(libc::SYS_setns, [u64::MAX >> 32, 0, 0, 0, 0, 0]),
            status_field("/proc/thread-self/status", "Seccomp"),
        )
    });
    (tx, h)
}

#[test]
#[ignore = "helper: run by tsync_covers_threads_that_exist_and_current_thread_does_not"]
fn helper_current_thread_only() {
    if !helper_mode() {
        return;
    }
    let f = Profile::Default.compile().unwrap();
    let (go, before) = bystander();
    f.install_current_thread().unwrap();
    assert_eq!(
        raw(libc::SYS_setns, [u64::MAX >> 32, 0, 0, 0, 0, 0]),
        -i64::from(libc::EPERM)
    );
    assert_eq!(status_field("/proc/thread-self/status", "Seccomp"), "2");
    go.send(()).unwrap();
    let (r, mode) = before.join().unwrap();
    assert_eq!(
        r,
        -i64::from(libc::EBADF),
        "the thread that existed before is unfiltered"
    );
    assert_eq!(mode, "0");
    // A thread created after the install inherits the filter.
    let (go, after) = bystander();
    go.send(()).unwrap();
    let (r, mode) = after.join().unwrap();
    assert_eq!(r, -i64::from(libc::EPERM));
    assert_eq!(mode, "2");
    println!("helper done");
}

#[test]
#[ignore = "helper: run by tsync_covers_threads_that_exist_and_current_thread_does_not"]
fn helper_all_threads() {
    if !helper_mode() {
        return;
    }
    let f = Profile::Default.compile().unwrap();
    let (go, before) = bystander();
    f.install_all_threads().unwrap();
    go.send(()).unwrap();
    let (r, mode) = before.join().unwrap();
    assert_eq!(
        r,
        -i64::from(libc::EPERM),
        "TSYNC filtered the thread that existed before"
    );
    assert_eq!(mode, "2");
    // Every thread of the process (libtest's main thread too) runs the filter now, with
    // no_new_privs set by TSYNC.
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let p = entry.unwrap().path().join("status");
        let p = p.to_str().unwrap();
        assert_eq!(status_field(p, "Seccomp"), "2", "{p}");
        assert_eq!(status_field(p, "NoNewPrivs"), "1", "{p}");
    }
    println!("helper done");
}
