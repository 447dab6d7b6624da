//! What `nebula-ctl` keeps and reads: the registry of running contexts (one file per context
//! under `/run/nebula`, with its cgroup reached through the cgroup manager) and the run
//! profile (the TOML keys and flags of `nebula-ctl run`).

pub mod profile;
pub mod registry;
pub mod report;
