//! The closure path's child side: after glibc's `fork()` (malloc and stdio reset by its
//! atfork handlers), so ordinary Rust runs here; the namespace steps are the same
//! allocation-free ones the exec path uses.
//!
//! ```text
//! C1 (host pid ns)  prologue; wait 'C' (in its cgroup); unshare(CLONE_NEW*);
//!                   report Unshared; wait 'G' (maps written);
//!                   with a pid namespace: fork C2, wait for it, end like it
//! C2 (pid 1)        death signal; setup (ids, hostname, mounts, lo); fork C3; reap
//! C3 (workload)     stdio, signals, rlimits, cwd, privileges; run the closure;
//!                   send postcard(Result<T, panic message>) with a length prefix; _exit
//! ```

use std::os::fd::{AsFd, BorrowedFd};
use std::panic::AssertUnwindSafe;

use serde::Serialize;

use super::config::Namespaces;
use super::fds::Fds;
use crate::sys::clone::{self as sc, Prologue, Report, SetupPlan, Step, WorkloadPlan};

/// What the child of a closure context does, prepared by the supervisor before the fork.
pub(super) struct ClosurePlan<'a> {
    /// The namespaces it unshares.
    pub(super) namespaces: Namespaces,
    /// The steps in the new namespaces (ids, hostname, mounts, loopback).
    pub(super) setup: SetupPlan,
    /// The workload's last steps (stdio, rlimits, cwd, privileges).
    pub(super) workload: WorkloadPlan<'a>,
    /// The largest result sent back.
    pub(super) max_result_bytes: usize,
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Runs in C1, right after the fork; never returns.
pub(super) fn closure_child<T, F>(plan: &ClosurePlan<'_>, fds: &Fds, parent: i32, f: F) -> !
where
    T: Serialize,
    F: FnOnce() -> T,
{
    let pro = fds.prologue(Some(parent));
    let rep = pro.report;
    // fork copied the supervisor's descriptors of other contexts: their seccomp listeners
    // and handover sockets (with one, this closure could let their denied calls run), their
    // pipes (their output, their reports, their release), their id lease files. Closed
    // first, before this child opens anything.
    // SAFETY: this is the child right after fork, before it opened anything; the numbers
    // it closes are copies of the supervisor's descriptors, whose owners never run here.
    #[allow(unsafe_code)]
    let closed = unsafe { crate::seccomp::notify::close_in_forked_child(&fds.child_ends()) };
    if let Err(e) = closed {
        sc::fail(rep, Step::Seccomp, 0, errno_of(&e));
    }
    sc::prologue(&pro);
    sc::wait_for(pro.sync, sc::PLACED);
    let ns = plan.namespaces;
    if !ns.is_empty()
        && let Err(e) = sc::unshare(ns.bits())
    {
        sc::fail(rep, Step::Unshare, 0, errno_of(&e));
    }
    if ns.contains(Namespaces::USER) {
        sc::report(rep, Report::Unshared);
    }
    sc::wait_for(pro.sync, sc::GO);
    if !ns.contains(Namespaces::PID) {
        sc::setup(&plan.setup, rep, pro.sync);
        run_workload(plan, fds, f);
    }
    match sc::fork() {
        Ok(None) => {
            // C2: pid 1 of the new pid namespace.
            sc::prologue(&Prologue {
                sync: pro.sync,
                report: rep,
                parent_pid: None,
                close: Vec::new(),
            });
            sc::setup(&plan.setup, rep, pro.sync);
            match sc::fork() {
                Ok(None) => run_workload(plan, fds, f),
                Ok(Some(w)) => sc::pid1_reap(w, rep),
                Err(e) => sc::fail(rep, Step::ForkWorkload, 0, errno_of(&e)),
            }
        }
        Ok(Some(c2)) => match sc::wait4(c2) {
            Ok((status, _)) => sc::exit_like(status),
            Err(_) => sc::exit_now(sc::CHILD_SETUP_FAILED),
        },
        Err(e) => sc::fail(rep, Step::ForkWorkload, 0, errno_of(&e)),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// Runs in the workload process: the last steps, the closure, the result; never returns.
fn run_workload<T, F>(plan: &ClosurePlan<'_>, fds: &Fds, f: F) -> !
where
    T: Serialize,
    F: FnOnce() -> T,
{
    let rep = fds.rep_wr.as_fd();
    // The userfaultfd is opened before the privilege step: seccomp refuses userfaultfd(2).
    if let Some(sock) = fds.take_watch_child() {
        super::uffd_watch::child_start(sock);
    }
    sc::workload_steps(&plan.workload, rep);
    let (msg, code): (Result<T, String>, i32) = match std::panic::catch_unwind(AssertUnwindSafe(f))
    {
        Ok(v) => (Ok(v), 0),
        Err(p) => (Err(panic_message(p.as_ref())), 101),
    };
    let body = postcard::to_allocvec(&msg).unwrap_or_else(|e| {
        postcard::to_allocvec(&Err::<T, String>(format!(
            "the result does not serialize: {e}"
        )))
        .unwrap_or_default()
    });
    if let Some(out) = fds.result_wr() {
        write_all(out, &(body.len() as u64).to_le_bytes());
        // An oversized result is announced by its length only; the supervisor refuses it.
        if body.len() <= plan.max_result_bytes {
            write_all(out, &body);
        }
    }
    sc::exit_now(code)
}
