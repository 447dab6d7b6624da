//! `MemorySandbox`: regions with page permissions and guard pages, `check_access`, and a
//! violation handler.
//!
//! ```text
//!   mapping start                                                       mapping end
//!   | guard page |        usable: size rounded up to pages          | guard page |
//!   | PROT_NONE  |  PROT_NONE / READ / READ|WRITE / READ|EXEC       | PROT_NONE  |
//!                ^ SandboxRegion::start()                           ^ start() + len()
//! ```
//!
//! Each region is one private anonymous mapping (`sys::mm::Mapping`, the crate's one mmap owner):
//! its permissions are page protections the MMU enforces, so an access outside them faults.
//! The region is registered with the violation core ([`crate::violation`]), which turns
//! the fault into a [`ViolationInfo`] naming the address, the region, its owner and the
//! thread, runs the sandbox's handler on the delivery thread, then aborts (fail-stop: a
//! guard hit or a protection fault cannot be "allowed"). Faults on memory that is not a
//! nebula region go to the previous SIGSEGV action as if nebula were not there.
//!
//! Access goes through copies ([`SandboxRegion::read`], [`SandboxRegion::write`]), which
//! check the permissions first and return an error instead of faulting, or through the raw
//! address ([`SandboxRegion::start`]) for code that wants the MMU to be the check. No Rust
//! reference into the region is handed out: its permissions may change under it.
//!
//! Permissions map to protections like `mprotect`: `EXECUTE` without `READ` still gives
//! `PROT_READ|PROT_EXEC` (x86 has no execute-only pages except through a protection key,
//! which `mprotect(PROT_EXEC)` would silently take from the process's 15).
//!
//! ```
//! use nebula_memory::isolation::{MemoryIsolation, Permissions};
//! use nebula_memory::sandbox::MemorySandbox;
//!
//! let iso = MemoryIsolation::new();
//! let owner = iso.create_context().build()?;
//! let sandbox = MemorySandbox::new(owner.id());
//! let region = sandbox.create_region(8192, Permissions::READ | Permissions::WRITE)?;
//! region.write(0, b"hello")?;
//! region.set_permissions(Permissions::READ)?;
//! assert!(region.write(0, b"x").is_err()); // refused before it could fault
//! let inside = region.start().as_ptr() as usize;
//! assert!(sandbox.check_access(inside, 5).is_ok());
//! assert!(sandbox.check_access(inside - 1, 1).is_err()); // the leading guard page
//! # Ok::<(), nebula_memory::IsolationError>(())
//! ```

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::guarded::{Guarded, GuardedError};
use crate::base::{ContextId, Permissions};
use crate::error::{IsolationError, Result};
use crate::sys::mm::Prot;
use crate::violation::{self, Registration, Sink, ViolationInfo};

fn prot_of(p: Permissions) -> Prot {
    let (w, x) = (
        p.contains(Permissions::WRITE),
        p.contains(Permissions::EXECUTE),
    );
    match (p.is_empty(), w, x) {
        (true, _, _) => Prot::None,
        (false, false, false) => Prot::Read,
        (false, true, false) => Prot::ReadWrite,
        (false, false, true) => Prot::ReadExec,
        (false, true, true) => Prot::ReadWriteExec,
    }
}

/// An address [`MemorySandbox::check_access`] takes: `usize`, `*const u8`, `*mut u8` or
/// `NonNull<u8>`. Sealed.
pub trait SandboxAddress: sealed::Sealed {
    /// The address as a number.
    fn addr(self) -> usize;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for usize {}
    impl Sealed for *const u8 {}
    impl Sealed for *mut u8 {}
    impl Sealed for std::ptr::NonNull<u8> {}
}

impl SandboxAddress for usize {
    fn addr(self) -> usize {
        self
    }
}

impl SandboxAddress for *const u8 {
    fn addr(self) -> usize {
        // The pointer's inherent `addr` (inherent methods win over this trait's).
        self.addr()
    }
}

impl SandboxAddress for *mut u8 {
    fn addr(self) -> usize {
        self.addr()
    }
}

impl SandboxAddress for NonNull<u8> {
    fn addr(self) -> usize {
        self.as_ptr().addr()
    }
}

/// A set of regions with one owner and one violation handler.
pub struct MemorySandbox {
    owner: ContextId,
    sink: Sink,
    regions: Mutex<Vec<Weak<Inner>>>,
}

/// One region of a sandbox: usable pages between two `PROT_NONE` guard pages. Unmapped on
/// drop (after it left the violation registry).
#[derive(Debug)]
pub struct SandboxRegion {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // Declared before `map`: leaves the registry before the memory is unmapped.
    registration: Registration,
    map: Guarded,
    owner: ContextId,
    perms: AtomicU8,
    prot_lock: Mutex<()>,
}

impl Inner {
    fn start(&self) -> usize {
        self.map.start_addr()
    }
    fn perms(&self) -> Permissions {
        Permissions::from_bits_truncate(self.perms.load(Ordering::Acquire))
    }
}

impl std::fmt::Debug for MemorySandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("MemorySandbox")
            .field("owner", &self.owner)
            .field(
                "regions",
                &regions.iter().filter(|w| w.strong_count() > 0).count(),
            )
            .finish_non_exhaustive()
    }
}

impl MemorySandbox {
    /// A sandbox whose regions belong to `owner` (reports name it).
    pub fn new(owner: ContextId) -> MemorySandbox {
        MemorySandbox {
            owner,
            sink: Arc::new(Mutex::new(None)),
            regions: Mutex::new(Vec::new()),
        }
    }

    /// The owner of regions made with [`create_region`](Self::create_region).
    pub fn owner(&self) -> ContextId {
        self.owner
    }

    /// Maps a region of at least `size` bytes (rounded up to pages) between two guard pages,
    /// with `perms`, owned by this sandbox's owner.
    ///
    /// # Errors
    /// [`IsolationError::InvalidConfig`] for a size of 0 or one that overflows, or when the
    /// violation registry is full; [`IsolationError::System`] when `mmap`/`mprotect` fail.
    pub fn create_region(&self, size: usize, perms: Permissions) -> Result<SandboxRegion> {
        self.create_region_for(self.owner, size, perms)
    }

    /// Like [`create_region`](Self::create_region), with another owner.
    ///
    /// # Errors
    /// As [`create_region`](Self::create_region).
    pub fn create_region_for(
        &self,
        owner: ContextId,
        size: usize,
        perms: Permissions,
    ) -> Result<SandboxRegion> {
        let map = Guarded::reserve(size).map_err(|e| match e {
            GuardedError::InvalidSize => {
                IsolationError::InvalidConfig(format!("sandbox region size {size} is invalid"))
            }
            GuardedError::Map { len, source } => {
                IsolationError::system(format!("mmap of a {len}-byte sandbox region"), source)
            }
        })?;
        map.protect(0, map.capacity(), prot_of(perms))
            .map_err(|e| IsolationError::system("mprotect of a sandbox region", e))?;
        let registration =
            violation::register(map.region_spec(Some(owner), Some(Arc::clone(&self.sink))))?;
        let inner = Arc::new(Inner {
            registration,
            map,
            owner,
            perms: AtomicU8::new(perms.bits()),
            prot_lock: Mutex::new(()),
        });
        let mut regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        regions.retain(|w| w.strong_count() > 0);
        regions.push(Arc::downgrade(&inner));
        Ok(SandboxRegion { inner })
    }

    /// Sets the handler for violations in this sandbox's regions. For a fault it runs on the
    /// violation delivery thread, before the process aborts (fail-stop); for a refusal of
    /// [`check_access`](Self::check_access) on the calling thread, and the caller goes on.
    /// Replaces the previous one.
    pub fn set_violation_handler(&self, handler: impl Fn(&ViolationInfo) + Send + Sync + 'static) {
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(handler));
    }

    /// Checks whether `size` bytes at `ptr` lie inside one region of this sandbox whose
    /// permissions allow some access, without touching them. `ptr` is an address or a
    /// pointer (`usize`, `*const u8`, `*mut u8`, `NonNull<u8>`).
    ///
    /// A refusal is also reported, as the seed has it, to the handler set with
    /// [`set_violation_handler`](Self::set_violation_handler): synchronously, on the calling
    /// thread, with [`ViolationKind::AccessCheck`](crate::violation::ViolationKind::AccessCheck)
    /// and the sandbox's owner as the context. Nothing was touched, so nothing aborts.
    ///
    /// # Errors
    /// [`IsolationError::AccessViolation`] naming why: outside every region, in a guard page,
    /// crossing a region's end, or a region whose permissions are none.
    pub fn check_access(&self, ptr: impl SandboxAddress, size: usize) -> Result<()> {
        let ptr = ptr.addr();
        let Err(e) = self.check_span(ptr, size) else {
            return Ok(());
        };
        let handler = self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let (Some(handler), IsolationError::AccessViolation { reason, .. }) = (handler, &e) {
            handler(&ViolationInfo {
                address: Some(ptr),
                kind: crate::violation::ViolationKind::AccessCheck {
                    reason: reason.clone(),
                },
                region: None,
                context: Some(self.owner),
                thread_id: Some(rustix::thread::gettid().as_raw_nonzero().get()),
                pid: None,
                timestamp: std::time::SystemTime::now(),
            });
        }
        Err(e)
    }

    fn check_span(&self, ptr: usize, size: usize) -> Result<()> {
        let deny = |reason: String| IsolationError::AccessViolation {
            address: ptr,
            reason,
        };
        let end = ptr
            .checked_add(size)
            .ok_or_else(|| deny(format!("{size} bytes at {ptr:#x} wrap around")))?;
        let regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        for r in regions.iter().filter_map(Weak::upgrade) {
            let (start, cap, guard) = (r.start(), r.map.capacity(), r.map.guard_len());
            let (lo, hi) = (start - guard, start + cap + guard);
            if !(lo..hi).contains(&ptr) {
                continue;
            }
            if ptr < start {
                return Err(deny(format!(
                    "in the guard page before region {start:#x} ({})",
                    r.owner
                )));
            }
            if ptr >= start + cap {
                return Err(deny(format!(
                    "in the guard page after region {start:#x} ({})",
                    r.owner
                )));
            }
            if end > start + cap {
                return Err(deny(format!(
                    "{size} bytes cross the end of region {start:#x} ({}) at {:#x}",
                    r.owner,
                    start + cap
                )));
            }
            if r.perms().is_empty() {
                return Err(deny(format!(
                    "region {start:#x} ({}) has permissions none",
                    r.owner
                )));
            }
            return Ok(());
        }
        Err(deny("outside every region of this sandbox".into()))
    }
}

impl SandboxRegion {
    /// The first usable byte (just past the leading guard page).
    pub fn start(&self) -> NonNull<u8> {
        self.inner.map.start()
    }

    /// One past the last usable byte: the first byte of the trailing guard page.
    pub fn end(&self) -> NonNull<u8> {
        self.start()
            .map_addr(|a| a.saturating_add(self.inner.map.capacity()))
    }

    /// Usable bytes (a multiple of the page size).
    pub fn len(&self) -> usize {
        self.inner.map.capacity()
    }

    /// Always `false`: a region has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The size of each guard page.
    pub fn guard_len(&self) -> usize {
        self.inner.map.guard_len()
    }

    /// The owner.
    pub fn owner(&self) -> ContextId {
        self.inner.owner
    }

    /// The current permissions.
    pub fn permissions(&self) -> Permissions {
        self.inner.perms()
    }

    /// Changes the permissions of the whole region (`mprotect`).
    ///
    /// # Errors
    /// [`IsolationError::System`] when `mprotect` fails.
    pub fn set_permissions(&self, perms: Permissions) -> Result<()> {
        let _g = self
            .inner
            .prot_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Narrowing: record first, so a concurrent `write` that passed its check can only
        // fault (and be reported), never succeed past the change.
        self.inner.perms.store(perms.bits(), Ordering::Release);
        self.inner
            .map
            .protect(0, self.inner.map.capacity(), prot_of(perms))
            .map_err(|e| IsolationError::system("mprotect of a sandbox region", e))
    }

    /// Whether `addr..addr+len` lies in the usable part.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        let start = self.inner.start();
        addr >= start
            && addr
                .checked_add(len)
                .is_some_and(|e| e <= start + self.inner.map.capacity())
    }

    fn check(&self, offset: usize, len: usize, needed: Permissions) -> Result<()> {
        if offset
            .checked_add(len)
            .is_none_or(|e| e > self.inner.map.capacity())
        {
            return Err(IsolationError::AccessViolation {
                address: self.inner.start().wrapping_add(offset),
                reason: format!(
                    "{len} bytes at offset {offset} exceed the region of {}",
                    self.inner.map.capacity()
                ),
            });
        }
        if !self.permissions().contains(needed) {
            return Err(IsolationError::PermissionDenied {
                context: self.inner.owner,
                operation: if needed == Permissions::WRITE {
                    "write to a sandbox region"
                } else {
                    "read from a sandbox region"
                },
                needed: if needed == Permissions::WRITE {
                    "WRITE"
                } else {
                    "READ"
                },
            });
        }
        Ok(())
    }

    /// Copies `data` into the region at `offset` after checking bounds and `WRITE`.
    ///
    /// # Errors
    /// [`IsolationError::AccessViolation`] out of bounds, [`IsolationError::PermissionDenied`]
    /// without `WRITE`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len(), Permissions::WRITE)?;
        crate::sys::pkey::copy_in(
            self.inner.map.mapping(),
            self.inner.map.guard_len() + offset,
            data,
        )
        .map_err(|e| IsolationError::system("copy into a sandbox region", e))
    }

    /// Copies from the region at `offset` into `buf` after checking bounds and `READ`.
    ///
    /// # Errors
    /// As [`write`](Self::write), with `READ`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len(), Permissions::READ)?;
        crate::sys::pkey::copy_out(
            self.inner.map.mapping(),
            self.inner.map.guard_len() + offset,
            buf,
        )
        .map_err(|e| IsolationError::system("copy out of a sandbox region", e))
    }

    /// Copies raw bytes in at `offset` without checking the permissions: the MMU decides,
    /// and a refused access is a violation (reported, then fail-stop). For demonstrating and
    /// testing enforcement; ordinary code uses [`write`](Self::write).
    ///
    /// # Errors
    /// [`IsolationError::AccessViolation`] when the span leaves the whole mapping.
    pub fn write_unchecked(&self, offset: isize, data: &[u8]) -> Result<()> {
        let at = (self.inner.map.guard_len() as isize)
            .checked_add(offset)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| IsolationError::AccessViolation {
                address: self.inner.start().wrapping_add_signed(offset),
                reason: "before the region's mapping".into(),
            })?;
        crate::sys::pkey::copy_in(self.inner.map.mapping(), at, data).map_err(|_| {
            IsolationError::AccessViolation {
                address: self.inner.start().wrapping_add_signed(offset),
                reason: "beyond the region's mapping".into(),
            }
        })
    }

    /// The violation-registry entry (for layers built on sandbox regions).
    #[allow(dead_code)]
    pub(crate) fn registration(&self) -> &Registration {
        &self.inner.registration
    }
}
