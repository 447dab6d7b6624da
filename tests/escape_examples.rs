//! The misbehaving workloads in examples/escape_*.rs, each run as its own process and
//! checked for the kernel's answer: the signal that stopped it, and the violation report
//! where the violation core makes one. `make test` builds the examples first (`cargo build
//! --examples`); the VM tier copies them into the guest.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output};

mod common;

/// The example binary `name` in the target directory's `debug/examples` (found from the
/// build's own tmp directory: in the VM tier this test runs from elsewhere, and the examples
/// are copied to their host path).
fn example(name: &str) -> Option<PathBuf> {
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).parent()?;
    let path = target.join("debug").join("examples").join(name);
    if path.is_file() {
        Some(path)
    } else {
        common::skip(&format!(
            "{} is not built (cargo build --examples; make test builds it)",
            path.display()
        ));
        None
    }
}

fn run(name: &str) -> Option<Output> {
    let path = example(name)?;
    Some(Command::new(path).output().expect("the example runs"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_write_past_the_region_dies_on_the_guard_page() {
    let Some(o) = run("escape_region_overrun") else {
        return;
    };
    assert_eq!(o.status.signal(), Some(libc::SIGSEGV), "{}", stderr(&o));
    assert!(!stderr(&o).contains("not stopped"), "{}", stderr(&o));
}

#[test]
fn a_write_onto_a_sandbox_guard_page_is_reported_then_aborts() {
    let Some(o) = run("escape_sandbox_guard") else {
        return;
    };
    let err = stderr(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{err}");
    assert!(err.contains("fail-stop"), "no violation report: {err}");
    assert!(err.contains("guard page hit"), "{err}");
}

#[test]
fn a_read_of_another_domain_is_a_protection_key_fault() {
    if !common::require(
        nebula_memory::features().pkeys.available,
        "needs protection keys (PKU); runs in the VM tier",
    ) {
        return;
    }
    let Some(o) = run("escape_pkey_read") else {
        return;
    };
    let err = stderr(&o);
    assert_eq!(o.status.signal(), Some(libc::SIGABRT), "{err}");
    assert!(err.contains("protection-key fault"), "{err}");
}

#[test]
fn opening_a_file_under_the_strict_profile_is_killed_with_sigsys() {
    if !common::require(
        nebula_memory::features().seccomp.available,
        "needs seccomp filters",
    ) {
        return;
    }
    let Some(o) = run("escape_seccomp_strict") else {
        return;
    };
    assert_eq!(o.status.signal(), Some(libc::SIGSYS), "{}", stderr(&o));
}
