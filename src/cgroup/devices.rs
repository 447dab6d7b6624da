//! Device access of a [`Leaf`]: cgroup v2 has no `devices.allow` file; its device
//! controller is an eBPF program attached to the cgroup (built by nebula's `sys::bpf`).

use super::error::CgroupError;
use super::leaf::Leaf;
pub use crate::sys::bpf::{ACC_MKNOD, ACC_READ, ACC_WRITE, DEV_BLOCK, DEV_CHAR, DeviceRule};

impl Leaf {
    /// Limits which device nodes the leaf's processes may create, read and write: `rules`
    /// are checked last to first, the first match decides, and an access no rule matches is
    /// allowed (cgroup v1's `devices.allow`/`devices.deny` semantics; start with a rule
    /// that denies everything for an allow list). The program stays attached for the
    /// leaf's life and covers its descendants.
    ///
    /// # Errors
    ///
    /// [`CgroupError::Write`] naming `bpf(BPF_PROG_LOAD/BPF_PROG_ATTACH)` with the kernel's
    /// answer (`EPERM` without `CAP_BPF`). A program attached before is replaced.
    pub fn set_device_rules(&self, rules: &[DeviceRule]) -> Result<(), CgroupError> {
        let describe = || format!("{} device rules", rules.len());
        let prog = crate::sys::bpf::compile(rules).map_err(|source| CgroupError::Write {
            path: self.path().join("(bpf device program)"),
            value: describe(),
            source,
        })?;
        crate::sys::bpf::attach_device_program(self.dir_fd(), &prog).map_err(|source| {
            CgroupError::Write {
                path: self.path().join("(bpf BPF_CGROUP_DEVICE attach)"),
                value: describe(),
                source,
            }
        })
    }
}
