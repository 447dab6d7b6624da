//! The descriptors between the supervisor and a context's child: the sync, report, output,
//! result, userfaultfd and seccomp-listener channels, each private to its context.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::OFlags;
use rustix::pipe::PipeFlags;

use super::config::{ProcessConfig, Stdio};
use super::outcome::ProcessError;
use crate::sys::clone::{self as sc, Prologue};

/// The pipes between supervisor and child. Parent ends are read ends (non-blocking) except
/// the sync pipe's write end; child ends are blocking.
///
/// Every descriptor here is a [`Private`]: a closure context, a `fork` of the supervisor,
/// closes those of the supervisor's other contexts first thing, so it can neither read
/// their output nor forge their reports or releases.
pub(super) struct Fds {
    pub(super) sync_rd: Private,
    pub(super) sync_wr: Private,
    pub(super) rep_rd: Private,
    pub(super) rep_wr: Private,
    pub(super) out: Option<(Private, Private)>,
    pub(super) err: Option<(Private, Private)>,
    pub(super) null: Option<Private>,
    pub(super) result: Option<(Private, Private)>,
    pub(super) stdio: [Stdio; 3],
    /// The userfaultfd socket pair of a watched closure: the supervisor's end, and the
    /// context's (taken by the workload when it sends its userfaultfd).
    pub(super) watch: Option<Private>,
    pub(super) watch_child: std::cell::Cell<Option<OwnedFd>>,
    /// The context's end of `watch`, by number (kept by its closure; `watch_child` is taken).
    pub(super) watch_child_raw: Option<i32>,
    /// The seccomp listener's socket pair (supervisor's end, context's end), when the filter
    /// notifies.
    pub(super) listener: Option<(Private, Private)>,
}

/// A descriptor of one context that no other context may hold.
pub(super) type Private = crate::seccomp::notify::SupervisorOnlyFd;

pub(super) fn private(fd: OwnedFd) -> Private {
    Private::new(fd)
}

/// The supervisor's ends, after the child was created.
pub(super) struct ParentFds {
    pub(super) sync_wr: Option<Private>,
    pub(super) rep_rd: Private,
    pub(super) out: Option<Private>,
    pub(super) err: Option<Private>,
    pub(super) result: Option<Private>,
    pub(super) watch: Option<Private>,
    pub(super) listener: Option<Private>,
}

fn pipe(what: &'static str) -> Result<(Private, Private), ProcessError> {
    let (r, w) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| ProcessError::CreateFd {
            what,
            source: e.into(),
        })?;
    rustix::fs::fcntl_setfl(&r, OFlags::NONBLOCK).map_err(|e| ProcessError::CreateFd {
        what,
        source: e.into(),
    })?;
    Ok((private(r), private(w)))
}

impl Fds {
    pub(super) fn new(config: &ProcessConfig, closure: bool) -> Result<Fds, ProcessError> {
        let (sync_rd, sync_wr) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| ProcessError::CreateFd {
                what: "sync pipe",
                source: e.into(),
            })?;
        let (sync_rd, sync_wr) = (private(sync_rd), private(sync_wr));
        let (rep_rd, rep_wr) = pipe("report pipe")?;
        let cap = |s: Stdio, what| -> Result<_, ProcessError> {
            if s == Stdio::Capture {
                pipe(what).map(Some)
            } else {
                Ok(None)
            }
        };
        let out = cap(config.stdout, "stdout pipe")?;
        let err = cap(config.stderr, "stderr pipe")?;
        let stdio = [config.stdin, config.stdout, config.stderr];
        let null = if stdio.contains(&Stdio::Null) {
            Some(
                rustix::fs::open(
                    "/dev/null",
                    OFlags::RDWR | OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map(private)
                .map_err(|e| ProcessError::CreateFd {
                    what: "/dev/null",
                    source: e.into(),
                })?,
            )
        } else {
            None
        };
        let result = if closure {
            Some(pipe("result pipe")?)
        } else {
            None
        };
        let (watch, watch_child) = if closure && config.watch_regions {
            let e = |e: io::Error| ProcessError::CreateFd {
                what: "userfaultfd socket pair",
                source: e,
            };
            let (p, c) = crate::sys::scm::seqpacket_pair().map_err(e)?;
            rustix::fs::fcntl_setfl(&p, OFlags::NONBLOCK).map_err(|x| e(x.into()))?;
            (Some(private(p)), Some(c))
        } else {
            (None, None)
        };
        Ok(Fds {
            listener: None,
            watch,
            watch_child_raw: watch_child.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
            watch_child: std::cell::Cell::new(watch_child),
            sync_rd,
            sync_wr,
            rep_rd,
            rep_wr,
            out,
            err,
            null,
            result,
            stdio,
        })
    }

    pub(super) fn prologue(&self, parent_pid: Option<i32>) -> Prologue<'_> {
        let mut close = vec![self.sync_wr.as_fd(), self.rep_rd.as_fd()];
        for p in [&self.out, &self.err, &self.result].into_iter().flatten() {
            close.push(p.0.as_fd());
        }
        close.extend(self.watch.as_ref().map(|w| w.as_fd()));
        close.extend(self.listener.as_ref().map(|p| p.0.as_fd()));
        Prologue {
            sync: self.sync_rd.as_fd(),
            report: self.rep_wr.as_fd(),
            parent_pid,
            close,
        }
    }

    pub(super) fn child_stdio(&self) -> [Option<BorrowedFd<'_>>; 3] {
        let pick = |i: usize| -> Option<BorrowedFd<'_>> {
            match self.stdio[i] {
                Stdio::Inherit => None,
                Stdio::Null => self.null.as_ref().map(|f| f.as_fd()),
                Stdio::Capture => match i {
                    1 => self.out.as_ref().map(|p| p.1.as_fd()),
                    2 => self.err.as_ref().map(|p| p.1.as_fd()),
                    _ => None,
                },
            }
        };
        [pick(0), pick(1), pick(2)]
    }

    pub(super) fn result_wr(&self) -> Option<BorrowedFd<'_>> {
        self.result.as_ref().map(|p| p.1.as_fd())
    }

    /// Drops the child's ends (so EOF means "every child end is closed").
    pub(super) fn into_parent(self) -> ParentFds {
        ParentFds {
            sync_wr: Some(self.sync_wr),
            rep_rd: self.rep_rd,
            out: self.out.map(|p| p.0),
            err: self.err.map(|p| p.0),
            result: self.result.map(|p| p.0),
            watch: self.watch,
            listener: self.listener.map(|p| p.0),
        }
    }

    /// With `notifies`, adds the socket pair a notifying seccomp filter's listener travels
    /// on (the supervisor's end non-blocking).
    pub(super) fn with_listener_pair(mut self, notifies: bool) -> Result<Fds, ProcessError> {
        if notifies {
            let e = |e: io::Error| ProcessError::CreateFd {
                what: "seccomp listener socket pair",
                source: e,
            };
            let (p, c) = crate::sys::scm::seqpacket_pair().map_err(e)?;
            rustix::fs::fcntl_setfl(&p, OFlags::NONBLOCK).map_err(|x| e(x.into()))?;
            self.listener = Some((private(p), private(c)));
        }
        Ok(self)
    }

    /// The numbers of the context's own ends, which its closure keeps when it closes every
    /// other context's [`Private`] descriptors.
    pub(super) fn child_ends(&self) -> [i32; 8] {
        let raw =
            |f: Option<&Private>| f.map_or(-1, |f| std::os::fd::AsRawFd::as_raw_fd(&f.as_fd()));
        [
            raw(Some(&self.sync_rd)),
            raw(Some(&self.rep_wr)),
            raw(self.out.as_ref().map(|p| &p.1)),
            raw(self.err.as_ref().map(|p| &p.1)),
            raw(self.null.as_ref()),
            raw(self.result.as_ref().map(|p| &p.1)),
            self.watch_child_raw.unwrap_or(-1),
            raw(self.listener.as_ref().map(|p| &p.1)),
        ]
    }

    /// Where the workload sends its seccomp listener, with the fallback filter.
    pub(super) fn listener_handover<'a>(
        &'a self,
        fallback: Option<crate::sys::seccomp::Program<'a>>,
    ) -> Option<sc::ListenerHandover<'a>> {
        let (_, child) = self.listener.as_ref()?;
        Some(sc::ListenerHandover {
            sock: child.as_fd(),
            fallback: fallback?,
        })
    }

    /// The context's end of the userfaultfd socket pair, once (the workload takes it).
    pub(super) fn take_watch_child(&self) -> Option<OwnedFd> {
        self.watch_child.take()
    }
}
