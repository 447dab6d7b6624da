//! Dropping privileges in a process context: a plan computed in the parent, applied in the
//! child between `clone` and the closure or `execve`.
//!
//! Linux calls the sets of `CAP_*` bits capabilities (capabilities(7)). This crate calls the
//! drop a privilege plan, so that "capability" means one thing in its API: a grant of
//! [`CapabilitySystem`](crate::isolation::CapabilitySystem). [`Capability`] is kept as the
//! `caps` crate names one `CAP_*` bit.
//!
//! ## Overview
//!
//! [`PrivilegePlan::drop_all`] starts from "keep nothing"; [`PrivilegePlanBuilder::keep`] keeps a
//! capability in the bounding, permitted and effective sets, [`PrivilegePlanBuilder::keep_ambient`]
//! also in the inheritable and ambient sets (so that it survives `execve` of an ordinary
//! binary as a non-root uid), and [`PrivilegePlanBuilder::uid`], [`gid`](PrivilegePlanBuilder::gid) and
//! [`groups`](PrivilegePlanBuilder::groups) choose the credentials. [`PrivilegePlanBuilder::build`]
//! reads `cap_last_cap` and checks the plan (in the parent: it allocates and reads a file).
//!
//! [`PrivilegePlan::apply_current_thread`] runs in the child, allocation-free and
//! async-signal-safe (raw system calls on the plan's pre-built data), in the order DESIGN.md
//! gives, each step needing what the previous ones still leave:
//!
//! 1. **bounding set**: `PR_CAPBSET_DROP` for every capability not kept (needs an effective
//!    `CAP_SETPCAP`, so it comes first);
//! 2. **keep-caps** (`PR_SET_KEEPCAPS`) when the uid changes, so the permitted set survives;
//! 3. **uid/gid**: `setgroups`, `setresgid`, `setresuid` (need `CAP_SETGID`/`CAP_SETUID`);
//! 4. **permitted, inheritable, effective** with one `capset`, then keep-caps off again;
//! 5. **ambient**: clear all, raise the kept ambient capabilities;
//! 6. **`no_new_privs`**.
//!
//! The seccomp filter goes in last, by the caller ([`crate::seccomp::CompiledFilter`]),
//! because a profile may forbid `capset`/`prctl`, and with `no_new_privs` set the filter needs
//! no `CAP_SYS_ADMIN`.
//!
//! ## Threads
//!
//! Credentials and capability sets belong to a thread. Every call here changes the calling
//! thread only (raw system calls, not glibc's all-thread `setresuid`). Apply the plan in the
//! single-threaded child; in a multi-threaded process, other threads keep their privileges.
//!
//! ## Examples
//!
//! ```no_run
//! use nebula_memory::privileges::{PrivilegePlan, Capability};
//!
//! // In the parent, before clone:
//! let plan = PrivilegePlan::drop_all()
//!     .keep_ambient(Capability::CAP_NET_BIND_SERVICE)
//!     .uid(65534)
//!     .gid(65534)
//!     .groups(&[])
//!     .build()?;
//! // In the child, after clone, before the seccomp filter and execve:
//! plan.apply_current_thread()?;
//! # Ok::<(), nebula_memory::privileges::PrivilegeError>(())
//! ```

use rustix::process::Gid;

pub use ::caps::Capability;

use crate::sys;

/// A set of capabilities as the kernel's 64-bit mask (bit n = capability n).
pub type CapMask = u64;

/// What to keep, and whom to become; built in the parent, applied in the child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivilegePlan {
    bounding: CapMask,
    permitted: CapMask,
    effective: CapMask,
    inheritable: CapMask,
    ambient: CapMask,
    last_cap: u8,
    uid: Option<u32>,
    gid: Option<u32>,
    groups: Option<Box<[Gid]>>,
    no_new_privs: bool,
}

/// Builds a [`PrivilegePlan`]; start with [`PrivilegePlan::drop_all`].
#[derive(Clone, Debug, Default)]
pub struct PrivilegePlanBuilder {
    keep: CapMask,
    ambient: CapMask,
    uid: Option<u32>,
    gid: Option<u32>,
    groups: Option<Vec<u32>>,
    keep_new_privs: bool,
}

impl PrivilegePlanBuilder {
    /// Leaves `no_new_privs` off at the end (an OCI bundle's `noNewPrivileges: false`):
    /// setuid programs and file capabilities keep working after the drop.
    pub fn allow_new_privs(mut self) -> Self {
        self.keep_new_privs = true;
        self
    }

    /// Keeps `cap` in the bounding, permitted and effective sets.
    pub fn keep(mut self, cap: Capability) -> Self {
        self.keep |= cap.bitmask();
        self
    }

    /// Keeps `cap` as [`keep`](Self::keep) does, and also in the inheritable and ambient
    /// sets, so that it survives `execve` of a binary without file capabilities as a non-root
    /// uid.
    pub fn keep_ambient(mut self, cap: Capability) -> Self {
        self.keep |= cap.bitmask();
        self.ambient |= cap.bitmask();
        self
    }

    /// Becomes `uid` (real, effective and saved). Without it the uid is not changed.
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Becomes `gid` (real, effective and saved). Without it the gid is not changed.
    pub fn gid(mut self, gid: u32) -> Self {
        self.gid = Some(gid);
        self
    }

    /// Sets the supplementary groups to exactly `groups` (`&[]` clears them). Without it
    /// they are not changed. In a user namespace this needs `/proc/<pid>/setgroups` to say
    /// `allow` when the gid map is written.
    pub fn groups(mut self, groups: &[u32]) -> Self {
        self.groups = Some(groups.to_vec());
        self
    }

    /// Checks the plan against this kernel (`/proc/sys/kernel/cap_last_cap`) and freezes
    /// it. Call it in the parent.
    ///
    /// # Errors
    /// [`PrivilegeError::ReadLastCap`], or [`PrivilegeError::UnknownCapability`] for a capability the
    /// running kernel does not have.
    pub fn build(self) -> Result<PrivilegePlan, PrivilegeError> {
        let last_cap = sys::privileges::cap_last_cap()
            .map_err(|source| PrivilegeError::ReadLastCap { source })?;
        let known = if last_cap >= 63 {
            u64::MAX
        } else {
            (1u64 << (last_cap + 1)) - 1
        };
        let unknown = self.keep & !known;
        if unknown != 0 {
            // Below 64, since `unknown` is not zero: a u8 holds it.
            #[allow(clippy::cast_possible_truncation)]
            let cap = unknown.trailing_zeros() as u8;
            return Err(PrivilegeError::UnknownCapability { cap, last_cap });
        }
        Ok(PrivilegePlan {
            bounding: self.keep,
            permitted: self.keep,
            effective: self.keep,
            inheritable: self.ambient,
            ambient: self.ambient,
            last_cap,
            uid: self.uid,
            gid: self.gid,
            groups: self
                .groups
                .map(|g| g.into_iter().map(Gid::from_raw).collect()),
            no_new_privs: !self.keep_new_privs,
        })
    }
}

impl PrivilegePlan {
    /// A plan that keeps no capability and changes no id; add to it with the builder.
    pub fn drop_all() -> PrivilegePlanBuilder {
        PrivilegePlanBuilder::default()
    }

    /// The bounding set after the drop.
    pub fn bounding(&self) -> CapMask {
        self.bounding
    }

    /// The permitted set after the drop.
    pub fn permitted(&self) -> CapMask {
        self.permitted
    }

    /// The effective set after the drop.
    pub fn effective(&self) -> CapMask {
        self.effective
    }

    /// The inheritable set after the drop.
    pub fn inheritable(&self) -> CapMask {
        self.inheritable
    }

    /// The ambient set after the drop.
    pub fn ambient(&self) -> CapMask {
        self.ambient
    }

    /// The uid the plan switches to, if any.
    pub fn target_uid(&self) -> Option<u32> {
        self.uid
    }

    /// The gid the plan switches to, if any.
    pub fn target_gid(&self) -> Option<u32> {
        self.gid
    }

    /// Applies the plan to the calling thread, in the order of the module docs, ending with
    /// `no_new_privs`. Install the seccomp filter after it.
    ///
    /// Child-safe: no allocation, no lock, raw system calls on the plan's data only;
    /// async-signal-safe. Affects the calling thread only.
    ///
    /// # Errors
    /// The first step that failed, with its errno (integers only: see
    /// [`PrivilegeError::encode`]). The thread is then partly dropped; do not run the payload.
    pub fn apply_current_thread(&self) -> Result<(), PrivilegeError> {
        self.as_sys()
            .apply_current_thread()
            .map_err(PrivilegeError::from)
    }

    /// The plan as the plain data the child applies.
    pub(crate) fn as_sys(&self) -> sys::privileges::Plan<'_> {
        sys::privileges::Plan {
            bounding: self.bounding,
            permitted: self.permitted,
            effective: self.effective,
            inheritable: self.inheritable,
            ambient: self.ambient,
            last_cap: self.last_cap,
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.as_deref(),
            no_new_privs: self.no_new_privs,
        }
    }
}

/// What went wrong while planning or applying a capability drop.
///
/// The apply variants hold only integers. The child packs its failure into a `u64` with
/// the syscall layer's `Failure::encode` (allocation-free); the supervisor unpacks it with
/// [`PrivilegeError::decode`]. [`PrivilegeError::encode`] is the same packing (a test
/// checks the two agree).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivilegeError {
    /// `/proc/sys/kernel/cap_last_cap` could not be read.
    #[error("reading /proc/sys/kernel/cap_last_cap failed; Hint: is /proc mounted?")]
    ReadLastCap {
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// The plan keeps a capability this kernel does not know.
    #[error("capability {cap} is unknown to this kernel (cap_last_cap is {last_cap})")]
    UnknownCapability {
        /// The capability number.
        cap: u8,
        /// The kernel's highest capability.
        last_cap: u8,
    },
    /// `PR_CAPBSET_DROP` failed.
    #[error(
        "prctl(PR_CAPBSET_DROP, {cap}) failed with errno {errno}; Hint: it needs CAP_SETPCAP in the effective set, so the bounding set is dropped first"
    )]
    DropBounding {
        /// The capability.
        cap: u8,
        /// The errno.
        errno: i32,
    },
    /// `PR_SET_KEEPCAPS` failed.
    #[error(
        "prctl(PR_SET_KEEPCAPS) failed with errno {errno}; Hint: SECBIT_KEEP_CAPS_LOCKED is set"
    )]
    SetKeepCaps {
        /// The errno.
        errno: i32,
    },
    /// `setgroups` failed.
    #[error(
        "setgroups failed with errno {errno}; Hint: it needs CAP_SETGID, and in a user namespace \"allow\" in /proc/<pid>/setgroups before gid_map is written (or leave the groups unchanged)"
    )]
    SetGroups {
        /// The errno.
        errno: i32,
    },
    /// `setresgid` failed.
    #[error(
        "setresgid({gid}) failed with errno {errno}; Hint: EINVAL means the gid has no mapping in the user namespace's gid_map"
    )]
    SetResGid {
        /// The gid.
        gid: u32,
        /// The errno.
        errno: i32,
    },
    /// `setresuid` failed.
    #[error(
        "setresuid({uid}) failed with errno {errno}; Hint: EINVAL means the uid has no mapping in the user namespace's uid_map"
    )]
    SetResUid {
        /// The uid.
        uid: u32,
        /// The errno.
        errno: i32,
    },
    /// `capset` failed.
    #[error(
        "capset failed with errno {errno}; Hint: EPERM means the plan keeps a capability the child's permitted set does not hold"
    )]
    SetCaps {
        /// The errno.
        errno: i32,
    },
    /// `PR_CAP_AMBIENT_CLEAR_ALL` failed.
    #[error(
        "prctl(PR_CAP_AMBIENT_CLEAR_ALL) failed with errno {errno}; Hint: ambient capabilities need Linux 4.3"
    )]
    ClearAmbient {
        /// The errno.
        errno: i32,
    },
    /// `PR_CAP_AMBIENT_RAISE` failed.
    #[error(
        "prctl(PR_CAP_AMBIENT_RAISE, {cap}) failed with errno {errno}; Hint: the capability must be permitted and inheritable, and SECBIT_NO_CAP_AMBIENT_RAISE unset"
    )]
    RaiseAmbient {
        /// The capability.
        cap: u8,
        /// The errno.
        errno: i32,
    },
    /// `PR_SET_NO_NEW_PRIVS` failed.
    #[error("prctl(PR_SET_NO_NEW_PRIVS) failed with errno {errno}")]
    SetNoNewPrivs {
        /// The errno.
        errno: i32,
    },
}

impl PrivilegeError {
    /// The errno of a child-side step, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match *self {
            PrivilegeError::DropBounding { errno, .. }
            | PrivilegeError::SetKeepCaps { errno }
            | PrivilegeError::SetGroups { errno }
            | PrivilegeError::SetResGid { errno, .. }
            | PrivilegeError::SetResUid { errno, .. }
            | PrivilegeError::SetCaps { errno }
            | PrivilegeError::ClearAmbient { errno }
            | PrivilegeError::RaiseAmbient { errno, .. }
            | PrivilegeError::SetNoNewPrivs { errno } => Some(errno),
            _ => None,
        }
    }

    /// Packs a child-side error into a `u64` (step in the top byte, the capability or id in
    /// bits 16..48, the errno in the low 16 bits); `None` for the parent-side variants.
    pub fn encode(&self) -> Option<u64> {
        let (tag, detail): (u64, u32) = match *self {
            PrivilegeError::DropBounding { cap, .. } => (1, cap.into()),
            PrivilegeError::SetKeepCaps { .. } => (2, 0),
            PrivilegeError::SetGroups { .. } => (3, 0),
            PrivilegeError::SetResGid { gid, .. } => (4, gid),
            PrivilegeError::SetResUid { uid, .. } => (5, uid),
            PrivilegeError::SetCaps { .. } => (6, 0),
            PrivilegeError::ClearAmbient { .. } => (7, 0),
            PrivilegeError::RaiseAmbient { cap, .. } => (8, cap.into()),
            PrivilegeError::SetNoNewPrivs { .. } => (9, 0),
            _ => return None,
        };
        // errno values are below 4096: u16 holds them.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let errno = self.errno()? as u16;
        Some(tag << 56 | u64::from(detail) << 16 | u64::from(errno))
    }

    /// Unpacks what [`PrivilegeError::encode`] packed.
    pub fn decode(code: u64) -> Option<PrivilegeError> {
        // The fields are bit ranges of the code: the casts keep exactly their bits.
        #[allow(clippy::cast_possible_truncation)]
        let (errno, detail) = (i32::from(code as u16), (code >> 16) as u32);
        let cap = u8::try_from(detail).ok();
        Some(match code >> 56 {
            1 => PrivilegeError::DropBounding { cap: cap?, errno },
            2 => PrivilegeError::SetKeepCaps { errno },
            3 => PrivilegeError::SetGroups { errno },
            4 => PrivilegeError::SetResGid { gid: detail, errno },
            5 => PrivilegeError::SetResUid { uid: detail, errno },
            6 => PrivilegeError::SetCaps { errno },
            7 => PrivilegeError::ClearAmbient { errno },
            8 => PrivilegeError::RaiseAmbient { cap: cap?, errno },
            9 => PrivilegeError::SetNoNewPrivs { errno },
            _ => return None,
        })
    }
}

impl From<sys::privileges::Failure> for PrivilegeError {
    fn from(f: sys::privileges::Failure) -> Self {
        // The two encodings are one: decoding what the child packed gives the variant.
        PrivilegeError::decode(f.encode()).unwrap_or(PrivilegeError::SetCaps { errno: f.errno })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sets_follow_keep_and_ambient() {
        let p = PrivilegePlan::drop_all()
            .keep(Capability::CAP_CHOWN)
            .keep_ambient(Capability::CAP_NET_BIND_SERVICE)
            .uid(1000)
            .build()
            .unwrap();
        assert_eq!(p.bounding(), 0x401);
        assert_eq!(p.permitted(), 0x401);
        assert_eq!(p.effective(), 0x401);
        assert_eq!(p.inheritable(), 0x400);
        assert_eq!(p.ambient(), 0x400);
        assert_eq!(p.target_uid(), Some(1000));
        assert_eq!(p.target_gid(), None);
    }

    #[test]
    fn child_errors_round_trip_through_a_u64() {
        for e in [
            PrivilegeError::DropBounding { cap: 40, errno: 1 },
            PrivilegeError::SetKeepCaps { errno: 1 },
            PrivilegeError::SetGroups { errno: 1 },
            PrivilegeError::SetResGid {
                gid: 4_000_000_000,
                errno: 22,
            },
            PrivilegeError::SetResUid {
                uid: 65534,
                errno: 22,
            },
            PrivilegeError::SetCaps { errno: 1 },
            PrivilegeError::ClearAmbient { errno: 22 },
            PrivilegeError::RaiseAmbient { cap: 10, errno: 1 },
            PrivilegeError::SetNoNewPrivs { errno: 22 },
        ] {
            let back = PrivilegeError::decode(e.encode().unwrap()).unwrap();
            assert_eq!(back.to_string(), e.to_string());
        }
        assert!(PrivilegeError::decode(0).is_none());
        assert!(
            PrivilegeError::UnknownCapability {
                cap: 50,
                last_cap: 40
            }
            .encode()
            .is_none()
        );
    }

    #[test]
    fn the_childs_plain_failure_decodes_to_the_same_error() {
        use crate::sys::privileges::{Failure, Step};
        for (step, detail) in [
            (Step::DropBounding, 40),
            (Step::SetKeepCaps, 0),
            (Step::SetGroups, 0),
            (Step::SetResGid, 4_000_000_000),
            (Step::SetResUid, 65534),
            (Step::SetCaps, 0),
            (Step::ClearAmbient, 0),
            (Step::RaiseAmbient, 10),
            (Step::SetNoNewPrivs, 0),
        ] {
            let f = Failure {
                step,
                detail,
                errno: libc::EPERM,
            };
            let e = PrivilegeError::from(f);
            assert_eq!(e.encode(), Some(f.encode()), "{step:?}");
            assert_eq!(e.errno(), Some(libc::EPERM));
        }
    }
}
