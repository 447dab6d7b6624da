//! The wasm level ([`SecurityLevel::High`](super::SecurityLevel::High), feature `wasm`): each
//! context is one wasmtime [`Store`] holding one instance of a compiled module.
//!
//! ## What stops what
//!
//! | A module tries to | Stopped by | Reported as |
//! |---|---|---|
//! | read or write outside its linear memory | the 4 GiB reservation + 32 MiB guard of each pool slot: the access faults on `PROT_NONE`, wasmtime's signal handler turns it into `Trap::MemoryOutOfBounds` | [`WasmError::Trap`] → [`IsolationError::AccessViolation`](crate::IsolationError::AccessViolation) |
//! | grow its memory past [`WasmConfig::memory_limit`] | [`StoreLimits`] (wrapped to record the refusal): `memory.grow` returns -1, or traps with [`WasmConfig::trap_on_grow_failure`] | counted in [`WasmStats::grow_refusals`]; with the trap, [`WasmError::LimitRefused`] → [`IsolationError::LimitExceeded`](crate::IsolationError::LimitExceeded) |
//! | declare more memories, tables or table elements than allowed | checked against [`Module::resources_required`] before instantiation, and [`StoreLimits`] | [`WasmError::LimitRefused`] |
//! | run longer than its instruction budget | fuel ([`WasmConfig::fuel`]), `Trap::OutOfFuel` | [`WasmError::OutOfFuel`] → `LimitExceeded { limit: "fuel" }` |
//! | run longer than its wall-clock deadline | epoch interruption: one ticker thread per [`WasmIsolation`] bumps the engine's epoch every [`WasmConfig::epoch_tick`]; a per-store callback compares the clock with the call's deadline | [`WasmError::DeadlineExceeded`] → [`IsolationError::DeadlineExceeded`](crate::IsolationError::DeadlineExceeded) |
//! | recurse without end | [`WasmConfig::max_wasm_stack`], `Trap::StackOverflow` | [`WasmError::StackExhausted`] |
//! | call the host | nothing to call: no imports are linked; a module that imports anything is refused at compile time | [`WasmError::UnresolvedImport`] |
//! | start too many contexts | the pool's [`WasmConfig::max_contexts`] slots | `LimitExceeded { limit: "wasm contexts" }` |
//!
//! Every trap also reaches [`WasmConfig::on_violation`] as a [`ViolationInfo`] with
//! [`ViolationKind::WasmTrap`]; without a callback it goes to the process-wide dispatch
//! ([`violation::report`]). A context stays usable after a trap: the next call gets a fresh
//! budget and deadline.
//!
//! ## Memory layout
//!
//! All contexts of one [`WasmIsolation`] come from one wasmtime pooling allocator, reserved
//! when the isolation is created: `max_contexts` slots of (4 GiB + 32 MiB guard) of address
//! space each, `PROT_NONE` until used (about 4 TiB of `VmSize` for the default 1000 slots;
//! it costs no memory, but `RLIMIT_AS` cannot be used with this level). Where the probe says
//! protection keys work and wasmtime agrees (it also wants a `GenuineIntel` CPU; see
//! [`pkey_striping_support`]), slots are striped across up to
//! [`WasmConfig::max_pkey_stripes`] keys (wasmtime's "ColorGuard"): neighbouring slots carry
//! different keys, so one slot's guard region can be its neighbours' memory and up to that
//! many times more slots fit in the same address space. Slots are then sized to
//! [`WasmConfig::memory_limit`]. wasmtime takes those keys for the life of the process, and
//! writes PKRU on every entry into and exit from wasm (exit: all keys open); this module puts
//! back the caller's PKRU after each call, so a thread in a protection-key domain stays in it.
//!
//! ## Signals
//!
//! wasmtime installs its `SIGSEGV`/`SIGBUS`/`SIGILL`/`SIGFPE` handlers when the first engine
//! is created. nebula's violation handler ([`violation::install`]) chains to the handler it
//! found for faults outside nebula regions, and wasmtime chains to the one it found for
//! faults outside wasm code, so either order works (both are tested).
//!
//! ## Entry point for `nebula-ctl run --wasm` (recommended convention)
//!
//! No WASI: `wasmtime-wasi` 48 implements preview 1 on top of preview 2, which pulls in the
//! component model, async (fiber stacks), tokio and cap-std, and gives the guest a
//! filesystem and clock surface to police. Instead, a module for `nebula-ctl run` imports
//! nothing, exports a memory, and exports either
//!
//! - `_start: [] -> []`: run for effect; exit status 0; or
//! - `run: [i32 i32] -> [i32]`: called with `(ptr, len)` of the arguments after `--`, each
//!   followed by a NUL byte, written at the address returned by the module's export
//!   `alloc: [i32] -> [i32]` (required when there are arguments; `run(0, 0)` without); the
//!   result is the exit status (0..=255, anything else 1).
//!
//! An optional export `output: [] -> [i64]` gives `(ptr << 32) | len` of bytes the CLI
//! writes to stdout after the call. `--memory`, `--fuel` and `--time` set
//! [`WasmConfig::memory_limit`], [`WasmConfig::fuel`] and [`WasmConfig::deadline`]; a trap
//! prints the [`IsolationError`](crate::IsolationError) and exits 124 for fuel or the deadline (like `timeout(1)`),
//! 125 for a refused limit, 134 for any other trap.
//!
//! ## Example
//!
//! ```
//! use nebula_memory::isolation::wasm::{WasmConfig, WasmIsolation, WasmValue};
//!
//! let iso = WasmIsolation::new(WasmConfig { max_contexts: 4, ..WasmConfig::default() })?;
//! let wat = r#"(module (memory (export "memory") 1)
//!                (func (export "add") (param i32 i32) (result i32)
//!                  local.get 0 local.get 1 i32.add))"#;
//! let mut ctx = iso.load(wat.as_bytes())?;
//! let out = iso.call(&mut ctx, "add", &[WasmValue::I32(2), WasmValue::I32(40)])?;
//! assert_eq!(out, vec![WasmValue::I32(42)]);
//! # Ok::<(), nebula_memory::IsolationError>(())
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use wasmtime::{
    Config, Enabled, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Memory,
    Module, PoolingAllocationConfig, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder,
    UpdateDeadline, Val, ValType,
};

/// wasmtime's trap codes (in [`WasmError::Trap`]) and its typed-call traits (for
/// [`WasmIsolation::call_typed`]).
pub use wasmtime::{Trap, WasmParams, WasmResults};

use crate::base::ContextId;
use crate::violation::{self, ViolationInfo, ViolationKind};

/// The wasm page size (64 KiB).
pub const WASM_PAGE: usize = 64 << 10;

/// A handler for wasm traps; it runs on the thread that made the call, after the trap.
pub type ViolationCallback = Arc<dyn Fn(&ViolationInfo) + Send + Sync>;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The limits of a [`WasmIsolation`] and of every context it creates.
#[derive(Clone)]
pub struct WasmConfig {
    /// Most bytes of linear memory per context (rounded up to 64 KiB pages). Also the
    /// pool's per-slot maximum. Default 16 MiB.
    pub memory_limit: usize,
    /// Most elements per table. Default 10 000.
    pub table_elements: usize,
    /// Most tables per context. Default 1.
    pub tables: usize,
    /// Most linear memories per context. Default 1.
    pub memories: usize,
    /// Most instances per store (a context holds one). Default 1.
    pub instances: usize,
    /// Instruction budget per call (and for instantiation, which runs the start function),
    /// in wasmtime fuel units (about one per wasm operator). `None` turns metering off
    /// engine-wide, which makes code about 2-3x faster on tight loops. Default `None`.
    pub fuel: Option<u64>,
    /// Wall-clock deadline per call (and for instantiation). `None`: no deadline. Default
    /// 5 s, so an endless loop cannot hang the caller by default.
    pub deadline: Option<Duration>,
    /// Period of the epoch ticker; a deadline is noticed within about one tick after it
    /// passed. Default 5 ms.
    pub epoch_tick: Duration,
    /// `memory.grow`/`table.grow` past a limit traps (instead of returning -1). Default
    /// `false` (the wasm semantics).
    pub trap_on_grow_failure: bool,
    /// Live contexts at once: the slots the pooling allocator reserves. Default 1000.
    pub max_contexts: u32,
    /// Native stack the wasm code may use, in bytes. Default 512 KiB.
    pub max_wasm_stack: usize,
    /// Stripe pool slots across protection keys where [`crate::features`] says pkeys work.
    /// Default `true` (and off anyway on hosts without PKU).
    pub pkey_striping: bool,
    /// Most protection keys wasmtime may take for striping (process-wide, for the life of
    /// the process; the thread level needs keys too). Default 4.
    pub max_pkey_stripes: usize,
    /// Largest module (binary or text) [`WasmIsolation::compile`] accepts, in bytes: compiling
    /// costs time and memory in the host that no other limit bounds. Default 16 MiB.
    pub max_module_bytes: usize,
    /// Gets every trap as a [`ViolationInfo`]; `None`: [`violation::report`] (the
    /// process-wide handler, or stderr).
    pub on_violation: Option<ViolationCallback>,
}

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            memory_limit: 16 << 20,
            table_elements: 10_000,
            tables: 1,
            memories: 1,
            instances: 1,
            fuel: None,
            deadline: Some(Duration::from_secs(5)),
            epoch_tick: Duration::from_millis(5),
            trap_on_grow_failure: false,
            max_contexts: 1000,
            max_wasm_stack: 512 << 10,
            pkey_striping: true,
            max_pkey_stripes: 4,
            max_module_bytes: 16 << 20,
            on_violation: None,
        }
    }
}

impl std::fmt::Debug for WasmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmConfig")
            .field("memory_limit", &self.memory_limit)
            .field("table_elements", &self.table_elements)
            .field("tables", &self.tables)
            .field("memories", &self.memories)
            .field("instances", &self.instances)
            .field("fuel", &self.fuel)
            .field("deadline", &self.deadline)
            .field("epoch_tick", &self.epoch_tick)
            .field("trap_on_grow_failure", &self.trap_on_grow_failure)
            .field("max_contexts", &self.max_contexts)
            .field("max_wasm_stack", &self.max_wasm_stack)
            .field("pkey_striping", &self.pkey_striping)
            .field("max_pkey_stripes", &self.max_pkey_stripes)
            .field("max_module_bytes", &self.max_module_bytes)
            .field("on_violation", &self.on_violation.is_some())
            .finish()
    }
}

/// Errors of the wasm level.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasmError {
    /// No context with this id is kept ([`WasmIsolation::create_wasm_context`]).
    #[error("wasm context {0} not found")]
    ContextNotFound(ContextId),

    /// The configuration is inconsistent.
    #[error("invalid wasm configuration: {0}")]
    Configure(String),

    /// wasmtime refused the engine, usually because the pool's address-space reservation
    /// failed.
    #[error(
        "creating the wasmtime engine failed (a pool of {max_contexts} slots of {memory_limit} bytes); Hint: lower max_contexts, and do not set RLIMIT_AS"
    )]
    CreateEngine {
        /// Slots asked for.
        max_contexts: u32,
        /// Memory per slot.
        memory_limit: usize,
        /// wasmtime's answer.
        #[source]
        source: BoxError,
    },

    /// The epoch ticker thread could not be started.
    #[error("starting the epoch ticker thread failed")]
    StartTicker(#[source] std::io::Error),

    /// The bytes are not a valid wasm module (binary or text format).
    #[error("compiling the wasm module ({len} bytes) failed")]
    Compile {
        /// Size of the input.
        len: usize,
        /// The validator's or compiler's answer.
        #[source]
        source: BoxError,
    },

    /// The module exports no linear memory.
    #[error("the wasm module exports no memory; Hint: export one as \"memory\"")]
    NoMemoryExport,

    /// The module imports something; the wasm level links no host functions.
    #[error(
        "the wasm module imports {name:?} from module {module:?}; the wasm level provides no imports; Hint: define it inside the module"
    )]
    UnresolvedImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
    },

    /// A limit refused what the module asked for: at instantiation (initial memory or
    /// table size, counts), or a trapping grow.
    #[error(
        "ctx {context}: {limit} limit refused: {requested} requested, {used} in use, limit {max}"
    )]
    LimitRefused {
        /// The context.
        context: ContextId,
        /// Which limit: `"memory"` (bytes), `"table elements"`, `"memories"`, `"tables"`,
        /// `"wasm contexts"`.
        limit: &'static str,
        /// What was asked for.
        requested: u64,
        /// What was in use.
        used: u64,
        /// The limit.
        max: u64,
    },

    /// The module declares more than the limits allow (found at compile time, where the
    /// pool checks module shapes; [`WasmIsolation::load`] reports it as
    /// [`WasmError::LimitRefused`]).
    #[error("the wasm module needs {requested} {limit}, the limit is {max}")]
    ModuleTooLarge {
        /// Which limit (as in [`WasmError::LimitRefused`], or `"module bytes"`).
        limit: &'static str,
        /// What the module declares.
        requested: u64,
        /// The limit.
        max: u64,
    },

    /// wasmtime failed to instantiate for another reason (the start function trapped, the
    /// kernel refused memory).
    #[error("ctx {context}: instantiating the module failed")]
    Instantiate {
        /// The context.
        context: ContextId,
        /// wasmtime's answer.
        #[source]
        source: BoxError,
    },

    /// No exported function of this name.
    #[error("ctx {context}: the module exports no function {export:?}")]
    ExportNotFound {
        /// The context.
        context: ContextId,
        /// The name asked for.
        export: String,
    },

    /// The arguments do not match the export's parameter types.
    #[error("ctx {context}: {export:?} takes ({expected}), called with ({given})")]
    SignatureMismatch {
        /// The context.
        context: ContextId,
        /// The export.
        export: String,
        /// Its parameter types.
        expected: String,
        /// The argument types given.
        given: String,
    },

    /// The instruction budget ran out.
    #[error(
        "ctx {context}: fuel budget of {budget} exhausted in {export:?}; Hint: raise the fuel budget (--fuel with nebula-ctl run --wasm)"
    )]
    OutOfFuel {
        /// The context.
        context: ContextId,
        /// What ran.
        export: String,
        /// The budget.
        budget: u64,
    },

    /// The wall-clock deadline passed; the code was stopped.
    #[error(
        "ctx {context}: deadline of {limit:?} exceeded in {export:?}, stopped after {elapsed:?}"
    )]
    DeadlineExceeded {
        /// The context.
        context: ContextId,
        /// What ran.
        export: String,
        /// The deadline.
        limit: Duration,
        /// When it was stopped.
        elapsed: Duration,
    },

    /// The wasm stack ran out (runaway recursion).
    #[error(
        "ctx {context}: wasm stack of {max_stack} bytes exhausted in {export:?}; Hint: raise the wasm stack limit of the configuration, or make the module recurse less deeply"
    )]
    StackExhausted {
        /// The context.
        context: ContextId,
        /// What ran.
        export: String,
        /// The stack limit.
        max_stack: usize,
    },

    /// Any other trap: out-of-bounds memory or table access, `unreachable`, division by
    /// zero, a bad indirect call.
    #[error("ctx {context}: wasm trap in {export:?}: {trap}")]
    Trap {
        /// The context.
        context: ContextId,
        /// What ran.
        export: String,
        /// The trap.
        trap: Trap,
    },

    /// A call failed for a reason that is not a trap.
    #[error("ctx {context}: calling {export:?} failed")]
    Call {
        /// The context.
        context: ContextId,
        /// The export.
        export: String,
        /// wasmtime's answer.
        #[source]
        source: BoxError,
    },

    /// A host-side read or write of the linear memory fell outside it.
    #[error(
        "ctx {context}: {len} bytes at {offset:#x} are outside the linear memory of {size} bytes"
    )]
    MemoryAccess {
        /// The context.
        context: ContextId,
        /// Start offset.
        offset: usize,
        /// Length.
        len: usize,
        /// The memory's current size.
        size: usize,
    },
}

impl WasmError {
    /// The name given to [`ViolationKind::WasmTrap`] for errors that are guest violations
    /// (a trap, a refused limit), `None` for the others.
    pub fn trap_name(&self) -> Option<String> {
        match self {
            WasmError::OutOfFuel { .. } => Some(format!("{:?}", Trap::OutOfFuel)),
            WasmError::DeadlineExceeded { .. } => Some(format!("{:?}", Trap::Interrupt)),
            WasmError::StackExhausted { .. } => Some(format!("{:?}", Trap::StackOverflow)),
            WasmError::Trap { trap, .. } => Some(format!("{trap:?}")),
            WasmError::LimitRefused { limit, .. } => Some(format!("LimitRefused({limit})")),
            _ => None,
        }
    }

    fn context(&self) -> Option<ContextId> {
        match self {
            WasmError::LimitRefused { context, .. }
            | WasmError::Instantiate { context, .. }
            | WasmError::ExportNotFound { context, .. }
            | WasmError::SignatureMismatch { context, .. }
            | WasmError::OutOfFuel { context, .. }
            | WasmError::DeadlineExceeded { context, .. }
            | WasmError::StackExhausted { context, .. }
            | WasmError::Trap { context, .. }
            | WasmError::Call { context, .. }
            | WasmError::MemoryAccess { context, .. } => Some(*context),
            _ => None,
        }
    }
}

pub(crate) use crate::base::error_chain;

fn boxed(e: wasmtime::Error) -> BoxError {
    e.into_boxed_dyn_error()
}

/// A wasm value crossing the host boundary (numbers only: no references are passed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WasmValue {
    /// `i32`.
    I32(i32),
    /// `i64`.
    I64(i64),
    /// `f32`.
    F32(f32),
    /// `f64`.
    F64(f64),
}

impl WasmValue {
    fn to_val(self) -> Val {
        match self {
            WasmValue::I32(v) => Val::I32(v),
            WasmValue::I64(v) => Val::I64(v),
            WasmValue::F32(v) => Val::F32(v.to_bits()),
            WasmValue::F64(v) => Val::F64(v.to_bits()),
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            WasmValue::I32(_) => "i32",
            WasmValue::I64(_) => "i64",
            WasmValue::F32(_) => "f32",
            WasmValue::F64(_) => "f64",
        }
    }

    fn from_val(v: &Val) -> Option<WasmValue> {
        match v {
            Val::I32(v) => Some(WasmValue::I32(*v)),
            Val::I64(v) => Some(WasmValue::I64(*v)),
            Val::F32(v) => Some(WasmValue::F32(f32::from_bits(*v))),
            Val::F64(v) => Some(WasmValue::F64(f64::from_bits(*v))),
            _ => None,
        }
    }

    fn matches(self, ty: &ValType) -> bool {
        matches!(
            (self, ty),
            (WasmValue::I32(_), ValType::I32)
                | (WasmValue::I64(_), ValType::I64)
                | (WasmValue::F32(_), ValType::F32)
                | (WasmValue::F64(_), ValType::F64)
        )
    }
}

/// Usage of one context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WasmStats {
    /// Current size of the exported linear memory, bytes.
    pub memory_bytes: usize,
    /// Calls made (including failed ones).
    pub calls: u64,
    /// Calls (or the instantiation) that ended in a trap or a refused limit.
    pub traps: u64,
    /// Fuel used by the last call (0 when metering is off).
    pub last_fuel_used: u64,
    /// `memory.grow`/`table.grow` requests a limit refused.
    pub grow_refusals: u64,
}

/// A compiled module, ready to instantiate many times.
#[derive(Clone)]
pub struct WasmModule {
    pre: InstancePre<StoreState>,
    memory_export: Arc<str>,
    needs: Needs,
}

impl std::fmt::Debug for WasmModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmModule")
            .field("memory_export", &self.memory_export)
            .field("needs", &self.needs)
            .finish_non_exhaustive()
    }
}

/// What the store carries: the limiter and the current call's deadline.
struct StoreState {
    limits: Limits,
    deadline_at: Option<Instant>,
}

/// [`StoreLimits`] decides; this records what it refused.
struct Limits {
    inner: StoreLimits,
    memory_limit: usize,
    table_elements: usize,
    refusals: u64,
}

/// The error a trapping grow raises (found again by downcasting).
#[derive(Debug, thiserror::Error)]
#[error("{limit} limit refused a grow from {current} to {desired}")]
struct GrowRefused {
    limit: &'static str,
    current: usize,
    desired: usize,
    max: usize,
}

impl Limits {
    fn decided(
        &mut self,
        verdict: wasmtime::Result<bool>,
        limit: &'static str,
        current: usize,
        desired: usize,
        max: usize,
    ) -> wasmtime::Result<bool> {
        match verdict {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.refusals += 1;
                Ok(false)
            }
            Err(_) => {
                self.refusals += 1;
                Err(wasmtime::Error::new(GrowRefused {
                    limit,
                    current,
                    desired,
                    max,
                }))
            }
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let v = self.inner.memory_growing(current, desired, maximum);
        let max = maximum.map_or(self.memory_limit, |m| m.min(self.memory_limit));
        self.decided(v, "memory", current, desired, max)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let v = self.inner.table_growing(current, desired, maximum);
        let max = maximum.map_or(self.table_elements, |m| m.min(self.table_elements));
        self.decided(v, "table elements", current, desired, max)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Shared by the isolation and its contexts; the ticker stops when the last one is gone.
struct Shared {
    engine: Engine,
    config: WasmConfig,
    striping: Striping,
    pkru: PkruSaver,
    live: AtomicUsize,
    /// Held for its `Drop`, which stops and joins the thread.
    _ticker: Ticker,
}

/// Whether slots are striped across protection keys, and why (not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Striping {
    /// Whether wasmtime stripes pool slots across protection keys.
    pub enabled: bool,
    /// Why (not), for reports.
    pub reason: String,
}

struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Result<Ticker, WasmError> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("nebula-wasm-epoch".into())
            .spawn(move || {
                let (lock, cv) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    let (guard, _) = cv
                        .wait_timeout(stopped, tick)
                        .unwrap_or_else(|p| p.into_inner());
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    engine.increment_epoch();
                }
            })
            .map_err(WasmError::StartTicker)?;
        Ok(Ticker {
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        let handle = self
            .thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Modules kept compiled by [`WasmIsolation::load`], keyed by their bytes.
const MODULE_CACHE_CAPACITY: usize = 64;

/// Bytes from each end of a module that go into its cache key.
const CACHE_KEY_SAMPLE: usize = 64;

/// Compiled modules, oldest first (a few dozen: a scan beats a map).
type ModuleCache = Vec<CacheEntry>;

/// A compiled module and the bytes it came from (kept to rule out key collisions).
struct CacheEntry {
    key: u64,
    bytes: Box<[u8]>,
    module: Arc<WasmModule>,
}

/// The wasm level's entry point: one wasmtime engine with a pooling allocator, one epoch
/// ticker thread, and a cache of compiled modules.
pub struct WasmIsolation {
    /// The seed's contexts kept by id ([`WasmIsolation::create_wasm_context`]); first, so
    /// that they go before the engine.
    kept: Mutex<HashMap<ContextId, WasmContext>>,
    shared: Arc<Shared>,
    cache: Mutex<ModuleCache>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for WasmIsolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmIsolation")
            .field("config", &self.shared.config)
            .field("striping", &self.shared.striping)
            .field("live_contexts", &self.live_contexts())
            .finish_non_exhaustive()
    }
}

impl WasmIsolation {
    /// Creates the engine, reserves the pool and starts the epoch ticker.
    ///
    /// # Errors
    /// [`WasmError::Configure`] for zero or out-of-range limits, [`WasmError::CreateEngine`]
    /// when wasmtime refuses (the pool's reservation failed), [`WasmError::StartTicker`].
    pub fn new(config: WasmConfig) -> Result<WasmIsolation, WasmError> {
        validate(&config)?;
        let striping = striping_choice(&config);
        // A per-context count and its total over the pool, both as the pool's u32.
        let per_ctx = |n: usize| -> Result<(u32, u32), WasmError> {
            u32::try_from(n)
                .ok()
                .and_then(|n| Some((n, n.checked_mul(config.max_contexts)?)))
                .ok_or_else(|| {
                    WasmError::Configure(format!(
                        "{n} per context x {} contexts overflows",
                        config.max_contexts
                    ))
                })
        };
        let (memories, total_memories) = per_ctx(config.memories)?;
        let (tables, total_tables) = per_ctx(config.tables)?;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(config.max_contexts)
            .total_memories(total_memories)
            .total_tables(total_tables)
            // The pool checks module shapes when a module is compiled, with a bare
            // message; its per-module ceilings are kept above the configured limits so
            // that `check_needs` refuses first, with the numbers (see POOL_CEILING).
            .max_memories_per_module(POOL_CEILING.max(memories))
            .max_tables_per_module(POOL_CEILING.max(tables))
            .table_elements(config.table_elements.max(POOL_TABLE_ELEMENTS))
            .max_memory_size(pool_memory_size(&config, &striping))
            .total_component_instances(0);
        if striping.enabled {
            pool.memory_protection_keys(Enabled::Yes)
                .max_memory_protection_keys(config.max_pkey_stripes);
        } else {
            pool.memory_protection_keys(Enabled::No);
        }
        let mut cfg = Config::new();
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .consume_fuel(config.fuel.is_some())
            .max_wasm_stack(config.max_wasm_stack)
            .memory_init_cow(true);
        let engine = Engine::new(&cfg).map_err(|e| WasmError::CreateEngine {
            max_contexts: config.max_contexts,
            memory_limit: config.memory_limit,
            source: boxed(e),
        })?;
        let ticker = Ticker::start(engine.clone(), config.epoch_tick)?;
        Ok(WasmIsolation {
            kept: Mutex::new(HashMap::new()),
            shared: Arc::new(Shared {
                engine,
                config,
                pkru: PkruSaver::new(&striping),
                striping,
                live: AtomicUsize::new(0),
                _ticker: ticker,
            }),
            cache: Mutex::new(Vec::new()),
            hasher: std::collections::hash_map::RandomState::new(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &WasmConfig {
        &self.shared.config
    }

    /// Whether protection-key striping is on, and why (not).
    pub fn striping(&self) -> &Striping {
        &self.shared.striping
    }

    /// Contexts alive now.
    pub fn live_contexts(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
    }

    /// The wasmtime engine (to precompile modules, or to compare against).
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Validates and compiles a module (binary or WAT text) and checks that it exports a
    /// linear memory and imports nothing.
    ///
    /// # Errors
    /// [`WasmError::Compile`], [`WasmError::NoMemoryExport`],
    /// [`WasmError::UnresolvedImport`], [`WasmError::ModuleTooLarge`] (over
    /// [`WasmConfig::max_module_bytes`]; with striping also for an initial memory over the
    /// limit: see [`WasmIsolation::load`]).
    pub fn compile(&self, bytes: &[u8]) -> Result<WasmModule, WasmError> {
        let max = self.shared.config.max_module_bytes;
        if bytes.len() > max {
            return Err(WasmError::ModuleTooLarge {
                limit: "module bytes",
                requested: bytes.len() as u64,
                max: max as u64,
            });
        }
        let module = match Module::new(&self.shared.engine, bytes) {
            Ok(m) => m,
            Err(e) => {
                return Err(self
                    .shape_refusal(bytes)
                    .unwrap_or_else(|| WasmError::Compile {
                        len: bytes.len(),
                        source: boxed(e),
                    }));
            }
        };
        if let Some(imp) = module.imports().next() {
            return Err(WasmError::UnresolvedImport {
                module: imp.module().to_string(),
                name: imp.name().to_string(),
            });
        }
        let mut memory_export = None;
        for exp in module.exports() {
            if matches!(exp.ty(), ExternType::Memory(_))
                && (memory_export.is_none() || exp.name() == "memory")
            {
                memory_export = Some(exp.name().to_string());
            }
        }
        let memory_export: Arc<str> = memory_export.ok_or(WasmError::NoMemoryExport)?.into();
        let linker = Linker::new(&self.shared.engine);
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| WasmError::Compile {
                len: bytes.len(),
                source: boxed(e),
            })?;
        Ok(WasmModule {
            pre,
            memory_export,
            needs: Needs::of(&module),
        })
    }

    /// With striping, the pool's slots are sized to the memory limit and the pool refuses
    /// a module with a larger initial memory at compile time, with a bare message. This
    /// compiles the module again without a pool, only on that failure path, to say which
    /// limit it exceeds.
    fn shape_refusal(&self, bytes: &[u8]) -> Option<WasmError> {
        if !self.shared.striping.enabled {
            return None;
        }
        let engine = Engine::new(&Config::new()).ok()?;
        let module = Module::new(&engine, bytes).ok()?;
        let (limit, requested, max) = Needs::of(&module).over(&self.shared.config)?;
        Some(WasmError::ModuleTooLarge {
            limit,
            requested,
            max,
        })
    }

    /// Creates a context from module bytes: compiles them the first time these bytes are
    /// seen (kept in a cache of the 64 most recently compiled), then instantiates.
    ///
    /// # Errors
    /// Those of [`WasmIsolation::compile`] (with [`WasmError::ModuleTooLarge`] turned into
    /// [`WasmError::LimitRefused`]) and [`WasmIsolation::instantiate`].
    pub fn load(&self, bytes: &[u8]) -> Result<WasmContext, WasmError> {
        let module = match self.cached_module(bytes) {
            Ok(m) => m,
            Err(WasmError::ModuleTooLarge {
                limit,
                requested,
                max,
            }) => {
                let e = refused(ContextId::fresh(), (limit, requested, max));
                return Err(self.violated(e));
            }
            Err(e) => return Err(e),
        };
        self.instantiate(&module)
    }

    /// The seed's `create_wasm_context`: [`load`](Self::load)s `wasm_module` into a context
    /// that this isolation keeps, and returns its id for
    /// [`execute_in_wasm`](Self::execute_in_wasm). [`remove_wasm_context`](Self::remove_wasm_context)
    /// gives it back (dropping it frees its pool slot); so does dropping the isolation.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn create_wasm_context(&self, wasm_module: &[u8]) -> Result<ContextId, WasmError> {
        let ctx = self.load(wasm_module)?;
        let id = ctx.id();
        self.kept_contexts().insert(id, ctx);
        Ok(id)
    }

    /// The seed's `execute_in_wasm`: runs `f` with the kept context `id`, e.g.
    /// `|ctx| wasm.call(ctx, "run", &[])`. The context is out of the map while `f` runs (so
    /// `f` may use this isolation); a panic in `f` drops it.
    ///
    /// # Errors
    /// [`WasmError::ContextNotFound`] when no kept context has this id (or `f` is already
    /// running with it).
    pub fn execute_in_wasm<F, R>(&self, id: ContextId, f: F) -> Result<R, WasmError>
    where
        F: FnOnce(&mut WasmContext) -> R,
    {
        let mut ctx = self
            .kept_contexts()
            .remove(&id)
            .ok_or(WasmError::ContextNotFound(id))?;
        let r = f(&mut ctx);
        self.kept_contexts().insert(id, ctx);
        Ok(r)
    }

    /// Takes a kept context back out of this isolation.
    pub fn remove_wasm_context(&self, id: ContextId) -> Option<WasmContext> {
        self.kept_contexts().remove(&id)
    }

    fn kept_contexts(&self) -> std::sync::MutexGuard<'_, HashMap<ContextId, WasmContext>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached_module(&self, bytes: &[u8]) -> Result<Arc<WasmModule>, WasmError> {
        // The key samples the bytes (length, head, tail); a hit is confirmed by comparing
        // them all, which is several times cheaper than hashing them all.
        let key = {
            let mut h = self.hasher.build_hasher();
            h.write_usize(bytes.len());
            h.write(&bytes[..bytes.len().min(CACHE_KEY_SAMPLE)]);
            h.write(&bytes[bytes.len().saturating_sub(CACHE_KEY_SAMPLE)..]);
            h.finish()
        };
        let lock = || self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = lock().iter().find(|e| e.key == key && *e.bytes == *bytes) {
            return Ok(Arc::clone(&e.module));
        }
        let module = Arc::new(self.compile(bytes)?);
        let mut cache = lock();
        if cache.len() >= MODULE_CACHE_CAPACITY {
            cache.remove(0);
        }
        cache.push(CacheEntry {
            key,
            bytes: bytes.into(),
            module: Arc::clone(&module),
        });
        Ok(module)
    }

    /// Modules in the compile cache now.
    pub fn cached_modules(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Forgets the compiled modules (contexts keep theirs).
    pub fn clear_module_cache(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Instantiates a compiled module into a new context: a store with its limits, its
    /// instance (the start function runs under the fuel budget and the deadline).
    ///
    /// # Errors
    /// [`WasmError::LimitRefused`] when the module needs more than the limits allow or all
    /// `max_contexts` slots are taken, [`WasmError::OutOfFuel`]/
    /// [`WasmError::DeadlineExceeded`]/[`WasmError::Trap`] from the start function,
    /// [`WasmError::Instantiate`] otherwise.
    pub fn instantiate(&self, module: &WasmModule) -> Result<WasmContext, WasmError> {
        let shared = &self.shared;
        let cfg = &shared.config;
        let id = ContextId::fresh();
        let slot = Slot::take(shared, id)?;
        if let Some(over) = module.needs.over(cfg) {
            return Err(self.violated(refused(id, over)));
        }
        let limits = StoreLimitsBuilder::new()
            .memory_size(cfg.memory_limit)
            .table_elements(cfg.table_elements)
            .instances(cfg.instances)
            .tables(cfg.tables)
            .memories(cfg.memories)
            .trap_on_grow_failure(cfg.trap_on_grow_failure)
            .build();
        let mut store = Store::new(
            &shared.engine,
            StoreState {
                limits: Limits {
                    inner: limits,
                    memory_limit: cfg.memory_limit,
                    table_elements: cfg.table_elements,
                    refusals: 0,
                },
                deadline_at: None,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            Ok(match ctx.data().deadline_at {
                Some(at) if Instant::now() >= at => UpdateDeadline::Interrupt,
                _ => UpdateDeadline::Continue(1),
            })
        });
        let mut ctx = WasmContext {
            id,
            store,
            instance: None,
            memory: None,
            fuel: cfg.fuel,
            deadline: cfg.deadline,
            metered: cfg.fuel.is_some(),
            max_stack: cfg.max_wasm_stack,
            pkru: shared.pkru,
            stats: WasmStats::default(),
            _slot: slot,
        };
        let started = ctx.arm()?;
        let pkru = ctx.pkru.save();
        let made = module.pre.instantiate(&mut ctx.store);
        drop(pkru);
        let instance = match made {
            Ok(i) => i,
            Err(e) => {
                let err = ctx.classify("(instantiation)", started, e, || WasmError::Instantiate {
                    context: id,
                    source: "see the wasmtime error".into(),
                });
                return Err(self.violated(err));
            }
        };
        let memory = instance
            .get_memory(&mut ctx.store, &module.memory_export)
            .ok_or(WasmError::NoMemoryExport)?;
        ctx.instance = Some(instance);
        ctx.memory = Some(memory);
        ctx.disarm();
        Ok(ctx)
    }

    /// Calls an exported function with numeric arguments, under the context's fuel budget
    /// and deadline.
    ///
    /// # Errors
    /// [`WasmError::ExportNotFound`], [`WasmError::SignatureMismatch`]; a trap:
    /// [`WasmError::OutOfFuel`], [`WasmError::DeadlineExceeded`],
    /// [`WasmError::StackExhausted`], [`WasmError::LimitRefused`] (a trapping grow),
    /// [`WasmError::Trap`]; each of these is also reported as a violation.
    pub fn call(
        &self,
        ctx: &mut WasmContext,
        export: &str,
        args: &[WasmValue],
    ) -> Result<Vec<WasmValue>, WasmError> {
        let instance = ctx.instance()?;
        let func =
            instance
                .get_func(&mut ctx.store, export)
                .ok_or_else(|| WasmError::ExportNotFound {
                    context: ctx.id,
                    export: export.to_string(),
                })?;
        let ty = func.ty(&ctx.store);
        let params: Vec<ValType> = ty.params().collect();
        if params.len() != args.len() || !args.iter().zip(&params).all(|(a, t)| a.matches(t)) {
            return Err(WasmError::SignatureMismatch {
                context: ctx.id,
                export: export.to_string(),
                expected: params
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                given: args
                    .iter()
                    .map(|a| a.type_name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let vals: Vec<Val> = args.iter().map(|a| a.to_val()).collect();
        let mut results: Vec<Val> = ty.results().map(|_| Val::I32(0)).collect();
        ctx.stats.calls += 1;
        let started = ctx.arm()?;
        let pkru = ctx.pkru.save();
        let r = func.call(&mut ctx.store, &vals, &mut results);
        drop(pkru);
        ctx.finish(export, started, r)
            .map_err(|e| self.violated(e))?;
        results
            .iter()
            .map(|v| {
                WasmValue::from_val(v).ok_or_else(|| WasmError::SignatureMismatch {
                    context: ctx.id,
                    export: export.to_string(),
                    expected: "numeric results".into(),
                    given: format!("{v:?}"),
                })
            })
            .collect()
    }

    /// Calls an exported function with static types (no per-call type dispatch): `P` and
    /// `R` are tuples of `i32`/`i64`/`f32`/`f64` (or a single one, or `()`).
    ///
    /// # Errors
    /// As [`WasmIsolation::call`].
    pub fn call_typed<P: WasmParams, R: WasmResults>(
        &self,
        ctx: &mut WasmContext,
        export: &str,
        args: P,
    ) -> Result<R, WasmError> {
        let instance = ctx.instance()?;
        let func = instance
            .get_typed_func::<P, R>(&mut ctx.store, export)
            .map_err(|e| {
                if instance.get_func(&mut ctx.store, export).is_some() {
                    WasmError::SignatureMismatch {
                        context: ctx.id,
                        export: export.to_string(),
                        expected: "the export's own signature".into(),
                        given: error_chain(&*boxed(e)),
                    }
                } else {
                    WasmError::ExportNotFound {
                        context: ctx.id,
                        export: export.to_string(),
                    }
                }
            })?;
        ctx.stats.calls += 1;
        let started = ctx.arm()?;
        let pkru = ctx.pkru.save();
        let r = func.call(&mut ctx.store, args);
        drop(pkru);
        ctx.finish(export, started, r).map_err(|e| self.violated(e))
    }

    /// Reports `e` as a violation when it is one; returns it.
    fn violated(&self, e: WasmError) -> WasmError {
        if let Some(trap) = e.trap_name() {
            let info = ViolationInfo {
                address: None,
                kind: ViolationKind::WasmTrap { trap },
                region: None,
                context: e.context(),
                thread_id: Some(rustix::thread::gettid().as_raw_nonzero().get()),
                pid: Some(rustix::process::getpid().as_raw_nonzero().get()),
                timestamp: SystemTime::now(),
            };
            match &self.shared.config.on_violation {
                Some(cb) => {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(&info)));
                    if r.is_err() {
                        eprintln!(
                            "nebula-memory: the wasm violation callback panicked on {info:?}"
                        );
                    }
                }
                None => {
                    if let Err(err) = violation::report(info.clone()) {
                        eprintln!("nebula-memory: violation: {info:?} (not queued: {err})");
                    }
                }
            }
        }
        e
    }
}

fn validate(c: &WasmConfig) -> Result<(), WasmError> {
    let bad = |what: &str| Err(WasmError::Configure(what.to_string()));
    if c.max_contexts == 0 {
        return bad("max_contexts must be at least 1");
    }
    if c.memories == 0 {
        return bad("memories must be at least 1 (a context exports a memory)");
    }
    if c.instances == 0 {
        return bad("instances must be at least 1");
    }
    if c.memory_limit == 0 || c.memory_limit > (4 << 30) {
        return bad("memory_limit must be 1 byte .. 4 GiB (32-bit linear memories)");
    }
    if c.epoch_tick.is_zero() {
        return bad("epoch_tick must be positive");
    }
    if c.fuel == Some(0) {
        return bad("a fuel budget of 0 runs nothing; use None to turn metering off");
    }
    if c.max_wasm_stack < 16 << 10 {
        return bad("max_wasm_stack must be at least 16 KiB");
    }
    Ok(())
}

fn round_to_page(n: usize) -> usize {
    n.div_ceil(WASM_PAGE).saturating_mul(WASM_PAGE)
}

/// Memories and tables per module the pool accepts at compile time; the configured limits
/// ([`WasmConfig::memories`], [`WasmConfig::tables`]) are enforced below it, with
/// [`WasmError::LimitRefused`].
const POOL_CEILING: u32 = 16;

/// Table elements the pool's table slots hold at least (8 bytes of address space each).
const POOL_TABLE_ELEMENTS: usize = 10_000;

/// The pool's per-slot memory maximum. Without striping it is the 4 GiB of a 32-bit
/// memory, which costs nothing more (each slot reserves 4 GiB anyway) and leaves the limit
/// to [`StoreLimits`]; with striping, slots are sized to the limit so stripes pack, and a
/// module whose initial memory exceeds it is refused at compile time by the pool.
fn pool_memory_size(c: &WasmConfig, striping: &Striping) -> usize {
    if striping.enabled {
        round_to_page(c.memory_limit)
    } else {
        4 << 30
    }
}

fn striping_choice(c: &WasmConfig) -> Striping {
    let off = |reason: String| Striping {
        enabled: false,
        reason,
    };
    if !c.pkey_striping {
        return off("turned off by WasmConfig::pkey_striping".into());
    }
    if c.max_pkey_stripes < 2 {
        return off("max_pkey_stripes < 2 (one stripe is no striping)".into());
    }
    let host = pkey_striping_support(&crate::features().pkeys);
    if !host.enabled {
        return host;
    }
    Striping {
        enabled: true,
        reason: format!(
            "protection keys available: pool slots striped across up to {} keys",
            c.max_pkey_stripes
        ),
    }
}

/// Whether this host can stripe the wasm pool across protection keys: the probe's pkeys
/// answer (passed in, so the probe itself can call this while it builds its report) and
/// wasmtime's own check, which also wants a `GenuineIntel` CPUID vendor.
pub fn pkey_striping_support(pkeys: &crate::probe::PkeysFeature) -> Striping {
    if !pkeys.available {
        return Striping {
            enabled: false,
            reason: format!(
                "protection keys are not available here: {}",
                pkeys.reason.as_deref().unwrap_or("the probe found none")
            ),
        };
    }
    if !PoolingAllocationConfig::are_memory_protection_keys_available() {
        return Striping {
            enabled: false,
            reason: "wasmtime does not use protection keys on this CPU (its check wants PKU and a GenuineIntel CPUID vendor)".into(),
        };
    }
    Striping {
        enabled: true,
        reason: "protection keys available".into(),
    }
}

/// What a module declares it needs (from [`Module::resources_required`]).
#[derive(Clone, Copy, Debug)]
struct Needs {
    memories: u32,
    tables: u32,
    memory_bytes: u64,
    table_elements: u64,
}

impl Needs {
    fn of(module: &Module) -> Needs {
        let res = module.resources_required();
        Needs {
            memories: res.num_memories,
            tables: res.num_tables,
            memory_bytes: res
                .max_initial_memory_size
                .unwrap_or(0)
                .saturating_mul(WASM_PAGE as u64),
            table_elements: res.max_initial_table_size.unwrap_or(0),
        }
    }

    /// The first limit these needs exceed: `(limit, requested, max)`.
    fn over(&self, c: &WasmConfig) -> Option<(&'static str, u64, u64)> {
        if self.memories as usize > c.memories {
            return Some(("memories", self.memories.into(), c.memories as u64));
        }
        if self.tables as usize > c.tables {
            return Some(("tables", self.tables.into(), c.tables as u64));
        }
        if self.memory_bytes > c.memory_limit as u64 {
            return Some(("memory", self.memory_bytes, c.memory_limit as u64));
        }
        if self.table_elements > c.table_elements as u64 {
            return Some((
                "table elements",
                self.table_elements,
                c.table_elements as u64,
            ));
        }
        None
    }
}

fn refused(context: ContextId, (limit, requested, max): (&'static str, u64, u64)) -> WasmError {
    WasmError::LimitRefused {
        context,
        limit,
        requested,
        used: 0,
        max,
    }
}

/// One of the pool's `max_contexts` slots, given back on drop.
struct Slot(Arc<Shared>);

impl Slot {
    fn take(shared: &Arc<Shared>, id: ContextId) -> Result<Slot, WasmError> {
        let max = shared.config.max_contexts as usize;
        shared
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|n| WasmError::LimitRefused {
                context: id,
                limit: "wasm contexts",
                requested: 1,
                used: n as u64,
                max: max as u64,
            })?;
        Ok(Slot(Arc::clone(shared)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// With striping on (x86-64 only), the token to read and write PKRU: wasmtime's call hooks
/// open every key when wasm returns, so the caller's PKRU is saved before and put back after.
#[derive(Clone, Copy)]
struct PkruSaver {
    #[cfg(target_arch = "x86_64")]
    pkeys: Option<crate::pkey::Pkeys>,
}

impl PkruSaver {
    fn new(striping: &Striping) -> PkruSaver {
        #[cfg(target_arch = "x86_64")]
        {
            PkruSaver {
                pkeys: striping
                    .enabled
                    .then(|| crate::pkey::Pkeys::probe().ok())
                    .flatten(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = striping;
            PkruSaver {}
        }
    }

    #[inline]
    fn save(self) -> PkruRestore {
        PkruRestore {
            #[cfg(target_arch = "x86_64")]
            saved: self.pkeys.map(|p| (p, p.pkru())),
        }
    }
}

/// Puts the saved PKRU back on drop.
struct PkruRestore {
    #[cfg(target_arch = "x86_64")]
    saved: Option<(crate::pkey::Pkeys, crate::pkey::PkruValue)>,
}

impl Drop for PkruRestore {
    #[inline]
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if let Some((p, v)) = self.saved.take() {
            p.set_pkru(v);
        }
    }
}

/// One wasm instance in its own store: its linear memory, limits, budget and deadline.
/// Dropping it gives its pool slot back.
pub struct WasmContext {
    id: ContextId,
    store: Store<StoreState>,
    instance: Option<wasmtime::Instance>,
    memory: Option<Memory>,
    fuel: Option<u64>,
    deadline: Option<Duration>,
    metered: bool,
    max_stack: usize,
    pkru: PkruSaver,
    stats: WasmStats,
    // Last: the slot (and with it the engine's ticker) outlives the store.
    _slot: Slot,
}

impl std::fmt::Debug for WasmContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmContext")
            .field("id", &self.id)
            .field("fuel", &self.fuel)
            .field("deadline", &self.deadline)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl WasmContext {
    /// The context's id (in errors and violation reports).
    pub fn id(&self) -> ContextId {
        self.id
    }

    /// Usage so far.
    pub fn stats(&self) -> WasmStats {
        WasmStats {
            memory_bytes: self.memory.map_or(0, |m| m.data_size(&self.store)),
            grow_refusals: self.store.data().limits.refusals,
            ..self.stats
        }
    }

    /// Sets the instruction budget per call (`None`: unlimited).
    ///
    /// # Errors
    /// [`WasmError::Configure`] when asking for a budget from an isolation made without
    /// fuel metering ([`WasmConfig::fuel`] `None`), or for a budget of 0.
    pub fn set_fuel(&mut self, fuel: Option<u64>) -> Result<(), WasmError> {
        if fuel.is_some() && !self.metered {
            return Err(WasmError::Configure(
                "fuel metering is off for this isolation; Hint: set a fuel budget in its configuration".into(),
            ));
        }
        if fuel == Some(0) {
            return Err(WasmError::Configure(
                "a fuel budget of 0 runs nothing".into(),
            ));
        }
        self.fuel = fuel;
        Ok(())
    }

    /// Sets the wall-clock deadline per call (`None`: none).
    pub fn set_deadline(&mut self, deadline: Option<Duration>) {
        self.deadline = deadline;
    }

    /// Copies bytes out of the linear memory.
    ///
    /// # Errors
    /// [`WasmError::MemoryAccess`] when `offset..offset+buf.len()` is outside it.
    pub fn read_memory(&self, offset: usize, buf: &mut [u8]) -> Result<(), WasmError> {
        let mem = self.memory.ok_or(WasmError::NoMemoryExport)?;
        mem.read(&self.store, offset, buf)
            .map_err(|_| WasmError::MemoryAccess {
                context: self.id,
                offset,
                len: buf.len(),
                size: mem.data_size(&self.store),
            })
    }

    /// Copies bytes into the linear memory.
    ///
    /// # Errors
    /// [`WasmError::MemoryAccess`] when `offset..offset+data.len()` is outside it.
    pub fn write_memory(&mut self, offset: usize, data: &[u8]) -> Result<(), WasmError> {
        let mem = self.memory.ok_or(WasmError::NoMemoryExport)?;
        mem.write(&mut self.store, offset, data)
            .map_err(|_| WasmError::MemoryAccess {
                context: self.id,
                offset,
                len: data.len(),
                size: mem.data_size(&self.store),
            })
    }

    fn instance(&self) -> Result<wasmtime::Instance, WasmError> {
        self.instance.ok_or_else(|| {
            WasmError::Configure("the context has no instance (its instantiation failed)".into())
        })
    }

    /// Loads the budget and the deadline for one call; returns the start time.
    fn arm(&mut self) -> Result<Instant, WasmError> {
        if self.metered {
            self.store
                .set_fuel(self.fuel.unwrap_or(u64::MAX))
                .map_err(|e| WasmError::Configure(error_chain(&*boxed(e))))?;
        }
        let now = Instant::now();
        self.store.data_mut().deadline_at = self.deadline.and_then(|d| now.checked_add(d));
        self.store.set_epoch_deadline(1);
        Ok(now)
    }

    fn disarm(&mut self) {
        self.store.data_mut().deadline_at = None;
    }

    fn fuel_used(&self) -> u64 {
        if !self.metered {
            return 0;
        }
        self.store
            .get_fuel()
            .map_or(0, |left| self.fuel.unwrap_or(u64::MAX).saturating_sub(left))
    }

    fn finish<T>(
        &mut self,
        export: &str,
        started: Instant,
        r: wasmtime::Result<T>,
    ) -> Result<T, WasmError> {
        self.stats.last_fuel_used = self.fuel_used();
        self.store.data_mut().deadline_at = None;
        r.map_err(|e| {
            let id = self.id;
            let name = export.to_string();
            self.classify(export, started, e, || WasmError::Call {
                context: id,
                export: name,
                source: "see the wasmtime error".into(),
            })
        })
    }

    /// Turns a wasmtime error into the matching [`WasmError`]; `other` builds the
    /// fallback, whose `source` is replaced by the wasmtime error itself.
    fn classify(
        &mut self,
        export: &str,
        started: Instant,
        e: wasmtime::Error,
        other: impl FnOnce() -> WasmError,
    ) -> WasmError {
        let context = self.id;
        let export_s = export.to_string();
        let err = if let Some(g) = e.downcast_ref::<GrowRefused>() {
            WasmError::LimitRefused {
                context,
                limit: g.limit,
                requested: g.desired as u64,
                used: g.current as u64,
                max: g.max as u64,
            }
        } else if let Some(&trap) = e.downcast_ref::<Trap>() {
            match trap {
                Trap::OutOfFuel => WasmError::OutOfFuel {
                    context,
                    export: export_s,
                    budget: self.fuel.unwrap_or(u64::MAX),
                },
                Trap::Interrupt => WasmError::DeadlineExceeded {
                    context,
                    export: export_s,
                    limit: self.deadline.unwrap_or_default(),
                    elapsed: started.elapsed(),
                },
                Trap::StackOverflow => WasmError::StackExhausted {
                    context,
                    export: export_s,
                    max_stack: self.max_stack,
                },
                trap => WasmError::Trap {
                    context,
                    export: export_s,
                    trap,
                },
            }
        } else {
            match other() {
                WasmError::Instantiate { context, .. } => WasmError::Instantiate {
                    context,
                    source: boxed(e),
                },
                WasmError::Call {
                    context, export, ..
                } => WasmError::Call {
                    context,
                    export,
                    source: boxed(e),
                },
                o => o,
            }
        };
        if err.trap_name().is_some() {
            self.stats.traps += 1;
        }
        err
    }
}

/// What a module run by [`run_module`] (the `nebula-ctl run --wasm` convention) produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleRun {
    /// The exit status: `run`'s result (0..=255, anything else is 1), 0 after `_start`.
    pub exit_code: u8,
    /// The bytes the module's optional `output` export pointed at.
    pub stdout: Vec<u8>,
}

/// Runs a module by the convention in the module docs ("Entry point for `nebula-ctl run
/// --wasm`"): `run(ptr, len)` with the NUL-terminated arguments written at `alloc(len)`,
/// else `_start`; then the optional `output` export.
///
/// # Errors
/// The compile, instantiate and trap errors of this level; `ExportNotFound` when the module
/// has neither `run` nor `_start`, or arguments were given without `run` and `alloc`.
pub fn run_module(
    bytes: &[u8],
    args: &[std::ffi::OsString],
    config: WasmConfig,
) -> Result<ModuleRun, WasmError> {
    let iso = WasmIsolation::new(WasmConfig {
        max_contexts: 1,
        ..config
    })?;
    let mut ctx = iso.load(bytes)?;
    let mut packed = Vec::new();
    for a in args {
        packed.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str()));
        packed.push(0);
    }
    let has = |ctx: &mut WasmContext, name: &str| -> Result<bool, WasmError> {
        let instance = ctx.instance()?;
        Ok(instance.get_func(&mut ctx.store, name).is_some())
    };
    let code = if has(&mut ctx, "run")? {
        let (ptr, len) = if packed.is_empty() {
            (0, 0)
        } else {
            let len = i32::try_from(packed.len()).map_err(|_| {
                WasmError::Configure(format!(
                    "{} bytes of arguments do not fit a wasm32 length",
                    packed.len()
                ))
            })?;
            let ptr = iso.call_typed::<i32, i32>(&mut ctx, "alloc", len)?;
            // A wasm32 address travels as an i32: its bits are the u32 address.
            #[allow(clippy::cast_sign_loss)]
            let addr = ptr as u32 as usize;
            ctx.write_memory(addr, &packed)?;
            (ptr, len)
        };
        iso.call_typed::<(i32, i32), i32>(&mut ctx, "run", (ptr, len))?
    } else if packed.is_empty() {
        iso.call_typed::<(), ()>(&mut ctx, "_start", ())?;
        0
    } else {
        return Err(WasmError::ExportNotFound {
            context: ctx.id,
            export: "run (arguments were given)".into(),
        });
    };
    let stdout = if has(&mut ctx, "output")? {
        let v = iso.call_typed::<(), i64>(&mut ctx, "output", ())?;
        // `output` packs (ptr << 32 | len) into an i64: its bits are the two u32 halves.
        #[allow(clippy::cast_sign_loss)]
        let v = v as u64;
        let (ptr, len) = ((v >> 32) as usize, (v & 0xffff_ffff) as usize);
        let mut buf = vec![0u8; len];
        ctx.read_memory(ptr, &mut buf)?;
        buf
    } else {
        Vec::new()
    };
    Ok(ModuleRun {
        exit_code: u8::try_from(code).unwrap_or(1),
        stdout,
    })
}

/// Whether the wasm level runs here (it does wherever it is built); without protection keys
/// its pool slots are not striped.
pub fn availability(f: &crate::probe::Features) -> crate::base::LevelStatus {
    let mut status = crate::base::LevelStatus::from_lacks(vec![]);
    let striping = pkey_striping_support(&f.pkeys);
    if !striping.enabled {
        status.limited.push(format!(
            "pool slots not striped across protection keys (about 4 GiB of address space per context): {}",
            striping.reason
        ));
    }
    status
}
