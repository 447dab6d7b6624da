//! Landlock under the read-only root (issue 12, deliverable 4): each test asserts the errno
//! the kernel gives a landlocked workload, and where it matters a control without Landlock
//! shows that the mount alone would have allowed the access.
//!
//! Host tier, as root (user namespaces, Landlock). The tests hold whichever host identity
//! root inside maps to (nebula's id pool or the caller): host directories are made 0777
//! under `/var/tmp` (the context has its own `/tmp`), and no test relies on a root-only
//! host file.
#![allow(unsafe_code)]

mod common;

use std::ffi::CStr;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Cmd, Output, Stdio as PStdio};

use nebula_memory::isolation::process::{
    Command, ProcessConfig, ProcessError, ProcessIsolation, Stdio,
};
use nebula_memory::landlock::Landlock;
use nebula_memory::privileges::Capability;
use nebula_memory::seccomp::Profile;

const BIN: &str = env!("CARGO_BIN_EXE_nebula-ctl");

fn ready() -> bool {
    let f = nebula_memory::features();
    common::require(common::is_root(), "needs root (user namespaces, mounts)")
        && common::require(
            f.landlock.available,
            f.landlock.reason.as_deref().unwrap_or("no Landlock"),
        )
}

/// A fresh 0777 directory under /var/tmp, removed when dropped.
struct HostDir(PathBuf);

impl HostDir {
    fn new(tag: &str) -> HostDir {
        let d = PathBuf::from(format!(
            "/var/tmp/nebula-landlock-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        HostDir(d)
    }

    fn sub(&self, name: &str, file: &str, content: &str) -> PathBuf {
        let d = self.0.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let f = d.join(file);
        std::fs::write(&f, content).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        d
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The system directories a shell and its libraries live in here (merged /usr on Debian;
/// /bin and /lib in the VM tier's initramfs): the read allow-list of the exec tests.
fn system_dirs() -> Vec<&'static str> {
    ["/usr", "/bin", "/sbin", "/lib", "/lib64"]
        .into_iter()
        .filter(|p| Path::new(p).is_dir())
        .collect()
}

/// A directory that exists here, for mounting over (`/mnt` is absent in the VM's initramfs).
fn mount_point() -> &'static str {
    ["/mnt", "/srv", "/opt", "/media", "/root", "/home"]
        .into_iter()
        .find(|p| Path::new(p).is_dir())
        .expect("some mount point exists")
}

/// The mount point of the mount that holds `path` (the longest mount point in
/// `/proc/self/mountinfo` that is a prefix of it): `/` on a plain host, `/var/tmp` in the VM
/// tier, where it is a tmpfs of its own. The context's root copies the host's mounts, so the
/// same mount point exists inside.
fn mount_point_of(path: &Path) -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.components().count())
        .expect("/ is a mount point")
}

fn errno_of(r: std::io::Result<()>) -> Option<i32> {
    r.err().map(|e| e.raw_os_error().unwrap_or(-1))
}

fn write_file(p: &Path) -> Option<i32> {
    errno_of(std::fs::write(p, b"x"))
}

#[test]
fn probe_reports_the_abi() {
    let f = nebula_memory::features();
    if !common::require(
        f.landlock.available,
        f.landlock.reason.as_deref().unwrap_or("no Landlock"),
    ) {
        return;
    }
    assert!(f.landlock.abi >= 1, "{:?}", f.landlock);
    assert!(f.landlock.access_fs.contains(&"write_file"));
    assert_eq!(
        f.landlock.access_fs.contains(&"truncate"),
        f.landlock.abi >= 3
    );
    assert!(f.report().contains(&format!("ABI {}", f.landlock.abi)));
}

#[test]
fn writes_go_only_to_the_tmpfs_even_on_a_writable_root() {
    if !ready() {
        return;
    }
    let host = HostDir::new("write");
    let denied = host.0.join("landlocked");
    let control = host.0.join("control");

    // Control: without the read-only root the host directory is writable through the mount.
    let iso = ProcessIsolation::new(ProcessConfig::new().read_only_root(false)).unwrap();
    let c = control.clone();
    let r = iso.run_closure(move || write_file(&c)).unwrap();
    assert_eq!(r.result, Ok(None), "{:?}", r.outcome);
    assert!(control.exists(), "the control write reached the host");

    // The same configuration with Landlock: the tmpfs works, the host directory does not.
    let iso = ProcessIsolation::new(
        ProcessConfig::new()
            .read_only_root(false)
            .landlock(Landlock::new()),
    )
    .unwrap();
    let d = denied.clone();
    let r = iso
        .run_closure(move || {
            let tmp = write_file(Path::new("/tmp/ok"));
            let read_back = std::fs::read("/tmp/ok").ok();
            let devnull = write_file(Path::new("/dev/null"));
            (tmp, read_back, devnull, write_file(&d))
        })
        .unwrap();
    assert_eq!(
        r.result,
        Ok((None, Some(b"x".to_vec()), None, Some(libc::EACCES))),
        "{:?}",
        r.outcome
    );
    assert!(
        !denied.exists(),
        "the landlocked write must not reach the host"
    );
}

#[test]
fn writable_binds_stay_writable_and_nothing_else_is() {
    if !ready() {
        return;
    }
    let host = HostDir::new("bind");
    let shared = host.sub("shared", "seed", "");
    let iso = ProcessIsolation::new(
        ProcessConfig::new()
            .bind(&shared, mount_point(), true)
            .landlock(Landlock::new()),
    )
    .unwrap();
    let r = iso
        .run_closure(|| {
            let m = Path::new(mount_point());
            (
                write_file(&m.join("from-context")),
                // Removing and renaming inside the bind are writes too.
                errno_of(std::fs::rename(m.join("from-context"), m.join("renamed"))),
                // /var/tmp under the read-only root: the mount already refuses (EROFS).
                write_file(Path::new("/var/tmp/nebula-landlock-outside")),
            )
        })
        .unwrap();
    assert_eq!(
        r.result,
        Ok((None, None, Some(libc::EROFS))),
        "{:?}",
        r.outcome
    );
    assert!(shared.join("renamed").exists());
}

/// `mount(2)` and friends for the closure, returning the errno (None on success).
fn mount_errno(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
) -> Option<i32> {
    let p = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is NULL or a live NUL-terminated string; no data argument.
    let r = unsafe { libc::mount(p(src), target.as_ptr(), p(fstype), flags, std::ptr::null()) };
    (r < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
}

fn umount_errno(target: &CStr) -> Option<i32> {
    // SAFETY: target is a live NUL-terminated string.
    let r = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    (r < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
}

#[test]
fn mount_changes_are_refused_even_with_cap_sys_admin() {
    if !ready() {
        return;
    }
    let host = HostDir::new("mount");
    let target = host.0.join("after-remount");
    // CAP_SYS_ADMIN kept inside and no seccomp filter: only Landlock can stop a remount.
    let base = || {
        let mut c = ProcessConfig::new().seccomp(Profile::None);
        c.keep_caps = vec![Capability::CAP_SYS_ADMIN];
        c
    };
    let holder =
        std::ffi::CString::new(mount_point_of(&host.0).into_os_string().into_vec()).unwrap();
    let attempt = move |t: PathBuf| {
        let holder = holder.clone();
        move || {
            // Make the read-only mount that holds the target writable again (a per-mount flag
            // of the context's copy; the host's mount is not touched), then write through it.
            let remount = mount_errno(None, &holder, None, libc::MS_REMOUNT | libc::MS_BIND);
            let write = write_file(&t);
            let mp = std::ffi::CString::new(mount_point()).unwrap();
            let tmpfs = mount_errno(Some(c"none"), &mp, Some(c"tmpfs"), 0);
            let umount = umount_errno(c"/tmp");
            (remount, write, tmpfs, umount)
        }
    };

    // Control: the mount change defeats the read-only root.
    let iso = ProcessIsolation::new(base()).unwrap();
    let r = iso.run_closure(attempt(target.clone())).unwrap();
    assert_eq!(r.result, Ok((None, None, None, None)), "{:?}", r.outcome);
    assert!(target.exists(), "the control shows the remount works");
    std::fs::remove_file(&target).unwrap();

    // Landlocked: every mount change is EPERM, and the write stays EROFS.
    let iso = ProcessIsolation::new(base().landlock(Landlock::new())).unwrap();
    let r = iso.run_closure(attempt(target.clone())).unwrap();
    assert_eq!(
        r.result,
        Ok((
            Some(libc::EPERM),
            Some(libc::EROFS),
            Some(libc::EPERM),
            Some(libc::EPERM)
        )),
        "{:?}",
        r.outcome
    );
    assert!(!target.exists());
}

#[test]
fn read_allow_list_denies_reads_outside_it() {
    if !ready() {
        return;
    }
    let host = HostDir::new("read");
    let ok = host.sub("ok", "f", "fine\n");
    let no = host.sub("no", "s", "secret");
    let single = host.sub("single", "one", "one");
    std::fs::write(single.join("two"), "two").unwrap();
    let iso = ProcessIsolation::new(
        ProcessConfig::new().landlock(Landlock::new().read(&ok).read(single.join("one"))),
    )
    .unwrap();
    let (okf, nof, onef, otherf) = (
        ok.join("f"),
        no.join("s"),
        single.join("one"),
        single.join("two"),
    );
    let r = iso
        .run_closure(move || {
            let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| e.raw_os_error());
            (
                read(&okf),
                read(&nof),
                read(&onef),
                // A file rule allows that file only, not its directory.
                std::fs::read_dir(onef.parent().unwrap())
                    .map(|_| ())
                    .map_err(|e| e.raw_os_error()),
                read(&otherf),
                read(Path::new("/etc/passwd")).map(|_| ()),
                // The writable tmpfs stays readable.
                std::fs::write("/tmp/t", "t")
                    .map_err(|e| e.raw_os_error())
                    .and_then(|()| read(Path::new("/tmp/t"))),
            )
        })
        .unwrap();
    let eacces = Err(Some(libc::EACCES));
    assert_eq!(
        r.result,
        Ok((
            Ok("fine\n".to_owned()),
            eacces.clone(),
            Ok("one".to_owned()),
            Err(Some(libc::EACCES)),
            eacces.clone(),
            Err(Some(libc::EACCES)),
            Ok("t".to_owned()),
        )),
        "{:?}",
        r.outcome
    );

    // The exec path: a program under the allow-list runs; reads outside it fail.
    let iso = ProcessIsolation::new(
        ProcessConfig::new()
            .landlock(
                system_dirs()
                    .into_iter()
                    .fold(Landlock::new().read(&ok), Landlock::read),
            )
            .output(Stdio::Capture, Stdio::Capture),
    )
    .unwrap();
    let script = format!(
        "cat {}/f; cat {}/s || echo denied",
        ok.display(),
        no.display()
    );
    let out = iso
        .run_command(&Command::new("/bin/sh").args(["-c", &script]))
        .unwrap();
    assert_eq!(out.stdout_text(), "fine\ndenied\n", "{}", out.stderr_text());
    assert!(
        out.stderr_text().contains("Permission denied"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn bad_read_paths_are_refused_by_name() {
    if !ready() {
        return;
    }
    let e = ProcessIsolation::new(
        ProcessConfig::new().landlock(Landlock::new().read("/nonexistent/nebula-landlock")),
    )
    .unwrap_err();
    assert!(matches!(e, ProcessError::InvalidConfig(_)), "{e}");
    assert!(
        e.to_string().contains("/nonexistent/nebula-landlock"),
        "{e}"
    );

    // A path that exists on the host but not inside (under the context's own /tmp): the
    // child's Landlock step fails and names it.
    let host_only = std::env::temp_dir().join(format!("nebula-landlock-{}", std::process::id()));
    std::fs::create_dir_all(&host_only).unwrap();
    let iso = ProcessIsolation::new(
        ProcessConfig::new().landlock(Landlock::new().read("/usr").read(&host_only)),
    )
    .unwrap();
    let e = iso.run_command(&Command::new("/bin/true")).unwrap_err();
    let _ = std::fs::remove_dir(&host_only);
    match &e {
        ProcessError::Setup {
            step,
            detail,
            source,
        } => {
            assert_eq!(*step, "Landlock restriction");
            assert!(detail.contains(&*host_only.to_string_lossy()), "{detail}");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("expected a Landlock setup error, got {other}"),
    }
}

fn ctl(dir: &Path, args: &[&str]) -> Output {
    Cmd::new(BIN)
        .args(args)
        .env("NEBULA_RUN_DIR", dir)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .stdin(PStdio::null())
        .output()
        .expect("run nebula-ctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn cli_flag_and_profile_key() {
    if !ready() {
        return;
    }
    let host = HostDir::new("cli");
    let run = host.0.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let script = |name: &str| {
        format!(
            "echo a > /tmp/a && cat /tmp/a && echo b > {}/{name}",
            host.0.display()
        )
    };

    // Control: --rw-root alone lets the write through.
    let o = ctl(
        &run,
        &["run", "--rw-root", "--", "/bin/sh", "-c", &script("plain")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(host.0.join("plain").exists());

    // --landlock: the tmpfs works, the host directory is EACCES.
    let o = ctl(
        &run,
        &[
            "run",
            "--rw-root",
            "--landlock",
            "--",
            "/bin/sh",
            "-c",
            &script("flag"),
        ],
    );
    assert_eq!(text(&o.stdout), "a\n");
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );
    assert!(!host.0.join("flag").exists());

    // The profile keys.
    let profile = host.0.join("ll.toml");
    let mut f = std::fs::File::create(&profile).unwrap();
    writeln!(f, "ro-root = false\nlandlock = true").unwrap();
    drop(f);
    let p = profile.to_string_lossy().into_owned();
    let o = ctl(
        &run,
        &[
            "run",
            "--profile",
            &p,
            "--",
            "/bin/sh",
            "-c",
            &script("toml"),
        ],
    );
    assert_eq!(text(&o.stdout), "a\n");
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );
    assert!(!host.0.join("toml").exists());
    // --no-landlock overrides the profile.
    let o = ctl(
        &run,
        &[
            "run",
            "--profile",
            &p,
            "--no-landlock",
            "--",
            "/bin/sh",
            "-c",
            &script("off"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(host.0.join("off").exists());

    let ok = host.sub("ok", "f", "fine");
    let no = host.sub("no", "s", "secret");
    let profile = host.0.join("read.toml");
    std::fs::write(
        &profile,
        format!(
            "landlock-read = [{}, \"{}\"]\n",
            system_dirs()
                .iter()
                .map(|d| format!("{d:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            ok.display()
        ),
    )
    .unwrap();
    let p = profile.to_string_lossy().into_owned();
    let cat = format!("cat {}/f && cat {}/s", ok.display(), no.display());
    let o = ctl(&run, &["run", "--profile", &p, "--", "/bin/sh", "-c", &cat]);
    assert_eq!(text(&o.stdout), "fine");
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );
    // The flag twin, and a missing path is a usage error naming it.
    let okp = ok.to_string_lossy().into_owned();
    let o = ctl(
        &run,
        &[
            &["run", "--landlock-read", &okp][..],
            &system_dirs()
                .iter()
                .flat_map(|d| ["--landlock-read", d])
                .collect::<Vec<_>>(),
            &["--", "/bin/sh", "-c", &format!("cat {okp}/f")],
        ]
        .concat(),
    );
    assert_eq!(
        (o.status.code(), text(&o.stdout).as_str()),
        (Some(0), "fine"),
        "{}",
        text(&o.stderr)
    );
    let o = ctl(
        &run,
        &[
            "run",
            "--landlock-read",
            "/nonexistent/nebula-ll",
            "--",
            "/bin/true",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("/nonexistent/nebula-ll"),
        "{}",
        text(&o.stderr)
    );
}
