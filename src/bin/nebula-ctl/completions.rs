use std::process::ExitCode;

/// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
#[derive(clap::Args, Debug)]
pub struct Completions {
    /// The shell.
    shell: clap_complete::Shell,
}

impl Completions {
    pub fn run(self, mut cmd: clap::Command) -> anyhow::Result<ExitCode> {
        clap_complete::generate(self.shell, &mut cmd, "nebula-ctl", &mut std::io::stdout());
        Ok(ExitCode::SUCCESS)
    }
}

/// Print the man page (roff) generated from the command-line definitions.
#[derive(clap::Args, Debug)]
pub struct Man {}

impl Man {
    pub fn run(self, cmd: clap::Command) -> anyhow::Result<ExitCode> {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        Ok(ExitCode::SUCCESS)
    }
}
