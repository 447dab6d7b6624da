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
    /// Also probe the hardware level: boots a test guest (under KVM if it really works,
    /// else TCG) to measure the start-up cost; cached until the host reboots.
    #[arg(long)]
    hardware: bool,
}

impl Probe {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if self.hardware {
            use nebula_memory::isolation::hardware;
            let p = hardware::probe(&hardware::default_cache_dir())?;
            eprintln!(
                "hardware: accel {:?} (kvm: {}); start-up {:.1} s per context",
                p.accel,
                p.kvm_reason,
                p.startup.as_secs_f64()
            );
        }
        let f = nebula_memory::features();
        if self.json {
            println!("{}", serde_json::to_string_pretty(f)?);
        } else {
            print!("{}", f.report());
        }
        Ok(ExitCode::SUCCESS)
    }
}
