//! nebula-runc, the OCI runtime command line, driven as containerd's shim drives runc: a
//! busybox bundle built here, `run`, the create/start/state/kill/delete lifecycle, and the
//! errors that name a field. Root only (mount and pid namespaces); the cgroup limits and
//! the device program run in the VM tier.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const RUNC: &str = env!("CARGO_BIN_EXE_nebula-runc");

fn ready() -> bool {
    common::require(
        common::is_root(),
        "needs root (an OCI runtime creates namespaces)",
    ) && common::require(
        Path::new("/bin/busybox").is_file(),
        "needs a static /bin/busybox for the bundle's root filesystem",
    )
}

/// A bundle: a root filesystem with busybox and a config.json running `args`.
struct Bundle {
    dir: PathBuf,
    root: PathBuf,
}

impl Bundle {
    fn new(name: &str, args: &[&str], edit: impl FnOnce(&mut serde_json::Value)) -> Bundle {
        let dir = std::env::temp_dir().join(format!("nebula-oci-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rootfs = dir.join("rootfs");
        for d in ["bin", "proc", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for app in ["sh", "echo", "cat", "sleep", "id", "ls", "true", "hostname"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(app)).unwrap();
        }
        let mut config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin"],
                "cwd": "/",
                "capabilities": {
                    "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
                },
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "nebula-oci",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
            ],
            "linux": {
                "namespaces": [
                    {"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"},
                    {"type": "network"}
                ],
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"]
            }
        });
        edit(&mut config);
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        Bundle { dir, root: rootfs }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A state root of this test's own.
fn state_root(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("nebula-oci-state-{name}-{}", std::process::id()))
}

/// Runs `nebula-runc --root ROOT ARGS`, its output to files (a container inherits them: a
/// pipe would stay open for its whole life).
fn runc(root: &Path, args: &[&str]) -> Output {
    common::output_via_files(
        Command::new(RUNC).arg("--root").arg(root).args(args),
        &tempfile(root, "out"),
        &tempfile(root, "err"),
    )
}

fn tempfile(root: &Path, what: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root.with_extension("io");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{what}-{n}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn state(root: &Path, id: &str) -> serde_json::Value {
    let o = runc(root, &["state", id]);
    assert!(o.status.success(), "state: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn wait_status(root: &Path, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = state(root, id);
        if s["status"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never became {want}: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_prints_and_passes_the_exit_code_on() {
    if !ready() {
        return;
    }
    let root = state_root("run");
    let b = Bundle::new("run", &["sh", "-c", "echo hi; hostname; exit 7"], |_| {});
    let o = runc(&root, &["run", "--bundle", b.dir.to_str().unwrap(), "run1"]);
    assert_eq!(o.status.code(), Some(7), "stderr: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "hi\nnebula-oci\n");
    assert!(!root.join("run1").exists(), "run deletes the container");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_lifecycle_is_the_runtime_specs() {
    if !ready() {
        return;
    }
    let root = state_root("life");
    let b = Bundle::new(
        "life",
        &[
            "sh",
            "-c",
            "trap 'echo term; exit 3' TERM; echo up > /tmp/x; while :; do sleep 0.05; done",
        ],
        |_| {},
    );
    let pid_file = b.dir.join("pid");
    let bundle = b.dir.to_str().unwrap();
    let o = runc(
        &root,
        &[
            "create",
            "--bundle",
            bundle,
            "--pid-file",
            pid_file.to_str().unwrap(),
            "c1",
        ],
    );
    assert!(o.status.success(), "create: {}", text(&o.stderr));
    let s = state(&root, "c1");
    assert_eq!(s["status"], "created");
    assert_eq!(s["id"], "c1");
    assert_eq!(s["bundle"], b.dir.canonicalize().unwrap().to_str().unwrap());
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(s["pid"], pid);
    // Created, not started: its namespaces exist, the program does not run yet.
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        std::fs::read_link("/proc/self/ns/pid").unwrap()
    );
    let o = runc(&root, &["create", "--bundle", bundle, "c1"]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("exists"),
        "{}",
        text(&o.stderr)
    );
    let o = runc(&root, &["delete", "c1"]);
    assert!(
        !o.status.success(),
        "a created container is not deleted without --force"
    );

    let o = runc(&root, &["start", "c1"]);
    assert!(o.status.success(), "start: {}", text(&o.stderr));
    wait_status(&root, "c1", "running");
    let o = runc(&root, &["start", "c1"]);
    assert!(
        !o.status.success(),
        "a running container cannot be started again"
    );
    let o = runc(&root, &["ps", "--format", "json", "c1"]);
    let pids: Vec<i64> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(pids.contains(&pid), "{pids:?}");

    // TERM reaches the workload through nebula's pid 1, which forwards it.
    let o = runc(&root, &["kill", "c1", "TERM"]);
    assert!(o.status.success(), "kill: {}", text(&o.stderr));
    wait_status(&root, "c1", "stopped");
    let o = runc(&root, &["kill", "c1", "KILL"]);
    assert!(
        !o.status.success(),
        "a stopped container has nothing to signal"
    );
    let o = runc(&root, &["delete", "c1"]);
    assert!(o.status.success(), "delete: {}", text(&o.stderr));
    assert!(!root.join("c1").exists());
    let o = runc(&root, &["state", "c1"]);
    assert!(
        text(&o.stderr).contains("does not exist"),
        "{}",
        text(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_running_container_is_force_deleted_with_everything_it_had() {
    if !ready() {
        return;
    }
    let root = state_root("force");
    let b = Bundle::new("force", &["sleep", "1000"], |_| {});
    let bundle = b.dir.to_str().unwrap();
    assert!(
        runc(&root, &["create", "--bundle", bundle, "f1"])
            .status
            .success()
    );
    assert!(runc(&root, &["start", "f1"]).status.success());
    let pid = state(&root, "f1")["pid"].as_i64().unwrap();
    let o = runc(&root, &["delete", "f1"]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("--force"),
        "{}",
        text(&o.stderr)
    );
    let o = runc(&root, &["delete", "--force", "f1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The pid is gone (or a zombie waiting for its reaper: this test process is not it).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z"), "{stat}");
    assert!(!root.join("f1").exists());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn fields_nebula_does_not_know_are_errors_that_name_them() {
    if !ready() {
        return;
    }
    let root = state_root("fields");
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 4] = [
        ("linux.intelRdt", |c| {
            c["linux"]["intelRdt"] = serde_json::json!({"closID": "x"})
        }),
        ("process.bogus", |c| {
            c["process"]["bogus"] = serde_json::json!(1)
        }),
        ("linux.seccomp.listenerPath", |c| {
            c["linux"]["seccomp"] =
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"});
        }),
        ("annotations.org.nebula.nope", |c| {
            c["annotations"] = serde_json::json!({"org.nebula.nope": "1"});
        }),
    ];
    for (field, edit) in cases {
        let b = Bundle::new("fields", &["true"], edit);
        let o = runc(
            &root,
            &["create", "--bundle", b.dir.to_str().unwrap(), "x1"],
        );
        let err = text(&o.stderr);
        assert!(!o.status.success() && err.contains(field), "{field}: {err}");
        assert!(
            !root.join("x1").exists(),
            "nothing is left after a refused create"
        );
    }
    let b = Bundle::new("fields", &["true"], |_| {});
    let o = runc(
        &root,
        &["create", "--bundle", b.dir.to_str().unwrap(), "../x"],
    );
    assert!(
        text(&o.stderr).contains("invalid container id"),
        "{}",
        text(&o.stderr)
    );
    let o = runc(&root, &["--systemd-cgroup", "state", "x"]);
    assert!(
        text(&o.stderr).contains("SystemdCgroup = false"),
        "{}",
        text(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_bundles_seccomp_profile_is_enforced() {
    if !ready() {
        return;
    }
    let root = state_root("seccomp");
    // Everything allowed but mkdir(2)/mkdirat(2), which fail with EPERM (errno 1).
    let b = Bundle::new(
        "seccomp",
        &[
            "sh",
            "-c",
            "mkdir /tmp/d 2>/dev/null && echo made || echo refused",
        ],
        |c| {
            c["linux"]["seccomp"] = serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
            });
        },
    );
    let o = runc(&root, &["run", "--bundle", b.dir.to_str().unwrap(), "s1"]);
    assert_eq!(text(&o.stdout), "refused\n", "stderr: {}", text(&o.stderr));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_cgroup_limit_is_enforced_or_refused_with_the_reason() {
    if !ready() {
        return;
    }
    let root = state_root("cgroup");
    let b = Bundle::new("cgroup", &["cat", "/sys/fs/cgroup/memory.max"], |c| {
        c["linux"]["resources"] =
            serde_json::json!({"memory": {"limit": 33554432}, "pids": {"limit": 32}});
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "cgroup"}));
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!(
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "nodev", "noexec"]}
        ));
    });
    std::fs::create_dir_all(b.root.join("sys/fs/cgroup")).unwrap();
    let o = runc(&root, &["run", "--bundle", b.dir.to_str().unwrap(), "m1"]);
    if !nebula_memory::features().cgroup_v2.available {
        assert!(!o.status.success());
        assert!(text(&o.stderr).contains("cgroup v2"), "{}", text(&o.stderr));
        common::skip("needs cgroup v2 to see memory.max enforced");
        return;
    }
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "33554432\n");
    let leftover: Vec<_> = std::fs::read_dir("/sys/fs/cgroup/nebula")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().starts_with("oci-m1"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftover.is_empty(),
        "the container's cgroup is removed: {leftover:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn pause_and_resume_freeze_the_cgroup() {
    if !ready() {
        return;
    }
    let root = state_root("pause");
    let b = Bundle::new("pause", &["sleep", "1000"], |_| {});
    let bundle = b.dir.to_str().unwrap();
    assert!(
        runc(&root, &["create", "--bundle", bundle, "p1"])
            .status
            .success()
    );
    assert!(runc(&root, &["start", "p1"]).status.success());
    let o = runc(&root, &["pause", "p1"]);
    if !nebula_memory::features().cgroup_v2.available {
        assert!(!o.status.success());
        assert!(
            text(&o.stderr).contains("cgroup.freeze"),
            "{}",
            text(&o.stderr)
        );
        assert!(runc(&root, &["delete", "--force", "p1"]).status.success());
        common::skip("needs cgroup v2 to freeze a container");
        return;
    }
    assert!(o.status.success(), "pause: {}", text(&o.stderr));
    let s = state(&root, "p1");
    assert_eq!(s["status"], "paused");
    let pid = s["pid"].as_i64().unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = format!("/sys/fs/cgroup{}", cgroup.trim().trim_start_matches("0::"));
    let events = std::fs::read_to_string(format!("{path}/cgroup.events")).unwrap();
    assert!(
        events.contains("frozen 1"),
        "the kernel says frozen: {events}"
    );
    assert!(
        !runc(&root, &["pause", "p1"]).status.success(),
        "paused twice"
    );
    let o = runc(&root, &["resume", "p1"]);
    assert!(o.status.success(), "resume: {}", text(&o.stderr));
    assert_eq!(state(&root, "p1")["status"], "running");
    assert!(runc(&root, &["delete", "--force", "p1"]).status.success());
    let _ = std::fs::remove_dir_all(&root);
}
