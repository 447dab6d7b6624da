//! Spawn-to-exit of `/bin/true` in a process context, against the tools people use for the
//! same job, each measured in the same run, rounds interleaved, medians of 50:
//!
//! - `nebula (default)`: the strict default context (every namespace, read-only root,
//!   private `/tmp`, fresh `/proc` and `/sys`, `lo` up, capabilities dropped, seccomp
//!   `default`; a cgroup leaf when cgroup v2 is available, as the probe says);
//! - `nebula (default, host /sys)`: the same with the inherited `/sys` ([`Sysfs::Host`]):
//!   what the fresh sysfs costs, and with `/sys` masked ([`Sysfs::Masked`]);
//! - `nebula (as unshare)`: namespaces user + pid + mount with a fresh `/proc` only, what
//!   `unshare -Urpf --mount-proc` sets up (no seccomp, no capability drop, no cgroup);
//! - `unshare -Urpf --mount-proc /bin/true` (util-linux);
//! - `bwrap --unshare-all --ro-bind / / --proc /proc --dev /dev /bin/true` (bubblewrap;
//!   `skipped: bwrap unavailable` when it is not installed);
//! - `fork+exec`: `std::process::Command` without namespaces, the floor.
//!
//! The tools are started with `std::process::Command` (fork/exec of the tool, which then
//! forks again for the new pid namespace), so each row is spawn-to-exit as a caller sees it.
//!
//! Run: `cargo bench --bench spawn` (as root, with user namespaces).

use std::time::{Duration, Instant};

use nebula_memory::isolation::process::{
    CgroupUse, Command, Namespaces, ProcessConfig, ProcessIsolation, Stdio, Sysfs,
};
use nebula_memory::seccomp::Profile;

const ROUNDS: usize = 50;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(f: &mut dyn FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn tool(argv: &[&str]) -> bool {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const UNSHARE: &[&str] = &["unshare", "-Urpf", "--mount-proc", "/bin/true"];
const BWRAP: &[&str] = &[
    "bwrap",
    "--unshare-all",
    "--ro-bind",
    "/",
    "/",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "/bin/true",
];

fn main() {
    if !nebula_memory::features().user_namespaces.available {
        println!("skipped: user namespaces are not available (nebula-ctl probe)");
        return;
    }
    let strict = ProcessIsolation::new(ProcessConfig::new().output(Stdio::Null, Stdio::Null))
        .expect("default context");
    let host_sys = ProcessIsolation::new(
        ProcessConfig::new()
            .sysfs(Sysfs::Host)
            .output(Stdio::Null, Stdio::Null),
    )
    .expect("default context, host /sys");
    let masked_sys = ProcessIsolation::new(
        ProcessConfig::new()
            .sysfs(Sysfs::Masked)
            .output(Stdio::Null, Stdio::Null),
    )
    .expect("default context, masked /sys");
    let mut c = ProcessConfig::new()
        .namespaces(Namespaces::USER | Namespaces::PID | Namespaces::MOUNT)
        .read_only_root(false)
        .seccomp(Profile::None)
        .cgroup(CgroupUse::Off)
        .sysfs(Sysfs::Host)
        .output(Stdio::Null, Stdio::Null);
    // No private /tmp, capabilities kept, like unshare.
    c.tmpfs.clear();
    c.drop_caps = false;
    c.no_new_privs = false;
    let lean = ProcessIsolation::new(c).expect("lean context");
    let cmd = Command::new("/bin/true");
    let run = |iso: &ProcessIsolation| {
        let o = iso.run_command(&cmd).expect("run_command");
        assert!(o.status.success(), "{o:?}");
    };
    let have_unshare = tool(UNSHARE);
    let have_bwrap = tool(BWRAP);

    type Row<'a> = (&'a str, Box<dyn FnMut() + 'a>, bool);
    let mut rows: Vec<Row<'_>> = vec![
        ("nebula (default)", Box::new(|| run(&strict)), true),
        (
            "nebula (default, host /sys)",
            Box::new(|| run(&host_sys)),
            true,
        ),
        (
            "nebula (default, masked /sys)",
            Box::new(|| run(&masked_sys)),
            true,
        ),
        ("nebula (as unshare)", Box::new(|| run(&lean)), true),
        (
            "unshare -Urpf --mount-proc",
            Box::new(|| assert!(tool(UNSHARE))),
            have_unshare,
        ),
        (
            "bwrap --unshare-all",
            Box::new(|| assert!(tool(BWRAP))),
            have_bwrap,
        ),
        (
            "fork+exec (no isolation)",
            Box::new(|| assert!(tool(&["/bin/true"]))),
            true,
        ),
    ];
    // Warm-up, then interleaved rounds.
    for (_, f, ok) in rows.iter_mut() {
        if *ok {
            for _ in 0..3 {
                f();
            }
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(ROUNDS); rows.len()];
    for _ in 0..ROUNDS {
        for (i, (_, f, ok)) in rows.iter_mut().enumerate() {
            if *ok {
                samples[i].push(time(f.as_mut()));
            }
        }
    }
    let cg = if strict.cgroup_root().is_some() {
        "with a cgroup leaf"
    } else {
        "no cgroup (cgroup v2 unavailable)"
    };
    println!("spawn-to-exit of /bin/true, median of {ROUNDS}, interleaved; default context {cg}");
    let med: Vec<Option<Duration>> = samples
        .into_iter()
        .zip(&rows)
        .map(|(s, r)| r.2.then(|| median(s)))
        .collect();
    let find = |prefix: &str| {
        rows.iter()
            .position(|r| r.0.starts_with(prefix))
            .and_then(|i| med[i])
    };
    let (unshare, bwrap) = (find("unshare"), find("bwrap"));
    for ((name, _, ok), m) in rows.iter().zip(&med) {
        let Some(m) = m else {
            let what = if name.starts_with("bwrap") {
                "bwrap"
            } else {
                "unshare"
            };
            println!("{name:<30} skipped: {what} unavailable");
            continue;
        };
        debug_assert!(*ok);
        let ratio = |base: Option<Duration>| {
            base.map_or("-".to_owned(), |b| {
                format!("{:.2}x", m.as_secs_f64() / b.as_secs_f64())
            })
        };
        println!(
            "{name:<30} {:>8.3} ms   vs unshare {:>6}   vs bwrap {:>6}",
            m.as_secs_f64() * 1e3,
            ratio(unshare),
            ratio(bwrap)
        );
    }
}
