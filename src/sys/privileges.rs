//! Capabilities and credentials of the calling thread: the bounding set, keep-caps, the
//! uid/gid/supplementary groups, the permitted/inheritable/effective sets and the ambient set.
//!
//! Every call here acts on the **calling thread only** (the kernel keeps credentials per
//! task). They are raw system calls through rustix's linux_raw backend: no libc wrapper (glibc's
//! `setresuid` would broadcast to every thread with signals), no errno, no allocation, so all
//! of them are async-signal-safe and may run in a child between `clone` and `execve`.
//! Capability numbers are plain `u8` bit positions (`CAP_CHOWN` = 0 ... `cap_last_cap`).

use rustix::io::Errno;
use rustix::process::{Gid, Uid};
use rustix::thread::{CapabilitySet, CapabilitySets};

/// Permitted, inheritable and effective sets as bit masks (bit n = capability n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapMasks {
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
}

/// Sets the calling thread's permitted, inheritable and effective sets (`capset`).
///
/// # Errors
/// `EPERM` when a set would gain a capability that is not permitted (or, for inheritable,
/// not in the bounding set without `CAP_SETPCAP`), or when effective is not a subset of
/// permitted.
///
/// # References
/// capset(2), capabilities(7) "Programmatically adjusting capability sets".
pub fn capset(masks: CapMasks) -> Result<(), Errno> {
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::from_bits_retain(masks.effective),
            permitted: CapabilitySet::from_bits_retain(masks.permitted),
            inheritable: CapabilitySet::from_bits_retain(masks.inheritable),
        },
    )
}

/// Whether capability `cap` is in the calling thread's bounding set (`PR_CAPBSET_READ`).
///
/// # Errors
/// `EINVAL` when `cap` is above `cap_last_cap`.
///
/// # References
/// prctl(2) `PR_CAPBSET_READ`.
pub fn bounding_contains(cap: u8) -> Result<bool, Errno> {
    let set = CapabilitySet::from_bits_retain(1u64.checked_shl(cap.into()).ok_or(Errno::INVAL)?);
    rustix::thread::capability_is_in_bounding_set(set)
}

/// Drops capability `cap` from the calling thread's bounding set (`PR_CAPBSET_DROP`). Needs
/// `CAP_SETPCAP` in the effective set, so it must come before the effective set is lowered.
///
/// # Errors
/// `EPERM` without an effective `CAP_SETPCAP`; `EINVAL` when `cap` is above `cap_last_cap`.
///
/// # References
/// prctl(2) `PR_CAPBSET_DROP`.
pub fn bounding_drop(cap: u8) -> Result<(), Errno> {
    let set = CapabilitySet::from_bits_retain(1u64.checked_shl(cap.into()).ok_or(Errno::INVAL)?);
    rustix::thread::remove_capability_from_bounding_set(set)
}

/// Sets or clears the calling thread's keep-caps flag (`PR_SET_KEEPCAPS`): with it, a change
/// from uid 0 to non-zero uids keeps the permitted set (effective is still cleared). `execve`
/// clears it.
///
/// # Errors
/// `EPERM` when `SECBIT_KEEP_CAPS_LOCKED` is set.
///
/// # References
/// prctl(2) `PR_SET_KEEPCAPS`, capabilities(7) "Effect of user ID changes on capabilities".
pub fn set_keepcaps(keep: bool) -> Result<(), Errno> {
    rustix::thread::set_keep_capabilities(keep)
}

/// Sets the calling thread's supplementary groups (`setgroups`, raw system call).
///
/// # Errors
/// `EPERM` without `CAP_SETGID`, or in a user namespace whose `/proc/<pid>/setgroups` says
/// `deny`; `EINVAL` for more than `NGROUPS_MAX` groups or a gid without a mapping.
///
/// # References
/// setgroups(2), user_namespaces(7) "The /proc/\[pid\]/setgroups file".
pub fn set_groups(groups: &[Gid]) -> Result<(), Errno> {
    rustix::thread::set_thread_groups(groups)
}

/// Sets the calling thread's real, effective and saved gid to `gid` (`setresgid`, raw
/// system call: this thread only).
///
/// # Errors
/// `EPERM` without `CAP_SETGID`; `EINVAL` when `gid` has no mapping in the user namespace.
///
/// # References
/// setresgid(2).
pub fn set_res_gid(gid: u32) -> Result<(), Errno> {
    let g = Gid::from_raw(gid);
    rustix::thread::set_thread_res_gid(g, g, g)
}

/// Sets the calling thread's real, effective and saved uid to `uid` (`setresuid`, raw
/// system call: this thread only). Leaving uid 0 clears the effective set, and the permitted
/// set too unless keep-caps is on ([`set_keepcaps`]).
///
/// # Errors
/// `EPERM` without `CAP_SETUID`; `EINVAL` when `uid` has no mapping in the user namespace.
///
/// # References
/// setresuid(2), capabilities(7).
pub fn set_res_uid(uid: u32) -> Result<(), Errno> {
    let u = Uid::from_raw(uid);
    rustix::thread::set_thread_res_uid(u, u, u)
}

/// Clears the calling thread's ambient set (`PR_CAP_AMBIENT_CLEAR_ALL`).
///
/// # Errors
/// `EINVAL` on kernels before 4.3.
///
/// # References
/// prctl(2) `PR_CAP_AMBIENT`.
pub fn ambient_clear_all() -> Result<(), Errno> {
    rustix::thread::clear_ambient_capability_set()
}

/// Raises capability `cap` in the calling thread's ambient set (`PR_CAP_AMBIENT_RAISE`);
/// it must be in both the permitted and the inheritable set.
///
/// # Errors
/// `EPERM` when `cap` is not permitted and inheritable, or `SECBIT_NO_CAP_AMBIENT_RAISE` is
/// set; `EINVAL` for an unknown capability or a kernel before 4.3.
///
/// # References
/// prctl(2) `PR_CAP_AMBIENT_RAISE`.
pub fn ambient_raise(cap: u8) -> Result<(), Errno> {
    let set = CapabilitySet::from_bits_retain(1u64.checked_shl(cap.into()).ok_or(Errno::INVAL)?);
    rustix::thread::configure_capability_in_ambient_set(set, true)
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`). Reads
/// a file: call it in the parent, not in a child between clone and exec.
///
/// # Errors
/// The read error, or `InvalidData` when the file does not hold a number below 64.
///
/// # References
/// capabilities(7) "/proc/sys/kernel/cap_last_cap".
pub fn cap_last_cap() -> std::io::Result<u8> {
    let text = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?;
    text.trim()
        .parse::<u8>()
        .ok()
        .filter(|&n| n < 64)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("/proc/sys/kernel/cap_last_cap holds {text:?}"),
            )
        })
}

/// A privilege drop as plain data: the sets to keep and the credentials to take, applied by
/// [`Plan::apply_current_thread`] in the order of capabilities(7)'s constraints.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    /// Bounding set to keep.
    pub bounding: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Effective set.
    pub effective: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set to raise (after clearing it).
    pub ambient: u64,
    /// The kernel's highest capability number.
    pub last_cap: u8,
    /// The uid to switch to.
    pub uid: Option<u32>,
    /// The gid to switch to.
    pub gid: Option<u32>,
    /// The supplementary groups to set.
    pub groups: Option<&'a [Gid]>,
    /// Set `no_new_privs` at the end.
    pub no_new_privs: bool,
}

/// A step of [`Plan::apply_current_thread`]; the numbers are the tags of
/// [`Failure::encode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    /// `PR_CAPBSET_DROP` (detail: the capability).
    DropBounding = 1,
    /// `PR_SET_KEEPCAPS`.
    SetKeepCaps = 2,
    /// `setgroups`.
    SetGroups = 3,
    /// `setresgid` (detail: the gid).
    SetResGid = 4,
    /// `setresuid` (detail: the uid).
    SetResUid = 5,
    /// `capset`.
    SetCaps = 6,
    /// `PR_CAP_AMBIENT_CLEAR_ALL`.
    ClearAmbient = 7,
    /// `PR_CAP_AMBIENT_RAISE` (detail: the capability).
    RaiseAmbient = 8,
    /// `PR_SET_NO_NEW_PRIVS`.
    SetNoNewPrivs = 9,
}

/// The step of a plan that failed, its detail (capability, uid or gid) and the errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The step.
    pub step: Step,
    /// The capability, uid or gid the step acted on; 0 for the others.
    pub detail: u32,
    /// The errno.
    pub errno: i32,
}

impl Failure {
    fn at(step: Step, detail: u32) -> impl Fn(Errno) -> Failure {
        move |e| Failure {
            step,
            detail,
            errno: e.raw_os_error(),
        }
    }

    /// Packs the failure into a `u64` for the pipe to the supervisor: the step in the top
    /// byte, the detail in bits 16..48, the errno in the low 16 bits.
    pub fn encode(self) -> u64 {
        // errno values are below 4096: u16 holds them.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let errno = self.errno as u16;
        u64::from(self.step as u8) << 56 | u64::from(self.detail) << 16 | u64::from(errno)
    }
}

impl Plan<'_> {
    /// Applies the plan to the calling thread: bounding set (while `CAP_SETPCAP` is still
    /// effective), keep-caps, groups, gid, uid, then permitted/inheritable/effective in one
    /// `capset`, keep-caps off, ambient, and `no_new_privs` last.
    ///
    /// Child-safe: no allocation, no lock, raw system calls on the plan's data only;
    /// async-signal-safe. Affects the calling thread only.
    ///
    /// # Errors
    /// The first step that failed. The thread is then partly dropped; do not run the payload.
    ///
    /// # References
    /// capabilities(7) "Effect of user ID changes on capabilities", prctl(2).
    pub fn apply_current_thread(&self) -> Result<(), Failure> {
        for cap in 0..=self.last_cap {
            if self.bounding & (1u64 << cap) != 0 {
                continue;
            }
            let fail = Failure::at(Step::DropBounding, cap.into());
            if bounding_contains(cap).map_err(&fail)? {
                bounding_drop(cap).map_err(&fail)?;
            }
        }
        if self.uid.is_some() {
            set_keepcaps(true).map_err(Failure::at(Step::SetKeepCaps, 0))?;
        }
        // Groups and gid first: after setresuid the thread may lack CAP_SETGID.
        if let Some(groups) = self.groups {
            set_groups(groups).map_err(Failure::at(Step::SetGroups, 0))?;
        }
        if let Some(gid) = self.gid {
            set_res_gid(gid).map_err(Failure::at(Step::SetResGid, gid))?;
        }
        if let Some(uid) = self.uid {
            set_res_uid(uid).map_err(Failure::at(Step::SetResUid, uid))?;
        }
        capset(CapMasks {
            effective: self.effective,
            permitted: self.permitted,
            inheritable: self.inheritable,
        })
        .map_err(Failure::at(Step::SetCaps, 0))?;
        if self.uid.is_some() {
            set_keepcaps(false).map_err(Failure::at(Step::SetKeepCaps, 0))?;
        }
        ambient_clear_all().map_err(Failure::at(Step::ClearAmbient, 0))?;
        for cap in 0..=self.last_cap {
            if self.ambient & (1u64 << cap) != 0 {
                ambient_raise(cap).map_err(Failure::at(Step::RaiseAmbient, cap.into()))?;
            }
        }
        // no_new_privs: execve can no longer add privileges (setuid bits, file caps).
        if !self.no_new_privs {
            return Ok(());
        }
        super::seccomp::set_no_new_privs().map_err(Failure::at(Step::SetNoNewPrivs, 0))
    }
}
