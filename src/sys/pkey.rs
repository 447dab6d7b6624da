//! Memory protection keys: `pkey_alloc(2)`, `pkey_free(2)`, `pkey_mprotect(2)`, and byte
//! copies into mappings whose pages may fault (tagged or protected memory is never borrowed).

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
        u32::try_from(r).map_err(super::overflow)
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

/// `PROT_*` bits for a [`Prot`](super::mm::Prot) (the same table as `Mapping::protect`).
fn prot_bits(prot: super::mm::Prot) -> libc::c_int {
    use super::mm::Prot;
    match prot {
        Prot::None => libc::PROT_NONE,
        Prot::Read => libc::PROT_READ,
        Prot::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        Prot::ReadExec => libc::PROT_READ | libc::PROT_EXEC,
        Prot::ReadWriteExec => libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
    }
}

fn check_span(map: &super::mm::Mapping, offset: usize, len: usize) -> io::Result<()> {
    let end = offset
        .checked_add(len)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    if end > map.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(())
}

/// Sets the protection of `offset..offset+len` of `map` (page aligned) and tags the pages
/// with protection key `key` (`-1`: keep the key, i.e. plain `mprotect`). Costs as much as
/// `mprotect` (1 to 16 µs): tag at allocation time, never on a switch path.
///
/// # Errors
/// `EINVAL` for an unaligned or out-of-range span or a key that is not allocated; `ENOMEM`
/// when the kernel cannot split the mapping.
///
/// # References
/// pkey_mprotect(2), pkeys(7).
pub fn pkey_mprotect(
    map: &super::mm::Mapping,
    offset: usize,
    len: usize,
    prot: super::mm::Prot,
    key: i32,
) -> io::Result<()> {
    check_span(map, offset, len)?;
    let page = super::mm::page_size();
    if offset % page != 0 || len % page != 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the span lies inside a mapping `map` owns (check_span); changing protection or
    // key never invalidates Rust references because nebula hands out no references into
    // tagged mappings, only copies (copy_in/copy_out) and raw addresses.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pkey_mprotect,
            map.base().as_ptr().add(offset),
            len,
            prot_bits(prot),
            key,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Copies `src` into `map` at `offset` with volatile byte stores. If the pages forbid the
/// write (protection, key, guard) the thread takes a `SIGSEGV` that the violation core
/// reports; no Rust reference to the mapping exists, so the fault is not undefined
/// behaviour, it is the protection doing its job.
///
/// # Errors
/// `EINVAL` when the span is outside the mapping.
pub fn copy_in(map: &super::mm::Mapping, offset: usize, src: &[u8]) -> io::Result<()> {
    check_span(map, offset, src.len())?;
    let dst = map.base().as_ptr();
    for (i, &b) in src.iter().enumerate() {
        // SAFETY: offset+i < map.len() (check_span), inside a mapping `map` owns; the write
        // goes through a raw pointer (no reference aliasing); a protection fault is caught
        // by the SIGSEGV handler.
        unsafe { dst.add(offset + i).write_volatile(b) };
    }
    Ok(())
}

/// Copies from `map` at `offset` into `dst` with volatile byte loads (see [`copy_in`]).
///
/// # Errors
/// `EINVAL` when the span is outside the mapping.
pub fn copy_out(map: &super::mm::Mapping, offset: usize, dst: &mut [u8]) -> io::Result<()> {
    check_span(map, offset, dst.len())?;
    let src = map.base().as_ptr();
    for (i, b) in dst.iter_mut().enumerate() {
        // SAFETY: as in copy_in, for loads; u8 has no invalid values.
        *b = unsafe { src.add(offset + i).read_volatile() };
    }
    Ok(())
}

/// Asks the kernel whether the calling thread may read `len` bytes at `addr`, without
/// touching them from user space: `write(2)` of the range into a pipe. The kernel's copy
/// obeys the thread's PKRU and the page protections and fails with `EFAULT` (no signal),
/// which makes this an oracle for tests and for `check_access`-style questions.
/// `len` is capped at 4096 (one pipe write stays atomic and fits the pipe buffer).
///
/// # Errors
/// The `pipe2` error; errors of `write` other than `EFAULT`.
///
/// # References
/// write(2), pkeys(7) ("the kernel ... EFAULT").
pub fn kernel_can_read(addr: usize, len: usize) -> io::Result<bool> {
    let len = len.min(4096);
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // SAFETY: write(2) only reads `len` bytes at addr inside the kernel, which validates the
    // range itself (EFAULT); no user-space access to addr happens here.
    let n = unsafe {
        libc::write(
            std::os::fd::AsRawFd::as_raw_fd(&w),
            addr as *const libc::c_void,
            len,
        )
    };
    drop(r);
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EFAULT) {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(usize::try_from(n).is_ok_and(|n| n == len))
}
