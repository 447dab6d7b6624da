//! Filesystem and network namespace setup for a process context: mounts (private
//! propagation, a recursive read-only root, tmpfs with a size, a fresh `/proc`, bind mounts,
//! a fresh or masked `/sys`) and bringing up the loopback interface of a new network namespace.
//!
//! Everything here is prepared in the parent ([`MountStep`] holds `CString`s) and executed in
//! the child with one system call per step and no allocation, so it may run between a raw
//! `clone` and `execve` in a multi-threaded supervisor.
//!
//! (The loopback ioctl lives here because it is the other half of "what a fresh namespace needs
//! before the workload runs"; it moves to a `sys/net.rs` if one appears.)

use std::ffi::{CStr, CString};
use std::io;

/// One step of a context's mount recipe, executed in order by [`apply`].
#[derive(Debug, Clone)]
pub enum MountStep {
    /// `mount(NULL, "/", NULL, MS_REC | MS_PRIVATE)`: nothing mounted here propagates back to
    /// the host, and the host's later mounts do not appear here.
    MakePrivate,
    /// `mount_setattr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY)`: every mount of the inherited tree
    /// becomes read-only in this namespace (the host's copies are unaffected).
    ReadOnlyRoot,
    /// `mount(source, target, NULL, MS_BIND | MS_REC)`, then a recursive `mount_setattr` that
    /// sets `MOUNT_ATTR_RDONLY` (read-only) or clears it (writable: the bind would otherwise
    /// inherit the read-only flag of the source's mount).
    Bind {
        /// The host path.
        source: CString,
        /// Where it appears in the context.
        target: CString,
        /// Read-only bind.
        read_only: bool,
    },
    /// `mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "size=<n>,mode=1777")`.
    Tmpfs {
        /// The mount point.
        target: CString,
        /// `size=<bytes>,mode=1777`, formatted in the parent.
        options: CString,
    },
    /// `mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)`: a `/proc` of the
    /// mounting process's pid namespace. Must run in a process inside the new pid namespace.
    Proc {
        /// The mount point, usually `/proc`.
        target: CString,
    },
    /// `mount("sysfs", target, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)`: a
    /// sysfs of the mounting process's *network* namespace, so `/sys/class/net` lists only
    /// that namespace's interfaces. The kernel allows it from a user namespace only when that
    /// user namespace owns the current network namespace (`CAP_SYS_ADMIN` over it) and a
    /// sysfs is already fully visible in the mount namespace (`mount_too_revealing`); the
    /// flags match what an inherited, locked `/sys` carries.
    Sysfs {
        /// The mount point, usually `/sys`.
        target: CString,
    },
    /// `mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
    /// "size=4k,mode=0555")`: an empty read-only directory over `target`, hiding what was
    /// there (the host's sysfs when the context shares the host's network namespace).
    Mask {
        /// The path to hide.
        target: CString,
    },
    /// A masked path (OCI `maskedPaths`): a directory gets an empty read-only tmpfs as in
    /// [`MountStep::Mask`], anything else `/dev/null` bound read-only over it (so it reads as
    /// empty). A path that does not exist is skipped, as runc does.
    MaskPath {
        /// The path to hide.
        target: CString,
    },
    /// A read-only path (OCI `readonlyPaths`): `target` bound onto itself, then
    /// `MOUNT_ATTR_RDONLY | NOSUID | NODEV | NOEXEC` recursively. A path that does not exist
    /// is skipped.
    ReadOnlyPath {
        /// The path.
        target: CString,
    },
}

impl MountStep {
    /// A short name for error messages.
    pub fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            MountStep::MakePrivate => "make / private (MS_REC|MS_PRIVATE)".into(),
            MountStep::ReadOnlyRoot => "remount / read-only (mount_setattr AT_RECURSIVE)".into(),
            MountStep::Bind {
                source,
                target,
                read_only,
            } => format!(
                "bind {} on {}{}",
                s(source),
                s(target),
                if *read_only { " read-only" } else { "" }
            ),
            MountStep::Tmpfs { target, options } => {
                format!("tmpfs on {} ({})", s(target), s(options))
            }
            MountStep::Proc { target } => format!("proc on {}", s(target)),
            MountStep::Sysfs { target } => format!("sysfs on {} read-only", s(target)),
            MountStep::Mask { target } => format!("mask {} (empty read-only tmpfs)", s(target)),
            MountStep::MaskPath { target } => format!("mask {} (masked path)", s(target)),
            MountStep::ReadOnlyPath { target } => format!("read-only path {}", s(target)),
        }
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `mount(2)` with C strings; `None` passes NULL.
///
/// # Errors
/// As mount(2): `EPERM` without `CAP_SYS_ADMIN` in the mount namespace's user namespace,
/// `ENOENT` for a missing target, `EINVAL` for bad flags.
///
/// # References
/// mount(2).
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is NULL or a NUL-terminated string borrowed for the call; the
    // kernel copies them and keeps no reference.
    check(unsafe {
        libc::mount(
            p(source),
            target.as_ptr(),
            p(fstype),
            flags,
            p(data).cast::<libc::c_void>(),
        )
    })
}

/// Sets (`set`) and clears (`clear`) mount attributes (`MOUNT_ATTR_*`) on the mount at
/// `path`, and with `recursive` on every mount below it (`mount_setattr(2)`, Linux 5.12).
///
/// # Errors
/// `ENOSYS` before 5.12; `EPERM` to clear a locked attribute; `EINVAL` when `path` is not a
/// mount point of this namespace.
///
/// # References
/// mount_setattr(2).
pub fn mount_setattr(path: &CStr, recursive: bool, set: u64, clear: u64) -> io::Result<()> {
    let attr = linux_raw_sys::general::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive {
        linux_raw_sys::general::AT_RECURSIVE
    } else {
        0
    };
    // SAFETY: path is NUL-terminated and attr a live mount_attr of the size passed; the
    // kernel only reads both during the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const linux_raw_sys::general::mount_attr,
            std::mem::size_of::<linux_raw_sys::general::mount_attr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs the steps in order; on failure returns the index of the step that failed and the
/// error. One or two system calls per step, no allocation.
///
/// # Errors
/// The failing step's index and the kernel's answer.
///
/// # References
/// mount(2), mount_setattr(2), mount_namespaces(7), proc(5), sysfs(5), tmpfs(5).
pub fn apply(steps: &[MountStep]) -> Result<(), (usize, io::Error)> {
    const ROOT: &CStr = c"/";
    const RDONLY: u64 = linux_raw_sys::general::MOUNT_ATTR_RDONLY as u64;
    for (i, step) in steps.iter().enumerate() {
        let r = match step {
            MountStep::MakePrivate => {
                mount(None, ROOT, None, libc::MS_REC | libc::MS_PRIVATE, None)
            }
            MountStep::ReadOnlyRoot => mount_setattr(ROOT, true, RDONLY, 0),
            MountStep::Bind {
                source,
                target,
                read_only,
            } => mount(
                Some(source),
                target,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            // A bind inherits the source mount's flags, and the source may sit under the
            // root made read-only just before: set or clear RDONLY explicitly.
            .and_then(|()| {
                if *read_only {
                    mount_setattr(target, true, RDONLY, 0)
                } else {
                    mount_setattr(target, true, 0, RDONLY)
                }
            }),
            MountStep::Tmpfs { target, options } => mount(
                Some(c"tmpfs"),
                target,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(options),
            ),
            MountStep::Proc { target } => mount(
                Some(c"proc"),
                target,
                Some(c"proc"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                None,
            ),
            MountStep::Sysfs { target } => mount(
                Some(c"sysfs"),
                target,
                Some(c"sysfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                None,
            ),
            MountStep::Mask { target } => mount(
                Some(c"tmpfs"),
                target,
                Some(c"tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some(c"size=4k,mode=0555"),
            ),
            MountStep::MaskPath { target } => mask_path(target),
            MountStep::ReadOnlyPath { target } => {
                const ATTRS: u64 = (linux_raw_sys::general::MOUNT_ATTR_RDONLY
                    | linux_raw_sys::general::MOUNT_ATTR_NOSUID
                    | linux_raw_sys::general::MOUNT_ATTR_NODEV
                    | linux_raw_sys::general::MOUNT_ATTR_NOEXEC)
                    as u64;
                match mount(
                    Some(target),
                    target,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                ) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                    r => r.and_then(|()| mount_setattr(target, true, ATTRS, 0)),
                }
            }
        };
        r.map_err(|e| (i, e))?;
    }
    Ok(())
}

/// [`MountStep::MaskPath`]: `lstat`, then an empty read-only tmpfs over a directory or
/// `/dev/null` bound read-only over anything else; `ENOENT` is not an error. No allocation.
fn mask_path(target: &CStr) -> io::Result<()> {
    // SAFETY: all-zero is a valid `struct stat` (integers only), overwritten by lstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: target is NUL-terminated and st is a live, writable struct stat.
    if unsafe { libc::lstat(target.as_ptr(), &mut st) } < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) {
            Ok(())
        } else {
            Err(e)
        };
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return mount(
            Some(c"tmpfs"),
            target,
            Some(c"tmpfs"),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(c"size=4k,mode=0555"),
        );
    }
    mount(Some(c"/dev/null"), target, None, libc::MS_BIND, None).and_then(|()| {
        mount_setattr(
            target,
            false,
            linux_raw_sys::general::MOUNT_ATTR_RDONLY as u64,
            0,
        )
    })
}

/// Brings the loopback interface `lo` of the calling process's network namespace up
/// (`SIOCGIFFLAGS`, then `SIOCSIFFLAGS` with `IFF_UP | IFF_RUNNING`) over a throw-away
/// `AF_INET` datagram socket. A new network namespace starts with `lo` down, so without this
/// even 127.0.0.1 is unreachable. No allocation; the socket is closed on every path.
///
/// # Errors
/// `EPERM` without `CAP_NET_ADMIN` in the namespace's user namespace; the socket error.
///
/// # References
/// netdevice(7) (`SIOCGIFFLAGS`, `SIOCSIFFLAGS`), socket(2).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) takes integers only; a non-negative result is an fd we own and close
    // below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data (a name array and a union of integers and addresses);
    // all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is the socket opened above; req is a live ifreq naming "lo" that the kernel
    // reads and fills (SIOCGIFFLAGS writes ifru_flags).
    let mut r = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req as *mut libc::ifreq) };
    if r == 0 {
        // IFF_UP and IFF_RUNNING are bits 0 and 6: the short holds them.
        #[allow(clippy::cast_possible_truncation)]
        const UP_RUNNING: libc::c_short = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        // SAFETY: SIOCGIFFLAGS just wrote ifru_flags, the union member read and written here.
        unsafe {
            req.ifr_ifru.ifru_flags |= UP_RUNNING;
        }
        // SAFETY: as above; SIOCSIFFLAGS only reads req.
        r = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req as *const libc::ifreq) };
    }
    let err = if r < 0 {
        Some(io::Error::last_os_error())
    } else {
        None
    };
    // SAFETY: fd is ours and closed exactly once.
    unsafe { libc::close(fd) };
    err.map_or(Ok(()), Err)
}

#[cfg(test)]
/// Whether the network interface `lo` of the calling process's namespace is up
/// (`SIOCGIFFLAGS`, `IFF_UP`).
///
/// # Errors
/// The socket or ioctl error.
///
/// # References
/// netdevice(7).
pub fn loopback_is_up() -> io::Result<bool> {
    // SAFETY: as in loopback_up.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is our socket; req is live and named.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req as *mut libc::ifreq) };
    let res = if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        // IFF_UP is bit 0: the short holds it.
        #[allow(clippy::cast_possible_truncation)]
        const UP: libc::c_short = libc::IFF_UP as libc::c_short;
        // SAFETY: SIOCGIFFLAGS wrote ifru_flags.
        Ok(unsafe { req.ifr_ifru.ifru_flags } & UP != 0)
    };
    // SAFETY: fd is ours and closed exactly once.
    unsafe { libc::close(fd) };
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_paths() {
        let s = MountStep::Tmpfs {
            target: c"/tmp".into(),
            options: c"size=1024,mode=1777".into(),
        };
        assert_eq!(s.describe(), "tmpfs on /tmp (size=1024,mode=1777)");
    }

    #[test]
    fn host_loopback_is_readable() {
        // Read-only: asks the flags of lo in our own namespace.
        loopback_is_up().unwrap();
    }
}
