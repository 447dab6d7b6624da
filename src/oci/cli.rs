//! runc's command line: `nebula-runc` (and `nebula-ctl oci`) take exactly the arguments
//! containerd's runc shim passes, so that its `BinaryName` can point at nebula.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use super::error::OciError;
use super::runtime::Runtime;

/// An OCI runtime on nebula's process level (runc's command line).
#[derive(Debug, Parser)]
#[command(name = "nebula-runc", version)]
pub struct Cli {
    /// The state root.
    #[arg(long, global = true, default_value = "/run/nebula/oci")]
    root: PathBuf,
    /// Also write errors and warnings to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// The format of --log.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Refused: nebula manages cgroupfs paths itself.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility (nebula logs errors and warnings either way).
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// How --log is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// `level=error msg="..."` lines.
    Text,
    /// One JSON object per line (`level`, `msg`, `time`), as containerd reads it.
    Json,
}

/// The options `create` and `run` share.
#[derive(Debug, clap::Args)]
struct Launch {
    /// The bundle directory (holding config.json).
    #[arg(long, short = 'b', default_value = ".")]
    bundle: PathBuf,
    /// Write the container's pid here.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Where to send a terminal's master fd (needs process.terminal).
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Accepted: nebula never creates a session keyring.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a container from a bundle; it waits for `start`.
    Create {
        #[command(flatten)]
        launch: Launch,
        /// Refused: nebula always uses pivot_root.
        #[arg(long = "no-pivot")]
        no_pivot: bool,
        /// Refused unless 0: extra inherited fds.
        #[arg(long = "preserve-fds", default_value_t = 0)]
        preserve_fds: u32,
        /// The container id.
        id: String,
    },
    /// Start a created container.
    Start {
        /// The container id.
        id: String,
    },
    /// Print a container's state (JSON).
    State {
        /// The container id.
        id: String,
    },
    /// Send a signal (default TERM) to a container's process, or with --all to all of them.
    Kill {
        /// Every process of the container.
        #[arg(long, short = 'a')]
        all: bool,
        /// The container id.
        id: String,
        /// A number or a name (9, KILL, SIGKILL).
        signal: Option<String>,
    },
    /// Delete a container (with --force, also a running one).
    Delete {
        /// Kill it first if it runs.
        #[arg(long, short = 'f')]
        force: bool,
        /// The container id.
        id: String,
    },
    /// Create and start a container; without --detach, wait and delete it.
    Run {
        #[command(flatten)]
        launch: Launch,
        /// Return once it started.
        #[arg(long, short = 'd')]
        detach: bool,
        /// The container id.
        id: String,
    },
    /// List the pids of a container's processes.
    Ps {
        /// `table` or `json`.
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        /// The container id.
        id: String,
    },
    /// Freeze a container (cgroup.freeze).
    Pause {
        /// The container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// The container id.
        id: String,
    },
    /// List the containers under --root.
    List {
        /// `table` or `json`.
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
    },
    /// Print what this runtime implements (JSON).
    Features,
    /// Run another process in a running container (its namespaces, cgroup and seccomp
    /// profile).
    Exec {
        /// The process, as an OCI `process` object (JSON).
        #[arg(long, short = 'p')]
        process: Option<PathBuf>,
        /// Return once it runs.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Write its pid here.
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// Where to send a terminal's master fd.
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        /// Allocate a terminal (refused).
        #[arg(long, short = 't')]
        tty: bool,
        /// The container id.
        id: String,
        /// The command and its arguments (without --process).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

/// Parses a signal: a number, or a name with or without `SIG`.
///
/// # Errors
/// [`OciError::Signal`].
pub fn parse_signal(s: &str) -> Result<i32, OciError> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(OciError::Signal(s.to_owned()))
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.trim_start_matches("SIG");
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return Err(OciError::Signal(s.to_owned())),
    };
    Ok(n)
}

fn log_line(log: Option<&Path>, format: LogFormat, level: &str, msg: &str) {
    let Some(path) = log else { return };
    let line = match format {
        LogFormat::Json => serde_json::json!({
            "level": level,
            "msg": msg,
            "time": super::state::now_rfc3339(),
        })
        .to_string(),
        LogFormat::Text => format!(
            "time=\"{}\" level={level} msg={msg:?}",
            super::state::now_rfc3339()
        ),
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// A line on stdout; a reader that went away (`| head`) is not an error of the runtime's.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// A line on stderr, as [`say`].
fn esay(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn tty_refused(socket: &Option<PathBuf>, tty: bool) -> Result<(), OciError> {
    if socket.is_some() || tty {
        return Err(refuse(
            "--console-socket/--tty",
            "nebula does not give containers a terminal yet (process.terminal)",
        ));
    }
    Ok(())
}

fn refuse(option: &'static str, reason: &'static str) -> OciError {
    OciError::Option { option, reason }
}

fn dispatch(cli: &Cli) -> Result<(i32, Vec<OciError>), OciError> {
    if cli.systemd_cgroup {
        return Err(refuse(
            "--systemd-cgroup",
            "nebula creates the container's cgroup itself (cgroupfs); set SystemdCgroup = false \
             in containerd's runc options for nebula",
        ));
    }
    let rt = Runtime::new(&cli.root);
    let out = |v: &serde_json::Value| {
        say(&serde_json::to_string_pretty(v).expect("JSON serializes"));
    };
    let tty = |s: &Option<PathBuf>| tty_refused(s, false);
    match &cli.cmd {
        Cmd::Create {
            launch:
                Launch {
                    bundle,
                    pid_file,
                    console_socket,
                    no_new_keyring: _,
                },
            no_pivot,
            preserve_fds,
            id,
        } => {
            tty(console_socket)?;
            if *no_pivot {
                return Err(refuse("--no-pivot", "nebula always pivots into the root"));
            }
            if *preserve_fds != 0 {
                return Err(refuse(
                    "--preserve-fds",
                    "extra inherited fds are not passed",
                ));
            }
            rt.create(id, bundle, pid_file.as_deref())?;
            Ok((0, Vec::new()))
        }
        Cmd::Start { id } => Ok((0, rt.start(id)?)),
        Cmd::State { id } => {
            out(&rt.state(id)?);
            Ok((0, Vec::new()))
        }
        Cmd::Kill { all, id, signal } => {
            let sig = parse_signal(signal.as_deref().unwrap_or("TERM"))?;
            rt.kill(id, sig, *all)?;
            Ok((0, Vec::new()))
        }
        Cmd::Delete { force, id } => {
            // How it ended, said once before its cgroup goes (an OOM kill, in nebula's words).
            if let Ok(st) = rt.state(id)
                && let Some(o) = st["org.nebula.outcome"].as_str()
            {
                let msg = format!("container {id}: {o}");
                esay(&format!("nebula-runc: {msg}"));
                log_line(cli.log.as_deref(), cli.log_format, "info", &msg);
            }
            Ok((0, rt.delete(id, *force)?))
        }
        Cmd::Run {
            launch:
                Launch {
                    bundle,
                    pid_file,
                    console_socket,
                    no_new_keyring: _,
                },
            detach,
            id,
        } => {
            tty(console_socket)?;
            Ok((
                rt.run(id, bundle, pid_file.as_deref(), *detach)?,
                Vec::new(),
            ))
        }
        Cmd::Ps { format, id } => {
            let pids = rt.ps(id)?;
            if format == "json" {
                out(&serde_json::json!(pids));
            } else {
                say("PID\tCMD");
                for p in pids {
                    let cmd =
                        std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                    say(&format!("{p}\t{}", cmd.trim()));
                }
            }
            Ok((0, Vec::new()))
        }
        Cmd::Pause { id } => rt.freeze(id, true).map(|()| (0, Vec::new())),
        Cmd::Resume { id } => rt.freeze(id, false).map(|()| (0, Vec::new())),
        Cmd::List { format } => {
            let all = rt.list()?;
            if format == "json" {
                let v: Vec<serde_json::Value> = all.iter().map(|(r, s)| r.state_json(*s)).collect();
                out(&serde_json::json!(v));
            } else {
                say("ID\tPID\tSTATUS\tBUNDLE\tCREATED");
                for (r, s) in all {
                    say(&format!(
                        "{}\t{}\t{s}\t{}\t{}",
                        r.id,
                        r.pid,
                        r.bundle.display(),
                        r.created
                    ));
                }
            }
            Ok((0, Vec::new()))
        }
        Cmd::Features => {
            out(&super::runtime::features());
            Ok((0, Vec::new()))
        }
        Cmd::Exec {
            process,
            detach,
            pid_file,
            console_socket,
            tty,
            id,
            args,
        } => {
            tty_refused(console_socket, *tty)?;
            let what = match (process, args.is_empty()) {
                (Some(f), true) => super::runtime::ExecProcess::File(f),
                (None, false) => super::runtime::ExecProcess::Args(args),
                _ => {
                    return Err(refuse(
                        "exec",
                        "give either --process FILE or the command, not both or neither",
                    ));
                }
            };
            Ok((rt.exec(id, what, pid_file.as_deref(), *detach)?, Vec::new()))
        }
    }
}

/// Runs the command line `args` (`args[0]` is the program name) and returns the exit
/// status: the container's for a foreground `run`, 1 for an error (printed to stderr and
/// to `--log`), 0 otherwise.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match dispatch(&cli) {
        Ok((code, warnings)) => {
            for w in warnings {
                let msg = crate::base::error_chain(&w);
                esay(&format!("nebula-runc: warning: {msg}"));
                log_line(cli.log.as_deref(), cli.log_format, "warning", &msg);
            }
            code
        }
        Err(e) => {
            let msg = crate::base::error_chain(&e);
            esay(&format!("nebula-runc: error: {msg}"));
            log_line(cli.log.as_deref(), cli.log_format, "error", &msg);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_number_and_name() {
        assert_eq!(parse_signal("9").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("sigusr1").unwrap(), libc::SIGUSR1);
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn runc_argv_parses() {
        let cli = Cli::try_parse_from([
            "runc",
            "--root",
            "/run/x",
            "--log",
            "/tmp/l.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "c1",
        ])
        .unwrap();
        assert_eq!(cli.root, Path::new("/run/x"));
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(matches!(cli.cmd, Cmd::Create { ref id, .. } if id == "c1"));
        let cli = Cli::try_parse_from(["runc", "kill", "--all", "c1", "9"]).unwrap();
        assert!(
            matches!(cli.cmd, Cmd::Kill { all: true, ref signal, .. } if signal.as_deref() == Some("9"))
        );
        let cli = Cli::try_parse_from(["runc", "--systemd-cgroup", "state", "c1"]).unwrap();
        let e = dispatch(&cli).unwrap_err().to_string();
        assert!(e.contains("SystemdCgroup = false"), "{e}");
    }
}
