use std::process::ExitCode;

use nebula_memory::isolation::levels;

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
        let levels = levels::levels();
        if self.json {
            /// The host's features with each level's status beside them.
            #[derive(serde::Serialize)]
            struct Out<'a> {
                #[serde(flatten)]
                features: &'a nebula_memory::Features,
                levels: &'a levels::Levels,
            }
            let out = Out {
                features: f,
                levels,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print!("{}{}", f.report(), levels::report(levels));
        }
        Ok(ExitCode::SUCCESS)
    }
}
