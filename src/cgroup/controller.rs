//! The controllers this manager enables and configures.

use std::fmt;

/// A cgroup v2 controller that this manager enables and configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Controller {
    /// `memory`: `memory.max`, `memory.high`, `memory.swap.max`, events, PSI.
    Memory,
    /// `cpu`: `cpu.max` bandwidth and throttling statistics.
    Cpu,
    /// `io`: `io.max` per-device rate limits.
    Io,
    /// `pids`: `pids.max`, the number of processes and threads.
    Pids,
}

impl Controller {
    /// Every controller this manager knows, in the order it enables them.
    pub const ALL: [Controller; 4] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Io,
        Controller::Pids,
    ];

    /// The kernel's name, as in `cgroup.controllers`.
    pub const fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Io => "io",
            Controller::Pids => "pids",
        }
    }

    /// The controller with this kernel name, if this manager knows it.
    pub fn from_name(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_names() {
        for c in Controller::ALL {
            assert_eq!(Controller::from_name(c.name()), Some(c));
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!(Controller::from_name("cpuset"), None);
    }
}
