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
mod error;
mod hooks;
mod runtime;
pub mod seccomp;
pub mod spec;
mod state;
mod status;

pub use error::OciError;
pub use runtime::{ExecProcess, Runtime, features};
pub use state::{Record, Status};
