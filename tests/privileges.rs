//! Capability drops, each in a re-executed child: the kernel's view (`/proc/thread-self/status`)
//! must match the plan, and privileged operations must fail afterwards.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use nebula_memory::privileges::{Capability, PrivilegeError, PrivilegePlan};

const NOBODY: u32 = 65534;

fn run_helper(name: &str, file: &Path) -> (ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NEBULA_HELPER", "1")
        .env("NEBULA_CAPS_FILE", file)
        .output()
        .unwrap();
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// A root-owned directory with a root-owned file in it, removed on drop (by the parent,
/// which keeps its privileges).
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("nebula-caps-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("file"), b"root's").unwrap();
        Scratch { dir }
    }
    fn file(&self) -> PathBuf {
        self.dir.join("file")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn root_here() -> bool {
    common::require(common::is_root(), "capability drops are tested as root")
}

fn helper_mode() -> Option<PathBuf> {
    std::env::var_os("NEBULA_HELPER")?;
    Some(PathBuf::from(std::env::var_os("NEBULA_CAPS_FILE")?))
}

fn status() -> String {
    std::fs::read_to_string("/proc/thread-self/status").unwrap()
}

fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("{name} missing:\n{status}"))
}

fn mask(status: &str, name: &str) -> u64 {
    u64::from_str_radix(&field(status, name), 16).unwrap()
}

fn ids(status: &str, name: &str) -> Vec<u32> {
    field(status, name)
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

fn errno_of(r: rustix::io::Result<()>) -> Option<i32> {
    r.err().map(|e| e.raw_os_error())
}

fn chown(path: &Path, uid: u32) -> Option<i32> {
    errno_of(rustix::fs::chown(
        path,
        Some(rustix::process::Uid::from_raw(uid)),
        None,
    ))
}

#[test]
fn drop_to_nobody_keeps_exactly_the_plan() {
    if !root_here() {
        return;
    }
    let s = Scratch::new("nobody");
    let (st, out) = run_helper("helper_drop_to_nobody", &s.file());
    assert!(st.success(), "{st}\n{out}");
    assert!(out.contains("helper done"), "{out}");
    // The kept CAP_CHOWN worked: the kernel changed the owner of root's file.
    assert_eq!(std::fs::metadata(s.file()).unwrap().uid(), NOBODY);
}

#[test]
#[ignore = "helper: run by drop_to_nobody_keeps_exactly_the_plan in a child process"]
fn helper_drop_to_nobody() {
    let Some(file) = helper_mode() else { return };
    // The execve below runs as nobody, who may not be able to reach the test binary where
    // cargo put it (e.g. a target directory under /root): exec a world-readable copy.
    // The copy goes next to the scratch file, which the parent test removes.
    let exe_dir = file.parent().unwrap().to_path_buf();
    let exe = exe_dir.join("caps-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let before = status();
    let plan = PrivilegePlan::drop_all()
        .keep(Capability::CAP_CHOWN)
        .keep_ambient(Capability::CAP_NET_BIND_SERVICE)
        .uid(NOBODY)
        .gid(NOBODY)
        .groups(&[])
        .build()
        .unwrap();
    plan.apply_current_thread().unwrap();
    let after = status();
    // What the kernel reports, against the plan (and against the bounding set root had:
    // a plan can only narrow it).
    let bnd_before = mask(&before, "CapBnd");
    assert_eq!(mask(&after, "CapEff"), plan.effective());
    assert_eq!(mask(&after, "CapPrm"), plan.permitted());
    assert_eq!(mask(&after, "CapInh"), plan.inheritable());
    assert_eq!(mask(&after, "CapBnd"), plan.bounding() & bnd_before);
    assert_eq!(mask(&after, "CapAmb"), plan.ambient());
    assert_eq!(mask(&after, "CapEff"), 1 << 0 | 1 << 10);
    assert_eq!(mask(&after, "CapAmb"), 1 << 10);
    assert_eq!(field(&after, "NoNewPrivs"), "1");
    assert_eq!(ids(&after, "Uid"), [NOBODY; 4]);
    assert_eq!(ids(&after, "Gid"), [NOBODY; 4]);
    assert_eq!(field(&after, "Groups"), "");
    // Privileged operations the plan did not keep fail: a new UTS namespace (checked
    // first, so that the hostname below could only ever change in a private namespace)
    // and the hostname both need CAP_SYS_ADMIN.
    assert_eq!(unshare_uts(), Some(libc::EPERM), "unshare(CLONE_NEWUTS)");
    assert_eq!(
        errno_of(rustix::system::sethostname(b"x")),
        Some(libc::EPERM),
        "sethostname without CAP_SYS_ADMIN"
    );
    // The kept one works: chown of root's file to nobody (checked by the parent too).
    assert_eq!(chown(&file, NOBODY), None, "chown with the kept CAP_CHOWN");
    // setuid back to root is gone for good.
    assert_eq!(
        errno_of(rustix::thread::set_thread_res_uid(
            rustix::process::Uid::ROOT,
            rustix::process::Uid::ROOT,
            rustix::process::Uid::ROOT
        )),
        Some(libc::EPERM)
    );
    // Across execve: ambient survives for the non-root uid, CAP_CHOWN (not ambient) does not.
    let out = Command::new(&exe)
        .args([
            "--exact",
            "helper_print_status",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NEBULA_HELPER", "1")
        .env("NEBULA_CAPS_FILE", &file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let exec = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(mask(&exec, "CapEff"), 1 << 10, "{exec}");
    assert_eq!(mask(&exec, "CapPrm"), 1 << 10, "{exec}");
    assert_eq!(mask(&exec, "CapAmb"), 1 << 10, "{exec}");
    assert_eq!(
        mask(&exec, "CapBnd"),
        (1 << 0 | 1 << 10) & bnd_before,
        "{exec}"
    );
    assert_eq!(field(&exec, "NoNewPrivs"), "1", "{exec}");
    assert_eq!(ids(&exec, "Uid"), [NOBODY; 4], "{exec}");
    println!("helper done");
}

#[test]
#[ignore = "helper: run by helper_drop_to_nobody after execve"]
fn helper_print_status() {
    if helper_mode().is_none() {
        return;
    }
    // libtest prints "test ... " first: start on a fresh line.
    println!();
    print!("{}", status());
}

#[allow(unsafe_code)]
fn unshare_uts() -> Option<i32> {
    // SAFETY: unshare(CLONE_NEWUTS) takes no pointers; it only changes this thread's UTS
    // namespace if it succeeds (which the caller expects it not to).
    let r = unsafe { libc::unshare(libc::CLONE_NEWUTS) };
    (r != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
}

#[test]
fn drop_all_as_root_leaves_no_capability() {
    if !root_here() {
        return;
    }
    let s = Scratch::new("root");
    let (st, out) = run_helper("helper_drop_all_as_root", &s.file());
    assert!(st.success(), "{st}\n{out}");
    assert!(out.contains("helper done"), "{out}");
    assert_eq!(
        std::fs::metadata(s.file()).unwrap().uid(),
        NOBODY,
        "the chown back to root was refused"
    );
}

#[test]
#[ignore = "helper: run by drop_all_as_root_leaves_no_capability in a child process"]
fn helper_drop_all_as_root() {
    let Some(file) = helper_mode() else { return };
    // Give the file away first (still privileged), so that uid 0 does not own it.
    rustix::fs::chown(&file, Some(rustix::process::Uid::from_raw(NOBODY)), None).unwrap();
    let plan = PrivilegePlan::drop_all().build().unwrap();
    plan.apply_current_thread().unwrap();
    let after = status();
    for f in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(mask(&after, f), 0, "{f}\n{after}");
    }
    assert_eq!(field(&after, "NoNewPrivs"), "1");
    assert_eq!(ids(&after, "Uid"), [0; 4], "uid unchanged");
    // Root without capabilities: chown of a file it does not own, a new UTS namespace and
    // the hostname are all refused.
    assert_eq!(chown(&file, 0), Some(libc::EPERM));
    assert_eq!(unshare_uts(), Some(libc::EPERM), "unshare(CLONE_NEWUTS)");
    assert_eq!(
        errno_of(rustix::system::sethostname(b"x")),
        Some(libc::EPERM)
    );
    println!("helper done");
}

#[test]
fn wrong_order_is_refused_by_the_kernel() {
    if !root_here() {
        return;
    }
    let s = Scratch::new("order");
    let (st, out) = run_helper("helper_wrong_order", &s.file());
    assert!(st.success(), "{st}\n{out}");
    assert!(out.contains("helper done"), "{out}");
}

#[test]
#[ignore = "helper: run by wrong_order_is_refused_by_the_kernel in a child process"]
fn helper_wrong_order() {
    if helper_mode().is_none() {
        return;
    }
    // Lower the effective set first (the wrong order): the bounding-set drop, which needs
    // an effective CAP_SETPCAP, must fail with EPERM and say so.
    caps::clear(None, caps::CapSet::Effective).unwrap();
    let plan = PrivilegePlan::drop_all().build().unwrap();
    let err = plan.apply_current_thread().unwrap_err();
    assert!(
        matches!(err, PrivilegeError::DropBounding { errno, .. } if errno == libc::EPERM),
        "{err:?}"
    );
    assert!(err.to_string().contains("CAP_SETPCAP"), "{err}");
    // The encoded form survives the pipe to the supervisor.
    let back = PrivilegeError::decode(err.encode().unwrap()).unwrap();
    assert_eq!(back.to_string(), err.to_string());
    let iso: nebula_memory::IsolationError = back.into();
    assert!(iso.to_string().contains("PR_CAPBSET_DROP"), "{iso}");
    println!("helper done");
}

#[test]
fn unknown_capability_is_refused_in_the_parent() {
    let last: u8 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let plan = PrivilegePlan::drop_all()
        .keep(Capability::CAP_CHECKPOINT_RESTORE)
        .build();
    if last >= 40 {
        assert!(plan.is_ok());
    } else {
        assert!(matches!(
            plan,
            Err(PrivilegeError::UnknownCapability { cap: 40, .. })
        ));
    }
}
