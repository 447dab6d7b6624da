//! Descriptors handed to a process by its parent.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Takes ownership of descriptor `raw`, inherited from the parent (e.g. a channel end whose
/// number arrived in an environment variable), after checking that it is open and marking
/// it close-on-exec again.
///
/// # Safety
/// `raw` must have been handed to this process for it to own, and nothing else in the
/// process may own it (each inherited number is adopted once): the `OwnedFd` closes it.
///
/// # Errors
/// `EBADF` when `raw` is not an open descriptor of this process; `EINVAL` for a negative
/// number or one of the standard streams (0, 1, 2), which must never be adopted.
///
/// # References
/// fcntl(2) `F_GETFD`, `F_SETFD`.
pub unsafe fn adopt_inherited(raw: RawFd) -> io::Result<OwnedFd> {
    if raw <= 2 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: F_GETFD only queries the descriptor table; no memory is passed.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFD only changes this descriptor's flags.
    if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is open (checked above) and, by this function's contract, this process
    // owns it and nothing else holds it as an OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Clears close-on-exec on `fd` so a child started with exec inherits it.
///
/// # Errors
/// The `fcntl` error.
pub fn inherit_across_exec(fd: &OwnedFd) -> io::Result<()> {
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    Ok(())
}
