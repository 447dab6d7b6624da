//! [`OciError`]: what went wrong in an OCI operation.

use std::path::PathBuf;

use super::status::Status;

/// What went wrong in an OCI operation.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The bundle or its `config.json` could not be read.
    #[error("the bundle's {}: {reason}", .path.display())]
    Bundle {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `config.json` has a key the runtime spec does not define.
    #[error("config.json: unknown field \"{field}\" (not in the OCI runtime spec 1.x); remove it")]
    UnknownField {
        /// Its dotted path.
        field: String,
    },
    /// A field nebula does not implement, or a value it cannot honour.
    #[error("config.json: {field} is not supported: {reason}")]
    Unsupported {
        /// Its dotted path.
        field: String,
        /// Why, and the fix where known.
        reason: String,
    },
    /// A container id that is not a plain name.
    #[error(
        "invalid container id {id:?}: use letters, digits, '.', '_', '+' and '-' (not starting with '.')"
    )]
    InvalidId {
        /// The id.
        id: String,
    },
    /// No container of that id.
    #[error("container {id} does not exist (no {})", .path.display())]
    NotFound {
        /// The id.
        id: String,
        /// Its state directory.
        path: PathBuf,
    },
    /// A container of that id exists already.
    #[error("container {id} exists already; delete it first")]
    Exists {
        /// The id.
        id: String,
    },
    /// The operation does not apply in the container's state.
    #[error("container {id} is {status}: {what}")]
    WrongState {
        /// The id.
        id: String,
        /// Its state.
        status: Status,
        /// What cannot be done.
        what: String,
    },
    /// The state directory or a state file.
    #[error("{what} {}: {source}", .path.display())]
    State {
        /// What was done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A signal name or number that is not one.
    #[error("unknown signal {0:?}: give a number (9) or a name (KILL, SIGKILL)")]
    Signal(String),
    /// An option nebula refuses.
    #[error("{option} is not supported: {reason}")]
    Option {
        /// The option.
        option: &'static str,
        /// Why, and the fix.
        reason: &'static str,
    },
    /// A hook failed.
    #[error("the {kind} hook {} failed: {reason}", .path.display())]
    Hook {
        /// Its kind.
        kind: &'static str,
        /// Its program.
        path: PathBuf,
        /// How.
        reason: String,
    },
    /// The process level refused or failed.
    #[error("the container's process context")]
    Process(#[source] crate::isolation::process::ProcessError),
    /// Its cgroup.
    #[error("the container's cgroup")]
    Cgroup(#[source] crate::cgroup::CgroupError),
    /// A system call.
    #[error("{what}: {source}")]
    Sys {
        /// What was done.
        what: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::isolation::process::ProcessError> for OciError {
    fn from(e: crate::isolation::process::ProcessError) -> Self {
        OciError::Process(e)
    }
}

impl From<crate::cgroup::CgroupError> for OciError {
    fn from(e: crate::cgroup::CgroupError) -> Self {
        OciError::Cgroup(e)
    }
}
