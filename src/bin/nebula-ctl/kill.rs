use std::process::ExitCode;

use nebula_memory::admin::registry::{Registries, RegistryError};

/// Kill a running context, by id (or a unique id prefix) or name.
///
/// With a cgroup: `cgroup.kill` (after checking that the cgroup holds the context's pid);
/// without: SIGKILL to the context's pid 1, through a pidfd opened after checking that the
/// pid is still the registered process. Its `nebula-ctl run` then exits 137. A user kills
/// their own contexts; root any user's (only as far as that user could: the context must
/// run as the user and its cgroup be theirs). Exit status 1 when no live context matches
/// or the context is another user's.
#[derive(clap::Args, Debug)]
pub struct Kill {
    /// The context's id, id prefix or name.
    context: String,
}

impl Kill {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let found = match Registries::visible().find(&self.context) {
            Ok(l) => l,
            Err(e @ (RegistryError::NotFound(_) | RegistryError::Ambiguous { .. })) => {
                eprintln!("nebula-ctl: {e}");
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => return Err(e.into()),
        };
        let (reg, e) = (found.registry, found.entry);
        let how = match reg.kill(&e) {
            Ok(how) => how,
            Err(err @ (RegistryError::NotPermitted { .. } | RegistryError::NotFound(_))) => {
                eprintln!("nebula-ctl: {err}");
                return Ok(ExitCode::FAILURE);
            }
            Err(err) => return Err(err.into()),
        };
        println!("killed {} ({}) with {how}", e.id, e.label());
        Ok(ExitCode::SUCCESS)
    }
}
