//! The vocabulary both halves of the pkey level share: key rights, PKRU values, domain ids
//! and the errors.

use std::fmt;

/// Protection keys are not available here; the reason is the probe's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("protection keys are not available here: {reason}")]
pub struct Unsupported {
    /// Why not (the same text as `nebula-ctl probe`).
    pub reason: String,
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
