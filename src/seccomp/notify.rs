//! The supervisor's side of seccomp user notification: the listener's handover from the
//! context, and turning a notification into a [`DeniedSyscall`]. The design and its caveats
//! are in the [module docs](super#naming-the-denied-system-call).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::event::{PollFd, PollFlags};

use super::syscalls;
use super::table::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};
use crate::sys::{scm, seccomp_notify};

pub use crate::sys::seccomp_notify::LISTENER_TAG;

/// How many supervisor-only descriptors [`SupervisorOnlyMark`] can register at once (about
/// ten per live context).
const SUPERVISOR_ONLY_SLOTS: usize = 16 * 1024;
/// Where the next registration starts looking for a free slot (so a registration costs
/// O(1) while the table is not nearly full).
static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The numbers of the supervisor's live handover sockets: a closure context is a glibc
/// `fork` of the whole supervisor and inherits them, close-on-exec or not, and with one it
/// could take another context's listener off the socket. Lock-free, so a forked child can
/// read it.
static SUPERVISOR_ONLY: [AtomicI32; SUPERVISOR_ONLY_SLOTS] =
    [const { AtomicI32::new(-1) }; SUPERVISOR_ONLY_SLOTS];

/// The registration of a descriptor that no *other* context may hold, while it lives: a
/// closure context forked meanwhile closes every registered number but its own first thing
/// (`close_in_forked_child`). Dropping it unregisters the number; drop it before the
/// descriptor is closed (declare it before the fd in a struct: fields drop in order), so a
/// closure never closes a number that was reused.
#[derive(Debug)]
pub struct SupervisorOnlyMark {
    slot: Option<usize>,
}

impl SupervisorOnlyMark {
    /// Registers `fd`'s number. With every slot taken (more than 16,384 in flight) it is
    /// kept unregistered.
    pub fn new(fd: BorrowedFd<'_>) -> SupervisorOnlyMark {
        let raw = fd.as_raw_fd();
        let start = NEXT_SLOT.load(Ordering::Relaxed);
        let slot = (0..SUPERVISOR_ONLY_SLOTS)
            .map(|i| (start + i) % SUPERVISOR_ONLY_SLOTS)
            .find(|&i| {
                SUPERVISOR_ONLY[i]
                    .compare_exchange(-1, raw, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            });
        if let Some(i) = slot {
            NEXT_SLOT.store((i + 1) % SUPERVISOR_ONLY_SLOTS, Ordering::Relaxed);
        }
        SupervisorOnlyMark { slot }
    }
}

impl Drop for SupervisorOnlyMark {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            SUPERVISOR_ONLY[i].store(-1, Ordering::SeqCst);
        }
    }
}

/// A descriptor that no *other* context may hold (both ends of a listener handover: with the
/// supervisor's a closure could take another context's listener, with the context's it could
/// send a false one), registered while it lives ([`SupervisorOnlyMark`]). Dropping it
/// unregisters the number first, then closes it (a closure forked in between keeps a socket
/// whose listener was received already).
#[derive(Debug)]
pub struct SupervisorOnlyFd {
    // Field order is drop order: the mark goes before the fd is closed.
    _mark: SupervisorOnlyMark,
    fd: OwnedFd,
}

impl SupervisorOnlyFd {
    /// Registers `fd`.
    pub fn new(fd: OwnedFd) -> SupervisorOnlyFd {
        SupervisorOnlyFd {
            _mark: SupervisorOnlyMark::new(fd.as_fd()),
            fd,
        }
    }
}

impl AsFd for SupervisorOnlyFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// In a closure context right after `fork` (before it opens anything): closes the
/// supervisor's seccomp listeners of other contexts (found in `/proc/self/fd`) and every
/// registered [`SupervisorOnlyMark`] but the numbers in `keep` (this context's own ends).
/// Returns how many listeners it closed.
///
/// # Safety
/// Call it only in a closure context's child right after `fork`, before it opens anything:
/// the registered numbers are then copies of the supervisor's descriptors, whose owners
/// never run in the child.
///
/// # Errors
/// `/proc/self/fd` cannot be read.
#[allow(unsafe_code)] // an unsafe door: only a fresh fork may close these numbers
pub(crate) unsafe fn close_in_forked_child(keep: &[i32]) -> io::Result<usize> {
    for s in &SUPERVISOR_ONLY {
        let fd = s.load(Ordering::SeqCst);
        if fd >= 0 && !keep.contains(&fd) {
            // SAFETY: this function's contract (a fresh fork, nothing opened yet).
            unsafe { seccomp_notify::close_inherited(fd) };
        }
    }
    seccomp_notify::close_inherited_listeners()
}

pub use crate::base::DeniedSyscall;

impl DeniedSyscall {
    /// From the kernel's `nr` and `arch`; the name is looked up for native calls only (the
    /// numbers of other ABIs mean other calls).
    pub fn new(nr: i32, arch: u32) -> DeniedSyscall {
        let name = (arch == AUDIT_ARCH_X86_64)
            .then(|| u32::try_from(nr).ok().and_then(syscalls::name))
            .flatten();
        DeniedSyscall { nr, name, arch }
    }

    /// The architecture's name: `x86_64`, `i386`, else the `AUDIT_ARCH_*` value in hex.
    pub fn arch_name(&self) -> String {
        // The bits of `nr`, as the filter tests them.
        #[allow(clippy::cast_sign_loss)]
        let nr = self.nr as u32;
        match self.arch {
            AUDIT_ARCH_X86_64 if nr & X32_SYSCALL_BIT != 0 => "x32".to_owned(),
            AUDIT_ARCH_X86_64 => "x86_64".to_owned(),
            AUDIT_ARCH_I386 => "i386".to_owned(),
            other => format!("{other:#x}"),
        }
    }
}

impl fmt::Display for DeniedSyscall {
    /// `openat(2) (nr 257)`; `nr 470` for a native number without a name; `nr 11 (i386)`
    /// for another ABI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name {
            Some(n) => write!(f, "{n}(2) (nr {})", self.nr),
            None if self.arch == AUDIT_ARCH_X86_64 => write!(f, "nr {}", self.nr),
            None => write!(f, "nr {} ({})", self.nr, self.arch_name()),
        }
    }
}

/// What the supervisor learned from one notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The refused call.
    pub syscall: DeniedSyscall,
    /// The thread that made it, in the supervisor's pid namespace.
    pub thread: u32,
}

/// The supervisor's end of a context's listener handover: first the socket the listener
/// arrives on (`SCM_RIGHTS`, tag [`LISTENER_TAG`]), then the listener itself.
///
/// Poll [`ListenerWatch::poll_fd`] for `POLLIN` with the context's other descriptors and
/// call [`ListenerWatch::service`] after every wake-up; it never blocks.
///
/// Drop it only after the context is dead (reaped): closing the listener makes the kernel
/// fail every pending notified call with `ENOSYS`, so a workload not yet dead of the kill
/// would go on past the call it was denied (measured: a `reboot(2)` returned -1 to the
/// workload before the `SIGKILL` landed, when the listener was closed right after the kill).
#[derive(Debug)]
pub struct ListenerWatch {
    sock: Option<SupervisorOnlyFd>,
    listener: Option<OwnedFd>,
    /// A denial was reported: keep the listener open, stop polling it.
    reported: bool,
}

impl ListenerWatch {
    /// Watches `sock` (non-blocking), the supervisor's end of the socket pair the context
    /// sends its listener on.
    pub fn new(sock: SupervisorOnlyFd) -> ListenerWatch {
        ListenerWatch {
            sock: Some(sock),
            listener: None,
            reported: false,
        }
    }

    /// The descriptor to poll for `POLLIN`: the listener once it arrived, before that the
    /// socket; `None` when neither is left (the context closed its end without sending,
    /// or the filter has no task left) and after a denial was reported.
    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        if self.reported {
            return None;
        }
        match (&self.listener, &self.sock) {
            (Some(l), _) => Some(l.as_fd()),
            (None, Some(s)) => Some(s.as_fd()),
            (None, None) => None,
        }
    }

    /// Whether the listener arrived and is still watched.
    pub fn has_listener(&self) -> bool {
        self.listener.is_some()
    }

    /// Takes the listener if it arrived, then receives the pending notification if there is
    /// one. Never blocks: the listener is polled with a zero timeout first
    /// (`SECCOMP_IOCTL_NOTIF_RECV` itself would block). The notified thread stays blocked in
    /// the kernel, its call not run, until the caller kills the context; nothing is ever
    /// answered. Reports one denial; after it, returns `Ok(None)` and keeps the listener open
    /// until dropped.
    ///
    /// # Errors
    /// `recvmsg`, `poll` or `SECCOMP_IOCTL_NOTIF_RECV` failed (a notification that vanished
    /// because its thread died or took a signal, `ENOENT`, is `Ok(None)`).
    pub fn service(&mut self) -> io::Result<Option<Denial>> {
        if self.reported {
            return Ok(None);
        }
        if let Some(sock) = &self.sock {
            match scm::recv_fd(sock.as_fd()) {
                Ok(Some((LISTENER_TAG, fd))) => {
                    self.listener = Some(fd);
                    self.sock = None;
                }
                // End of file (the context closed its end without a listener: the kernel
                // refused one and the fallback filter went in) or a message that is not the
                // handover: nothing more comes on this socket.
                Ok(_) => self.sock = None,
                Err(e) if e.raw_os_error() == Some(libc::EPROTO) => self.sock = None,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let Some(listener) = &self.listener else {
            return Ok(None);
        };
        let mut pfd = [PollFd::new(listener, PollFlags::IN)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut pfd, Some(&zero)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let rev = pfd[0].revents();
        if rev.contains(PollFlags::IN) {
            return match seccomp_notify::recv(listener.as_fd()) {
                Ok(n) => {
                    self.reported = true;
                    Ok(Some(Denial {
                        syscall: DeniedSyscall::new(n.nr, n.arch),
                        thread: n.pid,
                    }))
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
                Err(e) => Err(e),
            };
        }
        if rev.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
            // No task runs the filter any more (Linux 5.8 reports POLLHUP then).
            self.listener = None;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_only_native_numbers() {
        let d = DeniedSyscall::new(257, AUDIT_ARCH_X86_64);
        assert_eq!(d.name, Some("openat"));
        assert_eq!(d.to_string(), "openat(2) (nr 257)");
        assert_eq!(d.arch_name(), "x86_64");
        // i386's 5 is open, not fstat: no name from the x86_64 table.
        let d = DeniedSyscall::new(5, AUDIT_ARCH_I386);
        assert_eq!(d.name, None);
        assert_eq!(d.to_string(), "nr 5 (i386)");
        let d = DeniedSyscall::new(9999, AUDIT_ARCH_X86_64);
        assert_eq!(d.to_string(), "nr 9999");
    }

    #[test]
    fn supervisor_only_fds_are_registered_while_they_live() {
        let (a, _b) = scm::seqpacket_pair().unwrap();
        let raw = a.as_raw_fd();
        let registered = || {
            SUPERVISOR_ONLY
                .iter()
                .any(|s| s.load(Ordering::SeqCst) == raw)
        };
        let s = SupervisorOnlyFd::new(a);
        assert!(registered());
        drop(s);
        assert!(!registered());
    }

    #[test]
    fn the_handover_socket_ends_at_eof_without_a_listener() {
        let (a, b) = scm::seqpacket_pair().unwrap();
        rustix::fs::fcntl_setfl(&a, rustix::fs::OFlags::NONBLOCK).unwrap();
        let mut w = ListenerWatch::new(SupervisorOnlyFd::new(a));
        assert!(w.service().unwrap().is_none());
        assert!(w.poll_fd().is_some(), "nothing sent yet: still watching");
        drop(b);
        assert!(w.service().unwrap().is_none());
        assert!(w.poll_fd().is_none() && !w.has_listener());
    }
}
