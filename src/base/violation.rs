//! The violation record: what a level reports when a context broke a rule, for handlers,
//! logs and the CLI.

use std::time::SystemTime;

use super::ContextId;

/// A system call that a context's filter refused, as the kernel's notification named it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeniedSyscall {
    /// The system call number (`seccomp_data.nr`).
    pub nr: i32,
    /// Its name, when `arch` is x86_64 and the number is in `seccomp::syscalls::X86_64`.
    pub name: Option<&'static str>,
    /// The `AUDIT_ARCH_*` of the call (`seccomp_data.arch`).
    pub arch: u32,
}

/// What kind of violation happened.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum ViolationKind {
    /// An access to memory tagged with a protection key the thread's PKRU forbids
    /// (`SEGV_PKUERR`, key from `si_pkey`).
    PkeyFault {
        /// The key the page carries.
        pkey: u32,
    },
    /// An access to a `PROT_NONE` guard page (`SEGV_ACCERR`).
    GuardPage,
    /// An access to unmapped memory or a `MADV_GUARD_INSTALL` guard (`SEGV_MAPERR`).
    Unmapped,
    /// An access the page protection forbids inside a nebula region (`SEGV_ACCERR`), e.g. a
    /// write to a read-only sandbox region or any access to one whose permissions are none.
    PageProtection {
        /// Whether the access was a write (the page-fault error code), when known.
        write: Option<bool>,
    },
    /// A span that `MemorySandbox::check_access` refused; nothing was touched.
    AccessCheck {
        /// Why it was refused.
        reason: String,
    },
    /// A write to a write-protected (frozen) region, reported by userfaultfd.
    WriteToFrozen,
    /// A lazily populated region ran past its page budget (userfaultfd missing mode).
    PageBudgetExceeded {
        /// The budget in pages.
        budget: u64,
    },
    /// The kernel's OOM killer killed the context (`memory.events oom_kill`).
    OutOfMemory {
        /// `memory.max` in bytes, when set.
        memory_max: Option<u64>,
    },
    /// A fork was refused at `pids.max` (`pids.events max`).
    PidsLimit {
        /// How many forks were refused.
        refused: u64,
    },
    /// The seccomp filter killed the context (`SIGSYS`), or refused a call and the
    /// supervisor killed the context for it (seccomp user notification).
    Seccomp {
        /// The refused call, when the kernel named it (a notification; a plain `SIGSYS`,
        /// e.g. from the architecture check, names none).
        syscall: Option<DeniedSyscall>,
    },
    /// The wall-clock limit ran out.
    TimeLimit,
    /// The CPU-time limit ran out.
    CpuTimeLimit,
    /// A wasm trap (out of bounds, fuel, deadline, a refused limit).
    WasmTrap {
        /// The trap, as wasmtime names it.
        trap: String,
    },
    /// A PSI trigger on the context's `memory.pressure` fired: its tasks were stalled on
    /// memory (typically throttled at `memory.high`) for `stall_us` within `window_us`.
    MemoryPressure {
        /// The trigger's stall threshold, in microseconds.
        stall_us: u64,
        /// The trigger's window, in microseconds.
        window_us: u64,
        /// Whether the supervisor killed the context for it.
        killed: bool,
    },
}

/// One violation, as delivered to a handler.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ViolationInfo {
    /// The faulting address, for memory violations.
    pub address: Option<usize>,
    /// What happened.
    pub kind: ViolationKind,
    /// The start of the region the address belongs to, when nebula knows it.
    pub region: Option<usize>,
    /// The offending context, when known.
    pub context: Option<ContextId>,
    /// The offending thread (kernel tid), when known.
    pub thread_id: Option<i32>,
    /// The offending process, for process contexts.
    pub pid: Option<i32>,
    /// When nebula saw it.
    pub timestamp: SystemTime,
}

/// What happens after a protection-key fault has been reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub enum Policy {
    /// Fail-stop: the handler runs, then the process aborts with the report on stderr.
    #[default]
    Abort,
    /// Record the fault and let the access proceed (pkey faults only: the key is opened in
    /// the PKRU saved in the signal frame). The key then stays open for that thread: entering
    /// a domain closes it, but leaving restores the PKRU found at entry, so it is open again
    /// afterwards, and an isolated thread keeps it for its life. Audit finds violations; it
    /// does not contain them.
    Audit,
}
