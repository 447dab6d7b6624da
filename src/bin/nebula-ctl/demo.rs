use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, Output};
use std::time::Duration;

use nebula_memory::IsolationError;
use nebula_memory::isolation::MemoryIsolation;

/// Every level that exists here, each against a misbehaving workload, with a report of
/// what was contained.
///
/// The workloads that must die are the crate's examples (`examples/escape_*.rs`), built
/// beside nebula-ctl (`cargo build --examples`; `make demo` builds them).
#[derive(clap::Args, Debug)]
pub struct Demo {}

type Step = fn() -> anyhow::Result<Outcome>;

enum Outcome {
    Contained(String),
    Skipped(String),
}

impl Demo {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let (mut contained, mut total) = (0, 0);
        println!("nebula-ctl demo: every available level against a misbehaving workload\n");
        let steps: [(&str, Step); 11] = [
            ("region: a workload that allocates past its budget", budget),
            (
                "region: a child context limited by its parent",
                parent_limit,
            ),
            ("region: a write past the end of a region", guard_overrun),
            (
                "sandbox: a write onto a sandbox region's guard page",
                sandbox_guard,
            ),
            (
                "userfaultfd: a write into a frozen (write-protected) region",
                frozen_write,
            ),
            (
                "thread: a thread reading another protection-key domain",
                pkey_read,
            ),
            (
                "seccomp: a strict-profile workload that tries to open a file",
                seccomp_strict,
            ),
            ("process: a command that never ends", process_timeout),
            (
                "process: a command that writes to the root filesystem and the network",
                process_escape,
            ),
            (
                "process: a command that allocates past memory.max",
                process_oom,
            ),
            ("process: a fork bomb under pids.max", process_fork_bomb),
        ];
        for (name, step) in steps {
            match step() {
                Ok(Outcome::Contained(msg)) => {
                    total += 1;
                    contained += 1;
                    println!("[contained] {name}\n            {msg}");
                }
                Ok(Outcome::Skipped(why)) => println!("[skipped]   {name}\n            {why}"),
                Err(e) => {
                    total += 1;
                    println!("[NOT contained] {name}\n            {e:#}");
                }
            }
        }
        for (level, status) in nebula_memory::isolation::levels::levels() {
            if !status.available {
                println!("[level unavailable] {level}: {}", status.lacks.join("; "));
            }
        }
        println!("\n{contained}/{total} misbehaving workloads contained");
        Ok(if contained == total {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

fn budget() -> anyhow::Result<Outcome> {
    let iso = MemoryIsolation::new();
    let ctx = iso
        .create_context()
        .with_name("greedy")
        .with_memory_limit(1 << 20)
        .build()?;
    let mut n = 0u64;
    let err = loop {
        match ctx.alloc_slice(4096) {
            Ok(buf) => {
                buf.fill(0xAB);
                n += 1;
            }
            Err(e) => break e,
        }
        anyhow::ensure!(n <= 1 << 20, "the budget never stopped the workload");
    };
    anyhow::ensure!(
        matches!(err, IsolationError::LimitExceeded { .. }),
        "unexpected error: {err}"
    );
    let s = ctx.stats();
    Ok(Outcome::Contained(format!(
        "stopped after {n} x 4 KiB: {err}; used {} of {} bytes",
        s.memory_used,
        1 << 20
    )))
}

fn parent_limit() -> anyhow::Result<Outcome> {
    let iso = MemoryIsolation::new();
    let parent = iso
        .create_context()
        .with_name("tenant")
        .with_memory_limit(256 * 1024)
        .build()?;
    let child = iso
        .create_context()
        .with_name("plugin")
        .with_parent(&parent)
        .with_memory_limit(16 << 20)
        .build()?;
    parent.allocate(128 * 1024)?;
    let err = child.allocate(192 * 1024).unwrap_err();
    anyhow::ensure!(
        matches!(err, IsolationError::LimitExceeded { context, .. } if context == parent.id()),
        "the parent's budget did not bound the child: {err}"
    );
    child.allocate(64 * 1024)?;
    Ok(Outcome::Contained(format!(
        "child asked 192 KiB under its own 16 MiB limit: {err}; 64 KiB fitted, parent now charges {} bytes",
        parent.stats().memory_used
    )))
}

/// Runs the misbehaving workload `examples/escape_<name>.rs`, built beside this binary.
fn run_child(name: &str) -> anyhow::Result<Output> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|d| {
            d.join("examples")
                .join(format!("escape_{}", name.replace('-', "_")))
        })
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", exe.display()))?;
    anyhow::ensure!(
        path.is_file(),
        "the workload {} is not built; Hint: cargo build --examples (make demo builds it)",
        path.display()
    );
    Ok(std::process::Command::new(path).output()?)
}

fn report_line(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    err.lines()
        .find(|l| l.contains("fail-stop"))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn guard_overrun() -> anyhow::Result<Outcome> {
    let o = run_child("region-overrun")?;
    match o.status.signal() {
        Some(libc::SIGSEGV) => Ok(Outcome::Contained(
            "the workload wrote one byte past its region and died of SIGSEGV on the guard page (PROT_NONE) before the byte landed".into(),
        )),
        _ => anyhow::bail!("the overrun was not stopped by the guard page (exit status {})", o.status),
    }
}

fn sandbox_guard() -> anyhow::Result<Outcome> {
    let o = run_child("sandbox-guard")?;
    let line = report_line(&o);
    anyhow::ensure!(
        o.status.signal() == Some(libc::SIGABRT),
        "exit status {} ({line})",
        o.status
    );
    anyhow::ensure!(!line.is_empty(), "no violation report on stderr");
    Ok(Outcome::Contained(format!(
        "SIGABRT after the report: {line}"
    )))
}

fn frozen_write() -> anyhow::Result<Outcome> {
    use nebula_memory::uffd::{FrozenRegion, WritePolicy};
    use std::sync::{Arc, Mutex};
    if !nebula_memory::features().userfaultfd.available {
        return Ok(Outcome::Skipped(
            "userfaultfd is not available here (nebula-ctl probe)".into(),
        ));
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    nebula_memory::violation::set_violation_handler(move |i| log.lock().unwrap().push(i.clone()));
    let iso = MemoryIsolation::new();
    let owner = iso.create_context().with_name("config-reader").build()?;
    let region = FrozenRegion::new(b"config v1", WritePolicy::Audit, Some(owner.id()))?;
    region.write_violating(0, b"X")?;
    nebula_memory::violation::flush(Duration::from_secs(5));
    nebula_memory::violation::clear_violation_handler();
    let reports = seen.lock().unwrap().clone();
    let r = reports
        .first()
        .ok_or_else(|| anyhow::anyhow!("the write was not reported"))?;
    Ok(Outcome::Contained(format!(
        "reported by userfaultfd: {:?} at {:#x} by thread {} of {}; allowed under the audit policy ({} write reported)",
        r.kind,
        r.address.unwrap_or(0),
        r.thread_id.unwrap_or(0),
        owner.name(),
        region.writes_reported()
    )))
}

fn pkey_read() -> anyhow::Result<Outcome> {
    let f = nebula_memory::features();
    if !f.pkeys.available {
        return Ok(Outcome::Skipped(format!(
            "no protection keys here: {}",
            f.pkeys.reason.as_deref().unwrap_or("")
        )));
    }
    let o = run_child("pkey-read")?;
    let line = report_line(&o);
    anyhow::ensure!(
        o.status.signal() == Some(libc::SIGABRT),
        "exit status {} ({line})",
        o.status
    );
    Ok(Outcome::Contained(format!(
        "SIGABRT after the report: {line}"
    )))
}

fn seccomp_strict() -> anyhow::Result<Outcome> {
    if !nebula_memory::features().seccomp.available {
        return Ok(Outcome::Skipped(
            "seccomp is not available here (nebula-ctl probe)".into(),
        ));
    }
    let o = run_child("seccomp-strict")?;
    anyhow::ensure!(
        o.status.signal() == Some(libc::SIGSYS),
        "exit status {}",
        o.status
    );
    Ok(Outcome::Contained(
        "the kernel killed it with SIGSYS at openat(2)".into(),
    ))
}

fn process_available() -> Option<Outcome> {
    let l = &nebula_memory::isolation::levels::levels()["process"];
    (!l.available)
        .then(|| Outcome::Skipped(format!("process level unavailable: {}", l.lacks.join("; "))))
}

fn cgroup_available() -> Option<Outcome> {
    let f = nebula_memory::features();
    process_available().or_else(|| {
        (!f.cgroup_v2.available).then(|| {
            Outcome::Skipped(format!(
                "needs cgroup v2 (runs in the VM tier): {}",
                f.cgroup_v2.reason.as_deref().unwrap_or("")
            ))
        })
    })
}

fn sh(script: &str) -> nebula_memory::isolation::process::Command {
    nebula_memory::isolation::process::Command::new("/bin/sh").args(["-c", script])
}

fn quiet() -> nebula_memory::isolation::process::ProcessConfig {
    use nebula_memory::isolation::process::{ProcessConfig, Stdio};
    ProcessConfig::new().output(Stdio::Capture, Stdio::Capture)
}

fn process_timeout() -> anyhow::Result<Outcome> {
    use nebula_memory::isolation::process::ProcessIsolation;
    if let Some(skip) = process_available() {
        return Ok(skip);
    }
    let p = ProcessIsolation::new(quiet().wall_time(Duration::from_millis(500)))?;
    let o = p.run_command(&sh("while :; do :; done"))?;
    anyhow::ensure!(o.timed_out, "not stopped at its time limit: {:?}", o.status);
    Ok(Outcome::Contained(format!(
        "killed at the 500 ms time limit after {:.0?} ({:?})",
        o.wall_time, o.status
    )))
}

fn process_escape() -> anyhow::Result<Outcome> {
    use nebula_memory::isolation::process::ProcessIsolation;
    if let Some(skip) = process_available() {
        return Ok(skip);
    }
    let p = ProcessIsolation::new(quiet())?;
    let o = p.run_command(&sh(
        "echo x > /etc/nebula-demo 2>/dev/null && echo wrote-root; \
         awk -F: 'NR > 2 { gsub(/ /, \"\", $1); printf \"%s \", $1 }' /proc/net/dev; echo; id -u",
    ))?;
    let out = o.stdout_text();
    anyhow::ensure!(
        !out.contains("wrote-root"),
        "the root filesystem was writable: {out}"
    );
    anyhow::ensure!(
        !std::path::Path::new("/etc/nebula-demo").exists(),
        "the file reached the host"
    );
    Ok(Outcome::Contained(format!(
        "read-only root refused the write; network interfaces inside: {}; uid inside {}",
        out.lines().next().unwrap_or("").trim(),
        out.lines().nth(1).unwrap_or("").trim()
    )))
}

fn process_oom() -> anyhow::Result<Outcome> {
    use nebula_memory::isolation::process::ProcessIsolation;
    if let Some(skip) = cgroup_available() {
        return Ok(skip);
    }
    let p = ProcessIsolation::new(quiet().memory_max(32 << 20))?;
    // awk doubles a string until the kernel stops it.
    let o = p.run_command(&sh("awk 'BEGIN { s = \"x\"; while (1) s = s s }'"))?;
    anyhow::ensure!(o.oom_killed, "not OOM-killed: {:?}", o.status);
    Ok(Outcome::Contained(format!(
        "killed: out of memory (memory.max=32M, peak {:.1}M, oom_kill {})",
        o.memory_peak.unwrap_or(0) as f64 / (1 << 20) as f64,
        o.oom_kills
    )))
}

fn process_fork_bomb() -> anyhow::Result<Outcome> {
    use nebula_memory::isolation::process::ProcessIsolation;
    if let Some(skip) = cgroup_available() {
        return Ok(skip);
    }
    let p = ProcessIsolation::new(quiet().pids_max(16).wall_time(Duration::from_secs(20)))?;
    let o = p.run_command(&sh(
        "i=0; while [ $i -lt 64 ]; do sleep 5 & i=$((i+1)); done; wait",
    ))?;
    anyhow::ensure!(
        o.pids_limit_hits > 0,
        "pids.max never refused a fork: {:?}",
        o.status
    );
    Ok(Outcome::Contained(format!(
        "pids.max=16 refused {} forks (pids.events max)",
        o.pids_limit_hits
    )))
}
