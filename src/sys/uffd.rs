//! userfaultfd: open a descriptor, negotiate the API, register ranges, resolve faults
//! (`UFFDIO_WRITEPROTECT`, `UFFDIO_COPY`, `UFFDIO_ZEROPAGE`, `UFFDIO_WAKE`), read events from a
//! non-blocking fd, and the memfd (shmem) mappings that frozen regions live in.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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
    let fd = i32::try_from(r).map_err(super::overflow)?;
    // SAFETY: fd is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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

use linux_raw_sys::general::{
    UFFD_EVENT_PAGEFAULT, uffd_msg, uffdio_copy, uffdio_range, uffdio_register,
    uffdio_writeprotect, uffdio_zeropage,
};
use linux_raw_sys::ioctl::{
    UFFDIO_COPY, UFFDIO_REGISTER, UFFDIO_UNREGISTER, UFFDIO_WAKE, UFFDIO_WRITEPROTECT,
    UFFDIO_ZEROPAGE,
};

/// `ioctl(fd, req, arg)` returning the errno on failure.
///
/// # Safety
/// `arg` points to the live, correctly typed argument structure of `req`.
unsafe fn uffd_ioctl<T>(fd: &OwnedFd, req: u32, arg: *mut T) -> io::Result<()> {
    // SAFETY: forwarded from the caller's contract.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::c_ulong, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Registers `start..start+len` (page aligned) with the userfaultfd in `mode`
/// (`UFFDIO_REGISTER_MODE_MISSING` | `_WP` | `_MINOR`); returns the ioctls allowed on it.
///
/// # Errors
/// `EINVAL` for an unaligned range, a range not fully mapped, or a mode the memory type does
/// not support (e.g. WP on shmem without `WP_HUGETLBFS_SHMEM`); `EBUSY` when registered with
/// another userfaultfd.
///
/// # References
/// ioctl_userfaultfd(2) `UFFDIO_REGISTER`.
pub fn register(fd: &OwnedFd, start: usize, len: usize, mode: u64) -> io::Result<u64> {
    let mut arg = uffdio_register {
        range: uffdio_range {
            start: start as u64,
            len: len as u64,
        },
        mode,
        ioctls: 0,
    };
    // SAFETY: arg is a live uffdio_register; the kernel only changes VMA flags of the range
    // (no user memory content changes).
    unsafe { uffd_ioctl(fd, UFFDIO_REGISTER, &mut arg) }?;
    Ok(arg.ioctls)
}

/// Unregisters a range; threads waiting on faults in it are woken and retry without us.
///
/// # Errors
/// `EINVAL` for an unaligned range.
///
/// # References
/// ioctl_userfaultfd(2) `UFFDIO_UNREGISTER`.
pub fn unregister(fd: &OwnedFd, start: usize, len: usize) -> io::Result<()> {
    let mut arg = uffdio_range {
        start: start as u64,
        len: len as u64,
    };
    // SAFETY: arg is a live uffdio_range.
    unsafe { uffd_ioctl(fd, UFFDIO_UNREGISTER, &mut arg) }
}

/// Sets (`protect`) or clears write protection on a WP-registered range. Clearing wakes the
/// threads parked on it (unless `dont_wake`).
///
/// # Errors
/// `EINVAL` when the range is not WP-registered; `ENOENT`/`ESRCH` when the mm is gone.
///
/// # References
/// ioctl_userfaultfd(2) `UFFDIO_WRITEPROTECT`.
pub fn write_protect(
    fd: &OwnedFd,
    start: usize,
    len: usize,
    protect: bool,
    dont_wake: bool,
) -> io::Result<()> {
    // <linux/userfaultfd.h>: UFFDIO_WRITEPROTECT_MODE_WP, _DONTWAKE (not in linux-raw-sys).
    const MODE_WP: u64 = 1 << 0;
    const MODE_DONTWAKE: u64 = 1 << 1;
    let mut mode = 0u64;
    if protect {
        mode |= MODE_WP;
    }
    if dont_wake {
        mode |= MODE_DONTWAKE;
    }
    let mut arg = uffdio_writeprotect {
        range: uffdio_range {
            start: start as u64,
            len: len as u64,
        },
        mode,
    };
    // SAFETY: arg is a live uffdio_writeprotect; only PTE bits of the range change.
    unsafe { uffd_ioctl(fd, UFFDIO_WRITEPROTECT, &mut arg) }
}

/// Atomically fills the missing pages at `dst` with a copy of `src` (`len` = `src.len()`,
/// page multiple) and wakes the waiters.
///
/// # Errors
/// `EEXIST` when a page is already present; `ENOMEM` at the memory cgroup's limit; `EAGAIN`
/// when the mapping changed meanwhile (retry).
///
/// # References
/// ioctl_userfaultfd(2) `UFFDIO_COPY`.
pub fn copy(fd: &OwnedFd, dst: usize, src: &[u8]) -> io::Result<()> {
    let mut arg = uffdio_copy {
        dst: dst as u64,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        mode: 0,
        copy: 0,
    };
    // SAFETY: arg is live; the kernel reads src.len() bytes from the live slice `src` and
    // writes only into pages that were missing in a range registered with this fd (no Rust
    // object lives there: registered ranges are owned by nebula's region types).
    unsafe { uffd_ioctl(fd, UFFDIO_COPY, &mut arg) }
}

/// Maps the zero page over missing pages of `start..start+len` and wakes the waiters.
///
/// # Errors
/// As [`copy`].
///
/// # References
/// ioctl_userfaultfd(2) `UFFDIO_ZEROPAGE`.
pub fn zeropage(fd: &OwnedFd, start: usize, len: usize) -> io::Result<()> {
    let mut arg = uffdio_zeropage {
        range: uffdio_range {
            start: start as u64,
            len: len as u64,
        },
        mode: 0,
        zeropage: 0,
    };
    // SAFETY: arg is live; only missing pages of a registered range are filled.
    unsafe { uffd_ioctl(fd, UFFDIO_ZEROPAGE, &mut arg) }
}

/// Wakes threads waiting on faults in a range (after resolving with `DONTWAKE`).
///
/// # Errors
/// `EINVAL` for an unaligned range.
///
/// # References
/// ioctl_userfaultfd(2) `UFFDIO_WAKE`.
pub fn wake(fd: &OwnedFd, start: usize, len: usize) -> io::Result<()> {
    let mut arg = uffdio_range {
        start: start as u64,
        len: len as u64,
    };
    // SAFETY: arg is a live uffdio_range.
    unsafe { uffd_ioctl(fd, UFFDIO_WAKE, &mut arg) }
}

/// One message read from a userfaultfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    /// `UFFD_EVENT_PAGEFAULT`.
    PageFault {
        /// `UFFD_PAGEFAULT_FLAG_*` (WRITE, WP, MINOR).
        flags: u64,
        /// The faulting address (exact with `UFFD_FEATURE_EXACT_ADDRESS`).
        address: usize,
        /// The faulting thread (with `UFFD_FEATURE_THREAD_ID`, else 0).
        ptid: u32,
    },
    /// Any other event (fork, remap, remove, unmap), by number.
    Other(u8),
}

/// Reads one message from a non-blocking userfaultfd; `None` when none is pending (`EAGAIN`).
///
/// # Errors
/// The `read` errno other than `EAGAIN`/`EINTR`; `EIO` for a short message or a fault
/// address that is not one of this process's.
///
/// # References
/// userfaultfd(2) "Reading from the userfaultfd structure".
pub fn read_msg(fd: BorrowedFd<'_>) -> io::Result<Option<Msg>> {
    // SAFETY: uffd_msg is plain data (integers and unions of integers): all-zero is valid.
    let mut msg: uffd_msg = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<uffd_msg>();
    loop {
        // SAFETY: msg is a live, writable buffer of `size` bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut msg as *mut uffd_msg).cast(), size) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
        if usize::try_from(n).ok() != Some(size) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        break;
    }
    let event = msg.event;
    if u32::from(event) != UFFD_EVENT_PAGEFAULT {
        return Ok(Some(Msg::Other(event)));
    }
    // SAFETY: for UFFD_EVENT_PAGEFAULT the kernel filled the `pagefault` member; the union
    // members are plain integers (copied out of the packed struct by value).
    let pf = unsafe { msg.arg.pagefault };
    // SAFETY: ptid is the only member of `feat`, an integer.
    let ptid = unsafe { pf.feat.ptid };
    Ok(Some(Msg::PageFault {
        flags: pf.flags,
        address: usize::try_from(pf.address)
            .map_err(|_| io::Error::from_raw_os_error(libc::EIO))?,
        ptid,
    }))
}

/// A shared mapping of a sealed memfd (shmem): the backing for regions whose write
/// protection is a promise (userfaultfd WP survives `MADV_DONTNEED` on shmem, not on
/// anonymous memory). The memfd is sealed against shrinking and growing (no SIGBUS from a
/// truncation) and closed once mapped; the mapping keeps the memory. Unmapped on drop.
#[derive(Debug)]
pub struct SharedMapping {
    base: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: a range of this process's address space; SharedMapping never dereferences it
// except through the bounds-checked volatile copies below.
unsafe impl Send for SharedMapping {}
// SAFETY: as above.
unsafe impl Sync for SharedMapping {}

impl SharedMapping {
    /// Creates a memfd named `name` of `len` bytes (a page multiple), seals its size and maps
    /// it shared, read-write.
    ///
    /// # Errors
    /// The `memfd_create`, `ftruncate`, `fcntl(F_ADD_SEALS)` or `mmap` errno.
    ///
    /// # References
    /// memfd_create(2), fcntl(2) "File seals", mmap(2).
    pub fn memfd(name: &str, len: usize) -> io::Result<SharedMapping> {
        use rustix::fs::{MemfdFlags, SealFlags};
        if len == 0 || len % super::mm::page_size() != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        // SAFETY: a fresh shared mapping of our own memfd at a kernel-chosen address; it
        // aliases no Rust object. The fd is closed afterwards; the mapping keeps the file.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }?;
        let base = std::ptr::NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(SharedMapping { base, len })
    }

    /// The first byte.
    pub fn base(&self) -> std::ptr::NonNull<u8> {
        self.base
    }

    fn check(&self, offset: usize, n: usize) -> io::Result<()> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    /// Volatile byte copy into the mapping. A store to a write-protected page parks the
    /// calling thread in the kernel until the userfaultfd handler resolves the fault.
    ///
    /// # Errors
    /// `EINVAL` out of bounds.
    pub fn copy_in(&self, offset: usize, src: &[u8]) -> io::Result<()> {
        self.check(offset, src.len())?;
        for (i, &b) in src.iter().enumerate() {
            // SAFETY: in bounds (check), inside the mapping self owns; raw-pointer stores,
            // no reference to the mapping exists.
            unsafe { self.base.as_ptr().add(offset + i).write_volatile(b) };
        }
        Ok(())
    }

    /// Volatile byte copy out of the mapping.
    ///
    /// # Errors
    /// `EINVAL` out of bounds.
    pub fn copy_out(&self, offset: usize, dst: &mut [u8]) -> io::Result<()> {
        self.check(offset, dst.len())?;
        for (i, b) in dst.iter_mut().enumerate() {
            // SAFETY: as in copy_in, for loads.
            *b = unsafe { self.base.as_ptr().add(offset + i).read_volatile() };
        }
        Ok(())
    }

    /// Drops the pages' contents from this mapping (`MADV_DONTNEED`); shmem keeps the data
    /// in the page cache and the userfaultfd WP markers survive (unlike anonymous memory).
    ///
    /// # Errors
    /// The `madvise` errno.
    ///
    /// # References
    /// madvise(2).
    pub fn discard(&self) -> io::Result<()> {
        // SAFETY: the whole mapping self owns; no reference into it exists.
        unsafe {
            rustix::mm::madvise(
                self.base.as_ptr().cast(),
                self.len,
                rustix::mm::Advice::LinuxDontNeed,
            )
        }?;
        Ok(())
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: base..base+len was mapped by `memfd` and is owned by self; Drop runs once.
        let r = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
        if let Err(e) = r {
            eprintln!("nebula-memory: munmap of a frozen region failed: {e}; aborting");
            std::process::abort();
        }
    }
}
