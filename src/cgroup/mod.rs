//! cgroup v2 manager: one leaf cgroup per process context, limits, kernel-reported events,
//! PSI triggers, kill and teardown.
//!
//! # Overview
//!
//! The process level (`Medium`) puts each context into a cgroup of its own, so the kernel
//! enforces its memory, CPU, I/O and process-count limits and reports what happened
//! (`memory.events`, `pids.events`, `cgroup.events`, PSI). This module writes the cgroupfs
//! files directly over `rustix`, as youki, crun and systemd do, instead of depending on
//! `cgroups-rs` (its v2 OOM notifier opens v1-only files, and it has no `memory.events`, PSI,
//! `cgroup.events` or `CLONE_INTO_CGROUP` support; see `DESIGN.md`).
//!
//! ```text
//!   <parent>                      a cgroup2 mount or a delegated cgroup; the supervisor may
//!   │                             live here only if it is the mount root (exempt from the
//!   │                             no-internal-processes rule)
//!   │  cgroup.subtree_control     +memory +cpu +io +pids      <- CgroupRoot::open enables
//!   └── nebula/                   CgroupRoot: holds no processes, only leaves
//!       │  cgroup.subtree_control +memory +cpu +io +pids      <- and here
//!       ├── ctx-1/                Leaf: one context; memory.max, cpu.max, ...; processes
//!       └── ctx-2/                Leaf
//! ```
//!
//! * The root path is a parameter ([`CgroupRoot::open`]), like youki's `libcgroups`, so tests
//!   and delegated subtrees point it anywhere; nothing here assumes `/sys/fs/cgroup`.
//! * The path is verified to be cgroup2 with `statfs` (magic [`CGROUP2_SUPER_MAGIC`]). A v1 or
//!   hybrid host gets [`CgroupError::NotCgroup2`] instead of writes into the wrong tree.
//! * No internal processes: controllers are enabled top-down in `cgroup.subtree_control` of the
//!   parent and of the nebula root, and the nebula root refuses to hold processes. Processes
//!   live only in leaves.
//! * A [`Leaf`] owns its directory: dropping it kills what is left (`cgroup.kill`), waits for
//!   `populated 0` and removes the directory. Read [`Leaf::memory_events`] before that to tell
//!   an OOM kill (`oom_kill`) from any other `SIGKILL`.
//! * Waiting is done by the kernel's notification, not by sleeping: `cgroup.events` and PSI
//!   trigger files wake `poll(2)` with `POLLPRI` ([`Leaf::wait_empty`], [`PsiTrigger::wait`]).
//!   [`Leaf::watch`] ([`EventFile`]) and [`PsiTrigger`] hand out fds for an epoll set.
//! * [`Leaf::dir_fd`] is the fd for `clone3(CLONE_INTO_CGROUP)`, which spawns straight into the
//!   leaf; [`Leaf::add_process`] is the fallback (`cgroup.procs`).
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use nebula_memory::cgroup::{CgroupRoot, Controller, CpuMax, Limit, parse_size};
//!
//! # fn main() -> Result<(), nebula_memory::cgroup::CgroupError> {
//! let root = CgroupRoot::open("/sys/fs/cgroup", "nebula", &Controller::ALL)?;
//! let leaf = root.create_leaf("ctx-1")?;
//! leaf.set_memory_max(parse_size("64M")?)?;
//! leaf.set_memory_swap_max(Limit::Value(0))?;
//! leaf.set_cpu_max(CpuMax::from_fraction(0.5)?)?;
//! leaf.set_pids_max(Limit::Value(64))?;
//! // spawn with clone3(CLONE_INTO_CGROUP, leaf.dir_fd()), or add_process(pid)
//! // ... later:
//! let oom_killed = leaf.memory_events()?.oom_kill > 0;
//! leaf.kill()?;
//! leaf.wait_empty(Duration::from_secs(5))?;
//! leaf.remove()?;
//! # let _ = oom_killed; Ok(()) }
//! ```
//!
//! # Kernel requirements
//!
//! cgroup2 (4.5); `cgroup.kill` (5.14, else a per-pid `SIGKILL` fallback); `memory.peak`
//! (5.19, else `None`); PSI triggers (5.2, `CONFIG_PSI`, not disabled with `psi=0`).

mod error;
mod fs;
mod leaf;
mod parse;
mod psi;
mod root;

use std::fmt;
use std::path::Path;

pub use error::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, CgroupError};
pub use leaf::{EventFile, Leaf};
pub use parse::{
    CPU_MAX_DEFAULT_PERIOD_USEC, CPU_MAX_MAX_PERIOD_USEC, CPU_MAX_MIN_USEC, CgroupEvents, CpuMax,
    CpuStat, IoDevice, IoMax, Limit, MemoryEvents, ParseError, PidsEvents, PsiKind, PsiLine,
    PsiStats, format_size, parse_cpu_max, parse_cpu_share, parse_flat_keyed, parse_io_stat,
    parse_limit, parse_nested_keyed, parse_proc_cgroup, parse_psi, parse_psi_line, parse_size,
    parse_u64,
};
pub use psi::PsiTrigger;
pub use root::CgroupRoot;

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

/// Checks with `statfs(2)` that `path` is on a cgroup v2 filesystem.
///
/// # Errors
///
/// [`CgroupError::Statfs`] when the path cannot be examined; [`CgroupError::NotCgroup2`]
/// naming the filesystem found otherwise (a cgroup v1 or hybrid `/sys/fs/cgroup` is tmpfs).
pub fn verify_cgroup2(path: impl AsRef<Path>) -> Result<(), CgroupError> {
    let path = path.as_ref();
    let st = rustix::fs::statfs(path).map_err(|e| CgroupError::Statfs {
        path: path.to_owned(),
        source: e.into(),
    })?;
    // Magics are 32-bit; `f_type` is a signed word on some targets.
    let found = (st.f_type as u64) & 0xffff_ffff;
    if found != CGROUP2_SUPER_MAGIC {
        return Err(CgroupError::NotCgroup2 {
            path: path.to_owned(),
            found,
        });
    }
    Ok(())
}

/// The controllers a cgroup directory offers to itself (`cgroup.controllers`), by kernel
/// name, including ones this manager does not configure (`cpuset`, `hugetlb`, ...).
///
/// # Errors
///
/// As [`verify_cgroup2`]; [`CgroupError::Read`] when the file cannot be read.
pub fn available_controllers(cgroup_dir: impl AsRef<Path>) -> Result<Vec<String>, CgroupError> {
    let dir = cgroup_dir.as_ref();
    verify_cgroup2(dir)?;
    let path = dir.join("cgroup.controllers");
    let text =
        std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
    Ok(text.split_whitespace().map(str::to_owned).collect())
}

/// The cgroup v2 path of process `pid` (`None` for the calling process) relative to the
/// cgroup2 mount, from `/proc/<pid>/cgroup`, e.g. `/nebula/ctx-1`. `Ok(None)` when the process
/// is in no v2 hierarchy.
///
/// # Errors
///
/// [`CgroupError::Read`] when the proc file cannot be read.
pub fn process_cgroup(pid: Option<rustix::process::Pid>) -> Result<Option<String>, CgroupError> {
    let path = match pid {
        Some(p) => format!("/proc/{}/cgroup", p.as_raw_pid()),
        None => "/proc/self/cgroup".to_owned(),
    };
    let text = std::fs::read_to_string(&path).map_err(|source| CgroupError::Read {
        path: path.into(),
        source,
    })?;
    Ok(parse_proc_cgroup(&text).map(str::to_owned))
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

    #[test]
    fn refuses_what_is_not_cgroup2() {
        // Reading only: statfs never changes anything. On a cgroup v1 or hybrid host
        // /sys/fs/cgroup is a tmpfs; a temp directory is never cgroup2.
        let tmp = std::env::temp_dir();
        let e = verify_cgroup2(&tmp).unwrap_err();
        assert!(matches!(e, CgroupError::NotCgroup2 { .. }), "{e}");
        assert!(e.to_string().contains("is not a cgroup v2 mount"), "{e}");
        let e = verify_cgroup2("/nonexistent/nebula").unwrap_err();
        assert!(matches!(e, CgroupError::Statfs { .. }), "{e}");
        assert!(available_controllers(&tmp).is_err());
    }

    #[test]
    fn own_cgroup_is_readable() {
        // Every Linux process has a /proc/self/cgroup; the v2 line may or may not exist.
        process_cgroup(None).unwrap();
    }
}
