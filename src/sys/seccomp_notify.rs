//! seccomp user notification: installing a filter with a listener
//! (`SECCOMP_FILTER_FLAG_NEW_LISTENER`) and receiving one notification from it
//! (`SECCOMP_IOCTL_NOTIF_RECV`).
//!
//! nebula only ever *receives*: its supervisor records the call and kills the context, it never
//! answers with `SECCOMP_USER_NOTIF_FLAG_CONTINUE` (see [`crate::seccomp`] for why a notifier
//! must not be a policy that lets calls through).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The tag byte of the `SCM_RIGHTS` message that carries a context's listener.
pub const LISTENER_TAG: u8 = b'S';

/// Installs the classic-BPF `program` as a seccomp filter on the calling thread with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER` and returns the listener the kernel created for it
/// (close-on-exec). The caller must have set `no_new_privs` or hold `CAP_SYS_ADMIN`.
///
/// Allocation-free and async-signal-safe: the `sock_fprog` lives on the stack and points into
/// `program`; the only call is `syscall(2)`.
///
/// # Errors
/// The errno: `EINVAL` (bad program, or the kernel lacks the flag: Linux 5.0), `EACCES`
/// (neither `no_new_privs` nor `CAP_SYS_ADMIN`), `ENOMEM` (the stacked filters are too long),
/// `EBUSY` (another filter of this thread already has a listener: one per thread's chain).
///
/// # References
/// seccomp(2) `SECCOMP_FILTER_FLAG_NEW_LISTENER`, seccomp_unotify(2).
pub fn install_filter_with_listener(program: &[libc::sock_filter]) -> Result<OwnedFd, i32> {
    let Ok(len) = u16::try_from(program.len()) else {
        return Err(libc::EINVAL);
    };
    let prog = libc::sock_fprog {
        len,
        // The kernel only reads the instructions (copy_from_user); the *mut is the C type.
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` is a live sock_fprog on this stack frame whose `filter` points at `len`
    // initialised instructions borrowed from `program` for the whole call; the kernel copies
    // them and keeps no pointer. Operation and flags are plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL));
    }
    let fd = i32::try_from(r).map_err(|_| libc::EOVERFLOW)?;
    // SAFETY: with NEW_LISTENER a successful seccomp(2) returns a fresh descriptor that nothing
    // else in this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One notification: what the filtered thread called, as `struct seccomp_notif` gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The kernel's cookie for this notification (for `NOTIF_SEND`/`NOTIF_ID_VALID`).
    pub id: u64,
    /// The calling thread, in the pid namespace of the receiver (the supervisor).
    pub pid: u32,
    /// The system call number.
    pub nr: i32,
    /// Its `AUDIT_ARCH_*`.
    pub arch: u32,
    /// Where it was called from.
    pub instruction_pointer: u64,
    /// Its six arguments.
    pub args: [u64; 6],
}

/// Receives one pending notification from `listener` (`SECCOMP_IOCTL_NOTIF_RECV` with a
/// zeroed `struct seccomp_notif`, as the kernel requires), retrying `EINTR`.
///
/// The ioctl blocks while nothing is pending, whatever `O_NONBLOCK` says: call it only after
/// `poll` reported the listener readable (`POLLIN`).
///
/// # Errors
/// `ENOENT` when the notification went away between the poll and the call (its thread was
/// killed or interrupted by a signal; the call is then not run, or restarted and notified
/// again); `EINVAL` for a descriptor that is not a listener.
///
/// # References
/// seccomp_unotify(2) `SECCOMP_IOCTL_NOTIF_RECV`.
pub fn recv(listener: BorrowedFd<'_>) -> io::Result<Notification> {
    loop {
        // SAFETY: all-zero is a valid seccomp_notif (integers only), and the kernel insists on
        // a zeroed buffer.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: `n` is a live seccomp_notif of the size the request encodes; the kernel
        // writes at most that many bytes into it.
        let r = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                &mut n as *mut libc::seccomp_notif,
            )
        };
        if r == 0 {
            return Ok(Notification {
                id: n.id,
                pid: n.pid,
                nr: n.data.nr,
                arch: n.data.arch,
                instruction_pointer: n.data.instruction_pointer,
                args: n.data.args,
            });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Closes descriptor `fd` of a forked closure context that belongs to the supervisor (a
/// number from `SupervisorOnlyFd`'s registry), ignoring `EBADF`. Allocation-free.
///
/// # Safety
/// Call it only in a forked child, before the child opens anything, with a number whose
/// owner (an `OwnedFd` in the copied memory) never runs in this child: nothing else here may
/// use or close `fd`.
///
/// # References
/// close(2).
pub unsafe fn close_inherited(fd: i32) {
    // SAFETY: by this function's contract `fd` is either closed (EBADF, ignored) or the copy
    // of a supervisor-only descriptor that nothing in this child uses or closes.
    unsafe { libc::close(fd) };
}

/// The `/proc/self/fd` link of a seccomp listener.
const LISTENER_LINK: &[u8] = b"anon_inode:seccomp notify";

/// Closes every seccomp listener open in this process (found by their `/proc/self/fd` links,
/// `anon_inode:seccomp notify`) and returns how many. For a closure context's workload: a
/// glibc `fork` copies every descriptor of the supervisor, close-on-exec or not, including the
/// listeners of the supervisor's *other* contexts, with which the closure could answer their
/// notifications (`CONTINUE`). The exec way needs none of this: `execve` closes them.
///
/// Allocates (a directory read): for a child of glibc's `fork` only, never between a raw
/// clone and `execve`.
///
/// # Errors
/// `/proc/self/fd` cannot be read (no procfs visible).
///
/// # References
/// proc(5) `/proc/pid/fd`, seccomp_unotify(2).
pub fn close_inherited_listeners() -> io::Result<usize> {
    use std::os::unix::ffi::OsStrExt;
    let mut listeners = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // The directory's own descriptor is gone by the time it is read: no link, skipped.
        if let Ok(target) = std::fs::read_link(entry.path())
            && target.as_os_str().as_bytes() == LISTENER_LINK
        {
            listeners.push(fd);
        }
    }
    for &fd in &listeners {
        // SAFETY: `fd` is open in this process (a copy of the supervisor's table made by
        // fork) and is a seccomp listener that belongs to the supervisor's watch of another
        // context; its owner lives in the copied memory of another thread of the parent,
        // which never runs in this child, so nothing here uses or closes it again.
        unsafe { libc::close(fd) };
    }
    Ok(listeners.len())
}

#[cfg(test)]
mod tests {
    /// The uapi layout (`linux/seccomp.h`) that the ioctl's size encodes.
    #[test]
    fn struct_layout_matches_the_uapi_header() {
        assert_eq!(size_of::<libc::seccomp_data>(), 64);
        assert_eq!(size_of::<libc::seccomp_notif>(), 80);
        assert_eq!(std::mem::offset_of!(libc::seccomp_notif, data), 16);
        // _IOWR('!', 0, struct seccomp_notif)
        assert_eq!(libc::SECCOMP_IOCTL_NOTIF_RECV, 0xc050_2100);
    }
}
