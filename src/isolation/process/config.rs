//! [`ProcessConfig`]: what a process context gets (namespaces, identity, filesystem, network,
//! limits), as plain data with chainable setters.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::{CpuMax, IoMax};
use crate::violation::ViolationInfo;

pub use crate::sys::rlimit::{INFINITY as RLIM_INFINITY, Resource, RlimitSetting};

bitflags::bitflags! {
    /// The namespaces a context gets, each a `CLONE_NEW*` flag. [`Namespaces::all`] is the
    /// default.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Namespaces: u64 {
        /// `CLONE_NEWUSER`: its own uids; root inside is mapped to one id outside.
        const USER = libc::CLONE_NEWUSER as u64;
        /// `CLONE_NEWPID`: its own pids; nebula's pid 1 reaps orphans.
        const PID = libc::CLONE_NEWPID as u64;
        /// `CLONE_NEWNS`: its own mount table (read-only root, private /tmp, fresh /proc).
        const MOUNT = libc::CLONE_NEWNS as u64;
        /// `CLONE_NEWNET`: its own network stack with only `lo` (brought up): network none.
        const NET = libc::CLONE_NEWNET as u64;
        /// `CLONE_NEWIPC`: its own System V IPC and POSIX message queues.
        const IPC = libc::CLONE_NEWIPC as u64;
        /// `CLONE_NEWUTS`: its own hostname.
        const UTS = libc::CLONE_NEWUTS as u64;
        /// `CLONE_NEWCGROUP`: its own cgroup becomes the root of what it sees.
        const CGROUP = libc::CLONE_NEWCGROUP as u64;
    }
}

/// The network a context sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// A new network namespace with only the loopback interface, up.
    None,
    /// The supervisor's network (no network namespace).
    Host,
}

/// What a context sees at `/sys` (with [`Namespaces::MOUNT`]). The host's sysfs, even
/// read-only, lists the host's devices and network interfaces (`/sys/class/net/eth0` in a
/// context with network none), so it is never left as is by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sysfs {
    /// With its own network namespace ([`Namespaces::NET`] together with
    /// [`Namespaces::USER`], which owns it) the context gets a fresh read-only sysfs, whose
    /// `/sys/class/net` shows only that namespace's interfaces (`lo`); without one `/sys` is
    /// masked ([`Sysfs::Masked`]), because a sysfs can only be mounted for a network
    /// namespace the mounting user namespace owns.
    #[default]
    Auto,
    /// An empty read-only tmpfs over `/sys`.
    Masked,
    /// Leave the inherited `/sys` (read-only with a read-only root): the host's sysfs.
    Host,
}

/// Who a context's ids are on the host: what its user namespace's `uid_map`/`gid_map` say.
/// See [`super::idpool`] for the decision and the alternatives set aside.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Identity {
    /// The default. A supervisor running as root leases a range of
    /// [`RANGE`](super::idpool::RANGE) ids of its own for each context from nebula's pool
    /// ([`IdPool::system`](super::idpool::IdPool::system)): root inside is an unprivileged
    /// host uid that no other context and nothing of the host has. Any other caller maps root
    /// inside to its own ids (one id), the only mapping an unprivileged user may write.
    #[default]
    Auto,
    /// A range from this pool (as [`Identity::Auto`] as root, with other files).
    Pool(super::idpool::IdPool),
    /// Root inside is this one host id. `Host { uid: 0, gid: 0 }` makes the workload root of
    /// the host (with a read-only view): it can write host sysctls and read root-only files.
    /// Only on request.
    Host {
        /// The host uid.
        uid: u32,
        /// The host gid.
        gid: u32,
    },
    /// These `uid_map`/`gid_map` lines, as an OCI bundle's `uidMappings`/`gidMappings` give
    /// them (root only; at most 340 lines each, as the kernel allows).
    Maps {
        /// The uid map.
        uid: Vec<IdMapping>,
        /// The gid map.
        gid: Vec<IdMapping>,
    },
}

/// One line of a `uid_map` or `gid_map`: `count` ids from `inside` map to `outside` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMapping {
    /// The first id inside the user namespace.
    pub inside: u32,
    /// The first host id.
    pub outside: u32,
    /// How many.
    pub count: u32,
}

/// A root filesystem of the context's own ([`ProcessConfig::root`]), as an OCI bundle's
/// `root`: bound onto itself, the [`ProcessConfig::mounts`] and devices set up under it, then
/// `pivot_root(2)` into it and the old root detached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootFs {
    /// The directory (absolute).
    pub path: PathBuf,
    /// Make the root mount read-only at the end (the mounts under it keep their flags).
    pub read_only: bool,
    /// The propagation of the context's mounts (OCI `linux.rootfsPropagation`), recursive;
    /// `None`: private, nothing propagates either way.
    pub propagation: Option<Propagation>,
}

/// Mount propagation (mount_namespaces(7)), applied recursively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// `MS_PRIVATE`: nothing propagates.
    Private,
    /// `MS_SLAVE`: the host's mounts appear inside, not the other way.
    Slave,
    /// `MS_SHARED`: mounts propagate both ways (the context's mounts appear on the host).
    Shared,
    /// `MS_UNBINDABLE`: private, and cannot be bind-mounted.
    Unbindable,
}

impl Propagation {
    /// The `MS_*` flags, with `MS_REC`.
    pub fn flags(self) -> libc::c_ulong {
        libc::MS_REC
            | match self {
                Propagation::Private => libc::MS_PRIVATE,
                Propagation::Slave => libc::MS_SLAVE,
                Propagation::Shared => libc::MS_SHARED,
                Propagation::Unbindable => libc::MS_UNBINDABLE,
            }
    }
}

/// A mount under [`ProcessConfig::root`], as an OCI `mounts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where, inside the root (absolute; symlinks in it are resolved inside the root).
    pub target: PathBuf,
    /// The filesystem type (`proc`, `tmpfs`, ...); `None` or `"bind"` with a `bind` option.
    pub fstype: Option<String>,
    /// The source: a host path for a bind, the filesystem's source name otherwise.
    pub source: Option<PathBuf>,
    /// mount(8)-style options: flags (`ro`, `nosuid`, `bind`, `rbind`, `rprivate`, ...) and
    /// the filesystem's data (`mode=755`, `size=65536k`), as OCI has them.
    pub options: Vec<String>,
}

/// The kind of a device node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// `c`/`u`: a character device.
    Char,
    /// `b`: a block device.
    Block,
    /// `p`: a FIFO.
    Fifo,
}

/// A device node created under [`ProcessConfig::root`] (OCI `linux.devices`): `mknod(2)`
/// when the context may create device nodes (no user namespace), otherwise the host's node
/// of the same path bound over an empty file, as runc does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The path inside (absolute).
    pub path: PathBuf,
    /// Character, block or FIFO.
    pub kind: DeviceKind,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits (`0o666` when not given).
    pub mode: u32,
    /// Owner inside.
    pub uid: u32,
    /// Group inside.
    pub gid: u32,
}

/// runc's default `maskedPaths`: hidden in every context with a mount namespace (a file gets
/// `/dev/null` bound over it, a directory an empty read-only tmpfs; a path that does not exist
/// is skipped).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's default `readonlyPaths`: bound read-only onto themselves in every context with a
/// mount namespace (a path that does not exist is skipped).
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What to do with a memory limit when cgroup v2 cannot enforce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MemoryFallback {
    /// Refuse: the context is not created and the error names the reason (the default:
    /// a limit is never silently dropped).
    #[default]
    Refuse,
    /// Limit the workload's address space instead (`RLIMIT_AS` = the memory limit). This is
    /// not the same promise: it counts reserved address space, not resident memory, per
    /// process, not per context. The outcome reports it as
    /// [`MemoryEnforcement::RlimitAs`](super::MemoryEnforcement::RlimitAs).
    RlimitAs,
}

/// Whether a context gets a cgroup v2 leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CgroupUse {
    /// Use cgroup v2 when [`crate::features`] says it is available (accounting, OOM and pids
    /// reports, `cgroup.kill`); limits that need it are refused without it.
    #[default]
    Auto,
    /// Refuse to create the context without cgroup v2.
    Required,
    /// Never use cgroups (limits that need them are refused).
    Off,
}

/// Where a standard stream of the workload goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Stdio {
    /// The supervisor's own stream.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A pipe the supervisor reads into [`Outcome::stdout`](super::Outcome::stdout) /
    /// `stderr` (bounded by [`ProcessConfig::max_output_bytes`]; stdin: not allowed).
    Capture,
}

/// A bind mount of a host path into the context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    /// The host path.
    pub source: PathBuf,
    /// Where it appears inside (must exist).
    pub target: PathBuf,
    /// Writable bind (otherwise read-only, recursively).
    pub writable: bool,
}

/// A private tmpfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TmpfsMount {
    /// The mount point (must exist).
    pub target: PathBuf,
    /// Its size limit in bytes (`size=`).
    pub size: u64,
}

/// Resource limits of a context.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// `memory.max`: the hard limit; beyond it the kernel OOM-kills inside the context.
    pub memory_max: Option<u64>,
    /// `memory.high`: throttling (never kills).
    pub memory_high: Option<u64>,
    /// `memory.low`: memory protected from reclaim while others have unprotected memory.
    pub memory_low: Option<u64>,
    /// `memory.swap.max`.
    pub memory_swap_max: Option<u64>,
    /// `cpu.max`.
    pub cpu_max: Option<CpuMax>,
    /// `cpu.weight` (1 to 10000): the share of CPU time against sibling contexts.
    pub cpu_weight: Option<u64>,
    /// `io.max`, one entry per device.
    pub io_max: Vec<IoMax>,
    /// `pids.max`: processes and threads of the context.
    pub pids_max: Option<u64>,
    /// What to do with `memory_max` without cgroup v2.
    pub memory_fallback: MemoryFallback,
    /// Resource limits set on the workload process (`prlimit`), in order.
    pub rlimits: Vec<RlimitSetting>,
    /// Wall-clock limit from release to exit; then the context is killed (`cgroup.kill`, or
    /// `SIGKILL` to its pid 1).
    pub wall_time: Option<Duration>,
    /// CPU-time limit: `RLIMIT_CPU` on the workload (whole seconds, rounded up; `SIGXCPU`,
    /// then `SIGKILL` a second later) and, with a cgroup, `cpu.stat usage_usec` of the whole
    /// context checked every 50 ms.
    pub cpu_time: Option<Duration>,
    /// A PSI trigger on the context's `memory.pressure` (cgroup v2 memory controller):
    /// `memory.high` without swap throttles a context indefinitely and never kills it; this
    /// reports the stall, and optionally ends it.
    pub memory_pressure: Option<MemoryPressureWatch>,
}

/// A PSI watch on a context's `memory.pressure` ([`Limits::memory_pressure`]).
///
/// The supervisor arms the trigger `"<kind> <stall> <window>"` on the context's leaf and polls
/// it with the context's other descriptors. The first time it fires, a
/// [`crate::violation::ViolationKind::MemoryPressure`] (`killed: false`) is reported at once
/// (to [`ProcessConfig::on_violation`] too); with `kill_after`, a trigger that fires again
/// `kill_after` or later after the first (the stall went on; a trigger fires at most once
/// per window) kills the context and reports a second one with `killed: true`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPressureWatch {
    /// `some` (at least one task stalled) or `full` (all non-idle tasks stalled).
    pub kind: crate::cgroup::PsiKind,
    /// Stall time within the window that fires the trigger.
    pub stall: Duration,
    /// The window: 500 ms to 10 s (a multiple of 2 s without `CAP_SYS_RESOURCE`).
    pub window: Duration,
    /// Kill when the pressure lasts this long after the first report; `None`: report only;
    /// `Some(ZERO)`: kill at the first firing.
    pub kill_after: Option<Duration>,
}

/// Called once per violation, on the supervising thread: after the context ended, except for
/// writes to watched memory and memory pressure, which are delivered when they happen.
pub type ViolationCallback = Arc<dyn Fn(&ViolationInfo) + Send + Sync>;

/// The configuration of a process context. [`ProcessConfig::default`] is the strict
/// default: every namespace, root inside mapped to a host id range of the context's own
/// ([`Identity::Auto`]), runc's masked and read-only `/proc` and `/sys` paths, read-only
/// root, a private
/// 64 MiB `/tmp`, a fresh `/proc`, network none, every capability dropped, `no_new_privs`,
/// the `default` seccomp profile, an empty environment, cwd `/`.
#[derive(Clone)]
pub struct ProcessConfig {
    /// The namespaces.
    pub namespaces: Namespaces,
    /// Who the context is on the host ([`Identity::Auto`]: a range of its own from nebula's
    /// pool when the supervisor is root, the caller's ids otherwise).
    pub identity: Identity,
    /// The ids inside that the workload runs as, `(uid, gid)`; `None`: root (0, 0) of the
    /// context's user namespace. Changed in the privilege step, with no supplementary groups.
    pub user: Option<(u32, u32)>,
    /// Paths hidden from the workload (OCI `maskedPaths`); default
    /// [`DEFAULT_MASKED_PATHS`].
    pub masked_paths: Vec<PathBuf>,
    /// Paths made read-only (OCI `readonlyPaths`); default [`DEFAULT_READONLY_PATHS`].
    pub readonly_paths: Vec<PathBuf>,
    /// The hostname inside (needs [`Namespaces::UTS`]).
    pub hostname: Option<String>,
    /// Environment of a command (`execve`'s `envp`); a closure keeps the supervisor's.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory of the workload.
    pub cwd: PathBuf,
    /// Limits.
    pub limits: Limits,
    /// Remount the inherited tree read-only (needs [`Namespaces::MOUNT`]).
    pub read_only_root: bool,
    /// Private tmpfs mounts (needs [`Namespaces::MOUNT`]).
    pub tmpfs: Vec<TmpfsMount>,
    /// Mount a fresh `/proc` of the new pid namespace (needs `MOUNT` and `PID`).
    pub mount_proc: bool,
    /// Bind mounts, applied after the root became read-only.
    pub binds: Vec<BindMount>,
    /// What `/sys` shows (needs [`Namespaces::MOUNT`] unless [`Sysfs::Host`]).
    pub sysfs: Sysfs,
    /// Closures only: the context opens a userfaultfd and passes it to the supervisor, so
    /// ranges the closure watches ([`super::uffd_watch::watch`]) are write-protected and a
    /// write to one kills the context with a [`crate::violation::ViolationKind::WriteToFrozen`].
    pub watch_regions: bool,
    /// `prctl(PR_SET_NO_NEW_PRIVS)` before the workload runs. Off, it stays off (setuid
    /// programs work) unless Landlock or a notifying seccomp filter needs it; a plain filter
    /// is then installed before the capability drop, while `CAP_SYS_ADMIN` still allows it.
    pub no_new_privs: bool,
    /// Drop capabilities before the workload runs: every capability not in `keep_caps` leaves
    /// the bounding, permitted, effective, inheritable and ambient sets ([`crate::privileges`]).
    pub drop_caps: bool,
    /// Capabilities kept when `drop_caps` is on.
    pub keep_caps: Vec<crate::privileges::Capability>,
    /// The seccomp profile installed last before the workload runs ([`crate::seccomp`]).
    pub seccomp: crate::seccomp::Profile,
    /// Landlock, a second layer under the read-only root ([`crate::landlock`]): writes only
    /// beneath [`ProcessConfig::tmpfs`] mounts, writable [`ProcessConfig::binds`] and the
    /// devices a shell needs; with a read allow-list, reads and execution only beneath it
    /// too. Enforced by the workload after `no_new_privs` (which it turns on), before the
    /// seccomp filter. `None` (the default): no Landlock. Refused where the kernel has none.
    pub landlock: Option<crate::landlock::Landlock>,
    /// Whether to use a cgroup v2 leaf.
    pub cgroup: CgroupUse,
    /// The cgroup under which nebula's root (`nebula/`) is created; `None`: the supervisor's
    /// own cgroup under the cgroup2 mount, as [`crate::features`] reports them.
    pub cgroup_parent: Option<PathBuf>,
    /// stdin of the workload ([`Stdio::Capture`] is refused).
    pub stdin: Stdio,
    /// stdout of the workload.
    pub stdout: Stdio,
    /// stderr of the workload.
    pub stderr: Stdio,
    /// Largest closure result accepted, in bytes of its postcard encoding.
    pub max_result_bytes: usize,
    /// Largest captured stdout/stderr kept, each; the rest is read and discarded.
    pub max_output_bytes: usize,
    /// Receives each [`ViolationInfo`] the context produced.
    pub on_violation: Option<ViolationCallback>,
    /// A root filesystem of its own (needs [`Namespaces::MOUNT`]); `None`: the supervisor's
    /// tree, seen through [`ProcessConfig::read_only_root`].
    pub root: Option<RootFs>,
    /// Mounts under [`ProcessConfig::root`], in order (needs it).
    pub mounts: Vec<Mount>,
    /// Device nodes under [`ProcessConfig::root`] (needs it).
    pub devices: Vec<Device>,
    /// Namespaces joined by path (`setns(2)`) instead of created; each flag also leaves
    /// [`ProcessConfig::namespaces`]. Not for the user namespace. A joined pid namespace is
    /// entered by the supervisor's thread for the clone (and left after it), so the context's
    /// top process is a member, not that namespace's init.
    pub join: Vec<(Namespaces, PathBuf)>,
    /// Kernel parameters written under `/proc/sys` inside, after the mounts (`net.ipv4.ip_forward`
    /// style keys); only namespaced ones are allowed.
    pub sysctl: Vec<(String, String)>,
    /// The name of the context's cgroup leaf under nebula's root; `None`: one is made up.
    pub cgroup_name: Option<String>,
    /// Supplementary groups of the workload (with [`ProcessConfig::user`]); empty: none.
    pub groups: Vec<u32>,
    /// Capabilities of [`ProcessConfig::keep_caps`] also raised in the ambient set (kept
    /// across an `execve` as a non-root user).
    pub ambient_caps: Vec<crate::privileges::Capability>,
    /// `/proc/<pid>/oom_score_adj` of the context's processes (-1000 to 1000), written before
    /// it is released; `None`: inherited.
    pub oom_score_adj: Option<i32>,
    /// Device access rules for the context's cgroup ([`crate::cgroup::Leaf::set_device_rules`]:
    /// an eBPF device program), `None`: no device program. Needs cgroup v2.
    pub device_rules: Option<Vec<crate::cgroup::devices::DeviceRule>>,
    /// A seccomp table of the caller's (an OCI bundle's `linux.seccomp`), installed instead
    /// of [`ProcessConfig::seccomp`]'s named profile.
    pub seccomp_table: Option<crate::seccomp::ProfileTable>,
    /// The workload's file mode creation mask (`umask(2)`); `None`: inherited.
    pub umask: Option<u32>,
    /// Run in this existing cgroup (another context's, as an OCI `exec` does) instead of a
    /// leaf of its own: the context's processes start in it (`CLONE_INTO_CGROUP`), and it is
    /// neither given limits nor removed. Limits are refused with it.
    pub cgroup_path: Option<PathBuf>,
}

impl std::fmt::Debug for ProcessConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessConfig")
            .field("namespaces", &self.namespaces)
            .field("identity", &self.identity)
            .field("user", &self.user)
            .field("masked_paths", &self.masked_paths)
            .field("readonly_paths", &self.readonly_paths)
            .field("hostname", &self.hostname)
            .field("env", &self.env)
            .field("cwd", &self.cwd)
            .field("limits", &self.limits)
            .field("read_only_root", &self.read_only_root)
            .field("tmpfs", &self.tmpfs)
            .field("mount_proc", &self.mount_proc)
            .field("binds", &self.binds)
            .field("sysfs", &self.sysfs)
            .field("watch_regions", &self.watch_regions)
            .field("no_new_privs", &self.no_new_privs)
            .field("drop_caps", &self.drop_caps)
            .field("keep_caps", &self.keep_caps)
            .field("seccomp", &self.seccomp)
            .field("landlock", &self.landlock)
            .field("cgroup", &self.cgroup)
            .field("cgroup_parent", &self.cgroup_parent)
            .field("stdio", &(self.stdin, self.stdout, self.stderr))
            .field("max_result_bytes", &self.max_result_bytes)
            .field("on_violation", &self.on_violation.is_some())
            .field("root", &self.root)
            .field("mounts", &self.mounts)
            .field("devices", &self.devices)
            .field("join", &self.join)
            .field("sysctl", &self.sysctl)
            .field("cgroup_name", &self.cgroup_name)
            .field("groups", &self.groups)
            .field("ambient_caps", &self.ambient_caps)
            .field("oom_score_adj", &self.oom_score_adj)
            .field("device_rules", &self.device_rules)
            .field("seccomp_table", &self.seccomp_table.is_some())
            .field("umask", &self.umask)
            .field("cgroup_path", &self.cgroup_path)
            .finish()
    }
}

/// Size of the default private `/tmp`: 64 MiB.
pub const DEFAULT_TMP_SIZE: u64 = 64 << 20;

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            namespaces: Namespaces::all(),
            identity: Identity::Auto,
            user: None,
            masked_paths: DEFAULT_MASKED_PATHS.iter().map(PathBuf::from).collect(),
            readonly_paths: DEFAULT_READONLY_PATHS.iter().map(PathBuf::from).collect(),
            hostname: None,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            limits: Limits::default(),
            read_only_root: true,
            tmpfs: vec![TmpfsMount {
                target: PathBuf::from("/tmp"),
                size: DEFAULT_TMP_SIZE,
            }],
            mount_proc: true,
            binds: Vec::new(),
            sysfs: Sysfs::Auto,
            watch_regions: false,
            no_new_privs: true,
            drop_caps: true,
            keep_caps: Vec::new(),
            seccomp: crate::seccomp::Profile::Default,
            landlock: None,
            cgroup: CgroupUse::Auto,
            cgroup_parent: None,
            stdin: Stdio::Inherit,
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            max_result_bytes: 16 << 20,
            max_output_bytes: 1 << 20,
            on_violation: None,
            root: None,
            mounts: Vec::new(),
            devices: Vec::new(),
            join: Vec::new(),
            sysctl: Vec::new(),
            cgroup_name: None,
            groups: Vec::new(),
            ambient_caps: Vec::new(),
            oom_score_adj: None,
            device_rules: None,
            seccomp_table: None,
            umask: None,
            cgroup_path: None,
        }
    }
}

impl ProcessConfig {
    /// The strict default (see the type's docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Only these namespaces.
    pub fn namespaces(mut self, ns: Namespaces) -> Self {
        self.namespaces = ns;
        if !ns.contains(Namespaces::MOUNT) {
            self.read_only_root = false;
            self.tmpfs.clear();
            self.mount_proc = false;
        }
        if !ns.contains(Namespaces::PID) {
            self.mount_proc = false;
        }
        self
    }

    /// What `/sys` shows.
    pub fn sysfs(mut self, s: Sysfs) -> Self {
        self.sysfs = s;
        self
    }

    /// Watch the context's `memory.pressure` ([`MemoryPressureWatch`]).
    pub fn memory_pressure(mut self, w: MemoryPressureWatch) -> Self {
        self.limits.memory_pressure = Some(w);
        self
    }

    /// `memory.high` in bytes (throttling; see [`ProcessConfig::memory_pressure`]).
    pub fn memory_high(mut self, bytes: u64) -> Self {
        self.limits.memory_high = Some(bytes);
        self
    }

    /// Let closures watch memory through a userfaultfd held by the supervisor
    /// ([`super::uffd_watch`]).
    pub fn watch_regions(mut self, on: bool) -> Self {
        self.watch_regions = on;
        self
    }

    /// Network none (a new network namespace with `lo` up) or host.
    pub fn network(mut self, net: Network) -> Self {
        self.namespaces.set(Namespaces::NET, net == Network::None);
        self
    }

    /// Maps root inside to the one host id `(uid, gid)` ([`Identity::Host`]); `(0, 0)` is
    /// host root.
    pub fn root_maps_to(mut self, uid: u32, gid: u32) -> Self {
        self.identity = Identity::Host { uid, gid };
        self
    }

    /// Sets who the context is on the host.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// Runs the workload as `(uid, gid)` inside its user namespace instead of root.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Replaces the masked paths (OCI `maskedPaths`).
    pub fn masked_paths<I: IntoIterator<Item = P>, P: Into<PathBuf>>(mut self, paths: I) -> Self {
        self.masked_paths = paths.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces the read-only paths (OCI `readonlyPaths`).
    pub fn readonly_paths<I: IntoIterator<Item = P>, P: Into<PathBuf>>(mut self, paths: I) -> Self {
        self.readonly_paths = paths.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the hostname.
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.hostname = Some(name.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = dir.into();
        self
    }

    /// Sets `memory.max`.
    pub fn memory_max(mut self, bytes: u64) -> Self {
        self.limits.memory_max = Some(bytes);
        self
    }

    /// Sets `pids.max`.
    pub fn pids_max(mut self, n: u64) -> Self {
        self.limits.pids_max = Some(n);
        self
    }

    /// Sets the wall-clock limit.
    pub fn wall_time(mut self, d: Duration) -> Self {
        self.limits.wall_time = Some(d);
        self
    }

    /// Sets the CPU-time limit.
    pub fn cpu_time(mut self, d: Duration) -> Self {
        self.limits.cpu_time = Some(d);
        self
    }

    /// Adds a resource limit.
    pub fn rlimit(mut self, resource: Resource, soft: u64, hard: u64) -> Self {
        self.limits.rlimits.push(RlimitSetting {
            resource,
            soft,
            hard,
        });
        self
    }

    /// Allows the `RLIMIT_AS` fallback for `memory_max` without cgroup v2.
    pub fn memory_fallback(mut self, f: MemoryFallback) -> Self {
        self.limits.memory_fallback = f;
        self
    }

    /// Keeps or drops the read-only root.
    pub fn read_only_root(mut self, ro: bool) -> Self {
        self.read_only_root = ro;
        self
    }

    /// Replaces the private tmpfs mounts with one at `target` of `size` bytes.
    pub fn tmpfs(mut self, target: impl Into<PathBuf>, size: u64) -> Self {
        self.tmpfs = vec![TmpfsMount {
            target: target.into(),
            size,
        }];
        self
    }

    /// Adds a bind mount.
    pub fn bind(
        mut self,
        source: impl Into<PathBuf>,
        target: impl Into<PathBuf>,
        writable: bool,
    ) -> Self {
        self.binds.push(BindMount {
            source: source.into(),
            target: target.into(),
            writable,
        });
        self
    }

    /// Sets the seccomp profile.
    pub fn seccomp(mut self, p: crate::seccomp::Profile) -> Self {
        self.seccomp = p;
        self
    }

    /// Turns Landlock on with `plan` (see [`ProcessConfig::landlock`]), or off with `None`.
    pub fn landlock(mut self, plan: impl Into<Option<crate::landlock::Landlock>>) -> Self {
        self.landlock = plan.into();
        self
    }

    /// Sets the cgroup use.
    pub fn cgroup(mut self, c: CgroupUse) -> Self {
        self.cgroup = c;
        self
    }

    /// Sets the cgroup under which nebula's root lives.
    pub fn cgroup_parent(mut self, p: impl Into<PathBuf>) -> Self {
        self.cgroup_parent = Some(p.into());
        self
    }

    /// Sets stdout and stderr.
    pub fn output(mut self, stdout: Stdio, stderr: Stdio) -> Self {
        self.stdout = stdout;
        self.stderr = stderr;
        self
    }

    /// Sets the violation callback.
    pub fn on_violation(mut self, f: impl Fn(&ViolationInfo) + Send + Sync + 'static) -> Self {
        self.on_violation = Some(Arc::new(f));
        self
    }
}
