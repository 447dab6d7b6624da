//! `nebula-ctl` run by a user who is not root: the per-user registry, the workload's id
//! map, who sees and kills which context, and the hints of refusals.
//!
//! The test runs as root and runs the CLI as `nobody` (uid 65534) and as another unused uid
//! (65533), with the binary copied to a directory they can read (the build directory may be
//! private to root). Host tier and VM tier alike; without root or user namespaces each test
//! prints `skipped: <reason>`. Every process and directory a test creates is removed by a
//! guard, also when an assertion fails.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nebula_memory::admin::registry::{EntryLimits, Registry, user_fallback_dir};

const BIN: &str = env!("CARGO_BIN_EXE_nebula-ctl");
const NOBODY: u32 = 65534;
/// Another unprivileged uid, with no processes of its own.
const OTHER: u32 = 65533;
const PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

/// Tests that use the fallback registries `/tmp/nebula-<uid>` take turns.
static FALLBACK: Mutex<()> = Mutex::new(());

/// A directory removed (with its contents) when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `/tmp/nebula-<uid>`: removed when dropped unless it existed before.
struct FallbackDir {
    path: PathBuf,
    existed: bool,
}

impl FallbackDir {
    fn new(uid: u32) -> FallbackDir {
        let path = user_fallback_dir(uid);
        let existed = std::fs::symlink_metadata(&path).is_ok();
        FallbackDir { path, existed }
    }
}

impl Drop for FallbackDir {
    fn drop(&mut self) {
        if !self.existed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child killed and reaped when dropped.
struct Live(Option<Child>);

impl Live {
    fn pid(&self) -> u32 {
        self.0.as_ref().expect("alive").id()
    }

    /// Waits (up to 20 s) for it to exit, then returns its output.
    fn wait(mut self) -> Output {
        let mut c = self.0.take().expect("alive");
        let t = Instant::now();
        while c.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                panic!("the supervisor did not exit within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c.wait_with_output().unwrap()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The CLI where every uid can read and execute it.
struct Setup {
    dir: TempDir,
    bin: PathBuf,
}

fn setup(tag: &str) -> Option<Setup> {
    if !common::require(common::is_root(), "needs root to run the CLI as uid 65534") {
        return None;
    }
    let userns = &nebula_memory::features().user_namespaces;
    if !common::require(
        userns.available,
        &format!(
            "needs user namespaces: {}",
            userns.reason.as_deref().unwrap_or("unavailable")
        ),
    ) {
        return None;
    }
    let base = if Path::new("/var/tmp").is_dir() {
        PathBuf::from("/var/tmp")
    } else {
        std::env::temp_dir()
    };
    let dir = TempDir(base.join(format!("nebula-rootless-{tag}-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir(&dir.0).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.0.join("nebula-ctl");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(Setup { dir, bin })
}

/// The CLI as `uid` (gid the same, no supplementary groups: std drops them when root sets
/// a uid), with an empty environment but `PATH` and `env`.
fn as_user(s: &Setup, uid: u32, args: &[&str], env: &[(&str, &Path)]) -> Command {
    let mut c = Command::new(&s.bin);
    c.args(args)
        .env_clear()
        .env("PATH", PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .uid(uid)
        .gid(uid);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// The CLI as root, with an empty environment but `PATH` (so root's own registry and every
/// user's are read).
fn as_root(s: &Setup, args: &[&str]) -> Output {
    out(Command::new(&s.bin)
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .stdin(Stdio::null()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts a zero exit, showing everything otherwise.
#[track_caller]
fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// Runs it. `ETXTBSY` is retried: the copy's write descriptor lives on for a moment in any
/// child that another test thread forked while the copy was being written.
fn out(c: &mut Command) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match c.output() {
            Err(e)
                if e.raw_os_error() == Some(libc::ETXTBSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.expect("run nebula-ctl"),
        }
    }
}

fn listed(o: &Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "list failed: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)))
}

fn find<'a>(all: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    all.iter().find(|e| e["name"] == name)
}

/// Waits until `list --json` (run by `list`) shows `name`.
fn wait_listed(name: &str, mut list: impl FnMut() -> Output) -> serde_json::Value {
    let t = Instant::now();
    loop {
        if let Some(e) = find(&listed(&list()), name) {
            return e.clone();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{name} never listed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn owner_and_mode(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.mode() & 0o7777)
}

#[test]
fn nobody_runs_id_without_xdg_runtime_dir() {
    let Some(s) = setup("id") else { return };
    let _turn = FALLBACK.lock().unwrap_or_else(|e| e.into_inner());
    let reg = FallbackDir::new(NOBODY);
    let o = out(&mut as_user(&s, NOBODY, &["run", "--", "id"], &[]));
    assert_ok(&o);
    assert!(text(&o.stdout).contains("uid=0"), "{}", text(&o.stdout));
    let o = out(&mut as_user(
        &s,
        NOBODY,
        &[
            "run",
            "--",
            "cat",
            "/proc/self/uid_map",
            "/proc/self/setgroups",
        ],
        &[],
    ));
    assert_ok(&o);
    let t = text(&o.stdout);
    let map: Vec<&str> = t.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "65534", "1"], "{t}");
    assert!(t.contains("deny"), "setgroups is not denied: {t}");
    // The registry was made for nobody alone.
    assert_eq!(owner_and_mode(&reg.path), (NOBODY, 0o700));
}

#[test]
fn nobody_runs_with_its_own_xdg_runtime_dir() {
    let Some(s) = setup("xdg") else { return };
    let xdg = s.dir.0.join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&xdg, Some(NOBODY), Some(NOBODY)).unwrap();
    let env = [("XDG_RUNTIME_DIR", xdg.as_path())];
    let o = out(&mut as_user(&s, NOBODY, &["run", "--", "id"], &env));
    assert_ok(&o);
    assert!(text(&o.stdout).contains("uid=0"), "{}", text(&o.stdout));
    assert_eq!(owner_and_mode(&xdg.join("nebula")), (NOBODY, 0o700));
    // A live context is listed from the same registry.
    let name = format!("rootless-xdg-{}", std::process::id());
    let sup = Live(Some(
        as_user(
            &s,
            NOBODY,
            &["run", "--name", &name, "--", "sleep", "30"],
            &env,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    ));
    let e = wait_listed(&name, || {
        out(&mut as_user(&s, NOBODY, &["list", "--json"], &env))
    });
    assert_eq!(e["owner"], NOBODY, "{e}");
    assert_eq!(e["supervisor"], sup.pid(), "{e}");
    let o = out(&mut as_user(&s, NOBODY, &["kill", &name], &env));
    assert_ok(&o);
    assert_eq!(sup.wait().status.code(), Some(137));
}

#[test]
fn users_see_and_kill_only_their_own_contexts_root_sees_all() {
    let Some(s) = setup("list") else { return };
    let _turn = FALLBACK.lock().unwrap_or_else(|e| e.into_inner());
    let _nobody_reg = FallbackDir::new(NOBODY);
    let _other_reg = FallbackDir::new(OTHER);
    let name = format!("rootless-sleep-{}", std::process::id());
    let spawn = || {
        Live(Some(
            as_user(
                &s,
                NOBODY,
                &["run", "--name", &name, "--", "sleep", "30"],
                &[],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        ))
    };
    let sup = spawn();
    let mine = || out(&mut as_user(&s, NOBODY, &["list", "--json"], &[]));
    let e = wait_listed(&name, mine);
    assert_eq!(e["owner"], NOBODY, "{e}");
    assert_eq!(e["supervisor"], sup.pid(), "{e}");
    let id = e["id"].as_str().unwrap().to_owned();
    // The table shows it too, with its owner.
    let o = out(&mut as_user(&s, NOBODY, &["list"], &[]));
    assert!(text(&o.stdout).contains(&id), "{}", text(&o.stdout));

    // Root sees it, owned by nobody, in nobody's registry.
    let all = listed(&as_root(&s, &["list", "--json"]));
    let r = find(&all, &name).unwrap_or_else(|| panic!("root does not list {name}: {all:?}"));
    assert_eq!(r["owner"], NOBODY, "{r}");
    assert_eq!(r["id"], id.as_str());
    assert_eq!(
        r["registry"].as_str(),
        Some(user_fallback_dir(NOBODY).to_str().unwrap())
    );

    // Another user neither sees nor kills it.
    let theirs = listed(&out(&mut as_user(&s, OTHER, &["list", "--json"], &[])));
    assert!(find(&theirs, &name).is_none(), "{theirs:?}");
    let o = out(&mut as_user(&s, OTHER, &["kill", &id], &[]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no running context you can see"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        find(&listed(&mine()), &name).is_some(),
        "killed by another user"
    );

    // Its owner kills it.
    let o = out(&mut as_user(&s, NOBODY, &["kill", &id], &[]));
    assert_ok(&o);
    let done = sup.wait();
    assert_eq!(done.status.code(), Some(137));
    assert!(
        text(&done.stderr).contains("killed: by nebula-ctl kill"),
        "{}",
        text(&done.stderr)
    );

    // Root kills a user's context too.
    let sup = spawn();
    let id = wait_listed(&name, mine)["id"].as_str().unwrap().to_owned();
    let o = as_root(&s, &["kill", &id]);
    assert_ok(&o);
    assert_eq!(sup.wait().status.code(), Some(137));
    assert!(find(&listed(&mine()), &name).is_none());
}

#[test]
fn a_user_cannot_kill_roots_context() {
    let Some(s) = setup("perm") else { return };
    // A registry both can read, holding an entry of root's (a sleep supervised by this test).
    let shared = s.dir.0.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sleep = Live(Some(Command::new("sleep").arg("30").spawn().unwrap()));
    let reg = Registry::at(&shared);
    let r = reg
        .register(
            Some("roots".into()),
            sleep.pid() as i32,
            None,
            None,
            EntryLimits::default(),
            vec!["sleep".into(), "30".into()],
        )
        .unwrap();
    let file = shared.join(format!("{}.json", r.entry().id));
    assert_eq!(
        owner_and_mode(&file),
        (0, 0o600),
        "entries are root's alone"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let env = [("NEBULA_RUN_DIR", shared.as_path())];
    let all = listed(&out(&mut as_user(&s, NOBODY, &["list", "--json"], &env)));
    assert_eq!(
        find(&all, "roots").map(|e| e["owner"].clone()),
        Some(0.into())
    );
    let o = out(&mut as_user(&s, NOBODY, &["kill", "roots"], &env));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("belongs to uid 0") && err.contains("uid 65534 may not kill it"),
        "{err}"
    );
    assert!(!err.contains("::"), "{err}");
    assert!(r.entry().is_alive(), "root's context was killed by nobody");
    drop(r);
}

#[test]
fn an_unsafe_fallback_registry_is_refused() {
    let Some(s) = setup("unsafe") else { return };
    let _turn = FALLBACK.lock().unwrap_or_else(|e| e.into_inner());
    let reg = FallbackDir::new(OTHER);
    if !common::require(!reg.existed, "/tmp/nebula-65533 exists already") {
        return;
    }
    // Planted by someone else (here root), and then open to everyone.
    std::fs::create_dir(&reg.path).unwrap();
    std::fs::set_permissions(&reg.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = out(&mut as_user(&s, OTHER, &["run", "--", "true"], &[]));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        err.contains("not safe") && err.contains("owned by uid 0"),
        "{err}"
    );
    assert!(err.contains("Hint:") && !err.contains("::"), "{err}");
    std::os::unix::fs::chown(&reg.path, Some(OTHER), Some(OTHER)).unwrap();
    let o = out(&mut as_user(&s, OTHER, &["list"], &[]));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("lets the group or others in"), "{err}");
    // A symbolic link is never followed.
    std::fs::remove_dir(&reg.path).unwrap();
    std::os::unix::fs::symlink(&s.dir.0, &reg.path).unwrap();
    let o = out(&mut as_user(&s, OTHER, &["run", "--", "true"], &[]));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    std::fs::remove_file(&reg.path).unwrap();
}

/// The `Hint:` lines of a refusal: each must name a flag, and nothing may name a Rust path.
fn assert_cli_hint(err: &str, flag: &str) {
    assert!(!err.contains("::"), "a refusal names a Rust path: {err}");
    let hints: Vec<&str> = err.lines().filter(|l| l.contains("Hint:")).collect();
    assert!(
        hints.iter().any(|h| h.contains(flag)),
        "no hint names {flag}: {err}"
    );
}

#[test]
fn refusals_give_cli_hints() {
    let Some(s) = setup("hints") else { return };
    let f = nebula_memory::features();
    let run_dir = s.dir.0.join("run");
    // As root: each cgroup limit without cgroup v2 (the host tier).
    // (With cgroup v2, as in the VM tier, root's limits are not refused: nothing to check.)
    if !f.cgroup_v2.available {
        for (flag, value) in [
            ("--memory", "64M"),
            ("--memory-high", "48M"),
            ("--swap", "0"),
            ("--cpu", "0.5"),
            ("--pids", "8"),
        ] {
            let o = out(Command::new(&s.bin)
                .args(["run", flag, value, "--", "true"])
                .env("NEBULA_RUN_DIR", &run_dir)
                .stdin(Stdio::null()));
            let err = text(&o.stderr);
            assert_eq!(o.status.code(), Some(125), "{flag}: {err}");
            let named = if flag == "--memory" {
                "--memory-fallback rlimit-as"
            } else {
                flag
            };
            assert_cli_hint(&err, named);
        }
    }
    // As nobody: --memory is refused (no cgroup v2 here, or not delegated to nobody),
    // with the reason and the flag that falls back.
    let xdg = s.dir.0.join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&xdg, Some(NOBODY), Some(NOBODY)).unwrap();
    let env = [("XDG_RUNTIME_DIR", xdg.as_path())];
    let o = out(&mut as_user(
        &s,
        NOBODY,
        &["run", "--memory", "64M", "--", "true"],
        &env,
    ));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert_cli_hint(&err, "--memory-fallback rlimit-as");
    if f.cgroup_v2.available {
        assert!(
            err.contains("cgroup v2 is not delegated to uid 65534 at /")
                && err.contains("systemd-run --user")
                && err.contains("run as root"),
            "{err}"
        );
    }
    // The fallback the hint names works for nobody.
    let o = out(&mut as_user(
        &s,
        NOBODY,
        &[
            "run",
            "--memory",
            "64M",
            "--memory-fallback",
            "rlimit-as",
            "--",
            "true",
        ],
        &env,
    ));
    assert_ok(&o);
}
