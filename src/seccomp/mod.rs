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
//! - The privilege drop ([`crate::privileges`]) does the privileged work first; the filter goes in
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
mod error;
pub mod notify;
mod profiles;
pub mod syscalls;
mod table;

use std::str::FromStr;

pub use compile::CompiledFilter;
pub use error::SeccompError;
pub use notify::DeniedSyscall;
pub use table::{
    AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, Action, ArgCmp, ArgWidth, Case, CmpOp, Profile,
    ProfileTable, SyscallRule, X32_SYSCALL_BIT,
};

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
