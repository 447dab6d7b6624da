//! `nebula-ctl run --level critical` and `run --wasm`: the levels beyond processes.

mod common;

use std::process::Command;

fn ctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nebula-ctl"))
        .args(args)
        .output()
        .expect("run nebula-ctl")
}

fn has_qemu() -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("qemu-system-x86_64").is_file())
}

#[test]
fn critical_runs_the_command_in_a_vm_and_passes_its_exit_code_back() {
    if common::require_all() {
        // The VM tier's guest has no qemu of its own; this runs on the host tier.
        return;
    }
    if !common::require(
        has_qemu(),
        "needs qemu-system-x86_64 (tools/vm/deps.sh installs it)",
    ) {
        return;
    }
    let out = ctl(&[
        "run",
        "--level",
        "critical",
        "--memory",
        "128M",
        "--",
        "sh",
        "-c",
        "echo hi; uname -r; exit 3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("hi"));
    let guest_kernel = lines.next().unwrap_or_default().to_string();
    let host_kernel = nebula_memory::features().kernel_release.clone();
    assert_ne!(
        guest_kernel, host_kernel,
        "the command ran under the guest's own kernel"
    );
}

#[test]
fn critical_refuses_options_it_cannot_enforce() {
    let out = ctl(&["run", "--level", "critical", "--pids", "4", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--pids does not apply to --level critical"),
        "{err}"
    );
}

const MODULE: &str = r#"(module
  (memory (export "memory") 1)
  (global $top (mut i32) (i32.const 1024))
  (data (i32.const 16) "hello from wasm\n")
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $top))
    (global.set $top (i32.add (global.get $top) (local.get $n)))
    (local.get $p))
  ;; exit status: the number of NUL-terminated arguments
  (func (export "run") (param $ptr i32) (param $len i32) (result i32)
    (local $i i32) (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.eqz (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
          (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $n))
  (func (export "output") (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 16))))"#;

const SPIN: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

fn write_module(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("nebula-cli-{name}-{}.wat", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn wasm_modules_run_by_the_documented_convention() {
    let module = write_module("args", MODULE);
    let spin = write_module("spin", SPIN);
    let m = module.to_str().unwrap();
    let out = ctl(&["run", "--wasm", m, "--", "one", "two", "three"]);
    let spun = ctl(&["run", "--wasm", spin.to_str().unwrap(), "--fuel", "100000"]);
    let timed = ctl(&["run", "--wasm", spin.to_str().unwrap(), "--time", "200ms"]);
    let _ = std::fs::remove_file(&module);
    let _ = std::fs::remove_file(&spin);
    if cfg!(feature = "wasm") {
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from wasm\n");
        assert_eq!(
            spun.status.code(),
            Some(124),
            "fuel: {}",
            String::from_utf8_lossy(&spun.stderr)
        );
        assert!(String::from_utf8_lossy(&spun.stderr).contains("killed:"));
        assert_eq!(
            timed.status.code(),
            Some(124),
            "deadline: {}",
            String::from_utf8_lossy(&timed.stderr)
        );
    } else {
        for o in [&out, &spun, &timed] {
            assert_eq!(o.status.code(), Some(125));
            assert!(String::from_utf8_lossy(&o.stderr).contains("--features wasm"));
        }
    }
}
