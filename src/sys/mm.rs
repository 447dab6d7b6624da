//! Address-space reservations: `mmap`, `mprotect`, `madvise`, `munmap`.

use std::io;
use std::ptr::NonNull;

use rustix::mm::{Advice, MapFlags, MprotectFlags, ProtFlags};

/// Page protections for a range, as `mprotect(2)` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// `PROT_NONE`: any access faults (guard pages, uncommitted reservations).
    None,
    /// `PROT_READ`.
    Read,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
    /// `PROT_READ | PROT_EXEC`.
    ReadExec,
    /// `PROT_READ | PROT_WRITE | PROT_EXEC`.
    ReadWriteExec,
}

impl Prot {
    fn flags(self) -> MprotectFlags {
        match self {
            Prot::None => MprotectFlags::empty(),
            Prot::Read => MprotectFlags::READ,
            Prot::ReadWrite => MprotectFlags::READ | MprotectFlags::WRITE,
            Prot::ReadExec => MprotectFlags::READ | MprotectFlags::EXEC,
            Prot::ReadWriteExec => MprotectFlags::READ | MprotectFlags::WRITE | MprotectFlags::EXEC,
        }
    }
}

/// The system page size (`sysconf(_SC_PAGESIZE)`), read once.
pub fn page_size() -> usize {
    rustix::param::page_size()
}

/// A private anonymous mapping of `len` bytes that this value owns, unmapped on drop.
///
/// The mapping starts `PROT_NONE` with `MAP_NORESERVE`: it costs address space only, and
/// no memory until a range is made accessible with [`Mapping::protect`] and touched.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is a plain range of this process's address space; the pointer is never
// dereferenced by Mapping itself, so moving or sharing the owner between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` gives out only the base address and the length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Reserves `len` bytes of address space, inaccessible (`PROT_NONE`, `MAP_NORESERVE`).
    ///
    /// # Errors
    /// `ENOMEM` when the address space or the map count (`vm.max_map_count`) is exhausted;
    /// `EINVAL` when `len` is 0.
    ///
    /// # References
    /// mmap(2).
    pub fn reserve(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping with a null hint cannot alias any existing Rust object;
        // the kernel picks the address and we own the result exclusively.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }?;
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Mapping { base, len })
    }

    /// The first byte of the mapping.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    fn check_range(&self, offset: usize, len: usize) -> io::Result<()> {
        let page = page_size();
        let end = offset
            .checked_add(len)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        if end > self.len || offset % page != 0 || len % page != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    /// Changes the protection of `offset..offset+len` (page aligned, inside the mapping).
    ///
    /// # Errors
    /// `EINVAL` for an unaligned or out-of-range span; `ENOMEM` when the kernel cannot split
    /// the mapping (map count limit).
    ///
    /// # References
    /// mprotect(2).
    pub fn protect(&self, offset: usize, len: usize, prot: Prot) -> io::Result<()> {
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: check_range proved offset..offset+len lies inside the mapping this value
        // owns; changing protections never invalidates Rust references because the only
        // code that hands out pointers into the mapping (the region allocator) documents
        // that accesses outside committed ranges fault.
        unsafe { rustix::mm::mprotect(self.base.as_ptr().add(offset).cast(), len, prot.flags()) }?;
        Ok(())
    }

    /// Gives the pages of `offset..offset+len` back to the kernel (`MADV_DONTNEED`): the
    /// next touch sees zero-filled pages. Protections stay as they are.
    ///
    /// # Safety
    /// No reference into `offset..offset+len` may be alive: the bytes change to zero behind
    /// `&self`. The owner of the mapping proves it (an exclusive borrow of whatever handed
    /// out references into the span, or the end of every such borrow).
    ///
    /// # Errors
    /// `EINVAL` for an unaligned or out-of-range span.
    ///
    /// # References
    /// madvise(2).
    pub unsafe fn discard(&self, offset: usize, len: usize) -> io::Result<()> {
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the span is inside our private anonymous mapping (check_range), and the
        // caller guarantees (this function's contract) that no live reference observes the
        // contents changing to zero.
        unsafe {
            rustix::mm::madvise(
                self.base.as_ptr().add(offset).cast(),
                len,
                Advice::LinuxDontNeed,
            )
        }?;
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base..base+len is the mapping created by `reserve` and owned by self;
        // Drop runs once, after every borrow of the owner has ended.
        let r = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
        // munmap of a range we mapped cannot fail short of a kernel bug; refusing to go on
        // with isolated memory still mapped is the safe answer (Firecracker does the same).
        if let Err(e) = r {
            eprintln!("nebula-memory: munmap of an isolated region failed: {e}; aborting");
            std::process::abort();
        }
    }
}

/// Turns a fresh allocation into a slice borrowed from its owner.
///
/// # Safety
/// `ptr..ptr + len` must be a span that was just allocated from memory that `owner` keeps
/// mapped and committed read-write for as long as it is borrowed, and that no other live
/// reference overlaps (the region allocator hands each span out once).
#[allow(clippy::mut_from_ref)] // a fresh, disjoint span each call; see the contract above
pub(crate) unsafe fn slice_of<T: ?Sized>(ptr: NonNull<u8>, len: usize, _owner: &T) -> &mut [u8] {
    // SAFETY: by this function's contract the span is mapped read-write while `_owner` is
    // borrowed and no other reference overlaps it; u8 has no invalid values, so the bytes
    // (zero-filled or written before) are a valid `[u8]`.
    unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), len) }
}
