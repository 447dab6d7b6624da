//! The registry of running process contexts: one small JSON file per context, so that
//! `nebula-ctl list`, `stats`, `kill` and `top` see contexts started by any other
//! `nebula-ctl run` on the host.
//!
//! # Where it lives
//!
//! | caller | directory |
//! |---|---|
//! | anyone, `$NEBULA_RUN_DIR` set | that directory, used as given |
//! | root | `/run/nebula` (mode 0700, entries 0600) |
//! | a user, `$XDG_RUNTIME_DIR` set | `$XDG_RUNTIME_DIR/nebula` (0700) |
//! | a user, no `$XDG_RUNTIME_DIR` | `/tmp/nebula-<uid>` (0700) |
//!
//! A user cannot write `/run/nebula`, so each user has a registry of their own. The fallback
//! under `/tmp` follows tmux and ssh-agent: `/tmp` is shared and sticky, so anyone could
//! create `/tmp/nebula-<uid>` first, or a symbolic link of that name. Nebula creates it with
//! mode 0700 and refuses it ([`RegistryError::UnsafeDir`]) when it is a symbolic link, not a
//! directory, not owned by the user, or open to the group or others; `$XDG_RUNTIME_DIR/nebula`
//! gets the same check. A fixed `/tmp` (not `$TMPDIR`) keeps the place predictable, so that
//! root can find it.
//!
//! Root's `list` shows every user's contexts ([`Registries::visible`]): its own registry,
//! plus each `/run/user/<uid>/nebula` and `/tmp/nebula-<uid>` whose directory is owned by
//! the uid its name claims. Those registries are read-only for root (it removes nothing in
//! them; their owner's next call cleans up), only files owned by that uid count, and each
//! entry's [`Entry::owner`] is the file's owner as the kernel reports it, not a claim in the
//! file. A registry under another `$XDG_RUNTIME_DIR` or `$NEBULA_RUN_DIR` is not found: root
//! sees it with the same `$NEBULA_RUN_DIR`. Root with `$NEBULA_RUN_DIR` set sees only that
//! directory.
//!
//! # Trust
//!
//! An entry is a claim, not a fact. Every reader checks it against the kernel before using
//! it: the context's pid 1 must exist and its start time (`/proc/<pid>/stat` field 22, in
//! clock ticks since boot) must equal the one recorded, so a pid that was reused after the
//! context ended does not match; its parent must be the recorded supervisor, whose real uid
//! must be the entry file's owner. Entries that fail the check are removed by the reader
//! ([`Registry::entries`]). Before a kill, the cgroup's `cgroup.procs` must contain the pid
//! (otherwise the cgroup path is not trusted), and the signal goes through a pidfd opened
//! after the check, so it cannot hit a process that took the pid in between.
//!
//! A user can kill only their own contexts ([`RegistryError::NotPermitted`] otherwise, which
//! is also what the kernel answers). Root kills a user's context only as far as that user
//! could: the context's pid 1 must run as the user (real or saved uid, the kernel's rule
//! for `kill(2)`), and its cgroup directory and `cgroup.kill` must be owned by the user, so a
//! forged entry cannot make root kill anything its author could not.
//!
//! The cgroup path in an entry is its author's text, and root reads and writes under it. So
//! it is opened as [`Leaf::open_recorded`] opens a path it does not trust: no symlink or
//! `/proc` magic link is followed on the way, the directory must be on cgroup2 (checked on
//! the open fd), and every file under it is opened with `O_NOFOLLOW | O_NONBLOCK` and read
//! up to a bound. An entry whose cgroup is a symlink to `/etc`, a FIFO or `/dev/zero` is
//! refused ([`RegistryError::Cgroup`]); nothing outside a cgroup2 mount is ever written.
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

use crate::cgroup::{Leaf, MemoryEvents};

use crate::isolation::process::IdRange;
pub use crate::isolation::process::procfs::process_start_time;
use crate::isolation::process::procfs::{ProcStat, proc_stat, proc_uids};

/// The registry directory of root.
pub const DEFAULT_DIR: &str = "/run/nebula";
/// The environment variable that overrides the registry directory (for root and users).
pub const DIR_ENV: &str = "NEBULA_RUN_DIR";
/// Where logind keeps the users' runtime directories (`/run/user/<uid>`): root looks for a
/// `nebula` registry in each.
pub const USER_RUNTIME_DIRS: &str = "/run/user";
/// The parent of a user's registry when `$XDG_RUNTIME_DIR` is unset: `/tmp/nebula-<uid>`.
pub const USER_FALLBACK_PARENT: &str = "/tmp";
/// The name prefix of a user's registry under [`USER_FALLBACK_PARENT`].
pub const USER_FALLBACK_PREFIX: &str = "nebula-";

/// The registry of `uid` when `$XDG_RUNTIME_DIR` is unset: `/tmp/nebula-<uid>`.
pub fn user_fallback_dir(uid: u32) -> PathBuf {
    Path::new(USER_FALLBACK_PARENT).join(format!("{USER_FALLBACK_PREFIX}{uid}"))
}

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
    /// The registry directory is not safe to use (see the module docs).
    #[error(
        "the registry directory {} is not safe: {reason}; Hint: remove it (nebula-ctl recreates it with mode 0700), or set {DIR_ENV} or XDG_RUNTIME_DIR to a directory of your own",
        .dir.display()
    )]
    UnsafeDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No live context matches.
    #[error(
        "no running context you can see has the id or name {0:?}; Hint: nebula-ctl list shows them (a user sees their own contexts, root sees every user's)"
    )]
    NotFound(String),
    /// The caller may not act on another user's context.
    #[error(
        "context {id} belongs to uid {owner}; uid {uid} may not kill it (the kernel lets only its owner and root signal it); Hint: run nebula-ctl kill as uid {owner} or as root"
    )]
    NotPermitted {
        /// The context.
        id: String,
        /// The uid whose context it is.
        owner: u32,
        /// The caller's uid.
        uid: u32,
    },
    /// Root was asked to act on a user's entry that points at something the user does not own.
    #[error(
        "context {id} is recorded in the registry of uid {owner}, but {what}; not trusted, not killed"
    )]
    NotOwned {
        /// The context.
        id: String,
        /// The uid whose registry holds the entry.
        owner: u32,
        /// What does not belong to that uid.
        what: String,
    },
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
    /// The entry's cgroup cannot be opened or used as a cgroup (a symlink on the way, not
    /// cgroup2, gone).
    #[error("the cgroup recorded for context {id} cannot be used; not trusted")]
    Cgroup {
        /// The context.
        id: String,
        /// What the cgroup manager found.
        #[source]
        source: crate::cgroup::CgroupError,
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
///
/// Missing fields read as their defaults and unknown fields are ignored, so entries written
/// by an older or newer `nebula-ctl` still parse.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Its host ids: the range leased from nebula's pool (or the one id root inside maps to).
    #[serde(default)]
    pub ids: Option<IdRange>,
    /// Its limits.
    pub limits: EntryLimits,
    /// Start, in seconds since the epoch.
    pub started: u64,
    /// The command line.
    pub command: Vec<String>,
    /// The uid whose context it is: the owner of the entry's file as the kernel reports it
    /// (set by [`Registry::entries`]; the supervisor's uid in [`Registry::register`]).
    pub owner: u32,
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
    /// The uid whose entry files this registry trusts (root's too, unless `Foreign`).
    owner: u32,
    kind: DirKind,
}

/// How a registry directory is checked and used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirKind {
    /// `$NEBULA_RUN_DIR` or [`Registry::at`]: used as given.
    Given,
    /// Root's `/run/nebula` or a user's own directory: a real directory owned by `owner`;
    /// a user's must not be open to the group or others.
    Private,
    /// Another user's directory, read by root: read-only, only `owner`'s files count.
    Foreign,
}

/// A registry directory that root's [`Registries::visible`] found but did not use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The directory.
    pub dir: PathBuf,
    /// Why it was not read.
    pub reason: String,
}

/// A live context and the registry that holds it.
#[derive(Clone, Debug)]
pub struct Located {
    /// The registry (for [`Registry::kill`] and [`Registry::stats`]).
    pub registry: Registry,
    /// The context.
    pub entry: Entry,
}

/// The registries one caller sees: its own ([`Registry::open_default`]) and, for root
/// without `$NEBULA_RUN_DIR`, every user's it finds (see the module docs).
#[derive(Clone, Debug)]
pub struct Registries {
    list: Vec<Registry>,
    skipped: Vec<Skipped>,
}

/// The live contexts of [`Registries::entries`].
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// The contexts, oldest first.
    pub contexts: Vec<Located>,
    /// Registries that were found but not read, and why (root only).
    pub skipped: Vec<Skipped>,
}

impl Registries {
    /// The registries the caller sees.
    pub fn visible() -> Registries {
        let own = Registry::open_default();
        let discover = own.kind == DirKind::Private && own.owner == 0;
        let mut r = Registries {
            list: vec![own],
            skipped: Vec::new(),
        };
        if discover {
            r.discover_users();
        }
        r
    }

    /// Only `reg` (tests, and callers with a registry of their own).
    pub fn only(reg: Registry) -> Registries {
        Registries {
            list: vec![reg],
            skipped: Vec::new(),
        }
    }

    /// The registries, the caller's own first.
    pub fn registries(&self) -> &[Registry] {
        &self.list
    }

    fn discover_users(&mut self) {
        let numbered = |dir: &str, prefix: &str| -> Vec<(u32, PathBuf)> {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return Vec::new();
            };
            rd.flatten()
                .filter_map(|de| {
                    let name = de.file_name();
                    let uid = name.to_str()?.strip_prefix(prefix)?.parse::<u32>().ok()?;
                    (uid != 0).then(|| (uid, de.path()))
                })
                .collect()
        };
        let mut found: Vec<(u32, PathBuf)> = numbered(USER_RUNTIME_DIRS, "")
            .into_iter()
            .map(|(uid, d)| (uid, d.join("nebula")))
            .chain(numbered(USER_FALLBACK_PARENT, USER_FALLBACK_PREFIX))
            .collect();
        found.sort();
        for (uid, dir) in found {
            let reg = Registry {
                dir,
                owner: uid,
                kind: DirKind::Foreign,
            };
            match reg.check_dir() {
                Ok(true) => self.list.push(reg),
                Ok(false) => {}
                Err(e) => self.skipped.push(Skipped {
                    dir: reg.dir.clone(),
                    reason: match e {
                        RegistryError::UnsafeDir { reason, .. } => reason,
                        other => other.to_string(),
                    },
                }),
            }
        }
    }

    /// The live contexts of every registry, oldest first. A user registry that cannot be
    /// read is reported in [`Listing::skipped`].
    ///
    /// # Errors
    ///
    /// As [`Registry::entries`] for the caller's own registry.
    pub fn entries(&self) -> Result<Listing, RegistryError> {
        let mut out = Listing {
            contexts: Vec::new(),
            skipped: self.skipped.clone(),
        };
        for (i, reg) in self.list.iter().enumerate() {
            match reg.entries() {
                Ok(es) => out.contexts.extend(es.into_iter().map(|entry| Located {
                    registry: reg.clone(),
                    entry,
                })),
                Err(e) if i == 0 => return Err(e),
                Err(e) => out.skipped.push(Skipped {
                    dir: reg.dir.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        out.contexts
            .sort_by(|a, b| (a.entry.started, &a.entry.id).cmp(&(b.entry.started, &b.entry.id)));
        Ok(out)
    }

    /// The live context with this name, id, or unique id prefix, in any registry.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotFound`], [`RegistryError::Ambiguous`], or as
    /// [`Registries::entries`].
    pub fn find(&self, query: &str) -> Result<Located, RegistryError> {
        let all = self.entries()?.contexts;
        let exact: Vec<&Located> = all
            .iter()
            .filter(|l| l.entry.id == query || l.entry.name.as_deref() == Some(query))
            .collect();
        let mut hits = if exact.is_empty() {
            all.iter()
                .filter(|l| !query.is_empty() && l.entry.id.starts_with(query))
                .collect()
        } else {
            exact
        };
        match hits.len() {
            0 => Err(RegistryError::NotFound(query.to_owned())),
            1 => Ok(hits.remove(0).clone()),
            _ => Err(RegistryError::Ambiguous {
                query: query.to_owned(),
                ids: hits.iter().map(|l| l.entry.id.clone()).collect(),
            }),
        }
    }
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
    // Hash input, not a quantity: dropping the high bits of the time and sign-extending the
    // pid (its top bits are shifted out anyway) is fine.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let mut x = (now.as_nanos() as u64) ^ ((pid as u64) << 40) ^ u64::from(std::process::id());
    // splitmix64: spread the bits so ids differ in their first digits.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("{:012x}", x & 0xffff_ffff_ffff)
}

impl Registry {
    /// The caller's registry: `$NEBULA_RUN_DIR`; else [`DEFAULT_DIR`] for root, and for
    /// other users `$XDG_RUNTIME_DIR/nebula`, or [`user_fallback_dir`] when that is unset
    /// (see the module docs for the checks).
    pub fn open_default() -> Registry {
        let var = |k: &str| std::env::var_os(k).filter(|d| !d.is_empty());
        let uid = rustix::process::geteuid().as_raw();
        let (dir, kind) = match var(DIR_ENV) {
            Some(d) => (PathBuf::from(d), DirKind::Given),
            None if uid == 0 => (PathBuf::from(DEFAULT_DIR), DirKind::Private),
            None => (
                var("XDG_RUNTIME_DIR").map_or_else(
                    || user_fallback_dir(uid),
                    |x| PathBuf::from(x).join("nebula"),
                ),
                DirKind::Private,
            ),
        };
        Registry {
            dir,
            owner: uid,
            kind,
        }
    }

    /// The registry at `dir`, used as given (as `$NEBULA_RUN_DIR` is).
    pub fn at(dir: impl Into<PathBuf>) -> Registry {
        Registry {
            dir: dir.into(),
            owner: rustix::process::geteuid().as_raw(),
            kind: DirKind::Given,
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The uid whose registry this is.
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// Checks a private or foreign directory: `Ok(false)` when it does not exist.
    fn check_dir(&self) -> Result<bool, RegistryError> {
        if self.kind == DirKind::Given {
            return Ok(self.dir.exists());
        }
        let m = match std::fs::symlink_metadata(&self.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(RegistryError::ReadDir {
                    dir: self.dir.clone(),
                    source,
                });
            }
        };
        use std::os::unix::fs::MetadataExt;
        let unsafe_dir = |reason: String| RegistryError::UnsafeDir {
            dir: self.dir.clone(),
            reason,
        };
        if m.file_type().is_symlink() {
            return Err(unsafe_dir("it is a symbolic link".into()));
        }
        if !m.is_dir() {
            return Err(unsafe_dir("it is not a directory".into()));
        }
        if m.uid() != self.owner {
            return Err(unsafe_dir(format!(
                "it is owned by uid {}, not by uid {}",
                m.uid(),
                self.owner
            )));
        }
        if self.kind == DirKind::Private && self.owner != 0 && m.mode() & 0o077 != 0 {
            return Err(unsafe_dir(format!(
                "its mode {:04o} lets the group or others in (it must be 0700)",
                m.mode() & 0o7777
            )));
        }
        Ok(true)
    }

    /// Creates the directory (mode 0700) when missing and checks it.
    fn ensure_dir(&self) -> Result<(), RegistryError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if self.kind == DirKind::Foreign {
            return Err(RegistryError::NotPermitted {
                id: "(new)".into(),
                owner: self.owner,
                uid: rustix::process::geteuid().as_raw(),
            });
        }
        if self.check_dir()? {
            // Root's registry is root's alone (older versions made it 0755).
            if self.kind == DirKind::Private && self.owner == 0 {
                let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
            }
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| RegistryError::CreateDir {
                dir: self.dir.clone(),
                source,
            })?;
        // Check again: someone may have created it first.
        self.check_dir().map(|_| ())
    }

    /// Leaves the `<id>.killed` marker, best effort: created exclusively in the directory
    /// opened without following links and owned by the registry's owner, so that root
    /// writing into a user's directory cannot be led to another file.
    fn mark_killed(&self, id: &str) {
        use rustix::fs::{Mode, OFlags};
        let Ok(dir) = rustix::fs::open(
            &self.dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return;
        };
        if rustix::fs::fstat(&dir).map_or(true, |st| st.st_uid != self.owner && st.st_uid != 0) {
            return;
        }
        let _ = rustix::fs::openat(
            &dir,
            format!("{id}.killed"),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        );
    }

    /// Registers a running context: `pid` is its pid 1 (its start time is read now).
    ///
    /// # Errors
    ///
    /// [`RegistryError::NameTaken`] when a live context has the name (names are claimed
    /// exclusively, see the module docs);
    /// [`RegistryError::UnsafeDir`] when the directory fails its checks;
    /// [`RegistryError::CreateDir`], [`RegistryError::Write`];
    /// [`RegistryError::NotFound`] when `pid` is already gone.
    pub fn register(
        &self,
        name: Option<String>,
        pid: i32,
        cgroup: Option<PathBuf>,
        ids: Option<IdRange>,
        limits: EntryLimits,
        command: Vec<String>,
    ) -> Result<Registration, RegistryError> {
        self.ensure_dir()?;
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
            ids,
            limits,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            command,
            owner: rustix::process::geteuid().as_raw(),
        };
        let path = self.dir.join(format!("{}.json", entry.id));
        let tmp = self.dir.join(format!(".{}.tmp", entry.id));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
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
                .mode(0o600)
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
    /// belongs to another process) and files that do not parse are removed, except in
    /// another user's registry (read-only for root). Only files owned by the registry's
    /// owner (or by root, except in another user's registry) count; [`Entry::owner`] is set
    /// to the file's owner.
    ///
    /// # Errors
    ///
    /// [`RegistryError::UnsafeDir`] when the directory fails its checks,
    /// [`RegistryError::ReadDir`] (a missing directory is an empty registry).
    pub fn entries(&self) -> Result<Vec<Entry>, RegistryError> {
        if !self.check_dir()? {
            return Ok(Vec::new());
        }
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
        let clean = self.kind != DirKind::Foreign;
        let mut out = Vec::new();
        for de in rd.flatten() {
            let path = de.path();
            if path.extension().is_some_and(|x| x == "killed") {
                // A kill marker outlives its entry only when the supervisor died too.
                if clean && !path.with_extension("json").exists() {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if path.extension().is_some_and(|x| x == "name") {
                if clean && std::fs::read_to_string(&path).is_ok_and(|t| claim_is_stale(&t)) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Some((uid, bytes)) = self.read_entry_file(&path) else {
                continue;
            };
            let parsed = serde_json::from_slice::<Entry>(&bytes).ok();
            match parsed {
                // The supervisor wrote the file: it runs as the file's owner (an entry
                // naming another user's process is skipped).
                Some(mut e)
                    if e.is_alive()
                        && proc_uids(e.supervisor).is_some_and(|(real, _)| real == uid) =>
                {
                    e.owner = uid;
                    out.push(e);
                }
                // A dead entry: its supervisor did not get to clean up (it was killed), so
                // its cgroup leaf may be left too.
                Some(e) if clean && !e.is_alive() => {
                    let _ = std::fs::remove_file(&path);
                    if let Some(cg) = &e.cgroup {
                        remove_stale_leaf(cg, uid);
                    }
                }
                // Unreadable: clean it (another reader may have already).
                None if clean => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        out.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
        Ok(out)
    }

    /// Reads an entry file that the registry trusts: a regular file (opened without
    /// following a link, and without blocking on a FIFO), owned by the registry's owner or,
    /// outside another user's registry, by root; at most 1 MiB. Returns its owner too.
    fn read_entry_file(&self, path: &Path) -> Option<(u32, Vec<u8>)> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let m = f.metadata().ok()?;
        let uid = m.uid();
        let trusted = uid == self.owner || (uid == 0 && self.kind != DirKind::Foreign);
        if !m.is_file() || !trusted {
            return None;
        }
        let mut bytes = Vec::new();
        f.take(1 << 20).read_to_end(&mut bytes).ok()?;
        Some((uid, bytes))
    }

    /// The live context with this name, id, or unique id prefix.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotFound`], [`RegistryError::Ambiguous`], or as
    /// [`Registry::entries`].
    pub fn find(&self, query: &str) -> Result<Entry, RegistryError> {
        Registries::only(self.clone()).find(query).map(|l| l.entry)
    }

    /// Kills a context: `cgroup.kill` when it has a cgroup (which must contain its pid),
    /// else `SIGKILL` to its pid 1 through a pidfd (which takes its pid namespace with it).
    /// Returns how.
    ///
    /// A user may kill only their own contexts; root kills a user's context only as far as
    /// the user could (see the module docs).
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotFound`] when it is no longer alive,
    /// [`RegistryError::NotPermitted`] for another user's context,
    /// [`RegistryError::NotOwned`] when root finds a user's entry pointing at a process or
    /// cgroup that user does not own, [`RegistryError::Untrusted`], [`RegistryError::Kill`].
    pub fn kill(&self, e: &Entry) -> Result<&'static str, RegistryError> {
        let me = rustix::process::geteuid().as_raw();
        let not_permitted = || RegistryError::NotPermitted {
            id: e.id.clone(),
            owner: e.owner,
            uid: me,
        };
        if me != 0 && e.owner != me {
            return Err(not_permitted());
        }
        let gone = || RegistryError::NotFound(e.id.clone());
        let pid = Pid::from_raw(e.pid).ok_or_else(gone)?;
        // Open the pidfd first, then check the start time: the pidfd then refers to the
        // process that was checked, even if the pid is reused afterwards.
        let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).map_err(|_| gone())?;
        if !e.is_alive() {
            return Err(gone());
        }
        let leaf = e.cgroup.as_deref().map(|cg| open_leaf(e, cg)).transpose()?;
        if me == 0 && e.owner != 0 {
            self.check_owned_by(e, leaf.as_ref())?;
        }
        // Best effort: the supervisor only uses it to word its message.
        self.mark_killed(&e.id);
        if let (Some(leaf), Some(cg)) = (&leaf, &e.cgroup) {
            let untrusted = || RegistryError::Untrusted {
                id: e.id.clone(),
                pid: e.pid,
                cgroup: cg.clone(),
            };
            let procs = leaf.procs().map_err(|source| RegistryError::Cgroup {
                id: e.id.clone(),
                source,
            })?;
            if !procs.contains(&pid) {
                return Err(untrusted());
            }
            return match leaf.kill() {
                Ok(()) => Ok("cgroup.kill"),
                Err(crate::cgroup::CgroupError::Kill { source, .. }) => {
                    let denied = matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES));
                    if denied && e.owner != me {
                        Err(not_permitted())
                    } else {
                        Err(RegistryError::Kill {
                            id: e.id.clone(),
                            how: "cgroup.kill",
                            source,
                        })
                    }
                }
                Err(source) => Err(RegistryError::Cgroup {
                    id: e.id.clone(),
                    source,
                }),
            };
        }
        match rustix::process::pidfd_send_signal(&pidfd, Signal::KILL) {
            Ok(()) => Ok("SIGKILL"),
            Err(err) if err == rustix::io::Errno::PERM && e.owner != me => Err(not_permitted()),
            Err(err) => Err(RegistryError::Kill {
                id: e.id.clone(),
                how: "SIGKILL",
                source: err.into(),
            }),
        }
    }

    /// For root acting on a user's entry: the context's pid 1 runs as the user (real or
    /// saved uid, as `kill(2)` checks) and its cgroup (directory and `cgroup.kill`) is the
    /// user's.
    fn check_owned_by(&self, e: &Entry, leaf: Option<&Leaf>) -> Result<(), RegistryError> {
        let owner = e.owner;
        let not_owned = |what: String| RegistryError::NotOwned {
            id: e.id.clone(),
            owner,
            what,
        };
        match proc_uids(e.pid) {
            Some((real, saved)) if real == owner || saved == owner => {}
            Some((real, _)) => {
                return Err(not_owned(format!("its pid {} runs as uid {real}", e.pid)));
            }
            None => return Err(RegistryError::NotFound(e.id.clone())),
        }
        if let Some(leaf) = leaf {
            let path = leaf.path().display();
            match leaf.owners() {
                Ok((dir, kill)) if dir == owner && kill == owner => {}
                Ok((dir, kill)) => {
                    return Err(not_owned(format!(
                        "its cgroup {path} is owned by uid {dir} (cgroup.kill by uid {kill})"
                    )));
                }
                Err(err) => return Err(not_owned(format!("its cgroup {path}: {err}"))),
            }
        }
        Ok(())
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
            Some(cg) => cgroup_stats(&open_leaf(e, cg)?),
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

/// Opens an entry's recorded cgroup the way the cgroup manager opens one named by someone
/// it does not trust ([`Leaf::open_recorded`]: no symlink followed, cgroup2 only, bounded
/// non-blocking reads): the entry's user wrote the path, and root acts on it.
fn open_leaf(e: &Entry, cg: &Path) -> Result<Leaf, RegistryError> {
    Leaf::open_recorded(cg).map_err(|source| RegistryError::Cgroup {
        id: e.id.clone(),
        source,
    })
}

/// Removes the cgroup leaf of a dead context, if it is one: only a directory named `ctx-*`
/// directly under a `nebula` directory, reached without symlinks on cgroup2, owned by the
/// registry's `owner` (root's registry: any), once `cgroup.events` says it is empty (its
/// processes die with their pid 1, asynchronously: waits up to a second). `rmdir` of a
/// cgroup fails unless it is empty and has no children, so nothing live is lost.
fn remove_stale_leaf(cg: &Path, owner: u32) {
    let named_like_a_leaf = cg
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("ctx-"))
        && cg
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "nebula");
    if !named_like_a_leaf {
        return;
    }
    let Ok(leaf) = Leaf::open_recorded(cg) else {
        return;
    };
    if owner != 0 && leaf.owners().map(|(dir, _)| dir).ok() != Some(owner) {
        return;
    }
    let _ = leaf.wait_empty(Duration::from_secs(1));
    let _ = leaf.remove();
}

fn cgroup_stats(leaf: &Leaf) -> Result<Stats, RegistryError> {
    let stat = |source: crate::cgroup::CgroupError| {
        let path = match &source {
            crate::cgroup::CgroupError::Read { path, .. }
            | crate::cgroup::CgroupError::Parse { path, .. } => path.clone(),
            _ => leaf.path().to_owned(),
        };
        RegistryError::Stat {
            path,
            source: std::io::Error::other(source),
        }
    };
    let events = leaf.memory_events().map_err(stat)?;
    let pids_events = leaf.pids_events().map_err(stat)?;
    let cpu = leaf.cpu_stat().map_err(stat)?;
    Ok(Stats {
        source: "cgroup",
        memory_current: leaf.memory_current().map_err(stat)?,
        memory_peak: leaf.memory_peak().ok().flatten(),
        memory_max: leaf.memory_max().map_err(stat)?.value(),
        cpu_usec: cpu.usage_usec,
        pids_current: leaf.pids_current().map_err(stat)?,
        pids_max: leaf.pids_max().map_err(stat)?.value(),
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
            .register(
                Some("me".into()),
                me,
                None,
                None,
                EntryLimits::default(),
                vec![],
            )
            .unwrap();
        let all = reg.entries().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].pid_start, process_start_time(me).unwrap());
        assert_eq!(reg.find("me").unwrap().id, r.entry().id);
        assert_eq!(reg.find(&r.entry().id[..6]).unwrap().id, r.entry().id);
        assert!(matches!(
            reg.register(
                Some("me".into()),
                me,
                None,
                None,
                EntryLimits::default(),
                vec![]
            ),
            Err(RegistryError::NameTaken { .. })
        ));
        // A claim left by a supervisor that is gone is taken over.
        std::fs::write(dir.join("old.name"), "0123456789ab 999999999 1\n").unwrap();
        let r2 = reg
            .register(
                Some("old".into()),
                me,
                None,
                None,
                EntryLimits::default(),
                vec![],
            )
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
    fn an_entry_tolerates_missing_and_unknown_fields() {
        let e: Entry =
            serde_json::from_str(r#"{"id":"0123456789ab","pid":7,"a_future_field":{"x":1}}"#)
                .unwrap();
        assert_eq!((e.id.as_str(), e.pid, e.owner), ("0123456789ab", 7, 0));
        assert!(e.command.is_empty() && e.ids.is_none());
    }

    #[test]
    fn a_private_registry_must_be_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let dir = tempdir("c");
        let private = |owner| Registry {
            dir: dir.clone(),
            owner,
            kind: DirKind::Private,
        };
        let reason = |r: Result<bool, RegistryError>| match r {
            Err(RegistryError::UnsafeDir { reason, .. }) => reason,
            other => panic!("expected UnsafeDir, got {other:?}"),
        };
        // Missing: created 0700 for its owner.
        assert!(!private(0).check_dir().unwrap());
        private(0).ensure_dir().unwrap();
        let mode = |d: &Path| std::fs::metadata(d).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o700);
        // Someone else's directory.
        assert!(reason(private(4242).check_dir()).contains("owned by uid 0, not by uid 4242"));
        // Its owner's, but open to others.
        std::os::unix::fs::chown(&dir, Some(4242), None).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(reason(private(4242).check_dir()).contains("mode 0755"));
        // A symbolic link, even to a good directory.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(private(4242).check_dir().unwrap());
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let via_link = Registry {
            dir: link.clone(),
            owner: 4242,
            kind: DirKind::Private,
        };
        assert!(reason(via_link.check_dir()).contains("symbolic link"));
        assert!(via_link.entries().is_err());
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_forged_cgroup_path_is_neither_followed_nor_written() {
        let dir = tempdir("f");
        let reg = Registry::at(&dir);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let r = reg
            .register(None, pid, None, None, EntryLimits::default(), vec![])
            .unwrap();
        // A directory that looks like a leaf, off cgroup2, whose cgroup.procs names the pid
        // and whose cgroup.kill is a symlink to a file the author wants written.
        let fake = dir.with_extension("fake").join("nebula").join("ctx-1");
        std::fs::create_dir_all(&fake).unwrap();
        std::fs::write(fake.join("cgroup.procs"), format!("{pid}\n")).unwrap();
        let target = dir.with_extension("target");
        std::fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, fake.join("cgroup.kill")).unwrap();
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(fake.parent().unwrap(), &link).unwrap();
        let via_link = link.join("ctx-1");
        for (cg, why) in [(&fake, "NotCgroup2"), (&via_link, "OpenDir")] {
            let mut e = r.entry().clone();
            e.cgroup = Some(cg.clone());
            match reg.kill(&e) {
                Err(RegistryError::Cgroup { source, .. }) => {
                    assert!(format!("{source:?}").starts_with(why), "{cg:?}: {source:?}");
                    if why == "OpenDir" {
                        let errno = std::error::Error::source(&source)
                            .and_then(|s| s.downcast_ref::<std::io::Error>())
                            .and_then(std::io::Error::raw_os_error);
                        assert_eq!(errno, Some(libc::ELOOP), "{source:?}");
                    }
                }
                other => panic!("{cg:?}: expected a refusal, got {other:?}"),
            }
            assert!(reg.stats(&e).is_err(), "{cg:?}");
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process was killed"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        drop(r);
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_file(&target);
        let _ = std::fs::remove_dir_all(dir.with_extension("fake"));
        let _ = std::fs::remove_dir_all(&dir);
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
