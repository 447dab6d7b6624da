//! seccomp: the current mode, which filter actions the kernel knows, `no_new_privs`, and
//! installing a prepared filter (calling thread only, or every thread with TSYNC).

use std::io;

/// The calling thread's seccomp mode (`prctl(PR_GET_SECCOMP)`): 0 none, 1 strict, 2 filter.
///
/// # Errors
/// `EINVAL` when the kernel was built without seccomp.
///
/// # References
/// prctl(2) `PR_GET_SECCOMP`.
pub fn current_mode() -> io::Result<u32> {
    // SAFETY: PR_GET_SECCOMP reads no pointer arguments.
    let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        u32::try_from(r).map_err(super::overflow)
    }
}

/// Whether the kernel supports the filter return action `action`
/// (`seccomp(SECCOMP_GET_ACTION_AVAIL)`).
///
/// # Errors
/// `ENOSYS` or `EINVAL` when seccomp or the operation is missing; an unknown action gives
/// `Ok(false)`.
///
/// # References
/// seccomp(2) `SECCOMP_GET_ACTION_AVAIL`.
pub fn action_available(action: u32) -> io::Result<bool> {
    let value: u32 = action;
    // SAFETY: the third argument points at a u32 that lives across the call; the kernel
    // only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0u32,
            &value as *const u32,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(e),
    }
}

/// Why `seccomp(SECCOMP_SET_MODE_FILTER)` refused a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallFailure {
    /// The call failed with this errno.
    Errno(i32),
    /// With `SECCOMP_FILTER_FLAG_TSYNC`: this thread of the process could not be
    /// synchronised (it has a filter that is not an ancestor of the caller's).
    ThreadSync(i32),
}

/// Sets `no_new_privs` on the calling thread (`prctl(PR_SET_NO_NEW_PRIVS, 1)`). It cannot
/// be unset; children and `execve` keep it. Allocation-free and async-signal-safe (a raw
/// system call through rustix's linux_raw backend).
///
/// # Errors
/// `EINVAL` on kernels older than 3.5.
///
/// # References
/// prctl(2) `PR_SET_NO_NEW_PRIVS`; Documentation/userspace-api/no_new_privs.rst.
pub fn set_no_new_privs() -> Result<(), rustix::io::Errno> {
    rustix::thread::set_no_new_privs(true)
}

/// Installs the classic-BPF program `program` as a seccomp filter
/// (`seccomp(SECCOMP_SET_MODE_FILTER, flags, &sock_fprog)`), on the calling thread only, or
/// with `tsync` on every thread of the process (`SECCOMP_FILTER_FLAG_TSYNC`).
///
/// Allocation-free and async-signal-safe: the `sock_fprog` lives on the stack and points into
/// `program`, which the caller built beforehand; the only call is `syscall(2)`. The caller
/// must have set `no_new_privs` (see [`set_no_new_privs`]) or hold `CAP_SYS_ADMIN`.
///
/// # Errors
/// - `Errno(EINVAL)`: the program is empty, longer than 4096 instructions, fails the
///   kernel's checker, or an unknown flag was passed.
/// - `Errno(EACCES)`: neither `no_new_privs` nor `CAP_SYS_ADMIN`.
/// - `Errno(ENOMEM)`: the total length of the stacked filters exceeds the kernel's limit.
/// - `ThreadSync(tid)`: `tsync` and thread `tid` could not be synchronised.
///
/// # References
/// seccomp(2) `SECCOMP_SET_MODE_FILTER`, `SECCOMP_FILTER_FLAG_TSYNC`.
pub fn install_filter(program: &[libc::sock_filter], tsync: bool) -> Result<(), InstallFailure> {
    let Ok(len) = u16::try_from(program.len()) else {
        return Err(InstallFailure::Errno(libc::EINVAL));
    };
    let prog = libc::sock_fprog {
        len,
        // The kernel only reads the instructions (copy_from_user); the *mut is the C type.
        filter: program.as_ptr().cast_mut(),
    };
    let flags: libc::c_ulong = if tsync {
        libc::SECCOMP_FILTER_FLAG_TSYNC as libc::c_ulong
    } else {
        0
    };
    // SAFETY: `prog` is a live sock_fprog on this stack frame whose `filter` points at
    // `len` initialised instructions borrowed from `program` for the whole call; the kernel
    // copies them and keeps no pointer. The operation and flags are plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    match r {
        0 => Ok(()),
        r if r > 0 => Err(i32::try_from(r).map_or(
            InstallFailure::Errno(libc::EOVERFLOW),
            InstallFailure::ThreadSync,
        )),
        _ => Err(InstallFailure::Errno(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL),
        )),
    }
}

/// A compiled filter as plain data: its instructions and whether any of its verdicts is
/// `SECCOMP_RET_USER_NOTIF` (so that it needs a listener).
#[derive(Clone, Copy, Debug)]
pub struct Program<'a> {
    /// The classic-BPF instructions; empty means "no filter".
    pub insns: &'a [libc::sock_filter],
    /// Whether a verdict asks for user notification.
    pub notifies: bool,
}

/// What failed while a [`Program`] was installed or its listener handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `PR_SET_NO_NEW_PRIVS` (the errno).
    SetNoNewPrivs(i32),
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` (the errno; whether with TSYNC).
    InstallFilter {
        /// The errno.
        errno: i32,
        /// Whether `SECCOMP_FILTER_FLAG_TSYNC` was asked for.
        tsync: bool,
    },
    /// TSYNC could not synchronise this thread id.
    SyncThreads(i32),
    /// The install with `SECCOMP_FILTER_FLAG_NEW_LISTENER` (the errno).
    InstallListener(i32),
    /// Sending the listener to the supervisor (the errno).
    SendListener(i32),
}

impl Failure {
    /// Packs the failure into a `u64` for the pipe to the supervisor: a tag (1 to 6) in the
    /// high 32 bits, the errno or thread id in the low 32.
    pub fn encode(self) -> u64 {
        let (tag, v): (u64, i32) = match self {
            Failure::SetNoNewPrivs(errno) => (1, errno),
            Failure::InstallFilter {
                errno,
                tsync: false,
            } => (2, errno),
            Failure::InstallFilter { errno, tsync: true } => (3, errno),
            Failure::SyncThreads(tid) => (4, tid),
            Failure::InstallListener(errno) => (5, errno),
            Failure::SendListener(errno) => (6, errno),
        };
        // The errno's or tid's bits as they are: decoded with the inverse cast.
        #[allow(clippy::cast_sign_loss)]
        let v = v as u32;
        tag << 32 | u64::from(v)
    }
}

impl Program<'_> {
    /// Sets `no_new_privs`, then installs the program on the calling thread, or with `tsync`
    /// on every thread of the process. An empty program installs nothing.
    ///
    /// Allocation-free and async-signal-safe: `prctl` and `seccomp` on prepared data.
    ///
    /// # Errors
    /// The failed step (see [`install_filter`]).
    pub fn install(&self, tsync: bool) -> Result<(), Failure> {
        if self.insns.is_empty() {
            return Ok(());
        }
        set_no_new_privs().map_err(|e| Failure::SetNoNewPrivs(e.raw_os_error()))?;
        install_filter(self.insns, tsync).map_err(|f| match f {
            InstallFailure::Errno(errno) => Failure::InstallFilter { errno, tsync },
            InstallFailure::ThreadSync(tid) => Failure::SyncThreads(tid),
        })
    }

    /// Installs the program on the calling thread without setting `no_new_privs`, which the
    /// kernel allows to a thread with `CAP_SYS_ADMIN` in its user namespace: for a workload
    /// that must keep `no_new_privs` off, before its capabilities are dropped.
    ///
    /// # Errors
    /// `InstallFilter` (`EACCES` without `CAP_SYS_ADMIN`).
    pub fn install_privileged(&self) -> Result<(), Failure> {
        if self.insns.is_empty() {
            return Ok(());
        }
        install_filter(self.insns, false).map_err(|f| match f {
            InstallFailure::Errno(errno) => Failure::InstallFilter {
                errno,
                tsync: false,
            },
            InstallFailure::ThreadSync(tid) => Failure::SyncThreads(tid),
        })
    }

    /// Sets `no_new_privs`, then installs the program on the calling thread with
    /// `SECCOMP_FILTER_FLAG_NEW_LISTENER` and returns the listener (close-on-exec).
    ///
    /// Allocation-free like [`Program::install`].
    ///
    /// # Errors
    /// `SetNoNewPrivs`, or `InstallListener` (`EINVAL` for an empty program).
    pub fn install_with_listener(&self) -> Result<std::os::fd::OwnedFd, Failure> {
        if self.insns.is_empty() {
            return Err(Failure::InstallListener(libc::EINVAL));
        }
        set_no_new_privs().map_err(|e| Failure::SetNoNewPrivs(e.raw_os_error()))?;
        super::seccomp_notify::install_filter_with_listener(self.insns)
            .map_err(Failure::InstallListener)
    }
}
