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

pub mod capability;
pub mod channel;
mod context;
pub mod hardware;
pub mod ipc;
pub mod process;
pub mod tenant;
pub mod tenant_process;
pub mod thread;
#[cfg(feature = "wasm")]
pub mod wasm;

pub use capability::{CapPermissions, CapabilityId, CapabilitySystem, Grant};
pub use channel::{IsolatedChannel, Message};
pub use context::{ContextBuilder, ContextId, ContextStats, IsolatedContext, Permissions};
pub use tenant::{TenantLimits, TenantManager, TenantMetrics};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::error::{IsolationError, Result};

/// How strongly a workload is separated from the rest, mapped to a mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityLevel {
    /// A thread with its own protection-key domain (contains bugs, not attackers).
    Low,
    /// A child process in its own namespaces and cgroup.
    Medium,
    /// A wasm instance (feature `wasm`).
    High,
    /// A virtual machine.
    Critical,
}

/// The limits and permissions of a region context, as the builder collects them.
#[derive(Clone, Debug, Default)]
pub struct ContextConfig {
    /// Name for reports (defaults to `ctx-<id>`).
    pub name: Option<String>,
    /// Budget in bytes (the sum of what is handed out, in 16-byte granules, this context's
    /// and its descendants'). `None`: only the region size bounds it.
    pub memory_limit: Option<u64>,
    /// Size of the region's reservation in bytes; defaults to the memory limit, or
    /// [`DEFAULT_REGION_SIZE`] without one.
    pub region_size: Option<u64>,
    /// Most allocations this context may make between resets.
    pub max_allocations: Option<u64>,
    /// What the context may do with its memory.
    pub permissions: Option<Permissions>,
    /// Deadline for [`IsolatedContext::execute`].
    pub timeout: Option<std::time::Duration>,
}

/// The byte threshold of a usage monitor: `fraction` (in (0, 1]) of `limit`, or an
/// `InvalidConfig` error naming `who` when there is no limit or the fraction is out of range.
pub(crate) fn monitor_threshold(limit: Option<u64>, fraction: f64, who: &str) -> Result<u64> {
    let Some(limit) = limit else {
        return Err(IsolationError::InvalidConfig(format!(
            "{who} has no memory limit to take a fraction of; set one first"
        )));
    };
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(IsolationError::InvalidConfig(format!(
            "monitor threshold {fraction} is not in (0, 1]"
        )));
    }
    Ok((limit as f64 * fraction).ceil() as u64)
}

/// Region size used when neither a memory limit nor a region size is given: 64 MiB of
/// address space (it costs no memory until used).
pub const DEFAULT_REGION_SIZE: u64 = 64 << 20;

/// The entry point: creates contexts and finds them again by id.
#[derive(Debug, Default)]
pub struct MemoryIsolation {
    registry: Arc<Registry>,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    contexts: Mutex<HashMap<ContextId, Weak<context::Account>>>,
}

impl Registry {
    pub(crate) fn insert(&self, id: ContextId, account: &Arc<context::Account>) {
        self.lock().insert(id, Arc::downgrade(account));
    }

    pub(crate) fn remove(&self, id: ContextId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContextId, Weak<context::Account>>> {
        self.contexts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The isolation a [`SecurityLevel`] maps to, ready to use
/// ([`MemoryIsolation::for_level`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum LevelIsolation {
    /// `Low`: protection-key domains; run code with
    /// [`thread::ThreadIsolation::new`]`(&domains)`.
    Thread {
        /// The probe token.
        pkeys: crate::pkey::Pkeys,
        /// A domain set to create domains in.
        domains: crate::pkey::DomainSet,
    },
    /// `Medium`: process contexts with the strict default configuration.
    Process(Box<process::ProcessIsolation>),
    /// `High`: wasm instances.
    #[cfg(feature = "wasm")]
    Wasm(wasm::WasmIsolation),
    /// `Critical`: a virtual machine per command.
    Hardware(Box<hardware::HardwareIsolation>),
}

impl MemoryIsolation {
    /// The seed's best practice: pick the mechanism by how much you trust the code.
    /// `Low` → a thread in its own protection-key domain, `Medium` → a process context,
    /// `High` → a wasm instance (built with the `wasm` feature), `Critical` → a virtual
    /// machine.
    ///
    /// # Errors
    /// [`IsolationError::Unsupported`] naming what this host or build lacks (the same
    /// answer as `nebula-ctl probe`): no PKU for `Low`, no user namespaces for `Medium`,
    /// a build without `wasm` for `High`; for `Critical`, no qemu or kernel (the first
    /// `Critical` on a host boot also probes whether KVM really works: 3 to 5 s, then cached).
    pub fn for_level(level: SecurityLevel) -> Result<LevelIsolation> {
        match level {
            SecurityLevel::Low => {
                let pkeys = crate::pkey::Pkeys::probe()?;
                let domains = crate::pkey::DomainSet::new(&pkeys);
                Ok(LevelIsolation::Thread { pkeys, domains })
            }
            SecurityLevel::Medium => Ok(LevelIsolation::Process(Box::new(
                process::ProcessIsolation::new(process::ProcessConfig::new())?,
            ))),
            #[cfg(feature = "wasm")]
            SecurityLevel::High => Ok(LevelIsolation::Wasm(wasm::WasmIsolation::new(
                Default::default(),
            )?)),
            #[cfg(not(feature = "wasm"))]
            SecurityLevel::High => Err(IsolationError::Unsupported {
                feature: "the wasm level",
                reason:
                    "this build has no `wasm` feature; rebuild with `cargo build --features wasm`"
                        .into(),
            }),
            SecurityLevel::Critical => Ok(LevelIsolation::Hardware(Box::new(
                hardware::HardwareIsolation::new(hardware::HardwareConfig::new())?,
            ))),
        }
    }

    /// A fresh isolation manager with no contexts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts building a region context.
    pub fn create_context(&self) -> ContextBuilder<'_> {
        ContextBuilder::new(Arc::clone(&self.registry))
    }

    /// Usage of a live context by id.
    ///
    /// # Errors
    /// [`IsolationError::ContextNotFound`] when no live context has this id.
    pub fn context_stats(&self, id: ContextId) -> Result<ContextStats> {
        let acct = self.registry.lock().get(&id).and_then(Weak::upgrade);
        acct.map(|a| a.stats())
            .ok_or(IsolationError::ContextNotFound(id))
    }

    /// Ids of the contexts alive now, in creation order.
    pub fn contexts(&self) -> Vec<ContextId> {
        let map = self.registry.lock();
        let mut ids: Vec<ContextId> = map
            .iter()
            .filter(|(_, w)| w.strong_count() > 0)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }
}
