//! The four profiles as tables.
//!
//! `default` follows moby's `seccomp/default.json` for a container without extra
//! capabilities (an allowlist, default `EPERM`), with the choices of the research note: no
//! io_uring, `clone3` → `ENOSYS`, `clone`/`unshare` only without namespace flags, `setns`
//! never (its `nstype` 0 joins any namespace type, so its flags cannot be filtered),
//! `socket` without `AF_ALG`/`AF_VSOCK`, `personality` only for the values moby allows, no
//! `process_vm_readv`/`writev` and no `ptrace` (the context has nothing to debug that the
//! supervisor would not), `seccomp(2)` without `SECCOMP_FILTER_FLAG_NEW_LISTENER` (see the
//! precedence caveat in the module docs above), and kills for what no sandboxed program has
//! a reason to call.
//!
//! `strict` allows `execve` (the listener handover comes before it) and answers `access`
//! with `ENOSYS`, so a dynamically linked program is stopped at its loader's first `openat`.

use std::collections::BTreeMap;

use super::syscalls;
use super::table::{Action, ArgCmp, Case, CmpOp, Profile, ProfileTable, SyscallRule};

// errno values are below 4096: u16 holds them.
#[allow(clippy::cast_possible_truncation)]
const EPERM: Action = Action::Errno(libc::EPERM as u16);
#[allow(clippy::cast_possible_truncation)]
const ENOSYS: Action = Action::Errno(libc::ENOSYS as u16);
#[allow(clippy::cast_possible_truncation)]
const EAFNOSUPPORT: Action = Action::Errno(libc::EAFNOSUPPORT as u16);

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET`: moby's mask for `clone` (in `clone`, bit 0x80 is part of the
/// exit signal, so `CLONE_NEWTIME` cannot be asked for there).
pub(crate) const CLONE_NS_FLAGS: u64 = 0x7e02_0000;
/// The same plus `CLONE_NEWTIME` (0x80), for `unshare`.
pub(crate) const UNSHARE_NS_FLAGS: u64 = CLONE_NS_FLAGS | 0x80;
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`, in the `flags` argument of `seccomp(2)`.
const NEW_LISTENER: u64 = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;

/// The ordinary system calls moby's default profile allows unconditionally on x86_64 (minus
/// what this module refuses on purpose, see the module docs).
const DEFAULT_ALLOW: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chroot",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "file_getattr",
    "file_setattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_mempolicy",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "map_shadow_stack",
    "mbind",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// Killed in every profile that names them: no sandboxed program has a reason to call
/// them, and none is a probe a library makes.
const HOSTILE: &[&str] = &[
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "iopl",
    "ioperm",
    "swapon",
    "swapoff",
    "open_by_handle_at",
    "lookup_dcookie",
];

/// Refused with `EPERM` in `default` (explicitly named so the table documents them; they
/// would get the default `EPERM` anyway).
const DEFAULT_EPERM: &[(&str, &str)] = &[
    ("mount", "mounts belong to the supervisor"),
    ("umount2", "mounts belong to the supervisor"),
    ("pivot_root", "mounts belong to the supervisor"),
    ("fsopen", "new mount API"),
    ("fsconfig", "new mount API"),
    ("fsmount", "new mount API"),
    ("fspick", "new mount API"),
    ("move_mount", "new mount API"),
    ("open_tree", "new mount API"),
    ("open_tree_attr", "new mount API"),
    ("mount_setattr", "new mount API"),
    ("ptrace", "debugging other processes"),
    ("process_vm_readv", "reading another process's memory"),
    ("process_vm_writev", "writing another process's memory"),
    ("kcmp", "ptrace-class inspection"),
    ("pidfd_getfd", "stealing another process's descriptors"),
    ("process_madvise", "ptrace-class memory control"),
    ("bpf", "eBPF programs (probed by libraries)"),
    ("perf_event_open", "perf (probed by profilers)"),
    ("userfaultfd", "an exploit primitive (probed by runtimes)"),
    ("keyctl", "kernel keyrings are not namespaced"),
    ("add_key", "kernel keyrings are not namespaced"),
    ("request_key", "kernel keyrings are not namespaced"),
    ("setns", "joining namespaces; nstype 0 joins any type"),
    ("settimeofday", "setting the clock"),
    ("clock_settime", "setting the clock"),
    ("acct", "process accounting"),
    ("quotactl", "quotas"),
    ("quotactl_fd", "quotas"),
    ("syslog", "the kernel log"),
    ("vhangup", "terminal hangup"),
    (
        "sethostname",
        "the UTS namespace's name belongs to the supervisor",
    ),
    (
        "setdomainname",
        "the UTS namespace's name belongs to the supervisor",
    ),
    ("fanotify_init", "system-wide file monitoring"),
    ("lsm_get_self_attr", "LSM attributes"),
    ("lsm_set_self_attr", "LSM attributes"),
    ("lsm_list_modules", "LSM attributes"),
    ("migrate_pages", "moving another process's pages"),
    ("move_pages", "moving another process's pages"),
    ("modify_ldt", "16-bit segments, a history of CVEs"),
    ("uselib", "obsolete"),
    ("ustat", "obsolete"),
    ("sysfs", "obsolete"),
    ("_sysctl", "obsolete"),
    ("nfsservctl", "obsolete"),
];

/// The io_uring calls: their operations run in kernel context and bypass seccomp.
const IO_URING: &[&str] = &["io_uring_setup", "io_uring_enter", "io_uring_register"];

/// Answered with `ENOSYS` in `strict`: libraries probe them and fall back on `ENOSYS`
/// (`access`: the dynamic loader's first question, "is there an /etc/ld.so.preload?").
const STRICT_ENOSYS: &[&str] = &[
    "access",
    "faccessat",
    "statx",
    "faccessat2",
    "openat2",
    "close_range",
    "pidfd_open",
    "futex_waitv",
];

/// The compute-only allowlist (unconditional part).
const STRICT_ALLOW: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "close",
    "lseek",
    "fstat",
    "exit",
    "exit_group",
    "brk",
    "munmap",
    "madvise",
    "mremap",
    "futex_wait",
    "futex_wake",
    "rt_sigreturn",
    "rt_sigprocmask",
    "rt_sigaction",
    "sigaltstack",
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "time",
    "clock_nanosleep",
    "nanosleep",
    "getrandom",
    "sched_yield",
    "sched_getaffinity",
    "getpid",
    "gettid",
    "restart_syscall",
    "rseq",
    "set_robust_list",
    "membarrier",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "recvmsg",
    "sendmsg",
    "recvfrom",
    "sendto",
    "uretprobe",
    // The exec way in: the new program runs under the same filter. The listener handover
    // (sendmsg, close) and this execve come after the filter is installed, so they must never
    // be notified (`handover_calls_are_allowed_by_every_profile`).
    "execve",
];

struct Builder {
    rules: BTreeMap<u32, SyscallRule>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            rules: BTreeMap::new(),
        }
    }

    /// Sets the rule for `name`, replacing an earlier one. The names are constants of this
    /// file; a misspelt one is a bug that the unit tests catch.
    fn rule(&mut self, name: &'static str, cases: Vec<Case>, otherwise: Action, why: &'static str) {
        let nr = syscalls::number(name)
            .unwrap_or_else(|| panic!("profile names unknown system call {name:?}"));
        let name = syscalls::name(nr).unwrap_or(name);
        self.rules.insert(
            nr,
            SyscallRule {
                nr,
                name,
                cases,
                otherwise,
                why,
            },
        );
    }

    fn set(&mut self, names: &[&'static str], action: Action, why: &'static str) {
        for n in names {
            self.rule(n, vec![], action, why);
        }
    }
}

fn case(action: Action, any_of: Vec<Vec<ArgCmp>>) -> Case {
    Case { any_of, action }
}

fn common_tail(b: &mut Builder) {
    b.set(IO_URING, EPERM, "io_uring operations bypass seccomp");
    b.set(
        &["clone3"],
        ENOSYS,
        "flags behind a pointer; glibc falls back to clone",
    );
    b.set(HOSTILE, Action::KillProcess, "hostile");
}

fn default_builder() -> Builder {
    let mut b = Builder::new();
    b.set(DEFAULT_ALLOW, Action::Allow, "");
    for &(n, why) in DEFAULT_EPERM {
        b.rule(n, vec![], EPERM, why);
    }
    b.rule(
        "clone",
        vec![case(
            Action::Allow,
            vec![vec![ArgCmp::dword(0, CmpOp::MaskedEq(CLONE_NS_FLAGS), 0)]],
        )],
        EPERM,
        "no namespace flags",
    );
    b.rule(
        "unshare",
        vec![case(
            Action::Allow,
            vec![vec![ArgCmp::dword(0, CmpOp::MaskedEq(UNSHARE_NS_FLAGS), 0)]],
        )],
        EPERM,
        "no namespace flags",
    );
    b.rule(
        "personality",
        vec![case(
            Action::Allow,
            [0u64, 0x8, 0x20000, 0x20008, 0xffff_ffff]
                .into_iter()
                .map(|v| vec![ArgCmp::dword(0, CmpOp::Eq, v)])
                .collect(),
        )],
        EPERM,
        "PER_LINUX, PER_LINUX32, UNAME26 and the query only (no ADDR_NO_RANDOMIZE)",
    );
    b.rule(
        "seccomp",
        vec![case(
            EPERM,
            vec![vec![ArgCmp::dword(
                1,
                CmpOp::MaskedEq(NEW_LISTENER),
                NEW_LISTENER,
            )]],
        )],
        Action::Allow,
        "own filters, but no listener of its own: a newer USER_NOTIF filter would win over the supervisor's",
    );
    b.rule(
        "socket",
        vec![case(
            Action::Allow,
            vec![
                vec![ArgCmp::dword(0, CmpOp::Lt, libc::AF_ALG as u64)],
                vec![ArgCmp::dword(0, CmpOp::Eq, 39)],
                vec![ArgCmp::dword(0, CmpOp::Gt, libc::AF_VSOCK as u64)],
            ],
        )],
        EAFNOSUPPORT,
        "no AF_ALG (38), no AF_VSOCK (40)",
    );
    common_tail(&mut b);
    b
}

fn unix_only(b: &mut Builder, name: &'static str) {
    b.rule(
        name,
        vec![case(
            Action::Allow,
            vec![vec![ArgCmp::dword(0, CmpOp::Eq, libc::AF_UNIX as u64)]],
        )],
        EAFNOSUPPORT,
        "AF_UNIX only",
    );
}

fn strict_builder() -> Builder {
    let mut b = Builder::new();
    b.set(STRICT_ALLOW, Action::Allow, "");
    b.set(STRICT_ENOSYS, ENOSYS, "probed by libraries; they fall back");
    let no_exec = |arg| {
        vec![vec![ArgCmp::dword(
            arg,
            CmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )]]
    };
    b.rule(
        "mmap",
        vec![case(Action::Allow, no_exec(2))],
        EPERM,
        "no PROT_EXEC (JITs fall back on EPERM)",
    );
    b.rule(
        "mprotect",
        vec![case(Action::Allow, no_exec(2))],
        EPERM,
        "no PROT_EXEC (JITs fall back on EPERM)",
    );
    // futex: the command without FUTEX_PRIVATE_FLAG (0x80) and FUTEX_CLOCK_REALTIME (0x100).
    let futex_ops = [
        libc::FUTEX_WAIT,
        libc::FUTEX_WAKE,
        libc::FUTEX_REQUEUE,
        libc::FUTEX_CMP_REQUEUE,
        libc::FUTEX_WAKE_OP,
        libc::FUTEX_WAIT_BITSET,
        libc::FUTEX_WAKE_BITSET,
    ];
    // The futex ops are small non-negative ints.
    #[allow(clippy::cast_sign_loss)]
    b.rule(
        "futex",
        vec![case(
            Action::Allow,
            futex_ops
                .into_iter()
                .map(|op| {
                    vec![ArgCmp::dword(
                        1,
                        CmpOp::MaskedEq(!0x180 & 0xffff_ffff),
                        op as u64,
                    )]
                })
                .collect(),
        )],
        ENOSYS,
        "wait/wake/requeue/bitset ops (private or shared); PI and other ops ENOSYS",
    );
    // The fcntl commands are small non-negative ints.
    #[allow(clippy::cast_sign_loss)]
    b.rule(
        "fcntl",
        vec![case(
            Action::Allow,
            [libc::F_GETFD, libc::F_SETFD, libc::F_GETFL, libc::F_SETFL]
                .into_iter()
                .map(|c| vec![ArgCmp::dword(1, CmpOp::Eq, c as u64)])
                .collect(),
        )],
        EPERM,
        "descriptor and status flags only",
    );
    b.rule(
        "newfstatat",
        vec![case(
            Action::Allow,
            vec![vec![ArgCmp::dword(
                3,
                CmpOp::MaskedEq(libc::AT_EMPTY_PATH as u64),
                libc::AT_EMPTY_PATH as u64,
            )]],
        )],
        EPERM,
        "glibc's fstat; AT_EMPTY_PATH only (a non-empty path would still be looked up: metadata, never contents)",
    );
    common_tail(&mut b);
    b
}

/// The table of `profile`.
pub(crate) fn table(profile: Profile) -> ProfileTable {
    let (b, default) = match profile {
        Profile::Default => (default_builder(), EPERM),
        Profile::DenyNetwork => {
            let mut b = default_builder();
            unix_only(&mut b, "socket");
            unix_only(&mut b, "socketpair");
            (b, EPERM)
        }
        Profile::Strict => (strict_builder(), Action::KillProcess),
        Profile::None => (Builder::new(), Action::Allow),
    };
    let filtered = profile != Profile::None;
    let pick = |a: Action| if filtered { a } else { Action::Allow };
    ProfileTable {
        profile,
        rules: b.rules,
        default,
        bad_arch: pick(Action::KillProcess),
        x32: pick(Action::KillProcess),
        max_known: syscalls::MAX_KNOWN,
        above_known: pick(ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_builds_and_names_only_known_calls() {
        for p in Profile::ALL {
            let t = table(p);
            for (nr, r) in &t.rules {
                assert_eq!(*nr, r.nr);
                assert_eq!(syscalls::name(*nr), Some(r.name));
                for c in &r.cases {
                    assert!(!c.any_of.is_empty() && c.any_of.iter().all(|g| !g.is_empty()));
                }
            }
        }
    }

    #[test]
    fn no_name_is_listed_twice_with_different_intent() {
        // A name in two lists would silently keep only the last verdict.
        let mut seen = std::collections::BTreeSet::new();
        for n in DEFAULT_ALLOW
            .iter()
            .chain(HOSTILE)
            .chain(IO_URING)
            .chain(DEFAULT_EPERM.iter().map(|(n, _)| n))
            .chain(
                [
                    "clone",
                    "clone3",
                    "unshare",
                    "personality",
                    "socket",
                    "seccomp",
                ]
                .iter(),
            )
        {
            assert!(seen.insert(*n), "{n} listed twice in default");
        }
        let mut seen = std::collections::BTreeSet::new();
        for n in STRICT_ALLOW
            .iter()
            .chain(STRICT_ENOSYS)
            .chain(HOSTILE)
            .chain(IO_URING)
            .chain(["clone3", "mmap", "mprotect", "futex", "fcntl", "newfstatat"].iter())
        {
            assert!(seen.insert(*n), "{n} listed twice in strict");
        }
    }

    #[test]
    fn handover_calls_are_allowed_by_every_profile() {
        // Between the install (with its listener) and execve the workload calls sendmsg (the
        // listener), close (the listener, the socket), execve, and on a failure write (the
        // report) and exit_group. A notified call there would wait for a listener that has
        // not left yet: the context would hang until its time limit.
        let x = super::super::AUDIT_ARCH_X86_64;
        for p in Profile::ALL {
            let t = table(p).with_kill_as(Action::UserNotif);
            for n in ["sendmsg", "close", "execve", "write", "exit_group"] {
                let nr = syscalls::number(n).unwrap() as i32;
                for args in [[0u64; 6], [u64::MAX; 6], [7, 0x7ffd_1000, 0x4000, 0, 0, 0]] {
                    assert_eq!(t.expected(x, nr, &args), Action::Allow, "{p} {n} {args:x?}");
                }
            }
        }
    }

    #[test]
    fn no_profile_lets_a_workload_take_a_listener() {
        // seccomp(SECCOMP_SET_MODE_FILTER, flags with NEW_LISTENER, prog): never allowed, and
        // in the profiles that allow seccomp(2) an EPERM, which outranks USER_NOTIF.
        let x = super::super::AUDIT_ARCH_X86_64;
        let nr = syscalls::number("seccomp").unwrap() as i32;
        let set_filter = u64::from(libc::SECCOMP_SET_MODE_FILTER);
        for p in [Profile::Default, Profile::DenyNetwork, Profile::Strict] {
            let t = table(p);
            for flags in [
                NEW_LISTENER,
                NEW_LISTENER | 1,
                NEW_LISTENER | 0xffff_0000_0000_0000,
            ] {
                let got = t.expected(x, nr, &[set_filter, flags, 0x7ffd_1000, 0, 0, 0]);
                let want = if p == Profile::Strict {
                    Action::KillProcess
                } else {
                    EPERM
                };
                assert_eq!(got, want, "{p} flags {flags:#x}");
                let notified = t.clone().with_kill_as(Action::UserNotif);
                assert_ne!(
                    notified.expected(x, nr, &[set_filter, flags, 0, 0, 0, 0]),
                    Action::Allow
                );
            }
        }
        // A filter without a listener (e.g. TSYNC) is still the workload's own business.
        let d = table(Profile::Default);
        for flags in [0u64, 1, 1 << 40] {
            assert_eq!(
                d.expected(x, nr, &[set_filter, flags, 0, 0, 0, 0]),
                Action::Allow,
                "{flags:#x}"
            );
        }
    }

    #[test]
    fn the_promised_verdicts() {
        let d = table(Profile::Default);
        let nr = |n: &str| syscalls::number(n).unwrap();
        let a = [0u64; 6];
        let x = super::super::AUDIT_ARCH_X86_64;
        let at = |t: &ProfileTable, n: &str, args: [u64; 6]| t.expected(x, nr(n) as i32, &args);
        assert_eq!(at(&d, "mount", a), EPERM);
        assert_eq!(at(&d, "clone3", a), ENOSYS);
        assert_eq!(at(&d, "io_uring_setup", a), EPERM);
        assert_eq!(at(&d, "kexec_load", a), Action::KillProcess);
        assert_eq!(at(&d, "clone", [0x3d0f00, 0, 0, 0, 0, 0]), Action::Allow);
        assert_eq!(at(&d, "clone", [0x1000_0000, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(at(&d, "unshare", [0x80, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(at(&d, "personality", [0x0040000, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(at(&d, "socket", [38, 0, 0, 0, 0, 0]), EAFNOSUPPORT);
        assert_eq!(at(&d, "socket", [2, 0, 0, 0, 0, 0]), Action::Allow);
        assert_eq!(d.expected(x, 0x4000_0027, &a), Action::KillProcess);
        assert_eq!(
            d.expected(super::super::AUDIT_ARCH_I386, 20, &a),
            Action::KillProcess
        );
        assert_eq!(d.expected(x, 470, &a), ENOSYS);
        let n = table(Profile::DenyNetwork);
        assert_eq!(at(&n, "socket", [2, 0, 0, 0, 0, 0]), EAFNOSUPPORT);
        assert_eq!(at(&n, "socket", [1, 0, 0, 0, 0, 0]), Action::Allow);
        assert_eq!(at(&n, "socketpair", [10, 0, 0, 0, 0, 0]), EAFNOSUPPORT);
        let s = table(Profile::Strict);
        assert_eq!(at(&s, "open", a), Action::KillProcess);
        assert_eq!(at(&s, "openat", a), Action::KillProcess);
        assert_eq!(at(&s, "clone3", a), ENOSYS);
        assert_eq!(at(&s, "statx", a), ENOSYS);
        assert_eq!(at(&s, "mmap", [0, 4096, 3, 0x22, 0, 0]), Action::Allow);
        assert_eq!(at(&s, "mmap", [0, 4096, 7, 0x22, 0, 0]), EPERM);
        assert_eq!(at(&s, "futex", [0, 0x89, 0, 0, 0, 0]), Action::Allow);
        assert_eq!(at(&s, "futex", [0, 6, 0, 0, 0, 0]), ENOSYS);
        let none = table(Profile::None);
        assert_eq!(none.expected(x, 0x4000_0027, &a), Action::Allow);
        assert!(none.rules.is_empty());
    }
}
