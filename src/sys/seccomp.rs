//! seccomp queries: the current mode and which filter actions the kernel knows.

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
        Ok(r as u32)
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
