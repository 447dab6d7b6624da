//! Names for contexts and what they may do with memory.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A context's identity: unique within the process, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ContextId(u64);

impl ContextId {
    /// A new id, unique in this process (the seed's name; the same as [`ContextId::fresh`]).
    #[allow(clippy::new_without_default)] // a Default that minted a fresh id would surprise
    pub fn new() -> ContextId {
        ContextId::fresh()
    }

    /// A new id, unique in this process.
    pub fn fresh() -> ContextId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ContextId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// Rebuilds an id that another process created and sent along (the two ends of a
    /// cross-process channel name the same contexts). Ids name contexts; they grant
    /// nothing: authority is the descriptor or the capability.
    pub fn from_raw(n: u64) -> ContextId {
        ContextId(n)
    }

    /// The number behind the id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ctx-{}", self.0)
    }
}

bitflags::bitflags! {
    /// What a context may do with its memory. Committed pages get the matching page
    /// protection; allocating needs `WRITE` (a context that cannot write cannot fill what
    /// it allocates).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Permissions: u8 {
        /// Pages are readable.
        const READ = 1;
        /// Pages are writable; needed to allocate.
        const WRITE = 2;
        /// Pages are executable.
        const EXECUTE = 4;
    }
}

impl Permissions {
    /// No access at all (`PROT_NONE`): the seed's name for `Permissions::empty()`.
    pub const NONE: Permissions = Permissions::empty();
}
