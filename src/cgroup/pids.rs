//! The pids controller of a [`Leaf`]: `pids.max`, `pids.current` and `pids.events`.

use super::error::CgroupError;
use super::leaf::Leaf;
use super::parse::{Limit, PidsEvents, parse_limit, parse_u64};

impl Leaf {
    /// Sets `pids.max`, the number of processes and threads; forks beyond it fail with
    /// `EAGAIN` and count in [`PidsEvents::max`].
    ///
    /// # Errors
    ///
    /// [`CgroupError::ControllerNotEnabled`] without the pids controller; [`CgroupError::Write`].
    pub fn set_pids_max(&self, limit: Limit) -> Result<(), CgroupError> {
        self.write_ctl("pids.max", &limit.to_string())
    }

    /// Reads back `pids.max`.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn pids_max(&self) -> Result<Limit, CgroupError> {
        self.parsed("pids.max", parse_limit)
    }

    /// `pids.current`: processes and threads in the leaf now.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn pids_current(&self) -> Result<u64, CgroupError> {
        self.parsed("pids.current", parse_u64)
    }

    /// `pids.events`: how many forks `pids.max` refused.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn pids_events(&self) -> Result<PidsEvents, CgroupError> {
        self.parsed("pids.events", PidsEvents::parse)
    }
}
