use std::process::ExitCode;

use nebula_memory::admin::registry::{Registries, age};
use nebula_memory::cgroup::{Limit, format_size};

/// List the process contexts running now (started by any `nebula-ctl run`).
///
/// A user sees their own contexts: the registry is $NEBULA_RUN_DIR, else
/// $XDG_RUNTIME_DIR/nebula, else /tmp/nebula-UID. Root sees every user's: /run/nebula and
/// each /run/user/UID/nebula and /tmp/nebula-UID owned by that UID (unless $NEBULA_RUN_DIR
/// is set: then only that). Entries of contexts that ended (their pid is gone or was
/// reused) are removed, never shown.
#[derive(clap::Args, Debug)]
pub struct List {
    /// Print a JSON array of the entries instead of a table (each with its `owner` uid and
    /// its `registry` directory).
    #[arg(long)]
    json: bool,
}

/// The name of `uid` in /etc/passwd, else the number.
pub fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

impl List {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let listing = Registries::visible().entries()?;
        for s in &listing.skipped {
            eprintln!(
                "nebula-ctl: warning: not reading {}: {}",
                s.dir.display(),
                s.reason
            );
        }
        if self.json {
            let mut all = Vec::new();
            for l in &listing.contexts {
                let mut v = serde_json::to_value(&l.entry)?;
                v["registry"] = serde_json::json!(l.registry.dir());
                all.push(v);
            }
            println!("{}", serde_json::to_string_pretty(&all)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:<12}  {:<16}  {:<10}  {:>7}  {:>6}  {:>8}  {:<6}  COMMAND",
            "ID", "NAME", "OWNER", "PID", "AGE", "MEMORY", "CGROUP"
        );
        for l in &listing.contexts {
            let e = &l.entry;
            println!(
                "{:<12}  {:<16}  {:<10}  {:>7}  {:>5}s  {:>8}  {:<6}  {}",
                e.id,
                e.name.as_deref().unwrap_or("-"),
                user_name(e.owner),
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
