//! The capability system: every error in its order, delegation bounds, revocation, and
//! exact counts under concurrent consumption.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use nebula_memory::IsolationError;
use nebula_memory::isolation::{CapPermissions as P, CapabilitySystem, ContextId, Grant};

#[test]
fn errors_come_in_the_documented_order() {
    let caps = CapabilitySystem::new();
    let (a, b) = (ContextId::fresh(), ContextId::fresh());
    assert!(matches!(
        caps.check(999, a, P::READ),
        Err(IsolationError::CapabilityNotFound(999))
    ));
    // Expired, exhausted, insufficient and not owned all at once: not-owned wins.
    let id = caps
        .grant(
            Grant::new(a, "file:/data", P::READ)
                .uses(1)
                .expires_in(Duration::from_millis(1)),
        )
        .unwrap();
    caps.consume(id, a, P::READ).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(
        matches!(caps.check(id, b, P::WRITE), Err(IsolationError::CapabilityNotOwned { capability, context }) if capability == id && context == b)
    );
    assert!(
        matches!(caps.check(id, a, P::WRITE), Err(IsolationError::CapabilityExpired(x)) if x == id)
    );
    let id2 = caps
        .grant(Grant::new(a, "file:/data", P::READ).uses(1))
        .unwrap();
    caps.consume(id2, a, P::READ).unwrap();
    assert!(
        matches!(caps.check(id2, a, P::WRITE), Err(IsolationError::CapabilityExhausted(x)) if x == id2)
    );
    let id3 = caps.grant(Grant::new(a, "file:/data", P::READ)).unwrap();
    match caps.check(id3, a, P::READ | P::WRITE | P::EXECUTE) {
        Err(IsolationError::InsufficientPermissions {
            capability,
            missing,
        }) => {
            assert_eq!(capability, id3);
            assert_eq!(missing, "WRITE|EXECUTE");
        }
        other => panic!("{other:?}"),
    }
    caps.check(id3, a, P::READ).unwrap();
}

#[test]
fn consume_counts_down_and_nothing_is_taken_on_error() {
    let caps = CapabilitySystem::new();
    let a = ContextId::fresh();
    let id = caps
        .grant(Grant::new(a, "api", P::EXECUTE).uses(3))
        .unwrap();
    assert!(caps.consume(id, a, P::WRITE).is_err());
    assert_eq!(caps.info(id).unwrap().remaining_uses, Some(3));
    assert_eq!(caps.consume(id, a, P::EXECUTE).unwrap(), Some(2));
    assert_eq!(caps.consume(id, a, P::EXECUTE).unwrap(), Some(1));
    assert_eq!(caps.consume(id, a, P::EXECUTE).unwrap(), Some(0));
    assert!(matches!(
        caps.consume(id, a, P::EXECUTE),
        Err(IsolationError::CapabilityExhausted(_))
    ));
    let unlimited = caps.grant(Grant::new(a, "api", P::EXECUTE)).unwrap();
    assert_eq!(caps.consume(unlimited, a, P::EXECUTE).unwrap(), None);
}

#[test]
fn concurrent_consumption_is_exact() {
    let caps = Arc::new(CapabilitySystem::new());
    let a = ContextId::fresh();
    let id = caps
        .grant(Grant::new(a, "quota", P::EXECUTE).uses(10_000))
        .unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (caps, barrier) = (Arc::clone(&caps), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let mut ok = 0u64;
                loop {
                    match caps.consume(id, a, P::EXECUTE) {
                        Ok(_) => ok += 1,
                        Err(IsolationError::CapabilityExhausted(_)) => return ok,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 10_000);
    assert_eq!(caps.info(id).unwrap().remaining_uses, Some(0));
}

#[test]
fn revoke_and_revoke_all() {
    let caps = CapabilitySystem::new();
    let (a, b) = (ContextId::fresh(), ContextId::fresh());
    let x = caps.grant(Grant::new(a, "r1", P::READ)).unwrap();
    let y = caps.grant(Grant::new(a, "r2", P::READ)).unwrap();
    let z = caps.grant(Grant::new(b, "r3", P::READ)).unwrap();
    caps.revoke(x).unwrap();
    assert!(matches!(
        caps.check(x, a, P::READ),
        Err(IsolationError::CapabilityNotFound(_))
    ));
    assert!(matches!(
        caps.revoke(x),
        Err(IsolationError::CapabilityNotFound(_))
    ));
    assert_eq!(caps.revoke_all(a), 1);
    assert!(caps.check(y, a, P::READ).is_err());
    caps.check(z, b, P::READ).unwrap();
    assert_eq!(caps.held_by(b), vec![z]);
}

#[test]
fn delegation_never_grants_more_or_longer_and_dies_with_its_source() {
    let caps = CapabilitySystem::new();
    let (a, b, c) = (ContextId::fresh(), ContextId::fresh(), ContextId::fresh());
    let no_delegate = caps.grant(Grant::new(a, "db", P::READ)).unwrap();
    assert!(matches!(
        caps.delegate(no_delegate, a, b, P::READ, None, None),
        Err(IsolationError::InsufficientPermissions { .. })
    ));
    let src = caps
        .grant(
            Grant::new(a, "db", P::READ | P::WRITE | P::DELEGATE)
                .uses(5)
                .expires_in(Duration::from_secs(60)),
        )
        .unwrap();
    // Someone else cannot delegate a's capability.
    assert!(matches!(
        caps.delegate(src, b, c, P::READ, None, None),
        Err(IsolationError::CapabilityNotOwned { .. })
    ));
    // More permissions, longer life, more uses: refused.
    assert!(matches!(
        caps.delegate(src, a, b, P::EXECUTE, None, None),
        Err(IsolationError::InsufficientPermissions { .. })
    ));
    assert!(matches!(
        caps.delegate(src, a, b, P::READ, Some(Duration::from_secs(3600)), None),
        Err(IsolationError::InvalidConfig(_))
    ));
    assert!(matches!(
        caps.delegate(src, a, b, P::READ, None, Some(6)),
        Err(IsolationError::InvalidConfig(_))
    ));
    let d = caps
        .delegate(src, a, b, P::READ | P::DELEGATE, None, Some(2))
        .unwrap();
    let info = caps.info(d).unwrap();
    assert_eq!(
        (
            info.owner,
            info.permissions,
            info.remaining_uses,
            info.delegated_from
        ),
        (b, P::READ | P::DELEGATE, Some(2), Some(src))
    );
    assert!(info.expires_at.unwrap() <= caps.info(src).unwrap().expires_at.unwrap());
    caps.check(d, b, P::READ).unwrap();
    assert!(caps.check(d, b, P::WRITE).is_err());
    let dd = caps.delegate(d, b, c, P::READ, None, None).unwrap();
    assert_eq!(caps.info(dd).unwrap().remaining_uses, Some(2));
    caps.check(dd, c, P::READ).unwrap();
    // Revoking the source revokes the whole chain.
    caps.revoke(src).unwrap();
    assert!(matches!(
        caps.check(d, b, P::READ),
        Err(IsolationError::CapabilityNotFound(_))
    ));
    assert!(matches!(
        caps.check(dd, c, P::READ),
        Err(IsolationError::CapabilityNotFound(_))
    ));
}

#[test]
fn bad_grants_are_refused() {
    let caps = CapabilitySystem::new();
    let a = ContextId::fresh();
    assert!(matches!(
        caps.grant(Grant::new(a, "x", P::READ).uses(0)),
        Err(IsolationError::InvalidConfig(_))
    ));
    assert!(matches!(
        caps.grant(Grant::new(a, "x", P::empty())),
        Err(IsolationError::InvalidConfig(_))
    ));
}
