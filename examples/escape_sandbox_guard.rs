//! A misbehaving workload: a plugin writes onto the guard page after its sandbox region.
//!
//! The violation core reports the fault (`fail-stop` on stderr, naming the region and the
//! context) and aborts the process. Exit status 0 means it was *not* stopped.

use nebula_memory::isolation::{MemoryIsolation, MemorySandbox, Permissions};

fn main() {
    let iso = MemoryIsolation::new();
    let owner = iso
        .create_context()
        .with_name("plugin")
        .build()
        .expect("context");
    let sandbox = MemorySandbox::new(owner.id());
    let region = sandbox
        .create_region(4096, Permissions::READ | Permissions::WRITE)
        .expect("region");
    let _ = region.write_unchecked(4096 + 8, &[0xEE]);
    eprintln!("the workload was not stopped");
}
