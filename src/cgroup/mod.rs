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

mod controller;
mod cpu;
pub mod devices;
mod error;
mod fs;
mod io;
mod leaf;
mod memory;
mod parse;
mod pids;
mod psi;
mod root;

pub use controller::Controller;
pub use error::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, CgroupError};
pub use fs::{available_controllers, process_cgroup, verify_cgroup2};
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
