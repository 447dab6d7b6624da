//! The seed's API ("Memory Isolation", shared/seeds/000_e398e84fe697786a.txt), written the
//! way the seed writes it, and run as a program: each step checks that the library does
//! what the seed says, and `main` returns an error (exit status 1) when one does not.
//! `cargo run --example seed_api [--features wasm]`; `tests/seed_api.rs` runs it.
//!
//! A step that needs something this host lacks prints `skipped: <step>: <reason>`. The reason
//! is the probe's (`nebula_memory::features()`, `isolation::levels::levels()`), or the crate's
//! own `Unsupported` answer. With `NEBULA_TEST_REQUIRE=all` (the VM tier) such a skip counts
//! as a failure. A build without `wasm` is a build choice, not a gap in the host, so that
//! skip never fails.
//!
//! | step | needs |
//! |---|---|
//! | region contexts, monitor, sandbox, channel, capabilities, tenants | nothing (any user, no cgroup v2, no PKU) |
//! | thread (`SecurityLevel::Low`) | x86-64 PKU (`features().pkeys`) |
//! | process (`Medium`) | user namespaces (`features().user_namespaces`). cgroup v2 is not needed here: the seed's process sets no cgroup limit. As root, the first context adds a `nebula` entry to /etc/subuid |
//! | wasm (`High`) | the `wasm` cargo feature |
//! | hardware (`Critical`) | qemu-system-x86_64 and /bin/busybox (the first run probes KVM, 3 to 5 s) |
//!
//! Where this program departs from the seed's text, the seed's own text forces it:
//! - `build()`, `create_region()`, `create_isolated_process()` can fail (mmap, fork), so the
//!   seed's `-> ContextId` / `-> TenantId` methods return `Result<_>`;
//! - error variants carry fields: patterns are `Variant { .. }`, and the code that builds
//!   one names the id (`ContextNotFound(id)`);
//! - the seed's `execute` takes `FnOnce(&IsolatedContext)` in one block and `FnOnce()` in
//!   another; this program follows the first (`|_| ...`);
//! - `stats.memory_used > stats.memory_limit * 0.9` cannot compile for integer fields; here it
//!   is `as f64`, and `memory_limit` is an `Option`;
//! - the best-practice `match` returns a different type in each arm; the library's door is
//!   `MemoryIsolation::for_level`, which returns one enum;
//! - the crate has no `log` dependency, so `log::warn!`/`log::error!` are `eprintln!`;
//! - `alert_system`, `Alert`, `TenantId`, `TenantConfig`, `TenantContext`, `TenantData` and
//!   `CURRENT_TENANT` are the seed's application code, defined here as the seed uses them
//!   (without the seed's `pub`: this is a program, not a library).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nebula_memory::isolation::levels::levels;
use nebula_memory::isolation::{
    CapabilitySystem, ContextConfig, ContextId, IsolatedChannel, IsolatedContext, LevelIsolation,
    MemoryIsolation, MemorySandbox, Permissions, ResourceId, SecurityLevel, ThreadIsolation,
};
use nebula_memory::violation::ViolationInfo;
use nebula_memory::{IsolationError, Result, features};

type Failure = Box<dyn std::error::Error>;
type Check = std::result::Result<(), Failure>;
type Step = fn() -> Check;

/// Fails the step with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

/// Whether a skip is a failure (the VM tier sets `NEBULA_TEST_REQUIRE=all`).
fn require_all() -> bool {
    std::env::var("NEBULA_TEST_REQUIRE").is_ok_and(|v| v == "all")
}

/// Set by `require` when the running step skipped.
static SKIPPED: AtomicBool = AtomicBool::new(false);

/// Whether the step can run; otherwise prints `skipped: <step>: <reason>` (a failure under
/// `NEBULA_TEST_REQUIRE=all` when `host` says the host, not the build, lacks it).
fn require(cond: bool, step: &str, reason: &str, host: bool) -> std::result::Result<bool, Failure> {
    if cond {
        return Ok(true);
    }
    if host && require_all() {
        return Err(format!("NEBULA_TEST_REQUIRE=all but {step} would skip: {reason}").into());
    }
    println!("skipped: {step}: {reason}");
    SKIPPED.store(true, Ordering::Relaxed);
    Ok(false)
}

// ---- Solution: IsolatedApplication ---------------------------------------------------------

struct IsolatedApplication {
    isolation: MemoryIsolation,
    contexts: HashMap<ContextId, IsolatedContext>,
}

impl IsolatedApplication {
    fn create_isolated_context(&mut self, config: ContextConfig) -> Result<ContextId> {
        let context = self
            .isolation
            .create_context()
            .with_memory_limit(config.memory_limit)
            .with_permissions(config.permissions)
            .with_timeout(config.timeout)
            .build()?;

        // As in the seed, the application names its contexts with ids of its own.
        let id = ContextId::new();
        self.contexts.insert(id, context);
        Ok(id)
    }

    fn execute_in_context<F, R>(&self, id: ContextId, f: F) -> Result<R>
    where
        F: FnOnce(&IsolatedContext) -> R,
    {
        let context = self
            .contexts
            .get(&id)
            .ok_or(IsolationError::ContextNotFound(id))?;

        context.execute(f)
    }
}

fn basic_memory_isolation() -> Check {
    let mut app = IsolatedApplication {
        isolation: MemoryIsolation::new(),
        contexts: HashMap::new(),
    };
    let id = app.create_isolated_context(ContextConfig {
        memory_limit: Some(64 * 1024),
        permissions: Some(Permissions::READ | Permissions::WRITE),
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    })?;

    app.execute_in_context(id, |ctx| ctx.allocate(4096))??;
    match app.execute_in_context(id, |ctx| ctx.allocate(128 * 1024))? {
        Err(IsolationError::LimitExceeded { .. }) => {}
        other => return Err(format!("128 KiB past a 64 KiB limit gave {other:?}").into()),
    }

    let read_only = app.create_isolated_context(ContextConfig {
        memory_limit: Some(64 * 1024),
        permissions: Some(Permissions::READ),
        ..Default::default()
    })?;
    match app.execute_in_context(read_only, |ctx| ctx.allocate(16))? {
        Err(IsolationError::PermissionDenied { .. }) => {}
        other => return Err(format!("a read-only context allocated: {other:?}").into()),
    }

    // No budget: only the region (64 MiB of address space by default) bounds it.
    let unbounded = app.create_isolated_context(ContextConfig::default())?;
    match app.execute_in_context(unbounded, |ctx| ctx.allocate(65 << 20))? {
        Err(IsolationError::OutOfMemory { .. }) => {}
        other => return Err(format!("65 MiB from a 64 MiB region gave {other:?}").into()),
    }

    let hasty = app.create_isolated_context(ContextConfig {
        timeout: Some(Duration::from_millis(20)),
        ..Default::default()
    })?;
    let late = app.execute_in_context(hasty, |_| std::thread::sleep(Duration::from_millis(60)));
    ensure!(
        late.is_err(),
        "code that overran its 20 ms timeout returned Ok"
    );

    match app.execute_in_context(ContextId::new(), |_| ()) {
        Err(IsolationError::ContextNotFound { .. }) => {}
        other => return Err(format!("an unknown id gave {other:?}").into()),
    }
    Ok(())
}

// ---- Best practice 2: monitor resource usage -------------------------------------------------

fn monitor_resource_usage() -> Check {
    let isolation = MemoryIsolation::new();
    let context = isolation
        .create_context()
        .with_memory_limit(64 * 1024)
        .build()?;
    let warned = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&warned);

    context.set_monitor(move |stats| {
        if stats
            .memory_limit
            .is_some_and(|limit| stats.memory_used as f64 > limit as f64 * 0.9)
        {
            eprintln!("Context {} approaching memory limit", stats.context_id);
            seen.store(true, Ordering::SeqCst);
        }
    })?;

    context.allocate(32 * 1024)?;
    ensure!(
        !warned.load(Ordering::SeqCst),
        "the monitor warned at 50% of the limit"
    );
    context.allocate(30 * 1024)?;
    ensure!(
        warned.load(Ordering::SeqCst),
        "no warning at 97% of the limit"
    );
    Ok(())
}

// ---- Thread-level isolation (SecurityLevel::Low) --------------------------------------------

fn thread_isolation() -> Check {
    let step = "thread isolation (SecurityLevel::Low)";
    let pkeys = &features().pkeys;
    let reason = pkeys.reason.as_deref().unwrap_or("no PKU");
    if !require(pkeys.available, step, reason, true)? {
        return Ok(());
    }
    let (_pkeys, domains) = match MemoryIsolation::for_level(SecurityLevel::Low) {
        Ok(LevelIsolation::Thread { pkeys, domains }) => (pkeys, domains),
        Err(e @ IsolationError::Unsupported { .. }) => {
            require(false, step, &e.to_string(), true)?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
        Ok(other) => return Err(format!("for_level(Low) gave {other:?}").into()),
    };
    let isolation = ThreadIsolation::new(&domains);

    let caller = std::thread::current().id();
    let (answer, ran_on) = isolation.run_isolated(move || (6 * 7, std::thread::current().id()))?;
    ensure!(answer == 42, "run_isolated returned {answer}");
    ensure!(ran_on != caller, "run_isolated ran on the calling thread");

    match isolation.run_isolated(|| -> u32 { panic!("boom (expected)") }) {
        Err(IsolationError::ThreadPanicked { .. }) => {}
        other => return Err(format!("a panicking closure gave {other:?}").into()),
    }
    Ok(())
}

// ---- Process-level isolation (SecurityLevel::Medium) ----------------------------------------

fn process_isolation() -> Check {
    let step = "process isolation (SecurityLevel::Medium)";
    let f = features();
    let reason = f
        .user_namespaces
        .reason
        .as_deref()
        .unwrap_or("no user namespaces");
    if !require(f.user_namespaces.available, step, reason, true)? {
        return Ok(());
    }
    if !f.cgroup_v2.available {
        println!(
            "note: {step} runs without a cgroup leaf ({}); it sets no cgroup limit",
            f.cgroup_v2.reason.as_deref().unwrap_or("no cgroup v2")
        );
    }
    let process = match MemoryIsolation::for_level(SecurityLevel::Medium) {
        Ok(LevelIsolation::Process(p)) => p,
        Err(e @ IsolationError::Unsupported { .. }) => {
            require(false, step, &e.to_string(), true)?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
        Ok(other) => return Err(format!("for_level(Medium) gave {other:?}").into()),
    };

    let child = process.create_isolated_process()?;
    let pid = child.pid();
    ensure!(
        pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the isolated process {pid} is not running"
    );
    child.kill()?;
    let outcome = child.wait()?;
    ensure!(
        !outcome.success(),
        "a killed context reported success: {outcome:?}"
    );
    Ok(())
}

// ---- WASM-based isolation (SecurityLevel::High) ---------------------------------------------

#[cfg(feature = "wasm")]
fn wasm_isolation() -> Check {
    use nebula_memory::isolation::wasm::WasmValue;

    let step = "wasm isolation (SecurityLevel::High)";
    let wasm = match MemoryIsolation::for_level(SecurityLevel::High) {
        Ok(LevelIsolation::Wasm(w)) => w,
        Err(e @ IsolationError::Unsupported { .. }) => {
            require(false, step, &e.to_string(), true)?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
        Ok(other) => return Err(format!("for_level(High) gave {other:?}").into()),
    };
    let module = r#"(module (memory (export "memory") 1)
                      (func (export "answer") (result i32) i32.const 42))"#;
    let id = wasm.create_wasm_context(module.as_bytes())?;
    let out = wasm.execute_in_wasm(id, |context| wasm.call(context, "answer", &[]))??;
    ensure!(out == [WasmValue::I32(42)], "answer() returned {out:?}");
    match wasm
        .execute_in_wasm(ContextId::new(), |_| ())
        .map_err(IsolationError::from)
    {
        Err(IsolationError::ContextNotFound { .. }) => {}
        other => return Err(format!("an unknown wasm context gave {other:?}").into()),
    }

    match wasm
        .create_wasm_context(b"(module)")
        .map_err(IsolationError::from)
    {
        Err(IsolationError::NoMemoryExport) => {}
        other => return Err(format!("a module without memory gave {other:?}").into()),
    }
    Ok(())
}

#[cfg(not(feature = "wasm"))]
fn wasm_isolation() -> Check {
    let why = "built without the `wasm` feature (cargo run --example seed_api --features wasm)";
    require(false, "wasm isolation (SecurityLevel::High)", why, false)?;
    Ok(())
}

// ---- Hardware isolation (SecurityLevel::Critical) -------------------------------------------

fn hardware_isolation() -> Check {
    let step = "hardware isolation (SecurityLevel::Critical)";
    let status = &levels()["hardware"];
    if !status.available && require_all() {
        // The VM tier's guest has no qemu, by design: this step runs on the host tier.
        println!("note: {step} runs on the host tier (no qemu in the VM tier's guest)");
        return Ok(());
    }
    if !require(status.available, step, &status.lacks.join("; "), true)? {
        return Ok(());
    }
    match MemoryIsolation::for_level(SecurityLevel::Critical) {
        Ok(LevelIsolation::Hardware(vm)) => {
            // A command in a virtual machine of its own: its exit status crosses back.
            let cmd = nebula_memory::isolation::hardware::GuestCommand::new("/bin/sh")
                .args(["-c", "exit 7"]);
            let outcome = vm.run_command(&cmd)?;
            ensure!(
                outcome.status == Some(7),
                "the guest's sh -c 'exit 7' gave {outcome:?}"
            );
            Ok(())
        }
        Err(e @ IsolationError::Unsupported { .. }) => {
            require(false, step, &e.to_string(), true)?;
            Ok(())
        }
        Err(e) => Err(e.into()),
        Ok(other) => Err(format!("for_level(Critical) gave {other:?}").into()),
    }
}

// ---- Memory sandbox, best practice 3: handle violations gracefully ---------------------------

#[derive(Debug)]
enum Alert {
    SecurityViolation(ViolationInfo),
}

struct AlertSystem {
    tx: mpsc::Sender<Alert>,
}

impl AlertSystem {
    fn send_alert(&self, alert: Alert) {
        let _ = self.tx.send(alert);
    }
}

fn memory_sandbox() -> Check {
    let isolation = Arc::new(MemoryIsolation::new());
    let offender = isolation
        .create_context()
        .with_memory_limit(1 << 20)
        .build()?;
    let sandbox = MemorySandbox::new(offender.id());
    let (tx, alerts) = mpsc::channel();
    let alert_system = AlertSystem { tx };
    let handler_isolation = Arc::clone(&isolation);

    sandbox.set_violation_handler(move |violation| {
        eprintln!("Memory violation: {:?}", violation);

        // Terminate offending context
        if let Some(context) = violation.context {
            let _ = handler_isolation.terminate_context(context);
        }

        // Alert administrators
        alert_system.send_alert(Alert::SecurityViolation(violation.clone()));
    });

    let region = sandbox.create_region(8192, Permissions::READ | Permissions::WRITE)?;
    sandbox.check_access(region.start().as_ptr() as *const u8, 16)?;
    ensure!(
        alerts.try_recv().is_err(),
        "an allowed access raised an alert"
    );
    offender.allocate(64)?;

    // One byte past the region: the trailing guard page.
    match sandbox.check_access(region.end().as_ptr() as *const u8, 1) {
        Err(IsolationError::AccessViolation { .. }) => {}
        other => return Err(format!("an access into the guard page gave {other:?}").into()),
    }
    let Alert::SecurityViolation(violation) = alerts.recv_timeout(Duration::from_secs(5))?;
    ensure!(
        violation.context == Some(offender.id()),
        "the violation names {:?}, not the offender {}",
        violation.context,
        offender.id()
    );
    ensure!(
        offender.allocate(64).is_err(),
        "the terminated context still allocates"
    );

    let sealed = sandbox.create_region(4096, Permissions::NONE)?;
    match sandbox.check_access(sealed.start().as_ptr() as *const u8, 1) {
        Err(IsolationError::AccessViolation { .. }) => {}
        other => return Err(format!("an access to a NONE region gave {other:?}").into()),
    }
    Ok(())
}

// ---- Cross-context communication -----------------------------------------------------------

fn cross_context_communication() -> Check {
    let isolation = MemoryIsolation::new();
    let sender = isolation.create_context().build()?;
    let receiver = isolation.create_context().build()?;
    let channel: IsolatedChannel<Vec<u8>> = IsolatedChannel::new(sender.id(), receiver.id(), 2)?;
    let data = b"hello across contexts".to_vec();

    sender.execute(|_| channel.send(data.clone()))??;
    match receiver.execute(|_| channel.send(vec![1]))? {
        Err(IsolationError::UnauthorizedSender { .. }) => {}
        other => return Err(format!("the receiver could send: {other:?}").into()),
    }
    match sender.execute(|_| channel.receive())? {
        Err(IsolationError::UnauthorizedReceiver { .. }) => {}
        other => return Err(format!("the sender could receive: {other:?}").into()),
    }
    let got = receiver.execute(|_| channel.receive())??;
    ensure!(got == data, "received {got:?}, sent {data:?}");
    match receiver.execute(|_| channel.receive())? {
        Err(IsolationError::ChannelEmpty) => {}
        other => return Err(format!("an empty channel gave {other:?}").into()),
    }
    sender.execute(|_| -> Result<()> {
        channel.send(vec![1])?;
        channel.send(vec![2])
    })??;
    match sender.execute(|_| channel.send(vec![3]))? {
        Err(IsolationError::ChannelFull { .. }) => {}
        other => return Err(format!("a third message in a channel of 2 gave {other:?}").into()),
    }
    Ok(())
}

// ---- Capability-based security -------------------------------------------------------------

fn capability_based_security() -> Check {
    let isolation = MemoryIsolation::new();
    let holder = isolation.create_context().build()?;
    let other = isolation.create_context().build()?;
    let capabilities = CapabilitySystem::new();
    let logs: ResourceId = "channel:logs".into();

    let capability = capabilities.grant_capability(holder.id(), logs, Permissions::READ);
    let _others = capabilities.grant_capability(other.id(), "file:/data", Permissions::WRITE);

    capabilities.check_capability(holder.id(), capability, Permissions::READ)?;
    match capabilities.check_capability(holder.id(), capability, Permissions::WRITE) {
        Err(IsolationError::InsufficientPermissions { .. }) => {}
        r => return Err(format!("WRITE on a READ capability gave {r:?}").into()),
    }
    match capabilities.check_capability(other.id(), capability, Permissions::READ) {
        Err(IsolationError::CapabilityNotOwned { .. }) => {}
        r => return Err(format!("another context's capability gave {r:?}").into()),
    }
    // The seed checks ownership before existence; the library checks existence first.
    match capabilities.check_capability(holder.id(), u64::MAX, Permissions::READ) {
        Err(
            IsolationError::CapabilityNotFound { .. } | IsolationError::CapabilityNotOwned { .. },
        ) => {}
        r => return Err(format!("a capability never granted gave {r:?}").into()),
    }
    Ok(())
}

// ---- Usage example: multi-tenant application ------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TenantId(u64);

#[allow(clippy::new_without_default)] // as in the seed
impl TenantId {
    fn new() -> TenantId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TenantId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

struct TenantConfig {
    memory_limit: u64,
    cpu_limit: Option<f64>,
    io_limit: Option<u64>,
}

struct TenantData {
    runs: Cell<u64>,
}

#[allow(clippy::new_without_default)] // as in the seed
impl TenantData {
    fn new() -> TenantData {
        TenantData { runs: Cell::new(0) }
    }
}

struct TenantContext {
    id: TenantId,
    context: IsolatedContext,
    data: TenantData,
}

thread_local! {
    static CURRENT_TENANT: RefCell<Option<TenantId>> = const { RefCell::new(None) };
}

struct MultiTenantApp {
    isolation: MemoryIsolation,
    tenants: HashMap<TenantId, TenantContext>,
    metrics: Mutex<HashMap<TenantId, Duration>>,
}

impl MultiTenantApp {
    fn create_tenant(&mut self, config: TenantConfig) -> Result<TenantId> {
        let context = self
            .isolation
            .create_context()
            .with_memory_limit(config.memory_limit)
            .with_cpu_limit(config.cpu_limit)
            .with_io_limit(config.io_limit)
            .build()?;

        let tenant = TenantContext {
            id: TenantId::new(),
            context,
            data: TenantData::new(),
        };

        let id = tenant.id;
        self.tenants.insert(id, tenant);
        Ok(id)
    }

    fn execute_tenant_code<F, R>(&self, tenant: TenantId, code: F) -> Result<R>
    where
        F: FnOnce() -> R,
    {
        let tenant_ctx = self
            .tenants
            .get(&tenant)
            .ok_or_else(|| IsolationError::TenantNotFound(format!("{tenant:?}")))?;
        tenant_ctx.data.runs.set(tenant_ctx.data.runs.get() + 1);

        tenant_ctx.context.execute(|_| {
            // Set current tenant context
            CURRENT_TENANT.with(|t| {
                *t.borrow_mut() = Some(tenant);
            });

            // Execute with monitoring
            let start = Instant::now();
            let result = code();
            let duration = start.elapsed();

            // Record metrics
            self.record_tenant_metrics(tenant, duration);

            result
        })
    }

    fn record_tenant_metrics(&self, tenant: TenantId, duration: Duration) {
        *self
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant)
            .or_default() += duration;
    }
}

fn multi_tenant_application() -> Check {
    let mut app = MultiTenantApp {
        isolation: MemoryIsolation::new(),
        tenants: HashMap::new(),
        metrics: Mutex::new(HashMap::new()),
    };
    let acme = app.create_tenant(TenantConfig {
        memory_limit: 1 << 20,
        cpu_limit: None,
        io_limit: None,
    })?;
    let seen = app.execute_tenant_code(acme, || CURRENT_TENANT.with(|t| *t.borrow()))?;
    ensure!(
        seen == Some(acme),
        "tenant code saw tenant {seen:?}, not {acme:?}"
    );
    ensure!(
        app.tenants[&acme].id == acme && app.tenants[&acme].data.runs.get() == 1,
        "run not counted"
    );
    ensure!(
        app.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&acme),
        "no metrics recorded for {acme:?}"
    );
    match app.execute_tenant_code(TenantId::new(), || ()) {
        Err(IsolationError::TenantNotFound { .. }) => {}
        other => return Err(format!("an unknown tenant gave {other:?}").into()),
    }

    // An in-process context cannot enforce CPU or I/O limits: it must refuse them, not
    // ignore them (process tenants enforce them with cgroup v2 cpu.max / io.max).
    for (what, cpu_limit, io_limit) in [("CPU", Some(0.5), None), ("I/O", None, Some(1000))] {
        let refused = app.create_tenant(TenantConfig {
            memory_limit: 1 << 20,
            cpu_limit,
            io_limit,
        });
        ensure!(
            refused.is_err(),
            "a region context accepted a {what} limit it cannot enforce"
        );
    }
    Ok(())
}

// ---- main -----------------------------------------------------------------------------------

/// Runs every step; an error names the steps that did not behave as the seed says.
pub fn main() -> std::result::Result<(), Failure> {
    let steps: [(&str, Step); 10] = [
        ("basic memory isolation", basic_memory_isolation),
        ("monitor resource usage", monitor_resource_usage),
        ("memory sandbox and violation handling", memory_sandbox),
        ("cross-context communication", cross_context_communication),
        ("capability-based security", capability_based_security),
        ("multi-tenant application", multi_tenant_application),
        // The seed's best practice 1: match security_requirements { Low => thread, ... }.
        ("SecurityLevel::Low", thread_isolation),
        ("SecurityLevel::Medium", process_isolation),
        ("SecurityLevel::High", wasm_isolation),
        ("SecurityLevel::Critical", hardware_isolation),
    ];
    let mut failed = 0;
    for (name, step) in steps {
        SKIPPED.store(false, Ordering::Relaxed);
        match step() {
            Ok(()) if SKIPPED.load(Ordering::Relaxed) => {}
            Ok(()) => println!("ok: {name}"),
            Err(e) => {
                eprintln!("FAILED: {name}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} step(s) did not behave as the seed says").into());
    }
    Ok(())
}
