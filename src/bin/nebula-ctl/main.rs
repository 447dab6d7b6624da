//! `nebula-ctl`: the administrator's view of nebula-memory.
//!
//! Thin by design: clap parses, the library works. One file per subcommand.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod completions;
mod demo;
mod hints;
mod kill;
mod list;
mod oci;
mod probe;
mod run;
mod stats;
mod terminal;
mod top;

/// Probe, run and watch nebula-memory isolation contexts.
#[derive(Parser, Debug)]
#[command(name = "nebula-ctl", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Probe(probe::Probe),
    Demo(demo::Demo),
    Run(Box<run::Run>),
    List(list::List),
    Stats(stats::StatsCmd),
    Kill(kill::Kill),
    Top(top::Top),
    Oci(oci::Oci),
    Completions(completions::Completions),
    #[command(hide = true)]
    Man(completions::Man),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if rustix::process::geteuid().is_root() {
        // Id ranges that a supervisor killed outright left leased go back to the pool once
        // nothing runs with their ids (the context died with its supervisor).
        nebula_memory::isolation::process::IdPool::reclaim_system();
    }
    let result = match cli.command {
        Command::Probe(p) => p.run(),
        Command::Demo(d) => d.run(),
        Command::Run(r) => (*r).run(),
        Command::List(l) => l.run(),
        Command::Stats(s) => s.run(),
        Command::Kill(k) => k.run(),
        Command::Top(t) => t.run(),
        Command::Oci(o) => o.run(),
        Command::Completions(c) => c.run(Cli::command()),
        Command::Man(m) => m.run(Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nebula-ctl: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
