//! One guarded mapping, the layout every in-process region shares: usable pages between two
//! `PROT_NONE` guard pages, reserved in one `mmap` and unmapped on drop.
//!
//! ```text
//!  base            base + guard                       base + guard + capacity    base + len
//!   | guard page  |  usable: `size` rounded up to pages  |  guard page  |
//! ```
//!
//! [`MemoryRegion`](super::region::MemoryRegion), sandbox regions, protection-key domain
//! regions and userfaultfd lazy regions are each a [`Guarded`] plus what their mechanism
//! adds (commit on demand, page permissions, a key, a userfaultfd registration). A run off
//! either end lands in a guard page; the regions that register with the violation core
//! ([`Guarded::region_spec`]) have it reported as a guard-page violation.

use std::io;
use std::ops::Range;
use std::ptr::NonNull;

use crate::base::ContextId;
use crate::sys::mm::{Mapping, Prot, page_size};

/// Where the parts of a guarded mapping lie, as byte offsets from its base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The size of each guard page.
    pub(crate) guard: usize,
    /// Usable bytes: the request rounded up to whole pages.
    pub(crate) capacity: usize,
    /// The whole mapping: `capacity` plus both guard pages.
    pub(crate) len: usize,
}

impl Layout {
    /// The layout for `size` usable bytes with pages of `page` bytes (a power of two); `None`
    /// when `size` is 0 or the mapping's length overflows.
    pub(crate) fn new(size: usize, page: usize) -> Option<Layout> {
        debug_assert!(page.is_power_of_two());
        if size == 0 {
            return None;
        }
        let capacity = round_up(size, page)?;
        let len = capacity.checked_add(page.checked_mul(2)?)?;
        Some(Layout {
            guard: page,
            capacity,
            len,
        })
    }

    /// The usable bytes, as offsets from the base.
    pub(crate) fn usable(&self) -> Range<usize> {
        self.guard..self.guard + self.capacity
    }
}

/// Rounds `n` up to a multiple of `page` (a power of two), or `None` on overflow.
pub(crate) fn round_up(n: usize, page: usize) -> Option<usize> {
    n.checked_add(page - 1).map(|v| v & !(page - 1))
}

/// Why a guarded mapping could not be made.
#[derive(Debug)]
pub(crate) enum GuardedError {
    /// The size is 0 or too large to map with its guard pages.
    InvalidSize,
    /// `mmap` refused the reservation.
    Map {
        /// The length asked for.
        len: usize,
        /// The `mmap` error.
        source: io::Error,
    },
}

/// A reserved guarded mapping; everything starts `PROT_NONE`, and its owner opens the
/// usable part with [`Guarded::protect`].
#[derive(Debug)]
pub(crate) struct Guarded {
    map: Mapping,
    layout: Layout,
}

impl Guarded {
    /// Reserves the layout for `size` usable bytes (rounded up to pages), all inaccessible.
    ///
    /// # Errors
    /// [`GuardedError::InvalidSize`] for 0 or an overflowing size; [`GuardedError::Map`]
    /// when the address space or the map count is exhausted.
    pub(crate) fn reserve(size: usize) -> Result<Guarded, GuardedError> {
        let layout = Layout::new(size, page_size()).ok_or(GuardedError::InvalidSize)?;
        let map = Mapping::reserve(layout.len).map_err(|source| GuardedError::Map {
            len: layout.len,
            source,
        })?;
        Ok(Guarded { map, layout })
    }

    /// The mapping, guard pages included (for calls that take offsets from its base).
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// The first usable byte.
    pub(crate) fn start(&self) -> NonNull<u8> {
        // The guard offset lies inside the mapping (len = capacity + 2 guards).
        self.map
            .base()
            .map_addr(|a| a.saturating_add(self.layout.guard))
    }

    /// The first usable byte's address.
    pub(crate) fn start_addr(&self) -> usize {
        self.start().addr().get()
    }

    /// Usable bytes (a page multiple).
    pub(crate) fn capacity(&self) -> usize {
        self.layout.capacity
    }

    /// The size of each guard page.
    pub(crate) fn guard_len(&self) -> usize {
        self.layout.guard
    }

    /// Changes the protection of `offset..offset + len` of the usable part (page aligned).
    ///
    /// # Errors
    /// `EINVAL` for a span that is unaligned or leaves the usable part; the `mprotect` error.
    pub(crate) fn protect(&self, offset: usize, len: usize, prot: Prot) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.layout.capacity => {
                self.map.protect(self.layout.guard + offset, len, prot)
            }
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    /// Whether `addr` falls in one of the two guard pages.
    pub(crate) fn in_guard(&self, addr: usize) -> bool {
        let base = self.map.base().addr().get();
        let usable = self.layout.usable();
        (base..base + self.layout.len).contains(&addr)
            && !(base + usable.start..base + usable.end).contains(&addr)
    }

    /// The violation core's description of this mapping, for
    /// [`violation::register`](super::violation::register).
    pub(crate) fn region_spec(
        &self,
        context: Option<ContextId>,
        sink: Option<super::violation::Sink>,
    ) -> super::violation::RegionSpec {
        let base = self.map.base().addr().get();
        let usable = self.layout.usable();
        super::violation::RegionSpec {
            start: base,
            end: base + self.layout.len,
            usable_start: base + usable.start,
            usable_end: base + usable.end,
            context,
            sink,
            policy: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift generator: the property test needs many sizes, not cryptography.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// As [`next`], for sizes: random bits, so dropping the high half on a 32-bit target is
    /// fine.
    #[allow(clippy::cast_possible_truncation)]
    fn next_usize(state: &mut u64) -> usize {
        next(state) as usize
    }

    #[test]
    fn the_layout_holds_the_request_between_two_guards_for_any_size() {
        let mut rng = 0x9e37_79b9_7f4a_7c15;
        for page in [4096usize, 16384, 65536] {
            for round in 0..20_000 {
                // Small sizes, sizes around page boundaries, and sizes near usize::MAX.
                let size = match round % 4 {
                    0 => next_usize(&mut rng) % (8 * page),
                    1 => page * (next_usize(&mut rng) % 64) + next_usize(&mut rng) % 3,
                    2 => usize::MAX - next_usize(&mut rng) % (4 * page),
                    _ => next_usize(&mut rng),
                };
                let Some(l) = Layout::new(size, page) else {
                    // Refused only for 0, or when the rounded size plus two guards overflows.
                    let fits = size
                        .checked_add(page - 1)
                        .map(|c| c & !(page - 1))
                        .and_then(|c| c.checked_add(2 * page));
                    assert!(size == 0 || fits.is_none(), "size {size} page {page}");
                    continue;
                };
                assert!(size > 0);
                assert_eq!(l.guard, page);
                assert_eq!(l.capacity % page, 0, "size {size}");
                assert!(
                    l.capacity >= size && l.capacity - size < page,
                    "size {size}"
                );
                assert_eq!(l.len, l.capacity + 2 * page);
                let u = l.usable();
                assert_eq!((u.start, u.end), (page, page + l.capacity));
                assert_eq!(l.len - u.end, page, "the trailing guard is one page");
            }
        }
    }

    #[test]
    fn a_reserved_mapping_is_guarded_on_both_sides() {
        let page = page_size();
        let g = Guarded::reserve(page + 1).unwrap();
        assert_eq!(g.capacity(), 2 * page);
        let start = g.start_addr();
        assert!(g.in_guard(start - 1) && g.in_guard(start - page));
        assert!(!g.in_guard(start) && !g.in_guard(start + 2 * page - 1));
        assert!(g.in_guard(start + 2 * page) && g.in_guard(start + 3 * page - 1));
        assert!(!g.in_guard(start + 3 * page) && !g.in_guard(start - page - 1));
        assert!(g.protect(page, page, Prot::ReadWrite).is_ok());
        assert!(
            g.protect(page, 2 * page, Prot::ReadWrite).is_err(),
            "past the usable part"
        );
        assert!(matches!(
            Guarded::reserve(0),
            Err(GuardedError::InvalidSize)
        ));
        assert!(matches!(
            Guarded::reserve(usize::MAX),
            Err(GuardedError::InvalidSize)
        ));
        let spec = g.region_spec(None, None);
        assert_eq!(
            (spec.usable_start, spec.usable_end),
            (start, start + 2 * page)
        );
        assert_eq!((spec.start, spec.end), (start - page, start + 3 * page));
    }
}
