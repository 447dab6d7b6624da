//! Isolation levels and their contexts.
//!
//! | Level | Unit | Enforced by | Status |
//! |---|---|---|---|
//! | region (in-process) | [`IsolatedContext`] | an mmap'd region with guard pages, atomic accounting | here |
//! | [`SecurityLevel::Low`] → thread | a thread with its own protection-key domain ([`thread`]) | `pkey_mprotect`, per-thread PKRU, seccomp thread filter | here (x86-64 with PKU) |
//! | [`SecurityLevel::Medium`] → process | a child process ([`process`]) | namespaces, cgroup v2, rlimits, capabilities, seccomp | here |
//! | [`SecurityLevel::High`] → wasm | a wasmtime store (`wasm::WasmIsolation`) | linear-memory bounds, fuel, deadlines | here (feature `wasm`) |
//! | [`SecurityLevel::Critical`] → hardware | a qemu microVM per command ([`hardware`]) | the MMU's nested page tables (KVM when a probe guest boots under it, else TCG) | here |
//!
//! Start with [`MemoryIsolation::create_context`]:
//!
//! ```
//! use nebula_memory::isolation::{MemoryIsolation, Permissions};
//!
//! let iso = MemoryIsolation::new();
//! let ctx = iso
//!     .create_context()
//!     .with_memory_limit(1 << 20)
//!     .with_max_allocations(1000)
//!     .with_permissions(Permissions::READ | Permissions::WRITE)
//!     .build()?;
//! let buf = ctx.alloc_slice(4096)?;
//! buf[0] = 7;
//! assert_eq!(ctx.stats().memory_used, 4096);
//! # Ok::<(), nebula_memory::IsolationError>(())
//! ```

mod context;
pub mod hardware;
pub mod levels;
pub mod process;
pub mod tenant;
pub mod tenant_process;
pub mod thread;
#[cfg(feature = "wasm")]
pub mod wasm;

pub use crate::authority::{capability, channel, ipc};
pub use crate::base::{ContextId, Permissions};
pub use crate::error::{IsolationError, Result};
pub use crate::sandbox::{MemorySandbox, SandboxRegion};
pub use capability::{CapPermissions, CapabilityId, CapabilitySystem, Grant, ResourceId};
pub use channel::{IsolatedChannel, Message};
pub use context::{
    ContextBuilder, ContextConfig, ContextStats, DEFAULT_REGION_SIZE, IsolatedContext,
    MemoryIsolation,
};
pub use hardware::HardwareIsolation;
pub use levels::{LevelIsolation, SecurityLevel};
pub use process::ProcessIsolation;
pub use tenant::{TenantLimits, TenantManager, TenantMetrics};
pub use thread::ThreadIsolation;
#[cfg(feature = "wasm")]
pub use wasm::{WasmContext, WasmIsolation};
