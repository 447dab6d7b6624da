//! How `nebula-ctl` words an outcome: the one-line summary of why a context ended, its JSON
//! record, and sizes in binary units.

use crate::admin::profile::{RunProfile, format_duration};
use crate::cgroup::{Limit, format_size};
use crate::isolation::process::{ExitStatus, MemoryEnforcement, Outcome};
use crate::seccomp::Profile as Seccomp;
use crate::violation::ViolationKind;

/// `64.0M`: a size with one decimal in the largest binary unit below it.
pub fn human(bytes: u64) -> String {
    const UNITS: [(u32, &str); 5] = [(40, "T"), (30, "G"), (20, "M"), (10, "K"), (0, "B")];
    for (shift, u) in UNITS {
        if bytes >= 1u64 << shift && shift > 0 {
            return format!("{:.1}{u}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes}B")
}

/// The name of signal `sig` (`SIGKILL`), or `signal N` for one without a common name.
pub fn signal_name(sig: i32) -> String {
    let names = [
        (1, "SIGHUP"),
        (2, "SIGINT"),
        (3, "SIGQUIT"),
        (4, "SIGILL"),
        (5, "SIGTRAP"),
        (6, "SIGABRT"),
        (7, "SIGBUS"),
        (8, "SIGFPE"),
        (9, "SIGKILL"),
        (11, "SIGSEGV"),
        (13, "SIGPIPE"),
        (14, "SIGALRM"),
        (15, "SIGTERM"),
        (24, "SIGXCPU"),
        (25, "SIGXFSZ"),
        (31, "SIGSYS"),
    ];
    names
        .iter()
        .find(|(n, _)| *n == sig)
        .map_or_else(|| format!("signal {sig}"), |(_, s)| (*s).to_owned())
}

/// The one line `nebula-ctl run` prints on stderr when the context did not end normally
/// (`killed: out of memory (memory.max=64M, peak 63.9M)`), in the words of the profile
/// that set its limits; `None` for a normal exit.
pub fn summary(o: &Outcome, p: &RunProfile) -> Option<String> {
    if o.oom_killed {
        let max = p.memory.map_or_else(String::new, |m| {
            format!("memory.max={}, ", format_size(Limit::Value(m)))
        });
        let peak = o.memory_peak.map_or_else(
            || "peak unknown".to_owned(),
            |b| format!("peak {}", human(b)),
        );
        return Some(format!("killed: out of memory ({max}{peak})"));
    }
    if o.timed_out {
        let t = p.time.map(format_duration).unwrap_or_default();
        return Some(format!("killed: time limit {t}"));
    }
    if o.cpu_time_exceeded {
        let t = p.cpu_time.map(format_duration).unwrap_or_default();
        return Some(format!("killed: cpu time limit {t}"));
    }
    if o.seccomp_killed {
        let profile = p.seccomp.unwrap_or(Seccomp::Default);
        let denied = o.denied_syscall.or_else(|| {
            o.violations.iter().find_map(|v| match v.kind {
                ViolationKind::Seccomp { syscall } => syscall,
                _ => None,
            })
        });
        return Some(match denied {
            // "killed: seccomp violation at openat(2) (nr 257; profile strict)"
            Some(d) => match d.name {
                Some(name) => format!(
                    "killed: seccomp violation at {name}(2) (nr {}; profile {profile})",
                    d.nr
                ),
                None => format!(
                    "killed: seccomp violation at system call nr {} ({}; profile {profile})",
                    d.nr,
                    d.arch_name()
                ),
            },
            // No notification: the filter's architecture or x32 guard (KILL_PROCESS), or a
            // SIGSYS from elsewhere; the kernel names no call then.
            None => format!(
                "killed: seccomp violation (SIGSYS without a notification: a foreign-architecture \
                 or x32 system call; profile {profile})"
            ),
        });
    }
    if o.pids_limit_hits > 0 {
        let max = p
            .pids
            .map_or_else(String::new, |m| format!(", pids.max={m}"));
        let pre = if o.status.signal().is_some() {
            "killed: "
        } else {
            ""
        };
        return Some(format!(
            "{pre}pids limit: {} fork(s) refused{max}",
            o.pids_limit_hits
        ));
    }
    if o.memory_limit == MemoryEnforcement::RlimitAs && o.status.signal().is_some() {
        return Some(format!(
            "killed: {} (memory limited by RLIMIT_AS)",
            signal_name(o.status.signal().unwrap_or(0))
        ));
    }
    o.status
        .signal()
        .map(|s| format!("killed: {} (signal {s})", signal_name(s)))
}

/// The JSON record of an outcome (`nebula-ctl run --json`): context id, name, status, the
/// limits hit and the violations.
pub fn record(o: &Outcome, id: &str, name: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "name": name,
        "pid": o.pid,
        "exit_code": match o.status {
            ExitStatus::Exited(c) => Some(c),
            _ => None,
        },
        "signal": o.status.signal(),
        "shell_code": o.status.shell_code(),
        "oom_killed": o.oom_killed,
        "oom_kills": o.oom_kills,
        "timed_out": o.timed_out,
        "cpu_time_exceeded": o.cpu_time_exceeded,
        "seccomp_killed": o.seccomp_killed,
        "denied_syscall": o.denied_syscall.map(|d| serde_json::json!({
            "nr": d.nr,
            "name": d.name,
            "arch": d.arch_name(),
        })),
        "pids_limit_hits": o.pids_limit_hits,
        "memory_peak": o.memory_peak,
        "max_rss_bytes": o.max_rss_bytes,
        "cpu_time": o.cpu_time.as_secs_f64(),
        "wall_time": o.wall_time.as_secs_f64(),
        "memory_enforcement": o.memory_limit,
        "cgroup": o.cgroup,
        "violations": o.violations.iter().map(|v| format!("{:?}", v.kind)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_signals_read_as_an_administrator_writes_them() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(1023), "1023B");
        assert_eq!(human(64 << 20), "64.0M");
        assert_eq!(human((3 << 30) + (512 << 20)), "3.5G");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(31), "SIGSYS");
        assert_eq!(signal_name(64), "signal 64");
    }
}
