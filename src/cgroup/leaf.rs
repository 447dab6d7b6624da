//! [`Leaf`]: the cgroup of one context, and [`EventFile`], a file the kernel announces
//! changes of.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, OFlags, unlinkat};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, kill_process};

use super::controller::Controller;
use super::error::CgroupError;
use super::fs::{CgroupDir, Wake, poll_pri, read_from_start, write_once};
use super::parse;
use super::parse::{CgroupEvents, ParseError};

/// How long [`Drop`] waits for a killed leaf to empty before it tries `rmdir` anyway.
const DROP_WAIT: Duration = Duration::from_secs(10);
/// How long `rmdir` is retried while the kernel still reports `EBUSY`.
const RMDIR_RETRY: Duration = Duration::from_millis(200);
/// Re-read a watched file at least this often even without a notification (a safety net;
/// the kernel does notify).
const MAX_POLL_SLICE: Duration = Duration::from_secs(1);

/// The cgroup of one context: `<root>/<name>`, created by [`CgroupRoot::create_leaf`].
///
/// A leaf created by nebula owns its directory: **dropping it kills every process in it**
/// (`cgroup.kill`), waits up to 10 s for `populated 0` and removes the directory, best
/// effort and without panicking. Read what you need to report first, in particular
/// [`Leaf::memory_events`] (`oom_kill`), since the counters go with the directory.
///
/// Setters write one interface file each; readers return typed values. A file of a
/// controller that is not enabled for the leaf gives [`CgroupError::ControllerNotEnabled`]
/// naming the root's `cgroup.subtree_control`.
///
/// [`CgroupRoot::create_leaf`]: super::CgroupRoot::create_leaf
#[derive(Debug)]
pub struct Leaf {
    pub(super) dir: CgroupDir,
    name: String,
    parent: Arc<CgroupDir>,
    owned: bool,
    removed: bool,
}

impl Leaf {
    pub(crate) fn new(dir: CgroupDir, name: String, parent: Arc<CgroupDir>, owned: bool) -> Leaf {
        Leaf {
            dir,
            name,
            parent,
            owned,
            removed: false,
        }
    }

    /// Opens, without owning it, the cgroup at `path` that a less trusted party named (the
    /// admin registry reading a user's entry as root): no symlink or magic link is followed,
    /// the parent and the leaf must both be cgroup2 directories, and every file is opened
    /// under the leaf's fd with `O_NOFOLLOW | O_NONBLOCK` and read up to a bound. Dropping
    /// it leaves the cgroup alone; [`Leaf::remove`] removes it only when it is empty.
    ///
    /// # Errors
    ///
    /// [`CgroupError::InvalidName`] for a path without a parent and a valid last component;
    /// [`CgroupError::OpenDir`] (`ELOOP` for a symlink on the way),
    /// [`CgroupError::NotCgroup2`], [`CgroupError::Statfs`].
    pub fn open_recorded(path: &Path) -> Result<Leaf, CgroupError> {
        let name =
            path.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| CgroupError::InvalidName {
                    name: path.display().to_string(),
                    reason: "a recorded cgroup must be an absolute path ending in a cgroup name",
                })?;
        super::fs::validate_name(name)?;
        let parent_path = path.parent().unwrap_or(Path::new("/"));
        let parent = CgroupDir::open_untrusted(parent_path)?;
        let dir = CgroupDir::open_untrusted(&parent_path.join(name))?;
        Ok(Leaf::new(dir, name.to_owned(), Arc::new(parent), false))
    }

    /// The uid that owns the leaf's directory and the uid that owns its `cgroup.kill` (a
    /// delegated cgroup is chowned to its user, both the directory and the files it may
    /// write).
    ///
    /// # Errors
    ///
    /// [`CgroupError::Read`] when `fstat` fails.
    pub fn owners(&self) -> Result<(u32, u32), CgroupError> {
        let err = |file: &str, source| CgroupError::Read {
            path: self.dir.file_path(file),
            source,
        };
        let dir = self.dir.owner().map_err(|e| err("", e))?;
        let kill = self
            .dir
            .file_owner("cgroup.kill")
            .map_err(|e| err("cgroup.kill", e))?;
        Ok((dir, kill))
    }

    /// The leaf's name (its directory name under the root).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The leaf's directory, e.g. `/sys/fs/cgroup/nebula/ctx-1`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A read-only, close-on-exec fd on the leaf's directory, for
    /// `clone3(CLONE_INTO_CGROUP)` (`clone_args.cgroup`): the child starts inside the leaf,
    /// with no window outside it and no `cgroup.procs` write.
    pub fn dir_fd(&self) -> BorrowedFd<'_> {
        self.dir.fd()
    }

    /// Whether dropping this value kills and removes the cgroup.
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// Makes drop kill and remove the cgroup (e.g. after [`CgroupRoot::open_leaf`]).
    ///
    /// [`CgroupRoot::open_leaf`]: super::CgroupRoot::open_leaf
    pub fn adopt(&mut self) {
        self.owned = true;
    }

    /// Makes drop leave the cgroup and its processes alone (e.g. to hand it to a daemon).
    pub fn disown(&mut self) {
        self.owned = false;
    }

    // -----------------------------------------------------------------------------------------
    // Limits

    // -----------------------------------------------------------------------------------------
    // What the kernel reports

    /// `cgroup.events`: `populated` and `frozen`.
    ///
    /// # Errors
    ///
    /// [`CgroupError::Read`], [`CgroupError::Parse`].
    pub fn cgroup_events(&self) -> Result<CgroupEvents, CgroupError> {
        self.parsed("cgroup.events", CgroupEvents::parse)
    }

    /// `cgroup.controllers`: the controllers enabled for this leaf, by kernel name.
    ///
    /// # Errors
    ///
    /// [`CgroupError::Read`].
    pub fn controllers(&self) -> Result<Vec<String>, CgroupError> {
        Ok(self
            .dir
            .read("cgroup.controllers")?
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    }

    /// `cgroup.procs`: the processes in the leaf now.
    ///
    /// # Errors
    ///
    /// [`CgroupError::Read`], [`CgroupError::Parse`].
    pub fn procs(&self) -> Result<Vec<Pid>, CgroupError> {
        let file = "cgroup.procs";
        let text = self.dir.read(file)?;
        text.split_whitespace()
            .map(|s| {
                s.parse::<i32>()
                    .ok()
                    .and_then(Pid::from_raw)
                    .ok_or_else(|| CgroupError::Parse {
                        path: self.dir.file_path(file),
                        source: ParseError::Value {
                            key: file.to_owned(),
                            value: s.to_owned(),
                            reason: "not a process id",
                        },
                    })
            })
            .collect()
    }

    /// Opens an interface file whose changes the kernel announces (`cgroup.events`,
    /// `memory.events`, `pids.events`, ...), for waiting or for an epoll set.
    ///
    /// # Errors
    ///
    /// [`CgroupError::ControllerNotEnabled`], [`CgroupError::FileMissing`],
    /// [`CgroupError::Read`].
    pub fn watch(&self, file: &str) -> Result<EventFile, CgroupError> {
        let fd = self
            .dir
            .open_file(file, OFlags::RDONLY)
            .map_err(|e| self.classify(file, e, None))?;
        let w = EventFile {
            fd,
            path: self.dir.file_path(file),
        };
        w.read()?; // arms the notification
        Ok(w)
    }

    // -----------------------------------------------------------------------------------------
    // Control

    /// Moves process `pid` (all its threads) into the leaf by writing `cgroup.procs`.
    ///
    /// Prefer spawning with `clone3(CLONE_INTO_CGROUP)` and [`Leaf::dir_fd`]; when moving,
    /// do it before the child starts its work (e.g. while it waits on a pipe).
    ///
    /// # Errors
    ///
    /// [`CgroupError::AddProcess`]: `ESRCH` no such process, `EBUSY` not a leaf, `EACCES`
    /// no write access to the common ancestor.
    pub fn add_process(&self, pid: Pid) -> Result<(), CgroupError> {
        let raw = pid.as_raw_pid();
        self.dir
            .write_raw("cgroup.procs", raw.to_string().as_bytes())
            .map_err(|source| CgroupError::AddProcess {
                pid: raw,
                path: self.dir.file_path("cgroup.procs"),
                source,
            })
    }

    /// Kills every process in the leaf with `SIGKILL`, atomically against concurrent forks
    /// (`cgroup.kill`, Linux 5.14). On older kernels it signals each pid of `cgroup.procs`,
    /// in rounds until none is left or 16 rounds passed. Returns at once; use
    /// [`Leaf::wait_empty`] to know they are gone.
    ///
    /// # Errors
    ///
    /// [`CgroupError::Kill`].
    pub fn kill(&self) -> Result<(), CgroupError> {
        let kill_err = |source| CgroupError::Kill {
            path: self.path().to_owned(),
            source,
        };
        match self.dir.write_raw("cgroup.kill", b"1") {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                for _ in 0..16 {
                    let pids = self.procs().map_err(|e| match e {
                        CgroupError::Read { source, .. } => kill_err(source),
                        other => other,
                    })?;
                    if pids.is_empty() {
                        return Ok(());
                    }
                    for pid in pids {
                        match kill_process(pid, Signal::KILL) {
                            Ok(()) | Err(Errno::SRCH) => {}
                            Err(e) => return Err(kill_err(e.into())),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(())
            }
            Err(e) => Err(kill_err(e)),
        }
    }

    /// Waits until `cgroup.events` says `populated 0`: no process is left in the leaf.
    /// Sleeps in `poll(2)` for the kernel's `POLLPRI` notification, no busy loop.
    ///
    /// # Errors
    ///
    /// [`CgroupError::WaitEmptyTimeout`] when processes remain after `timeout`;
    /// [`CgroupError::Read`], [`CgroupError::Poll`], [`CgroupError::Parse`].
    pub fn wait_empty(&self, timeout: Duration) -> Result<(), CgroupError> {
        if self.wait_events(timeout, |e| !e.populated)? {
            Ok(())
        } else {
            Err(CgroupError::WaitEmptyTimeout {
                path: self.path().to_owned(),
                timeout,
            })
        }
    }

    /// Freezes the leaf (`cgroup.freeze`, Linux 5.2). The freeze completes asynchronously:
    /// [`Leaf::wait_frozen`] waits for `cgroup.events` to say `frozen 1`.
    ///
    /// # Errors
    ///
    /// [`CgroupError::FileMissing`] before 5.2; [`CgroupError::Write`].
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.write_ctl("cgroup.freeze", "1")
    }

    /// Thaws a frozen leaf.
    ///
    /// # Errors
    ///
    /// As [`Leaf::freeze`].
    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.write_ctl("cgroup.freeze", "0")
    }

    /// Waits until `cgroup.events` says `frozen 1`.
    ///
    /// # Errors
    ///
    /// [`CgroupError::WaitFrozenTimeout`]; as [`Leaf::wait_empty`] otherwise.
    pub fn wait_frozen(&self, timeout: Duration) -> Result<(), CgroupError> {
        if self.wait_events(timeout, |e| e.frozen)? {
            Ok(())
        } else {
            Err(CgroupError::WaitFrozenTimeout {
                path: self.path().to_owned(),
                timeout,
            })
        }
    }

    /// Removes the leaf's directory (`rmdir`). It must be empty: [`Leaf::kill`] and
    /// [`Leaf::wait_empty`] first. `EBUSY` is retried for up to 200 ms. A leaf that is gone
    /// already counts as removed. If this fails, drop still makes its best-effort attempt
    /// (for an owned leaf).
    ///
    /// # Errors
    ///
    /// [`CgroupError::Remove`].
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.rmdir(RMDIR_RETRY)
    }

    /// [`Leaf::kill`], [`Leaf::wait_empty`] with `timeout`, then [`Leaf::remove`].
    ///
    /// # Errors
    ///
    /// The first step's error.
    pub fn kill_and_remove(self, timeout: Duration) -> Result<(), CgroupError> {
        self.kill()?;
        self.wait_empty(timeout)?;
        self.remove()
    }

    // -----------------------------------------------------------------------------------------
    // Internals

    fn rmdir(&mut self, retry_for: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + retry_for;
        loop {
            match unlinkat(self.parent.fd(), self.name.as_str(), AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {
                    self.removed = true;
                    return Ok(());
                }
                Err(Errno::BUSY) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(CgroupError::Remove {
                        path: self.path().to_owned(),
                        source: e.into(),
                    });
                }
            }
        }
    }

    /// Waits until `pred` holds for `cgroup.events`; `Ok(false)` on timeout.
    fn wait_events(
        &self,
        timeout: Duration,
        pred: impl Fn(&CgroupEvents) -> bool,
    ) -> Result<bool, CgroupError> {
        let deadline = Instant::now() + timeout;
        let w = EventFile {
            fd: self
                .dir
                .open_file("cgroup.events", OFlags::RDONLY)
                .map_err(|source| CgroupError::Read {
                    path: self.dir.file_path("cgroup.events"),
                    source,
                })?,
            path: self.dir.file_path("cgroup.events"),
        };
        loop {
            // Reading rearms the notification, so a change after this read wakes the poll.
            let text = w.read()?;
            let ev = CgroupEvents::parse(&text).map_err(|source| CgroupError::Parse {
                path: w.path.clone(),
                source,
            })?;
            if pred(&ev) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            // Bounded slices are a safety net only: the kernel notifies every change.
            let left = deadline.saturating_duration_since(Instant::now());
            w.wait(left.min(MAX_POLL_SLICE))?;
        }
    }

    /// Reads a file and parses it, classifying a missing file.
    pub(super) fn parsed<T>(
        &self,
        file: &str,
        parse: impl FnOnce(&str) -> Result<T, ParseError>,
    ) -> Result<T, CgroupError> {
        let text = self
            .dir
            .read_raw(file)
            .map_err(|e| self.classify(file, e, None))?;
        parse(&text).map_err(|source| CgroupError::Parse {
            path: self.dir.file_path(file),
            source,
        })
    }

    /// Writes an interface file with one `write(2)`, classifying a missing file.
    pub(super) fn write_ctl(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        let fd = self
            .dir
            .open_file(file, OFlags::WRONLY)
            .map_err(|e| self.classify(file, e, Some(value)))?;
        write_once(&fd, value.as_bytes()).map_err(|source| CgroupError::Write {
            path: self.dir.file_path(file),
            value: value.to_owned(),
            source,
        })
    }

    /// Turns an error opening `file` into the most useful [`CgroupError`]: a missing file of a
    /// controller that is not enabled names the root's `cgroup.subtree_control`.
    fn classify(&self, file: &str, e: std::io::Error, writing: Option<&str>) -> CgroupError {
        if e.raw_os_error() != Some(libc::ENOENT) {
            let path = self.dir.file_path(file);
            return match writing {
                Some(value) => CgroupError::Write {
                    path,
                    value: value.to_owned(),
                    source: e,
                },
                None => CgroupError::Read { path, source: e },
            };
        }
        let path = self.dir.file_path(file);
        if file.ends_with(".pressure") {
            return CgroupError::FileMissing {
                path,
                hint: "PSI is disabled on this kernel (CONFIG_PSI, or boot with psi=1)",
            };
        }
        let prefix = file.split('.').next().unwrap_or("");
        if let Some(c) = Controller::from_name(prefix)
            && file != "cpu.stat"
        {
            match self.dir.read_raw("cgroup.controllers") {
                Ok(list) if !list.split_whitespace().any(|x| x == c.name()) => {
                    return CgroupError::ControllerNotEnabled {
                        controller: c,
                        path: self.parent.file_path("cgroup.subtree_control"),
                    };
                }
                Ok(_) => {}
                Err(_) => {
                    // No cgroup.controllers: the leaf itself is gone.
                    return CgroupError::Read { path, source: e };
                }
            }
        }
        let hint = match file {
            "memory.peak" => "needs Linux 5.19",
            "memory.swap.max" => "this kernel has no swap accounting (CONFIG_MEMCG_SWAP)",
            "cgroup.kill" => "needs Linux 5.14",
            "cgroup.freeze" => "needs Linux 5.2",
            _ => "this kernel does not provide it",
        };
        CgroupError::FileMissing { path, hint }
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        if !self.owned || self.removed {
            return;
        }
        match self.cgroup_events() {
            Ok(e) if !e.populated => {}
            _ => {
                let _ = self.kill();
                let _ = self.wait_empty(DROP_WAIT);
            }
        }
        let _ = self.rmdir(RMDIR_RETRY);
    }
}

/// An open interface file whose changes the kernel announces with `POLLPRI` (`cgroup.events`,
/// `memory.events`, `pids.events`, `memory.events.local`, ...), from [`Leaf::watch`].
///
/// Each [`EventFile::read`] returns a fresh snapshot and rearms the notification;
/// [`EventFile::wait`] then sleeps until the file changed after that read. The fd also works
/// in an epoll set (`EPOLLPRI`).
#[derive(Debug)]
pub struct EventFile {
    fd: OwnedFd,
    path: PathBuf,
}

impl EventFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file from the start, rearming the change notification.
    ///
    /// # Errors
    ///
    /// [`CgroupError::Read`].
    pub fn read(&self) -> Result<String, CgroupError> {
        read_from_start(&self.fd).map_err(|source| CgroupError::Read {
            path: self.path.clone(),
            source,
        })
    }

    /// Reads and parses a flat-keyed file (`memory.events`, `pids.events`, ...).
    ///
    /// # Errors
    ///
    /// [`CgroupError::Read`], [`CgroupError::Parse`].
    pub fn read_flat(&self) -> Result<BTreeMap<String, u64>, CgroupError> {
        parse::parse_flat_keyed(&self.read()?).map_err(|source| CgroupError::Parse {
            path: self.path.clone(),
            source,
        })
    }

    /// Waits until the file changed after the last read, or `timeout` passed. `true` when it
    /// changed. Re-reading is the caller's job.
    ///
    /// # Errors
    ///
    /// [`CgroupError::Poll`].
    pub fn wait(&self, timeout: Duration) -> Result<bool, CgroupError> {
        match poll_pri(self.fd.as_fd(), Instant::now() + timeout) {
            Ok(Wake::Err | Wake::Pri) => Ok(true),
            Ok(Wake::Timeout) => Ok(false),
            Err(source) => Err(CgroupError::Poll {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

impl AsFd for EventFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fs::tests::TempDir;
    use super::*;
    use crate::cgroup::parse::{CpuMax, IoDevice, IoMax, Limit};

    /// A leaf over a fake cgroup directory: regular files stand in for interface files.
    fn fake_leaf(t: &TempDir, files: &[(&str, &str)]) -> Leaf {
        let leaf_dir = t.0.join("ctx");
        std::fs::create_dir_all(&leaf_dir).unwrap();
        for (f, text) in files {
            std::fs::write(leaf_dir.join(f), text).unwrap();
        }
        let parent = Arc::new(CgroupDir::open(&t.0).unwrap());
        let dir = parent.open_child("ctx").unwrap();
        Leaf::new(dir, "ctx".into(), parent, false)
    }

    #[test]
    fn readers_parse_kernel_formats() {
        let t = TempDir::new("leaf");
        let l = fake_leaf(
            &t,
            &[
                ("cgroup.controllers", "cpu io memory pids\n"),
                ("memory.current", "1245184\n"),
                ("memory.peak", "33554432\n"),
                ("memory.max", "33554432\n"),
                ("memory.high", "max\n"),
                (
                    "memory.events",
                    "low 0\nhigh 0\nmax 35\noom 1\noom_kill 1\noom_group_kill 0\n",
                ),
                ("memory.stat", "anon 1048576\nfile 0\n"),
                (
                    "memory.pressure",
                    "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n\
                     full avg10=0.00 avg60=0.00 avg300=0.00 total=3\n",
                ),
                ("pids.current", "3\n"),
                ("pids.max", "8\n"),
                ("pids.events", "max 6\n"),
                (
                    "cpu.stat",
                    "usage_usec 10\nuser_usec 7\nsystem_usec 3\nnr_periods 2\nnr_throttled 1\n\
                     throttled_usec 5\n",
                ),
                ("cpu.max", "20000 100000\n"),
                (
                    "io.stat",
                    "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n",
                ),
                ("cgroup.events", "populated 0\nfrozen 0\n"),
                ("cgroup.procs", "12\n34\n"),
            ],
        );
        assert_eq!(l.memory_current().unwrap(), 1245184);
        assert_eq!(l.memory_peak().unwrap(), Some(32 << 20));
        assert_eq!(l.memory_max().unwrap(), Limit::Value(32 << 20));
        assert_eq!(l.memory_high().unwrap(), Limit::Max);
        assert_eq!(l.memory_events().unwrap().oom_kill, 1);
        assert_eq!(l.memory_stat().unwrap()["anon"], 1 << 20);
        assert_eq!(l.memory_pressure().unwrap().full.unwrap().total_usec, 3);
        assert_eq!(l.pids_current().unwrap(), 3);
        assert_eq!(l.pids_max().unwrap(), Limit::Value(8));
        assert_eq!(l.pids_events().unwrap().max, 6);
        assert_eq!(l.cpu_stat().unwrap().nr_throttled, Some(1));
        assert_eq!(l.cpu_max().unwrap().fraction(), Some(0.2));
        assert_eq!(l.io_stat().unwrap()[&IoDevice::new(8, 0)]["rios"], 3);
        assert!(!l.cgroup_events().unwrap().populated);
        let pids: Vec<i32> = l.procs().unwrap().iter().map(|p| p.as_raw_pid()).collect();
        assert_eq!(pids, [12, 34]);
        assert_eq!(l.controllers().unwrap(), ["cpu", "io", "memory", "pids"]);
        // populated 0: returns at once
        l.wait_empty(Duration::from_millis(1)).unwrap();
    }

    #[test]
    fn setters_write_kernel_formats() {
        let t = TempDir::new("leaf");
        let files = [
            "memory.max",
            "memory.high",
            "memory.swap.max",
            "memory.oom.group",
            "cpu.max",
            "io.max",
            "pids.max",
            "cgroup.procs",
        ];
        let init: Vec<(&str, &str)> = files.iter().map(|f| (*f, "")).collect();
        let l = fake_leaf(&t, &init);
        let read = |f: &str| std::fs::read_to_string(t.0.join("ctx").join(f)).unwrap();
        l.set_memory_max(Limit::Value(32 << 20)).unwrap();
        assert_eq!(read("memory.max"), "33554432");
        l.set_memory_high(Limit::Max).unwrap();
        assert_eq!(read("memory.high"), "max");
        l.set_memory_swap_max(Limit::Value(0)).unwrap();
        assert_eq!(read("memory.swap.max"), "0");
        l.set_memory_oom_group(true).unwrap();
        assert_eq!(read("memory.oom.group"), "1");
        l.set_cpu_max(CpuMax::from_fraction(0.2).unwrap()).unwrap();
        assert_eq!(read("cpu.max"), "20000 100000");
        let mut io = IoMax::new(IoDevice::new(8, 0));
        io.wbps = Some(Limit::Value(1 << 20));
        l.set_io_max(&io).unwrap();
        assert_eq!(read("io.max"), "8:0 wbps=1048576");
        l.set_pids_max(Limit::Value(8)).unwrap();
        assert_eq!(read("pids.max"), "8");
        l.add_process(Pid::from_raw(4242).unwrap()).unwrap();
        assert_eq!(read("cgroup.procs"), "4242");
    }

    #[test]
    fn missing_files_name_the_controller_or_the_kernel() {
        let t = TempDir::new("leaf");
        let l = fake_leaf(&t, &[("cgroup.controllers", "memory\n")]);
        let e = l.set_pids_max(Limit::Value(8)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "controller \"pids\" is not enabled in {}; nebula-ctl probe shows why",
                t.0.join("cgroup.subtree_control").display()
            )
        );
        // memory is enabled but the file is absent: an older kernel
        assert_eq!(l.memory_peak().unwrap(), None);
        let e = l.set_memory_swap_max(Limit::Value(0)).unwrap_err();
        assert!(e.to_string().contains("swap accounting"), "{e}");
        let e = l.memory_pressure().unwrap_err();
        assert!(e.to_string().contains("psi=1"), "{e}");
        // bad contents name the file and the value
        std::fs::write(t.0.join("ctx/memory.current"), "lots\n").unwrap();
        let e = l.memory_current().unwrap_err();
        assert!(e.to_string().contains("memory.current"), "{e}");
        let src = std::error::Error::source(&e).unwrap().to_string();
        assert!(src.contains("\"lots\""), "{src}");
    }

    #[test]
    fn owned_leaf_is_removed_on_drop_and_disowned_is_kept() {
        let t = TempDir::new("leaf");
        let mut l = fake_leaf(&t, &[]);
        l.adopt();
        assert!(l.is_owned());
        drop(l);
        assert!(!t.0.join("ctx").exists());
        let mut l = fake_leaf(&t, &[]);
        l.adopt();
        l.disown();
        drop(l);
        assert!(t.0.join("ctx").exists());
        let l = fake_leaf(&t, &[]);
        l.remove().unwrap();
        assert!(!t.0.join("ctx").exists());
    }
}
