//! `run --level critical` (a microVM) and `run --wasm MODULE` (a wasm instance): the levels
//! whose options are a subset of a process context's.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use nebula_memory::admin::profile::RunProfile;

use super::exit::{REFUSED, USAGE};

/// The options of `p` that are set but do not apply to a level that takes only `allowed`
/// (`landlock = false` is the default, not an option to apply).
fn foreign_options(p: &RunProfile, allowed: &[&str]) -> Vec<&'static str> {
    p.keys()
        .into_iter()
        .filter(|&(key, on)| on && !allowed.contains(&key))
        .filter(|&(key, _)| !(key == "landlock" && p.landlock == Some(false)))
        .map(|(key, _)| key)
        .collect()
}

fn usage(level: &str, foreign: &[&str], supported: &str) -> ExitCode {
    eprintln!(
        "nebula-ctl: --{} does not apply to {level}; it takes {supported}",
        foreign.join(", --")
    );
    ExitCode::from(USAGE)
}

/// `run --level critical`: the command in its own virtual machine.
pub fn critical(p: &RunProfile, command: &[OsString]) -> ExitCode {
    use nebula_memory::isolation::hardware;
    let foreign = foreign_options(p, &["memory", "time"]);
    if !foreign.is_empty() {
        return usage("--level critical", &foreign, "--memory and --time");
    }
    match hardware::run_cli(command, p.memory, p.time) {
        Ok(o) => {
            if let Some(e) = o.error(p.time) {
                eprintln!("nebula-ctl: {e}");
            }
            ExitCode::from(u8::try_from(o.exit_code().clamp(0, 255)).unwrap_or(u8::MAX))
        }
        Err(e) => {
            eprintln!("nebula-ctl: refused: {e}");
            ExitCode::from(REFUSED)
        }
    }
}

/// `run --wasm MODULE`: the module in a wasm instance, by the convention of
/// `nebula_memory::isolation::wasm::run_module`.
pub fn wasm(p: &RunProfile, module: &Path, fuel: Option<u64>, args: &[OsString]) -> ExitCode {
    let foreign = foreign_options(p, &["memory", "time"]);
    if !foreign.is_empty() {
        return usage("--wasm", &foreign, "--memory, --time and --fuel");
    }
    run_wasm(p.memory, p.time, fuel, module, args)
}

#[cfg(feature = "wasm")]
fn run_wasm(
    memory: Option<u64>,
    time: Option<Duration>,
    fuel: Option<u64>,
    module: &Path,
    args: &[OsString],
) -> ExitCode {
    use nebula_memory::IsolationError;
    use nebula_memory::isolation::wasm::{WasmConfig, WasmError, run_module};
    use std::io::Write;
    let bytes = match std::fs::read(module) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("nebula-ctl: cannot read {}: {e}", module.display());
            return ExitCode::from(USAGE);
        }
    };
    let mut config = WasmConfig {
        fuel,
        ..WasmConfig::default()
    };
    if let Some(m) = memory {
        match usize::try_from(m) {
            Ok(m) => config.memory_limit = m,
            Err(_) => {
                eprintln!("nebula-ctl: --memory {m} is larger than this machine's address space");
                return ExitCode::from(USAGE);
            }
        }
    }
    if time.is_some() {
        config.deadline = time;
    }
    match run_module(&bytes, args, config) {
        Ok(run) => {
            let _ = std::io::stdout().write_all(&run.stdout);
            ExitCode::from(run.exit_code)
        }
        Err(e) => {
            let code = match &e {
                WasmError::OutOfFuel { .. } | WasmError::DeadlineExceeded { .. } => 124,
                WasmError::LimitRefused { .. } | WasmError::ModuleTooLarge { .. } => 125,
                WasmError::Compile { .. }
                | WasmError::NoMemoryExport
                | WasmError::UnresolvedImport { .. } => 126,
                _ => 134,
            };
            eprintln!("killed: {}", IsolationError::from(e));
            ExitCode::from(code)
        }
    }
}

#[cfg(not(feature = "wasm"))]
fn run_wasm(
    _: Option<u64>,
    _: Option<Duration>,
    _: Option<u64>,
    _: &Path,
    _: &[OsString],
) -> ExitCode {
    eprintln!(
        "nebula-ctl: refused: this nebula-ctl was built without the wasm level; rebuild with `cargo build --features wasm`"
    );
    ExitCode::from(REFUSED)
}
