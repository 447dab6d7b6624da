//! A user who is not root and has a range in `/etc/subuid` and `/etc/subgid`: `nebula-ctl`
//! maps root inside to the user and ids 1..=count to the user's range with `newuidmap` and
//! `newgidmap`, as rootless podman does.
//!
//! Its own test binary: it adds a `nobody` entry to the system's subordinate-id files for the
//! test's length (under nebula's pool lock, and removed again by a guard), which would change
//! what the other rootless tests see if they ran at the same time. Runs as root on the host
//! and in the VM tier; needs shadow-utils' setuid helpers (Debian package `uidmap`).

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nebula_memory::isolation::process::idpool::{self, IdPool, parse_subid};

const NOBODY: u32 = 65534;

/// Holds nebula's pool lock while the subordinate-id files are edited.
fn with_pool_lock<T>(f: impl FnOnce() -> T) -> T {
    let pool = IdPool::system();
    // Declared first, so that the pool never needs to add its own entry meanwhile.
    pool.declare().expect("nebula's pool");
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(pool.lease_dir().join("pool.lock"))
        .unwrap();
    rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive).unwrap();
    f()
}

/// `nobody:<start>:65536` in both files while alive.
struct SubidEntry {
    line: String,
}

impl SubidEntry {
    fn add() -> SubidEntry {
        with_pool_lock(|| {
            let text = |f: &str| std::fs::read_to_string(f).unwrap_or_default();
            let all: Vec<_> = parse_subid(&text("/etc/subuid"))
                .into_iter()
                .chain(parse_subid(&text("/etc/subgid")))
                .collect();
            let start =
                idpool::free_start(&all, 0x4000_0000, 65536).expect("room for a test range");
            let line = format!("nobody:{start}:65536\n");
            for f in ["/etc/subuid", "/etc/subgid"] {
                let mut fh = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(f)
                    .unwrap();
                fh.write_all(line.as_bytes()).unwrap();
            }
            SubidEntry { line }
        })
    }

    fn start(&self) -> u32 {
        self.line.split(':').nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for SubidEntry {
    fn drop(&mut self) {
        with_pool_lock(|| {
            for f in ["/etc/subuid", "/etc/subgid"] {
                if let Ok(t) = std::fs::read_to_string(f) {
                    let _ = std::fs::write(f, t.replacen(&self.line, "", 1));
                }
            }
        });
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nobody_ctl(bin: &Path, args: &[&str]) -> std::process::Output {
    // std drops the supplementary groups itself when root changes the uid.
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env(
            "NEBULA_RUN_DIR",
            format!("/tmp/nebula-subuid-test-{}", std::process::id()),
        )
        .uid(NOBODY)
        .gid(NOBODY)
        .current_dir("/")
        .output()
        .unwrap()
}

#[test]
fn a_user_with_a_subuid_range_gets_it_mapped() {
    let tools = ["/usr/bin/newuidmap", "/usr/bin/newgidmap"];
    if !common::require(common::is_root(), "needs root (to run the CLI as nobody)")
        || !common::require(
            nebula_memory::features().user_namespaces.available,
            "needs user namespaces",
        )
        || !common::require(
            tools
                .iter()
                .all(|t| std::fs::metadata(t).is_ok_and(|m| m.permissions().mode() & 0o4000 != 0)),
            "needs setuid newuidmap and newgidmap (Debian package uidmap)",
        )
    {
        return;
    }
    let dir = TempDir(PathBuf::from(format!(
        "/var/tmp/nebula-subuid-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.0.join("nebula-ctl");
    std::fs::copy(env!("CARGO_BIN_EXE_nebula-ctl"), &bin).unwrap();
    let _reg = TempDir(PathBuf::from(format!(
        "/tmp/nebula-subuid-test-{}",
        std::process::id()
    )));

    // Without an entry: the user's own id, one id.
    let out = nobody_ctl(&bin, &["run", "--", "cat", "/proc/self/uid_map"]);
    assert!(out.status.success(), "{out:?}");
    let map = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(map, "0 65534 1");

    let entry = SubidEntry::add();
    let start = entry.start();
    let out = nobody_ctl(
        &bin,
        &[
            "run",
            "--user",
            "1000:1000",
            "--",
            "sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let want_sub = format!("1 {start} 65536");
    assert_eq!(
        lines,
        [
            "0 65534 1",
            want_sub.as_str(),
            "0 65534 1",
            want_sub.as_str(),
            "1000",
            "1000"
        ],
        "{text}"
    );
    // An id past the user's range is refused before anything runs.
    let out = nobody_ctl(&bin, &["run", "--user", "70000", "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not mapped") && err.contains("--user"),
        "{err}"
    );
    drop(entry);
}
