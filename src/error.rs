//! The crate's error type: the seed's variants, and a roll-up of the module errors.
//!
//! Every fallible public function returns [`IsolationError`] or its module's own error
//! (`ProcessError`, `SeccompError`, `PkeyError`, ...), which converts into it. A limit this
//! host cannot enforce is [`IsolationError::Unsupported`] and a contradiction in the
//! configuration [`IsolationError::InvalidConfig`], whichever module found it; every other
//! module error is kept whole in its roll-up variant, so its causes stay a chain of
//! `source()`s that a printer shows once each. Variants carry the facts a caller needs to
//! act: which context, which limit, what was asked for; messages name the fix where one is
//! known.

use std::io;
use std::time::Duration;

use crate::admin::profile::ProfileError;
use crate::admin::registry::RegistryError;
use crate::base::ContextId;
use crate::isolation::hardware::HardwareError;
use crate::isolation::process::ProcessError;
#[cfg(feature = "wasm")]
use crate::isolation::wasm::{WasmError, error_chain};
use crate::memory::pkey::{PkeyError, Unsupported as PkeysUnsupported};
use crate::memory::uffd::UffdError;
use crate::memory::violation::ViolationError;
use crate::privileges::PrivilegeError;
use crate::seccomp::SeccompError;

/// What went wrong in an isolation operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IsolationError {
    /// No context with this id exists (it was dropped, or never created here).
    #[error("context {0} not found")]
    ContextNotFound(ContextId),

    /// The context was terminated ([`MemoryIsolation::terminate_context`]); it allocates and
    /// runs nothing more.
    ///
    /// [`MemoryIsolation::terminate_context`]: crate::isolation::MemoryIsolation::terminate_context
    #[error("context {0} was terminated; it allocates and runs nothing more")]
    ContextTerminated(ContextId),

    /// An operation that acts as the thread's current context ran outside one.
    #[error(
        "{operation} needs a current context; Hint: call it inside IsolatedContext::execute, or name the context (send_as, try_recv)"
    )]
    NoCurrentContext {
        /// The operation.
        operation: &'static str,
    },

    /// A configured limit would be exceeded; nothing was allocated.
    #[error(
        "context {context}: {limit} limit exceeded: {requested} requested, {used} in use, limit {max}"
    )]
    LimitExceeded {
        /// The context whose limit (or whose ancestor's limit) was hit.
        context: ContextId,
        /// Which limit: `"memory"`, `"allocations"`.
        limit: &'static str,
        /// What the operation asked for (bytes or allocations).
        requested: u64,
        /// What was already in use.
        used: u64,
        /// The limit.
        max: u64,
    },

    /// The context lacks a permission the operation needs.
    #[error("context {context}: permission denied: {operation} needs {needed}")]
    PermissionDenied {
        /// The context that asked.
        context: ContextId,
        /// What it tried to do.
        operation: &'static str,
        /// The permission it lacks (e.g. `"WRITE"`).
        needed: &'static str,
    },

    /// The context's region has no room left for this request (its reservation, not its
    /// budget, is exhausted), or the kernel refused memory.
    #[error(
        "context {context}: out of memory: {requested} bytes requested, {available} bytes left in the region of {capacity}; Hint: raise the context's region size"
    )]
    OutOfMemory {
        /// The context.
        context: ContextId,
        /// Bytes asked for (with alignment padding).
        requested: u64,
        /// Bytes left in the region.
        available: u64,
        /// The region's size.
        capacity: u64,
    },

    /// An access outside what a context may touch was detected.
    #[error("access violation at {address:#x}: {reason}")]
    AccessViolation {
        /// The faulting or checked address.
        address: usize,
        /// What was wrong.
        reason: String,
    },

    /// Code run by `execute` took longer than the context's deadline. The region level
    /// cannot preempt, so this is reported when the code returns.
    #[error(
        "context {context}: deadline of {limit:?} exceeded (ran {elapsed:?}); Hint: the process and wasm levels stop code at the deadline"
    )]
    DeadlineExceeded {
        /// The context.
        context: ContextId,
        /// Its deadline.
        limit: std::time::Duration,
        /// How long the code ran.
        elapsed: std::time::Duration,
    },

    /// Code running in an isolated thread panicked.
    #[error("isolated thread panicked: {0}")]
    ThreadPanicked(String),

    /// The channel is at its capacity.
    #[error("channel full (capacity {capacity})")]
    ChannelFull {
        /// The channel's bound.
        capacity: usize,
    },

    /// A message is larger than the channel's frame limit; it was not sent.
    #[error("message of {size} bytes exceeds the channel's limit of {max} bytes")]
    MessageTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },

    /// Bytes from the other side of a channel did not decode; the frame was dropped.
    #[error("malformed message on the channel: {reason}")]
    MalformedMessage {
        /// What the decoder said.
        reason: String,
    },

    /// The other end of a cross-process channel is gone (closed or its process died).
    #[error("channel closed by the other end")]
    ChannelClosed,

    /// No message arrived (in time).
    #[error("channel empty")]
    ChannelEmpty,

    /// A context that is not the channel's sender tried to send.
    #[error("context {0} is not this channel's sender")]
    UnauthorizedSender(ContextId),

    /// A context that is not the channel's receiver tried to receive.
    #[error("context {0} is not this channel's receiver")]
    UnauthorizedReceiver(ContextId),

    /// The capability belongs to another context.
    #[error("capability {capability} is not owned by context {context}")]
    CapabilityNotOwned {
        /// The capability's id.
        capability: u64,
        /// The context that presented it.
        context: ContextId,
    },

    /// No such capability (never granted, or revoked).
    #[error("capability {0} not found")]
    CapabilityNotFound(u64),

    /// The capability's expiry has passed.
    #[error("capability {0} expired")]
    CapabilityExpired(u64),

    /// The capability has no uses left.
    #[error("capability {0} has no uses left")]
    CapabilityExhausted(u64),

    /// The capability does not carry the permissions asked for.
    #[error("capability {capability} lacks permissions {missing}")]
    InsufficientPermissions {
        /// The capability's id.
        capability: u64,
        /// The missing permissions, by name.
        missing: String,
    },

    /// No tenant with this name.
    #[error("tenant {0:?} not found")]
    TenantNotFound(String),

    /// A wasm module exports no linear memory, so the host cannot exchange data with it.
    #[error("the wasm module exports no memory; Hint: export one as \"memory\"")]
    NoMemoryExport,

    /// The configuration asks for something invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// This host cannot provide a feature the operation needs; `nebula-ctl probe` shows the
    /// same answer.
    #[error("{feature} is not available here: {reason}")]
    Unsupported {
        /// The feature (`"pkeys"`, `"cgroup v2 memory controller"`, ...).
        feature: &'static str,
        /// Why not, and what would fix it where known.
        reason: String,
    },

    /// A cgroup v2 operation failed (the message names the file and, where known, the fix).
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),

    /// A process context could not be started, supervised or reported on.
    #[error(transparent)]
    Process(Box<ProcessError>),

    /// Dropping a process context's privileges failed.
    #[error(transparent)]
    Privileges(PrivilegeError),

    /// Installing a seccomp filter failed.
    #[error(transparent)]
    Seccomp(SeccompError),

    /// A protection-key operation failed.
    #[error(transparent)]
    Pkey(PkeyError),

    /// A userfaultfd operation failed.
    #[error(transparent)]
    Uffd(UffdError),

    /// Starting nebula's violation handling failed.
    #[error(transparent)]
    Violation(ViolationError),

    /// The registry of running contexts (`/run/nebula`) refused or failed an operation.
    #[error(transparent)]
    Registry(RegistryError),

    /// Watching a process context's memory (userfaultfd) failed.
    #[error(transparent)]
    Watch(crate::isolation::process::uffd_watch::WatchError),

    /// A hardware context (a virtual machine) failed.
    #[error(transparent)]
    Hardware(Box<HardwareError>),

    /// A wasm context failed.
    #[cfg(feature = "wasm")]
    #[error(transparent)]
    Wasm(Box<WasmError>),

    /// A system call failed.
    #[error("{operation} failed")]
    System {
        /// What the crate was doing (e.g. `"mmap of a 1 MiB region"`).
        operation: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
}

impl IsolationError {
    /// Wraps an [`io::Error`] with what was being done.
    pub fn system(operation: impl Into<String>, source: io::Error) -> Self {
        IsolationError::System {
            operation: operation.into(),
            source,
        }
    }
}

/// `Result` with [`IsolationError`].
pub type Result<T, E = IsolationError> = std::result::Result<T, E>;

impl From<ProcessError> for IsolationError {
    fn from(e: ProcessError) -> IsolationError {
        match e {
            ProcessError::Unsupported { feature, reason } => {
                IsolationError::Unsupported { feature, reason }
            }
            ProcessError::InvalidConfig(msg) => IsolationError::InvalidConfig(msg),
            other => IsolationError::Process(Box::new(other)),
        }
    }
}

impl From<PrivilegeError> for IsolationError {
    fn from(e: PrivilegeError) -> Self {
        match e {
            PrivilegeError::UnknownCapability { .. } => {
                IsolationError::InvalidConfig(e.to_string())
            }
            other => IsolationError::Privileges(other),
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
            other => IsolationError::Seccomp(other),
        }
    }
}

impl From<PkeysUnsupported> for IsolationError {
    fn from(e: PkeysUnsupported) -> Self {
        IsolationError::Unsupported {
            feature: "pkeys",
            reason: e.reason,
        }
    }
}

impl From<PkeyError> for IsolationError {
    fn from(e: PkeyError) -> Self {
        match e {
            PkeyError::InvalidSize(_) | PkeyError::OutOfBounds { .. } => {
                IsolationError::InvalidConfig(e.to_string())
            }
            PkeyError::Register(v) => v.into(),
            other => IsolationError::Pkey(other),
        }
    }
}

impl From<UffdError> for IsolationError {
    fn from(e: UffdError) -> Self {
        match e {
            UffdError::MissingFeature { .. } | UffdError::Open { .. } => {
                IsolationError::Unsupported {
                    feature: "userfaultfd",
                    reason: e.to_string(),
                }
            }
            UffdError::InvalidSize(_) | UffdError::OutOfBounds { .. } => {
                IsolationError::InvalidConfig(e.to_string())
            }
            other => IsolationError::Uffd(other),
        }
    }
}

impl From<ViolationError> for IsolationError {
    fn from(e: ViolationError) -> Self {
        match e {
            e @ ViolationError::RegistryFull { .. } => IsolationError::InvalidConfig(e.to_string()),
            other => IsolationError::Violation(other),
        }
    }
}

impl From<RegistryError> for IsolationError {
    fn from(e: RegistryError) -> IsolationError {
        IsolationError::Registry(e)
    }
}

impl From<ProfileError> for IsolationError {
    fn from(e: ProfileError) -> IsolationError {
        IsolationError::InvalidConfig(e.to_string())
    }
}

impl From<HardwareError> for IsolationError {
    fn from(e: HardwareError) -> IsolationError {
        match e {
            HardwareError::Unsupported { feature, reason } => {
                IsolationError::Unsupported { feature, reason }
            }
            HardwareError::ToolMissing { tool, .. } => IsolationError::Unsupported {
                feature: tool,
                reason: e.to_string(),
            },
            HardwareError::InvalidConfig(msg) => IsolationError::InvalidConfig(msg),
            other => IsolationError::Hardware(Box::new(other)),
        }
    }
}

#[cfg(feature = "wasm")]
impl From<WasmError> for IsolationError {
    fn from(e: WasmError) -> Self {
        match e {
            WasmError::Configure(_)
            | WasmError::Compile { .. }
            | WasmError::ModuleTooLarge { .. }
            | WasmError::ExportNotFound { .. }
            | WasmError::SignatureMismatch { .. } => IsolationError::InvalidConfig(error_chain(&e)),
            WasmError::NoMemoryExport => IsolationError::NoMemoryExport,
            WasmError::ContextNotFound(id) => IsolationError::ContextNotFound(id),
            WasmError::UnresolvedImport { .. } => IsolationError::Unsupported {
                feature: "wasm imports",
                reason: error_chain(&e),
            },
            WasmError::LimitRefused {
                context,
                limit,
                requested,
                used,
                max,
            } => IsolationError::LimitExceeded {
                context,
                limit,
                requested,
                used,
                max,
            },
            WasmError::OutOfFuel {
                context, budget, ..
            } => IsolationError::LimitExceeded {
                context,
                limit: "fuel",
                requested: budget.saturating_add(1),
                used: budget,
                max: budget,
            },
            WasmError::DeadlineExceeded {
                context,
                limit,
                elapsed,
                ..
            } => IsolationError::DeadlineExceeded {
                context,
                limit,
                elapsed,
            },
            WasmError::StackExhausted {
                context, max_stack, ..
            } => {
                let max = u64::try_from(max_stack).unwrap_or(u64::MAX);
                IsolationError::LimitExceeded {
                    context,
                    limit: "wasm stack",
                    requested: max.saturating_add(1),
                    used: max,
                    max,
                }
            }
            // wasmtime does not report the faulting linear-memory address: 0.
            WasmError::Trap { .. } => IsolationError::AccessViolation {
                address: 0,
                reason: error_chain(&e),
            },
            WasmError::MemoryAccess { offset, .. } => IsolationError::AccessViolation {
                address: offset,
                reason: error_chain(&e),
            },
            other => IsolationError::Wasm(Box::new(other)),
        }
    }
}

impl crate::isolation::hardware::Outcome {
    /// Why the context did not succeed, as an [`IsolationError`]: out of memory as
    /// [`IsolationError::LimitExceeded`] (`"guest memory"`, the killed process's `total-vm`
    /// as requested, its resident set as used), the time limit as
    /// [`IsolationError::DeadlineExceeded`], a panic or a missing status as
    /// [`IsolationError::System`]. `None` for a context that ran to its end (whatever its
    /// exit code).
    pub fn error(&self, limit: Option<Duration>) -> Option<IsolationError> {
        if self.oom_killed {
            let (requested, used) = self
                .kernel_reports
                .iter()
                .find_map(|l| crate::isolation::hardware::parse_oom_line(l))
                .unwrap_or((0, 0));
            return Some(IsolationError::LimitExceeded {
                context: self.context,
                limit: "guest memory",
                requested,
                used,
                max: self.memory,
            });
        }
        if self.timed_out {
            return Some(IsolationError::DeadlineExceeded {
                context: self.context,
                limit: limit.unwrap_or(self.run_time),
                elapsed: self.run_time,
            });
        }
        if self.guest_panic || self.status.is_none() {
            let what = self
                .kernel_reports
                .last()
                .cloned()
                .unwrap_or_else(|| "the guest ended without an exit status".into());
            return Some(IsolationError::System {
                operation: format!("context {}: guest VM", self.context),
                source: io::Error::other(what),
            });
        }
        None
    }
}

impl From<crate::isolation::process::uffd_watch::WatchError> for IsolationError {
    fn from(e: crate::isolation::process::uffd_watch::WatchError) -> IsolationError {
        use crate::isolation::process::uffd_watch::WatchError;
        match e {
            WatchError::NotWatched | WatchError::Range { .. } => {
                IsolationError::InvalidConfig(e.to_string())
            }
            other => IsolationError::Watch(other),
        }
    }
}
