//! A misbehaving workload: writes one byte past the end of its region context's memory.
//!
//! The byte lands on the `PROT_NONE` guard page after the region, so the kernel stops the
//! write with `SIGSEGV` before any memory changes. Exit status 0 means it was *not* stopped.
//! `nebula-ctl demo` and `tests/escape_examples.rs` run it and check the signal.

use nebula_memory::isolation::MemoryIsolation;

#[allow(unsafe_code)]
fn main() {
    let iso = MemoryIsolation::new();
    let ctx = iso
        .create_context()
        .with_memory_limit(64 * 1024)
        .build()
        .expect("context");
    let buf = ctx.alloc_slice(64 * 1024).expect("allocation");
    let past_end = buf.as_mut_ptr().wrapping_add(buf.len());
    // SAFETY: none: this is the deliberately misbehaving workload. The write targets the
    // PROT_NONE guard page after the region, so the kernel stops it with SIGSEGV before any
    // memory changes; whoever runs this checks that it did.
    unsafe { past_end.write_volatile(0xEE) };
    eprintln!("the overrun was not stopped");
}
