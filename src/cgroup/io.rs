//! The io controller of a [`Leaf`]: `io.max` per-device rate limits and `io.stat`.

use std::collections::BTreeMap;

use super::error::CgroupError;
use super::leaf::Leaf;
use super::parse::{IoDevice, IoMax, parse_io_stat};

impl Leaf {
    /// Writes one `io.max` line: rate limits for one block device (fields left `None` are
    /// not changed).
    ///
    /// # Errors
    ///
    /// [`CgroupError::ControllerNotEnabled`] without the io controller; [`CgroupError::Write`]
    /// (`ENODEV`/`EINVAL` for a device that is not a whole block device).
    pub fn set_io_max(&self, max: &IoMax) -> Result<(), CgroupError> {
        self.write_ctl("io.max", &max.to_string())
    }

    /// Reads back `io.max` (the devices that have a limit).
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn io_max(&self) -> Result<Vec<IoMax>, CgroupError> {
        self.parsed("io.max", IoMax::parse_file)
    }

    /// `io.stat`: per-device byte and operation counters.
    ///
    /// # Errors
    ///
    /// As [`Leaf::memory_max`].
    pub fn io_stat(&self) -> Result<BTreeMap<IoDevice, BTreeMap<String, u64>>, CgroupError> {
        self.parsed("io.stat", parse_io_stat)
    }
}
