//! `MemoryIsolation::for_level`: each security level maps to its mechanism, or to an
//! `Unsupported` error with the probe's reason.

use nebula_memory::IsolationError;
use nebula_memory::isolation::{LevelIsolation, MemoryIsolation, SecurityLevel};

#[test]
fn each_level_maps_to_its_mechanism_or_says_why_not() {
    let f = nebula_memory::features();
    match MemoryIsolation::for_level(SecurityLevel::Low) {
        Ok(LevelIsolation::Thread { domains, .. }) => {
            assert!(f.pkeys.available);
            let d = domains.create_domain(None);
            let r = d.alloc_region(4096).unwrap();
            let _in = d.enter().unwrap();
            r.write(0, b"ok").unwrap();
        }
        Err(IsolationError::Unsupported { reason, .. }) => {
            assert!(!f.pkeys.available);
            assert_eq!(Some(reason.as_str()), f.pkeys.reason.as_deref());
        }
        other => panic!("Low: {other:?}"),
    }
    match MemoryIsolation::for_level(SecurityLevel::Medium) {
        Ok(LevelIsolation::Process(p)) => {
            assert!(f.levels["process"].available);
            let o = p
                .run_command(&nebula_memory::isolation::process::Command::new(
                    "/bin/true",
                ))
                .unwrap();
            assert!(o.success(), "{o:?}");
        }
        Err(e) => assert!(!f.levels["process"].available, "{e}"),
        other => panic!("Medium: {other:?}"),
    }
    match MemoryIsolation::for_level(SecurityLevel::High) {
        Err(IsolationError::Unsupported { reason, .. }) => {
            assert!(!cfg!(feature = "wasm"), "{reason}");
            assert!(reason.contains("--features wasm"), "{reason}");
        }
        Ok(_) => assert!(cfg!(feature = "wasm")),
        Err(e) => panic!("High: {e}"),
    }
    assert!(matches!(
        MemoryIsolation::for_level(SecurityLevel::Critical),
        Err(IsolationError::Unsupported { .. })
    ));
}
