//! Process-level probes that must run in a fresh child.

use std::io;

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
