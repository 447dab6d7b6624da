use std::process::ExitCode;

use nebula_memory::IsolationError;
use nebula_memory::isolation::MemoryIsolation;

/// Every level that exists here, each against a misbehaving workload, with a report of
/// what was contained.
#[derive(clap::Args, Debug)]
pub struct Demo {
    /// Internal: act as the guard-page overrun workload (run by the demo itself).
    #[arg(long, hide = true)]
    overrun_child: bool,
}

impl Demo {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if self.overrun_child {
            overrun_child();
        }
        let mut contained = 0;
        let mut total = 0;
        println!("nebula-ctl demo: every available level against a misbehaving workload\n");
        for (name, step) in [
            (
                "region: a workload that allocates past its budget",
                budget as fn() -> anyhow::Result<String>,
            ),
            (
                "region: a child context limited by its parent",
                parent_limit,
            ),
            ("region: a write past the end of a region", guard_overrun),
        ] {
            total += 1;
            match step() {
                Ok(msg) => {
                    contained += 1;
                    println!("[contained] {name}\n            {msg}");
                }
                Err(e) => println!("[NOT contained] {name}\n            {e:#}"),
            }
        }
        let f = nebula_memory::features();
        for (level, status) in &f.levels {
            if !status.available {
                println!("[skipped]   {level} level: {}", status.lacks.join("; "));
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

fn budget() -> anyhow::Result<String> {
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
    Ok(format!(
        "stopped after {n} x 4 KiB: {err}; used {} of {} bytes",
        s.memory_used,
        1 << 20
    ))
}

fn parent_limit() -> anyhow::Result<String> {
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
    Ok(format!(
        "child asked 192 KiB under its own 16 MiB limit: {err}; 64 KiB fitted, parent now charges {} bytes",
        parent.stats().memory_used
    ))
}

fn guard_overrun() -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let status = std::process::Command::new(exe)
        .args(["demo", "--overrun-child"])
        .status()?;
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(libc::SIGSEGV) => Ok("the workload wrote one byte past its region and died of SIGSEGV on the guard page (PROT_NONE) before the byte landed".into()),
        _ => anyhow::bail!("the overrun was not stopped by the guard page (exit status {status})"),
    }
}

#[allow(unsafe_code)]
fn overrun_child() -> ! {
    let iso = MemoryIsolation::new();
    let ctx = iso
        .create_context()
        .with_memory_limit(64 * 1024)
        .build()
        .expect("context");
    let buf = ctx.alloc_slice(64 * 1024).expect("allocation");
    let past_end = buf.as_mut_ptr().wrapping_add(buf.len());
    // SAFETY: none: this is the deliberately misbehaving workload. The write targets the
    // PROT_NONE guard page after the region, so the kernel stops it with SIGSEGV before any
    // memory changes; the parent process checks that it did.
    unsafe { past_end.write_volatile(0xEE) };
    eprintln!("the overrun was not stopped");
    std::process::exit(0)
}
