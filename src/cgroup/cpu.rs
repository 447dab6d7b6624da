//! The cpu controller of a [`Leaf`]: `cpu.max` bandwidth, `cpu.weight` and `cpu.stat`
//! (usage, throttling).

use super::error::CgroupError;
use super::leaf::Leaf;
use super::parse::{CpuMax, CpuStat, parse_cpu_max};

impl Leaf {
    /// Sets `cpu.max`, e.g. `CpuMax::from_fraction(0.2)?` for 20 % of one CPU.
    ///
    /// # Errors
    ///
    /// [`CgroupError::ControllerNotEnabled`] without the cpu controller; [`CgroupError::Write`].
    pub fn set_cpu_max(&self, max: CpuMax) -> Result<(), CgroupError> {
        self.write_ctl("cpu.max", &max.to_string())
    }

    /// Reads back `cpu.max`.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn cpu_max(&self) -> Result<CpuMax, CgroupError> {
        self.parsed("cpu.max", parse_cpu_max)
    }

    /// Sets `cpu.weight` (1 to 10000, default 100): the leaf's share of CPU time against its
    /// siblings when they compete.
    ///
    /// # Errors
    ///
    /// As [`Leaf::set_cpu_max`].
    pub fn set_cpu_weight(&self, weight: u64) -> Result<(), CgroupError> {
        self.write_ctl("cpu.weight", &weight.to_string())
    }

    /// `cpu.stat`: CPU time used and throttling.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn cpu_stat(&self) -> Result<CpuStat, CgroupError> {
        self.parsed("cpu.stat", CpuStat::parse)
    }
}
