use std::process::ExitCode;

/// What this host offers, and what each isolation level needs.
///
/// The same answer the library uses to refuse a level, so "why was this refused" has one
/// answer.
#[derive(clap::Args, Debug)]
pub struct Probe {
    /// Print one JSON object instead of the human report.
    #[arg(long)]
    json: bool,
}

impl Probe {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let f = nebula_memory::features();
        if self.json {
            println!("{}", serde_json::to_string_pretty(f)?);
        } else {
            print!("{}", f.report());
        }
        Ok(ExitCode::SUCCESS)
    }
}
