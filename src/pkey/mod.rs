//! Protection keys (x86 PKU): owned keys, tagging, this thread's PKRU, and domains — a key
//! plus the regions it guards — virtualized beyond the 15 hardware keys.
//!
//! ## Mechanism
//!
//! Every page carries a 4-bit key (set with `pkey_mprotect`, at allocation time: it costs
//! as much as `mprotect`). Every thread has a PKRU register with an access-disable and a
//! write-disable bit per key; a load or store to a page whose key the thread's PKRU denies
//! faults with `SIGSEGV`/`SEGV_PKUERR` (key in `si_pkey`), which the violation core
//! ([`crate::violation`]) reports. Switching domains is one `WRPKRU` (about 15 ns), no
//! system call.
//!
//! ```text
//!  DomainSet ── hardware keys k1..k14 (+ one "sealed" key no thread ever opens)
//!   ├ Domain A ─ key k3 ─ regions tagged k3        enter(A): PKRU = all managed keys denied
//!   ├ Domain B ─ key k7 ─ regions tagged k7                     except k3 (one WRPKRU)
//!   └ Domain C ─ evicted ─ regions tagged "sealed"  enter(C): take the least recently used
//!                                                  unpinned domain's key, retag its pages
//!                                                  to "sealed", retag C's pages to that key
//! ```
//!
//! ## Virtualization (libmpk-style)
//!
//! A [`DomainSet`] allocates hardware keys as it needs them; when `pkey_alloc` runs out, it
//! evicts a domain: the least recently used one (approximated with the CLOCK algorithm over
//! a per-domain reference bit, so the switch path writes no shared counter) that no thread
//! is inside. Its pages are retagged to the sealed key, so an evicted domain is as closed as
//! a keyed one, and the key goes to the domain being entered. Entering a domain that holds
//! a key costs one atomic increment, one `RDPKRU` and one `WRPKRU`; entering an evicted one
//! costs two `pkey_mprotect` calls per region. So 1,000 domains work; how fast depends on
//! how many are hot at once.
//!
//! ## What it protects against
//!
//! Bugs, not attackers: any code in the process can execute `WRPKRU`; the kernel reads and
//! writes protected memory on a thread's behalf without a signal (`read(2)` into a denied
//! buffer fails with `EFAULT`), and `/proc/self/mem` and `process_vm_writev` ignore PKRU.
//! Pair it with a seccomp thread filter where that matters, or use the process level.
//!
//! ## Twins
//!
//! `enabled` (x86-64) and `disabled` (elsewhere) export the same names. On an x86-64 host
//! whose CPU or kernel lacks PKU, [`Pkeys::probe`] returns [`Unsupported`] with the probe's
//! reason (`nebula-ctl probe` prints the same), and nothing else can be reached without the
//! token. On other architectures the types are uninhabited.

use std::fmt;

use crate::error::IsolationError;

#[cfg(target_arch = "x86_64")]
mod enabled;
#[cfg(target_arch = "x86_64")]
pub use enabled::*;

#[cfg(not(target_arch = "x86_64"))]
mod disabled;
#[cfg(not(target_arch = "x86_64"))]
pub use disabled::*;

/// Protection keys are not available here; the reason is the probe's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("protection keys are not available here: {reason}")]
pub struct Unsupported {
    /// Why not (the same text as `nebula-ctl probe`).
    pub reason: String,
}

impl From<Unsupported> for IsolationError {
    fn from(e: Unsupported) -> Self {
        IsolationError::Unsupported {
            feature: "pkeys",
            reason: e.reason,
        }
    }
}

/// Errors of the protection-key layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkeyError {
    /// `pkey_alloc` failed.
    #[error("pkey_alloc failed")]
    Alloc(#[source] std::io::Error),
    /// The kernel handed out key 0 (someone freed it): refused, key 0 is everyone's.
    #[error("pkey_alloc returned key 0 (it was freed by someone); refusing to use it")]
    KeyZero,
    /// Every hardware key is pinned by a thread inside its domain; nothing can be evicted.
    #[error(
        "all {keys} hardware keys are in use by threads inside their domains; Hint: leave a domain, or keep fewer than {keys} domains entered at once"
    )]
    NoKeyAvailable {
        /// Hardware keys this set holds.
        keys: usize,
    },
    /// `pkey_mprotect` (tagging or retagging) failed.
    #[error("pkey_mprotect of {len} bytes at {addr:#x} to key {key} failed")]
    Tag {
        /// Range start.
        addr: usize,
        /// Range length.
        len: usize,
        /// The key.
        key: i32,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// Mapping a domain region failed.
    #[error("mapping a {len}-byte domain region failed")]
    Map {
        /// The length.
        len: usize,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The region size is 0 or overflows.
    #[error("invalid domain region size {0}")]
    InvalidSize(usize),
    /// An access outside the region.
    #[error("{len} bytes at offset {offset} are outside the region of {size} bytes")]
    OutOfBounds {
        /// Offset asked for.
        offset: usize,
        /// Length asked for.
        len: usize,
        /// The region's size.
        size: usize,
    },
    /// Registering the region with the violation core failed.
    #[error("registering a domain region for violation reports failed")]
    Register(#[source] crate::violation::ViolationError),
}

impl From<PkeyError> for IsolationError {
    fn from(e: PkeyError) -> Self {
        match e {
            PkeyError::InvalidSize(_) | PkeyError::OutOfBounds { .. } => {
                IsolationError::InvalidConfig(e.to_string())
            }
            PkeyError::Register(v) => v.into(),
            PkeyError::Alloc(ref s)
            | PkeyError::Tag { source: ref s, .. }
            | PkeyError::Map { source: ref s, .. } => IsolationError::System {
                operation: e.to_string(),
                source: std::io::Error::new(s.kind(), s.to_string()),
            },
            other => IsolationError::InvalidConfig(other.to_string()),
        }
    }
}

/// The access a thread has to one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rights {
    /// Read and write.
    ReadWrite,
    /// Read only (`PKEY_DISABLE_WRITE`).
    ReadOnly,
    /// None (`PKEY_DISABLE_ACCESS`).
    NoAccess,
}

impl Rights {
    /// The `pkey_alloc` rights argument / the two PKRU bits.
    pub fn bits(self) -> u32 {
        match self {
            Rights::ReadWrite => 0,
            Rights::ReadOnly => 2,
            Rights::NoAccess => 1,
        }
    }
}

/// A PKRU value: two bits per key (access disable `2k`, write disable `2k+1`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PkruValue(pub u32);

impl PkruValue {
    /// The rights this value gives for `key` (0..16).
    pub fn rights(self, key: u32) -> Rights {
        match (self.0 >> (2 * key)) & 0b11 {
            0 => Rights::ReadWrite,
            0b10 => Rights::ReadOnly,
            _ => Rights::NoAccess,
        }
    }

    /// This value with `key`'s rights replaced.
    #[must_use]
    pub fn with(self, key: u32, rights: Rights) -> PkruValue {
        let shift = 2 * key;
        PkruValue((self.0 & !(0b11 << shift)) | (rights.bits() << shift))
    }
}

impl fmt::Debug for PkruValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PkruValue({:#010x})", self.0)
    }
}

/// A domain's identity within the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct DomainId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkru_values_round_trip_rights() {
        let v = PkruValue(0x5555_5554);
        assert_eq!(v.rights(0), Rights::ReadWrite);
        assert_eq!(v.rights(1), Rights::NoAccess);
        let w = v.with(3, Rights::ReadOnly).with(1, Rights::ReadWrite);
        assert_eq!(w.rights(3), Rights::ReadOnly);
        assert_eq!(w.rights(1), Rights::ReadWrite);
        assert_eq!(w.rights(2), Rights::NoAccess);
        assert_eq!(w.with(3, Rights::NoAccess).with(1, Rights::NoAccess), v);
    }

    #[test]
    fn the_probe_and_the_token_agree() {
        match Pkeys::probe() {
            Ok(_) => assert!(crate::features().pkeys.available),
            Err(e) => {
                assert!(!crate::features().pkeys.available);
                assert_eq!(
                    Some(e.reason.as_str()),
                    crate::features().pkeys.reason.as_deref()
                );
            }
        }
    }
}
