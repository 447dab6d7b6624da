//! Multi-tenancy: named tenants with limits, code run on their behalf, per-tenant metrics.
//!
//! An in-process tenant is a region context with the tenant's budget; every
//! [`execute_tenant_code`](TenantManager::execute_tenant_code) runs in a fresh child of it,
//! so a run's memory counts against the tenant while it runs and is returned when it ends.
//! What this level can enforce is memory (bytes and allocations); CPU and I/O limits need
//! the kernel's help (cgroup v2 `cpu.max`, `io.max`) and belong to process tenants, so
//! asking for them here is an [`IsolationError::Unsupported`] error, never silently
//! ignored. Nor can it preempt: a run's deadline is checked when it returns (see
//! [`IsolatedContext::execute`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::context::{ContextStats, IsolatedContext, MemoryIsolation};
use crate::error::{IsolationError, Result};

/// A tenant's limits.
#[derive(Clone, Debug, Default)]
pub struct TenantLimits {
    /// Memory budget in bytes (required for an in-process tenant).
    pub memory: Option<u64>,
    /// Most allocations per run.
    pub max_allocations: Option<u64>,
    /// Deadline per run.
    pub timeout: Option<Duration>,
    /// CPU share (fraction of one CPU); process tenants only.
    pub cpu: Option<f64>,
    /// `io.max` per device; process tenants only.
    pub io: Vec<crate::cgroup::IoMax>,
}

/// What a tenant has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TenantMetrics {
    /// Runs started.
    pub runs: u64,
    /// Runs that ended in an error (panic, deadline).
    pub failed_runs: u64,
    /// Time spent in runs.
    pub total_duration: Duration,
    /// The longest run.
    pub max_duration: Duration,
    /// The most memory one run had in use at its end, in bytes (the region level cannot
    /// watch between allocations without cost; the tenant's monitor sees crossings live).
    pub peak_memory: u64,
    /// Limit refusals (memory, allocations), panics and deadline overruns.
    pub violations: u64,
}

#[derive(Debug)]
struct Tenant {
    root: IsolatedContext,
    limits: TenantLimits,
    metrics: Mutex<TenantMetrics>,
}

/// Tenants by name.
#[derive(Debug, Default)]
pub struct TenantManager {
    iso: MemoryIsolation,
    tenants: Mutex<BTreeMap<String, Arc<Tenant>>>,
}

impl TenantManager {
    /// No tenants yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&self, name: &str) -> Result<Arc<Tenant>> {
        let map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        map.get(name)
            .cloned()
            .ok_or_else(|| IsolationError::TenantNotFound(name.to_string()))
    }

    /// Creates an in-process tenant.
    ///
    /// # Errors
    /// `InvalidConfig` for an empty or duplicate name or a missing memory budget;
    /// `Unsupported` for CPU or I/O limits (only process tenants can enforce those).
    pub fn create_tenant(&self, name: &str, limits: TenantLimits) -> Result<()> {
        if name.is_empty() {
            return Err(IsolationError::InvalidConfig(
                "a tenant needs a name".into(),
            ));
        }
        if limits.cpu.is_some() {
            return Err(IsolationError::Unsupported {
                feature: "CPU limit for an in-process tenant",
                reason: super::context::REGION_CPU_REASON.into(),
            });
        }
        if !limits.io.is_empty() {
            return Err(IsolationError::Unsupported {
                feature: "I/O limit for an in-process tenant",
                reason: super::context::REGION_IO_REASON.into(),
            });
        }
        let Some(memory) = limits.memory else {
            return Err(IsolationError::InvalidConfig(format!(
                "tenant {name:?} needs a memory budget (TenantLimits::memory)"
            )));
        };
        let mut map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(name) {
            return Err(IsolationError::InvalidConfig(format!(
                "tenant {name:?} exists already"
            )));
        }
        let root = self
            .iso
            .create_context()
            .with_name(format!("tenant:{name}"))
            .with_memory_limit(memory)
            .build()?;
        map.insert(
            name.to_string(),
            Arc::new(Tenant {
                root,
                limits,
                metrics: Mutex::default(),
            }),
        );
        Ok(())
    }

    /// Runs `f` for tenant `name` in a fresh child context of the tenant's budget.
    ///
    /// # Errors
    /// `TenantNotFound`; what the child's [`IsolatedContext::execute`] returns
    /// (`ThreadPanicked`, `DeadlineExceeded`); context creation errors.
    pub fn execute_tenant_code<R>(
        &self,
        name: &str,
        f: impl FnOnce(&IsolatedContext) -> R,
    ) -> Result<R> {
        let t = self.get(name)?;
        let mut b = self
            .iso
            .create_context()
            .with_name(format!("{name}:run"))
            .with_parent(&t.root);
        if let Some(n) = t.limits.max_allocations {
            b = b.with_max_allocations(n);
        }
        if let Some(d) = t.limits.timeout {
            b = b.with_timeout(d);
        }
        let run = b.build()?;
        let started = Instant::now();
        let out = run.execute(f);
        let elapsed = started.elapsed();
        let st = run.stats();
        let mut m = t.metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.runs += 1;
        m.total_duration += elapsed;
        m.max_duration = m.max_duration.max(elapsed);
        m.peak_memory = m.peak_memory.max(st.memory_used);
        m.violations += st.refused + u64::from(out.is_err());
        m.failed_runs += u64::from(out.is_err());
        out
    }

    /// The tenant's metrics.
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

    /// The tenant's current usage (its budget's context).
    ///
    /// # Errors
    /// `TenantNotFound`.
    pub fn tenant_stats(&self, name: &str) -> Result<ContextStats> {
        Ok(self.get(name)?.root.stats())
    }

    /// Calls `callback` when the tenant's memory in use reaches `fraction` of its budget.
    ///
    /// # Errors
    /// `TenantNotFound`; `InvalidConfig` for a fraction outside (0, 1].
    pub fn set_monitor(
        &self,
        name: &str,
        fraction: f64,
        callback: impl Fn(&ContextStats) + Send + Sync + 'static,
    ) -> Result<()> {
        self.get(name)?.root.set_monitor_at(fraction, callback)
    }

    /// Removes a tenant (runs in progress keep its budget alive until they end).
    ///
    /// # Errors
    /// `TenantNotFound`.
    pub fn remove_tenant(&self, name: &str) -> Result<()> {
        let mut map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(name)
            .map(|_| ())
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
}
