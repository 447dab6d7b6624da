//! Violations: what a context did that it may not, as the kernel reported it.
//!
//! Every level turns its kernel's report into one [`ViolationInfo`]: a protection-key fault
//! (`SIGSEGV`/`SEGV_PKUERR`), a guard-page hit (`SEGV_ACCERR`/`SEGV_MAPERR`), a write to a
//! frozen region (userfaultfd), an OOM kill (`memory.events`), a pids-limit hit
//! (`pids.events`), a seccomp kill (`SIGSYS`), a time limit, a wasm trap. Reports are
//! delivered to the context's handler on an ordinary thread, never silently dropped.
//!
//! ## How a memory fault becomes a report
//!
//! ```text
//!  faulting thread                              "nebula-violations" thread
//!  ───────────────                              ──────────────────────────
//!  SIGSEGV (SA_SIGINFO|SA_ONSTACK, installed once per process)
//!   └ look the address up in the region registry    (fixed array of atomics, seqlock reads:
//!     ├ not nebula memory ──▶ chain to the previous   no lock, no allocation)
//!     │                       action (Rust's stack-overflow handler, else SIG_DFL: the
//!     │                       access faults again and the process dies of SIGSEGV)
//!     └ nebula memory: classify (guard page, pkey, protection, unmapped), push a plain
//!       record into a preallocated lock-free ring, write(eventfd) ───────▶ wakes, pops,
//!       ├ Audit (pkey faults only): clear the key's bits in the PKRU      builds ViolationInfo,
//!       │  saved in the signal frame, return: the access proceeds         runs the handler(s)
//!       └ fail-stop (guard pages always; everything under Abort): wait until the handler
//!          has run (at most FAIL_STOP_WAIT), print the report on stderr, abort() → SIGABRT
//! ```
//!
//! The signal handler itself only touches statics: the registry, the ring, an eventfd and a
//! stack buffer for the stderr line; the user's handler runs later on the delivery thread,
//! where it may allocate, lock and print. A report that finds the ring full is counted in
//! [`lost_reports`] (and a fail-stop report still reaches stderr), so nothing is silent.
//!
//! ## Policies
//!
//! [`Policy::Abort`] (default) is fail-stop: report, then abort. [`Policy::Audit`] applies to
//! protection-key faults only: record the fault and let the thread go on with the key
//! opened for it (see [`Policy::Audit`] for how long it stays open). Guard-page hits,
//! protection faults and unmapped accesses inside nebula memory are always fail-stop: there
//! is no way to "let them proceed".
//!
//! Faults reported by the kernel on behalf of a thread that did not fault itself (a
//! `read(2)` into a protected buffer returns `EFAULT`, no signal) never reach this module;
//! see the crate's notes on kernel side doors.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::atomic::{Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::base::ContextId;
use crate::sys::signal::{self, Disposition, FaultFrame, SEGV_ACCERR, SEGV_MAPERR, SEGV_PKUERR};

pub use crate::base::{Policy, ViolationInfo, ViolationKind};

/// Errors of the violation core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViolationError {
    /// Installing the process-wide SIGSEGV action failed.
    #[error("installing the SIGSEGV handler failed")]
    InstallHandler(#[source] std::io::Error),
    /// Creating the eventfd or the delivery thread failed.
    #[error("starting the violation delivery thread failed")]
    StartDelivery(#[source] std::io::Error),
    /// Every slot of the fault-time region registry is taken.
    #[error(
        "the violation registry is full ({capacity} regions); Hint: drop unused regions or domains"
    )]
    RegistryFull {
        /// Slots in the registry.
        capacity: usize,
    },
}

/// How long a fail-stop waits for the handler to run before it aborts anyway (the faulting
/// thread may hold a lock the handler needs).
pub const FAIL_STOP_WAIT: Duration = Duration::from_secs(2);

/// Regions the fault handler can recognise at once.
pub const REGISTRY_CAPACITY: usize = 4096;

/// Reports the ring holds before new ones are counted as lost.
pub const RING_CAPACITY: usize = 256;

// ---------------------------------------------------------------------------------------
// The registry: read by the signal handler, written by region constructors and drops.

struct Slot {
    /// Seqlock: odd while a writer changes the slot.
    seq: AtomicU64,
    /// 0 free, 1 claimed by a writer (register/unregister own the slot while claimed).
    claimed: AtomicBool,
    live: AtomicBool,
    /// The whole range, guards included.
    start: AtomicUsize,
    end: AtomicUsize,
    /// Usable part: `[usable_start, usable_end)`; the rest of `[start, end)` is guard.
    usable_start: AtomicUsize,
    usable_end: AtomicUsize,
    id: AtomicU64,
    /// `ContextId::get()` of the owner, 0 for none (printing from the handler).
    context_raw: AtomicU64,
    /// `Policy` override: 0 inherit, 1 abort, 2 audit.
    policy: AtomicU8,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            claimed: AtomicBool::new(false),
            live: AtomicBool::new(false),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            usable_start: AtomicUsize::new(0),
            usable_end: AtomicUsize::new(0),
            id: AtomicU64::new(0),
            context_raw: AtomicU64::new(0),
            policy: AtomicU8::new(0),
        }
    }
}

static SLOTS: [Slot; REGISTRY_CAPACITY] = [const { Slot::new() }; REGISTRY_CAPACITY];
/// Slots ever used: lookups scan `0..HIGH_WATER`.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);
static NEXT_REGISTRATION: AtomicU64 = AtomicU64::new(1);

/// A snapshot of one registered region, as the handler saw it.
#[derive(Clone, Copy)]
struct Hit {
    start: usize,
    usable_start: usize,
    usable_end: usize,
    id: u64,
    context_raw: u64,
    policy: u8,
}

fn lookup(addr: usize) -> Option<Hit> {
    let n = HIGH_WATER.load(Ordering::Acquire).min(REGISTRY_CAPACITY);
    for slot in &SLOTS[..n] {
        for _attempt in 0..4 {
            let s1 = slot.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let live = slot.live.load(Ordering::Relaxed);
            let start = slot.start.load(Ordering::Relaxed);
            let end = slot.end.load(Ordering::Relaxed);
            let hit = Hit {
                start,
                usable_start: slot.usable_start.load(Ordering::Relaxed),
                usable_end: slot.usable_end.load(Ordering::Relaxed),
                id: slot.id.load(Ordering::Relaxed),
                context_raw: slot.context_raw.load(Ordering::Relaxed),
                policy: slot.policy.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) != s1 {
                continue;
            }
            if live && (start..end).contains(&addr) {
                return Some(hit);
            }
            break;
        }
    }
    None
}

/// What the registry needs to know about a region of nebula memory.
#[derive(Clone)]
pub(crate) struct RegionSpec {
    /// First byte of the leading guard (or of the region, without guards).
    pub start: usize,
    /// One past the trailing guard.
    pub end: usize,
    /// The usable part.
    pub usable_start: usize,
    /// One past the usable part.
    pub usable_end: usize,
    /// The owner.
    pub context: Option<ContextId>,
    /// Where reports for this region go, before the process-wide handler.
    pub sink: Option<Sink>,
    /// A policy for this region instead of the process-wide one.
    pub policy: Option<Policy>,
}

/// A user handler shared by the regions of one owner (a sandbox, a domain set).
pub(crate) type Sink = Arc<Mutex<Option<Handler>>>;
type Handler = Arc<dyn Fn(&ViolationInfo) + Send + Sync + 'static>;

struct Meta {
    context: Option<ContextId>,
    sink: Option<Sink>,
}

fn metas() -> std::sync::MutexGuard<'static, HashMap<u64, Meta>> {
    static METAS: OnceLock<Mutex<HashMap<u64, Meta>>> = OnceLock::new();
    METAS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// A region's entry in the fault-time registry; removed on drop. Drop it before the memory
/// is unmapped (declare it before the mapping in a struct), so that a late fault on the
/// address is never attributed to a region that no longer exists.
#[derive(Debug)]
pub(crate) struct Registration {
    slot: usize,
    id: u64,
}

impl Registration {
    /// The registration id (reports name it when the region is gone).
    #[allow(dead_code)]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

fn policy_code(p: Option<Policy>) -> u8 {
    match p {
        None => 0,
        Some(Policy::Abort) => 1,
        Some(Policy::Audit) => 2,
    }
}

/// Registers a region so that faults in it are reported; installs the handler and starts
/// the delivery thread on first use.
pub(crate) fn register(spec: RegionSpec) -> Result<Registration, ViolationError> {
    install()?;
    let id = NEXT_REGISTRATION.fetch_add(1, Ordering::Relaxed);
    for (i, slot) in SLOTS.iter().enumerate() {
        if slot
            .claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        metas().insert(
            id,
            Meta {
                context: spec.context,
                sink: spec.sink.clone(),
            },
        );
        slot.seq.fetch_add(1, Ordering::Acquire);
        slot.start.store(spec.start, Ordering::Relaxed);
        slot.end.store(spec.end, Ordering::Relaxed);
        slot.usable_start
            .store(spec.usable_start, Ordering::Relaxed);
        slot.usable_end.store(spec.usable_end, Ordering::Relaxed);
        slot.id.store(id, Ordering::Relaxed);
        slot.context_raw
            .store(spec.context.map_or(0, ContextId::get), Ordering::Relaxed);
        slot.policy
            .store(policy_code(spec.policy), Ordering::Relaxed);
        slot.live.store(true, Ordering::Relaxed);
        slot.seq.fetch_add(1, Ordering::Release);
        HIGH_WATER.fetch_max(i + 1, Ordering::AcqRel);
        return Ok(Registration { slot: i, id });
    }
    Err(ViolationError::RegistryFull {
        capacity: REGISTRY_CAPACITY,
    })
}

impl Drop for Registration {
    fn drop(&mut self) {
        let slot = &SLOTS[self.slot];
        slot.seq.fetch_add(1, Ordering::Acquire);
        slot.live.store(false, Ordering::Relaxed);
        slot.seq.fetch_add(1, Ordering::Release);
        slot.claimed.store(false, Ordering::Release);
        metas().remove(&self.id);
    }
}

// ---------------------------------------------------------------------------------------
// The ring: bounded, preallocated, lock-free (Vyukov's MPMC queue with one consumer).

mod code {
    pub const GUARD: u32 = 1;
    pub const PKEY: u32 = 2;
    pub const PROT: u32 = 3;
    pub const UNMAPPED: u32 = 4;
}

struct Record {
    seq: AtomicUsize,
    kind: AtomicU32,
    pkey: AtomicU32,
    /// 0 unknown, 1 read, 2 write.
    write: AtomicU8,
    addr: AtomicUsize,
    region: AtomicUsize,
    id: AtomicU64,
    tid: AtomicI32,
    time_ns: AtomicU64,
}

impl Record {
    const fn new(i: usize) -> Record {
        Record {
            seq: AtomicUsize::new(i),
            kind: AtomicU32::new(0),
            pkey: AtomicU32::new(0),
            write: AtomicU8::new(0),
            addr: AtomicUsize::new(0),
            region: AtomicUsize::new(0),
            id: AtomicU64::new(0),
            tid: AtomicI32::new(0),
            time_ns: AtomicU64::new(0),
        }
    }
}

static RING: [Record; RING_CAPACITY] = {
    let mut r = [const { Record::new(0) }; RING_CAPACITY];
    let mut i = 0;
    while i < RING_CAPACITY {
        r[i] = Record::new(i);
        i += 1;
    }
    r
};
static RING_TAIL: AtomicUsize = AtomicUsize::new(0);
/// Consumed by the delivery thread only.
static RING_HEAD: AtomicUsize = AtomicUsize::new(0);
/// Ring tickets whose handlers have run (all tickets below this value).
static RING_DELIVERED: AtomicUsize = AtomicUsize::new(0);
static LOST: AtomicU64 = AtomicU64::new(0);

struct Raw {
    kind: u32,
    pkey: u32,
    write: u8,
    addr: usize,
    region: usize,
    id: u64,
    tid: i32,
    time_ns: u64,
}

/// Pushes a record; returns its ticket, or `None` when the ring is full.
fn ring_push(r: &Raw) -> Option<usize> {
    let mut pos = RING_TAIL.load(Ordering::Relaxed);
    loop {
        let cell = &RING[pos % RING_CAPACITY];
        let seq = cell.seq.load(Ordering::Acquire);
        match seq.cmp(&pos) {
            std::cmp::Ordering::Equal => {
                match RING_TAIL.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        cell.kind.store(r.kind, Ordering::Relaxed);
                        cell.pkey.store(r.pkey, Ordering::Relaxed);
                        cell.write.store(r.write, Ordering::Relaxed);
                        cell.addr.store(r.addr, Ordering::Relaxed);
                        cell.region.store(r.region, Ordering::Relaxed);
                        cell.id.store(r.id, Ordering::Relaxed);
                        cell.tid.store(r.tid, Ordering::Relaxed);
                        cell.time_ns.store(r.time_ns, Ordering::Relaxed);
                        cell.seq.store(pos + 1, Ordering::Release);
                        return Some(pos);
                    }
                    Err(p) => pos = p,
                }
            }
            std::cmp::Ordering::Less => return None,
            std::cmp::Ordering::Greater => pos = RING_TAIL.load(Ordering::Relaxed),
        }
    }
}

/// Pops the next record (delivery thread only).
fn ring_pop() -> Option<(usize, Raw)> {
    let pos = RING_HEAD.load(Ordering::Relaxed);
    let cell = &RING[pos % RING_CAPACITY];
    if cell.seq.load(Ordering::Acquire) != pos + 1 {
        return None;
    }
    let raw = Raw {
        kind: cell.kind.load(Ordering::Relaxed),
        pkey: cell.pkey.load(Ordering::Relaxed),
        write: cell.write.load(Ordering::Relaxed),
        addr: cell.addr.load(Ordering::Relaxed),
        region: cell.region.load(Ordering::Relaxed),
        id: cell.id.load(Ordering::Relaxed),
        tid: cell.tid.load(Ordering::Relaxed),
        time_ns: cell.time_ns.load(Ordering::Relaxed),
    };
    cell.seq.store(pos + RING_CAPACITY, Ordering::Release);
    RING_HEAD.store(pos + 1, Ordering::Relaxed);
    Some((pos, raw))
}

// ---------------------------------------------------------------------------------------
// Delivery.

struct Runtime {
    wake: OwnedFd,
    delivery_tid: AtomicI32,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INSTALL: Mutex<()> = Mutex::new(());
static INSTALLED: AtomicBool = AtomicBool::new(false);
static GLOBAL_POLICY: AtomicU8 = AtomicU8::new(1);
static GLOBAL_HANDLER: Mutex<Option<Handler>> = Mutex::new(None);
static QUEUE: Mutex<VecDeque<ViolationInfo>> = Mutex::new(VecDeque::new());
static QUEUED: AtomicU64 = AtomicU64::new(0);
static QUEUE_DELIVERED: AtomicU64 = AtomicU64::new(0);

/// Installs the process-wide SIGSEGV handler and starts the delivery thread, once per
/// process; later calls return at once. Region constructors call it, so calling it yourself
/// is only needed to fail early.
///
/// # Errors
/// [`ViolationError::InstallHandler`], [`ViolationError::StartDelivery`].
pub fn install() -> Result<(), ViolationError> {
    if INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    if RUNTIME.get().is_none() {
        let wake = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
            .map_err(|e| ViolationError::StartDelivery(e.into()))?;
        let _ = RUNTIME.set(Runtime {
            wake,
            delivery_tid: AtomicI32::new(0),
        });
        std::thread::Builder::new()
            .name("nebula-violations".into())
            .spawn(delivery_loop)
            .map_err(ViolationError::StartDelivery)?;
    }
    signal::install_segv(on_fault).map_err(ViolationError::InstallHandler)?;
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

fn wake() {
    if let Some(rt) = RUNTIME.get() {
        let _ = rustix::io::write(&rt.wake, &1u64.to_ne_bytes());
    }
}

/// Sets the process-wide policy for protection-key faults (default [`Policy::Abort`]).
pub fn set_policy(policy: Policy) {
    GLOBAL_POLICY.store(policy_code(Some(policy)), Ordering::Relaxed);
}

/// The process-wide policy.
pub fn policy() -> Policy {
    if GLOBAL_POLICY.load(Ordering::Relaxed) == 2 {
        Policy::Audit
    } else {
        Policy::Abort
    }
}

/// Sets the process-wide violation handler: it runs on the delivery thread for every
/// report that no region-specific handler (e.g.
/// [`MemorySandbox::set_violation_handler`](crate::sandbox::MemorySandbox::set_violation_handler))
/// takes. Without any handler, reports are printed on stderr.
///
/// A panic in the handler is caught and printed; the delivery thread goes on.
pub fn set_violation_handler(handler: impl Fn(&ViolationInfo) + Send + Sync + 'static) {
    *GLOBAL_HANDLER.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(handler));
}

/// Removes the process-wide handler (reports go to stderr again).
pub fn clear_violation_handler() {
    *GLOBAL_HANDLER.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// Queues a violation found outside a signal handler (a userfaultfd event, a cgroup event,
/// a trap) for delivery on the delivery thread, like the faults the signal handler reports.
///
/// # Errors
/// [`ViolationError::StartDelivery`] when the delivery thread cannot be started.
pub fn report(info: ViolationInfo) -> Result<(), ViolationError> {
    install()?;
    QUEUE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push_back(info);
    QUEUED.fetch_add(1, Ordering::Release);
    wake();
    Ok(())
}

/// Waits until every report queued before this call has been delivered, at most `timeout`;
/// returns whether it got there.
pub fn flush(timeout: Duration) -> bool {
    let ring_target = RING_TAIL.load(Ordering::Acquire);
    let queue_target = QUEUED.load(Ordering::Acquire);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if RING_DELIVERED.load(Ordering::Acquire) >= ring_target
            && QUEUE_DELIVERED.load(Ordering::Acquire) >= queue_target
        {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reports the signal handler could not queue because the ring was full (each was still
/// printed on stderr when fail-stop).
pub fn lost_reports() -> u64 {
    LOST.load(Ordering::Relaxed)
}

fn delivery_loop() {
    let Some(rt) = RUNTIME.get() else { return };
    rt.delivery_tid.store(
        rustix::thread::gettid().as_raw_nonzero().get(),
        Ordering::Release,
    );
    let mut buf = [0u8; 8];
    let mut lost_seen = 0;
    loop {
        // Blocking read: returns once the counter is non-zero, and resets it.
        match rustix::io::read(&rt.wake, &mut buf) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                eprintln!("nebula-memory: violation delivery stopped: eventfd read failed: {e}");
                return;
            }
        }
        while let Some((ticket, raw)) = ring_pop() {
            let (info, sink) = info_from_raw(&raw);
            deliver(&info, sink);
            RING_DELIVERED.store(ticket + 1, Ordering::Release);
        }
        loop {
            let next = QUEUE.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            let Some(info) = next else { break };
            let sink = info.region.and_then(sink_for_region);
            deliver(&info, sink);
            QUEUE_DELIVERED.fetch_add(1, Ordering::Release);
        }
        let lost = LOST.load(Ordering::Relaxed);
        if lost != lost_seen {
            eprintln!(
                "nebula-memory: {} violation report(s) lost: the ring of {RING_CAPACITY} was full",
                lost - lost_seen
            );
            lost_seen = lost;
        }
    }
}

fn sink_for_region(start: usize) -> Option<Handler> {
    let hit = lookup(start)?;
    let metas = metas();
    let sink = metas.get(&hit.id)?.sink.as_ref()?;
    sink.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn info_from_raw(raw: &Raw) -> (ViolationInfo, Option<Handler>) {
    let (context, sink) = {
        let metas = metas();
        match metas.get(&raw.id) {
            Some(m) => (
                m.context,
                m.sink
                    .as_ref()
                    .and_then(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            ),
            None => (None, None),
        }
    };
    let write = match raw.write {
        1 => Some(false),
        2 => Some(true),
        _ => None,
    };
    let kind = match raw.kind {
        code::GUARD => ViolationKind::GuardPage,
        code::PKEY => ViolationKind::PkeyFault { pkey: raw.pkey },
        code::PROT => ViolationKind::PageProtection { write },
        _ => ViolationKind::Unmapped,
    };
    let info = ViolationInfo {
        address: Some(raw.addr),
        kind,
        region: Some(raw.region),
        context,
        thread_id: Some(raw.tid),
        pid: None,
        timestamp: UNIX_EPOCH + Duration::from_nanos(raw.time_ns),
    };
    (info, sink)
}

fn deliver(info: &ViolationInfo, sink: Option<Handler>) {
    let handler = sink.or_else(|| {
        GLOBAL_HANDLER
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    });
    match handler {
        Some(h) => {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(info)));
            if r.is_err() {
                eprintln!("nebula-memory: the violation handler panicked on {info:?}");
            }
        }
        None => {
            eprintln!("nebula-memory: violation: {info:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The fault handler (signal context: statics, atomics and the stack only).

fn on_fault(frame: &mut FaultFrame) -> Disposition {
    let Some(hit) = lookup(frame.addr) else {
        return Disposition::Chain;
    };
    let in_guard = !(hit.usable_start..hit.usable_end).contains(&frame.addr);
    let kind = if in_guard {
        code::GUARD
    } else {
        match frame.code {
            SEGV_PKUERR => code::PKEY,
            SEGV_ACCERR => code::PROT,
            SEGV_MAPERR => code::UNMAPPED,
            _ => return Disposition::Chain,
        }
    };
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    let time_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .unwrap_or(0);
    let pkey = frame.pkey.unwrap_or(0);
    let raw = Raw {
        kind,
        pkey,
        write: match frame.write {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        },
        addr: frame.addr,
        region: hit.usable_start,
        id: hit.id,
        tid,
        time_ns,
    };
    let ticket = ring_push(&raw);
    if ticket.is_none() {
        LOST.fetch_add(1, Ordering::Relaxed);
    }
    wake();
    let policy = match hit.policy {
        0 => GLOBAL_POLICY.load(Ordering::Relaxed),
        p => p,
    };
    if kind == code::PKEY
        && policy == 2
        && pkey < 16
        && let Some(saved) = frame.saved_pkru()
    {
        let opened = saved & !(0b11 << (2 * pkey));
        if frame.set_saved_pkru(opened) {
            return Disposition::Resume;
        }
    }
    fail_stop(&raw, &hit, ticket)
}

fn fail_stop(raw: &Raw, hit: &Hit, ticket: Option<usize>) -> ! {
    let on_delivery_thread = RUNTIME
        .get()
        .is_some_and(|rt| rt.delivery_tid.load(Ordering::Acquire) == raw.tid);
    if let Some(t) = ticket
        && !on_delivery_thread
    {
        let step = rustix::thread::Timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        for _ in 0..FAIL_STOP_WAIT.as_millis() {
            if RING_DELIVERED.load(Ordering::Acquire) > t {
                break;
            }
            let _ = rustix::thread::nanosleep(&step);
        }
    }
    let mut line = StackLine::new();
    let what = match raw.kind {
        code::GUARD => "guard page hit",
        code::PKEY => "protection-key fault",
        code::PROT => "page-protection fault",
        _ => "access to unmapped memory",
    };
    let _ = write!(line, "nebula-memory: violation: {what} at {:#x}", raw.addr);
    if raw.kind == code::PKEY {
        let _ = write!(line, " (pkey {})", raw.pkey);
    }
    match raw.write {
        1 => {
            let _ = write!(line, " (read)");
        }
        2 => {
            let _ = write!(line, " (write)");
        }
        _ => {}
    }
    let _ = write!(
        line,
        " in region {:#x}..{:#x} (usable {:#x}..{:#x})",
        hit.start,
        hit.usable_end.max(hit.start),
        hit.usable_start,
        hit.usable_end
    );
    if hit.context_raw != 0 {
        let _ = write!(line, " of ctx-{}", hit.context_raw);
    }
    let _ = writeln!(line, ", thread {}; fail-stop: aborting", raw.tid);
    signal::write_stderr(line.as_bytes());
    signal::abort_now()
}

/// A line formatted on the stack (no allocation in signal context); truncates when full.
struct StackLine {
    buf: [u8; 512],
    len: usize,
}

impl StackLine {
    fn new() -> Self {
        StackLine {
            buf: [0; 512],
            len: 0,
        }
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for StackLine {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
