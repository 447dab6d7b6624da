//! Protection keys where the architecture has none: the same names as `enabled`, with
//! uninhabited types. [`Pkeys::probe`] always fails, so no other value can exist.

use std::convert::Infallible;

use super::types::{DomainId, PkeyError, PkruValue, Rights, Unsupported};
use crate::base::ContextId;

/// Proof that protection keys work: cannot exist on this architecture.
#[derive(Clone, Copy, Debug)]
pub struct Pkeys {
    never: Infallible,
}

impl Pkeys {
    /// Always [`Unsupported`] here.
    ///
    /// # Errors
    /// Always.
    pub fn probe() -> Result<Pkeys, Unsupported> {
        Err(Unsupported {
            reason: crate::features()
                .pkeys
                .reason
                .clone()
                .unwrap_or_else(|| "this architecture has no x86 protection keys".into()),
        })
    }

    /// Unreachable: no `Pkeys` exists.
    ///
    /// # Errors
    /// Never returns.
    pub fn alloc(&self, _rights: Rights) -> Result<Pkey, PkeyError> {
        match self.never {}
    }

    /// Unreachable.
    pub fn pkru(&self) -> PkruValue {
        match self.never {}
    }

    /// Unreachable.
    pub fn set_pkru(&self, _value: PkruValue) {
        match self.never {}
    }
}

/// An allocated key: cannot exist here.
#[derive(Debug)]
pub struct Pkey {
    never: Infallible,
}

impl Pkey {
    /// Unreachable.
    pub fn id(&self) -> u32 {
        match self.never {}
    }

    /// Unreachable.
    pub fn tagged_ranges(&self) -> usize {
        match self.never {}
    }
}

/// A set of domains: cannot exist here.
#[derive(Clone, Debug)]
pub struct DomainSet {
    never: Infallible,
}

impl DomainSet {
    /// Unreachable (takes the uninhabited token).
    pub fn new(pkeys: &Pkeys) -> DomainSet {
        match pkeys.never {}
    }

    /// Unreachable.
    pub fn with_max_keys(pkeys: &Pkeys, _max_keys: usize) -> DomainSet {
        match pkeys.never {}
    }

    /// Unreachable.
    pub fn create_domain(&self, _context: Option<ContextId>) -> Domain {
        match self.never {}
    }

    /// Unreachable.
    pub fn hardware_keys(&self) -> usize {
        match self.never {}
    }

    /// Unreachable.
    pub fn evictions(&self) -> u64 {
        match self.never {}
    }

    /// Unreachable.
    pub fn sealed_key(&self) -> Option<u32> {
        match self.never {}
    }

    /// Unreachable.
    pub fn managed_mask(&self) -> u32 {
        match self.never {}
    }

    /// Unreachable.
    pub fn pkeys(&self) -> &Pkeys {
        match self.never {}
    }
}

/// A domain: cannot exist here.
#[derive(Debug)]
pub struct Domain {
    never: Infallible,
}

impl Domain {
    /// Unreachable.
    pub fn id(&self) -> DomainId {
        match self.never {}
    }

    /// Unreachable.
    pub fn context(&self) -> Option<ContextId> {
        match self.never {}
    }

    /// Unreachable.
    pub fn current_key(&self) -> Option<u32> {
        match self.never {}
    }

    /// Unreachable.
    ///
    /// # Errors
    /// Never returns.
    pub fn alloc_region(&self, _size: usize) -> Result<DomainRegion, PkeyError> {
        match self.never {}
    }

    /// Unreachable.
    ///
    /// # Errors
    /// Never returns.
    pub fn enter(&self) -> Result<DomainGuard<'_>, PkeyError> {
        match self.never {}
    }

    pub(crate) fn pin_for_thread(&self) -> Result<u32, PkeyError> {
        match self.never {}
    }

    pub(crate) fn unpin(&self) {
        match self.never {}
    }

    pub(crate) fn set_managed_mask(&self) -> u32 {
        match self.never {}
    }
}

/// Inside a domain: cannot exist here.
#[derive(Debug)]
pub struct DomainGuard<'a> {
    never: Infallible,
    _domain: std::marker::PhantomData<&'a Domain>,
}

impl DomainGuard<'_> {
    /// Unreachable.
    pub fn previous_pkru(&self) -> PkruValue {
        match self.never {}
    }
}

/// A domain region: cannot exist here.
#[derive(Debug)]
pub struct DomainRegion {
    never: Infallible,
}

impl DomainRegion {
    /// Unreachable.
    pub fn start(&self) -> usize {
        match self.never {}
    }

    /// Unreachable.
    pub fn len(&self) -> usize {
        match self.never {}
    }

    /// Unreachable.
    pub fn is_empty(&self) -> bool {
        match self.never {}
    }

    /// Unreachable.
    pub fn domain(&self) -> DomainId {
        match self.never {}
    }

    /// Unreachable.
    pub fn carried_key(&self) -> Option<u32> {
        match self.never {}
    }

    /// Unreachable.
    ///
    /// # Errors
    /// Never returns.
    pub fn write(&self, _offset: usize, _data: &[u8]) -> Result<(), PkeyError> {
        match self.never {}
    }

    /// Unreachable.
    ///
    /// # Errors
    /// Never returns.
    pub fn read(&self, _offset: usize, _buf: &mut [u8]) -> Result<(), PkeyError> {
        match self.never {}
    }

    /// Unreachable.
    ///
    /// # Errors
    /// Never returns.
    pub fn kernel_says_readable(&self, _len: usize) -> Result<bool, PkeyError> {
        match self.never {}
    }
}
