//! userfaultfd: open a descriptor and negotiate the API.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use linux_raw_sys::general::{UFFD_API, UFFD_USER_MODE_ONLY, uffdio_api};
use linux_raw_sys::ioctl::UFFDIO_API;

/// `USERFAULTFD_IOC_NEW` on `/dev/userfaultfd` (`_IO(0xAA, 0x00)`; not in linux-raw-sys).
const USERFAULTFD_IOC_NEW: libc::c_ulong = 0xAA00;

/// Creates a userfaultfd with the `userfaultfd(2)` system call (`O_CLOEXEC | O_NONBLOCK`,
/// user-mode faults only, so it works without `vm.unprivileged_userfaultfd`).
///
/// # Errors
/// `ENOSYS` without the syscall; `EPERM` when policy forbids it.
///
/// # References
/// userfaultfd(2).
pub fn open_syscall() -> io::Result<OwnedFd> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY as i32;
    // SAFETY: userfaultfd takes one integer and returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: r is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Creates a userfaultfd through `/dev/userfaultfd` (`USERFAULTFD_IOC_NEW`).
///
/// # Errors
/// `ENOENT` when the device is missing (kernels before 6.1), `EACCES` without access.
///
/// # References
/// userfaultfd(2), "/dev/userfaultfd".
pub fn open_device() -> io::Result<OwnedFd> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/userfaultfd")?;
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: USERFAULTFD_IOC_NEW takes an integer argument and returns a new fd or -1.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: r is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// The outcome of `UFFDIO_API`: the features the kernel offers and the ioctls it allows.
#[derive(Clone, Copy, Debug)]
pub struct ApiReport {
    /// `uffdio_api.features` as returned by the kernel (`UFFD_FEATURE_*`).
    pub features: u64,
    /// `uffdio_api.ioctls` (bit n set: ioctl number n is available).
    pub ioctls: u64,
}

/// Negotiates the API on a fresh userfaultfd, asking for `features` (0 asks for none and
/// makes the kernel report every feature it has).
///
/// # Errors
/// `EINVAL` when the API version or a requested feature is unknown; `EPERM` for a
/// privileged feature without the capability.
///
/// # References
/// ioctl_userfaultfd(2) `UFFDIO_API`.
pub fn api(fd: &OwnedFd, features: u64) -> io::Result<ApiReport> {
    let mut arg = uffdio_api {
        api: UFFD_API as u64,
        features,
        ioctls: 0,
    };
    // SAFETY: arg is a live, properly laid out uffdio_api (from linux-raw-sys) that the
    // kernel reads and writes during the call only.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            UFFDIO_API as libc::c_ulong,
            &mut arg as *mut uffdio_api,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ApiReport {
        features: arg.features,
        ioctls: arg.ioctls,
    })
}
