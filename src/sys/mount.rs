//! Filesystem and network namespace setup for a process context: mounts (private
//! propagation, a recursive read-only root, tmpfs with a size, a fresh `/proc`, bind mounts,
//! a fresh or masked `/sys`; for a root filesystem of its own, OCI mounts, device nodes,
//! `/dev` links, `pivot_root` and sysctls) and bringing up the loopback interface of a new
//! network namespace.
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
    /// An OCI mount ([`OciMount`]): the target's missing directories (and, for a file
    /// bind, the file) are created first, then `mount(2)`, a read-only or other flag remount
    /// for a bind, and a propagation change.
    Oci(Box<OciMount>),
    /// `mknod(2)` of a device node at `path` (created only when missing), then `chown(2)`.
    Mknod {
        /// Where (under the new root, before the pivot).
        path: CString,
        /// The directories to create first, outermost first.
        parents: Vec<CString>,
        /// `S_IFCHR`/`S_IFBLK`/`S_IFIFO` and the permission bits.
        mode: libc::mode_t,
        /// `makedev(major, minor)`.
        dev: libc::dev_t,
        /// Owner `(uid, gid)`.
        owner: (u32, u32),
    },
    /// `symlink(2)` (an existing link is kept).
    Symlink {
        /// What the link points at.
        target: CString,
        /// The link's path.
        link: CString,
    },
    /// `pivot_root(2)` into `new_root` (a mount point: bound onto itself first), then the old
    /// root is detached (`umount2(MNT_DETACH)`) and the cwd is the new `/`.
    PivotRoot {
        /// The new root.
        new_root: CString,
    },
    /// `mount(NULL, target, NULL, flags)` with propagation flags only (`MS_SHARED`,
    /// `MS_SLAVE`, `MS_PRIVATE`, `MS_UNBINDABLE`, with `MS_REC`).
    Propagation {
        /// The mount point.
        target: CString,
        /// The flags.
        flags: libc::c_ulong,
    },
    /// A kernel parameter: `value` written to `path` (under `/proc/sys`).
    Sysctl {
        /// The file.
        path: CString,
        /// What to write.
        value: CString,
    },
    /// `mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY)`: this one mount becomes
    /// read-only, not the mounts below it (OCI `root.readonly`).
    RemountReadOnly {
        /// The mount point.
        target: CString,
    },
}

/// What a [`MountStep::Oci`] creates before it mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountTarget {
    /// The target is a directory (created with its parents when missing).
    Dir,
    /// The target is a file (its parents are created, then an empty file), for a bind of a
    /// file.
    File,
}

/// One OCI `mounts` entry, prepared: C strings and `MS_*` flags.
#[derive(Debug, Clone)]
pub struct OciMount {
    /// `source` (`None`: NULL).
    pub source: Option<CString>,
    /// The absolute target, under the new root before the pivot.
    pub target: CString,
    /// The directories to create, outermost first (prefixes of `target` under the root).
    pub parents: Vec<CString>,
    /// What the target is.
    pub kind: MountTarget,
    /// The filesystem type (`None` for a bind).
    pub fstype: Option<CString>,
    /// `MS_*` flags for `mount(2)` (`MS_BIND`, `MS_REC` included for a bind).
    pub flags: libc::c_ulong,
    /// The filesystem's data string (`None`: NULL).
    pub data: Option<CString>,
    /// `MS_SHARED`/`MS_SLAVE`/`MS_PRIVATE`/`MS_UNBINDABLE` (with `MS_REC`), 0 for none.
    pub propagation: libc::c_ulong,
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
            MountStep::Oci(m) => format!(
                "mount {} on {} (type {}, flags {:#x}{})",
                m.source.as_ref().map_or_else(|| "none".into(), s),
                s(&m.target),
                m.fstype.as_ref().map_or_else(|| "bind".into(), s),
                m.flags,
                m.data
                    .as_ref()
                    .map_or_else(String::new, |d| format!(", data {}", s(d)))
            ),
            MountStep::Mknod { path, .. } => format!("device node {}", s(path)),
            MountStep::Symlink { target, link } => format!("symlink {} -> {}", s(link), s(target)),
            MountStep::PivotRoot { new_root } => format!("pivot_root into {}", s(new_root)),
            MountStep::RemountReadOnly { target } => format!("remount {} read-only", s(target)),
            MountStep::Sysctl { path, value } => format!("write {} to {}", s(value), s(path)),
            MountStep::Propagation { target, flags } => {
                format!("propagation {flags:#x} on {}", s(target))
            }
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
            MountStep::Oci(m) => oci_mount(m),
            MountStep::Mknod {
                path,
                parents,
                mode,
                dev,
                owner,
            } => parents
                .iter()
                .try_for_each(|p| mkdir(p, 0o755))
                .and_then(|()| mknod(path, *mode, *dev, *owner)),
            MountStep::Symlink { target, link } => {
                // SAFETY: both are NUL-terminated strings borrowed for the call.
                match check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }) {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
                    r => r,
                }
            }
            MountStep::PivotRoot { new_root } => pivot_root(new_root),
            MountStep::Sysctl { path, value } => write_file(path, value),
            MountStep::Propagation { target, flags } => mount(None, target, None, *flags, None),
            MountStep::RemountReadOnly { target } => mount(
                None,
                target,
                None,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                None,
            ),
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

/// Writes `value` to the existing file `path` with one `write(2)`.
fn write_file(path: &CStr, value: &CStr) -> io::Result<()> {
    // SAFETY: path is NUL-terminated; the fd is closed below on every path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes = value.to_bytes();
    // SAFETY: bytes is a live buffer of the length passed; fd was opened above.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    let r = if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: fd was opened above and is closed once.
    unsafe { libc::close(fd) };
    r
}

/// `mkdir(2)`, with an existing entry accepted.
fn mkdir(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: path is NUL-terminated and borrowed for the call.
    match check(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// Creates an empty file at `path` unless something is there already.
fn touch(path: &CStr) -> io::Result<()> {
    // SAFETY: path is NUL-terminated; the fd returned is closed at once.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o644,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        // A directory, or a device node that cannot be opened for writing: it exists.
        return match e.raw_os_error() {
            Some(libc::EISDIR | libc::ENXIO | libc::EACCES | libc::EPERM) => Ok(()),
            _ => Err(e),
        };
    }
    // SAFETY: fd was just opened here and is closed once.
    unsafe { libc::close(fd) };
    Ok(())
}

/// [`MountStep::Oci`]: create the target, mount, remount a bind with its flags, set the
/// propagation. No allocation.
fn oci_mount(m: &OciMount) -> io::Result<()> {
    const REMOUNT_FLAGS: libc::c_ulong = libc::MS_RDONLY
        | libc::MS_NOSUID
        | libc::MS_NODEV
        | libc::MS_NOEXEC
        | libc::MS_NOATIME
        | libc::MS_NODIRATIME
        | libc::MS_RELATIME
        | libc::MS_STRICTATIME;
    for p in &m.parents {
        mkdir(p, 0o755)?;
    }
    match m.kind {
        MountTarget::Dir => mkdir(&m.target, 0o755)?,
        MountTarget::File => touch(&m.target)?,
    }
    let bind = m.flags & libc::MS_BIND != 0;
    let flags = if bind {
        m.flags & (libc::MS_BIND | libc::MS_REC)
    } else {
        m.flags
    };
    mount(
        m.source.as_deref(),
        &m.target,
        m.fstype.as_deref(),
        flags,
        m.data.as_deref(),
    )?;
    if bind && m.flags & REMOUNT_FLAGS != 0 {
        // A bind ignores every flag but MS_REC: the remount applies them (mount(2)).
        mount(
            None,
            &m.target,
            None,
            libc::MS_REMOUNT | libc::MS_BIND | (m.flags & REMOUNT_FLAGS),
            None,
        )?;
    }
    if m.propagation != 0 {
        mount(None, &m.target, None, m.propagation, None)?;
    }
    Ok(())
}

/// [`MountStep::Mknod`]: an existing node is kept (`EEXIST`).
fn mknod(path: &CStr, mode: libc::mode_t, dev: libc::dev_t, owner: (u32, u32)) -> io::Result<()> {
    // SAFETY: path is NUL-terminated and borrowed for the call.
    match check(unsafe { libc::mknod(path.as_ptr(), mode, dev) }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(()),
        r => r?,
    }
    // SAFETY: as above; integer ids.
    check(unsafe { libc::chown(path.as_ptr(), owner.0, owner.1) })?;
    // mknod's mode went through the umask: set the bits asked for.
    // SAFETY: as above; an integer mode.
    check(unsafe { libc::chmod(path.as_ptr(), mode & 0o7777) })
}

/// [`MountStep::PivotRoot`]: the `pivot_root(".", ".")` idiom (pivot_root(2) NOTES): the
/// old root ends up on top of the new one and is detached at once.
fn pivot_root(new_root: &CStr) -> io::Result<()> {
    // SAFETY: new_root is NUL-terminated and borrowed for the call.
    check(unsafe { libc::chdir(new_root.as_ptr()) })?;
    // SAFETY: two NUL-terminated strings; pivot_root has no glibc wrapper.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // The old root must not propagate its unmount back to the host: make it a slave first.
    mount(None, c".", None, libc::MS_SLAVE | libc::MS_REC, None)?;
    // SAFETY: "." is a NUL-terminated string; MNT_DETACH is an integer flag.
    check(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) })?;
    // SAFETY: "/" is a NUL-terminated string.
    check(unsafe { libc::chdir(c"/".as_ptr()) })
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
