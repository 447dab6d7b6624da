//! seccomp filters for process contexts: four profiles, compiled in the parent, installed in
//! the child with nothing but a raw system call.
//!
//! ## Overview
//!
//! A [`Profile`] names a policy (`default`, `strict`, `deny-network`, `none`). Its
//! [`ProfileTable`] is the policy written as data: for every x86_64 system call number, the
//! [`Action`] the filter must return, with argument conditions ([`ArgCmp`]) where the answer
//! depends on the arguments. [`CompiledFilter::compile`] turns the table into one classic-BPF
//! program (seccompiler generates the per-action stages; this module adds the prologue and
//! stitches the stages together, see below) and checks it with its own interpreter
//! ([`bpf`]). The parent compiles **before** `clone`; the child calls
//! [`CompiledFilter::install_current_thread`] (or [`CompiledFilter::install_all_threads`]),
//! which only sets `no_new_privs` and calls `seccomp(2)` on the pre-built instructions:
//! no allocation, no lock, async-signal-safe.
//!
//! Every filter (all but `none`) starts with the same prologue:
//!
//! ```text
//!  ld  arch ; jeq AUDIT_ARCH_X86_64 ? next : ret KILL_PROCESS   i386 (int 0x80) and others
//!  ld  nr   ; jge 0x40000000       ? ret KILL_PROCESS : next    x32 numbers (and negative ones)
//!           ; jgt 469 (MAX_KNOWN)  ? ret ERRNO(ENOSYS) : next   calls newer than the table
//!  stage 1: seccompiler filter, match -> action A, mismatch -> ja stage 2
//!  stage 2: ...
//!  ret <profile default>
//! ```
//!
//! seccompiler emits no x32 guard (rust-vmm/seccompiler#74) and only one match action per
//! filter, so each stage is one seccompiler filter whose "mismatch" return is rewritten into
//! a jump to the next stage. The first matching case of a system call wins, as in the table.
//! Stages with argument conditions come first: the kernel's constant-action cache answers
//! unconditional allows without running BPF, so only conditional calls (`futex` in
//! `strict`, `socket`, `clone`) pay for the walk. Measured here (2 M calls, release build):
//! `getpid` 144-200 ns unfiltered, 186-203 ns under `default`; `futex(FUTEX_WAKE)` 238 ns
//! unfiltered, 303-315 ns under `strict` (41 BPF instructions); the longest path, a refused
//! call in `default`, is 680 instructions of 1701 (`filter_path_lengths` in tests/seccomp.rs
//! prints them).
//!
//! ## Choices
//!
//! - `clone3` answers `ENOSYS`: its flags sit behind a pointer the filter cannot read, and
//!   glibc falls back to `clone`, whose flags the filter does check (namespace flags → `EPERM`).
//! - io_uring (`io_uring_setup`/`enter`/`register`) is `EPERM` in every profile: its
//!   operations run in kernel context and never pass through seccomp.
//! - System calls that libraries probe (`bpf`, `perf_event_open`, `userfaultfd`, keyrings,
//!   `ptrace`, mounts, `statx` in `strict`, ...) get `EPERM` or `ENOSYS`, so the library
//!   falls back; the clearly hostile ones (module loading, kexec, `reboot`, `iopl`/`ioperm`,
//!   swap, `open_by_handle_at`, `lookup_dcookie`, a foreign architecture, x32) kill the whole
//!   process with `SECCOMP_RET_KILL_PROCESS`, which the supervisor sees as `SIGSYS`.
//! - The capability drop ([`crate::caps`]) does the privileged work first; the filter goes in
//!   last, right before the closure or `execve`.
//! - `seccomp(2)` with `SECCOMP_FILTER_FLAG_NEW_LISTENER` is `EPERM` in `default` and
//!   `deny-network` (a workload may add filters of its own, never a listener; see below);
//!   `strict` refuses `seccomp(2)` altogether.
//!
//! ## Naming the denied system call
//!
//! A `SECCOMP_RET_KILL_PROCESS` ends the process with `SIGSYS`, and the parent's wait status
//! says nothing more: not which call, not which thread. So process contexts
//! ([`crate::isolation::process`]) install [`Profile::compile_notifying`]: the same program
//! with every kill of a *system call* returning `SECCOMP_RET_USER_NOTIF` instead
//! ([`Action::UserNotif`]); the architecture and x32 guards stay `KILL_PROCESS`.
//!
//! ```text
//!  supervisor                                 workload (single-threaded, after clone)
//!  ──────────                                 ───────────────────────────────────────
//!  socketpair(SEQPACKET) before cloning       caps, no_new_privs, Landlock
//!                                             seccomp(SET_MODE_FILTER, NEW_LISTENER) -> L
//!  recvmsg: L  ◀──────── SCM_RIGHTS ───────── sendmsg(L); close(L); close(socket)
//!  poll(L) ...                                execve (allowed by every profile)
//!  NOTIF_RECV: nr, arch, tid  ◀────────────── openat(...): USER_NOTIF, blocked in the kernel
//!  cgroup.kill / SIGKILL pid 1                (killed; the call never ran)
//!  Outcome { denied_syscall: openat (257), status: SIGSYS }
//! ```
//!
//! The supervisor never answers a notification (no `SECCOMP_USER_NOTIF_FLAG_CONTINUE`, no
//! spoofed return): it reads `nr` and `arch` from a zeroed `struct seccomp_notif`, kills the
//! context and reports [`DeniedSyscall`], with the status `SIGSYS` that `KILL_PROCESS` would
//! have given. So the notifier is not a policy, only a reporter, and the usual objection to
//! notifiers (the uapi header: "cannot be used to implement a security policy", because of
//! argument TOCTOU) does not apply: nothing is decided from the arguments.
//!
//! What it costs and what it needs:
//! - **Nothing on the allowed path.** The program has the same instructions; only the return
//!   values of the kill paths differ (`filter_path_lengths` in tests/seccomp.rs checks that
//!   every path has the same length and every other verdict is the same). A denied call
//!   costs a notification round trip to the supervisor (a few µs) before the kill.
//! - **No deadlock.** Between the install and `execve` the workload calls only `sendmsg`,
//!   `close` and `execve` (`write` and `exit_group` when a step fails); every profile allows
//!   them (`handover_calls_are_allowed_by_every_profile`), so none waits for a listener that
//!   has not left yet. That is why `strict` allows `execve`.
//! - **One listener per filter chain.** The kernel refuses a second one with `EBUSY`; then the
//!   child installs the plain filter ([`Profile::compile`]) and a kill is a bare `SIGSYS`,
//!   as on a kernel without user notification (before 5.0).
//! - **A `SIGSYS` without a notification** (the architecture or x32 guard, or a `SIGSYS`
//!   sent by hand) is reported as before: a seccomp kill with no call named.
//! - **A supervisor that dies** closes the listener: the kernel then fails the pending
//!   notified call (and every later one) with `ENOSYS` instead of running it, and the
//!   context's `PR_SET_PDEATHSIG` (`SIGKILL`) ends it moments later.
//!
//! Precedence, the caveat of every notifier: among stacked filters the kernel takes the most
//! severe action (`KILL_PROCESS` > `KILL_THREAD` > `TRAP` > `ERRNO` > `USER_NOTIF` > `TRACE` >
//! `LOG` > `ALLOW`), and among equal actions the newest filter's. A workload may stack filters
//! of its own (sandboxing programs do), so:
//! - its own `ERRNO`, `TRAP` or kill for a call we notify outranks ours: it can turn our kill
//!   into an error or a signal *for itself*, never make the call run;
//! - its own `USER_NOTIF` with a listener of its own would win over ours, and its listener
//!   could answer `CONTINUE`: the call would run. The kernel refuses that listener
//!   (`EBUSY`) while ours is open; once ours is closed (the supervisor died) it would not,
//!   so the profiles refuse `seccomp(2)` with `SECCOMP_FILTER_FLAG_NEW_LISTENER` themselves
//!   (`EPERM`, which outranks any `USER_NOTIF`). tests/seccomp_notify.rs makes that escape
//!   work with a table lacking the rule, then fail with the real one.
//!
//! Alternatives measured against it:
//! - The kernel's audit record (`type=SECCOMP ... syscall=257`, written for
//!   `KILL_PROCESS`): it goes to the audit daemon or the kernel log, which only root reads,
//!   is rate-limited, is global to the host, and names the process by its pid in the
//!   initial pid namespace, which the supervisor would have to match and race against pid
//!   reuse. Not available to a rootless supervisor at all.
//! - `SECCOMP_RET_TRAP` ([`ProfileTable::with_kill_as`]`(Action::Trap)`): `SIGSYS` with
//!   `si_syscall` goes to the *workload*, which can catch it, ignore the failure and go on;
//!   the supervisor learns nothing unless the workload tells it. Kept as a debugging variant.
//! - `SECCOMP_RET_TRACE` with a ptracing supervisor: one tracer per process, and it costs a
//!   stop on every traced call and forbids the workload's own debugging.
//! ## Threads
//!
//! A filter installed without TSYNC covers the calling thread and the threads it creates
//! afterwards; threads that existed before stay unfiltered. In a child between `clone` and
//! `execve` there is only one thread, so [`CompiledFilter::install_current_thread`] is the
//! whole process. [`CompiledFilter::install_all_threads`] uses `SECCOMP_FILTER_FLAG_TSYNC`.

pub mod bpf;
mod compile;
pub mod notify;
mod profiles;
pub mod syscalls;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub use compile::CompiledFilter;
pub use notify::DeniedSyscall;

use crate::error::IsolationError;

/// `AUDIT_ARCH_X86_64`: the `arch` field of `seccomp_data` for native x86_64 system calls.
pub const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `AUDIT_ARCH_I386`: the `arch` of a system call made through `int 0x80` (IA-32 emulation).
pub const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
/// `__X32_SYSCALL_BIT`: x32 system call numbers have this bit set.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What a filter tells the kernel to do with one system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Run it.
    Allow,
    /// Do not run it; return `-errno` to the caller.
    Errno(u16),
    /// Kill the whole process as if by `SIGSYS` (`SECCOMP_RET_KILL_PROCESS`).
    KillProcess,
    /// Kill only the calling thread (`SECCOMP_RET_KILL_THREAD`); never used by the profiles:
    /// it leaves a half-dead process.
    KillThread,
    /// Deliver `SIGSYS` to the calling thread (`SECCOMP_RET_TRAP`); the handler sees
    /// `si_code == SYS_SECCOMP`, `si_syscall`, `si_arch`.
    Trap,
    /// Run it and log it to the audit log (`SECCOMP_RET_LOG`).
    Log,
    /// Stop the calling thread in the kernel and notify the filter's listener
    /// (`SECCOMP_RET_USER_NOTIF`); the call runs only if the listener says so. Process
    /// contexts use it in place of [`Action::KillProcess`]: their supervisor records the call
    /// and kills the context, never letting it run (see the module docs). Without a listener
    /// the kernel fails the call with `ENOSYS`.
    UserNotif,
}

impl Action {
    /// The value a BPF program returns for this action.
    pub const fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(e) => libc::SECCOMP_RET_ERRNO | e as u32,
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Log => libc::SECCOMP_RET_LOG,
            Action::UserNotif => libc::SECCOMP_RET_USER_NOTIF,
        }
    }

    /// Decodes a filter's return value the way the kernel does: the action is the top 16
    /// bits (`SECCOMP_RET_ACTION_FULL`), the data the low 16; an action the kernel does not
    /// know kills the process. Returns `None` for `SECCOMP_RET_TRACE`, which no nebula
    /// profile uses.
    pub fn from_ret(ret: u32) -> Option<Action> {
        let data = (ret & libc::SECCOMP_RET_DATA) as u16;
        Some(match ret & libc::SECCOMP_RET_ACTION_FULL {
            libc::SECCOMP_RET_ALLOW => Action::Allow,
            libc::SECCOMP_RET_ERRNO => Action::Errno(data),
            libc::SECCOMP_RET_KILL_THREAD => Action::KillThread,
            libc::SECCOMP_RET_TRAP => Action::Trap,
            libc::SECCOMP_RET_LOG => Action::Log,
            libc::SECCOMP_RET_USER_NOTIF => Action::UserNotif,
            libc::SECCOMP_RET_TRACE => return None,
            _ => Action::KillProcess,
        })
    }

    /// The name of the action in `features().seccomp.actions`.
    pub const fn kernel_name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Errno(_) => "errno",
            Action::KillProcess => "kill_process",
            Action::KillThread => "kill_thread",
            Action::Trap => "trap",
            Action::Log => "log",
            Action::UserNotif => "user_notif",
        }
    }

    /// seccompiler has no `USER_NOTIF` action: [`Action::UserNotif`] stages are generated
    /// with a `SECCOMP_RET_TRACE` sentinel that the assembler rewrites (see `compile.rs`).
    fn to_seccompiler(self) -> seccompiler::SeccompAction {
        use seccompiler::SeccompAction as S;
        match self {
            Action::Allow => S::Allow,
            Action::Errno(e) => S::Errno(e.into()),
            Action::KillProcess => S::KillProcess,
            Action::KillThread => S::KillThread,
            Action::Trap => S::Trap,
            Action::Log => S::Log,
            Action::UserNotif => S::Trace(u32::from(compile::NOTIFY_SENTINEL_DATA)),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Allow => f.write_str("allow"),
            Action::Errno(e) => match errno_name(*e) {
                Some(n) => write!(f, "errno {n}"),
                None => write!(f, "errno {e}"),
            },
            Action::KillProcess => f.write_str("kill process (SIGSYS)"),
            Action::KillThread => f.write_str("kill thread"),
            Action::Trap => f.write_str("trap (SIGSYS to the thread)"),
            Action::Log => f.write_str("allow and log"),
            Action::UserNotif => f.write_str("notify the supervisor, which kills the process"),
        }
    }
}

fn errno_name(e: u16) -> Option<&'static str> {
    Some(match i32::from(e) {
        libc::EPERM => "EPERM",
        libc::ENOSYS => "ENOSYS",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EACCES => "EACCES",
        _ => return None,
    })
}

/// How much of a 64-bit system call argument a comparison looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgWidth {
    /// The low 32 bits (for `int` and `unsigned int` arguments: the kernel ignores the upper
    /// half, and a sign-extended negative `int` must still match).
    Dword,
    /// All 64 bits (pointers, `long`, `size_t`).
    Qword,
}

/// A comparison of an argument with a constant (unsigned, as BPF compares).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `arg == value`.
    Eq,
    /// `arg != value`.
    Ne,
    /// `arg < value`.
    Lt,
    /// `arg <= value`.
    Le,
    /// `arg > value`.
    Gt,
    /// `arg >= value`.
    Ge,
    /// `arg & mask == value & mask`.
    MaskedEq(u64),
}

/// One condition on one argument of a system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgCmp {
    /// The argument, 0 to 5.
    pub arg: u8,
    /// How many bits are compared.
    pub width: ArgWidth,
    /// The comparison.
    pub op: CmpOp,
    /// The constant.
    pub value: u64,
}

impl ArgCmp {
    /// A 32-bit comparison of argument `arg`.
    pub const fn dword(arg: u8, op: CmpOp, value: u64) -> Self {
        ArgCmp {
            arg,
            width: ArgWidth::Dword,
            op,
            value,
        }
    }

    /// A 64-bit comparison of argument `arg`.
    pub const fn qword(arg: u8, op: CmpOp, value: u64) -> Self {
        ArgCmp {
            arg,
            width: ArgWidth::Qword,
            op,
            value,
        }
    }

    /// Evaluates the condition on `args` directly (the reference semantics the oracle test
    /// holds the compiled BPF to).
    pub fn matches(&self, args: &[u64; 6]) -> bool {
        let cut = |v: u64| match self.width {
            ArgWidth::Dword => v & 0xffff_ffff,
            ArgWidth::Qword => v,
        };
        let a = cut(args[usize::from(self.arg)]);
        let v = cut(self.value);
        match self.op {
            CmpOp::Eq => a == v,
            CmpOp::Ne => a != v,
            CmpOp::Lt => a < v,
            CmpOp::Le => a <= v,
            CmpOp::Gt => a > v,
            CmpOp::Ge => a >= v,
            CmpOp::MaskedEq(m) => a & cut(m) == v & cut(m),
        }
    }

    fn to_seccompiler(self) -> Result<seccompiler::SeccompCondition, seccompiler::BackendError> {
        use seccompiler::{SeccompCmpArgLen as L, SeccompCmpOp as O};
        let len = match self.width {
            ArgWidth::Dword => L::Dword,
            ArgWidth::Qword => L::Qword,
        };
        let op = match self.op {
            CmpOp::Eq => O::Eq,
            CmpOp::Ne => O::Ne,
            CmpOp::Lt => O::Lt,
            CmpOp::Le => O::Le,
            CmpOp::Gt => O::Gt,
            CmpOp::Ge => O::Ge,
            CmpOp::MaskedEq(m) => O::MaskedEq(m),
        };
        seccompiler::SeccompCondition::new(self.arg, len, op, self.value)
    }
}

impl fmt::Display for ArgCmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = match self.width {
            ArgWidth::Dword => "(u32)",
            ArgWidth::Qword => "",
        };
        let a = self.arg;
        let v = self.value;
        match self.op {
            CmpOp::Eq => write!(f, "{w}arg{a} == {v:#x}"),
            CmpOp::Ne => write!(f, "{w}arg{a} != {v:#x}"),
            CmpOp::Lt => write!(f, "{w}arg{a} < {v:#x}"),
            CmpOp::Le => write!(f, "{w}arg{a} <= {v:#x}"),
            CmpOp::Gt => write!(f, "{w}arg{a} > {v:#x}"),
            CmpOp::Ge => write!(f, "{w}arg{a} >= {v:#x}"),
            CmpOp::MaskedEq(m) => write!(f, "{w}arg{a} & {m:#x} == {:#x}", v & m),
        }
    }
}

/// One case of a system call's verdict: if any of the condition groups holds (each group is
/// an AND), the action applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// OR of ANDs; never empty, and no group is empty.
    pub any_of: Vec<Vec<ArgCmp>>,
    /// The action when a group holds.
    pub action: Action,
}

impl Case {
    /// Whether the case applies to `args`.
    pub fn matches(&self, args: &[u64; 6]) -> bool {
        self.any_of
            .iter()
            .any(|group| group.iter().all(|c| c.matches(args)))
    }
}

/// What a profile does with one system call: the first case that matches, else `otherwise`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallRule {
    /// The x86_64 system call number.
    pub nr: u32,
    /// Its name.
    pub name: &'static str,
    /// Argument-dependent cases, tried in order.
    pub cases: Vec<Case>,
    /// The action when no case matches (or the only action, without cases).
    pub otherwise: Action,
    /// Why, in a few words.
    pub why: &'static str,
}

impl SyscallRule {
    /// The action for these arguments.
    pub fn action(&self, args: &[u64; 6]) -> Action {
        self.cases
            .iter()
            .find(|c| c.matches(args))
            .map_or(self.otherwise, |c| c.action)
    }
}

impl fmt::Display for SyscallRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): ", self.name, self.nr)?;
        for c in &self.cases {
            let groups: Vec<String> = c
                .any_of
                .iter()
                .map(|g| {
                    g.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" && ")
                })
                .collect();
            write!(f, "{} if {}; ", c.action, groups.join(" || "))?;
        }
        if self.cases.is_empty() {
            write!(f, "{}", self.otherwise)?;
        } else {
            write!(f, "else {}", self.otherwise)?;
        }
        if !self.why.is_empty() {
            write!(f, " ({})", self.why)?;
        }
        Ok(())
    }
}

/// A profile written as data: what the compiled filter must answer for every system call.
/// The oracle test replays the compiled program against [`ProfileTable::expected`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileTable {
    /// Which profile this is.
    pub profile: Profile,
    /// The system calls the profile names, by number.
    pub rules: BTreeMap<u32, SyscallRule>,
    /// The action for known system calls the profile does not name.
    pub default: Action,
    /// The action for a foreign architecture (i386 through `int 0x80`, ...).
    pub bad_arch: Action,
    /// The action for numbers with the x32 bit, or negative ones (`nr >= 0x40000000`).
    pub x32: Action,
    /// Numbers above this are newer than the table...
    pub max_known: u32,
    /// ... and get this action (`ENOSYS`, so that libraries fall back).
    pub above_known: Action,
}

impl ProfileTable {
    /// The action the filter must return for a system call `nr` made with architecture
    /// `arch` and arguments `args`.
    pub fn expected(&self, arch: u32, nr: i32, args: &[u64; 6]) -> Action {
        if arch != AUDIT_ARCH_X86_64 {
            return self.bad_arch;
        }
        let n = nr as u32;
        if n >= X32_SYSCALL_BIT {
            return self.x32;
        }
        if n > self.max_known {
            return self.above_known;
        }
        self.rules.get(&n).map_or(self.default, |r| r.action(args))
    }

    /// The rule for `nr`, if the profile names it.
    pub fn rule(&self, nr: u32) -> Option<&SyscallRule> {
        self.rules.get(&nr)
    }

    /// One line about what the profile does with native system call `nr` (for reports such
    /// as "killed by seccomp: open (2): ...").
    pub fn describe(&self, nr: u32) -> String {
        if nr >= X32_SYSCALL_BIT {
            return format!("x32 or negative number {nr:#x}: {}", self.x32);
        }
        if nr > self.max_known {
            return format!("{nr}: newer than the table: {}", self.above_known);
        }
        match self.rules.get(&nr) {
            Some(r) => r.to_string(),
            None => format!(
                "{} ({nr}): {} (profile default)",
                syscalls::name(nr).unwrap_or("unnamed"),
                self.default
            ),
        }
    }

    /// The same table with every `KillProcess` verdict of a system call (and the default)
    /// replaced by `action`; the architecture and x32 verdicts stay `KillProcess`. With
    /// [`Action::UserNotif`] this is what process contexts install
    /// ([`Profile::compile_notifying`]); with [`Action::Trap`] a debugging variant whose
    /// `SIGSYS` handler can report `si_syscall`; with [`Action::Log`] a learning variant.
    pub fn with_kill_as(mut self, action: Action) -> Self {
        let swap = |a: &mut Action| {
            if *a == Action::KillProcess {
                *a = action;
            }
        };
        swap(&mut self.default);
        for r in self.rules.values_mut() {
            swap(&mut r.otherwise);
            for c in &mut r.cases {
                swap(&mut c.action);
            }
        }
        self
    }

    /// Every action the filter can return (for the probe: the kernel must know each).
    pub fn actions(&self) -> Vec<Action> {
        let mut v = vec![self.default, self.bad_arch, self.x32, self.above_known];
        for r in self.rules.values() {
            v.push(r.otherwise);
            v.extend(r.cases.iter().map(|c| c.action));
        }
        v.sort();
        v.dedup();
        v
    }
}

/// The named policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Close to Docker's default: ordinary programs run; namespaces, mounts, kernel
    /// modules, kexec, BPF, perf, userfaultfd, keyrings, io_uring, tracing and clock setting
    /// are refused (`EPERM`, or a kill for the clearly hostile). Default action `EPERM`.
    Default,
    /// Compute only: read/write on descriptors that are already open, memory management
    /// without `PROT_EXEC`, futexes, signals' return path, clocks, `getrandom`, exit. No
    /// `open`, no `socket`, no new threads. Default action: kill the process. Meant for
    /// closures; `execve` is allowed (the exec way into a context needs it after the
    /// filter is in), but a dynamically linked program is killed at its loader's first
    /// `openat`.
    Strict,
    /// `default`, plus `socket` and `socketpair` only for `AF_UNIX` (`EAFNOSUPPORT`
    /// otherwise). Pair it with an empty network namespace, which is the real control.
    DenyNetwork,
    /// No filter at all.
    None,
}

impl Profile {
    /// All profiles.
    pub const ALL: [Profile; 4] = [
        Profile::Default,
        Profile::Strict,
        Profile::DenyNetwork,
        Profile::None,
    ];

    /// The profile's name as the CLI spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Strict => "strict",
            Profile::DenyNetwork => "deny-network",
            Profile::None => "none",
        }
    }

    /// Whether the profile lets the child call `execve`. Every profile does: the exec way
    /// into a context calls it after the filter is installed (`strict` allowed no `execve`
    /// before process contexts reported the denied call by notification).
    pub const fn allows_exec(self) -> bool {
        true
    }

    /// The profile as data.
    pub fn table(self) -> ProfileTable {
        profiles::table(self)
    }

    /// Compiles the profile (in the parent, before `clone`); see [`CompiledFilter::compile`].
    ///
    /// # Errors
    /// As [`CompiledFilter::compile`].
    pub fn compile(self) -> Result<CompiledFilter, SeccompError> {
        CompiledFilter::compile(&self.table())
    }

    /// Compiles the profile for a supervised process: every kill of a system call becomes
    /// [`Action::UserNotif`] (`table().with_kill_as(Action::UserNotif)`), so the supervisor
    /// holding the listener learns which call was denied and kills the context itself. The
    /// architecture and x32 guards stay `KILL_PROCESS`. The program has the same
    /// instructions as [`Profile::compile`]'s, only the return values of its kill paths
    /// differ (`filter_path_lengths` in tests/seccomp.rs compares them).
    ///
    /// # Errors
    /// As [`CompiledFilter::compile`]; [`SeccompError::Unsupported`] when the kernel lacks
    /// `SECCOMP_RET_USER_NOTIF` (Linux 5.0).
    pub fn compile_notifying(self) -> Result<CompiledFilter, SeccompError> {
        CompiledFilter::compile(&self.table().with_kill_as(Action::UserNotif))
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = SeccompError;
    fn from_str(s: &str) -> Result<Self, SeccompError> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| SeccompError::UnknownProfile {
                name: s.to_string(),
            })
    }
}

/// What went wrong while compiling or installing a filter.
///
/// The install variants ([`SeccompError::SetNoNewPrivs`], [`SeccompError::InstallFilter`],
/// [`SeccompError::SyncThreads`], [`SeccompError::InstallListener`],
/// [`SeccompError::SendListener`]) hold only integers: they are built in the child between
/// `clone` and `execve` without allocating, and [`SeccompError::encode`] packs them into a
/// `u64` for the pipe back to the supervisor ([`SeccompError::decode`] unpacks).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// No such profile.
    #[error("unknown seccomp profile {name:?}; Hint: one of default, strict, deny-network, none")]
    UnknownProfile {
        /// What was asked for.
        name: String,
    },
    /// The kernel cannot install filters, or lacks a return action the profile uses.
    #[error("seccomp filters are not available here: {reason}; nebula-ctl probe shows why")]
    Unsupported {
        /// The probe's reason.
        reason: String,
    },
    /// seccompiler refused a condition, rule or stage.
    #[error("profile {profile}: seccompiler refused {what}")]
    BuildStage {
        /// The profile.
        profile: Profile,
        /// Which system call or stage.
        what: String,
        /// seccompiler's reason.
        #[source]
        source: seccompiler::BackendError,
    },
    /// seccompiler's output did not start with the architecture check this module strips.
    #[error(
        "profile {profile}: seccompiler's program does not start with its 3-instruction architecture check; Hint: the seccompiler version changed its code generation"
    )]
    UnexpectedPrologue {
        /// The profile.
        profile: Profile,
    },
    /// The program is longer than the kernel accepts.
    #[error("profile {profile}: {len} BPF instructions, the kernel accepts at most 4096")]
    ProgramTooLong {
        /// The profile.
        profile: Profile,
        /// The length.
        len: usize,
    },
    /// The assembled program fails the checks the kernel applies (jump targets, loads).
    #[error("profile {profile}: the assembled program is invalid")]
    VerifyProgram {
        /// The profile.
        profile: Profile,
        /// What the checker found.
        #[source]
        source: bpf::BpfError,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed in the child.
    #[error("prctl(PR_SET_NO_NEW_PRIVS) failed with errno {errno}")]
    SetNoNewPrivs {
        /// The errno.
        errno: i32,
    },
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed.
    #[error(
        "seccomp(SECCOMP_SET_MODE_FILTER{}) failed with errno {errno}{}",
        if *tsync { ", TSYNC" } else { "" },
        if *errno == libc::ENOMEM { "; Hint: too many filters are stacked already (the kernel caps their total length)" } else { "" }
    )]
    InstallFilter {
        /// The errno.
        errno: i32,
        /// Whether TSYNC was asked for.
        tsync: bool,
    },
    /// TSYNC could not synchronise thread `tid` (it runs a filter that is not an ancestor of
    /// the caller's).
    #[error(
        "seccomp TSYNC: thread {tid} has a different filter; Hint: install before creating threads, or from the thread whose filter the others inherited"
    )]
    SyncThreads {
        /// The thread that could not be synchronised.
        tid: i32,
    },
    /// `seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER)` failed.
    #[error(
        "seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER) failed with errno {errno}{}",
        match *errno {
            libc::EBUSY => "; Hint: a filter with a listener is in this thread's chain already (one per chain); process contexts install the plain filter then",
            libc::EINVAL => "; Hint: the kernel lacks seccomp user notification (Linux 5.0); nebula-ctl probe lists the actions it has",
            _ => "",
        }
    )]
    InstallListener {
        /// The errno.
        errno: i32,
    },
    /// Sending the listener to the supervisor (`sendmsg` with `SCM_RIGHTS`) failed.
    #[error(
        "sending the seccomp listener to the supervisor failed with errno {errno}{}",
        if *errno == libc::EPIPE { "; Hint: the supervisor ended before the context started" } else { "" }
    )]
    SendListener {
        /// The errno.
        errno: i32,
    },
}

impl SeccompError {
    /// Packs an install error (built in the child) into a `u64` for a pipe; `None` for the
    /// parent-side variants.
    pub fn encode(&self) -> Option<u64> {
        let (tag, v): (u64, i32) = match *self {
            SeccompError::SetNoNewPrivs { errno } => (1, errno),
            SeccompError::InstallFilter {
                errno,
                tsync: false,
            } => (2, errno),
            SeccompError::InstallFilter { errno, tsync: true } => (3, errno),
            SeccompError::SyncThreads { tid } => (4, tid),
            SeccompError::InstallListener { errno } => (5, errno),
            SeccompError::SendListener { errno } => (6, errno),
            _ => return None,
        };
        Some(tag << 32 | u64::from(v as u32))
    }

    /// Unpacks what [`SeccompError::encode`] packed.
    pub fn decode(code: u64) -> Option<SeccompError> {
        let v = code as u32 as i32;
        Some(match code >> 32 {
            1 => SeccompError::SetNoNewPrivs { errno: v },
            2 => SeccompError::InstallFilter {
                errno: v,
                tsync: false,
            },
            3 => SeccompError::InstallFilter {
                errno: v,
                tsync: true,
            },
            4 => SeccompError::SyncThreads { tid: v },
            5 => SeccompError::InstallListener { errno: v },
            6 => SeccompError::SendListener { errno: v },
            _ => return None,
        })
    }
}

impl From<crate::sys::seccomp::Failure> for SeccompError {
    fn from(f: crate::sys::seccomp::Failure) -> Self {
        use crate::sys::seccomp::Failure;
        match f {
            Failure::SetNoNewPrivs(errno) => SeccompError::SetNoNewPrivs { errno },
            Failure::InstallFilter { errno, tsync } => SeccompError::InstallFilter { errno, tsync },
            Failure::SyncThreads(tid) => SeccompError::SyncThreads { tid },
            Failure::InstallListener(errno) => SeccompError::InstallListener { errno },
            Failure::SendListener(errno) => SeccompError::SendListener { errno },
        }
    }
}

impl From<SeccompError> for IsolationError {
    fn from(e: SeccompError) -> Self {
        match e {
            SeccompError::Unsupported { reason } => IsolationError::Unsupported {
                feature: "seccomp",
                reason,
            },
            SeccompError::UnknownProfile { .. } => IsolationError::InvalidConfig(e.to_string()),
            SeccompError::SetNoNewPrivs { errno }
            | SeccompError::InstallFilter { errno, .. }
            | SeccompError::InstallListener { errno }
            | SeccompError::SendListener { errno } => IsolationError::System {
                operation: e.to_string(),
                source: std::io::Error::from_raw_os_error(errno),
            },
            other => IsolationError::System {
                operation: other.to_string(),
                source: std::io::Error::other(
                    std::error::Error::source(&other)
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                ),
            },
        }
    }
}
