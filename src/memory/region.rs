//! Memory regions: an mmap'd reservation between two guard pages, bump-allocated and
//! committed lazily.
//!
//! ```text
//!  base                                                              base + len
//!  | guard page |  committed (RW)  |  reserved, PROT_NONE  | guard page |
//!  | PROT_NONE  |<-- offset -->    |                       | PROT_NONE  |
//!               ^ start            ^ committed             ^ start + capacity
//! ```
//!
//! The whole reservation starts `PROT_NONE` with `MAP_NORESERVE`, so a region costs address
//! space only. Its owner (an [`IsolatedContext`](crate::isolation::IsolatedContext)) moves a
//! bump pointer (`offset`) with one compare-and-swap; when it crosses the committed boundary,
//! the allocating thread commits the next chunk with `mprotect` (at least [`COMMIT_CHUNK`],
//! doubling), under a mutex that only that slow path takes. Any access before `start`, past `start + capacity`, or past the committed
//! boundary faults: an overrun off the end of a region never lands in a neighbour.
//!
//! Why a bump allocator: a context's memory is released as a whole (reset or drop), which is
//! what isolation wants (nothing of a tenant survives it), and it makes allocation a couple
//! of atomic operations with exact accounting.

use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::guarded::{Guarded, GuardedError};
use crate::sys::mm::{Prot, page_size};

/// The smallest amount committed at once (64 KiB): fewer `mprotect` calls, bounded waste.
pub const COMMIT_CHUNK: usize = 64 * 1024;

/// The alignment every allocation gets at least (like malloc's on x86-64) and the granule
/// in which memory is accounted.
pub const MIN_ALIGN: usize = 16;

/// Rounds `n` up to a multiple of the page size, or `None` on overflow.
pub fn round_up_to_page(n: usize) -> Option<usize> {
    super::guarded::round_up(n, page_size())
}

/// A region: guard page, `capacity` usable bytes, guard page; committed on demand.
#[derive(Debug)]
pub struct MemoryRegion {
    map: Guarded,
    prot: Prot,
    committed: AtomicUsize,
    commit_lock: Mutex<()>,
}

impl MemoryRegion {
    /// Reserves a region of at least `size` usable bytes (rounded up to pages) whose
    /// committed pages get protection `prot`.
    ///
    /// # Errors
    /// The `mmap` error; `EINVAL` when `size` is 0 or overflows.
    pub fn reserve(size: usize, prot: Prot) -> std::io::Result<MemoryRegion> {
        let map = Guarded::reserve(size).map_err(|e| match e {
            GuardedError::InvalidSize => std::io::Error::from_raw_os_error(libc::EINVAL),
            GuardedError::Map { source, .. } => source,
        })?;
        Ok(MemoryRegion {
            map,
            prot,
            committed: AtomicUsize::new(0),
            commit_lock: Mutex::new(()),
        })
    }

    /// The first usable byte (just past the leading guard page).
    pub fn start(&self) -> NonNull<u8> {
        self.map.start()
    }

    /// Usable bytes (a multiple of the page size).
    pub fn capacity(&self) -> usize {
        self.map.capacity()
    }

    /// Bytes currently committed (accessible); the rest of the reservation faults.
    pub fn committed(&self) -> usize {
        self.committed.load(Ordering::Acquire)
    }

    /// The guard page size (one page on each side).
    pub fn guard_len(&self) -> usize {
        self.map.guard_len()
    }

    /// Whether `addr..addr+len` lies inside the usable part of the region.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        let start = self.start().addr().get();
        match (addr.checked_sub(start), addr.checked_add(len)) {
            (Some(_), Some(end)) => end <= start + self.capacity(),
            _ => false,
        }
    }

    /// Whether `addr` falls in one of the two guard pages.
    pub fn in_guard(&self, addr: usize) -> bool {
        self.map.in_guard(addr)
    }

    /// A pointer `offset` bytes past the start (`offset <= capacity`).
    #[inline]
    pub(crate) fn at(&self, offset: usize) -> NonNull<u8> {
        debug_assert!(offset <= self.capacity());
        self.start().map_addr(|a| a.saturating_add(offset))
    }

    /// Makes at least the first `end` bytes accessible; the fast path is one atomic load.
    ///
    /// # Errors
    /// The `mprotect` errno when the kernel refuses (map count or memory).
    #[inline]
    pub(crate) fn ensure_committed(&self, end: usize) -> Result<(), i32> {
        if end <= self.committed.load(Ordering::Acquire) {
            Ok(())
        } else {
            self.commit_to(end)
        }
    }

    #[cold]
    fn commit_to(&self, end: usize) -> Result<(), i32> {
        let _guard = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let have = self.committed.load(Ordering::Acquire);
        if end <= have {
            return Ok(());
        }
        let want = end.max(have.saturating_mul(2)).max(COMMIT_CHUNK);
        let want = round_up_to_page(want)
            .unwrap_or(self.capacity())
            .min(self.capacity());
        self.map
            .protect(have, want - have, self.prot)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOMEM))?;
        self.committed.store(want, Ordering::Release);
        Ok(())
    }

    /// Returns every committed page to the kernel (`MADV_DONTNEED`: the next use sees
    /// zeroes, the memory leaves the process's RSS); they stay committed. The whole committed
    /// range, not the current offset: after a plain reset, pages past the offset may still
    /// hold earlier bytes.
    ///
    /// # Safety
    /// No allocation from this region may still be borrowed: the bytes change to zero
    /// behind `&self` (the owning
    /// [`IsolatedContext::reset_and_release`](crate::isolation::IsolatedContext::reset_and_release)
    /// takes `&mut self`, which proves it for every slice it handed out).
    ///
    /// # Errors
    /// The `madvise` error.
    #[allow(unsafe_code)] // an unsafe door: the caller proves no slice into the region lives
    pub(crate) unsafe fn release(&self) -> std::io::Result<()> {
        // SAFETY: the caller guarantees (this function's contract) that no reference into the
        // committed span is alive.
        unsafe {
            self.map
                .mapping()
                .discard(self.map.guard_len(), self.committed())
        }
    }
}
