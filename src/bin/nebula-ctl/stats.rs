use std::process::ExitCode;

use nebula_memory::admin::registry::{Registries, RegistryError, Stats};

use nebula_memory::admin::report::human;

/// Live statistics of a running context, by id (or a unique id prefix) or name.
///
/// Memory current and peak against the limit, CPU time, processes, OOM and limit events:
/// from the context's cgroup when it has one, else summed over its processes in /proc.
/// A user sees their own contexts, root every user's (see `nebula-ctl list`). Exit status 1
/// when no live context matches.
#[derive(clap::Args, Debug)]
pub struct StatsCmd {
    /// The context's id, id prefix or name.
    context: String,
    /// Print one JSON object instead.
    #[arg(long)]
    json: bool,
}

/// `12.0M / 64.0M (18%)`.
pub fn memory_line(s: &Stats) -> String {
    match s.memory_max {
        Some(m) if m > 0 => format!(
            "{} / {} ({:.0}%)",
            human(s.memory_current),
            human(m),
            s.memory_current as f64 * 100.0 / m as f64
        ),
        _ => format!("{} (no limit)", human(s.memory_current)),
    }
}

impl StatsCmd {
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
        let s = reg.stats(&e)?;
        if self.json {
            let v = serde_json::json!({ "entry": e, "stats": s });
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!("context   {} ({})", e.id, e.label());
        println!("owner     {}", crate::list::user_name(e.owner));
        println!("pid       {} (source: {})", e.pid, s.source);
        println!("memory    {}", memory_line(&s));
        if let Some(p) = s.memory_peak {
            println!("peak      {}", human(p));
        }
        println!("cpu       {:.3}s", s.cpu_usec as f64 / 1e6);
        match s.pids_max {
            Some(m) => println!("pids      {} / {m}", s.pids_current),
            None => println!("pids      {}", s.pids_current),
        }
        if let Some(ev) = s.memory_events {
            println!(
                "events    oom_kill {}, oom {}, max {}, high {}",
                ev.oom_kill, ev.oom, ev.max, ev.high
            );
        }
        if let Some(h) = s.pids_limit_hits {
            println!("pids.max  {h} fork(s) refused");
        }
        Ok(ExitCode::SUCCESS)
    }
}
