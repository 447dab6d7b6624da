use std::process::ExitCode;

use clap::CommandFactory;

/// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
#[derive(clap::Args, Debug)]
pub struct Completions {
    /// The shell.
    shell: clap_complete::Shell,
}

impl Completions {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let mut cmd = crate::Cli::command();
        clap_complete::generate(self.shell, &mut cmd, "nebula-ctl", &mut std::io::stdout());
        Ok(ExitCode::SUCCESS)
    }
}

/// Print the man page (roff) generated from the command-line definitions.
#[derive(clap::Args, Debug)]
pub struct Man {}

impl Man {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        clap_mangen::Man::new(crate::Cli::command()).render(&mut std::io::stdout())?;
        Ok(ExitCode::SUCCESS)
    }
}
