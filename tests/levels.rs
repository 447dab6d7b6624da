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
            assert!(nebula_memory::isolation::levels::levels()["process"].available);
            let o = p
                .run_command(&nebula_memory::isolation::process::Command::new(
                    "/bin/true",
                ))
                .unwrap();
            assert!(o.success(), "{o:?}");
        }
        Err(e) => assert!(
            !nebula_memory::isolation::levels::levels()["process"].available,
            "{e}"
        ),
        other => panic!("Medium: {other:?}"),
    }
    let wasm_built = cfg!(feature = "wasm");
    match MemoryIsolation::for_level(SecurityLevel::High) {
        Err(IsolationError::Unsupported { reason, .. }) if !wasm_built => {
            assert!(reason.contains("--features wasm"), "{reason}");
        }
        Ok(l) if wasm_built => assert!(format!("{l:?}").starts_with("Wasm"), "{l:?}"),
        other => panic!("High (wasm feature {wasm_built}): {other:?}"),
    }
    // Critical boots a VM to probe KVM on first use (cached per host boot); the hardware
    // tests run the level itself.
    let qemu = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("qemu-system-x86_64").is_file());
    if qemu && !common_vm_tier() {
        match MemoryIsolation::for_level(SecurityLevel::Critical) {
            Ok(LevelIsolation::Hardware(_)) => {}
            other => panic!("Critical: {other:?}"),
        }
    }
}

/// The VM tier's guest has no qemu of its own (no nested VMs under TCG).
fn common_vm_tier() -> bool {
    std::env::var("NEBULA_TEST_REQUIRE").is_ok_and(|v| v == "all")
}
