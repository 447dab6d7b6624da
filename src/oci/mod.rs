//! An OCI runtime on the process level: the command line runc, crun and youki speak
//! (`create`, `start`, `state`, `kill`, `delete`, `run`, `ps`, `pause`, `resume`,
//! `features`), so that containerd's runc shim, and Kubernetes through a `RuntimeClass`,
//! run their workloads in nebula process contexts.
//!
//! # How a container is run
//!
//! ```text
//! create <id> --bundle B     config.json --(spec::load)--> ProcessConfig + Command
//!                            ProcessIsolation::create_detached: clone3 into the cgroup
//!                            leaf and the namespaces, mounts, pivot_root, then the workload
//!                            waits at <root>/<id>/exec.fifo; state.json and the pid file are
//!                            written and create exits (the container is reparented to the
//!                            shim, a subreaper, or to init)
//! start <id>                 a byte into exec.fifo: privileges, seccomp, execve
//! state/kill/ps/pause/resume read state.json; signals go through a pidfd after the pid's
//!                            start time was checked (no signal to a reused pid)
//! delete <id>                kill what is left (cgroup.kill), remove the leaf and the
//!                            state directory, run the poststop hooks
//! ```
//!
//! `config.json` is read with `oci-spec`'s types ([`spec`]); a field nebula does not map
//! is an error that names it, never dropped. The bundle is the sandbox: as the spec says,
//! a container gets the namespaces, mounts, capabilities and limits its bundle lists, not
//! nebula's own defaults (`nebula-ctl run`'s strict default is for contexts nebula
//! configures itself).
//!
//! # Annotations
//!
//! nebula's own options arrive as annotations under [`spec::ANNOTATION_PREFIX`]
//! (`org.nebula.`); an unknown one is an error:
//!
//! | annotation | value | effect |
//! |---|---|---|
//! | `org.nebula.seccomp` | `default`, `strict`, `deny-network`, `none` | nebula's named seccomp profile |

pub mod cli;
mod hooks;
mod runtime;
pub mod seccomp;
pub mod spec;
mod state;

pub use runtime::{ExecProcess, Runtime, features};
pub use state::{Record, Status};

use std::path::PathBuf;

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
