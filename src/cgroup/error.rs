//! [`CgroupError`]: what failed, on which file, and how to fix it where that is known.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::controller::Controller;
use super::parse::ParseError;

/// The filesystem magic of cgroup v2 (`CGROUP2_SUPER_MAGIC` in `linux/magic.h`).
pub const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
/// The filesystem magic of a cgroup v1 hierarchy (`CGROUP_SUPER_MAGIC`).
pub const CGROUP_SUPER_MAGIC: u64 = 0x0027_e0eb;
const TMPFS_MAGIC: u64 = 0x0102_1994;
const SYSFS_MAGIC: u64 = 0x6265_6572;

/// An error from the cgroup v2 manager.
///
/// Variants are named after the operation that failed; each carries the path it failed on and,
/// for system errors, the `io::Error` as its source. Messages end with the fix where one is
/// known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// `statfs(2)` on a path that should be a cgroup directory failed.
    #[error("cannot statfs {}: is cgroup2 mounted there?", .path.display())]
    Statfs {
        /// The path given.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The path is on some other filesystem than cgroup2 (e.g. a cgroup v1 or hybrid host).
    #[error(
        "{} is not a cgroup v2 mount (cgroup2 fs magic 0x63677270, found {found:#x}{}); \
         mount cgroup2 there or pass a cgroup2 directory (nebula-ctl probe shows why)",
        .path.display(), fs_name(*.found)
    )]
    NotCgroup2 {
        /// The path given.
        path: PathBuf,
        /// The filesystem magic found there.
        found: u64,
    },
    /// A cgroup name is empty, has a `/` or a newline, or is `.`/`..`.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Opening a cgroup directory failed.
    #[error("cannot open cgroup directory {}{}", .path.display(), errno_hint(.source, Op::Open))]
    OpenDir {
        /// The directory.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Creating a cgroup directory failed.
    #[error("cannot create cgroup {}{}", .path.display(), errno_hint(.source, Op::Mkdir))]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A leaf of that name exists already; every context needs its own.
    #[error(
        "cgroup {} already exists; leaf names must be unique (remove the stale one or pick another name)",
        .path.display()
    )]
    LeafExists {
        /// The directory that exists.
        path: PathBuf,
    },
    /// The nebula root holds processes, so it cannot enable controllers for its leaves.
    #[error(
        "{} holds {count} process(es) but must hold none (no internal processes rule); \
         move them into a leaf or to another cgroup",
        .path.display()
    )]
    RootHasProcesses {
        /// The root's `cgroup.procs`.
        path: PathBuf,
        /// How many processes were found.
        count: usize,
    },
    /// A controller is not offered to this cgroup by its parent.
    #[error(
        "controller \"{controller}\" is not available in {}; the parent must enable it in its \
         cgroup.subtree_control first (nebula-ctl probe shows why)",
        .path.display()
    )]
    ControllerUnavailable {
        /// The controller asked for.
        controller: Controller,
        /// The `cgroup.controllers` file that lacks it.
        path: PathBuf,
    },
    /// Writing `+controller` into `cgroup.subtree_control` failed.
    #[error(
        "cannot enable controller \"{controller}\" in {}{}",
        .path.display(), errno_hint(.source, Op::Enable)
    )]
    EnableController {
        /// The controller asked for.
        controller: Controller,
        /// The `cgroup.subtree_control` file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A leaf's interface file is missing because its controller is not enabled for it.
    #[error(
        "controller \"{controller}\" is not enabled in {}; nebula-ctl probe shows why",
        .path.display()
    )]
    ControllerNotEnabled {
        /// The controller the file belongs to.
        controller: Controller,
        /// The parent's `cgroup.subtree_control` that lacks it.
        path: PathBuf,
    },
    /// An interface file does not exist although its controller is enabled: this kernel lacks it.
    #[error("{} does not exist: {hint}", .path.display())]
    FileMissing {
        /// The file.
        path: PathBuf,
        /// What is known about why.
        hint: &'static str,
    },
    /// Reading an interface file failed.
    #[error("cannot read {}{}", .path.display(), errno_hint(.source, Op::Read))]
    Read {
        /// The file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Writing an interface file failed.
    #[error("cannot write {value:?} to {}{}", .path.display(), errno_hint(.source, Op::Write))]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// An interface file has contents this manager does not understand.
    #[error("unexpected contents in {}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: ParseError,
    },
    /// A limit or value given by the caller is invalid.
    #[error(transparent)]
    InvalidValue(#[from] ParseError),
    /// Moving a process into a cgroup (`cgroup.procs`) failed.
    #[error("cannot add process {pid} to {}{}", .path.display(), errno_hint(.source, Op::Attach))]
    AddProcess {
        /// The process.
        pid: i32,
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Killing the processes of a cgroup failed.
    #[error("cannot kill the processes of {}{}", .path.display(), errno_hint(.source, Op::Write))]
    Kill {
        /// The cgroup directory.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// `poll(2)` on an interface file failed.
    #[error("cannot poll {}", .path.display())]
    Poll {
        /// The file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The cgroup still had processes when the timeout expired.
    #[error(
        "cgroup {} still has processes after {timeout:?} (cgroup.events never said populated 0); \
         kill() it first, and look for processes stuck in uninterruptible sleep",
        .path.display()
    )]
    WaitEmptyTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
    /// The freeze did not complete in time.
    #[error("cgroup {} did not report frozen 1 within {timeout:?}", .path.display())]
    WaitFrozenTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
    /// Removing (`rmdir`) a cgroup failed.
    #[error("cannot remove cgroup {}{}", .path.display(), errno_hint(.source, Op::Rmdir))]
    Remove {
        /// The cgroup directory.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A PSI trigger was refused before reaching the kernel (window or threshold out of range).
    #[error("invalid PSI trigger {trigger:?}: {reason}")]
    InvalidPsiTrigger {
        /// The trigger as it would have been written.
        trigger: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Arming a PSI trigger (writing it to a pressure file) failed.
    #[error("cannot arm PSI trigger {trigger:?} on {}{}", .path.display(), errno_hint(.source, Op::Psi))]
    PsiTrigger {
        /// The pressure file.
        path: PathBuf,
        /// The trigger written.
        trigger: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A PSI trigger's file went away (its cgroup was removed) while waiting on it.
    #[error("PSI trigger on {} is gone (POLLERR): was its cgroup removed?", .path.display())]
    PsiTriggerGone {
        /// The pressure file.
        path: PathBuf,
    },
}

/// What was being done, to pick the hint for an errno.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Open,
    Mkdir,
    Read,
    Write,
    Enable,
    Attach,
    Rmdir,
    Psi,
}

fn fs_name(magic: u64) -> &'static str {
    match magic {
        CGROUP_SUPER_MAGIC => " = cgroup v1",
        TMPFS_MAGIC => " = tmpfs, the cgroup v1 or hybrid layout",
        SYSFS_MAGIC => " = sysfs, nothing mounted there",
        _ => "",
    }
}

/// `": <hint>"` for the errnos whose cause is known, else `""` (the source says the rest).
fn errno_hint(err: &io::Error, op: Op) -> &'static str {
    use rustix::io::Errno;
    let Some(raw) = err.raw_os_error() else {
        return "";
    };
    let e = Errno::from_raw_os_error(raw);
    match (op, e) {
        (Op::Mkdir | Op::Write | Op::Enable | Op::Attach | Op::Rmdir | Op::Psi, Errno::ACCESS)
        | (Op::Mkdir | Op::Write | Op::Enable | Op::Attach | Op::Rmdir | Op::Psi, Errno::PERM) => {
            ": permission denied (needs root, or write access to a delegated subtree)"
        }
        (Op::Open, Errno::NOENT) => ": no such cgroup",
        (Op::Mkdir, Errno::NOENT) => ": the parent cgroup does not exist",
        (Op::Enable, Errno::BUSY) => {
            ": the cgroup holds processes of its own (no internal processes rule); move them \
             into a leaf first"
        }
        (Op::Enable, Errno::NOENT) => {
            ": the controller is not in this cgroup's cgroup.controllers; enable it in the parent first"
        }
        (Op::Enable | Op::Attach, Errno::OPNOTSUPP) => ": the cgroup is part of a threaded subtree",
        (Op::Attach, Errno::BUSY) => {
            ": the cgroup has controllers enabled for children (no internal processes rule); \
             add processes to a leaf"
        }
        (Op::Attach, Errno::SRCH) => ": no such process",
        (Op::Attach, Errno::NOENT) => ": the cgroup was removed",
        (Op::Write, Errno::INVAL) => ": the kernel refused the value",
        (Op::Write, Errno::NOENT) => ": the cgroup was removed",
        (Op::Rmdir, Errno::BUSY) => {
            ": it still has processes or child cgroups; kill its processes and wait until it is empty first"
        }
        (Op::Rmdir, Errno::NOENT) => ": it was already removed",
        (Op::Psi, Errno::INVAL) => {
            ": the kernel refused the trigger (window 500 ms to 10 s, 0 < stall <= window; \
             without CAP_SYS_RESOURCE Linux 6.4+ also wants a window that is a multiple of 2 s)"
        }
        (Op::Psi, Errno::OPNOTSUPP) => ": PSI is disabled on this kernel (boot with psi=1)",
        (Op::Psi, Errno::BUSY) => ": a trigger is already armed on this file descriptor",
        (Op::Psi, Errno::NOENT) => ": no such pressure file (PSI disabled? boot with psi=1)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_the_fix() {
        let e = CgroupError::ControllerNotEnabled {
            controller: Controller::Memory,
            path: "/sys/fs/cgroup/nebula/cgroup.subtree_control".into(),
        };
        assert_eq!(
            e.to_string(),
            "controller \"memory\" is not enabled in /sys/fs/cgroup/nebula/cgroup.subtree_control; \
             nebula-ctl probe shows why"
        );
        let e = CgroupError::NotCgroup2 {
            path: "/sys/fs/cgroup".into(),
            found: TMPFS_MAGIC,
        };
        let s = e.to_string();
        assert!(
            s.contains("is not a cgroup v2 mount (cgroup2 fs magic"),
            "{s}"
        );
        assert!(s.contains("0x1021994 = tmpfs"), "{s}");
        let e = CgroupError::EnableController {
            controller: Controller::Pids,
            path: "/x/cgroup.subtree_control".into(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert!(e.to_string().contains("no internal processes"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        let e = CgroupError::Write {
            path: "/x/memory.max".into(),
            value: "12".into(),
            source: io::Error::other("weird"),
        };
        assert_eq!(e.to_string(), "cannot write \"12\" to /x/memory.max");
    }
}
