//! A misbehaving workload: under the strict seccomp profile it opens a file.
//!
//! The filter kills the process with `SIGSYS` at `openat(2)`. Exit status 0 means it was
//! *not* stopped.

fn main() {
    let filter = nebula_memory::seccomp::Profile::Strict
        .compile()
        .expect("compile");
    filter.install_current_thread().expect("install");
    let _ = std::fs::File::open("/etc/hostname");
    eprintln!("the workload was not stopped");
}
