//! Creating a process context: `clone3(2)` with `CLONE_INTO_CGROUP` and `CLONE_PIDFD`
//! (falling back to `clone(2)` only on `ENOSYS`), the child's side of the start-up
//! sequence, the pid 1 that reaps orphans, and `wait4(2)` with resource usage.
//!
//! # The hazard this module contains
//!
//! After a raw `clone`/`clone3` in a multi-threaded parent, the child is a copy of one
//! thread; other threads' locks (glibc's malloc arenas, stdio, Rust mutexes) may be held
//! forever, and glibc's `atfork` handlers do not run for a raw clone, so even `malloc` may
//! deadlock or see a half-updated arena. Until `execve` the child may therefore only make
//! async-signal-safe calls. Everything the child needs is prepared in the parent
//! ([`ExecPlan`]: C strings, `argv`/`envp` arrays, mount steps, rlimits) and the child side
//! ([`spawn_exec`]) is written here, in `sys`, as a straight sequence of raw system calls
//! that read the plan and allocate nothing. It is a safe function because the code that runs
//! in the child is not the caller's: it is this file's, and it keeps the contract.
//!
//! The closure path uses [`fork`] instead (glibc's `fork` runs its atfork handlers, which
//! reset malloc and stdio in the child), see its docs for what remains.
//!
//! # The sequence (exec path)
//!
//! ```text
//! supervisor                               child (pid 1 of its pid namespace)
//! ----------                               ---------------------------------
//! clone3(NEW*, PIDFD, INTO_CGROUP) ------> prctl(PR_SET_PDEATHSIG, SIGKILL); getppid check
//! write uid_map, gid_map                   read(sync) ... blocks
//! write(sync, 'G') ----------------------> setresgid/setresuid(0), setgroups(0)
//!                                          sethostname, mounts, lo up
//!                                          fork -> workload: stdio, signals, rlimits,
//!                                                  chdir, privileges (no_new_privs, caps,
//! recvmsg(listener) <---- SCM_RIGHTS -----         Landlock, seccomp with a listener),
//!                                                  execve
//!                                          reap every child; when the workload is reaped,
//! read(report) <-------------------------- write its wait status, _exit(0)
//! poll(pidfd), wait4                       (the kernel kills what is left in the namespace)
//! ```
//!
//! A failing step writes a [`Report::StepFailed`] naming the step and the errno, then
//! `_exit(CHILD_SETUP_FAILED)`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::mount::{self, MountStep};
use super::rlimit::{self, RlimitSetting};

/// Exit status of a child that could not complete its start-up (the report pipe says why).
pub const CHILD_SETUP_FAILED: i32 = 125;
/// Exit status of a child whose supervisor vanished before it was released.
pub const CHILD_PARENT_GONE: i32 = 124;

/// The byte the supervisor writes on the sync pipe to release the child.
pub const GO: u8 = b'G';
/// The byte the supervisor writes once the child is in its cgroup (closure path).
pub const PLACED: u8 = b'C';

/// A step of the child's start-up sequence, as reported when it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// `prctl(PR_SET_PDEATHSIG)`.
    DeathSignal = 1,
    /// `unshare(2)` of the namespaces (closure path).
    Unshare = 2,
    /// `setresgid`/`setresuid` to root of the new user namespace.
    SetIds = 3,
    /// `setgroups(0, NULL)`.
    SetGroups = 4,
    /// `sethostname(2)`.
    Hostname = 5,
    /// One of the mount steps (index in the detail).
    Mount = 6,
    /// Bringing `lo` up.
    Loopback = 7,
    /// `fork` of the workload by pid 1.
    ForkWorkload = 8,
    /// `dup2` of a standard stream.
    Stdio = 9,
    /// `prlimit` (index in the detail).
    Rlimit = 10,
    /// `prctl(PR_SET_NO_NEW_PRIVS)`.
    NoNewPrivs = 11,
    /// The capability drop.
    Capabilities = 12,
    /// The seccomp filter install.
    Seccomp = 13,
    /// `chdir(2)`.
    Chdir = 14,
    /// `execve(2)`.
    Exec = 15,
    /// Resetting the signal mask and dispositions.
    Signals = 16,
    /// Building and enforcing the Landlock ruleset (the detail is a
    /// [`super::landlock::Failure`]: which call, which rule).
    Landlock = 17,
    /// `setns(2)` into a namespace given by path (index in the detail).
    JoinNamespace = 18,
    /// Waiting at the start gate of a created container.
    Gate = 19,
}

impl Step {
    fn from_raw(v: u32) -> Option<Step> {
        use Step::*;
        [
            DeathSignal,
            Unshare,
            SetIds,
            SetGroups,
            Hostname,
            Mount,
            Loopback,
            ForkWorkload,
            Stdio,
            Rlimit,
            NoNewPrivs,
            Capabilities,
            Seccomp,
            Chdir,
            Exec,
            Signals,
            Landlock,
            JoinNamespace,
            Gate,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }

    /// What the step does, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::DeathSignal => "prctl(PR_SET_PDEATHSIG)",
            Step::Unshare => "unshare of the namespaces",
            Step::SetIds => "setresuid/setresgid to root of the user namespace",
            Step::SetGroups => "setgroups(0)",
            Step::Hostname => "sethostname",
            Step::Mount => "mount",
            Step::Loopback => "bringing up lo",
            Step::ForkWorkload => "fork of the workload by pid 1",
            Step::Stdio => "dup2 of a standard stream",
            Step::Rlimit => "prlimit",
            Step::NoNewPrivs => "prctl(PR_SET_NO_NEW_PRIVS)",
            Step::Capabilities => "capability drop",
            Step::Seccomp => "seccomp filter install",
            Step::Chdir => "chdir",
            Step::Exec => "execve",
            Step::Signals => "signal reset",
            Step::Landlock => "Landlock restriction",
            Step::JoinNamespace => "setns into a namespace given by path",
            Step::Gate => "waiting at the start gate",
        }
    }
}

/// A message from the child on the report pipe: 12 bytes, written with one `write(2)`
/// (atomic, below `PIPE_BUF`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// The child entered its new namespaces and waits for its uid/gid maps (closure path).
    Unshared,
    /// A start-up step failed.
    StepFailed {
        /// Which step.
        step: Step,
        /// Step-specific detail (the index of a mount step or rlimit).
        detail: i32,
        /// The errno.
        errno: i32,
    },
    /// pid 1 reaped the workload; its raw wait status.
    Workload {
        /// As `wait4(2)` returned it.
        status: i32,
    },
    /// The workload finished its set-up and waits at the start gate ([`ExecPlan::gate`]).
    Ready,
}

/// Size of one encoded [`Report`].
pub const REPORT_LEN: usize = 12;

impl Report {
    fn encode(self) -> [u8; REPORT_LEN] {
        let (tag, a, b): (u32, i32, i32) = match self {
            Report::Unshared => (1, 0, 0),
            Report::StepFailed {
                step,
                detail,
                errno,
            } => (0x100 | step as u32, detail, errno),
            Report::Workload { status } => (2, status, 0),
            Report::Ready => (3, 0, 0),
        };
        let mut out = [0u8; REPORT_LEN];
        out[0..4].copy_from_slice(&tag.to_le_bytes());
        out[4..8].copy_from_slice(&a.to_le_bytes());
        out[8..12].copy_from_slice(&b.to_le_bytes());
        out
    }

    /// Decodes one message; `None` for bytes no child of this module writes.
    pub fn decode(b: &[u8; REPORT_LEN]) -> Option<Report> {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        let tag = u32::from_le_bytes(word(0));
        let a = i32::from_le_bytes(word(4));
        let c = i32::from_le_bytes(word(8));
        match tag {
            1 => Some(Report::Unshared),
            2 => Some(Report::Workload { status: a }),
            3 => Some(Report::Ready),
            t if t & 0x100 != 0 => Step::from_raw(t & 0xff).map(|step| Report::StepFailed {
                step,
                detail: a,
                errno: c,
            }),
            _ => None,
        }
    }
}

/// `argv` or `envp`: owned C strings and the NULL-terminated pointer array into them, built
/// in the parent so the child reads it without allocating.
#[derive(Debug)]
pub struct CStringArray {
    /// Owns what `ptrs` points into.
    _strings: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

impl CStringArray {
    /// Builds the array; the pointers stay valid as long as the value lives (moving a
    /// `CString` does not move its heap buffer).
    pub fn new(strings: Vec<CString>) -> CStringArray {
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        CStringArray {
            _strings: strings,
            ptrs,
        }
    }

    fn as_ptr(&self) -> *const *const libc::c_char {
        self.ptrs.as_ptr()
    }
}

/// What every child of a context does first, before any other step.
#[derive(Debug)]
pub struct Prologue<'a> {
    /// The child's end of the sync pipe (the supervisor writes [`GO`]).
    pub sync: BorrowedFd<'a>,
    /// The child's end of the report pipe.
    pub report: BorrowedFd<'a>,
    /// The supervisor's pid, checked with `getppid()` after the death signal is set (only
    /// meaningful outside a new pid namespace, where `getppid()` reads 0).
    pub parent_pid: Option<i32>,
    /// The supervisor's ends of the pipes, closed in the child so that the child sees EOF
    /// when the supervisor dies.
    pub close: Vec<BorrowedFd<'a>>,
}

/// Identity and namespace set-up inside the new namespaces (after the uid/gid maps exist).
#[derive(Debug, Default)]
pub struct SetupPlan {
    /// Become uid/gid 0 of the new user namespace (`setresgid`, `setresuid`).
    pub become_root: bool,
    /// Drop supplementary groups (`setgroups(0, NULL)`); skipped when `setgroups` is denied.
    pub drop_groups: bool,
    /// `sethostname` (new UTS namespace).
    pub hostname: Option<Vec<u8>>,
    /// Mount steps (new mount namespace), in order.
    pub mounts: Vec<MountStep>,
    /// Bring up `lo` (new network namespace).
    pub loopback: bool,
}

/// The privilege step, last before the workload runs: the order DESIGN.md gives is
/// bounding set, keep-caps, uid/gid change, permitted/inheritable/effective, ambient,
/// `no_new_privs` (all in [`super::privileges::Plan::apply_current_thread`]), the Landlock
/// ruleset ([`super::landlock::RulesetPlan::apply_current_thread`]), then seccomp
/// ([`super::seccomp::Program::install`]). All are built in the parent and documented as
/// child-safe (allocation-free, raw system calls on prepared data).
#[derive(Debug, Default)]
pub struct Privileges<'a> {
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)` even without a capability plan or filter.
    pub no_new_privs: bool,
    /// The capability drop.
    pub caps: Option<super::privileges::Plan<'a>>,
    /// The Landlock ruleset, built and enforced after `no_new_privs`, before seccomp.
    pub landlock: Option<&'a super::landlock::RulesetPlan>,
    /// The seccomp filter, installed last.
    pub seccomp: Option<super::seccomp::Program<'a>>,
    /// With a notifying `seccomp` filter ([`super::seccomp::Program::notifies`]):
    /// where its listener goes. Without it such a filter is installed without a listener.
    pub seccomp_listener: Option<ListenerHandover<'a>>,
}

/// How a notifying filter's listener reaches the supervisor: installed with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`, sent over `sock` with `SCM_RIGHTS` (tag
/// [`super::seccomp_notify::LISTENER_TAG`]), then the listener and `sock` are closed in the
/// workload, so that nothing it runs can answer its own notifications. Between the install and
/// the `execve` only `sendmsg`, `close` and `execve` (and `write`/`exit_group` on failure) are
/// called: every profile allows them, so none of them is ever notified (a notified call before
/// the listener left would wait for ever).
#[derive(Clone, Copy, Debug)]
pub struct ListenerHandover<'a> {
    /// The context's end of the socket pair the supervisor created before cloning.
    pub sock: BorrowedFd<'a>,
    /// Installed instead when the kernel refuses a listener with `EBUSY` (a filter with a
    /// listener is in this thread's chain already, e.g. nebula itself runs under another
    /// notifier): the same profile with kills as `KILL_PROCESS`, reported as a plain `SIGSYS`.
    pub fallback: super::seccomp::Program<'a>,
}

/// What the workload process does just before it runs the workload.
#[derive(Debug)]
pub struct WorkloadPlan<'a> {
    /// Fds to `dup2` onto 0, 1, 2 (`None`: keep the inherited one).
    pub stdio: [Option<BorrowedFd<'a>>; 3],
    /// Resource limits, in order.
    pub rlimits: Vec<RlimitSetting>,
    /// The privilege step.
    pub privileges: Privileges<'a>,
    /// The working directory.
    pub cwd: CString,
    /// `umask(2)`, when set.
    pub umask: Option<libc::mode_t>,
}

/// Everything the exec child needs, prepared by the supervisor before cloning.
#[derive(Debug)]
pub struct ExecPlan<'a> {
    /// The first steps.
    pub prologue: Prologue<'a>,
    /// Namespace set-up.
    pub setup: SetupPlan,
    /// The child is pid 1 of a new pid namespace: fork the workload and reap.
    pub pid1: bool,
    /// The workload's last steps.
    pub workload: WorkloadPlan<'a>,
    /// The program's candidate paths, tried in order as `execvp(3)` does: the next one after
    /// `ENOENT`, `ENOTDIR` or `EACCES` (the workload's identity may be refused one that the
    /// supervisor can run, e.g. a shim under a 0700 home); the search itself is done by the
    /// supervisor, which builds the list.
    pub programs: Vec<CString>,
    /// `argv`, `argv[0]` included.
    pub argv: CStringArray,
    /// `envp`.
    pub envp: CStringArray,
    /// Namespaces to join (`setns(2)`) before the set-up, each an open namespace file and its
    /// `CLONE_NEW*` type; those types are not in the clone flags.
    pub joins: Vec<(BorrowedFd<'a>, i32)>,
    /// The start gate of a created container: the workload reports [`Report::Ready`], then
    /// reads one byte from this descriptor (a FIFO it holds open for reading and writing, so
    /// the read waits for a writer's byte and never sees EOF) before its own steps and the
    /// `execve`. `None`: run at once.
    pub gate: Option<BorrowedFd<'a>>,
    /// The child outlives the supervisor (an OCI container after `create`): no parent-death
    /// signal, and pid 1 ends the way the workload ended ([`exit_like`]) instead of
    /// reporting its status.
    pub detached: bool,
}

/// A child created by [`spawn_exec`].
#[derive(Debug)]
pub struct Spawned {
    /// Its pid in the supervisor's pid namespace.
    pub pid: i32,
    /// A pidfd for it (`CLONE_PIDFD`).
    pub pidfd: OwnedFd,
    /// Whether it started in the cgroup passed (`clone3` with `CLONE_INTO_CGROUP`); `false`
    /// after the `clone` fallback, and the supervisor must move it before releasing it.
    pub in_cgroup: bool,
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `_exit(2)`: ends the calling process at once, without running destructors or atexit
/// handlers (which a forked child must not run: they belong to the parent).
///
/// # References
/// _exit(2).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Writes one report message, ignoring errors (the supervisor may be gone).
pub fn report(fd: BorrowedFd<'_>, msg: Report) {
    let buf = msg.encode();
    // SAFETY: buf is a live 12-byte array; fd is open in this process.
    let _ = unsafe {
        libc::write(
            fd.as_raw_fd(),
            buf.as_ptr().cast::<libc::c_void>(),
            REPORT_LEN,
        )
    };
}

/// Reports that `step` failed with `errno` and exits with [`CHILD_SETUP_FAILED`]. `SIGPIPE`
/// is blocked first: with the supervisor gone (a detached container after `create`) the
/// write fails with `EPIPE` instead of killing the child with a signal that would hide the
/// exit status.
pub fn fail(fd: BorrowedFd<'_>, step: Step, detail: i32, errno: i32) -> ! {
    // SAFETY: a sigset_t on the stack, filled by sigemptyset/sigaddset; blocking a signal in
    // the calling thread is async-signal-safe.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    report(
        fd,
        Report::StepFailed {
            step,
            detail,
            errno,
        },
    );
    exit_now(CHILD_SETUP_FAILED)
}

/// Reads one byte from `fd`, retrying `EINTR`; `None` at EOF or on error.
pub fn read_byte(fd: BorrowedFd<'_>) -> Option<u8> {
    let mut b = 0u8;
    loop {
        // SAFETY: b is a live byte; fd is open in this process.
        let r = unsafe { libc::read(fd.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
        if r == 1 {
            return Some(b);
        }
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        return None;
    }
}

/// The child's first steps: close the supervisor's pipe ends, set `SIGKILL` as the
/// parent-death signal, then make sure the parent did not die before that (`getppid`
/// outside a new pid namespace). Exits with [`CHILD_PARENT_GONE`] when the parent is gone.
/// Allocation-free.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that created the child exits: the supervisor's
/// spawning thread must outlive the context.
///
/// # References
/// prctl(2) `PR_SET_PDEATHSIG`.
pub fn prologue(p: &Prologue<'_>) {
    for fd in &p.close {
        // SAFETY: the child's fd table is its own copy (no CLONE_FILES); closing the
        // supervisor's ends here does not touch the supervisor's fds, and the OwnedFds that
        // own them in the copied memory are never dropped (the child _exits or execs).
        unsafe { libc::close(fd.as_raw_fd()) };
    }
    if detached() {
        return;
    }
    // SAFETY: PR_SET_PDEATHSIG takes an integer signal number.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } < 0
    {
        fail(p.report, Step::DeathSignal, 0, errno());
    }
    if let Some(ppid) = p.parent_pid {
        // SAFETY: getppid has no arguments and cannot fail.
        if unsafe { libc::getppid() } != ppid {
            exit_now(CHILD_PARENT_GONE);
        }
    }
}

/// Blocks until the supervisor writes `expect` on the sync pipe; exits with
/// [`CHILD_PARENT_GONE`] on EOF (the supervisor died: every write end is closed).
pub fn wait_for(sync: BorrowedFd<'_>, expect: u8) {
    if read_byte(sync) != Some(expect) {
        exit_now(CHILD_PARENT_GONE);
    }
}

/// Identity and namespace set-up ([`SetupPlan`]), allocation-free. On failure reports the
/// step and exits with [`CHILD_SETUP_FAILED`].
///
/// # References
/// setresuid(2), setgroups(2), sethostname(2), user_namespaces(7).
pub fn setup(plan: &SetupPlan, report_fd: BorrowedFd<'_>, sync: BorrowedFd<'_>) {
    // Raw system calls, never glibc's setresuid/setresgid/setgroups: those broadcast the
    // change to every thread glibc knows of (`__nptl_setxid`), and after a raw clone its list
    // still holds the supervisor's threads, which this child does not have. The broadcast
    // then waits on a futex of a thread that was starting or exiting at clone time, forever
    // (seen here under load: a context hung in `setxid_mark_thread` until its wall time).
    if plan.become_root {
        if let Err(e) = super::privileges::set_res_gid(0) {
            fail(report_fd, Step::SetIds, 0, e.raw_os_error());
        }
        if let Err(e) = super::privileges::set_res_uid(0) {
            fail(report_fd, Step::SetIds, 1, e.raw_os_error());
        }
        rearm_death_signal(report_fd, Some(sync));
    }
    if plan.drop_groups
        && let Err(e) = super::privileges::set_groups(&[])
        && e != rustix::io::Errno::PERM
    {
        fail(report_fd, Step::SetGroups, 0, e.raw_os_error());
    }
    if let Some(name) = &plan.hostname {
        // SAFETY: name is a live buffer of the length passed; the kernel copies it.
        if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } < 0 {
            fail(report_fd, Step::Hostname, 0, errno());
        }
    }
    if let Err((i, e)) = mount::apply(&plan.mounts) {
        fail(
            report_fd,
            Step::Mount,
            i32::try_from(i).unwrap_or(i32::MAX),
            e.raw_os_error().unwrap_or(libc::EIO),
        );
    }
    if plan.loopback
        && let Err(e) = mount::loopback_up()
    {
        fail(
            report_fd,
            Step::Loopback,
            0,
            e.raw_os_error().unwrap_or(libc::EIO),
        );
    }
}

/// Sets `PR_SET_PDEATHSIG=SIGKILL` again after a change of credentials: the kernel clears the
/// parent-death signal whenever the effective ids change (`commit_creds`), and becoming root of
/// a user namespace whose root is another host id is such a change. With `sync`, then exits
/// if the supervisor died before the signal was set again (every write end of the sync pipe is
/// closed: `POLLHUP`). Allocation-free.
///
/// # References
/// prctl(2) `PR_SET_PDEATHSIG` ("cleared ... upon changes to effective user ID ..."), poll(2).
pub fn rearm_death_signal(report_fd: BorrowedFd<'_>, sync: Option<BorrowedFd<'_>>) {
    if detached() {
        return;
    }
    // SAFETY: PR_SET_PDEATHSIG takes an integer signal number.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } < 0
    {
        fail(report_fd, Step::DeathSignal, 1, errno());
    }
    if let Some(sync) = sync {
        let mut p = libc::pollfd {
            fd: sync.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: p is one live pollfd; a zero timeout only samples the pipe's state.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        if r > 0 && p.revents & libc::POLLHUP != 0 {
            exit_now(CHILD_PARENT_GONE);
        }
    }
}

/// The privilege step, in DESIGN.md's order; allocation-free. A failure is returned as the
/// step and a 64-bit code: [`super::privileges::Failure::encode`] and
/// [`super::seccomp::Failure::encode`] for privileges and seccomp, the
/// errno for `no_new_privs`, `(Failure::encode() << 32) | errno` for Landlock. The Landlock
/// ruleset comes after `no_new_privs` (which `landlock_restrict_self` needs once
/// `CAP_SYS_ADMIN` is gone) and before seccomp (whose filter may deny the Landlock calls).
///
/// # Errors
/// The step that failed and its code.
///
/// # References
/// prctl(2) `PR_SET_NO_NEW_PRIVS`, capabilities(7), landlock(7), seccomp(2).
pub fn apply_privileges(p: &Privileges<'_>) -> Result<(), (Step, u64)> {
    // SAFETY: getppid takes no arguments and cannot fail.
    let parent = unsafe { libc::getppid() };
    // Without no_new_privs a filter may only be installed with CAP_SYS_ADMIN: then it goes
    // first, before the capability drop (as runc does), and every later call of this step
    // runs under it.
    let seccomp_first = !p.no_new_privs
        && p.landlock.is_none()
        && p.seccomp_listener.is_none()
        && p.caps.is_none_or(|c| !c.no_new_privs);
    if seccomp_first
        && let Some(filter) = p.seccomp
        && let Err(e) = filter.install_privileged()
    {
        return Err((Step::Seccomp, e.encode()));
    }
    if let Some(caps) = p.caps
        && let Err(e) = caps.apply_current_thread()
    {
        return Err((Step::Capabilities, e.encode()));
    }
    if !detached() && p.caps.is_some_and(|c| c.uid.is_some() || c.gid.is_some()) {
        // The uid change cleared the parent-death signal (see rearm_death_signal); it matters
        // when the workload is the context's top process (no pid namespace).
        // SAFETY: PR_SET_PDEATHSIG takes an integer signal number.
        if unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
        } < 0
        {
            return Err((Step::DeathSignal, step_code(0, errno())));
        }
        // A parent that died between the uid change and the re-arm sent no signal: the
        // child was reparented, which getppid shows.
        // SAFETY: getppid takes no arguments and cannot fail.
        if unsafe { libc::getppid() } != parent {
            exit_now(CHILD_PARENT_GONE);
        }
    }
    if p.no_new_privs {
        // SAFETY: integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err((Step::NoNewPrivs, step_code(0, errno())));
        }
    }
    if let Some(ruleset) = p.landlock
        && let Err((failure, errno)) = ruleset.apply_current_thread()
    {
        // (detail, errno) = (which call and rule, the errno).
        return Err((Step::Landlock, step_code(failure.encode(), errno)));
    }
    if let Some(filter) = p.seccomp.filter(|_| !seccomp_first) {
        let installed = match p.seccomp_listener {
            Some(h) if filter.notifies => install_and_hand_over(filter, h),
            _ => filter.install(false),
        };
        if let Err(e) = installed {
            return Err((Step::Seccomp, e.encode()));
        }
    }
    Ok(())
}

/// Installs `filter` with a listener and sends the listener to the supervisor, then closes
/// both the listener and the socket here (see [`ListenerHandover`]); on `EBUSY` installs
/// the fallback filter instead. Allocation-free: `seccomp`, `sendmsg` and `close` on
/// prepared data.
fn install_and_hand_over(
    filter: super::seccomp::Program<'_>,
    h: ListenerHandover<'_>,
) -> Result<(), super::seccomp::Failure> {
    use super::seccomp::Failure;
    let listener = match filter.install_with_listener() {
        Ok(l) => l,
        Err(Failure::InstallListener(libc::EBUSY)) => return h.fallback.install(false),
        Err(e) => return Err(e),
    };
    let sent = super::scm::send_fd(
        h.sock,
        std::os::fd::AsFd::as_fd(&listener),
        super::seccomp_notify::LISTENER_TAG,
    );
    // The supervisor holds its own copy now (SCM_RIGHTS duplicated the open file).
    drop(listener);
    // SAFETY: the socket is the context's end of the pair, open in this process's own fd
    // table (a copy: clone without CLONE_FILES); its OwnedFd lives in the copied memory of the
    // supervisor's plan and is never dropped here (the workload execs or _exits), so closing
    // the number now cannot close it twice.
    unsafe { libc::close(h.sock.as_raw_fd()) };
    sent.map_err(|e| Failure::SendListener(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Unblocks every signal and puts `SIGPIPE` back to its default (Rust's runtime ignores it,
/// and an ignored disposition survives `execve`). Allocation-free.
///
/// # Errors
/// The `sigprocmask`/`signal` error.
///
/// # References
/// sigprocmask(2), signal(7).
pub fn reset_signals() -> io::Result<()> {
    // SAFETY: all-zero is a valid, empty sigset_t; sigemptyset makes that explicit.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a live sigset_t; the old-mask pointer is NULL.
    let r = unsafe {
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: SIG_DFL is a valid disposition for SIGPIPE.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The workload's own steps (stdio, signals, rlimits, privileges, cwd), allocation-free;
/// on failure reports and exits.
pub fn workload_steps(w: &WorkloadPlan<'_>, report_fd: BorrowedFd<'_>) {
    for (target, src) in (0..).zip(&w.stdio) {
        if let Some(src) = src {
            // SAFETY: integer fds; dup2 onto 0..2 replaces the inherited stream and the new
            // fd has no FD_CLOEXEC.
            if unsafe { libc::dup2(src.as_raw_fd(), target) } < 0 {
                fail(report_fd, Step::Stdio, target, errno());
            }
        }
    }
    if let Err(e) = reset_signals() {
        fail(
            report_fd,
            Step::Signals,
            0,
            e.raw_os_error().unwrap_or(libc::EIO),
        );
    }
    for (i, r) in w.rlimits.iter().enumerate() {
        if let Err(e) = rlimit::set(r) {
            fail(
                report_fd,
                Step::Rlimit,
                i32::try_from(i).unwrap_or(i32::MAX),
                e.raw_os_error().unwrap_or(libc::EIO),
            );
        }
    }
    // SAFETY: cwd is NUL-terminated and lives in the plan.
    if unsafe { libc::chdir(w.cwd.as_ptr()) } < 0 {
        fail(report_fd, Step::Chdir, 0, errno());
    }
    if let Some(mask) = w.umask {
        // SAFETY: umask takes an integer and cannot fail.
        unsafe { libc::umask(mask) };
    }
    if let Err((step, code)) = apply_privileges(&w.privileges) {
        let (detail, errno) = split_code(code);
        fail(report_fd, step, detail, errno);
    }
}

/// A step's 64-bit code: `detail` in the high 32 bits, the errno in the low 32, which is how
/// it travels as the report's (detail, errno); [`split_code`] is the inverse.
fn step_code(detail: u32, errno: i32) -> u64 {
    // The errno's bits as they are: split_code casts them back.
    #[allow(clippy::cast_sign_loss)]
    let errno = errno as u32;
    (u64::from(detail) << 32) | u64::from(errno)
}

/// The report's (detail, errno) of a step's code: its high and low 32 bits, as they are.
fn split_code(code: u64) -> (i32, i32) {
    // Keeping only the low half is the point.
    #[allow(clippy::cast_possible_truncation)]
    let low = code as u32;
    ((code >> 32) as u32 as i32, low as i32)
}

/// Raw `fork` (`clone(SIGCHLD)` without glibc's atfork handlers): for pid 1, which is itself
/// a raw-cloned child that must not run them. Returns 0 in the new child.
fn raw_fork() -> io::Result<i32> {
    // SAFETY: clone with only an exit signal, NULL stack (copy-on-write of ours, like fork),
    // and no tid pointers; the child continues here and only makes raw system calls.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        i32::try_from(r).map_err(super::overflow)
    }
}

/// pid 1's loop: reap every child (orphans of the namespace are reparented to pid 1); when
/// `workload` is reaped, report its wait status and exit, which makes the kernel kill what
/// is left in the pid namespace. pid 1 first makes itself non-dumpable so the workload
/// (same uid) cannot ptrace it. Allocation-free; never returns.
///
/// # References
/// pid_namespaces(7), wait4(2), prctl(2) `PR_SET_DUMPABLE`.
pub fn pid1_reap(workload: i32, report_fd: BorrowedFd<'_>) -> ! {
    // SAFETY: integer arguments only; the name is a NUL-terminated string the kernel copies.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"nebula-init".as_ptr(), 0, 0, 0);
    }
    forward_signals(workload);
    // pid 1 holds a copy of every descriptor the supervisor had open when it cloned (other
    // contexts' pipes, id leases whose flock would stay held): keep only the report pipe.
    // An open descriptor is non-negative: the bits are the number.
    #[allow(clippy::cast_sign_loss)]
    let rep = report_fd.as_raw_fd() as libc::c_uint;
    // SAFETY: close_range takes integers; pid 1's fd table is its own (no CLONE_FILES) and
    // nothing in pid 1 uses a descriptor other than the report pipe after this point. The
    // OwnedFds in its copy of the supervisor's memory are never dropped (it only _exits).
    unsafe {
        if rep > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, rep - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, rep + 1, libc::c_uint::MAX, 0u32);
    }
    loop {
        let mut status = 0;
        // SAFETY: status is a live c_int; a NULL rusage is allowed.
        let r = unsafe { libc::wait4(-1, &mut status, libc::__WALL, std::ptr::null_mut()) };
        if r == workload {
            if detached() {
                exit_like(status);
            }
            report(report_fd, Report::Workload { status });
            exit_now(0);
        }
        if r < 0 {
            match errno() {
                libc::EINTR => continue,
                _ => exit_now(CHILD_SETUP_FAILED),
            }
        }
    }
}

/// The workload that pid 1 forwards signals to (pid 1's own copy of memory).
static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe and takes integers.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Makes pid 1 pass the signals a process can catch on to the workload, as an init such as
/// tini does: a pid-namespace init ignores every signal it has no handler for, so without
/// this a `SIGTERM` from outside (`kill`, an OCI runtime's `kill`) would never reach a
/// workload that handles it. Not forwarded: `SIGCHLD` (pid 1's own business), the faults
/// (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGTRAP`, `SIGSYS`, `SIGABRT`), which
/// would be pid 1's own, and glibc's two internal real-time signals. Allocation-free.
fn forward_signals(workload: i32) {
    FORWARD_TO.store(workload, std::sync::atomic::Ordering::Relaxed);
    for sig in 1..=libc::SIGRTMAX() {
        if matches!(
            sig,
            libc::SIGKILL
                | libc::SIGSTOP
                | libc::SIGCHLD
                | libc::SIGSEGV
                | libc::SIGBUS
                | libc::SIGILL
                | libc::SIGFPE
                | libc::SIGTRAP
                | libc::SIGSYS
                | libc::SIGABRT
                | 32
                | 33
        ) {
            continue;
        }
        // SAFETY: an all-zero sigaction is valid; the handler is an extern "C" fn that only
        // calls kill(2); sigaction(2) is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Forks the workload from pid 1 and reaps until it is done (never returns in pid 1); in the
/// workload returns, so the caller runs it.
pub fn pid1_fork_workload(report_fd: BorrowedFd<'_>) {
    match raw_fork() {
        Ok(0) => {}
        Ok(pid) => pid1_reap(pid, report_fd),
        Err(e) => fail(
            report_fd,
            Step::ForkWorkload,
            0,
            e.raw_os_error().unwrap_or(libc::EIO),
        ),
    }
}

/// Whether this child outlives its supervisor ([`ExecPlan::detached`]). Set once in the
/// child's own copy of memory, first thing, and read by the steps that arm the parent-death
/// signal.
static DETACHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn detached() -> bool {
    DETACHED.load(std::sync::atomic::Ordering::Relaxed)
}

fn exec_child(plan: &ExecPlan<'_>) -> ! {
    let rep = plan.prologue.report;
    // The child's copy of the static: the supervisor's is untouched.
    DETACHED.store(plan.detached, std::sync::atomic::Ordering::Relaxed);
    prologue(&plan.prologue);
    wait_for(plan.prologue.sync, GO);
    for (i, (fd, nstype)) in (0..).zip(&plan.joins) {
        // SAFETY: fd is an open namespace file of the plan; nstype is a CLONE_NEW* integer.
        if unsafe { libc::setns(fd.as_raw_fd(), *nstype) } < 0 {
            fail(rep, Step::JoinNamespace, i, errno());
        }
    }
    setup(&plan.setup, rep, plan.prologue.sync);
    if plan.pid1 {
        pid1_fork_workload(rep);
    }
    if let Some(gate) = plan.gate {
        report(rep, Report::Ready);
        if read_byte(gate).is_none() {
            fail(rep, Step::Gate, 0, errno());
        }
    }
    workload_steps(&plan.workload, rep);
    let mut refused = false;
    for program in &plan.programs {
        // SAFETY: program, argv and envp are NUL-terminated strings and NULL-terminated
        // arrays owned by the plan, which outlives this call (the child's copy of the parent
        // memory).
        unsafe { libc::execve(program.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr()) };
        match errno() {
            libc::EACCES => refused = true,
            libc::ENOENT | libc::ENOTDIR => {}
            e => fail(rep, Step::Exec, 0, e),
        }
    }
    fail(
        rep,
        Step::Exec,
        0,
        if refused { libc::EACCES } else { libc::ENOENT },
    )
}

/// `clone3(2)` with `flags` (namespace flags), `CLONE_PIDFD` and, with `cgroup`,
/// `CLONE_INTO_CGROUP`; falls back to `clone(2)` (with `CLONE_PIDFD`, without the cgroup)
/// only when `clone3` is `ENOSYS`. Returns `(pid, pidfd, in_cgroup)` in the parent and
/// `(0, -1, _)` in the child.
///
/// # Safety
/// In a multi-threaded process the child may only make async-signal-safe calls until it
/// execs or `_exit`s, and must never return into code that would run the parent's
/// destructors.
unsafe fn clone_pidfd(
    flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
) -> io::Result<(i32, RawFd, bool)> {
    let mut pidfd: RawFd = -1;
    let mut args = linux_raw_sys::general::clone_args {
        flags: flags | u64::from(linux_raw_sys::general::CLONE_PIDFD),
        pidfd: &mut pidfd as *mut RawFd as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: 0,
    };
    if let Some(fd) = cgroup {
        args.flags |= linux_raw_sys::general::CLONE_INTO_CGROUP;
        args.cgroup =
            u64::try_from(fd.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    }
    // SAFETY: args is a live clone_args of the size passed; pidfd points at a live RawFd the
    // kernel writes in the parent. With no stack the child runs on a copy-on-write copy of
    // ours, like fork; the caller upholds the child-side contract.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut linux_raw_sys::general::clone_args,
            std::mem::size_of::<linux_raw_sys::general::clone_args>(),
        )
    };
    if r >= 0 {
        return Ok((
            i32::try_from(r).map_err(super::overflow)?,
            pidfd,
            cgroup.is_some(),
        ));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(e);
    }
    // clone(2) on x86-64: (flags, stack, parent_tid, child_tid, tls); CLONE_PIDFD stores the
    // pidfd through parent_tid.
    let low = (flags as libc::c_ulong)
        | libc::SIGCHLD as libc::c_ulong
        | libc::CLONE_PIDFD as libc::c_ulong;
    // SAFETY: as above; the parent_tid argument points at the live pidfd variable.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            low,
            0usize,
            &mut pidfd as *mut RawFd,
            0usize,
            0usize,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((i32::try_from(r).map_err(super::overflow)?, pidfd, false))
}

/// Spawns the exec child described by `plan` into new namespaces (`ns_flags`, `CLONE_NEW*`),
/// straight into `cgroup` when given. The child runs the sequence in the module docs and
/// waits for [`GO`] on the sync pipe before it sets anything up; the supervisor writes the
/// uid/gid maps (and, when `in_cgroup` is false, moves it into the cgroup) first.
///
/// # Errors
/// The `clone3` (or fallback `clone`) error: `EPERM`/`ENOSPC` for namespaces the caller may
/// not create, `EINVAL` for an invalid flag combination, `EBUSY`/`EOPNOTSUPP` for a cgroup
/// that cannot take processes.
///
/// # References
/// clone3(2) (`CLONE_INTO_CGROUP`, `CLONE_PIDFD`), namespaces(7).
pub fn spawn_exec(
    plan: &ExecPlan<'_>,
    ns_flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
) -> io::Result<Spawned> {
    // SAFETY: the child runs exec_child only, which makes raw system calls on the prepared
    // plan and ends in execve or _exit; it never returns into the caller.
    let (pid, pidfd, in_cgroup) = unsafe { clone_pidfd(ns_flags, cgroup)? };
    if pid == 0 {
        exec_child(plan);
    }
    // SAFETY: the kernel returned a fresh pidfd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned {
        pid,
        pidfd,
        in_cgroup,
    })
}

/// `fork(3)` through glibc, for the closure path: `Ok(None)` in the child, `Ok(Some(pid))` in
/// the parent.
///
/// glibc's fork runs its atfork handlers, which take and reset malloc's arena locks and the
/// stdio locks, so the child may allocate. What stays is the general rule for forking a
/// multi-threaded program: locks that *other* threads held at the moment of the fork (a Rust
/// `Mutex`, the `stdout` lock) stay held in the child, so code run there must not wait on
/// locks that other threads of the parent use; such a wait deadlocks (the supervisor's
/// timeout then kills it). The child must end with [`exit_now`], never by returning into the
/// parent's code.
///
/// # Errors
/// `EAGAIN` (`RLIMIT_NPROC`, `pids.max`), `ENOMEM`.
///
/// # References
/// fork(2), pthread_atfork(3).
pub fn fork() -> io::Result<Option<i32>> {
    // SAFETY: see above: the child is a copy of this thread with glibc's malloc and stdio
    // reset by its atfork handlers; the callers (the process module's closure path) end the
    // child with exit_now.
    let pid = unsafe { libc::fork() };
    match pid {
        p if p < 0 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        p => Ok(Some(p)),
    }
}

/// Ends the calling process the way `status` (a raw wait status) says its child ended: the
/// same exit code, or the same signal (default disposition restored, unblocked, core dumps
/// off so the mirror does not dump again). For an intermediate process that must pass its
/// child's end on. Allocation-free; never returns.
///
/// # References
/// wait(2) status macros, kill(2), signal(7).
pub fn exit_like(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let _ = rlimit::set(&RlimitSetting {
            resource: rlimit::Resource::Core,
            soft: 0,
            hard: 0,
        });
        let _ = reset_signals();
        // SAFETY: integer arguments; restoring the default disposition and signalling
        // ourselves is async-signal-safe. A process that is not a pid-namespace init dies of
        // its own default-action signal.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
        }
        exit_now(128 + sig)
    }
    exit_now(libc::WEXITSTATUS(status))
}

/// `unshare(2)` of the namespaces in `flags` (`CLONE_NEW*`) for the calling process.
/// `CLONE_NEWUSER` needs a single-threaded caller; `CLONE_NEWPID` affects the caller's
/// next child, which becomes pid 1.
///
/// # Errors
/// `EINVAL` (`CLONE_NEWUSER` in a threaded process, or a flag outside the `int` unshare
/// takes, which the kernel would refuse too), `EPERM`, `ENOSPC`.
///
/// # References
/// unshare(2).
pub fn unshare(flags: u64) -> io::Result<()> {
    let flags =
        libc::c_int::try_from(flags).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: integer argument; no CLONE_FILES/CLONE_FS sharing changes are requested by
    // callers here (only namespace flags), so no Rust-held state is invalidated.
    if unsafe { libc::unshare(flags) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Resource usage of a reaped child and its reaped descendants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rusage {
    /// User CPU time.
    pub user: Duration,
    /// System CPU time.
    pub system: Duration,
    /// The largest resident set of any of them, in bytes.
    pub max_rss_bytes: u64,
}

/// `wait4(pid, &status, 0, &rusage)`, retrying `EINTR`: reaps our child `pid` and returns its
/// raw wait status and resource usage (which includes the descendants it waited for).
///
/// # Errors
/// `ECHILD` when `pid` is not an unwaited child of the caller.
///
/// # References
/// wait4(2), getrusage(2).
pub fn wait4(pid: i32) -> io::Result<(i32, Rusage)> {
    loop {
        let mut status = 0;
        // SAFETY: all-zero is a valid rusage.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: status and ru are live and written once by the kernel.
        let r = unsafe { libc::wait4(pid, &mut status, libc::__WALL, &mut ru) };
        if r == pid {
            let tv = |t: libc::timeval| {
                Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
                    + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
            };
            return Ok((
                status,
                Rusage {
                    user: tv(ru.ru_utime),
                    system: tv(ru.ru_stime),
                    max_rss_bytes: u64::try_from(ru.ru_maxrss).unwrap_or(0) * 1024,
                },
            ));
        }
        let e = io::Error::last_os_error();
        if r < 0 && e.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Err(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Unshared,
            Report::Workload { status: 0x0900 },
            Report::StepFailed {
                step: Step::Mount,
                detail: 3,
                errno: libc::EROFS,
            },
        ] {
            assert_eq!(Report::decode(&r.encode()), Some(r));
        }
        assert_eq!(Report::decode(&[0xff; REPORT_LEN]), None);
    }

    #[test]
    fn cstring_array_is_null_terminated() {
        let a = CStringArray::new(vec![c"a".into(), c"bc".into()]);
        assert_eq!(a.ptrs.len(), 3);
        assert!(a.ptrs[2].is_null());
    }
}
