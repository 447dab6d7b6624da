//! Safe by default: with no options, root inside a context is an unprivileged host uid of the
//! context's own range, and runc's masked and read-only `/proc`/`/sys` paths hold. Each test
//! runs as root with the default configuration and asserts the answer the kernel gave.
//!
//! Where two layers would both stop an attempt (the identity and a read-only path), a second
//! run with the other layer removed shows that each holds on its own.
//!
//! Host tier: needs root and user namespaces; the VM tier runs the same tests.
#![allow(unsafe_code)]

mod common;

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nebula_memory::isolation::process::{
    Command, DEFAULT_MASKED_PATHS, IdPool, IdRange, Namespaces, ProcessConfig, ProcessIsolation,
    Stdio,
};
use nebula_memory::seccomp::Profile;

/// Tests lease from the system pool side by side (a read lock); the one that watches a
/// lease left behind by a killed supervisor runs alone (the write lock), since any other
/// lease, or any `nebula-ctl` command's reclaim, may take that lease over meanwhile, as it
/// should.
static SYSTEM_POOL: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn can_run() -> bool {
    common::require(common::is_root(), "needs root (a pool of host ids, mounts)")
        && common::require(
            nebula_memory::features().user_namespaces.available,
            "needs user namespaces (nebula-ctl probe)",
        )
}

/// `None` (the test skips) without root or user namespaces; otherwise a share of the pool.
fn ready() -> Option<std::sync::RwLockReadGuard<'static, ()>> {
    can_run().then(|| SYSTEM_POOL.read().unwrap_or_else(|e| e.into_inner()))
}

fn config() -> ProcessConfig {
    ProcessConfig::new()
        .output(Stdio::Capture, Stdio::Capture)
        .wall_time(Duration::from_secs(60))
}

/// A system call's answer: `Ok(return value)` or `Err(errno)`.
type Answer = Result<i64, i32>;

fn answer(r: i64) -> Answer {
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// `open(path, flags)` and close: the errno or the fd number.
fn open_answer(path: &str, flags: i32) -> Answer {
    let p = cstr(path);
    // SAFETY: p is a live NUL-terminated path.
    let fd = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) };
    let a = answer(fd.into());
    if fd >= 0 {
        // SAFETY: fd was just opened here.
        unsafe { libc::close(fd) };
    }
    a
}

fn inside<T, F>(cfg: ProcessConfig, attempt: F) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: FnOnce() -> T,
{
    let iso = ProcessIsolation::new(cfg).unwrap_or_else(|e| panic!("ProcessIsolation::new: {e}"));
    let r = iso.run_closure(attempt).expect("run_closure");
    match r.result {
        Ok(v) => v,
        Err(e) => panic!("the attempt did not report back: {e:?}; {:?}", r.outcome),
    }
}

/// A host directory under /var/tmp (the context has a private /tmp), removed on drop.
struct HostDir(PathBuf);

impl HostDir {
    fn new(tag: &str, mode: u32) -> HostDir {
        let p = PathBuf::from(format!(
            "/var/tmp/nebula-safe-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ))
        .with_extension("");
        let p = PathBuf::from(p.to_string_lossy().replace([' ', '{', '}', ':', ','], ""));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        HostDir(p)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `/proc/<pid>/uid_map` of a live process, as the host sees it: `(inside, outside, count)`.
fn uid_map(pid: i32) -> Vec<(u32, u32, u32)> {
    std::fs::read_to_string(format!("/proc/{pid}/uid_map"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<u32> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (f[0], f[1], f[2])
        })
        .collect()
}

#[test]
fn root_inside_is_an_unprivileged_range_of_its_own() {
    let Some(_pool) = ready() else {
        return;
    };
    let iso = ProcessIsolation::new(config()).unwrap();
    let sleep = Command::new("/bin/sleep").arg("30");
    let a = iso.spawn_command(&sleep).unwrap();
    let b = iso.spawn_command(&sleep).unwrap();
    let (ma, mb) = (uid_map(a.pid()), uid_map(b.pid()));
    assert_eq!(ma.len(), 1, "{ma:?}");
    assert_eq!(mb.len(), 1, "{mb:?}");
    let ((ia, oa, ca), (ib, ob, cb)) = (ma[0], mb[0]);
    assert_eq!((ia, ca), (0, 65536), "root and 65,536 ids inside");
    assert_eq!((ib, cb), (0, 65536));
    assert_ne!(oa, 0, "root inside is not host root");
    assert!(
        oa + ca <= ob || ob + cb <= oa,
        "two live contexts have disjoint host ranges: {oa}+{ca} and {ob}+{cb}"
    );
    assert_eq!(a.host_ids().uid, oa);
    // The kernel's view of the running pid 1 agrees: its uid is the range's first id (once
    // it has made itself root of its namespace, just after the supervisor released it).
    let uid_line = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", a.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !uid_line().contains(&oa.to_string()) {
        assert!(Instant::now() < deadline, "{}", uid_line());
        std::thread::sleep(Duration::from_millis(5));
    }
    // The leases are recorded while the contexts live, and returned when they end.
    let pool = IdPool::system();
    let declared = pool.declare().unwrap();
    let held = |r: IdRange| pool.leases(&declared).unwrap().iter().any(|l| l.range == r);
    let (ra, rb) = (a.host_ids(), b.host_ids());
    assert!(held(ra) && held(rb));
    drop(a);
    assert!(!held(ra), "the lease is returned when its context ends");
    assert!(held(rb));
    drop(b);
    assert!(!held(rb));
}

/// Host pids of the live (not zombie) processes with a uid in `range`.
fn pids_in(range: IdRange) -> Vec<i32> {
    nebula_memory::isolation::process::idpool::range_holders(&range)
}

#[test]
fn a_lease_outlived_by_an_orphan_is_kept_until_the_orphan_is_gone() {
    let Some(_pool) = ready() else {
        return;
    };
    // No pid namespace and no cgroup: nothing kills the orphan when the context ends, so
    // the range may not be handed to another context yet. (With a pid namespace, the
    // default, the kernel reaps the whole namespace before pid 1's wait returns, and the
    // lease is freed at once without a scan of /proc: the test above.)
    let mut cfg = ProcessConfig::new()
        .namespaces(Namespaces::all() - Namespaces::PID)
        .cgroup(nebula_memory::isolation::process::CgroupUse::Off)
        .output(Stdio::Null, Stdio::Null)
        .wall_time(Duration::from_secs(60));
    cfg.mount_proc = false;
    // A pool of its own, with ids no other test uses: the other tests reclaim and lease
    // from the system pool meanwhile.
    let dir = HostDir::new("orphan-pool", 0o700);
    let entry = format!("nebula:3000000000:{}\n", 4 * 65536);
    std::fs::write(dir.path("subuid"), &entry).unwrap();
    std::fs::write(dir.path("subgid"), &entry).unwrap();
    let pool = IdPool::at(dir.path("subuid"), dir.path("subgid"), dir.path("leases"));
    let cfg = cfg.identity(nebula_memory::isolation::process::Identity::Pool(
        pool.clone(),
    ));
    let iso = ProcessIsolation::new(cfg).unwrap();
    let orphan = Command::new("/bin/sh")
        .arg("-c")
        .arg("/bin/sleep 60 </dev/null >/dev/null 2>&1 &");
    let running = iso.spawn_command(&orphan).unwrap();
    let range = running.host_ids();
    let out = running.wait().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        (3_000_000_000..3_000_000_000 + 4 * 65536).contains(&range.uid),
        "the range comes from the test's pool: {range:?}"
    );
    // Whatever happens below, no process of the range outlives the test.
    struct KillLeft(IdRange);
    impl Drop for KillLeft {
        fn drop(&mut self) {
            for pid in pids_in(self.0) {
                // SAFETY: kill(2) with a pid read from /proc and a valid signal.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _kill_left = KillLeft(range);
    let declared = pool.declare().unwrap();
    let recorded = || {
        pool.leases(&declared)
            .unwrap()
            .iter()
            .any(|l| l.range == range)
    };
    let orphans = pids_in(range);
    assert_eq!(orphans.len(), 1, "the orphan runs on with the range's root");
    assert!(
        recorded(),
        "the range stays recorded while the orphan lives"
    );
    assert!(
        pool.reclaim(&declared).unwrap().is_empty(),
        "not reclaimable yet"
    );
    // SAFETY: kill(2) with a pid that was just read and a valid signal.
    assert_eq!(unsafe { libc::kill(orphans[0], libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids_in(range).is_empty() {
        assert!(Instant::now() < deadline, "the orphan did not go");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Reclaimed now; a context another test started meanwhile may hold a copy of the lease
    // file (and so its lock) until it execs, so allow a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let freed = pool.reclaim(&declared).unwrap();
        if freed == vec![range] {
            break;
        }
        assert!(Instant::now() < deadline, "never reclaimed: {freed:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!recorded());
}

#[test]
fn a_host_sysctl_cannot_be_written() {
    let Some(_pool) = ready() else {
        return;
    };
    let before = std::fs::read("/proc/sys/kernel/core_pattern").unwrap();
    let write = || open_answer("/proc/sys/kernel/core_pattern", libc::O_WRONLY);
    // The file belongs to host root, which is not mapped into the context, and root inside
    // holds no capability over the host: the permission check refuses it.
    assert_eq!(inside(config(), write), Err(libc::EACCES));
    if Path::new("/proc/sysrq-trigger").exists() {
        assert_eq!(
            inside(config(), || open_answer(
                "/proc/sysrq-trigger",
                libc::O_WRONLY
            )),
            Err(libc::EACCES)
        );
    }
    // With that layer removed (host root, on request), /proc/sys is still read-only
    // (runc's readonlyPaths).
    assert_eq!(inside(config().root_maps_to(0, 0), write), Err(libc::EROFS));
    assert_eq!(
        std::fs::read("/proc/sys/kernel/core_pattern").unwrap(),
        before
    );
}

#[test]
fn a_root_only_host_file_cannot_be_read() {
    let Some(_pool) = ready() else {
        return;
    };
    let dir = HostDir::new("secret", 0o755);
    let secret = dir.path("secret");
    std::fs::write(&secret, b"host secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = secret.clone();
    assert_eq!(
        inside(config(), move || open_answer(&s, libc::O_RDONLY)),
        Err(libc::EACCES)
    );
    // /etc/shadow too (mode 0640 root:shadow on Debian; the context is in no host group).
    if Path::new("/etc/shadow").exists() {
        assert_eq!(
            inside(config(), || open_answer("/etc/shadow", libc::O_RDONLY)),
            Err(libc::EACCES)
        );
    }
    // On request (host root), the same read succeeds: the default is what refuses it.
    let s = secret.clone();
    assert!(
        inside(config().root_maps_to(0, 0), move || open_answer(
            &s,
            libc::O_RDONLY
        ))
        .is_ok()
    );
}

#[test]
fn another_live_contexts_file_in_a_shared_bind_is_out_of_reach() {
    let Some(_pool) = ready() else {
        return;
    };
    let shared = HostDir::new("shared", 0o1777);
    // A directory that exists in both tiers to mount over (`/mnt` is absent in the VM's).
    let mnt = ["/mnt", "/srv", "/opt", "/media", "/root", "/home"]
        .into_iter()
        .find(|p| Path::new(p).is_dir())
        .expect("some mount point exists");
    let cfg = || config().bind(&shared.0, mnt, true);
    // Context A creates a private file in the shared directory and stays alive.
    let iso_a = ProcessIsolation::new(cfg()).unwrap();
    let a = iso_a
        .spawn_command(&Command::new("/bin/sh").args([
            "-c",
            &format!("umask 077; echo A > {mnt}/a.tmp && mv {mnt}/a.tmp {mnt}/a; sleep 30"),
        ]))
        .unwrap();
    let host_file = shared.0.join("a");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !host_file.exists() {
        assert!(Instant::now() < deadline, "context A never wrote its file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let meta = std::fs::metadata(&host_file).unwrap();
    assert_eq!(
        meta.uid(),
        a.host_ids().uid,
        "the file belongs to A's range"
    );
    assert_eq!(meta.mode() & 0o777, 0o600);
    // Context B, alive at the same time, with its own range.
    let a_path = format!("{mnt}/a");
    let b = inside(cfg(), move || {
        [
            open_answer(&a_path, libc::O_RDONLY),
            open_answer(&a_path, libc::O_WRONLY),
            // The sticky directory: B cannot remove or replace A's file either.
            // SAFETY: a live NUL-terminated path.
            answer(unsafe { libc::unlink(cstr(&a_path).as_ptr()) }.into()),
        ]
    });
    assert_eq!(
        b,
        [Err(libc::EACCES), Err(libc::EACCES), Err(libc::EPERM)],
        "read, write, unlink of A's file from B"
    );
    assert_eq!(std::fs::read(&host_file).unwrap(), b"A\n");
    drop(a);
}

#[test]
fn another_contexts_processes_cannot_be_signalled_or_traced() {
    let Some(_pool) = ready() else {
        return;
    };
    let iso_a = ProcessIsolation::new(config()).unwrap();
    let a = iso_a
        .spawn_command(&Command::new("/bin/sleep").arg("30"))
        .unwrap();
    let target = a.pid();
    let attempt = move || -> [Answer; 3] {
        // SAFETY: integer arguments only; the ptrace request attaches or fails.
        unsafe {
            [
                answer(libc::kill(target, 0).into()),
                answer(libc::kill(target, libc::SIGKILL).into()),
                answer(libc::ptrace(libc::PTRACE_ATTACH, target, 0, 0)),
            ]
        }
    };
    // Default: A's pid does not exist in B's pid namespace (ptrace is refused by the default
    // seccomp profile before the kernel looks the pid up).
    assert_eq!(
        inside(config(), attempt),
        [Err(libc::ESRCH), Err(libc::ESRCH), Err(libc::EPERM)]
    );
    assert_eq!(
        inside(config().seccomp(Profile::None), attempt),
        [Err(libc::ESRCH); 3]
    );
    // Sharing the host's pid namespace, with seccomp off (so only the identity answers):
    // another uid, and no capability over A's user namespace.
    let shared_pids = config()
        .namespaces(Namespaces::all() - Namespaces::PID)
        .seccomp(Profile::None);
    assert_eq!(
        inside(shared_pids, attempt),
        [Err(libc::EPERM), Err(libc::EPERM), Err(libc::EPERM)]
    );
    // SAFETY: signal 0 only checks that A still exists.
    assert_eq!(unsafe { libc::kill(target, 0) }, 0, "A survived");
    drop(a);
}

#[test]
fn a_setuid_binary_gives_a_user_inside_nothing() {
    let Some(_pool) = ready() else {
        return;
    };
    let dir = HostDir::new("suid", 0o755);
    // Named `id`: in the VM tier /usr/bin/id is busybox, which picks its applet by name.
    let id = dir.path("id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(std::fs::metadata(&id).unwrap().mode() & 0o4000, 0o4000);
    let iso = ProcessIsolation::new(config().user(1000, 1000)).unwrap();
    let out = iso.run_command(&Command::new(&id)).unwrap();
    let text = out.stdout_text();
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("uid=1000"), "{text}");
    assert!(
        !text.contains("euid="),
        "the setuid bit raised nothing: {text}"
    );
    // And the user inside really is 1000, mapped to its range's id 1000 outside.
    let iso = ProcessIsolation::new(config().user(1000, 1000)).unwrap();
    let out = iso
        .run_command(&Command::new("/bin/sh").args(["-c", "id -u; id -g; cat /proc/self/uid_map"]))
        .unwrap();
    let t = out.stdout_text();
    let l: Vec<&str> = t.lines().collect();
    assert_eq!(&l[..2], ["1000", "1000"], "{t}");
    let map: Vec<u32> = l[2]
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!((map[0], map[2]), (0, 65536), "{t}");
    assert_ne!(map[1], 0, "{t}");
}

#[test]
fn masked_paths_read_as_empty() {
    let Some(_pool) = ready() else {
        return;
    };
    // What the host has (a masked path that this kernel lacks is skipped, as runc does).
    let present: Vec<&str> = DEFAULT_MASKED_PATHS
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    assert!(
        present.len() >= 3,
        "too few masked paths exist on this host for the test to mean something: {present:?}"
    );
    let host_has_content = present.iter().any(|p| {
        let p = Path::new(p);
        if p.is_dir() {
            std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some())
        } else {
            std::fs::read(p).is_ok_and(|b| !b.is_empty())
        }
    });
    assert!(
        host_has_content,
        "none of {present:?} has content on the host"
    );
    let paths: Vec<String> = present.iter().map(|s| s.to_string()).collect();
    let seen: Vec<(String, Result<usize, i32>)> = inside(config(), move || {
        paths
            .into_iter()
            .map(|p| {
                let r = if Path::new(&p).is_dir() {
                    std::fs::read_dir(&p).map(|d| d.count())
                } else {
                    std::fs::read(&p).map(|b| b.len())
                };
                (p, r.map_err(|e| e.raw_os_error().unwrap_or(0)))
            })
            .collect()
    });
    for (p, r) in &seen {
        assert_eq!(*r, Ok(0), "{p} inside: {r:?} (entries or bytes)");
    }
}

#[test]
fn the_cli_default_shows_a_range_and_refuses_both_accesses() {
    let Some(_pool) = ready() else {
        return;
    };
    let dir = HostDir::new("cli", 0o755);
    let secret = dir.path("secret");
    std::fs::write(&secret, b"host secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let script = format!(
        "cat /proc/self/uid_map; echo x >> /proc/sys/kernel/core_pattern; echo rc=$?; \
         echo x > /proc/sys/kernel/core_pattern; echo rc=$?; cat {secret}; echo rc=$?"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nebula-ctl"))
        .args(["run", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first: Vec<u64> = stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(first.len(), 3, "{stdout}");
    assert_eq!(first[0], 0);
    assert_ne!(first[1], 0, "a non-zero host range: {stdout}");
    assert_eq!(first[2], 65536);
    assert_eq!(stdout.matches("rc=").count(), 3, "{stdout}");
    assert!(!stdout.contains("rc=0"), "every access refused: {stdout}");
    // Appending (no O_TRUNC) reaches the permission check: the identity refuses it.
    // Truncating is refused earlier by the read-only /proc/sys mount.
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() >= 3
            && lines[0].ends_with("core_pattern: Permission denied")
            && lines[1].ends_with("core_pattern: Read-only file system")
            // GNU cat prints `secret: ...`, busybox `'.../secret': ...`.
            && lines[2].contains("secret")
            && lines[2].ends_with("Permission denied"),
        "{stderr}"
    );
    assert!(!stdout.contains("host secret"));
}

#[test]
fn a_lease_left_by_a_killed_supervisor_is_reclaimed_by_the_next_command() {
    if !can_run() {
        return;
    }
    let _alone = SYSTEM_POOL.write().unwrap_or_else(|e| e.into_inner());
    let ctl = env!("CARGO_BIN_EXE_nebula-ctl");
    let mut sup = std::process::Command::new(ctl)
        .args(["run", "--", "sleep", "60"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pool = IdPool::system();
    let holder = format!("holder={} ", sup.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    let range = loop {
        if let Ok(Some(d)) = pool.declared()
            && let Some(l) = pool
                .leases(&d)
                .unwrap()
                .into_iter()
                .find(|l| l.holder.starts_with(&holder))
        {
            break l.range;
        }
        assert!(
            Instant::now() < deadline,
            "the supervisor never leased a range"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Wait until the context runs with its ids, then kill the supervisor outright.
    while !nebula_memory::isolation::process::idpool::range_in_use(&range) {
        assert!(Instant::now() < deadline, "the context never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    sup.kill().unwrap();
    sup.wait().unwrap();
    // The context dies with its supervisor (PR_SET_PDEATHSIG)...
    let deadline = Instant::now() + Duration::from_secs(20);
    while nebula_memory::isolation::process::idpool::range_in_use(&range) {
        assert!(
            Instant::now() < deadline,
            "the context outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...but its lease is still recorded: nobody released it.
    let d = pool.declared().unwrap().unwrap();
    let left = pool.leases(&d).unwrap();
    let l = left
        .iter()
        .find(|l| l.range == range)
        .expect("the lease is left behind");
    assert!(!l.locked, "no live supervisor holds it");
    // The next nebula-ctl command reclaims it.
    let out = std::process::Command::new(ctl)
        .arg("list")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !pool.leases(&d).unwrap().iter().any(|l| l.range == range),
        "nebula-ctl list returned the range to the pool"
    );
}

#[test]
fn host_root_only_on_request_and_with_a_warning() {
    let Some(_pool) = ready() else {
        return;
    };
    let ctl = env!("CARGO_BIN_EXE_nebula-ctl");
    let out = std::process::Command::new(ctl)
        .args(["run", "--uid", "0", "--", "cat", "/proc/self/uid_map"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let map: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(map, ["0", "0", "1"], "--uid 0 maps root to host root");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("root of the host"), "{stderr}");
    // Any other explicit id prints nothing.
    let out = std::process::Command::new(ctl)
        .args(["run", "--uid", "4242", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}
