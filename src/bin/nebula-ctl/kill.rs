use std::process::ExitCode;

use nebula_memory::isolation::process::registry::{Registry, RegistryError};

/// Kill a running context, by id (or a unique id prefix) or name.
///
/// With a cgroup: `cgroup.kill` (after checking that the cgroup holds the context's pid);
/// without: SIGKILL to the context's pid 1, through a pidfd opened after checking that the
/// pid is still the registered process. Its `nebula-ctl run` then exits 137. Exit status 1
/// when no live context matches.
#[derive(clap::Args, Debug)]
pub struct Kill {
    /// The context's id, id prefix or name.
    context: String,
}

impl Kill {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let reg = Registry::open_default();
        let e = match reg.find(&self.context) {
            Ok(e) => e,
            Err(e @ (RegistryError::NotFound(_) | RegistryError::Ambiguous { .. })) => {
                eprintln!("nebula-ctl: {e}");
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => return Err(e.into()),
        };
        let how = reg.kill(&e)?;
        println!("killed {} ({}) with {how}", e.id, e.label());
        Ok(ExitCode::SUCCESS)
    }
}
