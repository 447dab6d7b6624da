use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nebula_memory::admin::profile::parse_duration;
use nebula_memory::admin::registry::{Registries, Stats};
use rustix::event::{PollFd, PollFlags, Timespec};

use crate::terminal;

use nebula_memory::admin::report::human;

/// A live full-screen view of every running context (a user's own; root: every user's): memory against its limit as a bar, CPU,
/// processes, OOM and limit events; refreshes every second, `q` quits.
///
/// When stdout is not a terminal, prints the same table as plain text once per interval (or
/// once with --once).
#[derive(clap::Args, Debug)]
pub struct Top {
    /// Print one plain-text frame and exit.
    #[arg(long)]
    once: bool,
    /// Time between refreshes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
}

const BAR: usize = 20;

fn bar(s: &Stats) -> String {
    match s.memory_max {
        Some(m) if m > 0 => {
            let frac = (s.memory_current as f64 / m as f64).clamp(0.0, 1.0);
            // frac is clamped to [0, 1]: the product is 0..=BAR.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = (frac * BAR as f64).round() as usize;
            format!("[{}{}]", "#".repeat(n), ".".repeat(BAR - n))
        }
        _ => format!("[{:^BAR$}]", "no limit"),
    }
}

/// CPU use between two frames, per context.
#[derive(Default)]
struct Cpu(HashMap<String, (u64, Instant)>);

impl Cpu {
    fn percent(&mut self, id: &str, usec: u64) -> Option<f64> {
        let now = Instant::now();
        let prev = self.0.insert(id.to_owned(), (usec, now));
        prev.and_then(|(u, t)| {
            let dt = now.duration_since(t).as_secs_f64();
            (dt > 0.0).then(|| usec.saturating_sub(u) as f64 / 1e4 / dt)
        })
    }
}

fn frame(regs: &Registries, cpu: &mut Cpu, width: usize) -> anyhow::Result<Vec<String>> {
    let entries = regs.entries()?.contexts;
    let others = regs.registries().len() - 1;
    let mut lines = vec![
        format!(
            "nebula-ctl top: {} context(s), registry {}{}",
            entries.len(),
            regs.registries()[0].dir().display(),
            if others > 0 {
                format!(
                    " and {others} user registr{}",
                    if others == 1 { "y" } else { "ies" }
                )
            } else {
                String::new()
            }
        ),
        format!(
            "{:<16} {:>7} {:<22} {:>17} {:>6} {:>9}  EVENTS",
            "NAME", "PID", "MEMORY", "USED/LIMIT", "CPU%", "PIDS"
        ),
    ];
    for l in &entries {
        let e = &l.entry;
        let Ok(s) = l.registry.stats(e) else {
            continue; // ended between listing and reading
        };
        let used = format!(
            "{}/{}",
            human(s.memory_current),
            s.memory_max.map_or_else(|| "-".to_owned(), human)
        );
        let pct = cpu
            .percent(&e.id, s.cpu_usec)
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}"));
        let pids = match s.pids_max {
            Some(m) => format!("{}/{m}", s.pids_current),
            None => s.pids_current.to_string(),
        };
        let mut events = Vec::new();
        if let Some(ev) = s.memory_events {
            events.push(format!("oom_kill {}", ev.oom_kill));
            if ev.high > 0 {
                events.push(format!("high {}", ev.high));
            }
            if ev.max > 0 {
                events.push(format!("max {}", ev.max));
            }
        }
        if let Some(h) = s.pids_limit_hits.filter(|h| *h > 0) {
            events.push(format!("pids.max {h}"));
        }
        if events.is_empty() {
            events.push("-".into());
        }
        let mut l = format!(
            "{:<16} {:>7} {:<22} {:>17} {:>6} {:>9}  {}",
            e.label(),
            e.pid,
            bar(&s),
            used,
            pct,
            pids,
            events.join(", ")
        );
        if l.chars().count() > width {
            l = l.chars().take(width).collect();
        }
        lines.push(l);
    }
    Ok(lines)
}

impl Top {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let reg = Registries::visible();
        let mut cpu = Cpu::default();
        let stdin = std::io::stdin();
        let interactive = !self.once && std::io::stdout().is_terminal() && stdin.is_terminal();
        if !interactive {
            loop {
                let lines = frame(&reg, &mut cpu, usize::MAX)?;
                let mut out = std::io::stdout().lock();
                for l in lines {
                    writeln!(out, "{l}")?;
                }
                writeln!(out)?;
                out.flush()?;
                if self.once {
                    return Ok(ExitCode::SUCCESS);
                }
                std::thread::sleep(self.interval);
            }
        }
        let raw = terminal::raw_mode(stdin.as_fd())?;
        let mut out = std::io::stdout();
        // Alternate screen, cursor hidden; restored on every way out below.
        write!(out, "\x1b[?1049h\x1b[?25l")?;
        let result = self.interactive(&reg, &mut cpu, &mut out);
        write!(out, "\x1b[?25h\x1b[?1049l")?;
        out.flush()?;
        drop(raw);
        result.map(|()| ExitCode::SUCCESS)
    }

    fn interactive(
        &self,
        reg: &Registries,
        cpu: &mut Cpu,
        out: &mut std::io::Stdout,
    ) -> anyhow::Result<()> {
        let stdin = std::io::stdin();
        loop {
            let (rows, cols) = terminal::window_size(out.as_fd()).unwrap_or((24, 80));
            let (rows, cols) = (
                if rows == 0 { 24 } else { rows as usize },
                if cols == 0 { 80 } else { cols as usize },
            );
            let mut lines = frame(reg, cpu, cols)?;
            lines.truncate(rows.saturating_sub(1));
            let mut screen = String::from("\x1b[H\x1b[2J");
            for l in &lines {
                screen.push_str(l);
                screen.push_str("\r\n");
            }
            screen.push_str("\x1b[7m q: quit \x1b[0m");
            out.write_all(screen.as_bytes())?;
            out.flush()?;
            // Wait for a key or the next refresh.
            let deadline = Instant::now() + self.interval;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let ts = Timespec::try_from(left)?;
                let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
                match rustix::event::poll(&mut fds, Some(&ts)) {
                    Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                    Ok(_) => {}
                    Err(e) => return Err(e.into()),
                }
                let mut buf = [0u8; 64];
                let n = match rustix::io::read(&stdin, &mut buf) {
                    Ok(0) => return Ok(()), // the terminal hung up
                    Ok(n) => n,
                    Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                    Err(e) => return Err(e.into()),
                };
                // q, Q, Ctrl-C (ISIG is off in raw mode) or Ctrl-D quit.
                if buf[..n].iter().any(|b| matches!(b, b'q' | b'Q' | 3 | 4)) {
                    return Ok(());
                }
            }
        }
    }
}
