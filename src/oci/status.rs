//! [`Status`]: a container's state, as the runtime spec names them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A container's state, as the runtime spec names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, waiting to be started.
    Created,
    /// Its process runs.
    Running,
    /// Frozen (`cgroup.freeze`).
    Paused,
    /// Its process has exited.
    Stopped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}
