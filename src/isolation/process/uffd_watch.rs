//! Watching memory of a process context from its supervisor: the context's userfaultfd,
//! passed over `SCM_RIGHTS`, reports every write to a watched (write-protected) range to the
//! supervisor, which kills that context, and only that one, and reports the write as a
//! [`ViolationKind::WriteToFrozen`] with the address and the writing thread.
//!
//! ```text
//!  supervisor                                   closure context (workload process)
//!  ──────────                                   ──────────────────────────────────
//!  socketpair(SEQPACKET) ─────────────────────▶ before the privilege step (seccomp refuses
//!                                               userfaultfd(2) later): Userfaultfd::open
//!  recv_fd ◀──────────── SCM_RIGHTS ─────────── (WP, THREAD_ID), send_fd; keep it
//!  poll(uffd) ...                               closure: watch(start, len) =
//!                                                 UFFDIO_REGISTER(WP) + UFFDIO_WRITEPROTECT
//!  read: PAGEFAULT|WP at addr, ptid ◀────────── a write to the range: the thread blocks
//!  kill the context (cgroup.kill / SIGKILL pid 1)
//!  Outcome.violations += WriteToFrozen{addr, tid}
//! ```
//!
//! The userfaultfd is opened in the context (its memory is what a userfaultfd watches: the
//! registrations act on the opener's address space, whoever holds the fd), before the seccomp
//! filter and the capability drop, with `UFFD_USER_MODE_ONLY` so no sysctl is needed. The
//! faulting thread stays blocked in the kernel until the context dies: it never gets past the
//! write. Only closures can be watched (an `execve` replaces the memory the fd watches);
//! [`ProcessConfig::watch_regions`](super::ProcessConfig::watch_regions) turns it on.
//!
//! The thread id is the one `UFFD_FEATURE_THREAD_ID` reports, `task_pid_vnr` of the faulting
//! thread: its id inside the context's pid namespace.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::time::SystemTime;

use crate::sys::scm;
use crate::sys::uffd as raw;
use crate::violation::{ViolationInfo, ViolationKind};

/// `UFFD_FEATURE_THREAD_ID`: the fault message carries the faulting thread's id.
const FEATURE_THREAD_ID: u64 = linux_raw_sys::general::UFFD_FEATURE_THREAD_ID as u64;
/// `UFFD_FEATURE_EXACT_ADDRESS`: the fault message carries the exact address.
const FEATURE_EXACT_ADDRESS: u64 = linux_raw_sys::general::UFFD_FEATURE_EXACT_ADDRESS as u64;
/// `UFFDIO_REGISTER_MODE_WP`.
const MODE_WP: u64 = linux_raw_sys::general::UFFDIO_REGISTER_MODE_WP as u64;
/// `UFFD_PAGEFAULT_FLAG_WP`: the fault is a write to a write-protected page.
const FLAG_WP: u64 = linux_raw_sys::general::UFFD_PAGEFAULT_FLAG_WP as u64;
/// The tag byte of the `SCM_RIGHTS` message.
const TAG_UFFD: u8 = b'U';

/// Why watching memory in a context failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// [`watch`] was called outside a context started with `watch_regions`.
    #[error(
        "this process is not a watched context: start the closure with region watching \
         on (the watch_regions setting of the process configuration)"
    )]
    NotWatched,
    /// The context could not open its userfaultfd at start-up.
    #[error("the context's userfaultfd could not be opened: {0}")]
    Open(String),
    /// The range is not page aligned or empty.
    #[error("range {start:#x}+{len:#x} is not a non-empty page-aligned range")]
    Range {
        /// Start address.
        start: usize,
        /// Length in bytes.
        len: usize,
    },
    /// `UFFDIO_REGISTER` or `UFFDIO_WRITEPROTECT` failed.
    #[error(
        "{operation} of {start:#x}+{len:#x} failed (the range must be mapped, populated \
         anonymous or shmem memory)"
    )]
    Register {
        /// `UFFDIO_REGISTER` or `UFFDIO_WRITEPROTECT`.
        operation: &'static str,
        /// Start address.
        start: usize,
        /// Length in bytes.
        len: usize,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// Passing the userfaultfd to the supervisor failed.
    #[error("sending the userfaultfd to the supervisor failed")]
    Send(#[source] std::io::Error),
}

/// In a watched context: its userfaultfd, or why it could not be opened.
static CHILD: OnceLock<Result<OwnedFd, String>> = OnceLock::new();

/// Opens a userfaultfd (the system call, else `/dev/userfaultfd`; user-mode faults only) and
/// negotiates write-protect faults with the thread id and exact address where the kernel has
/// them (`UFFDIO_API` once per descriptor: a throw-away one asks for the kernel's mask).
fn open_uffd() -> Result<OwnedFd, String> {
    let open = || {
        raw::open_syscall().or_else(|s| {
            raw::open_device().map_err(|d| format!("userfaultfd(2): {s}; /dev/userfaultfd: {d}"))
        })
    };
    let probe = open()?;
    let have = raw::api(&probe, 0)
        .map_err(|e| format!("UFFDIO_API: {e}"))?
        .features;
    drop(probe);
    let fd = open()?;
    let want = (FEATURE_THREAD_ID | FEATURE_EXACT_ADDRESS) & have;
    // A kernel without write-protect mode refuses UFFDIO_REGISTER_MODE_WP in watch().
    raw::api(&fd, want).map_err(|e| format!("UFFDIO_API: {e}"))?;
    Ok(fd)
}

/// Context side, before the privilege step: opens the userfaultfd and sends it to the
/// supervisor over `sock`. A failure is kept and returned by [`watch`] (the closure decides
/// what to do without its watch); the socket is closed either way.
pub(super) fn child_start(sock: OwnedFd) {
    let r = open_uffd().and_then(|u| {
        scm::send_fd(sock.as_fd(), u.as_fd(), TAG_UFFD)
            .map_err(|e| WatchError::Send(e).to_string())?;
        Ok(u)
    });
    drop(sock);
    let _ = CHILD.set(r);
}

/// Whether this process is a watched context with a working userfaultfd.
pub fn is_watched() -> bool {
    matches!(CHILD.get(), Some(Ok(_)))
}

/// In a watched context (a closure run with `watch_regions`): write-protects
/// `start..start+len` through the context's userfaultfd. From then on the first write to it
/// blocks the writing thread and the supervisor kills the context, reporting a
/// [`ViolationKind::WriteToFrozen`] at the address. The pages must be mapped and populated
/// (anonymous private or shmem memory).
///
/// # Errors
/// [`WatchError::NotWatched`], [`WatchError::Open`], [`WatchError::Range`],
/// [`WatchError::Register`].
pub fn watch(start: usize, len: usize) -> Result<(), WatchError> {
    let u = match CHILD.get() {
        None => return Err(WatchError::NotWatched),
        Some(Err(e)) => return Err(WatchError::Open(e.clone())),
        Some(Ok(u)) => u,
    };
    let page = rustix::param::page_size();
    if len == 0 || start % page != 0 || len % page != 0 {
        return Err(WatchError::Range { start, len });
    }
    raw::register(u, start, len, MODE_WP).map_err(|source| WatchError::Register {
        operation: "UFFDIO_REGISTER",
        start,
        len,
        source,
    })?;
    if let Err(source) = raw::write_protect(u, start, len, true, false) {
        let _ = raw::unregister(u, start, len);
        return Err(WatchError::Register {
            operation: "UFFDIO_WRITEPROTECT",
            start,
            len,
            source,
        });
    }
    Ok(())
}

/// Supervisor side: first the socket the userfaultfd arrives on, then the userfaultfd.
#[derive(Debug)]
pub(super) struct Watcher {
    sock: Option<super::fds::Private>,
    uffd: Option<super::fds::Private>,
    pid: i32,
}

impl Watcher {
    pub(super) fn new(sock: super::fds::Private, pid: i32) -> Watcher {
        Watcher {
            sock: Some(sock),
            uffd: None,
            pid,
        }
    }

    /// The descriptor to poll for input, if any is left.
    pub(super) fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.uffd.as_ref().or(self.sock.as_ref()).map(|f| f.as_fd())
    }

    /// Services what is pending: takes the userfaultfd off the socket, or reads its
    /// messages. Returns the first write to a watched range, if one happened.
    ///
    /// # Errors
    /// The `recvmsg`/`read` error (other than "nothing pending").
    pub(super) fn service(&mut self) -> std::io::Result<Option<ViolationInfo>> {
        if let Some(sock) = &self.sock {
            match scm::recv_fd(sock.as_fd()) {
                Ok(Some((TAG_UFFD, fd))) => {
                    self.uffd = Some(super::fds::private(fd));
                    self.sock = None;
                }
                Ok(Some((_, _))) => {
                    return Err(std::io::Error::from_raw_os_error(libc::EPROTO));
                }
                // The context closed its end without a userfaultfd (it could not open one;
                // its closure is told by watch()).
                Ok(None) => self.sock = None,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let Some(fd) = &self.uffd else {
            return Ok(None);
        };
        while let Some(msg) = raw::read_msg(fd.as_fd())? {
            if let raw::Msg::PageFault {
                flags,
                address,
                ptid,
            } = msg
                && flags & FLAG_WP != 0
            {
                return Ok(Some(ViolationInfo {
                    address: Some(address),
                    kind: ViolationKind::WriteToFrozen,
                    region: None,
                    context: None,
                    thread_id: (ptid != 0).then_some(ptid as i32),
                    pid: Some(self.pid),
                    timestamp: SystemTime::now(),
                }));
            }
            // Other messages (a missing-page fault cannot happen: ranges are WP only; fork
            // and remap events are not requested) are ignored.
        }
        Ok(None)
    }
}
