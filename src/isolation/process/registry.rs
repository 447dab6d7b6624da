//! The registry of running process contexts: one small JSON file per context under
//! `/run/nebula` (or `$NEBULA_RUN_DIR`; `$XDG_RUNTIME_DIR/nebula` for other users than root), so that `nebula-ctl list`, `stats`, `kill` and `top`
//! see contexts started by any other `nebula-ctl run` on the host.
//!
//! # Trust
//!
//! An entry is a claim, not a fact. Every reader checks it against the kernel before using
//! it: the context's pid 1 must exist and its start time (`/proc/<pid>/stat` field 22, in
//! clock ticks since boot) must equal the one recorded, so a pid that was reused after the
//! context ended does not match. Entries that fail the check are removed by the reader
//! ([`Registry::entries`]). Before a kill, the cgroup's `cgroup.procs` must contain the pid
//! (otherwise the cgroup path is not trusted), and the signal goes through a pidfd opened
//! after the check, so it cannot hit a process that took the pid in between.
//!
//! # Writing
//!
//! [`Registry::register`] writes `<id>.json` atomically (a temporary file in the same
//! directory, `fsync`, `rename`), and the returned [`Registration`] removes it when dropped,
//! on every path out of the supervisor. A supervisor that is killed outright leaves its file
//! behind; its context dies with it (`PR_SET_PDEATHSIG`), and the next reader cleans up.
//! A name is claimed with an exclusively created `<name>.name` file (so two supervisors
//! racing for one name cannot both win); a claim whose supervisor is gone is taken over.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, PidfdFlags, Signal};
use serde::{Deserialize, Serialize};

use crate::cgroup::{CpuStat, MemoryEvents, PidsEvents, parse_limit, parse_u64};
use crate::error::IsolationError;

/// Terminal control for the live view of the registry (`nebula-ctl top`): raw input mode and
/// the window size, from the crate's syscall layer.
pub use crate::sys::tty as terminal;

/// The default registry directory.
pub const DEFAULT_DIR: &str = "/run/nebula";
/// The environment variable that overrides [`DEFAULT_DIR`].
pub const DIR_ENV: &str = "NEBULA_RUN_DIR";

/// An error of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Creating the registry directory failed.
    #[error("cannot create the registry directory {}; Hint: set {DIR_ENV} to a writable directory", .dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// Writing an entry failed.
    #[error("cannot write registry entry {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// Listing the registry directory failed.
    #[error("cannot read the registry directory {}", .dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A live context already has this name.
    #[error("a running context is already named {name:?} (id {id})")]
    NameTaken {
        /// The name.
        name: String,
        /// The id of the context holding it.
        id: String,
    },
    /// No live context matches.
    #[error("no running context has the id or name {0:?}; Hint: nebula-ctl list shows them")]
    NotFound(String),
    /// An id prefix matches several contexts.
    #[error("{query:?} matches several contexts ({}); give more of the id", .ids.join(", "))]
    Ambiguous {
        /// What was asked.
        query: String,
        /// The matching ids.
        ids: Vec<String>,
    },
    /// The entry's cgroup does not hold its pid: the entry is not trusted.
    #[error("the cgroup {} recorded for context {id} does not contain its pid {pid}; not trusted", .cgroup.display())]
    Untrusted {
        /// The context.
        id: String,
        /// Its recorded pid.
        pid: i32,
        /// Its recorded cgroup.
        cgroup: PathBuf,
    },
    /// Killing the context failed.
    #[error("killing context {id} ({how}) failed")]
    Kill {
        /// The context.
        id: String,
        /// `cgroup.kill` or `SIGKILL`.
        how: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// Reading a statistic failed.
    #[error("reading {} failed", .path.display())]
    Stat {
        /// The file.
        path: PathBuf,
        /// The system or parse error.
        #[source]
        source: std::io::Error,
    },
}

impl From<RegistryError> for IsolationError {
    fn from(e: RegistryError) -> IsolationError {
        let operation = e.to_string();
        IsolationError::System {
            operation,
            source: std::io::Error::other(e),
        }
    }
}

/// The limits of a context as recorded in its entry (for display; the kernel holds the real
/// ones).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryLimits {
    /// `memory.max` in bytes.
    pub memory_max: Option<u64>,
    /// `memory.high` in bytes.
    pub memory_high: Option<u64>,
    /// `memory.swap.max` in bytes.
    pub swap_max: Option<u64>,
    /// CPUs (`cpu.max` quota / period).
    pub cpus: Option<f64>,
    /// `pids.max`.
    pub pids_max: Option<u64>,
    /// Wall-clock limit in seconds.
    pub time_secs: Option<f64>,
    /// CPU-time limit in seconds.
    pub cpu_time_secs: Option<f64>,
}

/// One registered context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its id (12 hex digits).
    pub id: String,
    /// Its name, if given.
    pub name: Option<String>,
    /// Its pid 1, in the host's pid namespace.
    pub pid: i32,
    /// The start time of `pid` (`/proc/<pid>/stat` field 22).
    pub pid_start: u64,
    /// The supervisor (the `nebula-ctl run` process).
    pub supervisor: i32,
    /// Its cgroup directory, when it has one.
    pub cgroup: Option<PathBuf>,
    /// Its limits.
    pub limits: EntryLimits,
    /// Start, in seconds since the epoch.
    pub started: u64,
    /// The command line.
    pub command: Vec<String>,
}

/// Reads the start time (field 22 of `/proc/<pid>/stat`) of a process, `None` when it is gone.
pub fn process_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|s| s.start_time)
}

/// The fields of `/proc/<pid>/stat` nebula uses.
#[derive(Clone, Copy, Debug)]
struct ProcStat {
    ppid: i32,
    utime: u64,
    stime: u64,
    threads: u64,
    start_time: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field can contain anything, including ") ": the fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): field N is f[N - 3].
    let n = |i: usize| f.get(i - 3).and_then(|x| x.parse::<u64>().ok());
    Some(ProcStat {
        ppid: f.get(1)?.parse().ok()?,
        utime: n(14)?,
        stime: n(15)?,
        threads: n(20)?,
        start_time: n(22)?,
    })
}

impl Entry {
    /// Whether the entry describes a live context: its pid exists with the recorded start
    /// time (a reused pid has another) and the recorded supervisor as its parent.
    pub fn is_alive(&self) -> bool {
        // The context's pid 1 is a child of its supervisor for its whole life (it dies with
        // it: PR_SET_PDEATHSIG), so a live entry also has the recorded parent.
        proc_stat(self.pid)
            .is_some_and(|s| s.start_time == self.pid_start && s.ppid == self.supervisor)
    }

    /// The limits as a `name` or the id.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// A registration: removes its entry when dropped.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
    entry: Entry,
    name_claim: Option<PathBuf>,
}

impl Registration {
    /// The entry written.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Whether [`Registry::kill`] killed this context (it leaves a `<id>.killed` marker
    /// before it kills), so the supervisor can say who ended it.
    pub fn killed_by_registry(&self) -> bool {
        self.path.with_extension("killed").exists()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.path.with_extension("killed"));
        if let Some(c) = &self.name_claim {
            let _ = std::fs::remove_file(c);
        }
    }
}

/// The registry directory.
#[derive(Clone, Debug)]
pub struct Registry {
    dir: PathBuf,
}

/// Live statistics of a context.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Where they come from: `"cgroup"` or `"proc"`.
    pub source: &'static str,
    /// Resident memory now, in bytes (`memory.current`, else the sum of `VmRSS`).
    pub memory_current: u64,
    /// Peak (`memory.peak`; without a cgroup the sum of its processes' `VmHWM`, an upper
    /// bound).
    pub memory_peak: Option<u64>,
    /// `memory.max` (from the cgroup, else the recorded limit).
    pub memory_max: Option<u64>,
    /// CPU time used, in microseconds.
    pub cpu_usec: u64,
    /// Processes and threads now.
    pub pids_current: u64,
    /// `pids.max`.
    pub pids_max: Option<u64>,
    /// `memory.events` (cgroup only).
    pub memory_events: Option<MemoryEventsView>,
    /// `pids.events max` (cgroup only).
    pub pids_limit_hits: Option<u64>,
    /// CPU throttling: periods throttled (`cpu.stat nr_throttled`).
    pub cpu_throttled: Option<u64>,
}

/// `memory.events`, serializable.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct MemoryEventsView {
    /// `high`.
    pub high: u64,
    /// `max`.
    pub max: u64,
    /// `oom`.
    pub oom: u64,
    /// `oom_kill`.
    pub oom_kill: u64,
}

impl From<MemoryEvents> for MemoryEventsView {
    fn from(e: MemoryEvents) -> Self {
        MemoryEventsView {
            high: e.high,
            max: e.max,
            oom: e.oom,
            oom_kill: e.oom_kill,
        }
    }
}

fn new_id(pid: i32) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut x = (now.as_nanos() as u64) ^ ((pid as u64) << 40) ^ u64::from(std::process::id());
    // splitmix64: spread the bits so ids differ in their first digits.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("{:012x}", x & 0xffff_ffff_ffff)
}

fn read_file(path: PathBuf) -> Result<String, RegistryError> {
    std::fs::read_to_string(&path).map_err(|source| RegistryError::Stat { path, source })
}

fn parse_err(path: &Path, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Stat {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    }
}

impl Registry {
    /// The registry at `$NEBULA_RUN_DIR`; else [`DEFAULT_DIR`] for root, and for other users
    /// `$XDG_RUNTIME_DIR/nebula` when that is set (they cannot write `/run/nebula`).
    pub fn open_default() -> Registry {
        let var = |k: &str| std::env::var_os(k).filter(|d| !d.is_empty());
        let dir = match var(DIR_ENV) {
            Some(d) => PathBuf::from(d),
            None if !rustix::process::geteuid().is_root() => var("XDG_RUNTIME_DIR").map_or_else(
                || PathBuf::from(DEFAULT_DIR),
                |x| PathBuf::from(x).join("nebula"),
            ),
            None => PathBuf::from(DEFAULT_DIR),
        };
        Registry { dir }
    }

    /// The registry at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Registry {
        Registry { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Registers a running context: `pid` is its pid 1 (its start time is read now).
    ///
    /// # Errors
    ///
    /// [`RegistryError::NameTaken`] when a live context has the name (names are claimed
    /// exclusively, see the module docs);
    /// [`RegistryError::CreateDir`], [`RegistryError::Write`];
    /// [`RegistryError::NotFound`] when `pid` is already gone.
    pub fn register(
        &self,
        name: Option<String>,
        pid: i32,
        cgroup: Option<PathBuf>,
        limits: EntryLimits,
        command: Vec<String>,
    ) -> Result<Registration, RegistryError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| RegistryError::CreateDir {
            dir: self.dir.clone(),
            source,
        })?;
        let pid_start =
            process_start_time(pid).ok_or_else(|| RegistryError::NotFound(pid.to_string()))?;
        let id = new_id(pid);
        let name_claim = match &name {
            Some(n) => Some(self.claim_name(n, &id)?),
            None => None,
        };
        let entry = Entry {
            id,
            name,
            pid,
            pid_start,
            supervisor: std::process::id() as i32,
            cgroup,
            limits,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            command,
        };
        let path = self.dir.join(format!("{}.json", entry.id));
        let tmp = self.dir.join(format!(".{}.tmp", entry.id));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec(&entry).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(source) = write() {
            let _ = std::fs::remove_file(&tmp);
            if let Some(c) = &name_claim {
                let _ = std::fs::remove_file(c);
            }
            return Err(RegistryError::Write { path, source });
        }
        Ok(Registration {
            path,
            entry,
            name_claim,
        })
    }

    /// Claims `name` for `id`: `<name>.name` created exclusively (`O_EXCL`), holding the id
    /// and the claiming supervisor's pid and start time. A claim whose supervisor is gone is
    /// stale and taken over; so two supervisors racing for a name cannot both get it.
    fn claim_name(&self, name: &str, id: &str) -> Result<PathBuf, RegistryError> {
        let path = self.dir.join(format!("{name}.name"));
        let me = std::process::id() as i32;
        let content = format!("{id} {me} {}\n", process_start_time(me).unwrap_or(0));
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(mut f) => {
                    return f
                        .write_all(content.as_bytes())
                        .map(|()| path.clone())
                        .map_err(|source| {
                            let _ = std::fs::remove_file(&path);
                            RegistryError::Write {
                                path: path.clone(),
                                source,
                            }
                        });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let held = std::fs::read_to_string(&path).unwrap_or_default();
                    if !claim_is_stale(&held) {
                        return Err(RegistryError::NameTaken {
                            name: name.to_owned(),
                            id: held.split_whitespace().next().unwrap_or("?").to_owned(),
                        });
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(source) => return Err(RegistryError::Write { path, source }),
            }
        }
        Err(RegistryError::NameTaken {
            name: name.to_owned(),
            id: "?".into(),
        })
    }

    /// The live contexts, oldest first. Entries whose process is gone (or whose pid now
    /// belongs to another process) and files that do not parse are removed.
    ///
    /// # Errors
    ///
    /// [`RegistryError::ReadDir`] (a missing directory is an empty registry).
    pub fn entries(&self) -> Result<Vec<Entry>, RegistryError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RegistryError::ReadDir {
                    dir: self.dir.clone(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for de in rd.flatten() {
            let path = de.path();
            if path.extension().is_some_and(|x| x == "killed") {
                // A kill marker outlives its entry only when the supervisor died too.
                if !path.with_extension("json").exists() {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if path.extension().is_some_and(|x| x == "name") {
                if std::fs::read_to_string(&path).is_ok_and(|t| claim_is_stale(&t)) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let owner_ok = de.metadata().is_ok_and(|m| {
                let uid = std::os::unix::fs::MetadataExt::uid(&m);
                uid == 0 || uid == rustix::process::geteuid().as_raw()
            });
            if !owner_ok {
                continue;
            }
            let parsed = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
            match parsed {
                Some(e) if e.is_alive() => out.push(e),
                // A dead entry: its supervisor did not get to clean up (it was killed), so
                // its cgroup leaf may be left too.
                Some(e) => {
                    let _ = std::fs::remove_file(&path);
                    if let Some(cg) = &e.cgroup {
                        remove_stale_leaf(cg);
                    }
                }
                // Unreadable: clean it (another reader may have already).
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        out.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
        Ok(out)
    }

    /// The live context with this name, id, or unique id prefix.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotFound`], [`RegistryError::Ambiguous`], or as
    /// [`Registry::entries`].
    pub fn find(&self, query: &str) -> Result<Entry, RegistryError> {
        let all = self.entries()?;
        if let Some(e) = all
            .iter()
            .find(|e| e.id == query || e.name.as_deref() == Some(query))
        {
            return Ok(e.clone());
        }
        let mut hits: Vec<&Entry> = all
            .iter()
            .filter(|e| !query.is_empty() && e.id.starts_with(query))
            .collect();
        match hits.len() {
            0 => Err(RegistryError::NotFound(query.to_owned())),
            1 => Ok(hits.remove(0).clone()),
            _ => Err(RegistryError::Ambiguous {
                query: query.to_owned(),
                ids: hits.iter().map(|e| e.id.clone()).collect(),
            }),
        }
    }

    /// Kills a context: `cgroup.kill` when it has a cgroup (which must contain its pid),
    /// else `SIGKILL` to its pid 1 through a pidfd (which takes its pid namespace with it).
    /// Returns how.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotFound`] when it is no longer alive, [`RegistryError::Untrusted`],
    /// [`RegistryError::Kill`].
    pub fn kill(&self, e: &Entry) -> Result<&'static str, RegistryError> {
        let gone = || RegistryError::NotFound(e.id.clone());
        let pid = Pid::from_raw(e.pid).ok_or_else(gone)?;
        // Open the pidfd first, then check the start time: the pidfd then refers to the
        // process that was checked, even if the pid is reused afterwards.
        let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|_| gone())?;
        if !e.is_alive() {
            return Err(gone());
        }
        // Best effort: the supervisor only uses it to word its message.
        let _ = std::fs::write(self.dir.join(format!("{}.killed", e.id)), b"");
        if let Some(cg) = &e.cgroup {
            let procs = read_file(cg.join("cgroup.procs"))?;
            if !procs.lines().any(|l| l.trim() == e.pid.to_string()) {
                return Err(RegistryError::Untrusted {
                    id: e.id.clone(),
                    pid: e.pid,
                    cgroup: cg.clone(),
                });
            }
            std::fs::write(cg.join("cgroup.kill"), "1").map_err(|source| RegistryError::Kill {
                id: e.id.clone(),
                how: "cgroup.kill",
                source,
            })?;
            return Ok("cgroup.kill");
        }
        rustix::process::pidfd_send_signal(&pidfd, Signal::KILL).map_err(|err| {
            RegistryError::Kill {
                id: e.id.clone(),
                how: "SIGKILL",
                source: err.into(),
            }
        })?;
        Ok("SIGKILL")
    }

    /// Live statistics of a context: from its cgroup when it has one, else from `/proc` (the
    /// pid 1 and every descendant).
    ///
    /// # Errors
    ///
    /// [`RegistryError::Stat`] when a file cannot be read or parsed (e.g. the context ended
    /// meanwhile).
    pub fn stats(&self, e: &Entry) -> Result<Stats, RegistryError> {
        match &e.cgroup {
            Some(cg) => cgroup_stats(cg),
            None => proc_stats(e),
        }
    }
}

/// Whether a name claim (`ID SUPERVISOR_PID SUPERVISOR_START`) belongs to a supervisor that
/// is gone. An empty claim is being written right now: not stale.
fn claim_is_stale(held: &str) -> bool {
    let mut it = held.split_whitespace();
    let (_, sup, start) = (it.next(), it.next(), it.next());
    match (sup.and_then(|x| x.parse::<i32>().ok()), start) {
        (Some(p), Some(t)) => process_start_time(p).map(|x| x.to_string()).as_deref() != Some(t),
        _ => !held.is_empty(),
    }
}

/// Removes the cgroup leaf of a dead context, if it is one: only a directory named `ctx-*`
/// directly under a `nebula` directory on a cgroup2 filesystem, once `cgroup.events` says
/// it is empty (its processes die with their pid 1, asynchronously: waits up to a second).
/// `rmdir` of a cgroup fails unless it is empty and has no children, so nothing live is lost.
fn remove_stale_leaf(cg: &Path) {
    let named_like_a_leaf = cg
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("ctx-"))
        && cg
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "nebula");
    let on_cgroup2 = rustix::fs::statfs(cg)
        .is_ok_and(|st| st.f_type as u64 == crate::cgroup::CGROUP2_SUPER_MAGIC);
    if !named_like_a_leaf || !on_cgroup2 {
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let populated = std::fs::read_to_string(cg.join("cgroup.events"))
            .ok()
            .and_then(|t| crate::cgroup::CgroupEvents::parse(&t).ok())
            .is_none_or(|ev| ev.populated);
        if !populated || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir(cg);
}

fn cgroup_stats(cg: &Path) -> Result<Stats, RegistryError> {
    let f = |name: &str| read_file(cg.join(name));
    let num = |name: &str| -> Result<u64, RegistryError> {
        let t = f(name)?;
        parse_u64(&t).map_err(|e| parse_err(&cg.join(name), e))
    };
    let limit = |name: &str| -> Result<Option<u64>, RegistryError> {
        let t = f(name)?;
        parse_limit(&t)
            .map(|l| l.value())
            .map_err(|e| parse_err(&cg.join(name), e))
    };
    let events = MemoryEvents::parse(&f("memory.events")?)
        .map_err(|e| parse_err(&cg.join("memory.events"), e))?;
    let pids_events =
        PidsEvents::parse(&f("pids.events")?).map_err(|e| parse_err(&cg.join("pids.events"), e))?;
    let cpu = CpuStat::parse(&f("cpu.stat")?).map_err(|e| parse_err(&cg.join("cpu.stat"), e))?;
    Ok(Stats {
        source: "cgroup",
        memory_current: num("memory.current")?,
        memory_peak: num("memory.peak").ok(),
        memory_max: limit("memory.max")?,
        cpu_usec: cpu.usage_usec,
        pids_current: num("pids.current")?,
        pids_max: limit("pids.max")?,
        memory_events: Some(events.into()),
        pids_limit_hits: Some(pids_events.max),
        cpu_throttled: cpu.nr_throttled,
    })
}

/// Sums `/proc` over pid 1 and its descendants.
fn proc_stats(e: &Entry) -> Result<Stats, RegistryError> {
    let top = proc_stat(e.pid)
        .filter(|s| s.start_time == e.pid_start)
        .ok_or_else(|| RegistryError::Stat {
            path: PathBuf::from(format!("/proc/{}/stat", e.pid)),
            source: std::io::Error::from_raw_os_error(libc::ESRCH),
        })?;
    let mut children: HashMap<i32, Vec<(i32, ProcStat)>> = HashMap::new();
    let rd = std::fs::read_dir("/proc").map_err(|source| RegistryError::Stat {
        path: "/proc".into(),
        source,
    })?;
    for de in rd.flatten() {
        if let Some(pid) = de.file_name().to_str().and_then(|s| s.parse::<i32>().ok())
            && let Some(st) = proc_stat(pid)
        {
            children.entry(st.ppid).or_default().push((pid, st));
        }
    }
    let mut todo = vec![(e.pid, top)];
    let tick_us = 1_000_000 / rustix::param::clock_ticks_per_second();
    let mut s = Stats {
        source: "proc",
        memory_max: e.limits.memory_max,
        pids_max: e.limits.pids_max,
        memory_peak: Some(0),
        ..Default::default()
    };
    while let Some((pid, st)) = todo.pop() {
        s.cpu_usec += (st.utime + st.stime) * tick_us;
        s.pids_current += st.threads;
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let kb = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1024
            };
            s.memory_current += kb("VmRSS:");
            s.memory_peak = s.memory_peak.map(|p| p + kb("VmHWM:"));
        }
        if let Some(c) = children.remove(&pid) {
            todo.extend(c);
        }
    }
    Ok(s)
}

/// How long ago `started` (seconds since the epoch) was.
pub fn age(started: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Duration::from_secs(now.saturating_sub(started))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nebula-reg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn register_list_and_remove() {
        let dir = tempdir("a");
        let reg = Registry::at(&dir);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = child.id() as i32;
        let r = reg
            .register(Some("me".into()), me, None, EntryLimits::default(), vec![])
            .unwrap();
        let all = reg.entries().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].pid_start, process_start_time(me).unwrap());
        assert_eq!(reg.find("me").unwrap().id, r.entry().id);
        assert_eq!(reg.find(&r.entry().id[..6]).unwrap().id, r.entry().id);
        assert!(matches!(
            reg.register(Some("me".into()), me, None, EntryLimits::default(), vec![]),
            Err(RegistryError::NameTaken { .. })
        ));
        // A claim left by a supervisor that is gone is taken over.
        std::fs::write(dir.join("old.name"), "0123456789ab 999999999 1\n").unwrap();
        let r2 = reg
            .register(Some("old".into()), me, None, EntryLimits::default(), vec![])
            .unwrap();
        assert!(
            std::fs::read_to_string(dir.join("old.name"))
                .unwrap()
                .starts_with(&r2.entry().id)
        );
        drop(r2);
        assert!(!dir.join("old.name").exists());
        let st = reg.stats(&all[0]).unwrap();
        assert!(st.memory_current > 0 && st.pids_current >= 1, "{st:?}");
        // A kill through the registry: SIGKILL (no cgroup), seen in the wait status.
        assert_eq!(reg.kill(&all[0]).unwrap(), "SIGKILL");
        assert!(r.killed_by_registry());
        let st = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
        drop(r);
        assert!(reg.entries().unwrap().is_empty());
        assert!(matches!(reg.find("me"), Err(RegistryError::NotFound(_))));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reused_pid_is_not_trusted() {
        let dir = tempdir("b");
        let reg = Registry::at(&dir);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let r = reg
            .register(
                None,
                child.id() as i32,
                None,
                EntryLimits::default(),
                vec![],
            )
            .unwrap();
        assert!(r.entry().is_alive());
        // Same pid, other start time: what a reused pid looks like.
        let mut e = r.entry().clone();
        e.pid_start += 1;
        std::mem::forget(r);
        let path = dir.join(format!("{}.json", e.id));
        std::fs::write(&path, serde_json::to_vec(&e).unwrap()).unwrap();
        assert!(!e.is_alive());
        assert!(reg.entries().unwrap().is_empty());
        assert!(!path.exists(), "the stale entry was not removed");
        assert!(reg.kill(&e).is_err());
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process was killed"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
