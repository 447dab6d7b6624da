//! The ground floor: the vocabulary every level shares. It imports nothing of the crate.

mod id;
mod level;
mod violation;

pub use id::{ContextId, Permissions};
pub use level::LevelStatus;
pub use violation::{DeniedSyscall, Policy, ViolationInfo, ViolationKind};
