//! Protection keys on x86-64: the real implementation (see the parent module's docs).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::types::{DomainId, PkeyError, PkruValue, Rights, Unsupported};
use crate::base::ContextId;
use crate::memory::guarded::{Guarded, GuardedError};
use crate::sys::mm::{Mapping, Prot};
use crate::sys::pkey as sys;
use crate::sys::pkru::Pkru;
use crate::violation::{self, Registration};

/// Proof that this thread can use protection keys: the CPU has PKU, the kernel enabled it
/// and `pkey_alloc` works (the probe's answer). Functions that need keys take `&Pkeys`.
#[derive(Clone, Copy, Debug)]
pub struct Pkeys {
    pkru: Pkru,
}

impl Pkeys {
    /// Checks once (through [`crate::features`]) whether protection keys work here.
    ///
    /// # Errors
    /// [`Unsupported`] with the probe's reason.
    pub fn probe() -> Result<Pkeys, Unsupported> {
        let f = &crate::features().pkeys;
        if !f.available {
            return Err(Unsupported {
                reason: f
                    .reason
                    .clone()
                    .unwrap_or_else(|| "the probe found no protection keys".into()),
            });
        }
        Pkru::detect()
            .map(|pkru| Pkeys { pkru })
            .ok_or_else(|| Unsupported {
                reason: "CPUID says the OS did not enable PKU (OSPKE clear)".into(),
            })
    }

    /// Allocates a key; `rights` apply to the calling thread only (other threads keep what
    /// their PKRU says, which denies every key but 0 by default).
    ///
    /// # Errors
    /// [`PkeyError::Alloc`] (`ENOSPC` when all 15 are taken), [`PkeyError::KeyZero`].
    pub fn alloc(&self, rights: Rights) -> Result<Pkey, PkeyError> {
        let id = sys::pkey_alloc(rights.bits()).map_err(PkeyError::Alloc)?;
        if id == 0 {
            // Someone freed key 0; handing it out would let us retag everyone's memory.
            return Err(PkeyError::KeyZero);
        }
        Ok(Pkey {
            id,
            tagged: AtomicUsize::new(0),
        })
    }

    /// The calling thread's PKRU (`RDPKRU`, about 3 ns).
    #[inline]
    pub fn pkru(&self) -> PkruValue {
        PkruValue(self.pkru.read())
    }

    /// Sets the calling thread's PKRU (`WRPKRU`, about 15 ns). Key 0's bits are always
    /// cleared: key 0 is never denied (stack, TLS, glibc's rseq area).
    #[inline]
    pub fn set_pkru(&self, value: PkruValue) {
        self.pkru.write(value.0);
    }
}

/// An allocated protection key, freed on drop — only when no page carries it any more (the
/// kernel does not check, and a later `pkey_alloc` would hand the key, with those pages, to
/// someone else). A key still carried by pages is leaked, with a message on stderr.
#[derive(Debug)]
pub struct Pkey {
    id: u32,
    /// Live ranges tagged with this key.
    tagged: AtomicUsize,
}

impl Pkey {
    /// The key number (1..=15).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// How many live ranges carry this key.
    pub fn tagged_ranges(&self) -> usize {
        self.tagged.load(Ordering::Acquire)
    }
}

impl Drop for Pkey {
    fn drop(&mut self) {
        let n = self.tagged.load(Ordering::Acquire);
        if n != 0 {
            eprintln!(
                "nebula-memory: protection key {} is still carried by {n} range(s); not freeing it",
                self.id
            );
            return;
        }
        if let Err(e) = sys::pkey_free(self.id) {
            eprintln!("nebula-memory: pkey_free({}) failed: {e}", self.id);
        }
    }
}

const NO_KEY: u32 = u32::MAX;

/// A set of domains sharing a pool of hardware keys, virtualized when the pool runs out.
#[derive(Clone, Debug)]
pub struct DomainSet {
    inner: Arc<SetInner>,
}

#[derive(Debug)]
struct SetInner {
    pkeys: Pkeys,
    state: Mutex<SetState>,
    /// Both PKRU bits of every key this set holds (the domain keys and the sealed key).
    managed: AtomicU32,
    max_keys: usize,
    evictions: AtomicU64,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct SetState {
    /// The key no thread ever opens: evicted domains' pages carry it.
    sealed: Option<Arc<Pkey>>,
    slots: Vec<KeySlot>,
    hand: usize,
    exhausted: bool,
}

#[derive(Debug)]
struct KeySlot {
    key: Arc<Pkey>,
    owner: Option<Weak<DomainInner>>,
}

impl KeySlot {
    fn owner(&self) -> Option<Arc<DomainInner>> {
        self.owner.as_ref().and_then(Weak::upgrade)
    }
}

/// A protection domain: a (virtual) key and the regions it guards. Threads get access by
/// entering it ([`Domain::enter`]); everyone else faults.
#[derive(Debug)]
pub struct Domain {
    inner: Arc<DomainInner>,
}

#[derive(Debug)]
struct DomainInner {
    id: DomainId,
    set: Arc<SetInner>,
    /// The hardware key, or NO_KEY while evicted.
    key: AtomicU32,
    /// Threads inside (pinning the key).
    active: AtomicU32,
    /// CLOCK reference bit.
    referenced: AtomicBool,
    regions: Mutex<Vec<Weak<RegionInner>>>,
    context: Option<ContextId>,
}

/// A region of a domain: usable pages between two guard pages, tagged with the domain's
/// key (or the sealed key while the domain is evicted). Unmapped on drop.
#[derive(Debug)]
pub struct DomainRegion {
    inner: Arc<RegionInner>,
}

#[derive(Debug)]
struct RegionInner {
    registration: Option<Registration>,
    map: Option<Guarded>,
    guard: usize,
    capacity: usize,
    domain: Arc<DomainInner>,
    /// The key the pages carry now.
    carried: Mutex<Option<Arc<Pkey>>>,
}

/// Inside a domain on this thread; leaving (drop) restores the PKRU found at entry.
#[derive(Debug)]
pub struct DomainGuard<'a> {
    domain: &'a Domain,
    previous: PkruValue,
    /// PKRU is per thread: the guard must be dropped where it was made.
    _not_send: std::marker::PhantomData<*const ()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DomainSet {
    /// A set that takes hardware keys as it needs them (at most 15, fewer if other code in
    /// the process holds some); one is kept as the sealed key for evicted domains.
    pub fn new(pkeys: &Pkeys) -> DomainSet {
        DomainSet::with_max_keys(pkeys, 16)
    }

    /// Like [`new`](Self::new), using at most `max_keys` hardware keys for domains (at least
    /// 1), plus the sealed key. Small values exercise virtualization.
    pub fn with_max_keys(pkeys: &Pkeys, max_keys: usize) -> DomainSet {
        DomainSet {
            inner: Arc::new(SetInner {
                pkeys: *pkeys,
                state: Mutex::new(SetState {
                    sealed: None,
                    slots: Vec::new(),
                    hand: 0,
                    exhausted: false,
                }),
                managed: AtomicU32::new(0),
                max_keys: max_keys.max(1),
                evictions: AtomicU64::new(0),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Creates a domain (no key yet: it gets one when first entered or given a region).
    pub fn create_domain(&self, context: Option<ContextId>) -> Domain {
        let id = DomainId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        Domain {
            inner: Arc::new(DomainInner {
                id,
                set: Arc::clone(&self.inner),
                key: AtomicU32::new(NO_KEY),
                active: AtomicU32::new(0),
                referenced: AtomicBool::new(false),
                regions: Mutex::new(Vec::new()),
                context,
            }),
        }
    }

    /// Hardware keys this set holds for domains (not counting the sealed key).
    pub fn hardware_keys(&self) -> usize {
        lock(&self.inner.state).slots.len()
    }

    /// Evictions so far (each retagged a domain's pages to the sealed key).
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// The sealed key's number, once allocated.
    pub fn sealed_key(&self) -> Option<u32> {
        lock(&self.inner.state).sealed.as_ref().map(|k| k.id())
    }

    /// The PKRU bits of every key this set holds: a thread outside all domains has them all
    /// set.
    pub fn managed_mask(&self) -> u32 {
        self.inner.managed.load(Ordering::Acquire)
    }

    /// The token.
    pub fn pkeys(&self) -> &Pkeys {
        &self.inner.pkeys
    }
}

impl SetInner {
    fn alloc_key(&self, st: &mut SetState) -> Result<Option<Arc<Pkey>>, PkeyError> {
        if st.exhausted {
            return Ok(None);
        }
        match self.pkeys.alloc(Rights::NoAccess) {
            Ok(k) => {
                self.managed
                    .fetch_or(0b11 << (2 * k.id()), Ordering::AcqRel);
                Ok(Some(Arc::new(k)))
            }
            Err(PkeyError::Alloc(e)) if e.raw_os_error() == Some(libc::ENOSPC) => {
                st.exhausted = true;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn sealed(&self, st: &mut SetState) -> Result<Arc<Pkey>, PkeyError> {
        if let Some(k) = &st.sealed {
            return Ok(Arc::clone(k));
        }
        let k = self
            .alloc_key(st)?
            .ok_or(PkeyError::NoKeyAvailable { keys: 0 })?;
        st.sealed = Some(Arc::clone(&k));
        Ok(k)
    }

    /// Gives `d` a hardware key (slow path of entering, under the state lock).
    fn assign(&self, d: &Arc<DomainInner>) -> Result<u32, PkeyError> {
        let mut st = lock(&self.state);
        let k = d.key.load(Ordering::SeqCst);
        if k != NO_KEY {
            return Ok(k);
        }
        let sealed = self.sealed(&mut st)?;
        let idx = match st.slots.iter().position(|s| s.owner().is_none()) {
            Some(i) => i,
            None => {
                let fresh = if st.slots.len() < self.max_keys {
                    self.alloc_key(&mut st)?
                } else {
                    None
                };
                match fresh {
                    Some(key) => {
                        st.slots.push(KeySlot { key, owner: None });
                        st.slots.len() - 1
                    }
                    None => self.evict(&mut st, &sealed)?,
                }
            }
        };
        let key = Arc::clone(&st.slots[idx].key);
        retag_domain(d, &key)?;
        st.slots[idx].owner = Some(Arc::downgrade(d));
        d.key.store(key.id(), Ordering::SeqCst);
        Ok(key.id())
    }

    /// Frees a slot by evicting the least recently used unpinned domain (CLOCK).
    fn evict(&self, st: &mut SetState, sealed: &Arc<Pkey>) -> Result<usize, PkeyError> {
        let n = st.slots.len();
        if n == 0 {
            return Err(PkeyError::NoKeyAvailable { keys: 0 });
        }
        for _ in 0..3 * n {
            let i = st.hand % n;
            st.hand = (i + 1) % n;
            let Some(victim) = st.slots[i].owner() else {
                return Ok(i);
            };
            if victim.referenced.swap(false, Ordering::Relaxed) {
                continue;
            }
            let k = st.slots[i].key.id();
            // Dekker with `pin`: unpublish the key, then look for threads inside.
            victim.key.store(NO_KEY, Ordering::SeqCst);
            if victim.active.load(Ordering::SeqCst) > 0 {
                victim.key.store(k, Ordering::SeqCst);
                continue;
            }
            if let Err(e) = retag_domain(&victim, sealed) {
                victim.key.store(k, Ordering::SeqCst);
                return Err(e);
            }
            st.slots[i].owner = None;
            self.evictions.fetch_add(1, Ordering::Relaxed);
            return Ok(i);
        }
        Err(PkeyError::NoKeyAvailable { keys: n })
    }
}

/// Retags every live region of `d` to `key` (under the set's state lock).
fn retag_domain(d: &DomainInner, key: &Arc<Pkey>) -> Result<(), PkeyError> {
    let regions: Vec<Arc<RegionInner>> = {
        let mut list = lock(&d.regions);
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    };
    for r in regions {
        r.tag(key)?;
    }
    Ok(())
}

impl RegionInner {
    fn map(&self) -> &Mapping {
        self.map
            .as_ref()
            .expect("a live region has its mapping")
            .mapping()
    }

    /// Tags the usable pages with `key` and moves the carried-by count.
    fn tag(&self, key: &Arc<Pkey>) -> Result<(), PkeyError> {
        let mut carried = lock(&self.carried);
        if carried.as_ref().is_some_and(|k| Arc::ptr_eq(k, key)) {
            return Ok(());
        }
        sys::pkey_mprotect(
            self.map(),
            self.guard,
            self.capacity,
            Prot::ReadWrite,
            key.id() as i32,
        )
        .map_err(|source| PkeyError::Tag {
            addr: self.map().base().addr().get() + self.guard,
            len: self.capacity,
            key: key.id() as i32,
            source,
        })?;
        key.tagged.fetch_add(1, Ordering::AcqRel);
        if let Some(old) = carried.replace(Arc::clone(key)) {
            old.tagged.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }
}

impl Drop for RegionInner {
    fn drop(&mut self) {
        // Leave the registry, unmap, and only then stop counting the pages on their key.
        drop(self.registration.take());
        drop(self.map.take());
        if let Some(k) = lock(&self.carried).take() {
            k.tagged.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl DomainInner {
    /// Pins a hardware key for a thread entering the domain.
    #[inline]
    fn pin(self: &Arc<Self>) -> Result<u32, PkeyError> {
        self.active.fetch_add(1, Ordering::SeqCst);
        let mut k = self.key.load(Ordering::SeqCst);
        if k == NO_KEY {
            k = match self.set.assign(self) {
                Ok(k) => k,
                Err(e) => {
                    self.active.fetch_sub(1, Ordering::SeqCst);
                    return Err(e);
                }
            };
        }
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
        Ok(k)
    }

    #[inline]
    fn unpin(&self) {
        self.active.fetch_sub(1, Ordering::Release);
    }
}

impl Domain {
    /// The domain's id.
    pub fn id(&self) -> DomainId {
        self.inner.id
    }

    /// The owning context, if any.
    pub fn context(&self) -> Option<ContextId> {
        self.inner.context
    }

    /// The hardware key it holds now (`None` while evicted).
    pub fn current_key(&self) -> Option<u32> {
        let k = self.inner.key.load(Ordering::Acquire);
        (k != NO_KEY).then_some(k)
    }

    /// Maps a region of at least `size` bytes (rounded up to pages) between guard pages,
    /// read-write, tagged with this domain's key. Accessible only to threads inside the
    /// domain; an access from outside is a `SEGV_PKUERR` violation.
    ///
    /// # Errors
    /// [`PkeyError::InvalidSize`], [`PkeyError::Map`], [`PkeyError::Tag`],
    /// [`PkeyError::NoKeyAvailable`], [`PkeyError::Register`].
    pub fn alloc_region(&self, size: usize) -> Result<DomainRegion, PkeyError> {
        let map = Guarded::reserve(size).map_err(|e| match e {
            GuardedError::InvalidSize => PkeyError::InvalidSize(size),
            GuardedError::Map { len, source } => PkeyError::Map { len, source },
        })?;
        let (guard, capacity) = (map.guard_len(), map.capacity());
        let registration = violation::register(map.region_spec(self.inner.context, None))
            .map_err(PkeyError::Register)?;
        let region = Arc::new(RegionInner {
            registration: Some(registration),
            map: Some(map),
            guard,
            capacity,
            domain: Arc::clone(&self.inner),
            carried: Mutex::new(None),
        });
        // Tag under the state lock, so that no eviction or assignment runs in between.
        let set = &self.inner.set;
        let mut st = lock(&set.state);
        let key = match self.inner.key.load(Ordering::SeqCst) {
            NO_KEY => set.sealed(&mut st)?,
            k => st
                .slots
                .iter()
                .find(|s| s.key.id() == k)
                .map(|s| Arc::clone(&s.key))
                .expect("a domain's key is in its set's slots"),
        };
        region.tag(&key)?;
        lock(&self.inner.regions).push(Arc::downgrade(&region));
        drop(st);
        Ok(DomainRegion { inner: region })
    }

    /// Enters the domain on this thread: its key becomes accessible and every other key of
    /// the set is denied (one `WRPKRU` when the domain holds a key; an eviction and two
    /// retags per region when it does not). Leaving restores the previous PKRU.
    ///
    /// # Errors
    /// [`PkeyError::NoKeyAvailable`] when every key is pinned; tagging errors on eviction.
    #[inline]
    pub fn enter(&self) -> Result<DomainGuard<'_>, PkeyError> {
        let k = self.inner.pin()?;
        let pkeys = self.inner.set.pkeys;
        let previous = pkeys.pkru();
        let managed = self.inner.set.managed.load(Ordering::Relaxed);
        pkeys.set_pkru(PkruValue((previous.0 | managed) & !(0b11 << (2 * k))));
        Ok(DomainGuard {
            domain: self,
            previous,
            _not_send: std::marker::PhantomData,
        })
    }

    /// Pins the key for a thread that will run inside this domain for its whole life (the
    /// thread level); returns the key. Pair with [`Domain::unpin`].
    pub(crate) fn pin_for_thread(&self) -> Result<u32, PkeyError> {
        self.inner.pin()
    }

    /// Releases a [`pin_for_thread`](Self::pin_for_thread).
    pub(crate) fn unpin(&self) {
        self.inner.unpin();
    }

    /// The set this domain belongs to.
    pub(crate) fn set_managed_mask(&self) -> u32 {
        self.inner.set.managed.load(Ordering::Acquire)
    }
}

impl Drop for DomainGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.domain.inner.set.pkeys.set_pkru(self.previous);
        self.domain.inner.unpin();
    }
}

impl DomainGuard<'_> {
    /// The PKRU that leaving will restore.
    pub fn previous_pkru(&self) -> PkruValue {
        self.previous
    }
}

impl DomainRegion {
    /// The first usable byte.
    pub fn start(&self) -> usize {
        self.inner.map().base().addr().get() + self.inner.guard
    }

    /// Usable bytes.
    pub fn len(&self) -> usize {
        self.inner.capacity
    }

    /// Always `false`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The domain it belongs to.
    pub fn domain(&self) -> DomainId {
        self.inner.domain.id
    }

    /// The key its pages carry now (the domain's, or the sealed key while evicted).
    pub fn carried_key(&self) -> Option<u32> {
        lock(&self.inner.carried).as_ref().map(|k| k.id())
    }

    fn bounds(&self, offset: usize, len: usize) -> Result<(), PkeyError> {
        match offset.checked_add(len) {
            Some(e) if e <= self.inner.capacity => Ok(()),
            _ => Err(PkeyError::OutOfBounds {
                offset,
                len,
                size: self.inner.capacity,
            }),
        }
    }

    /// Copies `data` in at `offset`. The calling thread's PKRU decides: outside the domain
    /// this faults, and the violation core reports it (then aborts, or under audit lets it
    /// proceed).
    ///
    /// # Errors
    /// [`PkeyError::OutOfBounds`].
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), PkeyError> {
        self.bounds(offset, data.len())?;
        sys::copy_in(self.inner.map(), self.inner.guard + offset, data).map_err(|_| {
            PkeyError::OutOfBounds {
                offset,
                len: data.len(),
                size: self.inner.capacity,
            }
        })
    }

    /// Copies out from `offset` (see [`write`](Self::write)).
    ///
    /// # Errors
    /// [`PkeyError::OutOfBounds`].
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), PkeyError> {
        self.bounds(offset, buf.len())?;
        sys::copy_out(self.inner.map(), self.inner.guard + offset, buf).map_err(|_| {
            PkeyError::OutOfBounds {
                offset,
                len: buf.len(),
                size: self.inner.capacity,
            }
        })
    }

    /// Asks the kernel whether the calling thread may read the region's first `len` bytes
    /// now (a `write(2)` of them into a pipe: `EFAULT` under a denying PKRU, no signal).
    ///
    /// # Errors
    /// [`PkeyError::Map`] when the pipe cannot be made.
    pub fn kernel_says_readable(&self, len: usize) -> Result<bool, PkeyError> {
        sys::kernel_can_read(self.start(), len.min(self.inner.capacity))
            .map_err(|source| PkeyError::Map { len, source })
    }
}
