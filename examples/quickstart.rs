//! The README's example, compiled and linted with the rest (`cargo run --example quickstart`).

use nebula_memory::isolation::process::{Command, ProcessConfig, ProcessIsolation};
use nebula_memory::isolation::{MemoryIsolation, SecurityLevel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In-process: a tenant's budget bounds its plugin's allocations.
    let iso = MemoryIsolation::new();
    let tenant = iso.create_context().with_memory_limit(1 << 20).build()?;
    let plugin = iso
        .create_context()
        .with_parent(&tenant)
        .with_max_allocations(1000)
        .build()?;
    plugin.alloc_slice(4096)?.fill(0);

    // A process context: namespaces, read-only root, seccomp, and a memory limit where
    // cgroup v2 exists (an error naming the reason where it does not).
    let p =
        ProcessIsolation::new(ProcessConfig::new().wall_time(std::time::Duration::from_secs(5)))?;
    let outcome = p.run_command(&Command::new("/bin/echo").arg("hello"))?;
    assert!(outcome.success());

    // Or by trust level: Low = pkey thread, Medium = process, High = wasm, Critical = VM.
    let _level = MemoryIsolation::for_level(SecurityLevel::Medium)?;
    Ok(())
}
