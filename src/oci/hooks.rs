//! Running a bundle's hooks: the program with its `args` (`args[0]` as `argv[0]`) and `env`,
//! the container's state JSON on stdin, killed at its `timeout`. `createContainer` and
//! `startContainer` hooks run in the container's namespaces (joined through
//! `/proc/<pid>/ns/*`), the others in the runtime's.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use super::error::OciError;
use super::spec::HookKind;

fn kind_name(kind: HookKind) -> &'static str {
    match kind {
        HookKind::Prestart => "prestart",
        HookKind::CreateRuntime => "createRuntime",
        HookKind::CreateContainer => "createContainer",
        HookKind::StartContainer => "startContainer",
        HookKind::Poststart => "poststart",
        HookKind::Poststop => "poststop",
    }
}

/// The namespace files of `pid` to join for an in-container hook, user namespace first.
fn namespaces_of(pid: i32) -> Vec<(OwnedFd, i32)> {
    let mut out = Vec::new();
    for (name, flag) in [
        ("user", libc::CLONE_NEWUSER),
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("pid", libc::CLONE_NEWPID),
        ("cgroup", libc::CLONE_NEWCGROUP),
        ("mnt", libc::CLONE_NEWNS),
    ] {
        let own = std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{name}")).ok();
        if theirs.is_none() || own == theirs {
            continue;
        }
        if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/ns/{name}")) {
            out.push((OwnedFd::from(f), flag));
        }
    }
    out
}

/// Runs `hooks` in order; the first failure is the error.
pub(super) fn run(
    kind: HookKind,
    hooks: &[Hook],
    state: &serde_json::Value,
    pid: i32,
) -> Result<(), OciError> {
    for hook in hooks {
        run_one(kind, hook, state, pid)?;
    }
    Ok(())
}

fn run_one(
    kind: HookKind,
    hook: &Hook,
    state: &serde_json::Value,
    pid: i32,
) -> Result<(), OciError> {
    let fail = |reason: String| OciError::Hook {
        kind: kind_name(kind),
        path: hook.path().clone(),
        reason,
    };
    let mut cmd = std::process::Command::new(hook.path());
    if let Some(args) = hook.args()
        && let Some((first, rest)) = args.split_first()
    {
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().as_deref().unwrap_or_default() {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| fail(format!("its env entry {kv:?} is not KEY=VALUE")))?;
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::piped());
    if matches!(kind, HookKind::CreateContainer | HookKind::StartContainer) {
        crate::sys::process::join_before_exec(&mut cmd, namespaces_of(pid));
    }
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    // From a thread: a hook that never reads a state larger than the pipe's buffer must not
    // hang the runtime past the hook's timeout. EPIPE (it closed its stdin) is not its
    // failure.
    let writer = child.stdin.take().map(|mut stdin| {
        let text = state.to_string();
        std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        })
    });
    let timeout = hook
        .timeout()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs);
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                if let Some(w) = writer {
                    let _ = w.join();
                }
                return Ok(());
            }
            Ok(Some(status)) => return Err(fail(format!("it exited with {status}"))),
            Ok(None) => {}
            Err(e) => return Err(fail(e.to_string())),
        }
        if let Some(t) = timeout
            && start.elapsed() >= t
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("it ran past its timeout of {}s", t.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
