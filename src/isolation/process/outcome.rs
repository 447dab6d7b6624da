//! [`Outcome`]: how a process context ended, as the kernel reported it; [`ProcessError`].

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::cgroup::CgroupError;
use crate::violation::ViolationInfo;

/// How the workload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled {
        /// The signal number.
        signal: i32,
        /// A core dump was written (or attempted).
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// From a raw `wait4(2)` status.
    pub fn from_raw(status: i32) -> ExitStatus {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled {
                signal: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            }
        } else {
            ExitStatus::Exited(libc::WEXITSTATUS(status))
        }
    }

    /// Exit code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// The signal that killed it, if one did.
    pub fn signal(self) -> Option<i32> {
        match self {
            ExitStatus::Signaled { signal, .. } => Some(signal),
            ExitStatus::Exited(_) => None,
        }
    }

    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled { signal, .. } => 128 + signal,
        }
    }
}

/// How the context's memory limit was enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MemoryEnforcement {
    /// No memory limit was asked for.
    None,
    /// cgroup v2 `memory.max` (resident memory of the whole context).
    Cgroup,
    /// The `RLIMIT_AS` fallback (address space of each process), asked for explicitly.
    RlimitAs,
}

/// What happened to a process context, from the kernel's reports: the wait status, the
/// cgroup's `memory.events`, `pids.events`, `memory.peak`, `cpu.stat` (read before the
/// cgroup was removed), and the wait's resource usage.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    /// The context's top process in the supervisor's pid namespace (pid 1 of its namespace).
    pub pid: i32,
    /// How the workload ended (pid 1 reports the workload's own status; when pid 1 itself was
    /// killed, e.g. by `cgroup.kill`, its status; `SIGSYS` when the supervisor killed it for a
    /// denied call, see [`Outcome::denied_syscall`]).
    pub status: ExitStatus,
    /// The wall-clock limit ran out and nebula killed the context.
    pub timed_out: bool,
    /// The CPU-time limit ran out (`SIGXCPU`/`RLIMIT_CPU`, or `cpu.stat` over the limit).
    pub cpu_time_exceeded: bool,
    /// The kernel's OOM killer killed a process of the context (`memory.events oom_kill`).
    pub oom_killed: bool,
    /// `memory.events oom_kill`.
    pub oom_kills: u64,
    /// Forks refused at `pids.max` (`pids.events max`).
    pub pids_limit_hits: u64,
    /// The seccomp filter ended the context: the workload died of `SIGSYS`, or the filter
    /// refused a call and the supervisor killed the context for it ([`Outcome::denied_syscall`]).
    pub seccomp_killed: bool,
    /// The call the seccomp filter refused, as the kernel's notification named it (process
    /// contexts install their profile's kills as `SECCOMP_RET_USER_NOTIF`, see
    /// [`crate::seccomp`]). The supervisor then killed the context with `cgroup.kill` or
    /// `SIGKILL` to its pid 1, and [`Outcome::status`] reads `Signaled { SIGSYS }`, the status
    /// the kernel's own `KILL_PROCESS` gives. `None` with `seccomp_killed` for a `SIGSYS`
    /// that came without a notification: the architecture or x32 guard (still
    /// `KILL_PROCESS`), a kernel without user notification, or a `SIGSYS` sent by hand.
    pub denied_syscall: Option<crate::seccomp::DeniedSyscall>,
    /// `memory.events high`: how often the context was throttled over `memory.high`.
    pub memory_high_events: u64,
    /// How often the [`super::MemoryPressureWatch`] trigger fired.
    pub memory_pressure_events: u64,
    /// `memory.peak` of the context's cgroup, in bytes (cgroup v2, Linux 5.19).
    pub memory_peak: Option<u64>,
    /// The largest resident set of any process of the context (`ru_maxrss`), in bytes.
    pub max_rss_bytes: u64,
    /// CPU time of the whole context (`cpu.stat usage_usec`, else the wait's rusage).
    pub cpu_time: Duration,
    /// From release to exit.
    pub wall_time: Duration,
    /// How the memory limit was enforced.
    pub memory_limit: MemoryEnforcement,
    /// The cgroup the context ran in (removed now).
    pub cgroup: Option<PathBuf>,
    /// The violations, as also delivered to the config's callback.
    pub violations: Vec<ViolationInfo>,
    /// Captured stdout ([`super::Stdio::Capture`]).
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    /// Captured stderr.
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
}

impl Outcome {
    /// The workload exited with code 0 and no limit fired.
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out && !self.oom_killed && !self.cpu_time_exceeded
    }

    /// Captured stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Captured stderr as text (lossy).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Why a closure's result did not come back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClosureError {
    /// The closure panicked; the message.
    #[error("the closure panicked: {0}")]
    Panicked(String),
    /// The child ended without sending a result (a crash, a kill, a limit).
    #[error("the closure's process ended without a result: {0:?}")]
    Died(ExitStatus),
    /// The encoded result is larger than `max_result_bytes`.
    #[error(
        "the closure's result is {size} bytes, more than the limit of {limit}; Hint: raise the configuration's result size limit (max_result_bytes)"
    )]
    ResultTooLarge {
        /// Its size (as far as read).
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// The bytes did not decode as the result type.
    #[error("the closure's result does not decode: {0}")]
    Decode(String),
}

/// An error of the process level. Converts into [`IsolationError`](crate::IsolationError).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// A limit or feature this host cannot provide.
    #[error("{feature} is not available here: {reason}")]
    Unsupported {
        /// What was asked for.
        feature: &'static str,
        /// Why not, and the fix where known.
        reason: String,
    },
    /// The configuration contradicts itself.
    #[error("invalid process context configuration: {0}")]
    InvalidConfig(String),
    /// Declaring nebula's id pool or leasing a range of it failed.
    #[error("no host id range for the context")]
    Ids(#[from] super::idpool::IdPoolError),
    /// The program was not found on `PATH`.
    #[error("program {program:?} not found on PATH; Hint: pass an absolute path")]
    ProgramNotFound {
        /// The name given.
        program: String,
    },
    /// Opening nebula's cgroup root failed.
    #[error("cannot open nebula's cgroup root under {}", .parent.display())]
    OpenCgroupRoot {
        /// The parent cgroup.
        parent: PathBuf,
        /// The cgroup error.
        #[source]
        source: CgroupError,
    },
    /// A cgroup operation for the context failed.
    #[error("cgroup {operation} for the context failed")]
    Cgroup {
        /// What was being done.
        operation: &'static str,
        /// The cgroup error.
        #[source]
        source: CgroupError,
    },
    /// Creating a pipe or opening `/dev/null` failed.
    #[error("creating the context's {what} failed")]
    CreateFd {
        /// Which.
        what: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// `clone3`/`clone`/`fork` failed.
    #[error(
        "spawning the context (clone3 with namespaces {namespaces}) failed; Hint: nebula-ctl probe shows whether user namespaces work here"
    )]
    Spawn {
        /// The namespace flags, by name.
        namespaces: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Writing a proc file of the child (its uid/gid map, its `oom_score_adj`) failed.
    #[error("writing {} ({content:?}) failed", .path.display())]
    WriteIdMap {
        /// The proc file.
        path: PathBuf,
        /// What was written.
        content: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Talking to the child over its sync or report pipe failed.
    #[error("the start-up handshake with the child failed: {what}")]
    Handshake {
        /// What went wrong.
        what: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A start-up step in the child failed (after the fork, before the workload ran).
    #[error("the context's start-up step \"{step}\"{detail} failed in the child")]
    Setup {
        /// The step.
        step: &'static str,
        /// Which mount or rlimit, when the step has several.
        detail: String,
        /// The errno the child got.
        #[source]
        source: io::Error,
    },
    /// Building the capability plan or compiling the seccomp profile failed (in the parent).
    #[error("preparing the context's {what} failed")]
    Privileges {
        /// Which.
        what: &'static str,
        /// The module's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Waiting for, polling or signalling the child failed.
    #[error("{operation} of the context failed")]
    Supervise {
        /// What was being done.
        operation: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
}
