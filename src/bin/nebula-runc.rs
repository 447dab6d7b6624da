//! `nebula-runc`: nebula's OCI runtime with runc's command line, for containerd's
//! `BinaryName` (see `nebula_memory::oci`).

fn main() {
    std::process::exit(nebula_memory::oci::cli::main(std::env::args_os()));
}
