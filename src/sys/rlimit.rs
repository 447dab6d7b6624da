//! Resource limits: `prlimit(2)` on the calling process, prepared in the parent and applied
//! allocation-free in a freshly cloned child.

use std::io;

/// A resource that `setrlimit(2)` limits, by its kernel name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[non_exhaustive]
pub enum Resource {
    /// `RLIMIT_AS`: the size of the address space, in bytes (`mmap`/`brk` fail beyond it).
    As,
    /// `RLIMIT_CORE`: the largest core dump, in bytes.
    Core,
    /// `RLIMIT_CPU`: CPU time in seconds; `SIGXCPU` at the soft limit, `SIGKILL` at the hard.
    Cpu,
    /// `RLIMIT_DATA`: data segment and private anonymous mappings, in bytes.
    Data,
    /// `RLIMIT_FSIZE`: the largest file the process may create, in bytes (`SIGXFSZ`).
    Fsize,
    /// `RLIMIT_MEMLOCK`: bytes of memory that may be locked.
    Memlock,
    /// `RLIMIT_NOFILE`: one more than the highest file descriptor number.
    Nofile,
    /// `RLIMIT_NPROC`: processes and threads of the real user id (per user, not per
    /// context: use the cgroup's `pids.max` for a per-context bound).
    Nproc,
    /// `RLIMIT_STACK`: the main thread's stack, in bytes.
    Stack,
    /// `RLIMIT_SIGPENDING`: queued signals of the real user id.
    Sigpending,
    /// `RLIMIT_MSGQUEUE`: bytes in POSIX message queues of the real user id.
    Msgqueue,
    /// `RLIMIT_RSS`: ignored by Linux since 2.6, kept because OCI bundles may name it.
    Rss,
    /// `RLIMIT_LOCKS`: file locks and leases (ignored by Linux since 2.4.25).
    Locks,
    /// `RLIMIT_NICE`: the ceiling of the nice value, as `20 - limit`.
    Nice,
    /// `RLIMIT_RTPRIO`: the ceiling of the real-time priority.
    Rtprio,
    /// `RLIMIT_RTTIME`: microseconds of CPU time under a real-time policy without a block.
    Rttime,
}

impl Resource {
    /// The `RLIMIT_*` constant.
    pub fn raw(self) -> libc::__rlimit_resource_t {
        match self {
            Resource::As => libc::RLIMIT_AS,
            Resource::Core => libc::RLIMIT_CORE,
            Resource::Cpu => libc::RLIMIT_CPU,
            Resource::Data => libc::RLIMIT_DATA,
            Resource::Fsize => libc::RLIMIT_FSIZE,
            Resource::Memlock => libc::RLIMIT_MEMLOCK,
            Resource::Nofile => libc::RLIMIT_NOFILE,
            Resource::Nproc => libc::RLIMIT_NPROC,
            Resource::Stack => libc::RLIMIT_STACK,
            Resource::Sigpending => libc::RLIMIT_SIGPENDING,
            Resource::Msgqueue => libc::RLIMIT_MSGQUEUE,
            Resource::Rss => libc::RLIMIT_RSS,
            Resource::Locks => libc::RLIMIT_LOCKS,
            Resource::Nice => libc::RLIMIT_NICE,
            Resource::Rtprio => libc::RLIMIT_RTPRIO,
            Resource::Rttime => libc::RLIMIT_RTTIME,
        }
    }

    /// The kernel's name, e.g. `"RLIMIT_AS"`.
    pub fn name(self) -> &'static str {
        match self {
            Resource::As => "RLIMIT_AS",
            Resource::Core => "RLIMIT_CORE",
            Resource::Cpu => "RLIMIT_CPU",
            Resource::Data => "RLIMIT_DATA",
            Resource::Fsize => "RLIMIT_FSIZE",
            Resource::Memlock => "RLIMIT_MEMLOCK",
            Resource::Nofile => "RLIMIT_NOFILE",
            Resource::Nproc => "RLIMIT_NPROC",
            Resource::Stack => "RLIMIT_STACK",
            Resource::Sigpending => "RLIMIT_SIGPENDING",
            Resource::Msgqueue => "RLIMIT_MSGQUEUE",
            Resource::Rss => "RLIMIT_RSS",
            Resource::Locks => "RLIMIT_LOCKS",
            Resource::Nice => "RLIMIT_NICE",
            Resource::Rtprio => "RLIMIT_RTPRIO",
            Resource::Rttime => "RLIMIT_RTTIME",
        }
    }
}

/// `RLIM_INFINITY`: no limit.
pub const INFINITY: u64 = libc::RLIM_INFINITY;

/// One limit to set: the soft value (what the kernel enforces) and the hard ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RlimitSetting {
    /// Which resource.
    pub resource: Resource,
    /// The soft limit ([`INFINITY`] for none).
    pub soft: u64,
    /// The hard limit, at least `soft` ([`INFINITY`] for none).
    pub hard: u64,
}

/// Sets one limit of the calling process (`prlimit64(0, resource, new, NULL)`).
///
/// Makes only the one system call and allocates nothing, so it may run in a child between a
/// raw `clone` and `execve`.
///
/// # Errors
/// `EINVAL` when `soft > hard`; `EPERM` when raising the hard limit without
/// `CAP_SYS_RESOURCE`.
///
/// # References
/// getrlimit(2) (`prlimit`).
pub fn set(setting: &RlimitSetting) -> io::Result<()> {
    let new = libc::rlimit64 {
        rlim_cur: setting.soft,
        rlim_max: setting.hard,
    };
    // SAFETY: `new` is a live rlimit64 that the kernel only reads; the old-value pointer is
    // NULL, which prlimit64 accepts as "do not report"; pid 0 is the calling process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            setting.resource.raw(),
            &new as *const libc::rlimit64,
            std::ptr::null_mut::<libc::rlimit64>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
/// Reads one limit of process `pid` (`None`: the calling process) as `(soft, hard)`.
///
/// # Errors
/// `ESRCH` for no such process; `EPERM` for another user's process without
/// `CAP_SYS_RESOURCE`.
///
/// # References
/// getrlimit(2) (`prlimit`).
pub fn get(pid: Option<i32>, resource: Resource) -> io::Result<(u64, u64)> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a live rlimit64 the kernel writes once; the new-value pointer is NULL
    // (read only).
    let r = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            pid.unwrap_or(0),
            resource.raw(),
            std::ptr::null::<libc::rlimit64>(),
            &mut old as *mut libc::rlimit64,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok((old.rlim_cur, old.rlim_max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_limits() {
        let (soft, hard) = get(None, Resource::Nofile).unwrap();
        assert!(soft <= hard);
        assert!(soft > 2);
    }

    #[test]
    fn refuses_soft_above_hard() {
        let e = set(&RlimitSetting {
            resource: Resource::Core,
            soft: 10,
            hard: 5,
        })
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }
}
