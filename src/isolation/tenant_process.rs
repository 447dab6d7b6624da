//! Process tenants: a cgroup v2 subtree per tenant, its limits shared by every run.
//!
//! ```text
//!   <supervisor's cgroup>/nebula-tenants/        CgroupRoot (no processes)
//!     acme/                                      the tenant: memory.max, cpu.max, io.max
//!       nebula/                                  the tenant's ProcessIsolation root
//!         ctx-1/  ctx-2/ ...                     one leaf per run (command or closure)
//! ```
//!
//! Limits are set on the tenant's cgroup, so the kernel enforces them on all of its runs
//! together (two runs of a 64 MiB tenant share 64 MiB). Metrics come from each run's
//! [`Outcome`] (wall time, `memory.peak`, OOM kills, violations) and from the tenant
//! cgroup itself ([`ProcessTenants::usage`]).
//!
//! Monitoring ([`ProcessTenants::set_monitor`]): a watcher thread per tenant sleeps in
//! `poll(2)` on the tenant's `memory.events` (the kernel wakes it on `high`, `max`, `oom`
//! and `oom_kill` changes) and on a PSI trigger on `memory.pressure`. cgroup v2 has no
//! notification for "usage crossed N bytes" (v1's `memory.usage_in_bytes` eventfd is gone),
//! so the watcher also reads `memory.current` when a wait times out, every 100 ms; that is
//! the one timed read, and it costs one small file read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::process::{ClosureOutcome, Command, Outcome, ProcessConfig, ProcessIsolation};
use super::tenant::{TenantLimits, TenantMetrics};
use crate::cgroup::{CgroupRoot, Controller, CpuMax, Leaf, Limit, MemoryEvents, PsiKind};
use crate::error::{IsolationError, Result};

/// What a process tenant's cgroup says now.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TenantUsage {
    /// `memory.current` of the tenant's subtree.
    pub memory_current: u64,
    /// `memory.peak`, where the kernel has it.
    pub memory_peak: Option<u64>,
    /// `memory.max`, if set.
    pub memory_max: Option<u64>,
    /// `memory.events` of the subtree.
    pub memory_events: MemoryEvents,
    /// CPU time of the subtree (`cpu.stat usage_usec`).
    pub cpu_usec: u64,
}

type UsageCallback = Arc<dyn Fn(&TenantUsage) + Send + Sync>;

struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Tenant {
    // Drop order matters: the watcher stops, the runs' isolation goes, then the tenant's
    // cgroup is killed and removed (Leaf::drop).
    watcher: Mutex<Option<Watcher>>,
    iso: Option<ProcessIsolation>,
    leaf: Arc<Leaf>,
    memory_max: Option<u64>,
    metrics: Mutex<TenantMetrics>,
}

impl Drop for Tenant {
    fn drop(&mut self) {
        self.watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.iso.take();
        // The runs' root is left in place by CgroupRoot's drop; it is empty now.
        let _ = std::fs::remove_dir(self.leaf.path().join("nebula"));
    }
}

/// Tenants whose runs are process contexts in a cgroup v2 subtree of their own.
pub struct ProcessTenants {
    tenants: Mutex<BTreeMap<String, Arc<Tenant>>>,
    base: Mutex<Option<CgroupRoot>>,
    parent: PathBuf,
}

impl std::fmt::Debug for ProcessTenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessTenants")
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

fn cg(e: crate::cgroup::CgroupError) -> IsolationError {
    e.into()
}

impl ProcessTenants {
    /// Tenants under the supervisor's own cgroup (as `nebula-ctl probe` reports it).
    ///
    /// # Errors
    /// `Unsupported` without cgroup v2 and its memory controller.
    pub fn new() -> Result<Self> {
        let f = crate::features();
        let c = &f.cgroup_v2;
        let (true, Some(parent)) = (c.available, c.supervisor_cgroup()) else {
            return Err(IsolationError::Unsupported {
                feature: "process tenants (cgroup v2)",
                reason: c
                    .reason
                    .clone()
                    .unwrap_or_else(|| "cgroup v2 is not mounted".into()),
            });
        };
        Ok(Self::under(parent))
    }

    /// Tenants under a cgroup v2 directory of the caller's choice (a delegated subtree).
    pub fn under(parent: impl Into<PathBuf>) -> Self {
        ProcessTenants {
            tenants: Mutex::default(),
            base: Mutex::default(),
            parent: parent.into(),
        }
    }

    fn get(&self, name: &str) -> Result<Arc<Tenant>> {
        let map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        map.get(name)
            .cloned()
            .ok_or_else(|| IsolationError::TenantNotFound(name.to_string()))
    }

    /// Creates a tenant: its cgroup with `limits` (memory, CPU, I/O), and the process
    /// isolation its runs use (`template`: namespaces, seccomp, ...; its own cgroup limits
    /// apply per run on top of the tenant's).
    ///
    /// # Errors
    /// `InvalidConfig` for an empty, duplicate or path-like name; cgroup errors (which name
    /// the file and the fix); the process level's configuration errors.
    pub fn create_tenant(
        &self,
        name: &str,
        limits: TenantLimits,
        template: ProcessConfig,
    ) -> Result<()> {
        if name.is_empty() || name.contains('/') || name == "nebula" {
            return Err(IsolationError::InvalidConfig(format!(
                "tenant name {name:?}: use a plain, non-empty name"
            )));
        }
        let mut map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(name) {
            return Err(IsolationError::InvalidConfig(format!(
                "tenant {name:?} exists already"
            )));
        }
        let mut base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        if base.is_none() {
            *base = Some(
                CgroupRoot::open(&self.parent, "nebula-tenants", &Controller::ALL).map_err(cg)?,
            );
        }
        let leaf = base
            .as_ref()
            .expect("opened above")
            .create_leaf(name)
            .map_err(cg)?;
        if let Some(m) = limits.memory {
            leaf.set_memory_max(Limit::Value(m)).map_err(cg)?;
            // No swap: a tenant at its limit is OOM-killed rather than paged out forever.
            let _ = leaf.set_memory_swap_max(Limit::Value(0));
        }
        if let Some(c) = limits.cpu {
            let max = CpuMax::from_fraction(c)
                .map_err(|e| IsolationError::InvalidConfig(e.to_string()))?;
            leaf.set_cpu_max(max).map_err(cg)?;
        }
        for io in &limits.io {
            leaf.set_io_max(io).map_err(cg)?;
        }
        let mut config = template.cgroup_parent(leaf.path().to_path_buf());
        if let Some(t) = limits.timeout {
            config = config.wall_time(t);
        }
        let iso = ProcessIsolation::new(config).map_err(IsolationError::from)?;
        let t = Tenant {
            watcher: Mutex::new(None),
            iso: Some(iso),
            leaf: Arc::new(leaf),
            memory_max: limits.memory,
            metrics: Mutex::default(),
        };
        map.insert(name.to_string(), Arc::new(t));
        Ok(())
    }

    fn record(t: &Tenant, o: &Outcome) {
        let mut m = t.metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.runs += 1;
        m.failed_runs += u64::from(!o.success());
        m.total_duration += o.wall_time;
        m.max_duration = m.max_duration.max(o.wall_time);
        m.peak_memory = m.peak_memory.max(o.memory_peak.unwrap_or(o.max_rss_bytes));
        m.violations += o.violations.len() as u64;
    }

    /// Runs a command as tenant `name`.
    ///
    /// # Errors
    /// `TenantNotFound`; the process level's errors.
    pub fn execute_tenant_command(&self, name: &str, cmd: &Command) -> Result<Outcome> {
        let t = self.get(name)?;
        let o = t
            .iso
            .as_ref()
            .expect("set until drop")
            .run_command(cmd)
            .map_err(IsolationError::from)?;
        Self::record(&t, &o);
        Ok(o)
    }

    /// Runs a closure as tenant `name` in a process context; its result comes back
    /// deep-copied.
    ///
    /// # Errors
    /// `TenantNotFound`; the process level's errors.
    pub fn execute_tenant_code<T, F>(&self, name: &str, f: F) -> Result<ClosureOutcome<T>>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce() -> T,
    {
        let t = self.get(name)?;
        let o = t
            .iso
            .as_ref()
            .expect("set until drop")
            .run_closure(f)
            .map_err(IsolationError::from)?;
        Self::record(&t, &o.outcome);
        Ok(o)
    }

    /// The tenant's metrics over its runs.
    ///
    /// # Errors
    /// `TenantNotFound`.
    pub fn tenant_metrics(&self, name: &str) -> Result<TenantMetrics> {
        Ok(self
            .get(name)?
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
    }

    /// What the tenant's cgroup reports now.
    ///
    /// # Errors
    /// `TenantNotFound`; cgroup read errors.
    pub fn usage(&self, name: &str) -> Result<TenantUsage> {
        let t = self.get(name)?;
        usage_of(&t.leaf, t.memory_max)
    }

    /// Calls `callback` when the tenant's memory in use reaches `fraction` of its memory
    /// limit (once per crossing), and on every new OOM kill in the tenant.
    ///
    /// # Errors
    /// `TenantNotFound`; `InvalidConfig` without a memory limit or for a fraction outside
    /// (0, 1]; cgroup errors opening `memory.events`.
    pub fn set_monitor(
        &self,
        name: &str,
        fraction: f64,
        callback: impl Fn(&TenantUsage) + Send + Sync + 'static,
    ) -> Result<()> {
        let t = self.get(name)?;
        let threshold =
            super::context::monitor_threshold(t.memory_max, fraction, &format!("tenant {name:?}"))?;
        let events = t.leaf.watch("memory.events").map_err(cg)?;
        // A pressure trigger where the kernel allows one (windows must be multiples of 2 s
        // without CAP_SYS_RESOURCE on recent kernels).
        let psi = t
            .leaf
            .memory_pressure_trigger(
                PsiKind::Some,
                Duration::from_millis(100),
                Duration::from_secs(2),
            )
            .ok();
        let stop = Arc::new(AtomicBool::new(false));
        let (leaf, stop2) = (Arc::clone(&t.leaf), Arc::clone(&stop));
        let cb: UsageCallback = Arc::new(callback);
        let memory_max = t.memory_max;
        let thread = std::thread::Builder::new()
            .name(format!("nebula-tenant-{name}"))
            .spawn(move || {
                let mut above = false;
                let mut oom_kills = usage_of(&leaf, memory_max)
                    .map(|u| u.memory_events.oom_kill)
                    .unwrap_or(0);
                while !stop2.load(Ordering::Acquire) {
                    let woke = events.wait(Duration::from_millis(100)).unwrap_or(false);
                    let pressured = psi
                        .as_ref()
                        .is_some_and(|p| p.wait(Duration::ZERO).unwrap_or(false));
                    let Ok(u) = usage_of(&leaf, memory_max) else {
                        continue;
                    };
                    let crossed = u.memory_current >= threshold;
                    let new_kill = u.memory_events.oom_kill > oom_kills;
                    if (crossed && !above) || new_kill || (pressured && crossed) {
                        cb(&u);
                    }
                    above = crossed;
                    oom_kills = u.memory_events.oom_kill;
                    let _ = woke;
                }
            })
            .map_err(|e| IsolationError::system("spawning a tenant monitor thread", e))?;
        *t.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(Watcher {
            stop,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Removes a tenant: stops its monitor, kills what still runs in its cgroup and removes
    /// the cgroup (after runs in progress on other threads have ended).
    ///
    /// # Errors
    /// `TenantNotFound`.
    pub fn remove_tenant(&self, name: &str) -> Result<()> {
        let t = self
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        t.map(drop)
            .ok_or_else(|| IsolationError::TenantNotFound(name.to_string()))
    }

    /// Tenant names.
    pub fn tenants(&self) -> Vec<String> {
        self.tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The tenant's cgroup directory.
    ///
    /// # Errors
    /// `TenantNotFound`.
    pub fn cgroup_path(&self, name: &str) -> Result<PathBuf> {
        Ok(self.get(name)?.leaf.path().to_path_buf())
    }
}

impl Drop for ProcessTenants {
    fn drop(&mut self) {
        self.tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Some(base) = self.base.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = base.remove();
        }
    }
}

fn usage_of(leaf: &Leaf, memory_max: Option<u64>) -> Result<TenantUsage> {
    Ok(TenantUsage {
        memory_current: leaf.memory_current().map_err(cg)?,
        memory_peak: leaf.memory_peak().map_err(cg)?,
        memory_max,
        memory_events: leaf.memory_events().map_err(cg)?,
        cpu_usec: leaf.cpu_stat().map(|c| c.usage_usec).unwrap_or(0),
    })
}
