//! The in-process mechanisms the region and thread levels rest on: guarded mappings,
//! regions, sandboxes, protection-key domains, userfaultfd regions and the violation core
//! that reports their faults. Their public paths are the crate root's (`nebula_memory::pkey`,
//! `nebula_memory::sandbox`, ...).

pub(crate) mod guarded;
pub mod pkey;
pub mod region;
pub mod sandbox;
pub mod uffd;
pub mod violation;
