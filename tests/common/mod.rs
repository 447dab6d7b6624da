//! Shared test support: the `skipped: <reason>` convention.
//!
//! A test that needs something this host lacks calls [`require`] (or [`skip`]). On a
//! developer machine or the host tier it prints `skipped: <reason>` and the test returns
//! early. When `NEBULA_TEST_REQUIRE=all` is set (the VM tier sets it), a skip is a failure:
//! the test panics with the same reason, so nothing the VM should cover can pass silently.
#![allow(dead_code)]

/// True when the environment says every test must run (the VM tier).
pub fn require_all() -> bool {
    std::env::var("NEBULA_TEST_REQUIRE").is_ok_and(|v| v == "all")
}

/// Report a skip: prints `skipped: <reason>` and returns, or panics under `NEBULA_TEST_REQUIRE=all`.
#[track_caller]
pub fn skip(reason: &str) {
    if require_all() {
        panic!("NEBULA_TEST_REQUIRE=all but this test would skip: {reason}");
    }
    // Straight to the process's stderr: libtest captures print!/eprint! of passing tests,
    // and a skip must stay visible (the VM runner also greps for it).
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "skipped: {reason}");
}

/// Returns `true` when `cond` holds; otherwise reports a skip for `reason` and returns `false`.
///
/// ```ignore
/// if !common::require(nebula_memory::features().cgroup_v2.available, "needs cgroup v2") { return; }
/// ```
#[track_caller]
pub fn require(cond: bool, reason: &str) -> bool {
    if !cond {
        skip(reason);
    }
    cond
}

/// True when running as root (uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Re-executes this test binary to run one ignored helper test in a child process (for
/// anything that changes process-wide state or is expected to die), with `NEBULA_HELPER=1`.
pub fn run_helper(name: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NEBULA_HELPER", "1")
        .output()
        .unwrap()
}

/// True inside a helper started by [`run_helper`] (helpers return at once otherwise).
pub fn in_helper() -> bool {
    std::env::var_os("NEBULA_HELPER").is_some()
}

/// A helper's stderr as text.
pub fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The last value of `key` in a helper's `MARK key=value` lines (see [`say`]).
pub fn mark(o: &std::process::Output, key: &str) -> Option<String> {
    stderr_of(o)
        .lines()
        .filter_map(|l| l.strip_prefix("MARK "))
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .next_back()
}

/// Reports `key=value` from a helper to its parent on the real stderr (not captured).
pub fn say(key: &str, value: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "MARK {key}={value}");
}

/// A copy of this test binary that any identity may execute, for a context to run as its
/// workload: the binary itself sits under the build's target directory, which a context's
/// unprivileged ids may not search when it is under a private home (CI's is under `/root`).
/// The copy is `/var/tmp/nebula-helper-<binary name>` (mode 0755, replaced atomically, the
/// same name each run, so runs do not pile up copies). Dynamically linked like any distro
/// program, it also gives the seccomp tests a real loader on hosts whose `/bin` is busybox.
pub fn shared_exe() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static COPY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let me = std::env::current_exe().unwrap();
        let name = me.file_name().unwrap().to_string_lossy().into_owned();
        let dest = std::path::PathBuf::from(format!("/var/tmp/nebula-helper-{name}"));
        let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
        std::fs::copy(&me, &tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
        dest
    })
    .clone()
}

/// The arguments that make a copy from [`shared_exe`] run only the ignored helper test
/// `name` (which acts when `NEBULA_HELPER` is set, see [`in_helper`]).
pub fn helper_args(name: &str) -> [&str; 5] {
    [
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

/// The body of a `helper_raw_syscall` test: calls system call `NEBULA_HELPER_SYSCALL` with
/// zero arguments and prints `survived <return> <errno>` on stdout. A context whose filter
/// kills the call never prints it.
pub fn raw_syscall_helper() {
    let Some(nr) = std::env::var("NEBULA_HELPER_SYSCALL")
        .ok()
        .filter(|_| in_helper())
    else {
        return;
    };
    let (r, errno) = zero_args_syscall(nr.parse().unwrap());
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "survived {r} {errno}");
    let _ = out.flush();
}

/// System call `nr` with six zero arguments: its return value and errno.
#[allow(unsafe_code)]
fn zero_args_syscall(nr: libc::c_long) -> (libc::c_long, i32) {
    // SAFETY: zero arguments (numbers and null pointers): the kernel validates them and fails
    // the call, or the filter kills the process; no memory of ours is handed over.
    let r = unsafe { libc::syscall(nr, 0usize, 0usize, 0usize, 0usize, 0usize, 0usize) };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    (r, errno)
}

/// Runs `cmd` with stdin from /dev/null and its stdout and stderr into the files `out` and
/// `err` rather than pipes: a container or a shim that inherits them may keep a pipe open
/// long after the command returned, and reading it to EOF would wait for that.
pub fn output_via_files(
    cmd: &mut std::process::Command,
    out: &std::path::Path,
    err: &std::path::Path,
) -> std::process::Output {
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(err).unwrap())
        .status()
        .unwrap();
    std::process::Output {
        status,
        stdout: std::fs::read(out).unwrap(),
        stderr: std::fs::read(err).unwrap(),
    }
}
