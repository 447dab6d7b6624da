//! [`PsiTrigger`]: a kernel-side pressure threshold that wakes `poll(2)` with `POLLPRI`.
//!
//! Writing `"<some|full> <stall us> <window us>"` to a pressure file asks the kernel to raise
//! an event whenever the tasks of that cgroup (or the whole system, for `/proc/pressure/*`)
//! were stalled for at least `stall` within a `window` (Documentation/accounting/psi.rst).
//! The trigger lives as long as the file descriptor it was written to: that fd is what this
//! type owns. The kernel raises at most one event per window.
//!
//! A context over `memory.high` is throttled without end, never killed, so the monitor turns
//! a memory-pressure event into its own decision (kill, raise the limit, report).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

use super::error::CgroupError;
use super::fs::{CgroupDir, Wake, poll_pri, write_once};
use super::parse::PsiKind;

/// The shortest window the kernel accepts (`WINDOW_MIN_US`).
const WINDOW_MIN: Duration = Duration::from_millis(500);
/// The longest window the kernel accepts (`WINDOW_MAX_US`).
const WINDOW_MAX: Duration = Duration::from_secs(10);

/// An armed PSI trigger on a pressure file; owns the fd that keeps it armed.
#[derive(Debug)]
pub struct PsiTrigger {
    fd: OwnedFd,
    path: PathBuf,
    trigger: String,
}

impl PsiTrigger {
    /// Arms a trigger on the pressure file at `path`: a cgroup's `memory.pressure`,
    /// `cpu.pressure` or `io.pressure`, or a system-wide `/proc/pressure/{memory,cpu,io}`.
    ///
    /// The trigger fires when tasks were stalled (`some`: at least one; `full`: all non-idle
    /// ones) for `stall` in total within a moving `window` of 500 ms to 10 s. Unprivileged
    /// writers (without `CAP_SYS_RESOURCE`, which even root may lack in a container) need a
    /// window that is a multiple of 2 s (Linux 6.4+).
    ///
    /// # Errors
    ///
    /// [`CgroupError::InvalidPsiTrigger`] for a window or stall out of range (checked here,
    /// before the kernel sees it); [`CgroupError::FileMissing`] when the file does not exist
    /// (PSI disabled); [`CgroupError::PsiTrigger`] when the kernel refuses the trigger.
    pub fn open(
        path: impl AsRef<Path>,
        kind: PsiKind,
        stall: Duration,
        window: Duration,
    ) -> Result<PsiTrigger, CgroupError> {
        let path = path.as_ref();
        let trigger = trigger_spec(kind, stall, window)?;
        let fd = rustix::fs::open(path, trigger_flags(), Mode::empty())
            .map_err(|e| open_error(path, &trigger, e.into()))?;
        arm(fd, path.to_owned(), trigger)
    }

    /// As [`PsiTrigger::open`] for `file` in a cgroup directory held open.
    pub(crate) fn open_in(
        dir: &CgroupDir,
        file: &str,
        kind: PsiKind,
        stall: Duration,
        window: Duration,
    ) -> Result<PsiTrigger, CgroupError> {
        let trigger = trigger_spec(kind, stall, window)?;
        let path = dir.file_path(file);
        let fd = dir
            .open_file(file, trigger_flags())
            .map_err(|e| open_error(&path, &trigger, e))?;
        arm(fd, path, trigger)
    }

    /// Waits up to `timeout` for the trigger to fire. `Ok(true)` when it fired, `Ok(false)`
    /// on timeout.
    ///
    /// # Errors
    ///
    /// [`CgroupError::PsiTriggerGone`] when the kernel reports `POLLERR` (the trigger's
    /// cgroup was removed); [`CgroupError::Poll`].
    pub fn wait(&self, timeout: Duration) -> Result<bool, CgroupError> {
        match poll_pri(self.fd.as_fd(), Instant::now() + timeout) {
            Ok(Wake::Pri) => Ok(true),
            Ok(Wake::Timeout) => Ok(false),
            Ok(Wake::Err) => Err(CgroupError::PsiTriggerGone {
                path: self.path.clone(),
            }),
            Err(source) => Err(CgroupError::Poll {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The pressure file the trigger is armed on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The trigger as written to the kernel, e.g. `some 150000 1000000`.
    pub fn trigger(&self) -> &str {
        &self.trigger
    }
}

impl AsFd for PsiTrigger {
    /// The fd to put into an epoll set with `EPOLLPRI`.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn trigger_flags() -> OFlags {
    OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC
}

fn open_error(path: &Path, trigger: &str, e: std::io::Error) -> CgroupError {
    if e.raw_os_error() == Some(libc::ENOENT) {
        CgroupError::FileMissing {
            path: path.to_owned(),
            hint: "PSI is disabled on this kernel (CONFIG_PSI, or boot with psi=1)",
        }
    } else {
        CgroupError::PsiTrigger {
            path: path.to_owned(),
            trigger: trigger.to_owned(),
            source: e,
        }
    }
}

fn arm(fd: OwnedFd, path: PathBuf, trigger: String) -> Result<PsiTrigger, CgroupError> {
    // The kernel overwrites the last byte of the write with NUL (psi_write), so the
    // terminator is part of the write, as in psi.rst's example (`strlen(trig) + 1`).
    let mut bytes = trigger.clone().into_bytes();
    bytes.push(0);
    write_once(&fd, &bytes).map_err(|source| CgroupError::PsiTrigger {
        path: path.clone(),
        trigger: trigger.clone(),
        source,
    })?;
    Ok(PsiTrigger { fd, path, trigger })
}

/// `"<kind> <stall us> <window us>"`, validated against the kernel's limits.
fn trigger_spec(kind: PsiKind, stall: Duration, window: Duration) -> Result<String, CgroupError> {
    let trigger = format!("{kind} {} {}", stall.as_micros(), window.as_micros());
    let bad = |reason| {
        Err(CgroupError::InvalidPsiTrigger {
            trigger: trigger.clone(),
            reason,
        })
    };
    if !(WINDOW_MIN..=WINDOW_MAX).contains(&window) {
        return bad("the window must be 500 ms to 10 s");
    }
    if stall.as_micros() == 0 {
        return bad("the stall threshold must be at least 1 us");
    }
    if stall > window {
        return bad("the stall threshold cannot exceed the window");
    }
    Ok(trigger)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let ms = Duration::from_millis;
        assert_eq!(
            trigger_spec(PsiKind::Some, ms(150), ms(1000)).unwrap(),
            "some 150000 1000000"
        );
        assert_eq!(
            trigger_spec(PsiKind::Full, ms(500), ms(500)).unwrap(),
            "full 500000 500000"
        );
        for (stall, window) in [(ms(100), ms(499)), (ms(100), ms(10_001)), (ms(0), ms(1000))] {
            let e = trigger_spec(PsiKind::Some, stall, window).unwrap_err();
            assert!(e.to_string().contains("invalid PSI trigger \"some "), "{e}");
        }
        let e = trigger_spec(PsiKind::Some, ms(2000), ms(1000)).unwrap_err();
        assert!(e.to_string().contains("exceed"), "{e}");
    }

    #[test]
    fn open_reports_a_missing_file_and_bad_specs_first() {
        let e = PsiTrigger::open(
            "/nonexistent/memory.pressure",
            PsiKind::Some,
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, CgroupError::FileMissing { .. }), "{e}");
        let e = PsiTrigger::open(
            "/nonexistent/memory.pressure",
            PsiKind::Some,
            Duration::from_millis(100),
            Duration::from_millis(10),
        )
        .unwrap_err();
        assert!(matches!(e, CgroupError::InvalidPsiTrigger { .. }), "{e}");
    }

    #[test]
    fn arms_a_system_wide_trigger_when_the_host_has_psi() {
        // /proc/pressure is system-wide PSI, no cgroup involved: the trigger exists only as
        // long as our fd. Checks the write format (with its NUL) against the real kernel.
        let path = Path::new("/proc/pressure/memory");
        if !path.exists() || !rustix::process::geteuid().is_root() {
            println!("skipped: needs root and /proc/pressure/memory");
            return;
        }
        // A 2 s window: without CAP_SYS_RESOURCE (even root lacks it on some hosts) Linux 6.4+
        // accepts only multiples of 2 s.
        let t = PsiTrigger::open(
            path,
            PsiKind::Some,
            Duration::from_millis(500),
            Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(t.trigger(), "some 500000 2000000");
        // Nothing stalls this host for half a second in 20 ms: no event, and no error.
        assert!(!t.wait(Duration::from_millis(20)).unwrap());
    }
}
