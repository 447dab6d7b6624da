//! `nebula-ctl oci`: the OCI runtime, with runc's arguments after `oci` (the same command
//! line as `nebula-runc`, which containerd's `BinaryName` points at).

use std::ffi::OsString;
use std::process::ExitCode;

/// The OCI runtime (runc's command line: create, start, state, kill, delete, run, exec, ps,
/// pause, resume, list, features); `nebula-ctl oci --help` lists them.
#[derive(clap::Args, Debug)]
pub(crate) struct Oci {
    /// runc's global options, subcommand and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

impl Oci {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let argv = std::iter::once(OsString::from("nebula-ctl oci")).chain(self.args);
        let code = nebula_memory::oci::cli::main(argv);
        Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
    }
}
