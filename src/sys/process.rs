//! Process-level probes that must run in a fresh child, signals through a pidfd, and joining
//! namespaces between `fork` and `execve`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// Forks a child that calls `unshare(flags)` and reports the result through its exit
/// status; the calling process is never changed. `unshare(CLONE_NEWUSER)` refuses to run in
/// a multi-threaded process, so this is the honest way for a threaded program to ask.
///
/// # Errors
/// The `fork` error, or the errno `unshare` failed with in the child.
///
/// # References
/// unshare(2), fork(2).
pub fn probe_unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: fork in a possibly multi-threaded process; the child only calls the
    // async-signal-safe unshare and _exit, never returning into Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; unshare takes an integer, _exit never returns.
        unsafe {
            let r = libc::unshare(flags);
            let code = if r == 0 {
                0
            } else {
                *libc::__errno_location() & 0x7f
            };
            libc::_exit(code)
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: status is a live c_int; pid is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(()),
        (true, errno) => Err(io::Error::from_raw_os_error(errno)),
        _ => Err(io::Error::other("the probe child was killed by a signal")),
    }
}

/// `pidfd_send_signal(2)` with a raw signal number (real-time signals included, which
/// rustix's `Signal` does not name).
///
/// # Errors
/// `ESRCH` when the process has exited, `EINVAL` for a bad signal, `EPERM`.
///
/// # References
/// pidfd_send_signal(2).
pub fn pidfd_send_raw_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments and a NULL siginfo, which the kernel fills in itself.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes `cmd`'s child join the namespaces in `joins` (open namespace files, in order: the
/// user namespace first when it is there) between its `fork` and its `execve`, so that a
/// program (an OCI hook) runs in a container's namespaces.
///
/// # References
/// setns(2), `std::os::unix::process::CommandExt::pre_exec`.
pub fn join_before_exec(cmd: &mut std::process::Command, joins: Vec<(OwnedFd, i32)>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before execve and only calls setns(2) on
    // descriptors it owns, which is async-signal-safe; it allocates nothing (the error is
    // built from the errno).
    unsafe {
        cmd.pre_exec(move || {
            for (fd, nstype) in &joins {
                if libc::setns(fd.as_raw_fd(), *nstype) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
