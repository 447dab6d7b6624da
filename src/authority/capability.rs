//! Capabilities: unforgeable, revocable rights of a context over a named resource.
//!
//! A [`CapabilitySystem`] hands out [`CapabilityId`]s. A capability names its owner (the
//! [`ContextId`] that may present it), a resource, a permission set, an optional expiry and
//! an optional number of uses. [`check`](CapabilitySystem::check) answers whether a context
//! may use it now; [`consume`](CapabilitySystem::consume) also takes one use, atomically, so
//! concurrent consumers of a 10-use capability get exactly 10 successes.
//!
//! Delegation ([`delegate`](CapabilitySystem::delegate)) lets a holder grant another
//! context a subset of its own permissions, never more and never for longer; a delegated
//! capability dies with the one it came from (revoking a capability revokes everything
//! delegated from it, transitively).
//!
//! Errors come in a fixed order, the first that applies: not found (or revoked, or an
//! ancestor revoked), not owned by the presenting context, expired, exhausted, insufficient
//! permissions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::base::{ContextId, Permissions};
use crate::error::{IsolationError, Result};

/// A capability's identity; never reused within a process.
pub type CapabilityId = u64;

bitflags::bitflags! {
    /// What a capability allows on its resource.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct CapPermissions: u32 {
        /// Read the resource.
        const READ = 1;
        /// Write the resource.
        const WRITE = 1 << 1;
        /// Execute / invoke it.
        const EXECUTE = 1 << 2;
        /// Send on it (channels).
        const SEND = 1 << 3;
        /// Receive on it (channels).
        const RECEIVE = 1 << 4;
        /// Delegate it further.
        const DELEGATE = 1 << 5;
    }
}

/// What a capability names (free-form: `"channel:logs"`, `"file:/data"`); the seed's name.
pub type ResourceId = String;

impl From<Permissions> for CapPermissions {
    /// A memory permission set as capability permissions: `READ`, `WRITE` and `EXECUTE`
    /// each to the same-named bit.
    fn from(p: Permissions) -> Self {
        let mut c = CapPermissions::empty();
        c.set(CapPermissions::READ, p.contains(Permissions::READ));
        c.set(CapPermissions::WRITE, p.contains(Permissions::WRITE));
        c.set(CapPermissions::EXECUTE, p.contains(Permissions::EXECUTE));
        c
    }
}

/// How to grant a capability.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The context that will hold it.
    pub owner: ContextId,
    /// The resource it names (free-form: `"channel:logs"`, `"file:/data"`, ...).
    pub resource: String,
    /// What it allows.
    pub permissions: CapPermissions,
    /// How long it lives from now; `None`: until revoked.
    pub expires_in: Option<Duration>,
    /// How many times it can be consumed; `None`: unlimited.
    pub uses: Option<u64>,
}

impl Grant {
    /// A grant of `permissions` on `resource` to `owner`, without expiry or use limit.
    pub fn new(owner: ContextId, resource: impl Into<String>, permissions: CapPermissions) -> Self {
        Grant {
            owner,
            resource: resource.into(),
            permissions,
            expires_in: None,
            uses: None,
        }
    }

    /// Expires `d` after the grant.
    pub fn expires_in(mut self, d: Duration) -> Self {
        self.expires_in = Some(d);
        self
    }

    /// Can be consumed `n` times.
    pub fn uses(mut self, n: u64) -> Self {
        self.uses = Some(n);
        self
    }
}

/// What a capability looks like from the outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapabilityInfo {
    /// Its id.
    pub id: CapabilityId,
    /// Its holder.
    pub owner: ContextId,
    /// The resource.
    pub resource: String,
    /// Its permissions.
    pub permissions: CapPermissions,
    /// When it expires.
    pub expires_at: Option<Instant>,
    /// Uses left (`None`: unlimited).
    pub remaining_uses: Option<u64>,
    /// The capability it was delegated from.
    pub delegated_from: Option<CapabilityId>,
}

const UNLIMITED: u64 = u64::MAX;

#[derive(Debug)]
struct Cap {
    owner: ContextId,
    resource: String,
    permissions: CapPermissions,
    expires_at: Option<Instant>,
    remaining: AtomicU64,
    parent: Option<CapabilityId>,
}

/// Grants, checks, consumes and revokes capabilities. Thread-safe; share it with `Arc`.
#[derive(Debug, Default)]
pub struct CapabilitySystem {
    caps: RwLock<HashMap<CapabilityId, Arc<Cap>>>,
    next: AtomicU64,
}

fn names(p: CapPermissions) -> String {
    let v: Vec<&str> = p.iter_names().map(|(n, _)| n).collect();
    v.join("|")
}

impl CapabilitySystem {
    /// An empty system.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<CapabilityId, Arc<Cap>>> {
        self.caps.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<CapabilityId, Arc<Cap>>> {
        self.caps.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Grants a capability and returns its id.
    ///
    /// # Errors
    /// [`IsolationError::InvalidConfig`] for zero uses, an empty permission set or an
    /// expiry that overflows the clock.
    pub fn grant(&self, g: Grant) -> Result<CapabilityId> {
        let expires_at = match g.expires_in {
            Some(d) => Some(Instant::now().checked_add(d).ok_or_else(|| {
                IsolationError::InvalidConfig(format!(
                    "expiry {d:?} is beyond what the clock can represent"
                ))
            })?),
            None => None,
        };
        self.insert(g, expires_at, None)
    }

    /// The seed's grant: `permissions` on `resource` for `context`, for one hour and 100
    /// uses (the seed's terms). It cannot fail: an empty permission set grants a capability
    /// that permits nothing ([`grant`](Self::grant) refuses one as a likely mistake).
    pub fn grant_capability(
        &self,
        context: ContextId,
        resource: impl Into<ResourceId>,
        permissions: impl Into<CapPermissions>,
    ) -> CapabilityId {
        let g = Grant::new(context, resource, permissions.into()).uses(100);
        // An hour from now is always representable.
        let expires_at = Instant::now().checked_add(Duration::from_secs(3600));
        self.insert_unchecked(g, expires_at, None)
    }

    /// The seed's check: [`check`](Self::check) with the seed's argument order (no use is
    /// taken). The errors come in this crate's order: an id never granted is
    /// `CapabilityNotFound`, where the seed says `CapabilityNotOwned`.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn check_capability(
        &self,
        context: ContextId,
        capability: CapabilityId,
        requested: impl Into<CapPermissions>,
    ) -> Result<()> {
        self.check(capability, context, requested.into())
    }

    fn insert(
        &self,
        g: Grant,
        expires_at: Option<Instant>,
        parent: Option<CapabilityId>,
    ) -> Result<CapabilityId> {
        if g.uses == Some(0) {
            return Err(IsolationError::InvalidConfig(
                "a capability with 0 uses could never be used".into(),
            ));
        }
        if g.permissions.is_empty() {
            return Err(IsolationError::InvalidConfig(
                "a capability needs at least one permission".into(),
            ));
        }
        Ok(self.insert_unchecked(g, expires_at, parent))
    }

    fn insert_unchecked(
        &self,
        g: Grant,
        expires_at: Option<Instant>,
        parent: Option<CapabilityId>,
    ) -> CapabilityId {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let cap = Cap {
            owner: g.owner,
            resource: g.resource,
            permissions: g.permissions,
            expires_at,
            remaining: AtomicU64::new(g.uses.unwrap_or(UNLIMITED)),
            parent,
        };
        self.write().insert(id, Arc::new(cap));
        id
    }

    /// The capability, checked in the documented order except for uses and permissions.
    fn live(&self, id: CapabilityId, context: ContextId) -> Result<Arc<Cap>> {
        let map = self.read();
        let cap = map
            .get(&id)
            .cloned()
            .ok_or(IsolationError::CapabilityNotFound(id))?;
        // A delegated capability lives only while every ancestor does.
        let mut up = cap.parent;
        while let Some(p) = up {
            match map.get(&p) {
                Some(parent) => up = parent.parent,
                None => return Err(IsolationError::CapabilityNotFound(id)),
            }
        }
        drop(map);
        if cap.owner != context {
            return Err(IsolationError::CapabilityNotOwned {
                capability: id,
                context,
            });
        }
        if cap.expires_at.is_some_and(|t| Instant::now() >= t) {
            return Err(IsolationError::CapabilityExpired(id));
        }
        Ok(cap)
    }

    fn permits(id: CapabilityId, cap: &Cap, needed: CapPermissions) -> Result<()> {
        let missing = needed - cap.permissions;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(IsolationError::InsufficientPermissions {
                capability: id,
                missing: names(missing),
            })
        }
    }

    /// Whether `context` may use capability `id` for `needed` now (no use is taken).
    ///
    /// # Errors
    /// In this order: `CapabilityNotFound`, `CapabilityNotOwned`, `CapabilityExpired`,
    /// `CapabilityExhausted`, `InsufficientPermissions`.
    pub fn check(
        &self,
        id: CapabilityId,
        context: ContextId,
        needed: CapPermissions,
    ) -> Result<()> {
        let cap = self.live(id, context)?;
        if cap.remaining.load(Ordering::Acquire) == 0 {
            return Err(IsolationError::CapabilityExhausted(id));
        }
        Self::permits(id, &cap, needed)
    }

    /// Like [`check`](Self::check), and takes one use (atomically; nothing is taken on
    /// error). Returns the uses left (`None` for unlimited).
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn consume(
        &self,
        id: CapabilityId,
        context: ContextId,
        needed: CapPermissions,
    ) -> Result<Option<u64>> {
        let cap = self.live(id, context)?;
        if cap.remaining.load(Ordering::Acquire) == 0 {
            return Err(IsolationError::CapabilityExhausted(id));
        }
        Self::permits(id, &cap, needed)?;
        match cap
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match n {
                0 => None,
                UNLIMITED => Some(UNLIMITED),
                n => Some(n - 1),
            }) {
            Ok(UNLIMITED) => Ok(None),
            Ok(n) => Ok(Some(n - 1)),
            Err(_) => Err(IsolationError::CapabilityExhausted(id)),
        }
    }

    /// Revokes a capability and everything delegated from it.
    ///
    /// # Errors
    /// `CapabilityNotFound` when it does not exist (or was revoked already).
    pub fn revoke(&self, id: CapabilityId) -> Result<()> {
        let mut map = self.write();
        if map.remove(&id).is_none() {
            return Err(IsolationError::CapabilityNotFound(id));
        }
        Self::remove_orphans(&mut map);
        Ok(())
    }

    /// Revokes every capability `context` holds (and what was delegated from them);
    /// returns how many capabilities were removed in all.
    pub fn revoke_all(&self, context: ContextId) -> usize {
        let mut map = self.write();
        let before = map.len();
        map.retain(|_, c| c.owner != context);
        Self::remove_orphans(&mut map);
        before - map.len()
    }

    fn remove_orphans(map: &mut HashMap<CapabilityId, Arc<Cap>>) {
        loop {
            let orphans: Vec<CapabilityId> = map
                .iter()
                .filter(|(_, c)| c.parent.is_some_and(|p| !map.contains_key(&p)))
                .map(|(id, _)| *id)
                .collect();
            if orphans.is_empty() {
                return;
            }
            for id in orphans {
                map.remove(&id);
            }
        }
    }

    /// `from` (the holder of `id`, which must carry `DELEGATE`) grants `to` a capability on
    /// the same resource with `permissions` (a subset of its own, without `DELEGATE` unless
    /// it has it), expiring no later than its own and with no more uses than it has left.
    /// `expires_in`/`uses` of `None` inherit the holder's.
    ///
    /// # Errors
    /// The [`check`](Self::check) errors for `from` with `DELEGATE`;
    /// `InsufficientPermissions` when `permissions` exceeds the holder's;
    /// `InvalidConfig` when the expiry or uses would outlast the holder's.
    pub fn delegate(
        &self,
        id: CapabilityId,
        from: ContextId,
        to: ContextId,
        permissions: CapPermissions,
        expires_in: Option<Duration>,
        uses: Option<u64>,
    ) -> Result<CapabilityId> {
        self.check(id, from, CapPermissions::DELEGATE)?;
        let cap = self.live(id, from)?;
        Self::permits(id, &cap, permissions)?;
        let now = Instant::now();
        let wanted = match expires_in {
            Some(d) => Some(now.checked_add(d).ok_or_else(|| {
                IsolationError::InvalidConfig(format!(
                    "expiry {d:?} is beyond what the clock can represent"
                ))
            })?),
            None => None,
        };
        let expires_at = match (cap.expires_at, wanted) {
            (None, w) => w,
            (Some(t), None) => Some(t),
            (Some(t), Some(w)) if w <= t => Some(w),
            (Some(t), Some(_)) => {
                return Err(IsolationError::InvalidConfig(format!(
                    "delegation of capability {id} for {:?} would outlive it (it expires in {:?})",
                    expires_in.unwrap_or_default(),
                    t.saturating_duration_since(now)
                )));
            }
        };
        let left = cap.remaining.load(Ordering::Acquire);
        let uses = match (left, uses) {
            (UNLIMITED, u) => u,
            (left, None) => Some(left),
            (left, Some(u)) if u <= left => Some(u),
            (left, Some(u)) => {
                return Err(IsolationError::InvalidConfig(format!(
                    "delegation of capability {id} with {u} uses exceeds the {left} it has left"
                )));
            }
        };
        let grant = Grant {
            owner: to,
            resource: cap.resource.clone(),
            permissions,
            expires_in,
            uses,
        };
        self.insert(grant, expires_at, Some(id))
    }

    /// A description of capability `id`.
    ///
    /// # Errors
    /// `CapabilityNotFound`.
    pub fn info(&self, id: CapabilityId) -> Result<CapabilityInfo> {
        let map = self.read();
        let c = map.get(&id).ok_or(IsolationError::CapabilityNotFound(id))?;
        let left = c.remaining.load(Ordering::Acquire);
        Ok(CapabilityInfo {
            id,
            owner: c.owner,
            resource: c.resource.clone(),
            permissions: c.permissions,
            expires_at: c.expires_at,
            remaining_uses: (left != UNLIMITED).then_some(left),
            delegated_from: c.parent,
        })
    }

    /// The capabilities `context` holds now.
    pub fn held_by(&self, context: ContextId) -> Vec<CapabilityId> {
        let mut v: Vec<CapabilityId> = self
            .read()
            .iter()
            .filter(|(_, c)| c.owner == context)
            .map(|(id, _)| *id)
            .collect();
        v.sort_unstable();
        v
    }
}
