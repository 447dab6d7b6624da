//! Violations: what a context did that it may not, as the kernel reported it.
//!
//! Every level turns its kernel's report into one [`ViolationInfo`]: a protection-key fault
//! (`SIGSEGV`/`SEGV_PKUERR`), a guard-page hit (`SEGV_ACCERR`/`SEGV_MAPERR`), a write to a
//! frozen region (userfaultfd), an OOM kill (`memory.events`), a pids-limit hit
//! (`pids.events`), a seccomp kill (`SIGSYS`), a time limit, a wasm trap. Reports are
//! delivered to the context's handler on an ordinary thread, never silently dropped.
//!
//! (The signal handler, its lock-free queue and the policies are being written; the types
//! below are shared by every level.)

use std::time::SystemTime;

use crate::isolation::ContextId;

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
    /// The seccomp filter killed the context (`SIGSYS`).
    Seccomp {
        /// The syscall number, when known.
        syscall: Option<i64>,
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
