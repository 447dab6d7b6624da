//! Memory protection keys: `pkey_alloc(2)`, `pkey_free(2)`.

use std::io;

/// Allocates a protection key with the given initial access rights for the calling thread
/// (`0`, `PKEY_DISABLE_ACCESS` = 1, `PKEY_DISABLE_WRITE` = 2).
///
/// # Errors
/// `ENOSPC` when every key is taken; `EINVAL` or `ENOSYS` when the CPU or kernel has no PKU.
///
/// # References
/// pkey_alloc(2), pkeys(7).
pub fn pkey_alloc(access_rights: u32) -> io::Result<u32> {
    // SAFETY: pkey_alloc takes two integers and touches no user memory.
    let r = unsafe { libc::syscall(libc::SYS_pkey_alloc, 0u32, access_rights) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u32)
    }
}

/// Frees a protection key. The caller guarantees no page still carries it (the kernel does
/// not check, and a later `pkey_alloc` would hand the same key, with those pages, to
/// someone else).
///
/// # Errors
/// `EINVAL` when `key` is not allocated.
///
/// # References
/// pkey_free(2).
pub fn pkey_free(key: u32) -> io::Result<()> {
    // SAFETY: pkey_free takes one integer and touches no user memory.
    let r = unsafe { libc::syscall(libc::SYS_pkey_free, key) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
