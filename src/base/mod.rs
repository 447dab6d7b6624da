//! The ground floor: the vocabulary every level shares. It imports nothing of the crate.

mod id;
mod level;
mod violation;

pub use id::{ContextId, Permissions};
pub use level::LevelStatus;
pub use violation::{DeniedSyscall, Policy, ViolationInfo, ViolationKind};

/// The error and its sources, `: `-joined (one line for a log or a reason field).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
