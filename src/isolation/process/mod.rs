//! Process contexts (`SecurityLevel::Medium`): a child process in its own namespaces and
//! cgroup v2 leaf, with rlimits, a wall-clock and a CPU-time limit, a read-only root, a
//! private `/tmp`, a fresh `/proc`, a `/sys` of its own network namespace (or none),
//! network none, and a minimal pid 1 that reaps orphans.
//!
//! # `/sys`
//!
//! The inherited `/sys` is the host's sysfs: read-only under the read-only root, but it still
//! lists the host's devices and network interfaces. With its own network and user namespace
//! (the default) a context gets a fresh read-only sysfs, mounted by its pid 1 after the
//! namespaces exist, so `/sys/class/net` lists only its `lo`; the kernel allows this because
//! the context's user namespace owns its network namespace. Without a network namespace a
//! sysfs mount would show the host's interfaces again (and is refused from a user namespace
//! that does not own the host's), so `/sys` is masked by an empty read-only tmpfs instead.
//! [`Sysfs`] chooses otherwise.
//!
//! # Who the workload is on the host
//!
//! Root inside a context is never root outside by default. A supervisor running as root
//! leases 65,536 host ids for each context from nebula's pool (a `nebula` entry in
//! `/etc/subuid` and `/etc/subgid`, added on first use) and maps the context's ids 0..65535
//! onto them; the lease is returned when the context ends. The workload runs as root of its
//! user namespace (or [`ProcessConfig::user`]) and, to the host, as an unprivileged uid that
//! no other context has: it cannot write host sysctls, read root-only files, or signal, trace
//! or read the files of another context. [`Identity::Host`] maps root inside to one chosen
//! host id instead (`Host { uid: 0, gid: 0 }` is host root, only on request); a supervisor
//! that is not root maps its own ids. [`idpool`] has the decision and the alternatives set
//! aside.
//!
//! On top, in every configuration with a mount namespace, runc's default `readonlyPaths`
//! ([`DEFAULT_READONLY_PATHS`]: `/proc/sys`, `/proc/sysrq-trigger`, ...) are bound read-only
//! and its `maskedPaths` ([`DEFAULT_MASKED_PATHS`]: `/proc/kcore`, `/proc/keys`,
//! `/sys/firmware`, ...) hidden; both lists are [`ProcessConfig::readonly_paths`] and
//! [`ProcessConfig::masked_paths`].
//!
//! # Overview
//!
//! ```text
//!  supervisor (this process)                     the context
//!  ─────────────────────────                     ───────────
//!  ProcessIsolation::new(config)                 (validated against features(): a limit that
//!    └ CgroupRoot <cgroup2>/<own cgroup>/nebula   cannot be enforced here is an error)
//!  run_command / run_closure
//!    ├ Leaf ctx-<pid>-<n>: memory.max, ...
//!    ├ clone3(CLONE_NEW*, CLONE_INTO_CGROUP, ──▶ pid 1 ─ PDEATHSIG=SIGKILL, waits for 'G'
//!    │        CLONE_PIDFD)                        │   setresuid(0), hostname, mounts, lo up
//!    ├ uid_map/gid_map, then 'G' on the pipe ──▶  ├── workload: rlimits, privileges, exec
//!    ├ poll(pidfd, pipes) until exit/timeout       └ reaps orphans; reports the workload's
//!    │   timeout: cgroup.kill (or SIGKILL pid 1)     wait status, exits (the kernel kills
//!    ├ wait4: status + rusage                        what is left in the namespace)
//!    └ memory.events, pids.events, memory.peak, cpu.stat → Outcome; Leaf removed
//! ```
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use nebula_memory::isolation::process::{Command, ProcessConfig, ProcessIsolation, Stdio};
//!
//! # fn main() -> Result<(), nebula_memory::IsolationError> {
//! let iso = ProcessIsolation::new(
//!     ProcessConfig::new()
//!         .hostname("sandbox")
//!         .wall_time(Duration::from_secs(5))
//!         .output(Stdio::Capture, Stdio::Inherit),
//! )?;
//! let out = iso.run_command(&Command::new("/bin/hostname"))?;
//! assert_eq!(out.stdout_text().trim(), "sandbox");
//!
//! let r = iso.run_closure(|| (1..=10u64).product::<u64>())?;
//! assert_eq!(r.result, Ok(3_628_800));
//! # Ok(()) }
//! ```
//!
//! # Two ways in, and why they spawn differently
//!
//! * **Commands** ([`ProcessIsolation::run_command`]) are spawned with `clone3` straight into
//!   the new namespaces and the cgroup leaf (`CLONE_INTO_CGROUP`; `clone` without the cgroup
//!   only on `ENOSYS`, then `cgroup.procs` before the child is released). After a raw clone in a
//!   multi-threaded supervisor the child may only make async-signal-safe calls until `execve`
//!   (glibc's atfork handlers do not run, so malloc may be locked). So everything is prepared
//!   before cloning (C strings, `argv`/`envp`, mount steps, rlimits) and the child side lives
//!   in `sys::clone` as raw system calls on that plan; the uid/gid maps are written by the
//!   supervisor while the child waits on a pipe.
//! * **Closures** ([`ProcessIsolation::run_closure`]) need arbitrary Rust code in the child, so
//!   they use glibc's `fork()`, whose atfork handlers reset malloc and stdio in the child; the
//!   child is moved into the cgroup leaf (`cgroup.procs`) before it does anything, then
//!   `unshare`s the namespaces, waits for its maps, and forks again for pid 1 (a new pid
//!   namespace applies to the *next* child). The result comes back deep-copied: postcard over
//!   a pipe, length-prefixed, bounded by [`ProcessConfig::max_result_bytes`]; a panic comes back
//!   as [`ClosureError::Panicked`], a crash as [`ClosureError::Died`]. The restriction: locks
//!   that *other* threads of the supervisor held at the fork stay held in the child, so a
//!   closure must not wait on locks shared with other threads (it would deadlock until the
//!   wall-clock limit kills it). It costs one more process than the exec path.
//!
//! # Limits and what happens without cgroup v2
//!
//! `memory.max`, `memory.high`, `memory.swap.max`, `cpu.max`, `io.max` and `pids.max` are
//! written into the context's leaf when [`crate::features`] reports cgroup v2 (nebula's root
//! goes under the cgroup2 mount and the supervisor's own cgroup). Without it each of them is an
//! [`ProcessError::Unsupported`] error naming the probe's reason, except `memory.max` when the
//! caller asked for [`MemoryFallback::RlimitAs`], which the outcome then reports as
//! [`MemoryEnforcement::RlimitAs`]. The wall-clock limit kills with `cgroup.kill` (or `SIGKILL`
//! to the context's pid 1, which takes the pid namespace with it); the CPU-time limit is
//! `RLIMIT_CPU` on the workload plus, with a cgroup, `cpu.stat` of the whole context.
//!
//! An OOM kill is told from any other `SIGKILL` by `memory.events oom_kill`, read before the
//! leaf is removed; OOM, pids-limit, seccomp (`SIGSYS`) and time-limit events are also
//! returned as [`ViolationInfo`]s and passed to [`ProcessConfig::on_violation`].
//!
//! # Watching a running context
//!
//! * Memory: with [`ProcessConfig::watch_regions`] a closure's context opens a userfaultfd
//!   before its privilege step and passes it to the supervisor over `SCM_RIGHTS`; ranges the
//!   closure gives to [`uffd_watch::watch`] are write-protected, and the first write to one
//!   kills that context (nothing else) with a [`ViolationKind::WriteToFrozen`] carrying the
//!   kernel's address and thread id. See [`uffd_watch`].
//! * Memory pressure: `memory.high` without swap throttles a context for ever and never
//!   kills it. [`Limits::memory_pressure`] ([`MemoryPressureWatch`]) arms a PSI trigger on
//!   the leaf's `memory.pressure`; its firing is reported at once as a
//!   [`ViolationKind::MemoryPressure`], and with `kill_after` sustained pressure ends the
//!   context. [`Outcome::memory_high_events`] is the kernel's `memory.events high` count.
//!
//! Both are polled in [`Running::wait`] with the context's other descriptors, and their
//! violations go to [`ProcessConfig::on_violation`] when they happen, not at the end.
//!
//! # Lifetime
//!
//! The context never outlives its supervisor: its top process has `PR_SET_PDEATHSIG=SIGKILL`
//! (checked against `getppid()` and the sync pipe's EOF, so a supervisor that died before the
//! signal was set is noticed too), and killing pid 1 kills the whole pid namespace. The death
//! signal follows the *thread* that spawned: keep the spawning thread alive until the context
//! ended. Dropping a [`Running`] kills and reaps the context; its leaf is removed.
//!
//! # Privileges
//!
//! The workload's last step before `execve` (or the closure) is the privilege step, in
//! DESIGN.md's order: the capability drop ([`crate::privileges::PrivilegePlan`], built in
//! [`ProcessIsolation::new`]: bounding set, permitted/effective/inheritable, ambient,
//! `no_new_privs`), then, with [`ProcessConfig::landlock`], the Landlock ruleset (prepared in
//! [`ProcessIsolation::new`], built inside the context's mounts: see [`crate::landlock`]),
//! then the seccomp filter ([`crate::seccomp::CompiledFilter`], compiled in
//! [`ProcessIsolation::new`], installed on the single-threaded workload). All are applied by
//! allocation-free child-side calls. pid 1 keeps its privileges in the user namespace (it only
//! waits) but is non-dumpable, so the workload cannot ptrace it.
//!
//! Where the kernel has seccomp user notification the filter's kills notify the supervisor
//! instead ([`crate::seccomp::Profile::compile_notifying`]): the workload installs it with a
//! listener, sends the listener over a socket pair made before the clone and closes its own
//! copies; [`Running::wait`] polls the listener with the context's other descriptors, and on
//! a notification kills the context and reports the call in [`Outcome::denied_syscall`] (the
//! design and its caveats are in [`crate::seccomp`]'s docs). A closure context, a `fork` of
//! the whole supervisor, first closes the listeners and handover sockets of the supervisor's
//! other contexts that the fork copied.

mod child;
mod config;
mod fds;
pub mod idpool;
mod outcome;
mod plan;
pub(crate) mod procfs;
mod rootfs;
pub mod uffd_watch;

pub use config::MemoryPressureWatch;
pub use config::{
    BindMount, CgroupUse, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS, DEFAULT_TMP_SIZE, Device,
    DeviceKind, IdMapping, Identity, Limits, MemoryFallback, Mount, Namespaces, Network,
    ProcessConfig, Propagation, RLIM_INFINITY, Resource, RlimitSetting, RootFs, Stdio, Sysfs,
    TmpfsMount, ViolationCallback,
};
pub use idpool::{IdLease, IdPool, IdPoolError, IdRange};
pub use outcome::{ClosureError, ExitStatus, MemoryEnforcement, Outcome, ProcessError};

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal};
use serde::Serialize;
use serde::de::DeserializeOwned;

use fds::{Fds, ParentFds, Private, private};
use plan::{IdSource, cstring};

use crate::cgroup::{CgroupRoot, Leaf, Limit};
use crate::sys::clone::{
    self as sc, CStringArray, ExecPlan, Privileges, Report, SetupPlan, Step, WorkloadPlan,
};
use crate::sys::mount::MountStep;
use crate::sys::rlimit;
use crate::violation::{ViolationInfo, ViolationKind};

/// How long the supervisor waits for a closure child's start-up handshake.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the cgroup's `cpu.stat` is checked against a CPU-time limit.
const CPU_CHECK: Duration = Duration::from_millis(50);
/// How long teardown waits for a killed leaf to empty.
const TEARDOWN_WAIT: Duration = Duration::from_secs(10);

/// A command to run in a context: a program and its arguments. No shell; a program name
/// without `/` is looked up on the supervisor's `PATH`, in the supervisor, and the child
/// tries each match in order (the first that the context's identity may execute runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
}

impl Command {
    /// A command running `program` with no arguments (`argv[0]` is `program`).
    pub fn new(program: impl Into<OsString>) -> Command {
        Command {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Command {
        self.args.push(a.into());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Command {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// This command with its program looked up inside `root` on the environment's `PATH` (the first
    /// match), for a context that will see `root` as `/` (an OCI `exec` into a container).
    ///
    /// # Errors
    /// [`ProcessError::ProgramNotFound`].
    pub fn resolved_in(
        mut self,
        root: &Path,
        env: &[(OsString, OsString)],
    ) -> Result<Command, ProcessError> {
        let found = self.candidates_in(root, env)?;
        self.program = found[0].clone().into_os_string();
        Ok(self)
    }

    /// As [`Command::candidates`] for a context with a root filesystem of its own: the
    /// program is looked up on the `PATH` of the context's environment (or the usual one),
    /// inside `root`, and the paths returned are the ones the workload sees after the pivot.
    fn candidates_in(
        &self,
        root: &Path,
        env: &[(OsString, OsString)],
    ) -> Result<Vec<PathBuf>, ProcessError> {
        if self.program.as_bytes().contains(&b'/') {
            return Ok(vec![PathBuf::from(&self.program)]);
        }
        let path = env.iter().find(|(k, _)| k == "PATH").map_or_else(
            || OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            |(_, v)| v.clone(),
        );
        let mut found = Vec::new();
        for dir in std::env::split_paths(&path) {
            let inside = dir.join(&self.program);
            let host = rootfs::resolve_in_root(root, &inside)?;
            if host.is_file() {
                found.push(inside);
            }
        }
        if found.is_empty() {
            return Err(ProcessError::ProgramNotFound {
                program: format!(
                    "{} (searched PATH={} inside {})",
                    self.program.to_string_lossy(),
                    path.to_string_lossy(),
                    root.display()
                ),
            });
        }
        Ok(found)
    }

    /// The paths the child tries, in order: the program itself when it names a path, else
    /// every executable file of that name on the supervisor's `PATH` (the child skips one
    /// that the workload's identity may not execute, as `execvp(3)` does).
    fn candidates(&self) -> Result<Vec<PathBuf>, ProcessError> {
        let p = Path::new(&self.program);
        if self.program.as_bytes().contains(&b'/') {
            return Ok(vec![p.to_owned()]);
        }
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        let found: Vec<PathBuf> = std::env::split_paths(&path)
            .map(|d| d.join(p))
            .filter(|c| rustix::fs::access(c, rustix::fs::Access::EXEC_OK).is_ok() && c.is_file())
            .collect();
        if found.is_empty() {
            return Err(ProcessError::ProgramNotFound {
                program: self.program.to_string_lossy().into_owned(),
            });
        }
        Ok(found)
    }
}

/// A closure's result and the context's outcome.
#[derive(Debug)]
pub struct ClosureOutcome<T> {
    /// The value, deep-copied out of the child, or why there is none.
    pub result: Result<T, ClosureError>,
    /// How the context ended.
    pub outcome: Outcome,
}

/// Process contexts with one configuration: validated once against what the host offers,
/// then any number of contexts run with [`ProcessIsolation::run_command`],
/// [`ProcessIsolation::spawn_command`] or [`ProcessIsolation::run_closure`].
#[derive(Debug)]
pub struct ProcessIsolation {
    config: ProcessConfig,
    root: Option<CgroupRoot>,
    rlimits: Vec<rlimit::RlimitSetting>,
    memory: MemoryEnforcement,
    identity: IdSource,
    deny_setgroups: bool,
    mounts: Vec<MountStep>,
    cwd: CString,
    hostname: Option<Vec<u8>>,
    caps: Option<crate::privileges::PrivilegePlan>,
    landlock: Option<crate::sys::landlock::RulesetPlan>,
    filter: Option<crate::seccomp::CompiledFilter>,
    /// With a notifying `filter`: the same profile with plain kills, for a kernel that
    /// refuses the listener (see [`crate::sys::clone::ListenerHandover`]).
    filter_fallback: Option<crate::seccomp::CompiledFilter>,
}

impl ProcessIsolation {
    /// Validates `config` against [`crate::features`] and opens nebula's cgroup root when
    /// cgroups are used.
    ///
    /// # Errors
    ///
    /// * [`ProcessError::Unsupported`] for a limit this host cannot enforce (a cgroup limit
    ///   without cgroup v2 or its controller; the memory limit unless
    ///   [`MemoryFallback::RlimitAs`] was asked for), or user namespaces that do not work;
    /// * [`ProcessError::InvalidConfig`] for contradictions (a hostname without the UTS
    ///   namespace, mounts without the mount namespace, captured stdin, NUL bytes);
    /// * [`ProcessError::OpenCgroupRoot`] when nebula's root cannot be created or its
    ///   controllers enabled (e.g. the supervisor's own cgroup holds processes).
    pub fn new(config: ProcessConfig) -> Result<ProcessIsolation, ProcessError> {
        let f = crate::features();
        plan::check_shape(&config, f)?;
        let (root, memory, rlimits) = plan::limits(&config, f)?;
        let (identity, caller_root) = plan::identity(&config)?;
        let mounts = plan::mounts(&config)?;
        let landlock = plan::landlock(&config, f)?;
        let cwd = cstring("cwd", config.cwd.as_os_str())?;
        let hostname = config.hostname.as_ref().map(|h| h.as_bytes().to_vec());
        let caps = plan::privileges(&config)?;
        let (filter, filter_fallback) = plan::seccomp(&config, f)?;
        Ok(ProcessIsolation {
            root,
            rlimits,
            memory,
            // Only a single-id map written by an unprivileged caller needs setgroups "deny"
            // (user_namespaces(7)); newgidmap decides for the subordinate map.
            deny_setgroups: matches!(identity, IdSource::Single { .. }) && !caller_root,
            identity,
            mounts,
            cwd,
            hostname,
            caps,
            landlock,
            filter,
            filter_fallback,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    /// nebula's cgroup root, when cgroups are used.
    pub fn cgroup_root(&self) -> Option<&CgroupRoot> {
        self.root.as_ref()
    }

    /// How a memory limit is enforced by this configuration.
    pub fn memory_enforcement(&self) -> MemoryEnforcement {
        self.memory
    }

    /// Runs `cmd` in a new context and waits for it to end (or be killed at a limit).
    ///
    /// # Errors
    ///
    /// As [`ProcessIsolation::spawn_command`] and [`Running::wait`]. A workload that fails or
    /// is killed is not an error: the [`Outcome`] says what happened.
    pub fn run_command(&self, cmd: &Command) -> Result<Outcome, ProcessError> {
        self.spawn_command(cmd)?.wait()
    }

    /// Starts `cmd` in a new context and returns at once.
    ///
    /// # Errors
    ///
    /// [`ProcessError::ProgramNotFound`], [`ProcessError::Cgroup`] (leaf creation, limits),
    /// [`ProcessError::CreateFd`], [`ProcessError::Spawn`], [`ProcessError::WriteIdMap`],
    /// [`ProcessError::Handshake`]. Errors of the child's own start-up steps (a mount, the
    /// `execve`) are reported by [`Running::wait`] as [`ProcessError::Setup`].
    pub fn spawn_command(&self, cmd: &Command) -> Result<Running<'_>, ProcessError> {
        self.spawn_exec(cmd, None, false)
    }

    /// Creates `cmd`'s context as an OCI runtime's `create` does: set up to the last step
    /// before the workload's own (its privileges, seccomp filter and `execve`), where it waits
    /// at `gate` (a FIFO held open for reading and writing: the read waits for a byte), and detached from this
    /// supervisor: no parent-death signal, the cgroup leaf stays when this returns, and
    /// pid 1 exits the way the workload does. Whoever writes a byte into the gate's FIFO
    /// starts it; whoever reaps the pid (a subreaper such as containerd's shim, or init)
    /// learns how it ended. Returns once the context waits at the gate.
    ///
    /// # Errors
    ///
    /// As [`ProcessIsolation::spawn_command`], and [`ProcessError::Setup`] for a set-up
    /// step that failed before the gate (a mount, a device, a join).
    pub fn create_detached(
        &self,
        cmd: &Command,
        gate: BorrowedFd<'_>,
    ) -> Result<Detached, ProcessError> {
        let mut running = self.spawn_exec(cmd, Some(gate), true)?;
        running.await_report(Some(Report::Ready), "the context reached its start gate")?;
        if let (Some(rules), Some(leaf)) = (&self.config.device_rules, &running.leaf) {
            leaf.set_device_rules(rules)
                .map_err(|source| ProcessError::Cgroup {
                    operation: "device program",
                    source,
                })?;
        }
        let cgroup = running.leaf.as_mut().map(|l| {
            l.disown();
            l.path().to_owned()
        });
        // Not killed or reaped on drop: the context lives on, its reaper is no longer us.
        running.reaped = true;
        Ok(Detached {
            pid: running.pid,
            cgroup,
            host_ids: running.ids,
        })
    }

    /// Starts `cmd` detached from this supervisor, as an OCI runtime's `exec --detach` does:
    /// no parent-death signal, nobody reaps it here (its reaper is whoever inherits it).
    /// Returns once the `execve` happened.
    ///
    /// # Errors
    ///
    /// As [`ProcessIsolation::spawn_command`]; [`ProcessError::Setup`] for a step that failed
    /// before the `execve`, the `execve` included.
    pub fn spawn_detached(&self, cmd: &Command) -> Result<Detached, ProcessError> {
        let mut running = self.spawn_exec(cmd, None, true)?;
        running.await_report(None, "the execve")?;
        running.reaped = true;
        if let Some(l) = running.leaf.as_mut() {
            l.disown();
        }
        Ok(Detached {
            pid: running.pid,
            cgroup: running
                .leaf
                .as_ref()
                .map(|l| l.path().to_owned())
                .or_else(|| self.config.cgroup_path.clone()),
            host_ids: running.ids,
        })
    }

    fn spawn_exec(
        &self,
        cmd: &Command,
        gate: Option<BorrowedFd<'_>>,
        detached: bool,
    ) -> Result<Running<'_>, ProcessError> {
        if self.config.watch_regions {
            return Err(ProcessError::InvalidConfig(
                "watch_regions is for closures: an execve replaces the memory a userfaultfd \
                 watches"
                    .into(),
            ));
        }
        let candidates = match &self.config.root {
            Some(root) => cmd.candidates_in(&root.path, &self.config.env)?,
            None => cmd.candidates()?,
        };
        let programs = candidates
            .iter()
            .map(|p| cstring("program", p.as_os_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut argv = vec![cstring("argument", &cmd.program)?];
        for a in &cmd.args {
            argv.push(cstring("argument", a)?);
        }
        let mut envp = Vec::new();
        for (k, v) in &self.config.env {
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            envp.push(cstring("environment entry", &kv)?);
        }
        let argv = CStringArray::new(argv);
        let envp = CStringArray::new(envp);

        let lease = self.lease_ids()?;
        let leaf = self.create_leaf(detached)?;
        let fds =
            // A detached context has no supervisor to answer a notifying filter: it gets the
            // plain one, whose kills are the kernel's.
            Fds::new(&self.config, false)?
                .with_listener_pair(self.filter_fallback.is_some() && !detached)?;
        let ns = self.config.namespaces;
        let joined = self
            .config
            .join
            .iter()
            .map(|(kind, path)| {
                rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                    .map(|fd| (fd, *kind))
                    .map_err(|e| {
                        ProcessError::InvalidConfig(format!(
                            "the namespace to join {}: {}",
                            path.display(),
                            io::Error::from(e)
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let spawned = {
            let plan = ExecPlan {
                prologue: fds.prologue(if ns.contains(Namespaces::PID) {
                    None
                } else {
                    Some(rustix::process::getpid().as_raw_pid())
                }),
                setup: self.setup_plan(),
                pid1: ns.contains(Namespaces::PID),
                workload: self.workload_plan(&fds, detached),
                programs,
                argv,
                envp,
                joins: joined
                    .iter()
                    .filter(|(_, kind)| *kind != Namespaces::PID)
                    .map(|(fd, kind)| {
                        // CLONE_NEW* flags fit in an int (namespaces(7)).
                        #[allow(clippy::cast_possible_truncation)]
                        let nstype = kind.bits() as i32;
                        (fd.as_fd(), nstype)
                    })
                    .collect(),
                gate,
                detached,
            };
            let pid_ns = joined
                .iter()
                .find(|(_, kind)| *kind == Namespaces::PID)
                .map(|(fd, _)| PidNsForChildren::enter(fd.as_fd()))
                .transpose()?;
            let spawned = sc::spawn_exec(&plan, ns.bits(), leaf.as_ref().map(Leaf::dir_fd))
                .map_err(|source| ProcessError::Spawn {
                    namespaces: ns_names(ns),
                    source,
                });
            drop(pid_ns);
            spawned?
        };
        let parent = fds.into_parent();
        // A joined cgroup (cgroup_path) is another context's: the new one starts in it, but
        // is never killed or removed through it (a failed start must not take that context
        // down); it is killed through its pidfd.
        let (own_leaf, joined_leaf) = if self.config.cgroup_path.is_some() {
            (None, leaf)
        } else {
            (leaf, None)
        };
        let mut running = Running::new(self, spawned.pid, spawned.pidfd, own_leaf, parent, lease);
        if !spawned.in_cgroup
            && let Some(l) = running.leaf.as_ref().or(joined_leaf.as_ref())
        {
            l.add_process(pid_of(running.pid))
                .map_err(|source| ProcessError::Cgroup {
                    operation: "cgroup.procs write (clone fallback)",
                    source,
                })?;
        }
        if ns.contains(Namespaces::USER) {
            self.write_id_maps(running.pid, running.ids)?;
        }
        if let Some(adj) = self.config.oom_score_adj {
            let path = PathBuf::from(format!("/proc/{}/oom_score_adj", running.pid));
            std::fs::write(&path, adj.to_string()).map_err(|source| ProcessError::WriteIdMap {
                path,
                content: adj.to_string(),
                source,
            })?;
        }
        running.release(sc::GO)?;
        Ok(running)
    }

    /// Runs `f` in a new context and returns its result, deep-copied (postcard) out of the
    /// child, with the context's outcome. See the module docs for how the child is created and
    /// the restriction that follows (no waiting on locks that other supervisor threads hold).
    ///
    /// # Errors
    ///
    /// As [`ProcessIsolation::spawn_command`]; a panic, a crash or an oversized result is not
    /// an error but a [`ClosureError`] in [`ClosureOutcome::result`].
    pub fn run_closure<T, F>(&self, f: F) -> Result<ClosureOutcome<T>, ProcessError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> T,
    {
        let (outcome, bytes, overflow) = self.spawn_closure(f)?.finish()?;
        let limit = self.config.max_result_bytes;
        let result = decode_result::<T>(&bytes, overflow, limit, outcome.status);
        Ok(ClosureOutcome { result, outcome })
    }

    /// The seed's `create_isolated_process`: a context whose child has gone through every
    /// isolation step of [`run_closure`](Self::run_closure) (namespaces, the cgroup leaf
    /// where there is one, rlimits, privilege drop, Landlock, seccomp) and then waits,
    /// idle, until it is killed. Returns the running context ([`Running::pid`],
    /// [`Running::kill`], [`Running::wait`]); dropping it kills the context. The
    /// configuration's wall-clock limit still applies.
    ///
    /// # Errors
    ///
    /// As [`run_closure`](Self::run_closure)'s start-up.
    pub fn create_isolated_process(&self) -> Result<Running<'_>, ProcessError> {
        self.spawn_closure(|| -> () {
            loop {
                std::thread::park();
            }
        })
    }

    /// `run_closure`'s start-up: the child runs `f` once released; the caller supervises.
    fn spawn_closure<T, F>(&self, f: F) -> Result<Running<'_>, ProcessError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> T,
    {
        let lease = self.lease_ids()?;
        let leaf = self.create_leaf(false)?;
        let fds =
            Fds::new(&self.config, true)?.with_listener_pair(self.filter_fallback.is_some())?;
        let me = rustix::process::getpid().as_raw_pid();
        // rustix reads the auxiliary vector once, on first use, from `prctl(PR_GET_AUXV)`
        // (Linux 6.4) or else `/proc/self/auxv`, and panics when both fail. In a closure
        // context on a 6.1 kernel the open failed, so `rustix::param::page_size()` panicked
        // there. Read here, in the supervisor, the fork inherits the cached vector.
        let _ = rustix::param::page_size();
        let plan = child::ClosurePlan {
            namespaces: self.config.namespaces,
            setup: self.setup_plan(),
            workload: self.workload_plan(&fds, false),
            max_result_bytes: self.config.max_result_bytes,
        };
        let pid = match sc::fork() {
            Ok(None) => child::closure_child(&plan, &fds, me, f),
            Ok(Some(pid)) => pid,
            Err(source) => {
                return Err(ProcessError::Spawn {
                    namespaces: ns_names(self.config.namespaces),
                    source,
                });
            }
        };
        drop(plan);
        let pidfd = rustix::process::pidfd_open(pid_of(pid), PidfdFlags::empty());
        let parent = fds.into_parent();
        let pidfd = match pidfd {
            Ok(fd) => fd,
            Err(e) => {
                let _ = rustix::process::kill_process(pid_of(pid), Signal::KILL);
                let _ = sc::wait4(pid);
                return Err(ProcessError::Supervise {
                    operation: "pidfd_open",
                    source: e.into(),
                });
            }
        };
        let mut running = Running::new(self, pid, pidfd, leaf, parent, lease);
        if let Some(l) = &running.leaf {
            l.add_process(pid_of(pid))
                .map_err(|source| ProcessError::Cgroup {
                    operation: "cgroup.procs write",
                    source,
                })?;
        }
        running.release(sc::PLACED)?;
        if self.config.namespaces.contains(Namespaces::USER) {
            running.await_unshared()?;
            self.write_id_maps(pid, running.ids)?;
        }
        running.release(sc::GO)?;
        Ok(running)
    }

    /// The context's leaf with its limits. A `detached` context (an OCI container) gets its
    /// device program only once its set-up is done ([`ProcessIsolation::create_detached`]):
    /// the set-up creates the bundle's device nodes, which the program may deny.
    fn create_leaf(&self, detached: bool) -> Result<Option<Leaf>, ProcessError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        if let Some(path) = &self.config.cgroup_path {
            return Leaf::open_recorded(path)
                .map(Some)
                .map_err(|source| ProcessError::Cgroup {
                    operation: "opening the cgroup to join",
                    source,
                });
        }
        let Some(root) = &self.root else {
            return Ok(None);
        };
        let name = self.config.cgroup_name.clone().unwrap_or_else(|| {
            format!(
                "ctx-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        });
        let leaf = root
            .create_leaf(&name)
            .map_err(|source| ProcessError::Cgroup {
                operation: "leaf creation",
                source,
            })?;
        let l = &self.config.limits;
        let set = |op: &'static str, r: Result<(), crate::cgroup::CgroupError>| {
            r.map_err(|source| ProcessError::Cgroup {
                operation: op,
                source,
            })
        };
        if self.memory == MemoryEnforcement::Cgroup
            && let Some(m) = l.memory_max
        {
            set("memory.max write", leaf.set_memory_max(Limit::Value(m)))?;
            // The whole context is one unit: an OOM kill takes all of it.
            set("memory.oom.group write", leaf.set_memory_oom_group(true))?;
        }
        if let Some(m) = l.memory_high {
            set("memory.high write", leaf.set_memory_high(Limit::Value(m)))?;
        }
        if let Some(m) = l.memory_low {
            set("memory.low write", leaf.set_memory_low(Limit::Value(m)))?;
        }
        if let Some(m) = l.memory_swap_max {
            set(
                "memory.swap.max write",
                leaf.set_memory_swap_max(Limit::Value(m)),
            )?;
        }
        if let Some(w) = l.cpu_weight {
            set("cpu.weight write", leaf.set_cpu_weight(w))?;
        }
        if let Some(c) = l.cpu_max {
            set("cpu.max write", leaf.set_cpu_max(c))?;
        }
        for io in &l.io_max {
            set("io.max write", leaf.set_io_max(io))?;
        }
        if let Some(p) = l.pids_max {
            set("pids.max write", leaf.set_pids_max(Limit::Value(p)))?;
        }
        if let Some(rules) = self.config.device_rules.as_ref().filter(|_| !detached) {
            set("device program", leaf.set_device_rules(rules))?;
        }
        Ok(Some(leaf))
    }

    fn setup_plan(&self) -> SetupPlan {
        let ns = self.config.namespaces;
        SetupPlan {
            become_root: ns.contains(Namespaces::USER),
            drop_groups: ns.contains(Namespaces::USER) && !self.deny_setgroups,
            hostname: self.hostname.clone(),
            mounts: self.mounts.clone(),
            loopback: ns.contains(Namespaces::NET),
        }
    }

    fn workload_plan<'a>(&'a self, fds: &'a Fds, detached: bool) -> WorkloadPlan<'a> {
        let filter = if detached {
            self.filter_fallback.as_ref().or(self.filter.as_ref())
        } else {
            self.filter.as_ref()
        };
        WorkloadPlan {
            stdio: fds.child_stdio(),
            rlimits: self.rlimits.clone(),
            privileges: Privileges {
                // landlock_restrict_self needs no_new_privs once CAP_SYS_ADMIN is dropped.
                no_new_privs: self.config.no_new_privs || self.landlock.is_some(),
                caps: self
                    .caps
                    .as_ref()
                    .map(crate::privileges::PrivilegePlan::as_sys),
                landlock: self.landlock.as_ref(),
                seccomp: filter.map(crate::seccomp::CompiledFilter::as_sys),
                seccomp_listener: fds.listener_handover(
                    self.filter_fallback
                        .as_ref()
                        .map(crate::seccomp::CompiledFilter::as_sys),
                ),
            },
            cwd: self.cwd.clone(),
            umask: self.config.umask,
        }
    }

    /// A range of the pool for one context, or `None` for a single-id mapping.
    fn lease_ids(&self) -> Result<Option<idpool::IdLease>, ProcessError> {
        match &self.identity {
            IdSource::Pool(p) if self.config.namespaces.contains(Namespaces::USER) => {
                Ok(Some(p.lease()?))
            }
            _ => Ok(None),
        }
    }

    /// The host ids of a context: its leased range, or the one id root inside maps to.
    fn id_range(&self, lease: Option<&idpool::IdLease>) -> idpool::IdRange {
        match (lease, &self.identity) {
            (Some(l), _) => l.range(),
            (None, IdSource::Single { uid, gid }) => idpool::IdRange {
                uid: *uid,
                gid: *gid,
                count: 1,
            },
            (None, IdSource::Subordinate(sub)) => idpool::IdRange {
                uid: sub.own.0,
                gid: sub.own.1,
                count: 1,
            },
            (None, IdSource::Maps { root, count, .. }) => idpool::IdRange {
                uid: root.0,
                gid: root.1,
                count: *count,
            },
            (None, IdSource::Pool(_)) => unreachable!("a pool identity always has a lease"),
        }
    }

    fn write_id_maps(&self, pid: i32, ids: idpool::IdRange) -> Result<(), ProcessError> {
        if let IdSource::Subordinate(sub) = &self.identity {
            return subordinate_maps(pid, sub);
        }
        let write = |file: &str, content: &str| {
            let path = PathBuf::from(format!("/proc/{pid}/{file}"));
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| io::Write::write_all(&mut f, content.as_bytes()))
                .map_err(|source| ProcessError::WriteIdMap {
                    path,
                    content: content.to_owned(),
                    source,
                })
        };
        if let IdSource::Maps {
            uid_map, gid_map, ..
        } = &self.identity
        {
            write("uid_map", uid_map)?;
            return write("gid_map", gid_map);
        }
        write("uid_map", &ids.uid_map())?;
        if self.deny_setgroups {
            write("setgroups", "deny")?;
        }
        write("gid_map", &ids.gid_map())
    }
}

/// Writes a context's maps with `newuidmap`/`newgidmap` (setuid helpers that check the
/// caller's `/etc/subuid` and `/etc/subgid` entries).
fn subordinate_maps(pid: i32, sub: &idpool::Subordinate) -> Result<(), ProcessError> {
    for (tool, own, start) in [
        (&sub.newuidmap, sub.own.0, sub.uid_start),
        (&sub.newgidmap, sub.own.1, sub.gid_start),
    ] {
        let args = sub.map_args(own, start);
        let fail = |source: io::Error| ProcessError::WriteIdMap {
            path: tool.clone(),
            content: format!("{pid} {}", args.join(" ")),
            source,
        };
        let out = std::process::Command::new(tool)
            .arg(pid.to_string())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(fail)?;
        if !out.status.success() {
            return Err(fail(io::Error::other(format!(
                "{} ({}); the caller's /etc/subuid and /etc/subgid entries must cover the range",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ))));
        }
    }
    Ok(())
}

fn pid_of(raw: i32) -> Pid {
    Pid::from_raw(raw).expect("a child's pid is positive")
}

fn ns_names(ns: Namespaces) -> String {
    let names: Vec<&str> = ns.iter_names().map(|(n, _)| n).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join("|")
    }
}

/// The calling thread's pid namespace for its children, switched to another one
/// (`setns(CLONE_NEWPID)`) while this lives, and back on drop.
struct PidNsForChildren {
    saved: OwnedFd,
}

impl PidNsForChildren {
    fn enter(target: BorrowedFd<'_>) -> Result<PidNsForChildren, ProcessError> {
        let fail = |what: &'static str| {
            move |e: rustix::io::Errno| ProcessError::Supervise {
                operation: what,
                source: e.into(),
            }
        };
        let saved = rustix::fs::open(
            "/proc/thread-self/ns/pid_for_children",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(fail("opening /proc/thread-self/ns/pid_for_children"))?;
        rustix::thread::move_into_link_name_space(
            target,
            Some(rustix::thread::LinkNameSpaceType::ProcessID),
        )
        .map_err(fail("setns(CLONE_NEWPID) into the pid namespace to join"))?;
        Ok(PidNsForChildren { saved })
    }
}

impl Drop for PidNsForChildren {
    fn drop(&mut self) {
        // Back to the namespace this thread's children got before: always allowed (it is
        // this thread's own or an ancestor's of the one entered).
        let _ = rustix::thread::move_into_link_name_space(
            self.saved.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::ProcessID),
        );
    }
}

/// A context created by [`ProcessIsolation::create_detached`], waiting at its start gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detached {
    /// Its top process (pid 1 of its pid namespace) in the creator's pid namespace.
    pub pid: i32,
    /// Its cgroup leaf, left in place (remove it when the context is deleted).
    pub cgroup: Option<PathBuf>,
    /// Its host ids.
    pub host_ids: IdRange,
}

/// What [`Running::supervise`] gathered until the context's pid 1 exited.
struct Supervised {
    out: Sink,
    err: Sink,
    res: Sink,
    rep: Sink,
    timed_out: bool,
    cpu_exceeded: bool,
    /// The call the filter refused, from the listener (the context was killed for it).
    denial: Option<crate::seccomp::notify::Denial>,
    /// Violations reported while it ran (already delivered to the callback).
    watched: Vec<ViolationInfo>,
    /// The memory-pressure trigger, if still armed (dropped before the leaf it watches).
    psi: Option<crate::cgroup::PsiTrigger>,
    psi_events: u64,
}

/// A bounded buffer filled from a non-blocking pipe.
#[derive(Default)]
struct Sink {
    data: Vec<u8>,
    overflow: u64,
    eof: bool,
}

impl Sink {
    /// Reads what is available; `cap` bounds what is kept.
    fn fill(&mut self, fd: BorrowedFd<'_>, cap: usize) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        while !self.eof {
            match rustix::io::read(fd, &mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    let keep = n.min(cap.saturating_sub(self.data.len()));
                    self.data.extend_from_slice(&buf[..keep]);
                    self.overflow += (n - keep) as u64;
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// A running process context. [`Running::wait`] supervises it to the end; dropping it kills
/// and reaps the context and removes its cgroup.
#[derive(Debug)]
pub struct Running<'a> {
    iso: &'a ProcessIsolation,
    pid: i32,
    pidfd: Private,
    leaf: Option<Leaf>,
    sync_wr: Option<Private>,
    report: Private,
    stdout: Option<Private>,
    stderr: Option<Private>,
    result: Option<Private>,
    released: Instant,
    pending: Vec<u8>,
    reaped: bool,
    watcher: Option<uffd_watch::Watcher>,
    /// The seccomp listener's handover and the listener (a notifying filter).
    seccomp_watch: Option<crate::seccomp::notify::ListenerWatch>,
    ids: idpool::IdRange,
    /// Released last (fields drop in order): after the context was reaped and its leaf removed.
    lease: Option<idpool::IdLease>,
}

impl<'a> Running<'a> {
    fn new(
        iso: &'a ProcessIsolation,
        pid: i32,
        pidfd: OwnedFd,
        leaf: Option<Leaf>,
        p: ParentFds,
        lease: Option<idpool::IdLease>,
    ) -> Running<'a> {
        Running {
            ids: iso.id_range(lease.as_ref()),
            lease,
            iso,
            pid,
            pidfd: private(pidfd),
            leaf,
            sync_wr: p.sync_wr,
            report: p.rep_rd,
            stdout: p.out,
            stderr: p.err,
            result: p.result,
            released: Instant::now(),
            pending: Vec::new(),
            reaped: false,
            watcher: p.watch.map(|w| uffd_watch::Watcher::new(w, pid)),
            seccomp_watch: p.listener.map(crate::seccomp::notify::ListenerWatch::new),
        }
    }

    /// The context's top process (pid 1 of its pid namespace) in the supervisor's pid
    /// namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The context's host ids: its leased range (65,536 ids, root inside = `uid`) or the one
    /// id root inside maps to (`count` 1).
    pub fn host_ids(&self) -> IdRange {
        self.ids
    }

    /// The context's cgroup leaf, when it has one.
    pub fn cgroup(&self) -> Option<&Leaf> {
        self.leaf.as_ref()
    }

    /// Kills the whole context now: `cgroup.kill`, or `SIGKILL` to its pid 1 (which takes
    /// its pid namespace with it). [`Running::wait`] then reports the kill.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Cgroup`] or [`ProcessError::Supervise`].
    pub fn kill(&self) -> Result<(), ProcessError> {
        if let Some(l) = &self.leaf {
            return l.kill().map_err(|source| ProcessError::Cgroup {
                operation: "cgroup.kill",
                source,
            });
        }
        match rustix::process::pidfd_send_signal(&self.pidfd, Signal::KILL) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(ProcessError::Supervise {
                operation: "pidfd_send_signal(SIGKILL)",
                source: e.into(),
            }),
        }
    }

    fn release(&mut self, byte: u8) -> Result<(), ProcessError> {
        let fd = self
            .sync_wr
            .as_ref()
            .expect("sync pipe open until released");
        loop {
            match rustix::io::write(fd, &[byte]) {
                Ok(1) => break,
                Err(Errno::INTR) => {}
                Ok(_) => unreachable!("a one-byte pipe write is all or nothing"),
                Err(e) => {
                    // The child died before it was released: its report says why.
                    let why = self.early_failure();
                    return Err(why.unwrap_or(ProcessError::Handshake {
                        what: "releasing the child".into(),
                        source: e.into(),
                    }));
                }
            }
        }
        if byte == sc::GO {
            // The write end stays open for the context's life: the child's check after it
            // re-arms its death signal (sys::clone::rearm_death_signal) reads a hang-up of
            // this pipe as "the supervisor died".
            self.released = Instant::now();
        }
        Ok(())
    }

    /// Waits for the closure child's [`Report::Unshared`].
    fn await_unshared(&mut self) -> Result<(), ProcessError> {
        self.await_report(Some(Report::Unshared), "the child entered its namespaces")
    }

    /// Waits for the report `expected` (`what`: what it means, for errors), or with `None`
    /// for the report pipe to close without one (the child's `execve` closed its end,
    /// close-on-exec); any other report, or an exit first, is the child's failure.
    fn await_report(&mut self, expected: Option<Report>, what: &str) -> Result<(), ProcessError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let mut buf = [0u8; sc::REPORT_LEN];
            match rustix::io::read(&self.report, &mut buf) {
                Ok(n) if n == sc::REPORT_LEN => match Report::decode(&buf) {
                    Some(r) if Some(r) == expected => return Ok(()),
                    _ => {
                        self.pending.extend_from_slice(&buf);
                        return Err(self.early_failure().unwrap_or(ProcessError::Handshake {
                            what: format!("unexpected report before {what}"),
                            source: io::Error::from_raw_os_error(libc::EPROTO),
                        }));
                    }
                },
                Ok(0) if expected.is_none() => return Ok(()),
                Ok(0) => {
                    return Err(self.early_failure().unwrap_or(ProcessError::Handshake {
                        what: format!("the child exited before {what}"),
                        source: io::Error::from_raw_os_error(libc::ECHILD),
                    }));
                }
                Ok(n) => {
                    return Err(ProcessError::Handshake {
                        what: format!("short report of {n} bytes"),
                        source: io::Error::from_raw_os_error(libc::EPROTO),
                    });
                }
                Err(Errno::AGAIN) | Err(Errno::INTR) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ProcessError::Handshake {
                            what: format!("no answer from the child within {STARTUP_TIMEOUT:?}"),
                            source: io::Error::from_raw_os_error(libc::ETIMEDOUT),
                        });
                    }
                    poll_fds(&mut [PollFd::new(&self.report, PollFlags::IN)], left)?;
                }
                Err(e) => {
                    return Err(ProcessError::Handshake {
                        what: "reading the report pipe".into(),
                        source: e.into(),
                    });
                }
            }
        }
    }

    /// After `wait4` returned the context's top process. With a pid namespace of its own that
    /// process was its init, and the kernel has reaped every other process of the namespace
    /// before: nothing runs with the context's ids any more, and its lease is freed at once.
    fn note_reaped(&mut self) {
        self.reaped = true;
        if self.iso.config.namespaces.contains(Namespaces::PID)
            && let Some(lease) = self.lease.as_mut()
        {
            lease.mark_vacated();
        }
    }

    /// After a failed handshake: kill and reap the child, and turn its report into an error.
    fn early_failure(&mut self) -> Option<ProcessError> {
        let _ = self.kill();
        if sc::wait4(self.pid).is_ok() {
            self.note_reaped();
        }
        self.reaped = true;
        let mut sink = Sink::default();
        let _ = sink.fill(self.report.as_fd(), 4096);
        self.pending.extend_from_slice(&sink.data);
        setup_error(&self.pending, &self.iso.mounts, self.iso.landlock.as_ref())
    }

    /// Supervises the context to its end: enforces the wall-clock and CPU-time limits, reads
    /// captured output, reaps it, reads the cgroup's reports and removes the cgroup.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Setup`] when a start-up step in the child failed (including `execve`);
    /// [`ProcessError::Supervise`] when polling or reaping failed; [`ProcessError::Cgroup`]
    /// when the cgroup's reports cannot be read or it cannot be removed.
    pub fn wait(self) -> Result<Outcome, ProcessError> {
        self.finish().map(|(o, _, _)| o)
    }

    fn finish(mut self) -> Result<(Outcome, Vec<u8>, u64), ProcessError> {
        let mut s = self.supervise()?;
        let (status, usage, wall_time) = self.reap(&mut s)?;
        self.report(s, status, usage, wall_time)
    }

    /// Supervises the context until its pid 1 exits: streams its pipes, enforces the
    /// wall-clock and CPU-time limits, and acts on the live watches (memory pressure, watched
    /// memory, the seccomp listener), killing the context when one says so.
    fn supervise(&mut self) -> Result<Supervised, ProcessError> {
        let cfg = &self.iso.config;
        let deadline = cfg.limits.wall_time.map(|d| self.released + d);
        let cpu_limit = cfg.limits.cpu_time.filter(|_| self.leaf.is_some());
        let (mut out, mut err, mut res, mut rep) = (
            Sink::default(),
            Sink::default(),
            Sink::default(),
            Sink::default(),
        );
        let (mut timed_out, mut cpu_exceeded, mut killed) = (false, false, false);
        // The call the filter refused, from the listener (the context is killed for it).
        let mut denial: Option<crate::seccomp::notify::Denial> = None;
        let mut watched: Vec<ViolationInfo> = Vec::new();
        // Live violations (watched memory, memory pressure) go to the callback at once.
        let deliver = |v: &ViolationInfo| {
            if let Some(cb) = &cfg.on_violation {
                cb(v);
            }
        };
        let pressure_watch = cfg.limits.memory_pressure;
        let mut psi = match (pressure_watch, &self.leaf) {
            (Some(w), Some(leaf)) => Some(
                leaf.memory_pressure_trigger(w.kind, w.stall, w.window)
                    .map_err(|source| ProcessError::Cgroup {
                        operation: "memory.pressure trigger",
                        source,
                    })?,
            ),
            _ => None,
        };
        let (mut psi_events, mut psi_first) = (0u64, None::<Instant>);
        let result_cap = cfg.max_result_bytes.saturating_add(8);
        loop {
            let now = Instant::now();
            let mut wait = Duration::from_secs(3600);
            if let Some(d) = deadline
                && !killed
            {
                wait = wait.min(d.saturating_duration_since(now));
            }
            if cpu_limit.is_some() && !killed {
                wait = wait.min(CPU_CHECK);
            }
            let (exited, psi_fired, psi_gone) =
                self.wait_for_events([&rep, &out, &err, &res], psi.as_ref(), wait)?;
            if psi_gone {
                psi = None;
            }
            if psi_fired && let Some(w) = pressure_watch {
                psi_events += 1;
                let now = Instant::now();
                let first = *psi_first.get_or_insert(now);
                let kill = !killed && w.kill_after.is_some_and(|d| now - first >= d);
                let report = psi_events == 1 || kill;
                if report {
                    let v = ViolationInfo {
                        address: None,
                        kind: ViolationKind::MemoryPressure {
                            stall_us: u64::try_from(w.stall.as_micros()).unwrap_or(u64::MAX),
                            window_us: u64::try_from(w.window.as_micros()).unwrap_or(u64::MAX),
                            killed: kill,
                        },
                        region: None,
                        context: None,
                        thread_id: None,
                        pid: Some(self.pid),
                        timestamp: SystemTime::now(),
                    };
                    deliver(&v);
                    watched.push(v);
                }
                if kill {
                    killed = true;
                    psi = None;
                    self.kill()?;
                }
            }
            self.drain(&mut rep, &mut out, &mut err, &mut res, result_cap)?;
            let (written, denied) = self.service_watches(&mut killed)?;
            if let Some(v) = written {
                deliver(&v);
                watched.push(v);
            }
            if denied.is_some() {
                denial = denied;
            }
            if exited {
                break;
            }
            if !killed && deadline.is_some_and(|d| Instant::now() >= d) {
                timed_out = true;
                killed = true;
                self.kill()?;
            }
            if !killed
                && let (Some(limit), Some(leaf)) = (cpu_limit, &self.leaf)
                && let Ok(st) = leaf.cpu_stat()
                && Duration::from_micros(st.usage_usec) >= limit
            {
                cpu_exceeded = true;
                killed = true;
                self.kill()?;
            }
        }
        Ok(Supervised {
            out,
            err,
            res,
            rep,
            timed_out,
            cpu_exceeded,
            denial,
            watched,
            psi,
            psi_events,
        })
    }

    /// Reaps pid 1 and reads what its start-up reported: a setup error, or the workload's
    /// own exit status (a notified kill reported as the `SIGSYS` it stands for).
    fn reap(
        &mut self,
        s: &mut Supervised,
    ) -> Result<(ExitStatus, sc::Rusage, Duration), ProcessError> {
        let result_cap = self.iso.config.max_result_bytes.saturating_add(8);
        let (raw, usage) = sc::wait4(self.pid).map_err(|source| ProcessError::Supervise {
            operation: "wait4",
            source,
        })?;
        self.note_reaped();
        let wall_time = self.released.elapsed();
        self.drain(&mut s.rep, &mut s.out, &mut s.err, &mut s.res, result_cap)?;
        self.pending.extend_from_slice(&s.rep.data);
        if let Some(e) = setup_error(&self.pending, &self.iso.mounts, self.iso.landlock.as_ref()) {
            return Err(e);
        }
        let workload = self
            .pending
            .chunks_exact(sc::REPORT_LEN)
            .filter_map(|c| Report::decode(c.try_into().expect("chunk of REPORT_LEN")))
            .find_map(|r| match r {
                Report::Workload { status } => Some(status),
                _ => None,
            });
        let mut status = ExitStatus::from_raw(workload.unwrap_or(raw));
        // Killed for a notified call: report the kill the filter stands for (SIGSYS, the
        // convention KILL_PROCESS set), not the SIGKILL that carried it out.
        if s.denial.is_some() && status.signal() == Some(libc::SIGKILL) {
            status = ExitStatus::Signaled {
                signal: libc::SIGSYS,
                core_dumped: false,
            };
        }
        Ok((status, usage, wall_time))
    }

    /// The outcome: the status, the limits that were hit, what the cgroup's files say (read
    /// before the cgroup is removed) and every violation, each delivered to the callback.
    fn report(
        &mut self,
        s: Supervised,
        status: ExitStatus,
        usage: sc::Rusage,
        wall_time: Duration,
    ) -> Result<(Outcome, Vec<u8>, u64), ProcessError> {
        let cfg = &self.iso.config;
        let deliver = |v: &ViolationInfo| {
            if let Some(cb) = &cfg.on_violation {
                cb(v);
            }
        };
        let Supervised {
            out,
            err,
            res,
            timed_out,
            cpu_exceeded,
            denial,
            mut watched,
            psi,
            psi_events,
            ..
        } = s;
        let mut outcome = Outcome {
            pid: self.pid,
            status,
            timed_out,
            cpu_time_exceeded: cpu_exceeded,
            oom_killed: false,
            oom_kills: 0,
            pids_limit_hits: 0,
            seccomp_killed: denial.is_some() || status.signal() == Some(libc::SIGSYS),
            denied_syscall: denial.map(|d| d.syscall),
            memory_high_events: 0,
            memory_pressure_events: psi_events,
            memory_peak: None,
            max_rss_bytes: usage.max_rss_bytes,
            cpu_time: usage.user + usage.system,
            wall_time,
            memory_limit: self.iso.memory,
            cgroup: self.leaf.as_ref().map(|l| l.path().to_owned()),
            violations: Vec::new(),
            stdout: out.data,
            stderr: err.data,
        };
        // The trigger (if still armed) goes before the leaf it watches.
        drop(psi);
        if let Some(leaf) = self.leaf.take() {
            let cg =
                |operation: &'static str| move |source| ProcessError::Cgroup { operation, source };
            let mem = leaf.memory_events().map_err(cg("memory.events read"))?;
            outcome.oom_kills = mem.oom_kill;
            outcome.memory_high_events = mem.high;
            outcome.oom_killed = mem.oom_kill > 0;
            if leaf
                .controllers()
                .map_err(cg("cgroup.controllers read"))?
                .iter()
                .any(|c| c == "pids")
            {
                outcome.pids_limit_hits = leaf.pids_events().map_err(cg("pids.events read"))?.max;
            }
            outcome.memory_peak = leaf.memory_peak().map_err(cg("memory.peak read"))?;
            outcome.cpu_time =
                Duration::from_micros(leaf.cpu_stat().map_err(cg("cpu.stat read"))?.usage_usec);
            leaf.kill_and_remove(TEARDOWN_WAIT)
                .map_err(cg("teardown"))?;
        }
        // RLIMIT_CPU ends the workload with SIGXCPU at the soft limit (SIGKILL at the hard
        // one); a SIGKILL counts only when the CPU time is over the limit and no other cause
        // (the wall-clock limit, an OOM kill) explains it.
        if let Some(limit) = cfg.limits.cpu_time
            && (status.signal() == Some(libc::SIGXCPU)
                || (status.signal() == Some(libc::SIGKILL)
                    && !timed_out
                    && !outcome.oom_killed
                    && outcome.cpu_time >= limit))
        {
            outcome.cpu_time_exceeded = true;
        }
        let ended = violations(&outcome, cfg, denial.map(|d| d.thread));
        for v in &ended {
            deliver(v);
        }
        watched.extend(ended);
        outcome.violations = watched;
        Ok((outcome, res.data, res.overflow))
    }

    /// Services the live watches. A write to a watched range (userfaultfd: the writer is
    /// blocked in the kernel) or a call the seccomp filter refused (the caller is blocked,
    /// the call never answered, as KILL_PROCESS would have it) ends the whole context, and
    /// only it, before anything else runs there. The listener stays open until the context
    /// is reaped: closing it would let the call fail with ENOSYS and the workload go on
    /// before it dies. Returns what the watches reported.
    fn service_watches(
        &mut self,
        killed: &mut bool,
    ) -> Result<
        (
            Option<ViolationInfo>,
            Option<crate::seccomp::notify::Denial>,
        ),
        ProcessError,
    > {
        let mut written = None;
        if let Some(w) = &mut self.watcher {
            written = w.service().map_err(|source| ProcessError::Supervise {
                operation: "reading the context's userfaultfd",
                source,
            })?;
            if written.is_some() {
                self.watcher = None;
            }
        }
        let mut denied = None;
        if let Some(w) = &mut self.seccomp_watch {
            denied = w.service().map_err(|source| ProcessError::Supervise {
                operation: "reading the context's seccomp listener",
                source,
            })?;
        }
        if (written.is_some() || denied.is_some()) && !*killed {
            *killed = true;
            self.kill()?;
        }
        Ok((written, denied))
    }

    /// Waits up to `wait` for the context: pid 1's exit, its pipes (those not at EOF yet),
    /// the watches' descriptors and the pressure trigger. Returns whether pid 1 exited,
    /// whether the trigger fired, and whether it is gone (the cgroup was removed).
    fn wait_for_events(
        &self,
        [rep, out, err, res]: [&Sink; 4],
        psi: Option<&crate::cgroup::PsiTrigger>,
        wait: Duration,
    ) -> Result<(bool, bool, bool), ProcessError> {
        let mut pfds = vec![PollFd::new(&self.pidfd, PollFlags::IN)];
        if !rep.eof {
            pfds.push(PollFd::new(&self.report, PollFlags::IN));
        }
        for (fd, sink) in [
            (&self.stdout, out),
            (&self.stderr, err),
            (&self.result, res),
        ] {
            if let Some(fd) = fd
                && !sink.eof
            {
                pfds.push(PollFd::new(fd, PollFlags::IN));
            }
        }
        if let Some(fd) = self.watcher.as_ref().and_then(|w| w.poll_fd()) {
            pfds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
        }
        if let Some(fd) = self.seccomp_watch.as_ref().and_then(|w| w.poll_fd()) {
            pfds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
        }
        let psi_at = psi.map(|t| {
            pfds.push(PollFd::new(t, PollFlags::PRI));
            pfds.len() - 1
        });
        poll_fds(&mut pfds, wait)?;
        let psi_rev = psi_at.map(|i| pfds[i].revents());
        Ok((
            pfds[0].revents().contains(PollFlags::IN),
            psi_rev.is_some_and(|r| r.contains(PollFlags::PRI)),
            psi_rev.is_some_and(|r| r.intersects(PollFlags::ERR | PollFlags::NVAL)),
        ))
    }

    fn drain(
        &self,
        rep: &mut Sink,
        out: &mut Sink,
        err: &mut Sink,
        res: &mut Sink,
        result_cap: usize,
    ) -> Result<(), ProcessError> {
        let cap = self.iso.config.max_output_bytes;
        let e = |source| ProcessError::Supervise {
            operation: "reading the context's pipes",
            source,
        };
        rep.fill(self.report.as_fd(), 1 << 16).map_err(e)?;
        if let Some(fd) = &self.stdout {
            out.fill(fd.as_fd(), cap).map_err(e)?;
        }
        if let Some(fd) = &self.stderr {
            err.fill(fd.as_fd(), cap).map_err(e)?;
        }
        if let Some(fd) = &self.result {
            res.fill(fd.as_fd(), result_cap).map_err(e)?;
        }
        Ok(())
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.kill();
            if sc::wait4(self.pid).is_ok() {
                self.note_reaped();
            }
        }
        // The leaf (if still here) kills what is left and removes itself on drop.
    }
}

fn poll_fds(fds: &mut [PollFd<'_>], wait: Duration) -> Result<(), ProcessError> {
    let ts = rustix::event::Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    match rustix::event::poll(fds, Some(&ts)) {
        Ok(_) | Err(Errno::INTR) => Ok(()),
        Err(e) => Err(ProcessError::Supervise {
            operation: "poll",
            source: e.into(),
        }),
    }
}

/// The first start-up failure among the reports, as an error.
fn setup_error(
    reports: &[u8],
    mounts: &[MountStep],
    landlock: Option<&crate::sys::landlock::RulesetPlan>,
) -> Option<ProcessError> {
    reports
        .chunks_exact(sc::REPORT_LEN)
        .filter_map(|c| Report::decode(c.try_into().expect("chunk of REPORT_LEN")))
        .find_map(|r| match r {
            Report::StepFailed {
                step,
                detail,
                errno,
            } => Some(ProcessError::Setup {
                source: privilege_error(step, detail, errno),
                step: step.name(),
                detail: match step {
                    Step::Mount => match usize::try_from(detail).ok().and_then(|i| mounts.get(i)) {
                        Some(m) => format!(" ({})", m.describe()),
                        None => format!(" (#{detail})"),
                    },
                    Step::Rlimit | Step::Stdio | Step::SetIds => format!(" (#{detail})"),
                    Step::Landlock => crate::landlock::describe_failure(landlock, detail),
                    Step::Exec if errno == libc::EACCES => crate::landlock::exec_denied(landlock),
                    _ => String::new(),
                },
            }),
            _ => None,
        })
}

/// The cause of a failed step: capability and seccomp failures carry their module error's
/// 64-bit code in (detail, errno); every other step an errno.
fn privilege_error(step: Step, detail: i32, errno: i32) -> io::Error {
    // The report's (detail, errno) are the code's two 32-bit halves, bits as they are
    // (sys::clone::split_code made them).
    #[allow(clippy::cast_sign_loss)]
    let code = (u64::from(detail as u32) << 32) | u64::from(errno as u32);
    match step {
        Step::Capabilities => match crate::privileges::PrivilegeError::decode(code) {
            Some(e) => io::Error::other(e),
            None => io::Error::from_raw_os_error(errno),
        },
        Step::Seccomp => match crate::seccomp::SeccompError::decode(code) {
            Some(e) => io::Error::other(e),
            None => io::Error::from_raw_os_error(errno),
        },
        _ => io::Error::from_raw_os_error(errno),
    }
}

/// The violations of a context that ended; `denied_thread` is the thread a seccomp
/// notification named (the supervisor's pid namespace).
fn violations(o: &Outcome, cfg: &ProcessConfig, denied_thread: Option<u32>) -> Vec<ViolationInfo> {
    let v = |kind| ViolationInfo {
        address: None,
        kind,
        region: None,
        context: None,
        thread_id: None,
        pid: Some(o.pid),
        timestamp: SystemTime::now(),
    };
    let mut out = Vec::new();
    if o.oom_killed {
        out.push(v(ViolationKind::OutOfMemory {
            memory_max: cfg.limits.memory_max,
        }));
    }
    if o.pids_limit_hits > 0 {
        out.push(v(ViolationKind::PidsLimit {
            refused: o.pids_limit_hits,
        }));
    }
    if o.seccomp_killed {
        out.push(ViolationInfo {
            thread_id: denied_thread.and_then(|t| i32::try_from(t).ok()),
            ..v(ViolationKind::Seccomp {
                syscall: o.denied_syscall,
            })
        });
    }
    if o.timed_out {
        out.push(v(ViolationKind::TimeLimit));
    }
    if o.cpu_time_exceeded {
        out.push(v(ViolationKind::CpuTimeLimit));
    }
    out
}

fn decode_result<T: DeserializeOwned>(
    bytes: &[u8],
    overflow: u64,
    limit: usize,
    status: ExitStatus,
) -> Result<T, ClosureError> {
    if bytes.len() < 8 {
        return Err(ClosureError::Died(status));
    }
    let len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if len > limit as u64 || overflow > 0 {
        return Err(ClosureError::ResultTooLarge {
            size: len.max(bytes.len() as u64 - 8 + overflow),
            limit,
        });
    }
    let Some(body) = usize::try_from(len).ok().and_then(|n| bytes[8..].get(..n)) else {
        return Err(ClosureError::Died(status));
    };
    match postcard::from_bytes::<Result<T, String>>(body) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(panic)) => Err(ClosureError::Panicked(panic)),
        Err(e) => Err(ClosureError::Decode(e.to_string())),
    }
}

/// Whether the process level runs here: it needs user namespaces; without cgroup v2 or
/// Landlock it runs with those limits refused.
pub fn availability(f: &crate::probe::Features) -> crate::base::LevelStatus {
    let mut lacks = Vec::new();
    if !f.user_namespaces.available {
        lacks.push(format!(
            "user namespaces: {}",
            f.user_namespaces.reason.as_deref().unwrap_or("")
        ));
    }
    let mut status = crate::base::LevelStatus::from_lacks(lacks);
    if !f.cgroup_v2.available {
        // The level still runs (namespaces, rlimits, privileges, seccomp); memory, CPU, I/O
        // and pids limits are refused with this reason.
        status.limited.push("no cgroup v2 memory controller: memory/cpu/io/pids limits are refused (see cgroup_v2.reason); RLIMIT_AS only when asked for".into());
    }
    if !f.landlock.available {
        status
            .limited
            .push("no Landlock: --landlock is refused (see landlock.reason)".into());
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_decode_and_bounds_hold() {
        let enc = |r: &Result<u32, String>| {
            let body = postcard::to_allocvec(r).unwrap();
            let mut v = (body.len() as u64).to_le_bytes().to_vec();
            v.extend(body);
            v
        };
        let died = ExitStatus::Signaled {
            signal: 9,
            core_dumped: false,
        };
        assert_eq!(decode_result::<u32>(&enc(&Ok(7)), 0, 64, died), Ok(7));
        assert_eq!(
            decode_result::<u32>(&enc(&Err("boom".into())), 0, 64, died),
            Err(ClosureError::Panicked("boom".into()))
        );
        assert_eq!(
            decode_result::<u32>(&[], 0, 64, died),
            Err(ClosureError::Died(died))
        );
        let big = enc(&Err("x".repeat(100)));
        assert!(matches!(
            decode_result::<u32>(&big, 0, 16, died),
            Err(ClosureError::ResultTooLarge { limit: 16, .. })
        ));
        let mut cut = enc(&Ok(300));
        cut.pop();
        assert_eq!(
            decode_result::<u32>(&cut, 0, 64, died),
            Err(ClosureError::Died(died))
        );
    }

    #[test]
    fn setup_reports_become_errors() {
        let mut bytes = Vec::new();
        bytes.extend([1u32.to_le_bytes(), 0i32.to_le_bytes(), 0i32.to_le_bytes()].concat());
        assert!(setup_error(&bytes, &[], None).is_none());
        bytes.extend(
            [
                (0x100 | Step::Mount as u32).to_le_bytes(),
                2i32.to_le_bytes(),
                libc::EROFS.to_le_bytes(),
            ]
            .concat(),
        );
        let e = setup_error(&bytes, &[], None).unwrap();
        assert!(e.to_string().contains("mount\" (#2)"), "{e}");
        let m = [
            MountStep::MakePrivate,
            MountStep::ReadOnlyRoot,
            MountStep::Proc {
                target: c"/proc".into(),
            },
        ];
        let e = setup_error(&bytes, &m, None).unwrap();
        assert!(e.to_string().contains("(proc on /proc)"), "{e}");
    }

    #[test]
    fn names_list_namespaces() {
        assert_eq!(ns_names(Namespaces::USER | Namespaces::PID), "USER|PID");
        assert_eq!(ns_names(Namespaces::empty()), "none");
    }

    #[test]
    fn sysfs_follows_the_network_namespace() {
        if !crate::features().user_namespaces.available {
            return; // ProcessIsolation::new refuses USER without them; nothing to plan
        }
        let plan = |c: ProcessConfig| {
            ProcessIsolation::new(c.cgroup(CgroupUse::Off))
                .unwrap()
                .mounts
                .iter()
                .map(MountStep::describe)
                .filter(|d| d.contains("/sys") && !d.contains("/proc/"))
                .filter(|d| !d.ends_with("(masked path)"))
                .collect::<Vec<_>>()
        };
        assert_eq!(plan(ProcessConfig::new()), ["sysfs on /sys read-only"]);
        assert_eq!(
            plan(ProcessConfig::new().network(Network::Host)),
            ["mask /sys (empty read-only tmpfs)"]
        );
        assert_eq!(
            plan(ProcessConfig::new().sysfs(Sysfs::Masked)),
            ["mask /sys (empty read-only tmpfs)"]
        );
        assert!(plan(ProcessConfig::new().sysfs(Sysfs::Host)).is_empty());
        // Without the mount namespace: only an explicit mask is a contradiction.
        let mut c = ProcessConfig::new()
            .namespaces(Namespaces::USER)
            .read_only_root(false)
            .cgroup(CgroupUse::Off);
        c.tmpfs.clear();
        c.mount_proc = false;
        assert!(ProcessIsolation::new(c.clone()).unwrap().mounts.is_empty());
        let e = ProcessIsolation::new(c.sysfs(Sysfs::Masked)).unwrap_err();
        assert!(matches!(e, ProcessError::InvalidConfig(_)), "{e}");
    }

    #[test]
    fn contradictions_are_refused() {
        let e = ProcessIsolation::new(
            ProcessConfig::new()
                .namespaces(Namespaces::USER)
                .hostname("x"),
        )
        .unwrap_err();
        assert!(matches!(e, ProcessError::InvalidConfig(_)), "{e}");
        let mut c = ProcessConfig::new();
        c.stdin = Stdio::Capture;
        assert!(matches!(
            ProcessIsolation::new(c).unwrap_err(),
            ProcessError::InvalidConfig(_)
        ));
    }
}
