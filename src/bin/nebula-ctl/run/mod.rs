use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use nebula_memory::admin::profile::RunProfile;
use nebula_memory::admin::registry::{EntryLimits, Registry};
use nebula_memory::isolation::process::{Command, ProcessError, ProcessIsolation};

use nebula_memory::admin::report::{record, summary};

use exit::{REFUSED, USAGE, refuse};

mod exit;
mod other;

/// Run a command in a process context (namespaces, cgroup v2 limits, seccomp, read-only root).
///
/// Every option is also a key of a TOML profile (--profile) with the same name (`memory =
/// "64M"`, `ro-root = false`, `env = ["K=V"]`); flags override the profile. Stdin, stdout and
/// stderr pass through. When the context did not end normally, one line on stderr says why
/// (`killed: out of memory (...)`, `killed: time limit 30s`, ...).
///
/// Exit status: the command's own exit code; 128+N when signal N ended it (137: SIGKILL, e.g.
/// an OOM kill, a time limit or `nebula-ctl kill`); 2: a usage error (a bad flag, a profile
/// with an unknown key or a bad value); 125: nebula-ctl refused or failed to create the
/// context, e.g. a limit this host cannot enforce (--memory without cgroup v2: the message
/// names the reason); 126: the command could not be executed; 127: the command was not found.
#[derive(clap::Args, Debug)]
pub struct Run {
    /// The options that a profile may also hold.
    #[command(flatten)]
    options: RunProfile,
    /// Landlock under the read-only root: writes only to the context's tmpfs mounts
    /// (--tmpfs, /tmp), its writable binds and /dev/null, zero, full, tty, random, urandom,
    /// even where a mount is writable; mount changes are refused. Refused where the kernel
    /// has no Landlock (nebula-ctl probe says why).
    #[arg(long, overrides_with = "no_landlock")]
    landlock: bool,
    /// No Landlock (the default; overrides `landlock = true` of a profile).
    #[arg(long, overrides_with = "landlock")]
    no_landlock: bool,
    /// Read-only root (the default); --rw-root turns it off.
    #[arg(long, overrides_with = "rw_root")]
    ro_root: bool,
    /// Writable root (the TOML twin is `ro-root = false`).
    #[arg(long, overrides_with = "ro_root")]
    rw_root: bool,
    /// A TOML profile with any of the options above (flags override it).
    #[arg(long, value_name = "FILE.toml")]
    profile: Option<PathBuf>,
    /// Print a JSON outcome record on stderr when the context ends.
    #[arg(long)]
    json: bool,
    /// Write the JSON outcome record to FILE instead (implies --json).
    #[arg(long, value_name = "FILE")]
    json_file: Option<PathBuf>,
    /// The isolation level: `process` (default), or `critical` (the command in its own
    /// virtual machine; takes --memory and --time only).
    #[arg(long, value_enum, default_value_t = Level::Process)]
    level: Level,
    /// Run a wasm module instead of a command (built with the `wasm` feature); the
    /// arguments after `--` go to its `run` export. Takes --memory, --time and --fuel.
    #[arg(long, value_name = "MODULE.wasm", conflicts_with = "level")]
    wasm: Option<PathBuf>,
    /// With --wasm: the instruction budget (wasmtime fuel units).
    #[arg(long, value_name = "N", requires = "wasm")]
    fuel: Option<u64>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required_unless_present = "wasm", value_name = "CMD")]
    command: Vec<OsString>,
}

/// Which level `run` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    /// A process context.
    Process,
    /// A virtual machine.
    Critical,
}

fn error_code(e: &ProcessError) -> u8 {
    match e {
        ProcessError::InvalidConfig(_) => USAGE,
        ProcessError::ProgramNotFound { .. } => 127,
        ProcessError::Setup {
            step: "execve",
            source,
            ..
        } => match source.raw_os_error() {
            Some(libc::ENOENT) => 127,
            _ => 126,
        },
        _ => REFUSED,
    }
}

impl Run {
    /// The flags as a profile, the on/off pairs folded into their keys.
    fn flags(&self) -> RunProfile {
        let on_off = |on: bool, off: bool| match (on, off) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        RunProfile {
            landlock: on_off(self.landlock, self.no_landlock),
            ro_root: on_off(self.ro_root, self.rw_root),
            ..self.options.clone()
        }
    }

    pub fn run(self) -> anyhow::Result<ExitCode> {
        let base = match &self.profile {
            Some(f) => match RunProfile::load(f) {
                Ok(p) => p,
                Err(e) => return Ok(refuse(USAGE, &e)),
            },
            None => RunProfile::default(),
        };
        let p = base.overlay(self.flags());
        if let Some(module) = &self.wasm {
            return Ok(other::wasm(&p, module, self.fuel, &self.command));
        }
        if self.level == Level::Critical {
            return Ok(other::critical(&p, &self.command));
        }
        if p.uid.is_some_and(|(u, _)| u == 0) {
            eprintln!(
                "nebula-ctl: warning: --uid 0 maps root inside to root of the host: the workload \
                 can change host settings that the read-only root does not protect"
            );
        }
        let iso = match ProcessIsolation::new(p.to_config()) {
            Ok(i) => i,
            Err(e) => {
                let code = refuse(error_code(&e), &e);
                if let Some(h) = crate::hints::process(&e) {
                    eprintln!("  {h}");
                }
                return Ok(code);
            }
        };
        let cmd = Command::new(&self.command[0]).args(&self.command[1..]);
        let running = match iso.spawn_command(&cmd) {
            Ok(r) => r,
            Err(e) => return Ok(refuse(error_code(&e), &e)),
        };
        let limits = EntryLimits {
            memory_max: p.memory,
            memory_high: p.memory_high,
            swap_max: p.swap,
            cpus: p.cpu.and_then(|c| c.fraction()),
            pids_max: p.pids,
            time_secs: p.time.map(|d| d.as_secs_f64()),
            cpu_time_secs: p.cpu_time.map(|d| d.as_secs_f64()),
        };
        let command = self
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let registration = match Registry::open_default().register(
            p.name.clone(),
            running.pid(),
            running.cgroup().map(|l| l.path().to_owned()),
            Some(running.host_ids()),
            limits,
            command,
        ) {
            Ok(r) => r,
            Err(e) => {
                drop(running); // kills and reaps the context
                return Ok(refuse(REFUSED, &e));
            }
        };
        let id = registration.entry().id.clone();
        let result = running.wait();
        let by_admin = registration.killed_by_registry();
        drop(registration);
        let outcome = match result {
            Ok(o) => o,
            Err(e) => return Ok(refuse(error_code(&e), &e)),
        };
        let line = if by_admin && outcome.status.signal() == Some(libc::SIGKILL) {
            Some("killed: by nebula-ctl kill".to_owned())
        } else {
            summary(&outcome, &p)
        };
        if let Some(line) = line {
            eprintln!("{line}");
        }
        if self.json || self.json_file.is_some() {
            let rec = record(&outcome, &id, p.name.as_deref());
            let text = serde_json::to_string(&rec)?;
            match &self.json_file {
                Some(f) => {
                    if let Err(e) = std::fs::write(f, format!("{text}\n")) {
                        eprintln!("nebula-ctl: cannot write {}: {e}", f.display());
                        return Ok(ExitCode::from(REFUSED));
                    }
                }
                None => eprintln!("{text}"),
            }
        }
        Ok(ExitCode::from(
            u8::try_from(outcome.status.shell_code().clamp(0, 255)).unwrap_or(u8::MAX),
        ))
    }
}
