//! userfaultfd regions: frozen (write-protected) regions and lazily populated regions with a
//! page budget, served by one handler thread per process.
//!
//! ```text
//!  writer thread                     kernel                        "nebula-uffd" thread
//!  ─────────────                     ──────                        ────────────────────
//!  store to a frozen page ──▶ WP fault: thread parked in  ──msg──▶ poll(uffd) → read: flags
//!                             handle_userfault (state S)           WRITE|WP, exact address,
//!                                                                  ptid (UFFD_FEATURE_THREAD_ID)
//!                                                                  → violation::report(WriteToFrozen)
//!                             ◀── Audit: UFFDIO_WRITEPROTECT(off) on that page, wake: the store lands
//!                                 Refuse: nothing; the writer stays parked
//! ```
//!
//! **Refusal in-process parks, it does not stop.** A thread parked on a userfaultfd fault
//! waits in the kernel until the fault is resolved or it gets a fatal signal; a kernel-side
//! write (`read(2)` into the page) ignores every signal but SIGKILL, and SIGKILL kills the
//! whole process. So inside one process, refusing a write means the writer never runs again;
//! only a process context can be stopped cleanly (the process level kills it). A region with
//! parked writers is therefore never unregistered or unmapped: dropping it leaks the mapping
//! on purpose (unregistering would wake the writer and let the refused write land).
//!
//! **Kernel-mode writes are not reported.** The descriptor is opened with
//! `UFFD_USER_MODE_ONLY` (no privilege needed, and a kernel-side access can never hang on
//! it): a `read(2)` into a frozen page fails with `EFAULT` and nothing is reported.
//!
//! **Frozen regions live in shmem.** `MADV_DONTNEED` silently drops uffd write protection on
//! anonymous memory; on a memfd the markers survive. [`FrozenRegion`] maps a sealed memfd.
//!
//! **Lazy regions** ([`LazyRegion`]) are anonymous memory registered in missing mode: every
//! first touch of a page is a fault the handler resolves with `UFFDIO_ZEROPAGE`, counting
//! distinct pages against the budget. The fault past the budget is a
//! [`ViolationKind::PageBudgetExceeded`]: served anyway under [`WritePolicy::Audit`], parked
//! under [`WritePolicy::Refuse`].
//!
//! ```no_run
//! use nebula_memory::uffd::{FrozenRegion, WritePolicy};
//!
//! let frozen = FrozenRegion::new(b"configuration that must not change", WritePolicy::Audit, None)?;
//! let mut buf = [0u8; 13];
//! frozen.read(0, &mut buf)?; // reads never fault
//! # Ok::<(), nebula_memory::uffd::UffdError>(())
//! ```

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use linux_raw_sys::general::{
    UFFD_FEATURE_EXACT_ADDRESS, UFFD_FEATURE_THREAD_ID, UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
    UFFD_FEATURE_WP_UNPOPULATED, UFFD_PAGEFAULT_FLAG_WP, UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
};

use super::guarded::{Guarded, GuardedError};
use crate::base::ContextId;
use crate::sys::mm::{Prot, page_size};
use crate::sys::uffd as raw;
use crate::violation::{self, ViolationInfo, ViolationKind};

/// Errors of the userfaultfd layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UffdError {
    /// Neither `userfaultfd(2)` nor `/dev/userfaultfd` gave a descriptor.
    #[error(
        "opening a userfaultfd failed (syscall: {syscall}); Hint: nebula-ctl probe shows whether userfaultfd is available"
    )]
    Open {
        /// Why the syscall failed.
        syscall: io::Error,
        /// Why the device failed.
        #[source]
        device: io::Error,
    },
    /// `UFFDIO_API` refused the features asked for.
    #[error("UFFDIO_API with features {requested:#x} failed")]
    Api {
        /// The features asked for.
        requested: u64,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A feature the operation needs is missing from the kernel.
    #[error("the kernel lacks userfaultfd feature {feature}; Hint: {hint}")]
    MissingFeature {
        /// The feature's name.
        feature: &'static str,
        /// What would help.
        hint: &'static str,
    },
    /// `UFFDIO_REGISTER` failed.
    #[error("registering {len} bytes at {start:#x} with the userfaultfd failed")]
    Register {
        /// Range start.
        start: usize,
        /// Range length.
        len: usize,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// `UFFDIO_WRITEPROTECT` failed.
    #[error("write-protecting {len} bytes at {start:#x} failed")]
    WriteProtect {
        /// Range start.
        start: usize,
        /// Range length.
        len: usize,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Mapping the region's memory failed.
    #[error("mapping a {len}-byte region failed")]
    Map {
        /// The length.
        len: usize,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Starting the handler thread failed.
    #[error("starting the userfaultfd handler thread failed")]
    StartHandler(#[source] io::Error),
    /// A size of zero, or one that overflows.
    #[error("invalid region size {0}")]
    InvalidSize(usize),
    /// An access outside the region.
    #[error("{len} bytes at offset {offset} are outside the region of {size} bytes")]
    OutOfBounds {
        /// Offset asked for.
        offset: usize,
        /// Length asked for.
        len: usize,
        /// The region's size.
        size: usize,
    },
}

/// A userfaultfd: non-blocking, close-on-exec, user-mode faults only, with the API
/// negotiated. The thin safe layer over `crate::sys::uffd`.
#[derive(Debug)]
pub struct Userfaultfd {
    fd: OwnedFd,
    available: u64,
    enabled: u64,
    ioctls: u64,
}

impl Userfaultfd {
    /// Opens a userfaultfd (the syscall, else `/dev/userfaultfd`) and enables `features`
    /// (`UFFD_FEATURE_*` bits) intersected with what the kernel has.
    ///
    /// # Errors
    /// [`UffdError::Open`], [`UffdError::Api`].
    pub fn open(features: u64) -> Result<Userfaultfd, UffdError> {
        let open = || match raw::open_syscall() {
            Ok(fd) => Ok(fd),
            Err(syscall) => {
                raw::open_device().map_err(|device| UffdError::Open { syscall, device })
            }
        };
        // UFFDIO_API may be called once per fd, and fails on an unknown feature: ask a
        // throw-away descriptor for the kernel's mask first.
        let probe = open()?;
        let available = raw::api(&probe, 0)
            .map_err(|source| UffdError::Api {
                requested: 0,
                source,
            })?
            .features;
        drop(probe);
        let fd = open()?;
        let requested = features & available;
        let report =
            raw::api(&fd, requested).map_err(|source| UffdError::Api { requested, source })?;
        Ok(Userfaultfd {
            fd,
            available,
            enabled: requested,
            ioctls: report.ioctls,
        })
    }

    /// The kernel's feature mask (`UFFD_FEATURE_*`), as `UFFDIO_API` reported it.
    pub fn available_features(&self) -> u64 {
        self.available
    }

    /// The features enabled on this descriptor.
    pub fn enabled_features(&self) -> u64 {
        self.enabled
    }

    /// The ioctls `UFFDIO_API` allows on this descriptor (bit n: ioctl number n).
    pub fn api_ioctls(&self) -> u64 {
        self.ioctls
    }

    /// Waits until a message is pending, at most `timeout_ms` (`-1`: forever); returns whether
    /// one is.
    ///
    /// # Errors
    /// The `poll` errno.
    pub fn poll(&self, timeout_ms: i32) -> io::Result<bool> {
        use rustix::event::{PollFd, PollFlags};
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let timeout = (timeout_ms >= 0).then(|| rustix::event::Timespec {
            tv_sec: i64::from(timeout_ms / 1000),
            tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
        });
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads one pending message; `None` when there is none.
    ///
    /// # Errors
    /// The `read` errno.
    pub fn read_event(&self) -> io::Result<Option<Event>> {
        Ok(raw::read_msg(self.fd.as_fd())?.map(|m| match m {
            raw::Msg::PageFault {
                flags,
                address,
                ptid,
            } => Event::PageFault {
                write: flags & u64::from(linux_raw_sys::general::UFFD_PAGEFAULT_FLAG_WRITE) != 0,
                write_protect: flags & u64::from(UFFD_PAGEFAULT_FLAG_WP) != 0,
                address,
                thread_id: (ptid != 0).then_some(ptid as i32),
            },
            raw::Msg::Other(e) => Event::Other(e),
        }))
    }

    fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Registers `start..start+len` (page aligned, mapped) in missing and/or write-protect
    /// mode; returns the ioctls the kernel allows on the range.
    ///
    /// # Errors
    /// [`UffdError::Register`].
    pub fn register(
        &self,
        start: usize,
        len: usize,
        missing: bool,
        write_protect: bool,
    ) -> Result<u64, UffdError> {
        let mut mode = 0u64;
        if missing {
            mode |= u64::from(UFFDIO_REGISTER_MODE_MISSING);
        }
        if write_protect {
            mode |= u64::from(UFFDIO_REGISTER_MODE_WP);
        }
        raw::register(&self.fd, start, len, mode).map_err(|source| UffdError::Register {
            start,
            len,
            source,
        })
    }

    /// Unregisters a range (waking its parked threads).
    ///
    /// # Errors
    /// [`UffdError::Register`] with the kernel's answer.
    pub fn unregister(&self, start: usize, len: usize) -> Result<(), UffdError> {
        raw::unregister(&self.fd, start, len).map_err(|source| UffdError::Register {
            start,
            len,
            source,
        })
    }

    /// Sets or clears write protection (clearing wakes the parked writers).
    ///
    /// # Errors
    /// [`UffdError::WriteProtect`].
    pub fn write_protect(&self, start: usize, len: usize, protect: bool) -> Result<(), UffdError> {
        raw::write_protect(&self.fd, start, len, protect, false)
            .map_err(|source| UffdError::WriteProtect { start, len, source })
    }

    /// Resolves missing pages at `dst` with a copy of `src` (`UFFDIO_COPY`).
    ///
    /// # Errors
    /// [`UffdError::Map`] with the kernel's answer (`EEXIST`, `ENOMEM` at a cgroup limit).
    pub fn copy(&self, dst: usize, src: &[u8]) -> Result<(), UffdError> {
        raw::copy(&self.fd, dst, src).map_err(|source| UffdError::Map {
            len: src.len(),
            source,
        })
    }

    /// Resolves missing pages with the zero page (`UFFDIO_ZEROPAGE`).
    ///
    /// # Errors
    /// [`UffdError::Map`] with the kernel's answer.
    pub fn zeropage(&self, start: usize, len: usize) -> Result<(), UffdError> {
        raw::zeropage(&self.fd, start, len).map_err(|source| UffdError::Map { len, source })
    }

    /// Wakes threads parked on a range (`UFFDIO_WAKE`).
    ///
    /// # Errors
    /// [`UffdError::Map`] with the kernel's answer.
    pub fn wake(&self, start: usize, len: usize) -> Result<(), UffdError> {
        raw::wake(&self.fd, start, len).map_err(|source| UffdError::Map { len, source })
    }
}

/// A message from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A thread faulted on a registered page and is parked until resolved.
    PageFault {
        /// The access was a write.
        write: bool,
        /// The fault is a write-protect fault (else a missing page).
        write_protect: bool,
        /// The address (exact when `UFFD_FEATURE_EXACT_ADDRESS` is enabled).
        address: usize,
        /// The faulting thread (with `UFFD_FEATURE_THREAD_ID`).
        thread_id: Option<i32>,
    },
    /// A non-cooperative event (`UFFD_EVENT_*`), by number.
    Other(u8),
}

/// What happens to an access the region does not allow (a write to a frozen region, a page
/// past a lazy region's budget), after it was reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WritePolicy {
    /// Report, then allow: the frozen page is unprotected (until [`FrozenRegion::refreeze`])
    /// and the write lands; the budget overrun is served.
    #[default]
    Audit,
    /// Report, then refuse: the thread stays parked in the kernel for good (see the module
    /// docs: in-process refusal cannot stop a thread cleanly).
    Refuse,
}

// ---------------------------------------------------------------------------------------
// The service: one descriptor and one handler thread per process.

#[derive(Default)]
struct Counters {
    reported: AtomicU64,
    parked: Mutex<Vec<(i32, usize)>>,
    populated: AtomicU64,
    thawed: AtomicU64,
}

enum Kind {
    Frozen,
    Lazy { budget: u64, pages: Vec<u64> },
}

struct Entry {
    len: usize,
    kind: Kind,
    policy: WritePolicy,
    context: Option<ContextId>,
    counters: Arc<Counters>,
}

struct Service {
    uffd: Userfaultfd,
    regions: Mutex<BTreeMap<usize, Entry>>,
}

static SERVICE: OnceLock<Result<Service, String>> = OnceLock::new();
static START: Mutex<()> = Mutex::new(());

const WANTED: u32 = UFFD_FEATURE_THREAD_ID
    | UFFD_FEATURE_EXACT_ADDRESS
    | UFFD_FEATURE_WP_HUGETLBFS_SHMEM
    | UFFD_FEATURE_WP_UNPOPULATED;

fn service() -> Result<&'static Service, UffdError> {
    if let Some(s) = SERVICE.get() {
        return s
            .as_ref()
            .map_err(|e| UffdError::StartHandler(io::Error::other(e.clone())));
    }
    let _g = START.lock().unwrap_or_else(|p| p.into_inner());
    if SERVICE.get().is_none() {
        let uffd = Userfaultfd::open(u64::from(WANTED))?;
        if uffd.enabled & u64::from(UFFD_FEATURE_THREAD_ID) == 0 {
            return Err(UffdError::MissingFeature {
                feature: "THREAD_ID",
                hint: "Linux 4.14 or later",
            });
        }
        let _ = SERVICE.set(Ok(Service {
            uffd,
            regions: Mutex::new(BTreeMap::new()),
        }));
        std::thread::Builder::new()
            .name("nebula-uffd".into())
            .spawn(handler_loop)
            .map_err(UffdError::StartHandler)?;
    }
    service()
}

/// The kernel's userfaultfd feature mask as the process-wide service negotiated it
/// (`UFFD_FEATURE_*`), starting the service if needed.
///
/// # Errors
/// As [`Userfaultfd::open`].
pub fn service_features() -> Result<(u64, u64), UffdError> {
    let s = service()?;
    Ok((s.uffd.available_features(), s.uffd.enabled_features()))
}

impl Service {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Entry>> {
        self.regions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn handler_loop() {
    let Some(Ok(svc)) = SERVICE.get() else { return };
    loop {
        match svc.uffd.poll(-1) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                eprintln!("nebula-memory: userfaultfd handler stopped: poll failed: {e}");
                return;
            }
        }
        loop {
            match svc.uffd.read_event() {
                Ok(Some(Event::PageFault {
                    write_protect,
                    address,
                    thread_id,
                    ..
                })) => handle_fault(svc, write_protect, address, thread_id),
                Ok(Some(Event::Other(_))) => {}
                Ok(None) => break,
                Err(e) => {
                    eprintln!("nebula-memory: userfaultfd read failed: {e}");
                    break;
                }
            }
        }
    }
}

fn handle_fault(svc: &Service, write_protect: bool, address: usize, tid: Option<i32>) {
    let page = page_size();
    let page_start = address & !(page - 1);
    let mut regions = svc.lock();
    let Some((&start, entry)) = regions.range_mut(..=address).next_back() else {
        // Raced with an unregister: let the thread retry without us.
        let _ = raw::wake(svc.uffd.fd(), page_start, page);
        return;
    };
    if address >= start + entry.len {
        let _ = raw::wake(svc.uffd.fd(), page_start, page);
        return;
    }
    let report = |kind: ViolationKind| {
        entry.counters.reported.fetch_add(1, Ordering::Relaxed);
        let _ = violation::report(ViolationInfo {
            address: Some(address),
            kind,
            region: Some(start),
            context: entry.context,
            thread_id: tid,
            pid: None,
            timestamp: SystemTime::now(),
        });
    };
    let park = |entry: &Entry| {
        entry
            .counters
            .parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((tid.unwrap_or(0), address));
    };
    match &mut entry.kind {
        Kind::Frozen => {
            if !write_protect {
                // A missing-page fault cannot happen on a WP-only registration; wake anyway.
                let _ = raw::wake(svc.uffd.fd(), page_start, page);
                return;
            }
            report(ViolationKind::WriteToFrozen);
            match entry.policy {
                WritePolicy::Audit => {
                    entry.counters.thawed.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) =
                        raw::write_protect(svc.uffd.fd(), page_start, page, false, false)
                    {
                        eprintln!("nebula-memory: unprotecting {page_start:#x} failed: {e}");
                    }
                }
                WritePolicy::Refuse => park(entry),
            }
        }
        Kind::Lazy { budget, pages } => {
            let index = (page_start - start) / page;
            let (word, bit) = (index / 64, 1u64 << (index % 64));
            let seen = pages[word] & bit != 0;
            let populated = entry.counters.populated.load(Ordering::Relaxed);
            if !seen && populated >= *budget {
                report(ViolationKind::PageBudgetExceeded { budget: *budget });
                if entry.policy == WritePolicy::Refuse {
                    park(entry);
                    return;
                }
            }
            if !seen {
                pages[word] |= bit;
                entry.counters.populated.fetch_add(1, Ordering::Relaxed);
            }
            match raw::zeropage(svc.uffd.fd(), page_start, page) {
                // EEXIST: another thread's fault on the same page was served first.
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    let _ = raw::wake(svc.uffd.fd(), page_start, page);
                }
                Err(e) => {
                    eprintln!("nebula-memory: UFFDIO_ZEROPAGE at {page_start:#x} failed: {e}")
                }
            }
        }
    }
}

fn add_entry(svc: &Service, start: usize, entry: Entry) {
    svc.lock().insert(start, entry);
}

/// Removes a region from the service, unless threads are parked on it (then the region must
/// stay registered and mapped; returns `false`).
fn remove_entry(svc: &Service, start: usize, len: usize, counters: &Counters) -> bool {
    let mut regions = svc.lock();
    let parked = counters
        .parked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len();
    if parked > 0 {
        eprintln!(
            "nebula-memory: region {start:#x} has {parked} parked writer(s); its mapping is kept (unregistering would let the refused writes land)"
        );
        return false;
    }
    // Unregister first (no new faults), then forget the entry.
    if let Err(e) = raw::unregister(svc.uffd.fd(), start, len) {
        eprintln!("nebula-memory: UFFDIO_UNREGISTER of {start:#x} failed: {e}");
    }
    regions.remove(&start);
    true
}

fn page_len(size: usize) -> Result<usize, UffdError> {
    if size == 0 {
        return Err(UffdError::InvalidSize(size));
    }
    crate::region::round_up_to_page(size).ok_or(UffdError::InvalidSize(size))
}

fn bounds(offset: usize, len: usize, size: usize) -> Result<(), UffdError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(UffdError::OutOfBounds { offset, len, size }),
    }
}

// ---------------------------------------------------------------------------------------
// Frozen regions.

/// A region of shared memory (a sealed memfd) whose pages are write-protected with
/// userfaultfd: reads are free, every write is reported with the writer's thread id, then
/// allowed or refused per [`WritePolicy`].
#[derive(Debug)]
pub struct FrozenRegion {
    map: Option<raw::SharedMapping>,
    counters: Arc<Counters>,
    len: usize,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("reported", &self.reported.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl FrozenRegion {
    /// Creates a frozen region holding `contents` (rounded up to pages, zero-filled), owned
    /// by `context` for reports.
    ///
    /// # Errors
    /// [`UffdError::InvalidSize`] for empty contents, [`UffdError::Map`],
    /// [`UffdError::Register`], [`UffdError::WriteProtect`], and the service's errors.
    pub fn new(
        contents: &[u8],
        policy: WritePolicy,
        context: Option<ContextId>,
    ) -> Result<FrozenRegion, UffdError> {
        let svc = service()?;
        if svc.uffd.enabled & u64::from(UFFD_FEATURE_WP_HUGETLBFS_SHMEM) == 0 {
            return Err(UffdError::MissingFeature {
                feature: "WP_HUGETLBFS_SHMEM",
                hint: "Linux 5.19 or later with CONFIG_PTE_MARKER_UFFD_WP",
            });
        }
        let len = page_len(contents.len())?;
        let map = raw::SharedMapping::memfd("nebula-frozen", len)
            .map_err(|source| UffdError::Map { len, source })?;
        // Populate every page (the data, then zeroes) so WP covers all of them even without
        // WP_UNPOPULATED.
        map.copy_in(0, contents)
            .map_err(|source| UffdError::Map { len, source })?;
        map.copy_in(contents.len(), &vec![0; len - contents.len()])
            .map_err(|source| UffdError::Map { len, source })?;
        let start = map.base().addr().get();
        raw::register(
            svc.uffd.fd(),
            start,
            len,
            u64::from(UFFDIO_REGISTER_MODE_WP),
        )
        .map_err(|source| UffdError::Register { start, len, source })?;
        let counters = Arc::new(Counters::default());
        add_entry(
            svc,
            start,
            Entry {
                len,
                kind: Kind::Frozen,
                policy,
                context,
                counters: Arc::clone(&counters),
            },
        );
        let region = FrozenRegion {
            map: Some(map),
            counters,
            len,
        };
        raw::write_protect(svc.uffd.fd(), start, len, true, false)
            .map_err(|source| UffdError::WriteProtect { start, len, source })?;
        Ok(region)
    }

    fn map(&self) -> &raw::SharedMapping {
        // Only Drop takes the mapping out.
        self.map
            .as_ref()
            .expect("a live FrozenRegion has its mapping")
    }

    /// The first byte.
    pub fn start(&self) -> usize {
        self.map().base().addr().get()
    }

    /// Bytes (a page multiple).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Copies out of the region (reads never fault).
    ///
    /// # Errors
    /// [`UffdError::OutOfBounds`].
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), UffdError> {
        bounds(offset, buf.len(), self.len)?;
        self.map()
            .copy_out(offset, buf)
            .map_err(|_| UffdError::OutOfBounds {
                offset,
                len: buf.len(),
                size: self.len,
            })
    }

    /// Writes into the frozen region: this is the violation the region exists to catch. The
    /// calling thread is parked until the handler decides; under [`WritePolicy::Refuse`] it
    /// never returns. For demonstrations and tests.
    ///
    /// # Errors
    /// [`UffdError::OutOfBounds`].
    pub fn write_violating(&self, offset: usize, data: &[u8]) -> Result<(), UffdError> {
        bounds(offset, data.len(), self.len)?;
        self.map()
            .copy_in(offset, data)
            .map_err(|_| UffdError::OutOfBounds {
                offset,
                len: data.len(),
                size: self.len,
            })
    }

    /// Writes reported so far.
    pub fn writes_reported(&self) -> u64 {
        self.counters.reported.load(Ordering::Relaxed)
    }

    /// Threads parked by a refused write, with the address each wrote to.
    pub fn parked_writers(&self) -> Vec<(i32, usize)> {
        self.counters
            .parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Pages unprotected by audited writes since creation or the last refreeze.
    pub fn thawed_pages(&self) -> u64 {
        self.counters.thawed.load(Ordering::Relaxed)
    }

    /// Write-protects the whole region again (after audited writes thawed pages).
    ///
    /// # Errors
    /// [`UffdError::WriteProtect`].
    pub fn refreeze(&self) -> Result<(), UffdError> {
        let svc = service()?;
        let (start, len) = (self.start(), self.len);
        raw::write_protect(svc.uffd.fd(), start, len, true, false)
            .map_err(|source| UffdError::WriteProtect { start, len, source })?;
        self.counters.thawed.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Drops the pages from this mapping (`MADV_DONTNEED`); the contents and the write
    /// protection survive on shmem, which is why frozen regions are memfds.
    ///
    /// # Errors
    /// [`UffdError::Map`] with the `madvise` errno.
    pub fn discard_pages(&self) -> Result<(), UffdError> {
        self.map().discard().map_err(|source| UffdError::Map {
            len: self.len,
            source,
        })
    }
}

impl Drop for FrozenRegion {
    fn drop(&mut self) {
        let Ok(svc) = service() else { return };
        let start = self.start();
        if !remove_entry(svc, start, self.len, &self.counters) {
            // Parked writers: keep the mapping registered forever (see the module docs).
            std::mem::forget(self.map.take());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Lazily populated regions.

/// Anonymous memory populated on first touch by the handler thread (missing mode), with a
/// budget of distinct pages; touching a page past the budget is a
/// [`ViolationKind::PageBudgetExceeded`] violation.
#[derive(Debug)]
pub struct LazyRegion {
    map: Option<Guarded>,
    counters: Arc<Counters>,
    len: usize,
    budget: u64,
}

impl LazyRegion {
    /// Reserves `size` bytes (rounded up to pages) populated lazily, at most `budget_pages`
    /// distinct pages before the budget violation.
    ///
    /// # Errors
    /// [`UffdError::InvalidSize`], [`UffdError::Map`], [`UffdError::Register`], and the
    /// service's errors.
    pub fn new(
        size: usize,
        budget_pages: u64,
        policy: WritePolicy,
        context: Option<ContextId>,
    ) -> Result<LazyRegion, UffdError> {
        let svc = service()?;
        let map = Guarded::reserve(size).map_err(|e| match e {
            GuardedError::InvalidSize => UffdError::InvalidSize(size),
            GuardedError::Map { len, source } => UffdError::Map { len, source },
        })?;
        let len = map.capacity();
        map.protect(0, len, Prot::ReadWrite)
            .map_err(|source| UffdError::Map { len, source })?;
        let start = map.start_addr();
        let counters = Arc::new(Counters::default());
        let pages = len / page_size();
        add_entry(
            svc,
            start,
            Entry {
                len,
                kind: Kind::Lazy {
                    budget: budget_pages,
                    pages: vec![0; pages.div_ceil(64)],
                },
                policy,
                context,
                counters: Arc::clone(&counters),
            },
        );
        if let Err(source) = raw::register(
            svc.uffd.fd(),
            start,
            len,
            u64::from(UFFDIO_REGISTER_MODE_MISSING),
        ) {
            svc.lock().remove(&start);
            return Err(UffdError::Register { start, len, source });
        }
        Ok(LazyRegion {
            map: Some(map),
            counters,
            len,
            budget: budget_pages,
        })
    }

    fn map(&self) -> &Guarded {
        self.map
            .as_ref()
            .expect("a live LazyRegion has its mapping")
    }

    /// The first byte (a guard page lies on each side).
    pub fn start(&self) -> usize {
        self.map().start_addr()
    }

    /// Bytes (a page multiple).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The budget in pages.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Distinct pages populated so far.
    pub fn populated_pages(&self) -> u64 {
        self.counters.populated.load(Ordering::Relaxed)
    }

    /// Budget overruns reported so far.
    pub fn overruns_reported(&self) -> u64 {
        self.counters.reported.load(Ordering::Relaxed)
    }

    /// Threads parked by a refused overrun.
    pub fn parked_threads(&self) -> Vec<(i32, usize)> {
        self.counters
            .parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Copies into the region; first touches of pages fault and are served (or refused).
    ///
    /// # Errors
    /// [`UffdError::OutOfBounds`].
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), UffdError> {
        bounds(offset, data.len(), self.len)?;
        crate::sys::pkey::copy_in(self.map().mapping(), self.map().guard_len() + offset, data)
            .map_err(|_| UffdError::OutOfBounds {
                offset,
                len: data.len(),
                size: self.len,
            })
    }

    /// Copies out of the region; first touches fault like writes.
    ///
    /// # Errors
    /// [`UffdError::OutOfBounds`].
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), UffdError> {
        bounds(offset, buf.len(), self.len)?;
        crate::sys::pkey::copy_out(self.map().mapping(), self.map().guard_len() + offset, buf)
            .map_err(|_| UffdError::OutOfBounds {
                offset,
                len: buf.len(),
                size: self.len,
            })
    }
}

impl Drop for LazyRegion {
    fn drop(&mut self) {
        let Ok(svc) = service() else { return };
        let start = self.start();
        if !remove_entry(svc, start, self.len, &self.counters) {
            std::mem::forget(self.map.take());
        }
    }
}
