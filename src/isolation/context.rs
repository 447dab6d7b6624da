//! Region contexts: a budget, a permission set and a region of their own.

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::base::{ContextId, Permissions};
use crate::error::{IsolationError, Result};
use crate::region::{MIN_ALIGN, MemoryRegion};
use crate::sys::mm::Prot;

/// The page protection that matches a permission set.
fn prot(p: Permissions) -> Prot {
    let (r, w, x) = (
        p.contains(Permissions::READ),
        p.contains(Permissions::WRITE),
        p.contains(Permissions::EXECUTE),
    );
    match (r || w || x, w, x) {
        (false, _, _) => Prot::None,
        (true, false, false) => Prot::Read,
        (true, true, false) => Prot::ReadWrite,
        (true, false, true) => Prot::ReadExec,
        (true, true, true) => Prot::ReadWriteExec,
    }
}

/// The limits and permissions of a region context, as the builder collects them.
#[derive(Clone, Debug, Default)]
pub struct ContextConfig {
    /// Name for reports (defaults to `ctx-<id>`).
    pub name: Option<String>,
    /// Budget in bytes (the sum of what is handed out, in 16-byte granules, this context's
    /// and its descendants'). `None`: only the region size bounds it.
    pub memory_limit: Option<u64>,
    /// Size of the region's reservation in bytes; defaults to the memory limit, or
    /// [`DEFAULT_REGION_SIZE`] without one.
    pub region_size: Option<u64>,
    /// Most allocations this context may make between resets.
    pub max_allocations: Option<u64>,
    /// What the context may do with its memory.
    pub permissions: Option<Permissions>,
    /// Deadline for [`IsolatedContext::execute`].
    pub timeout: Option<std::time::Duration>,
    /// A CPU share; refused (a region context cannot enforce it).
    pub cpu_limit: Option<f64>,
    /// An I/O rate; refused (a region context cannot enforce it).
    pub io_limit: Option<u64>,
}

/// The byte threshold of a usage monitor: `fraction` (in (0, 1]) of `limit`, or an
/// `InvalidConfig` error naming `who` when there is no limit or the fraction is out of range.
pub(crate) fn monitor_threshold(limit: Option<u64>, fraction: f64, who: &str) -> Result<u64> {
    let Some(limit) = limit else {
        return Err(IsolationError::InvalidConfig(format!(
            "{who} has no memory limit to take a fraction of; set one first"
        )));
    };
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(IsolationError::InvalidConfig(format!(
            "monitor threshold {fraction} is not in (0, 1]"
        )));
    }
    // A fraction in (0, 1] of a u64, rounded up: non-negative and at most the limit (the
    // cast saturates should f64 round the product up past u64::MAX).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok((limit as f64 * fraction).ceil() as u64)
}

/// Why a region context (or an in-process tenant) refuses a CPU limit.
pub(crate) const REGION_CPU_REASON: &str = "threads of one process share the scheduler; CPU shares are enforced by cgroup v2 cpu.max on process contexts (ProcessTenants)";
/// Why a region context (or an in-process tenant) refuses an I/O limit.
pub(crate) const REGION_IO_REASON: &str =
    "I/O bandwidth is enforced by cgroup v2 io.max on process contexts (ProcessTenants)";

/// Region size used when neither a memory limit nor a region size is given: 64 MiB of
/// address space (it costs no memory until used).
pub const DEFAULT_REGION_SIZE: u64 = 64 << 20;

/// The entry point: creates contexts and finds them again by id.
#[derive(Debug, Default)]
pub struct MemoryIsolation {
    registry: Arc<Registry>,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    contexts: Mutex<HashMap<ContextId, Weak<Account>>>,
}

impl Registry {
    pub(crate) fn insert(&self, id: ContextId, account: &Arc<Account>) {
        self.lock().insert(id, Arc::downgrade(account));
    }

    pub(crate) fn remove(&self, id: ContextId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContextId, Weak<Account>>> {
        self.contexts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MemoryIsolation {
    /// A fresh isolation manager with no contexts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts building a region context.
    pub fn create_context(&self) -> ContextBuilder<'_> {
        ContextBuilder::new(Arc::clone(&self.registry))
    }

    /// Usage of a live context by id.
    ///
    /// # Errors
    /// [`IsolationError::ContextNotFound`] when no live context has this id.
    pub fn context_stats(&self, id: ContextId) -> Result<ContextStats> {
        let acct = self.registry.lock().get(&id).and_then(Weak::upgrade);
        acct.map(|a| a.stats())
            .ok_or(IsolationError::ContextNotFound(id))
    }

    /// Terminates a live context (the seed's answer to a violation): from now on its
    /// `allocate*` calls and [`IsolatedContext::execute`] fail with
    /// [`IsolationError::ContextTerminated`], and so do those of its descendants. Its memory
    /// stays mapped until its owner drops it (slices it handed out may still be borrowed);
    /// capabilities are not revoked ([`CapabilitySystem::revoke_all`](super::CapabilitySystem::revoke_all)).
    /// Descendants are the ones this `MemoryIsolation` built; a child that another one built
    /// on this parent is not reached (terminate it through its own).
    ///
    /// # Errors
    /// [`IsolationError::ContextNotFound`] when no live context has this id.
    pub fn terminate_context(&self, id: ContextId) -> Result<()> {
        let map = self.registry.lock();
        if map.get(&id).is_none_or(|w| w.strong_count() == 0) {
            return Err(IsolationError::ContextNotFound(id));
        }
        // The context and every live descendant (they allocate through its budget), so that
        // the allocation fast path reads one flag of its own.
        for acct in map.values().filter_map(Weak::upgrade) {
            if acct.descends_from(id) {
                acct.terminated.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Ids of the contexts alive now, in creation order.
    pub fn contexts(&self) -> Vec<ContextId> {
        let map = self.registry.lock();
        let mut ids: Vec<ContextId> = map
            .iter()
            .filter(|(_, w)| w.strong_count() > 0)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }
}

/// A snapshot of a context's usage.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ContextStats {
    /// The context (`id` in JSON, as before the seed's name).
    #[serde(rename = "id")]
    pub context_id: ContextId,
    /// Its name.
    pub name: String,
    /// Bytes charged to the budget: this context's allocations (16-byte granules, alignment
    /// padding included) plus those of its live descendants.
    pub memory_used: u64,
    /// Bytes of this context's own region in use.
    pub region_used: u64,
    /// Bytes of the region committed (accessible) now.
    pub region_committed: u64,
    /// The region's size.
    pub region_size: u64,
    /// The budget, if any.
    pub memory_limit: Option<u64>,
    /// Allocations since creation or the last reset.
    pub allocations: u64,
    /// The allocation limit, if any.
    pub max_allocations: Option<u64>,
    /// Requests refused by a limit (memory, allocations, region space).
    pub refused: u64,
}

/// The packed state word: one compare-and-swap allocates on the fast path.
///
/// ```text
///  63    62      61 ........ 36   35 ........... 0
/// HIER FROZEN   allocations (26)  offset in 16-byte granules (36: up to 1 TiB)
/// ```
///
/// `HIER`: the context is part of a hierarchy (it has a parent or has had children), so its
/// budget is kept in `charged` (own bytes plus descendants'), which children charge too.
/// Without it the budget is the offset itself, checked in the same CAS. `FROZEN`: the
/// switch to `HIER` is in progress (see [`Account::make_hierarchical`]).
mod word {
    pub const HIER: u64 = 1 << 63;
    pub const FROZEN: u64 = 1 << 62;
    pub const COUNT_SHIFT: u32 = 36;
    pub const COUNT_ONE: u64 = 1 << COUNT_SHIFT;
    pub const COUNT_MAX: u64 = (1 << 26) - 1;
    pub const OFFSET_MASK: u64 = COUNT_ONE - 1;
    /// The largest region the word can address.
    pub const MAX_REGION: u64 = OFFSET_MASK * 16;
    const _: () = assert!(MAX_REGION < (1 << 40));
    /// How much a full count field spills into the overflow counter at once.
    pub const SPILL: u64 = 1 << 25;

    #[inline]
    pub fn offset(s: u64) -> usize {
        ((s & OFFSET_MASK) as usize) << 4
    }
    #[inline]
    pub fn count(s: u64) -> u64 {
        (s >> COUNT_SHIFT) & COUNT_MAX
    }
    #[inline]
    pub fn with(s: u64, count: u64, offset: usize) -> u64 {
        debug_assert!(offset as u64 >> 4 <= OFFSET_MASK && count <= COUNT_MAX);
        (s & (HIER | FROZEN)) | (count << COUNT_SHIFT) | (offset as u64 >> 4)
    }
}

/// Shared state of one context: the accounting its descendants charge into, and its region.
#[derive(Debug)]
pub(crate) struct Account {
    id: ContextId,
    name: String,
    parent: Option<Arc<Account>>,
    memory_limit: u64,
    /// Own bytes plus descendants' bytes, kept once `HIER` is set.
    charged: AtomicU64,
    max_allocations: u64,
    state: AtomicU64,
    /// Allocations spilled out of the state word's count field.
    count_high: AtomicU64,
    /// Serialises spills and the switch to `HIER`.
    slow_lock: Mutex<()>,
    refused: AtomicU64,
    /// Whether a monitor is set (checked on every allocation: one relaxed load).
    monitored: std::sync::atomic::AtomicBool,
    monitor: Mutex<Option<Arc<Monitor>>>,
    permissions: Permissions,
    timeout: Option<Duration>,
    /// Set by [`MemoryIsolation::terminate_context`]; checked by allocation and `execute`.
    terminated: std::sync::atomic::AtomicBool,
    region: MemoryRegion,
}

fn limit_of(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}

/// A usage callback: called once when `memory_used` reaches `threshold` bytes, re-armed by
/// a reset (or when usage falls back below the threshold and rises again).
pub(crate) struct Monitor {
    threshold: u64,
    fired: std::sync::atomic::AtomicBool,
    callback: Box<dyn Fn(&ContextStats) + Send + Sync>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

/// What a failed bump ran into, before it becomes an [`IsolationError`].
enum Refusal {
    Allocations {
        used: u64,
    },
    Memory {
        context: ContextId,
        requested: u64,
        used: u64,
        max: u64,
    },
    Region {
        needed: usize,
    },
    Commit {
        errno: i32,
        undone: bool,
    },
}

impl Account {
    /// This context's id once it was terminated.
    fn terminated_at(&self) -> Option<ContextId> {
        self.terminated.load(Ordering::Acquire).then_some(self.id)
    }

    /// Whether `id` is this context or one of its ancestors.
    fn descends_from(&self, id: ContextId) -> bool {
        let mut a = Some(self);
        while let Some(acct) = a {
            if acct.id == id {
                return true;
            }
            a = acct.parent.as_deref();
        }
        false
    }

    pub(crate) fn stats(&self) -> ContextStats {
        let s = self.state.load(Ordering::Relaxed);
        let own = word::offset(s) as u64;
        ContextStats {
            context_id: self.id,
            name: self.name.clone(),
            memory_used: if s & word::HIER != 0 {
                self.charged.load(Ordering::Relaxed)
            } else {
                own
            },
            region_used: own,
            region_committed: self.region.committed() as u64,
            region_size: self.region.capacity() as u64,
            memory_limit: limit_of(self.memory_limit),
            allocations: self.count_high.load(Ordering::Relaxed) + word::count(s),
            max_allocations: limit_of(self.max_allocations),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// After an allocation: this context's and its ancestors' monitors, where set.
    #[inline]
    fn notify_monitors(&self) {
        let mut acct = Some(self);
        while let Some(a) = acct {
            if a.monitored.load(Ordering::Relaxed) {
                a.check_monitor();
            }
            acct = a.parent.as_deref();
        }
    }

    #[cold]
    fn check_monitor(&self) {
        let m = self
            .monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(m) = m else { return };
        let stats = self.stats();
        if stats.memory_used >= m.threshold {
            if !m.fired.swap(true, Ordering::AcqRel) {
                (m.callback)(&stats);
            }
        } else {
            m.fired.store(false, Ordering::Release);
        }
    }

    fn rearm_monitor(&self) {
        if let Some(m) = self
            .monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            m.fired.store(false, Ordering::Release);
        }
    }

    fn own_bytes(&self) -> u64 {
        word::offset(self.state.load(Ordering::Acquire)) as u64
    }

    /// Charges `bytes` to this account and every ancestor, all or nothing.
    fn charge(&self, bytes: u64) -> Result<(), Refusal> {
        let mut acct = self;
        loop {
            if let Err(used) =
                acct.charged
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                        c.checked_add(bytes).filter(|&n| n <= acct.memory_limit)
                    })
            {
                // Undo the levels below the one that refused.
                let mut undo = self;
                while !std::ptr::eq(undo, acct) {
                    undo.charged.fetch_sub(bytes, Ordering::Relaxed);
                    undo = undo
                        .parent
                        .as_deref()
                        .expect("an ancestor refused, so it is above us");
                }
                return Err(Refusal::Memory {
                    context: acct.id,
                    requested: bytes,
                    used,
                    max: acct.memory_limit,
                });
            }
            match acct.parent.as_deref() {
                Some(p) => acct = p,
                None => return Ok(()),
            }
        }
    }

    fn uncharge(&self, bytes: u64) {
        let mut acct = Some(self);
        while let Some(a) = acct {
            a.charged.fetch_sub(bytes, Ordering::Relaxed);
            acct = a.parent.as_deref();
        }
    }

    /// Switches a root context to `charged` accounting before its first child can charge
    /// it. `FROZEN` makes the context's own allocations wait for the few instructions
    /// between taking the offset and adding it to `charged`, so no check sees a budget
    /// without the context's own bytes.
    fn make_hierarchical(&self) {
        let _g = self.slow_lock.lock().unwrap_or_else(|p| p.into_inner());
        let before = match self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & word::HIER == 0).then_some(s | word::HIER | word::FROZEN)
            }) {
            Ok(s) => s,
            Err(_) => return,
        };
        self.charged
            .fetch_add(word::offset(before) as u64, Ordering::AcqRel);
        self.state.fetch_and(!word::FROZEN, Ordering::AcqRel);
    }

    /// Moves a full count field into `count_high`.
    #[cold]
    fn spill(&self) {
        let _g = self.slow_lock.lock().unwrap_or_else(|p| p.into_inner());
        if word::count(self.state.load(Ordering::Acquire)) < word::COUNT_MAX {
            return;
        }
        // Count first, then take it out of the word: the total is never understated, so the
        // allocation limit is never exceeded (it may refuse early for an instant).
        self.count_high.fetch_add(word::SPILL, Ordering::AcqRel);
        self.state
            .fetch_sub(word::SPILL << word::COUNT_SHIFT, Ordering::AcqRel);
    }

    /// The allocation fast path: one CAS on the state word (plus one per ancestor level for
    /// contexts in a hierarchy). Returns the span's offset.
    #[inline]
    fn bump(&self, size: usize, align: usize) -> Result<usize, Refusal> {
        let cap = self.region.capacity();
        let start = self.region.start().addr().get();
        // Acquire pairs with spill's release, so `count_high` is read no older than the word.
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & (word::HIER | word::FROZEN) != 0 || word::count(s) == word::COUNT_MAX {
                return self.bump_slow(size, align);
            }
            let count = word::count(s);
            if self.max_allocations != u64::MAX
                && self.count_high.load(Ordering::Relaxed) + count >= self.max_allocations
            {
                return Err(Refusal::Allocations {
                    used: self.count_high.load(Ordering::Relaxed) + count,
                });
            }
            let off = word::offset(s);
            let Some((begin, end)) = span(start, off, size, align) else {
                return Err(Refusal::Region { needed: size });
            };
            if end as u64 > self.memory_limit {
                return Err(Refusal::Memory {
                    context: self.id,
                    requested: (end - off) as u64,
                    used: off as u64,
                    max: self.memory_limit,
                });
            }
            if end > cap {
                return Err(Refusal::Region { needed: end - off });
            }
            let next = word::with(s, count + 1, end);
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::Relaxed, Ordering::Acquire)
            {
                Ok(_) => return self.commit(begin, end, next, s),
                Err(cur) => s = cur,
            }
        }
    }

    #[cold]
    fn bump_slow(&self, size: usize, align: usize) -> Result<usize, Refusal> {
        let cap = self.region.capacity();
        let start = self.region.start().addr().get();
        loop {
            let s = self.state.load(Ordering::Acquire);
            if s & word::FROZEN != 0 {
                std::thread::yield_now();
                continue;
            }
            if word::count(s) == word::COUNT_MAX {
                self.spill();
                continue;
            }
            if s & word::HIER == 0 {
                return self.bump(size, align);
            }
            break;
        }
        // Charge the worst case (size in granules plus padding) up front, trim afterwards.
        let worst = size.next_multiple_of(MIN_ALIGN) + (align - MIN_ALIGN);
        self.charge(worst as u64)?;
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let total = self.count_high.load(Ordering::Relaxed) + word::count(s);
            let refusal = if total >= self.max_allocations {
                Some(Refusal::Allocations { used: total })
            } else if word::count(s) == word::COUNT_MAX {
                self.spill();
                s = self.state.load(Ordering::Acquire);
                continue;
            } else {
                None
            };
            let off = word::offset(s);
            let r = refusal.map_or_else(
                || match span(start, off, size, align) {
                    Some((_, end)) if end > cap => Err(Refusal::Region { needed: end - off }),
                    Some(v) => Ok(v),
                    None => Err(Refusal::Region { needed: size }),
                },
                Err,
            );
            let (begin, end) = match r {
                Ok(v) => v,
                Err(e) => {
                    self.uncharge(worst as u64);
                    return Err(e);
                }
            };
            let next = word::with(s, word::count(s) + 1, end);
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::Relaxed, Ordering::Acquire)
            {
                Ok(_) => {
                    let consumed = end - off;
                    self.uncharge((worst - consumed) as u64);
                    return self.commit(begin, end, next, s).inspect_err(|e| {
                        // A rolled-back span gives its charge back; one left unreachable
                        // keeps it, so the budget and the offset agree (see commit).
                        if let Refusal::Commit { undone: true, .. } = e {
                            self.uncharge(consumed as u64);
                        }
                    });
                }
                Err(cur) => s = cur,
            }
        }
    }

    /// Commits pages up to `end` after a successful bump from `prev` to `next`; on failure
    /// undoes the bump when nothing followed it, else drops the count and leaves the span
    /// unreachable (and charged, so budget and offset agree) until reset.
    #[inline]
    fn commit(&self, begin: usize, end: usize, next: u64, prev: u64) -> Result<usize, Refusal> {
        match self.region.ensure_committed(end) {
            Ok(()) => Ok(begin),
            Err(errno) => {
                let undone = self
                    .state
                    .compare_exchange(next, prev, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok();
                if !undone {
                    self.state.fetch_sub(word::COUNT_ONE, Ordering::Relaxed);
                }
                Err(Refusal::Commit { errno, undone })
            }
        }
    }
}

/// Where a `size`-byte span aligned to `align` (a power of two) goes after `off`:
/// `(begin, end)`, `end` rounded to the 16-byte granule. Mask arithmetic, no division: this
/// is the allocation fast path. `None` on overflow.
#[inline]
fn span(start: usize, off: usize, size: usize, align: usize) -> Option<(usize, usize)> {
    let mask = align - 1;
    let begin = ((start + off).checked_add(mask)? & !mask) - start;
    let end = begin.checked_add(size)?.checked_add(MIN_ALIGN - 1)? & !(MIN_ALIGN - 1);
    Some((begin, end))
}

/// An in-process isolation context: a region of its own, a memory budget, an allocation
/// limit and a permission set.
///
/// Share it between threads with `Arc`; every allocation method takes `&self` and is
/// lock-free on its fast path. [`reset`](Self::reset) takes `&mut self`, so the borrow checker
/// proves that no slice handed out by [`alloc_slice`](Self::alloc_slice) outlives it. The
/// region is unmapped and the context's charge is returned to its ancestors on drop.
///
/// A region context separates *accounting and address ranges*: code in the same process
/// can still reach any memory. Stronger walls are the thread (protection keys), process
/// and wasm levels.
pub struct IsolatedContext {
    acct: Arc<Account>,
    registry: Arc<Registry>,
}

impl fmt::Debug for IsolatedContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsolatedContext")
            .field("id", &self.acct.id)
            .field("name", &self.acct.name)
            .finish()
    }
}

thread_local! {
    static CURRENT: std::cell::Cell<Option<ContextId>> = const { std::cell::Cell::new(None) };
}

impl IsolatedContext {
    /// This context's id.
    pub fn id(&self) -> ContextId {
        self.acct.id
    }

    /// This context's name.
    pub fn name(&self) -> &str {
        &self.acct.name
    }

    /// Its permissions.
    pub fn permissions(&self) -> Permissions {
        self.acct.permissions
    }

    /// The context the calling thread is executing in (inside [`execute`](Self::execute)).
    pub fn current() -> Option<ContextId> {
        CURRENT.with(|c| c.get())
    }

    /// The region the context allocates from.
    pub fn region(&self) -> &MemoryRegion {
        &self.acct.region
    }

    /// Allocates `size` bytes, aligned to 16, from the context's region.
    ///
    /// Memory is charged in 16-byte granules to this context and every ancestor. The
    /// returned memory is readable/writable per the context's permissions until
    /// [`reset`](Self::reset) or drop. It is zero on first use; after a `reset` it may hold
    /// this context's own earlier bytes, never another context's (each has its own region).
    ///
    /// # Errors
    /// - [`IsolationError::PermissionDenied`] when the context lacks `WRITE`;
    /// - [`IsolationError::LimitExceeded`] (`"allocations"` or `"memory"`, naming the
    ///   context whose limit was hit, which may be an ancestor);
    /// - [`IsolationError::OutOfMemory`] when the region has no room left;
    /// - [`IsolationError::InvalidConfig`] for `size == 0`.
    ///
    /// On every error nothing stays allocated or charged, with one exception: when the
    /// kernel refuses to commit pages (`System`) and another allocation already followed
    /// this one, the span cannot be rolled back; it stays used and charged (unreachable)
    /// until [`reset`](Self::reset), so the budget and the region agree.
    ///
    /// In a hierarchy (a context with a parent or children), an aligned request is charged
    /// its worst-case padding for the instant before the bump, so near the limit it can be
    /// refused where the exact padding would have fitted; limits are never exceeded.
    #[inline]
    pub fn allocate(&self, size: usize) -> Result<NonNull<u8>> {
        self.allocate_aligned(size, MIN_ALIGN)
    }

    /// Allocates `size` bytes aligned to `align` (a power of two; below 16 means 16).
    ///
    /// # Errors
    /// As [`allocate`](Self::allocate); a non-power-of-two `align` is `InvalidConfig`.
    pub fn allocate_aligned(&self, size: usize, align: usize) -> Result<NonNull<u8>> {
        let a = &*self.acct;
        if !a.permissions.contains(Permissions::WRITE) || a.terminated.load(Ordering::Relaxed) {
            a.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(id) = a.terminated_at() {
                return Err(IsolationError::ContextTerminated(id));
            }
            return Err(IsolationError::PermissionDenied {
                context: a.id,
                operation: "allocate",
                needed: "WRITE",
            });
        }
        if size == 0 || !align.is_power_of_two() {
            return Err(IsolationError::InvalidConfig(format!(
                "allocation of {size} bytes aligned to {align}: size must be > 0 and align a power of two"
            )));
        }
        let align = align.max(MIN_ALIGN);
        if size as u64 > word::MAX_REGION {
            a.refused.fetch_add(1, Ordering::Relaxed);
            return Err(self.out_of_memory(size as u64));
        }
        match a.bump(size, align) {
            Ok(offset) => {
                a.notify_monitors();
                Ok(a.region.at(offset))
            }
            Err(r) => {
                a.refused.fetch_add(1, Ordering::Relaxed);
                Err(match r {
                    Refusal::Allocations { used } => IsolationError::LimitExceeded {
                        context: a.id,
                        limit: "allocations",
                        requested: 1,
                        used,
                        max: a.max_allocations,
                    },
                    Refusal::Memory {
                        context,
                        requested,
                        used,
                        max,
                    } => IsolationError::LimitExceeded {
                        context,
                        limit: "memory",
                        requested,
                        used,
                        max,
                    },
                    Refusal::Region { needed, .. } => self.out_of_memory(needed as u64),
                    Refusal::Commit { errno, .. } => IsolationError::system(
                        format!("committing pages for {} ({size} bytes; mprotect)", a.id),
                        std::io::Error::from_raw_os_error(errno),
                    ),
                })
            }
        }
    }

    fn out_of_memory(&self, requested: u64) -> IsolationError {
        let cap = self.acct.region.capacity() as u64;
        IsolationError::OutOfMemory {
            context: self.acct.id,
            requested,
            available: cap - self.acct.own_bytes(),
            capacity: cap,
        }
    }

    /// Allocates `len` bytes as a slice that lives as long as the borrow of the context.
    ///
    /// # Errors
    /// As [`allocate`](Self::allocate).
    #[allow(clippy::mut_from_ref)] // each call returns a fresh, disjoint bump allocation
    #[allow(unsafe_code)] // the one place that turns a bump allocation into a slice
    pub fn alloc_slice(&self, len: usize) -> Result<&mut [u8]> {
        let ptr = self.allocate(len)?;
        // SAFETY: `allocate` just handed out ptr..ptr+len: the bump gives each span out once
        // (one CAS on the offset), so no other reference overlaps it; it refused contexts
        // without WRITE and ran `ensure_committed` for the span, so it is mapped read-write;
        // the region stays mapped while `self` is borrowed and is zeroed or unmapped only
        // through `&mut self` (reset_and_release) or drop, after the slice's borrow ended.
        Ok(unsafe { crate::sys::mm::slice_of(ptr, len, self) })
    }

    /// Forgets every allocation and keeps the region's pages for reuse: the allocation
    /// count restarts at 0 and this context's charge is returned to it and its ancestors
    /// (descendants keep their own charges). New allocations may see this context's own
    /// earlier bytes; [`reset_and_release`](Self::reset_and_release) zeroes them and gives
    /// the memory back to the kernel.
    ///
    /// `&mut self` proves that no slice from [`alloc_slice`](Self::alloc_slice) is alive.
    ///
    /// # Errors
    /// None today; the signature matches [`reset_and_release`](Self::reset_and_release).
    pub fn reset(&mut self) -> Result<()> {
        self.reset_inner(false)
    }

    /// Like [`reset`](Self::reset), and returns the used pages to the kernel
    /// (`MADV_DONTNEED`): the process's RSS drops and the next allocations see zeroes.
    ///
    /// # Errors
    /// [`IsolationError::System`] when `madvise` fails (nothing is reset then).
    pub fn reset_and_release(&mut self) -> Result<()> {
        self.reset_inner(true)
    }

    fn reset_inner(&mut self, release: bool) -> Result<()> {
        let a = &*self.acct;
        let s = a.state.load(Ordering::Acquire);
        let own = word::offset(s);
        if release {
            // SAFETY: `&mut self` ends every borrow of a slice that alloc_slice handed out
            // (they borrow `self`); raw pointers from `allocate` are the caller's, documented
            // as invalid after a reset. Children allocate from their own regions.
            #[allow(unsafe_code)]
            unsafe { a.region.release() }.map_err(|e| {
                IsolationError::system(format!("releasing the pages of {} (madvise)", a.id), e)
            })?;
        }
        if s & word::HIER != 0 {
            a.uncharge(own as u64);
        }
        // &mut self: no allocation of ours is in flight (children allocate from their own
        // words, and charge `charged`, never this word).
        a.state.store(s & word::HIER, Ordering::Release);
        a.count_high.store(0, Ordering::Relaxed);
        a.rearm_monitor();
        Ok(())
    }

    /// A snapshot of the context's usage.
    pub fn stats(&self) -> ContextStats {
        self.acct.stats()
    }

    /// Calls `callback` with the context's stats when its memory use (its own and its
    /// descendants') reaches `fraction` of its memory limit (the seed's default is 0.9).
    /// Fired once per crossing, on the allocating thread, right after the allocation that
    /// crossed; re-armed by a reset or when usage drops back below the threshold (a child
    /// dropped). Replaces an earlier monitor.
    ///
    /// This is the region level's own accounting; process contexts and tenants are fed by
    /// the kernel (`memory.events`, PSI triggers).
    ///
    /// # Errors
    /// `InvalidConfig` when the context has no memory limit or `fraction` is not in (0, 1].
    pub fn set_monitor_at(
        &self,
        fraction: f64,
        callback: impl Fn(&ContextStats) + Send + Sync + 'static,
    ) -> Result<()> {
        let a = &*self.acct;
        let threshold = monitor_threshold(limit_of(a.memory_limit), fraction, &a.id.to_string())?;
        let m = Monitor {
            threshold,
            fired: std::sync::atomic::AtomicBool::new(false),
            callback: Box::new(callback),
        };
        *a.monitor.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(m));
        a.monitored.store(true, Ordering::Release);
        a.check_monitor();
        Ok(())
    }

    /// The seed's monitor: calls `callback` once when the context's memory use crosses 90 %
    /// of its memory limit ([`set_monitor_at`](Self::set_monitor_at) with `0.9`).
    ///
    /// # Errors
    /// `InvalidConfig` when the context has no memory limit.
    pub fn set_monitor(
        &self,
        callback: impl Fn(&ContextStats) + Send + Sync + 'static,
    ) -> Result<()> {
        self.set_monitor_at(0.9, callback)
    }

    /// Removes the monitor.
    pub fn clear_monitor(&self) {
        self.acct.monitored.store(false, Ordering::Release);
        *self.acct.monitor.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Runs `f` with this context as the thread's current context ([`current`](Self::current))
    /// and checks the context's deadline when `f` returns.
    ///
    /// This level cannot preempt: `f` runs to completion on the calling thread, and an
    /// overrun is reported after the fact. Stopping code mid-way is the process level's
    /// (`SIGKILL`, `cgroup.kill`) and the wasm level's (epoch deadlines) job.
    ///
    /// # Errors
    /// - [`IsolationError::ThreadPanicked`] when `f` panics (the panic is caught);
    /// - [`IsolationError::DeadlineExceeded`] when `f` ran longer than the context's timeout
    ///   (its result is dropped).
    pub fn execute<R>(&self, f: impl FnOnce(&IsolatedContext) -> R) -> Result<R> {
        if let Some(id) = self.acct.terminated_at() {
            return Err(IsolationError::ContextTerminated(id));
        }
        let prev = CURRENT.with(|c| c.replace(Some(self.acct.id)));
        let started = Instant::now();
        let out = catch_unwind(AssertUnwindSafe(|| f(self)));
        let elapsed = started.elapsed();
        CURRENT.with(|c| c.set(prev));
        let value = out.map_err(|p| IsolationError::ThreadPanicked(panic_message(&*p)))?;
        match self.acct.timeout {
            Some(limit) if elapsed > limit => Err(IsolationError::DeadlineExceeded {
                context: self.acct.id,
                limit,
                elapsed,
            }),
            _ => Ok(value),
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

impl Drop for IsolatedContext {
    fn drop(&mut self) {
        let a = &*self.acct;
        let s = a.state.load(Ordering::Acquire);
        // Return this context's own bytes to itself and its ancestors (live descendants still
        // charge through this account, so its budget must stop counting them).
        if s & word::HIER != 0 {
            a.uncharge(word::offset(s) as u64);
        }
        // The region is unmapped when the last reference to the account goes: right here,
        // unless descendants are alive; then at least give its pages back now.
        if Arc::strong_count(&self.acct) > 1 {
            // SAFETY: the context is being dropped, so every slice it handed out (each borrows
            // it) is gone; descendants allocate from their own regions, never this one.
            #[allow(unsafe_code)]
            let _ = unsafe { a.region.release() };
        }
        self.registry.remove(a.id);
    }
}

/// Builds an [`IsolatedContext`]; from [`MemoryIsolation::create_context`](MemoryIsolation::create_context).
#[must_use]
pub struct ContextBuilder<'p> {
    registry: Arc<Registry>,
    config: ContextConfig,
    parent: Option<&'p IsolatedContext>,
}

impl<'p> ContextBuilder<'p> {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        ContextBuilder {
            registry,
            config: ContextConfig::default(),
            parent: None,
        }
    }

    /// Starts from a whole configuration.
    pub fn with_config(mut self, config: ContextConfig) -> Self {
        self.config = config;
        self
    }

    /// A name for reports.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// The budget in bytes, shared with descendants. Takes a value or an `Option` (a
    /// [`ContextConfig`] field); `None` leaves the context without a budget.
    pub fn with_memory_limit(mut self, bytes: impl Into<Option<u64>>) -> Self {
        self.config.memory_limit = bytes.into();
        self
    }

    /// The region's size (address space; costs no memory until used).
    pub fn with_region_size(mut self, bytes: u64) -> Self {
        self.config.region_size = Some(bytes);
        self
    }

    /// The most allocations between resets.
    pub fn with_max_allocations(mut self, n: u64) -> Self {
        self.config.max_allocations = Some(n);
        self
    }

    /// The permission set (default `READ | WRITE`). Takes a value or an `Option`; `None`
    /// means the default.
    pub fn with_permissions(mut self, p: impl Into<Option<Permissions>>) -> Self {
        self.config.permissions = p.into();
        self
    }

    /// The deadline [`IsolatedContext::execute`] checks. Takes a value or an `Option`;
    /// `None` means no deadline.
    pub fn with_timeout(mut self, t: impl Into<Option<Duration>>) -> Self {
        self.config.timeout = t.into();
        self
    }

    /// A CPU share in CPUs (the seed's tenant limit). A region context runs on its caller's
    /// thread and cannot enforce one, so [`build`](Self::build) refuses `Some` with
    /// [`IsolationError::Unsupported`]; process tenants enforce it with cgroup v2 `cpu.max`
    /// ([`ProcessTenants`](super::tenant_process::ProcessTenants)).
    pub fn with_cpu_limit(mut self, cpus: impl Into<Option<f64>>) -> Self {
        self.config.cpu_limit = cpus.into();
        self
    }

    /// An I/O rate in operations per second (the seed's tenant limit). Refused by
    /// [`build`](Self::build) like [`with_cpu_limit`](Self::with_cpu_limit); process tenants
    /// enforce it with cgroup v2 `io.max`.
    pub fn with_io_limit(mut self, iops: impl Into<Option<u64>>) -> Self {
        self.config.io_limit = iops.into();
        self
    }

    /// Makes the new context a child of `parent`: its usage counts against `parent`'s
    /// budget (and that of `parent`'s ancestors).
    pub fn with_parent(mut self, parent: &'p IsolatedContext) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Reserves the region and registers the context.
    ///
    /// # Errors
    /// - [`IsolationError::InvalidConfig`] for a zero limit or region size, or a child that
    ///   asks for permissions its parent lacks;
    /// - [`IsolationError::System`] when the reservation fails (`mmap`).
    pub fn build(self) -> Result<IsolatedContext> {
        let c = self.config;
        let bad = |what: &str| Err(IsolationError::InvalidConfig(what.to_string()));
        if c.memory_limit == Some(0) {
            return bad("memory limit 0: a context needs a budget of at least 16 bytes");
        }
        if c.region_size == Some(0) {
            return bad("region size 0: give at least one byte (it is rounded up to a page)");
        }
        if c.max_allocations == Some(0) {
            return bad("max_allocations 0: the context could never allocate");
        }
        if c.cpu_limit.is_some() {
            return Err(IsolationError::Unsupported {
                feature: "a CPU limit on a region context",
                reason: REGION_CPU_REASON.into(),
            });
        }
        if c.io_limit.is_some() {
            return Err(IsolationError::Unsupported {
                feature: "an I/O limit on a region context",
                reason: REGION_IO_REASON.into(),
            });
        }
        let perms = c
            .permissions
            .unwrap_or(Permissions::READ | Permissions::WRITE);
        if let Some(id) = self.parent.and_then(|p| p.acct.terminated_at()) {
            return Err(IsolationError::ContextTerminated(id));
        }
        if let Some(p) = self.parent
            && !p.permissions().contains(perms)
        {
            return Err(IsolationError::InvalidConfig(format!(
                "a child of {} asks for {perms:?} but its parent has only {:?}; a child never gets more than its parent",
                p.id(),
                p.permissions()
            )));
        }
        let size = c
            .region_size
            .or(c.memory_limit)
            .unwrap_or(DEFAULT_REGION_SIZE);
        let rounded = size.checked_next_multiple_of(crate::sys::mm::page_size() as u64);
        if rounded.is_none_or(|r| r > word::MAX_REGION) {
            return Err(IsolationError::InvalidConfig(format!(
                "region size {size} is larger than the {} bytes (1 TiB) a context can address",
                word::MAX_REGION
            )));
        }
        let size = usize::try_from(size).map_err(|_| {
            IsolationError::InvalidConfig(format!(
                "region size {size} is larger than this target's address space"
            ))
        })?;
        let region = MemoryRegion::reserve(size, prot(perms)).map_err(|e| {
            IsolationError::system(format!("reserving a region of {size} bytes (mmap)"), e)
        })?;
        let id = ContextId::fresh();
        if let Some(p) = self.parent {
            p.acct.make_hierarchical();
        }
        let acct = Arc::new(Account {
            id,
            name: c.name.unwrap_or_else(|| id.to_string()),
            parent: self.parent.map(|p| Arc::clone(&p.acct)),
            memory_limit: c.memory_limit.unwrap_or(u64::MAX),
            charged: AtomicU64::new(0),
            max_allocations: c.max_allocations.unwrap_or(u64::MAX),
            state: AtomicU64::new(if self.parent.is_some() { word::HIER } else { 0 }),
            count_high: AtomicU64::new(0),
            slow_lock: Mutex::new(()),
            refused: AtomicU64::new(0),
            monitored: std::sync::atomic::AtomicBool::new(false),
            monitor: Mutex::new(None),
            permissions: perms,
            timeout: c.timeout,
            terminated: std::sync::atomic::AtomicBool::new(false),
            region,
        });
        self.registry.insert(id, &acct);
        // A terminate_context of an ancestor that ran between the check above and the
        // insert did not see this context: inherit its flag now.
        if acct
            .parent
            .as_deref()
            .is_some_and(|p| p.terminated_at().is_some())
        {
            acct.terminated.store(true, Ordering::Release);
        }
        Ok(IsolatedContext {
            acct,
            registry: self.registry,
        })
    }
}
