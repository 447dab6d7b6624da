//! The cpu controller of a [`Leaf`]: `cpu.max` bandwidth and `cpu.stat` (usage, throttling).

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

    /// `cpu.stat`: CPU time used and throttling.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn cpu_stat(&self) -> Result<CpuStat, CgroupError> {
        self.parsed("cpu.stat", CpuStat::parse)
    }
}
