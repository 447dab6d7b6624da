//! The memory controller of a [`Leaf`]: `memory.max`, `memory.high`, `memory.swap.max`,
//! `memory.oom.group`, usage, peak, events, `memory.stat` and memory pressure (PSI).

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::CgroupError;
use super::leaf::Leaf;
use super::parse::{
    Limit, MemoryEvents, PsiKind, PsiStats, parse_flat_keyed, parse_limit, parse_psi, parse_u64,
};
use super::psi::PsiTrigger;

impl Leaf {
    /// Sets `memory.max`, the hard limit: beyond it the kernel reclaims, then OOM-kills inside
    /// the leaf. The kernel rounds down to whole pages.
    ///
    /// # Errors
    ///
    /// [`CgroupError::ControllerNotEnabled`] without the memory controller;
    /// [`CgroupError::Write`].
    pub fn set_memory_max(&self, limit: Limit) -> Result<(), CgroupError> {
        self.write_ctl("memory.max", &limit.to_string())
    }

    /// Sets `memory.high`, the throttle limit. Without swap a context above it is slowed down
    /// indefinitely, never killed: pair it with a [`PsiTrigger`] or with `memory.max`.
    ///
    /// # Errors
    ///
    /// As [`Leaf::set_memory_max`].
    pub fn set_memory_high(&self, limit: Limit) -> Result<(), CgroupError> {
        self.write_ctl("memory.high", &limit.to_string())
    }

    /// Sets `memory.low`, best-effort protection: memory below it is reclaimed only when
    /// nothing unprotected is left (OCI's `memory.reservation` on cgroup v2).
    ///
    /// # Errors
    ///
    /// As [`Leaf::set_memory_max`].
    pub fn set_memory_low(&self, limit: Limit) -> Result<(), CgroupError> {
        self.write_ctl("memory.low", &limit.to_string())
    }

    /// Sets `memory.swap.max`; `Limit::Value(0)` makes `memory.max` exact.
    ///
    /// # Errors
    ///
    /// As [`Leaf::set_memory_max`]; [`CgroupError::FileMissing`] on a kernel without swap
    /// accounting.
    pub fn set_memory_swap_max(&self, limit: Limit) -> Result<(), CgroupError> {
        self.write_ctl("memory.swap.max", &limit.to_string())
    }

    /// Sets `memory.oom.group`: when true, an OOM kill takes every process of the leaf.
    ///
    /// # Errors
    ///
    /// As [`Leaf::set_memory_max`].
    pub fn set_memory_oom_group(&self, whole_group: bool) -> Result<(), CgroupError> {
        self.write_ctl("memory.oom.group", if whole_group { "1" } else { "0" })
    }

    /// Reads back `memory.max` (page-rounded by the kernel).
    ///
    /// # Errors
    ///
    /// [`CgroupError::ControllerNotEnabled`], [`CgroupError::Read`], [`CgroupError::Parse`].
    pub fn memory_max(&self) -> Result<Limit, CgroupError> {
        self.parsed("memory.max", parse_limit)
    }

    /// Reads back `memory.high`.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn memory_high(&self) -> Result<Limit, CgroupError> {
        self.parsed("memory.high", parse_limit)
    }

    /// Reads back `memory.swap.max`.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn memory_swap_max(&self) -> Result<Limit, CgroupError> {
        self.parsed("memory.swap.max", parse_limit)
    }

    /// `memory.current`: bytes charged to the leaf now.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn memory_current(&self) -> Result<u64, CgroupError> {
        self.parsed("memory.current", parse_u64)
    }

    /// `memory.peak`: the high-water mark in bytes, or `None` on kernels before 5.19.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn memory_peak(&self) -> Result<Option<u64>, CgroupError> {
        match self.parsed("memory.peak", parse_u64) {
            Ok(v) => Ok(Some(v)),
            Err(CgroupError::FileMissing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `memory.events`: counters of limit hits; `oom_kill > 0` means the OOM killer killed
    /// something in this leaf.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn memory_events(&self) -> Result<MemoryEvents, CgroupError> {
        self.parsed("memory.events", MemoryEvents::parse)
    }

    /// `memory.stat`: the usage breakdown (`anon`, `file`, `pgfault`, ...), in bytes or counts
    /// as the kernel documents per key.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn memory_stat(&self) -> Result<BTreeMap<String, u64>, CgroupError> {
        self.parsed("memory.stat", parse_flat_keyed)
    }

    /// `memory.pressure`: PSI stall averages and totals.
    ///
    /// # Errors
    ///
    /// [`CgroupError::FileMissing`] when PSI is disabled; [`CgroupError::Read`],
    /// [`CgroupError::Parse`].
    pub fn memory_pressure(&self) -> Result<PsiStats, CgroupError> {
        self.parsed("memory.pressure", parse_psi)
    }

    /// Arms a PSI trigger on this leaf's `memory.pressure`: it fires when tasks of the leaf
    /// were stalled on memory for `stall` within a `window` (500 ms to 10 s).
    ///
    /// # Errors
    ///
    /// As [`PsiTrigger::open`].
    pub fn memory_pressure_trigger(
        &self,
        kind: PsiKind,
        stall: Duration,
        window: Duration,
    ) -> Result<PsiTrigger, CgroupError> {
        PsiTrigger::open_in(&self.dir, "memory.pressure", kind, stall, window)
    }
}
