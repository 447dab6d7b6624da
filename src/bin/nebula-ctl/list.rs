use std::process::ExitCode;

use nebula_memory::cgroup::{Limit, format_size};
use nebula_memory::isolation::process::registry::{Registry, age};

/// List the process contexts running now on this host (started by any `nebula-ctl run`).
///
/// Entries of contexts that ended (their pid is gone or was reused) are removed, never shown.
/// The registry is /run/nebula, or $NEBULA_RUN_DIR.
#[derive(clap::Args, Debug)]
pub struct List {
    /// Print a JSON array of the entries instead of a table.
    #[arg(long)]
    json: bool,
}

impl List {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let entries = Registry::open_default().entries()?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&entries)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:<12}  {:<16}  {:>7}  {:>6}  {:>8}  {:<6}  COMMAND",
            "ID", "NAME", "PID", "AGE", "MEMORY", "CGROUP"
        );
        for e in &entries {
            println!(
                "{:<12}  {:<16}  {:>7}  {:>5}s  {:>8}  {:<6}  {}",
                e.id,
                e.name.as_deref().unwrap_or("-"),
                e.pid,
                age(e.started).as_secs(),
                e.limits
                    .memory_max
                    .map_or_else(|| "-".to_owned(), |m| format_size(Limit::Value(m))),
                if e.cgroup.is_some() { "yes" } else { "no" },
                e.command.join(" ")
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
