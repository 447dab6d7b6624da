//! Host id ranges for process contexts: nebula's pool of subordinate ids, and one lease of
//! 65,536 ids per live context.
//!
//! # The decision
//!
//! A context's user namespace maps its ids 0..65535 onto a host range that belongs to that
//! context alone while it lives:
//!
//! ```text
//!  /etc/subuid, /etc/subgid:  nebula:1610612736:67108864      (the pool: 1,024 ranges)
//!
//!  host uid   1610612736 .. +65536   +65536 .. +131072   ...   slot 1023
//!             ───────────────────    ─────────────────
//!             context A (slot 0)     context B (slot 1)
//!             uid_map "0 1610612736 65536"
//!
//!  /run/nebula/ids/<slot>   the lease: flock(LOCK_EX) held by the supervisor for the
//!                           context's life; its text names the holder; empty = released
//! ```
//!
//! Root inside a context is then an ordinary, unprivileged uid of the host: it owns nothing
//! there, is in no group, and holds no capability over the host's user namespace. A write to
//! the host's `/proc/sys/kernel/core_pattern` or a read of a 0600 root-only file is refused
//! by the kernel's ordinary permission checks, and two live contexts cannot signal, ptrace or
//! read each other's files because their ids differ.
//!
//! * **The pool is declared where the system looks for it.** A `nebula` entry in
//!   `/etc/subuid` and `/etc/subgid` (added on first use when missing, as podman and LXC do)
//!   tells `useradd`, `newuidmap` and other tools that these ids are taken. The default start,
//!   `0x60000000`, lies in the range systemd documents for container ids (524288 to
//!   1879048191, systemd's `UIDS-GIDS.md`); when it overlaps an existing entry, the first free
//!   65,536-aligned start above it is taken.
//! * **A lease is a locked file**, `ids/<slot>` in the lease directory (`/run/nebula/ids`, a
//!   tmpfs, so nothing survives a reboot, as no context does). The supervisor holds
//!   `flock(LOCK_EX)` on it for the context's life and empties it when the context ended:
//!   at once when the context had its own pid namespace (the kernel reaps the whole namespace
//!   before its init's `wait4` returns), after a scan of `/proc` otherwise. The kernel drops
//!   the lock when the supervisor dies, even by `SIGKILL`; such a lease still has its text,
//!   and is taken again only after a scan of `/proc` shows that no process runs with a uid of
//!   that range (the context dies with its supervisor, `PR_SET_PDEATHSIG`, but a
//!   context without a pid namespace may leave stragglers). [`IdPool::reclaim`], which every
//!   `nebula-ctl` command runs, empties such leases.
//! * **Reuse.** A range is handed out again after its context ended. Files a context left in a
//!   writable bind keep its host ids, so the next holder of that range can read them: bind
//!   only what a context may share with its successors, or give it `--uid` of its own.
//!
//! # Alternatives set aside
//!
//! * **Root inside = the caller outside** (bubblewrap run as root, and nebula before this): the
//!   workload is host root with a read-only view; one writable `/proc/sys` file, a device node
//!   or a root-only file read through the read-only root is enough to own the host.
//! * **One shared range for all contexts** (the LXC default `root:100000:65536`): contexts
//!   would share ids and so each other's files and processes.
//! * **A random range per context without a record** (systemd-nspawn `--private-users=pick`
//!   hashes the machine name and checks for collisions with a lock): with no record in
//!   `/etc/subuid` other tools cannot know the ids are in use, and a collision check needs the
//!   same lock anyway.
//! * **Idmapped mounts** to give each context its own view of a shared tree: they change file
//!   ownership as seen through a mount, not who the processes are to the kernel; a separate
//!   step (the OCI issue will want it for root filesystems), not a replacement.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

/// Ids in one context's range: uids and gids 0..=65535 inside.
pub const RANGE: u32 = 65_536;
/// The name of nebula's entry in `/etc/subuid` and `/etc/subgid`.
pub const POOL_NAME: &str = "nebula";
/// How many ranges a pool declared by nebula holds (live contexts at once).
pub const DEFAULT_SLOTS: u32 = 1024;
/// Where nebula's pool starts when nothing else is there: `0x60000000`, inside systemd's
/// container range.
pub const DEFAULT_START: u32 = 0x6000_0000;
/// The first id above systemd's container range (1879048191 = `0x6FFFFFFF` is its last).
const CEILING: u64 = 0x7000_0000;
/// The lowest start nebula accepts for its entry: ids below are the host's own users.
const MIN_START: u32 = 65_536;
/// One past the largest id a user namespace maps (`(uid_t)-1` is never valid).
const ID_END: u64 = u32::MAX as u64;
/// The default lease directory.
pub const DEFAULT_LEASE_DIR: &str = "/run/nebula/ids";

/// A host range: uids `uid..uid+count` and gids `gid..gid+count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// The first host uid (uid 0 inside).
    pub uid: u32,
    /// The first host gid (gid 0 inside).
    pub gid: u32,
    /// How many ids.
    pub count: u32,
}

impl IdRange {
    /// `/proc/<pid>/uid_map` content for this range.
    pub fn uid_map(&self) -> String {
        format!("0 {} {}\n", self.uid, self.count)
    }

    /// `/proc/<pid>/gid_map` content for this range.
    pub fn gid_map(&self) -> String {
        format!("0 {} {}\n", self.gid, self.count)
    }

    /// Whether host uid `uid` is in the range.
    pub fn contains_uid(&self, uid: u32) -> bool {
        uid >= self.uid && u64::from(uid) < u64::from(self.uid) + u64::from(self.count)
    }
}

/// An error of the id pool.
#[derive(Debug, thiserror::Error)]
pub enum IdPoolError {
    /// Reading a subordinate-id file failed.
    #[error("cannot read {}", .path.display())]
    ReadSubid {
        /// The file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Adding nebula's entry to a subordinate-id file failed.
    #[error("cannot add nebula's id pool \"{POOL_NAME}:{start}:{count}\" to {}; Hint: add that line yourself, or pass --uid", .path.display())]
    WriteSubid {
        /// The file.
        path: PathBuf,
        /// The entry's first id.
        start: u32,
        /// The entry's size.
        count: u32,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// nebula's entry is too small for one range.
    #[error("the \"{POOL_NAME}\" entry in {} holds {count} ids, fewer than one context's {RANGE}; Hint: make COUNT a multiple of {RANGE}", .path.display())]
    PoolTooSmall {
        /// The file.
        path: PathBuf,
        /// Its size.
        count: u32,
    },
    /// nebula's entry in a subordinate-id file is not a pool nebula may use.
    #[error("the \"{POOL_NAME}:{start}:{count}\" entry in {} {reason}; Hint: fix or remove that line (nebula adds a fresh one at {DEFAULT_START} when it is missing)", .path.display())]
    BadEntry {
        /// The file.
        path: PathBuf,
        /// The entry's first id.
        start: u32,
        /// The entry's size.
        count: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No free start for a new pool was found below the ceiling.
    #[error("no free range of {count} ids for nebula's pool in {} below {CEILING}; Hint: add a \"{POOL_NAME}:START:COUNT\" line to /etc/subuid and /etc/subgid", .path.display())]
    NoRoom {
        /// The file.
        path: PathBuf,
        /// The size wanted.
        count: u64,
    },
    /// The lease directory or a lease file could not be used.
    #[error("cannot use the id lease {}; Hint: it must be a directory root can write (a tmpfs such as /run)", .path.display())]
    Lease {
        /// The file or directory.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Every range is leased by a live context.
    #[error(
        "all {slots} id ranges of nebula's pool are leased by live contexts; Hint: end a context, or enlarge the \"{POOL_NAME}\" entry of /etc/subuid and /etc/subgid ({RANGE} ids per context)"
    )]
    Exhausted {
        /// The number of ranges.
        slots: u32,
    },
}

/// One entry of a subordinate-id file: `name:start:count`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubidEntry {
    /// The user name (or uid) it belongs to.
    pub name: String,
    /// The first id.
    pub start: u32,
    /// How many ids.
    pub count: u32,
}

/// Parses a subordinate-id file (`/etc/subuid` format, subuid(5)). Comments, blank lines and
/// lines that do not parse are skipped, as shadow-utils does.
pub fn parse_subid(text: &str) -> Vec<SubidEntry> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let mut f = l.split(':');
            let name = f.next()?.to_owned();
            let start = f.next()?.trim().parse().ok()?;
            let count = f.next()?.trim().parse().ok()?;
            f.next()
                .is_none()
                .then_some(SubidEntry { name, start, count })
        })
        .collect()
}

/// The first `RANGE`-aligned start at or above `from` where `count` ids overlap no entry,
/// below 0x7000_0000 (`CEILING`).
pub fn free_start(entries: &[SubidEntry], from: u32, count: u64) -> Option<u32> {
    let mut s = u64::from(from).next_multiple_of(u64::from(RANGE));
    loop {
        if s + count > CEILING {
            return None;
        }
        let clash = entries.iter().find(|e| {
            let (a, b) = (u64::from(e.start), u64::from(e.start) + u64::from(e.count));
            a < s + count && s < b
        });
        match clash {
            None => return u32::try_from(s).ok(),
            Some(e) => {
                s = (u64::from(e.start) + u64::from(e.count)).next_multiple_of(u64::from(RANGE))
            }
        }
    }
}

/// nebula's pool: its subordinate-id files and its lease directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdPool {
    subuid: PathBuf,
    subgid: PathBuf,
    leases: PathBuf,
}

/// A declared pool: where its uid and gid ranges start and how many ranges it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredPool {
    pool: IdPool,
    uid_start: u32,
    gid_start: u32,
    slots: u32,
}

/// A leased range, held until dropped: the lease file stays locked (`flock`) by this process
/// and is emptied on drop.
#[derive(Debug)]
pub struct IdLease {
    range: IdRange,
    slot: u32,
    /// A closure context (a fork of the supervisor) closes the lease files of the others.
    /// Before `file`: the number is unregistered before the file is closed.
    _mark: crate::seccomp::notify::SupervisorOnlyMark,
    file: File,
    path: PathBuf,
    /// No process can hold the range's ids any more: see [`IdLease::mark_vacated`].
    vacated: bool,
}

/// A lease as seen by [`IdPool::leases`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseState {
    /// Its slot.
    pub slot: u32,
    /// Its range.
    pub range: IdRange,
    /// The holder's record (`holder=<pid> start=<ticks>`).
    pub holder: String,
    /// Whether a live supervisor holds its lock (`false`: it was left behind by one that
    /// died, and [`IdPool::reclaim`] frees it once no process of the range is left).
    pub locked: bool,
}

impl Default for IdPool {
    fn default() -> Self {
        IdPool::system()
    }
}

impl IdPool {
    /// The system's pool: `/etc/subuid`, `/etc/subgid`, leases under [`DEFAULT_LEASE_DIR`].
    pub fn system() -> IdPool {
        IdPool::at("/etc/subuid", "/etc/subgid", DEFAULT_LEASE_DIR)
    }

    /// A pool with other files (tests, or a host that keeps them elsewhere).
    pub fn at(
        subuid: impl Into<PathBuf>,
        subgid: impl Into<PathBuf>,
        leases: impl Into<PathBuf>,
    ) -> IdPool {
        IdPool {
            subuid: subuid.into(),
            subgid: subgid.into(),
            leases: leases.into(),
        }
    }

    /// The lease directory.
    pub fn lease_dir(&self) -> &Path {
        &self.leases
    }

    /// Reads nebula's entries from the subordinate-id files, adding them where missing (under
    /// a lock in the lease directory, so two supervisors add one entry, not two).
    ///
    /// # Errors
    ///
    /// [`IdPoolError::ReadSubid`], [`IdPoolError::WriteSubid`], [`IdPoolError::NoRoom`],
    /// [`IdPoolError::PoolTooSmall`], [`IdPoolError::Lease`] (the lock).
    pub fn declare(&self) -> Result<DeclaredPool, IdPoolError> {
        let read = |p: &Path| match std::fs::read_to_string(p) {
            Ok(t) => Ok(parse_subid(&t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(IdPoolError::ReadSubid {
                path: p.to_owned(),
                source,
            }),
        };
        let ours = |v: &[SubidEntry]| v.iter().find(|e| e.name == POOL_NAME).cloned();
        let (u, g) = (read(&self.subuid)?, read(&self.subgid)?);
        let (ue, ge) = match (ours(&u), ours(&g)) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                let _lock = self.lock_dir()?;
                // Again under the lock: another supervisor may have added them meanwhile.
                let (u, g) = (read(&self.subuid)?, read(&self.subgid)?);
                // A const, so the product is checked at compile time to fit the file's u32.
                const COUNT: u32 = RANGE * DEFAULT_SLOTS;
                let count = u64::from(COUNT);
                let both: Vec<SubidEntry> = u.iter().chain(g.iter()).cloned().collect();
                let pick = |file: &Path, entries: &[SubidEntry]| {
                    free_start(entries, DEFAULT_START, count).ok_or_else(|| IdPoolError::NoRoom {
                        path: file.to_owned(),
                        count,
                    })
                };
                // The same start in both files where possible: host uid N and gid N go together.
                let shared = free_start(&both, DEFAULT_START, count);
                let ue = match ours(&u) {
                    Some(e) => e,
                    None => {
                        let start = match shared {
                            Some(s) => s,
                            None => pick(&self.subuid, &u)?,
                        };
                        append_entry(&self.subuid, start, COUNT)?
                    }
                };
                let ge = match ours(&g) {
                    Some(e) => e,
                    None => {
                        let start = match shared {
                            Some(s) if free_start(&g, s, count) == Some(s) => s,
                            _ => pick(&self.subgid, &g)?,
                        };
                        append_entry(&self.subgid, start, COUNT)?
                    }
                };
                (ue, ge)
            }
        };
        for (e, p) in [(&ue, &self.subuid), (&ge, &self.subgid)] {
            let bad = |reason| IdPoolError::BadEntry {
                path: p.clone(),
                start: e.start,
                count: e.count,
                reason,
            };
            if e.start < MIN_START {
                return Err(bad(
                    "starts below 65536, among the host's own users and groups",
                ));
            }
            if u64::from(e.start) + u64::from(e.count) > ID_END {
                return Err(bad("ends past the largest id the kernel maps (2^32 - 2)"));
            }
            if e.count < RANGE {
                return Err(IdPoolError::PoolTooSmall {
                    path: p.clone(),
                    count: e.count,
                });
            }
        }
        Ok(DeclaredPool {
            pool: self.clone(),
            uid_start: ue.start,
            gid_start: ge.start,
            slots: ue.count.min(ge.count) / RANGE,
        })
    }

    /// nebula's pool as the subordinate-id files declare it, without adding anything: `None`
    /// when either file has no `nebula` entry (nothing was ever leased).
    ///
    /// # Errors
    ///
    /// [`IdPoolError::ReadSubid`], [`IdPoolError::PoolTooSmall`].
    pub fn declared(&self) -> Result<Option<DeclaredPool>, IdPoolError> {
        let entry = |p: &Path| match std::fs::read_to_string(p) {
            Ok(t) => Ok(parse_subid(&t).into_iter().find(|e| e.name == POOL_NAME)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(IdPoolError::ReadSubid {
                path: p.to_owned(),
                source,
            }),
        };
        match (entry(&self.subuid)?, entry(&self.subgid)?) {
            (Some(_), Some(_)) => self.declare().map(Some),
            _ => Ok(None),
        }
    }

    /// What every `nebula-ctl` command does first as root: [`IdPool::reclaim`] on the system
    /// pool, if one was declared. Errors are ignored (the next lease retries).
    pub fn reclaim_system() -> Vec<IdRange> {
        let pool = IdPool::system();
        match pool.declared() {
            Ok(Some(d)) => pool.reclaim(&d).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn ensure_dir(&self) -> Result<(), IdPoolError> {
        let err = |source| IdPoolError::Lease {
            path: self.leases.clone(),
            source,
        };
        std::fs::create_dir_all(&self.leases).map_err(err)?;
        std::fs::set_permissions(&self.leases, std::fs::Permissions::from_mode(0o700)).map_err(err)
    }

    fn lock_dir(&self) -> Result<File, IdPoolError> {
        self.ensure_dir()?;
        let path = self.leases.join("pool.lock");
        let f = open_lease(&path)?;
        rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            IdPoolError::Lease {
                path,
                source: e.into(),
            }
        })?;
        Ok(f)
    }

    /// Every lease that holds a record: live ones (locked by their supervisor) and ones left
    /// behind by a supervisor that died. A released lease is empty. (Its lock may outlast the
    /// release for as long as a closure context forked meanwhile holds a copy of the file:
    /// [`DeclaredPool::lease`] then takes another slot.)
    ///
    /// # Errors
    ///
    /// [`IdPoolError::Lease`] when the directory cannot be read (a missing one has none).
    pub fn leases(&self, pool: &DeclaredPool) -> Result<Vec<LeaseState>, IdPoolError> {
        let mut out = Vec::new();
        for (slot, path) in self.slot_files()? {
            if slot >= pool.slots {
                continue;
            }
            let Ok(mut f) = open_lease(&path) else {
                continue;
            };
            let locked = !try_lock(&f);
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            if !holder.trim().is_empty() {
                out.push(LeaseState {
                    slot,
                    range: pool.range(slot),
                    holder: holder.trim().to_owned(),
                    locked,
                });
            }
        }
        out.sort_by_key(|l| l.slot);
        Ok(out)
    }

    /// Frees the leases that supervisors which died left behind, once no process runs with a
    /// uid of their range. Returns the ranges freed.
    ///
    /// # Errors
    ///
    /// As [`IdPool::leases`].
    pub fn reclaim(&self, pool: &DeclaredPool) -> Result<Vec<IdRange>, IdPoolError> {
        let mut freed = Vec::new();
        for (slot, path) in self.slot_files()? {
            if slot >= pool.slots {
                continue;
            }
            let Ok(mut f) = open_lease(&path) else {
                continue;
            };
            if !try_lock(&f) {
                continue;
            }
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let range = pool.range(slot);
            if !holder.trim().is_empty() && !range_in_use(&range) && f.set_len(0).is_ok() {
                freed.push(range);
            }
        }
        Ok(freed)
    }

    fn slot_files(&self) -> Result<Vec<(u32, PathBuf)>, IdPoolError> {
        let rd = match std::fs::read_dir(&self.leases) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(IdPoolError::Lease {
                    path: self.leases.clone(),
                    source,
                });
            }
        };
        Ok(rd
            .flatten()
            .filter_map(|d| {
                let slot = d.file_name().to_str()?.parse::<u32>().ok()?;
                Some((slot, d.path()))
            })
            .collect())
    }
}

impl DeclaredPool {
    /// The number of ranges (contexts alive at once).
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The pool's files.
    pub fn pool(&self) -> &IdPool {
        &self.pool
    }

    /// The range of `slot`.
    ///
    /// # Panics
    ///
    /// For a slot past [`DeclaredPool::slots`] (a range outside the declared entry).
    pub fn range(&self, slot: u32) -> IdRange {
        assert!(slot < self.slots, "slot {slot} of {}", self.slots);
        // Cannot overflow: declare() checked start + slots * RANGE <= CEILING.
        IdRange {
            uid: self.uid_start + slot * RANGE,
            gid: self.gid_start + slot * RANGE,
            count: RANGE,
        }
    }

    /// Leases a free range: the first slot (starting after the one this process leased last)
    /// whose file is not locked by a live supervisor and, if a dead supervisor left it behind,
    /// whose ids no process uses any more.
    ///
    /// # Errors
    ///
    /// [`IdPoolError::Exhausted`] when every range is in use; [`IdPoolError::Lease`].
    pub fn lease(&self) -> Result<IdLease, IdPoolError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        self.pool.ensure_dir()?;
        let first = NEXT.load(Ordering::Relaxed);
        for i in 0..self.slots {
            let slot = (first.wrapping_add(i)) % self.slots;
            let path = self.pool.leases.join(slot.to_string());
            let mut file = open_lease(&path)?;
            if !try_lock(&file) {
                continue;
            }
            let mut held = String::new();
            let _ = file.read_to_string(&mut held);
            let range = self.range(slot);
            if !held.trim().is_empty() && range_in_use(&range) {
                continue;
            }
            let me = std::process::id();
            let record = format!(
                "holder={me} start={}\n",
                super::procfs::process_start_time(me as i32).unwrap_or(0)
            );
            let write = |f: &mut File| -> io::Result<()> {
                f.set_len(0)?;
                f.rewind()?;
                f.write_all(record.as_bytes())
            };
            write(&mut file).map_err(|source| IdPoolError::Lease {
                path: path.clone(),
                source,
            })?;
            NEXT.store(slot.wrapping_add(1), Ordering::Relaxed);
            return Ok(IdLease {
                range,
                slot,
                _mark: crate::seccomp::notify::SupervisorOnlyMark::new(file.as_fd()),
                file,
                path,
                vacated: false,
            });
        }
        Err(IdPoolError::Exhausted { slots: self.slots })
    }
}

impl IdLease {
    /// The leased range.
    pub fn range(&self) -> IdRange {
        self.range
    }

    /// Its slot in the pool.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The lease file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that no process can run with the range's ids any more, so that dropping the
    /// lease frees the range without scanning `/proc` (which costs a read of every process's
    /// `status`: O(processes) per context). True once the context's own pid namespace has
    /// ended: the kernel reaps every process of a pid namespace before its init's `wait4`
    /// returns (`zap_pid_ns_processes` waits for `pid_allocated` to drop to the init's own
    /// pids), and every process of a context is in its pid namespace.
    pub(crate) fn mark_vacated(&mut self) {
        self.vacated = true;
    }
}

impl Drop for IdLease {
    /// Releases the range: the file is emptied (released cleanly, free for the next lease
    /// at once) when no process runs with an id of the range any more: known without a look
    /// when the context's own pid namespace ended, found by a scan of `/proc` otherwise. A
    /// process that outlived its context with such an id (a context without a pid namespace
    /// or a cgroup, whose orphans live on) keeps the record, so that only
    /// [`IdPool::reclaim`] frees the range, once that process is gone too. Closing the file
    /// drops the lock.
    fn drop(&mut self) {
        if self.vacated || !range_in_use(&self.range) {
            let _ = self.file.set_len(0);
        }
    }
}

fn open_lease(path: &Path) -> Result<File, IdPoolError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| IdPoolError::Lease {
            path: path.to_owned(),
            source,
        })
}

/// Takes the file's lock without waiting; `false` when another open file holds it.
fn try_lock(f: &File) -> bool {
    rustix::fs::flock(
        f.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .is_ok()
}

/// Whether any process of the host runs with a real, effective, saved or filesystem uid in
/// `range` (`/proc/<pid>/status`, `Uid:` line). Zombies do not count: they run nothing, and
/// a parent that never reaps them (an init that ignores orphans) must not pin the range.
pub fn range_in_use(range: &IdRange) -> bool {
    // A /proc that cannot be read: in use, to be safe.
    holders(range).is_none_or(|mut h| h.next().is_some())
}

/// The host pids of the processes [`range_in_use`] counts (none when `/proc` cannot be
/// read).
pub fn range_holders(range: &IdRange) -> Vec<i32> {
    holders(range).map(Iterator::collect).unwrap_or_default()
}

/// Every live process with a uid in `range`, read from `/proc`; `None` when `/proc` cannot
/// be read.
fn holders(range: &IdRange) -> Option<impl Iterator<Item = i32> + '_> {
    let rd = std::fs::read_dir("/proc").ok()?;
    Some(
        rd.flatten()
            .filter_map(|d| d.file_name().to_str()?.parse::<i32>().ok())
            .filter(move |pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                    !is_zombie(&s)
                        && s.lines()
                            .find_map(|l| l.strip_prefix("Uid:"))
                            .is_some_and(|ids| {
                                ids.split_whitespace()
                                    .filter_map(|x| x.parse::<u32>().ok())
                                    .any(|u| range.contains_uid(u))
                            })
                })
            }),
    )
}

/// Whether a `/proc/<pid>/status` text is a zombie's (or a dead task's): `State:` Z or X.
fn is_zombie(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .is_some_and(|st| matches!(st.trim_start().chars().next(), Some('Z' | 'X')))
}

/// Appends `nebula:start:count` to `path` atomically (a copy with the line added, `fsync`,
/// `rename`), keeping the file's mode (0644 for a new file).
fn append_entry(path: &Path, start: u32, count: u32) -> Result<SubidEntry, IdPoolError> {
    let err = |source| IdPoolError::WriteSubid {
        path: path.to_owned(),
        start,
        count,
        source,
    };
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(err(e)),
    };
    let _lock = ShadowLock::take(path).map_err(err)?;
    // Read again under shadow's lock: usermod or useradd may have changed it meanwhile.
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => old,
        Err(e) => return Err(err(e)),
    };
    let meta = std::fs::metadata(path).ok();
    let mode = meta
        .as_ref()
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let owner = meta.as_ref().map(|m| {
        use std::os::unix::fs::MetadataExt;
        (m.uid(), m.gid())
    });
    let mut text = old;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{POOL_NAME}:{start}:{count}\n"));
    let tmp = path.with_extension("nebula-tmp");
    let write = || -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })?;
    Ok(SubidEntry {
        name: POOL_NAME.into(),
        start,
        count,
    })
}

/// shadow-utils' lock on a file it edits (`commonio_lock` in lib/commonio.c): `<file>.lock`,
/// made by `link(2)` of a file holding the locker's pid, so it appears whole or not at all.
/// A lock whose pid is gone is stale and taken over. `useradd`, `usermod --add-subuids` and
/// nebula then never interleave their rewrites of `/etc/subuid`. Removed on drop.
struct ShadowLock(PathBuf);

impl ShadowLock {
    fn take(file: &Path) -> io::Result<ShadowLock> {
        let lock = PathBuf::from(format!("{}.lock", file.display()));
        let me = std::process::id();
        let mine = PathBuf::from(format!("{}.{me}", file.display()));
        std::fs::write(&mine, me.to_string())?;
        let result = (|| {
            for _ in 0..50 {
                match std::fs::hard_link(&mine, &lock) {
                    Ok(()) => return Ok(ShadowLock(lock.clone())),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                let holder = std::fs::read_to_string(&lock)
                    .ok()
                    .and_then(|t| t.trim().parse::<i32>().ok());
                let alive = holder.is_some_and(|pid| {
                    rustix::process::Pid::from_raw(pid).is_some_and(|p| {
                        rustix::process::test_kill_process(p).is_ok()
                            || Path::new(&format!("/proc/{pid}")).exists()
                    })
                });
                if !alive {
                    let _ = std::fs::remove_file(&lock);
                    continue;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is held by a live process for over 5 s", lock.display()),
            ))
        })();
        let _ = std::fs::remove_file(&mine);
        result
    }
}

impl Drop for ShadowLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An unprivileged caller's own subordinate ids, mapped by the setuid helpers of shadow-utils
/// (`newuidmap`, `newgidmap`) as rootless podman does: id 0 inside is the caller, ids
/// 1..=count are the caller's `/etc/subuid` and `/etc/subgid` range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subordinate {
    /// The caller's uid and gid (id 0 inside).
    pub own: (u32, u32),
    /// The first subordinate uid (uid 1 inside).
    pub uid_start: u32,
    /// The first subordinate gid (gid 1 inside).
    pub gid_start: u32,
    /// How many subordinate ids are mapped (the smaller of the two entries).
    pub count: u32,
    /// `newuidmap`.
    pub newuidmap: PathBuf,
    /// `newgidmap`.
    pub newgidmap: PathBuf,
}

impl Subordinate {
    /// The caller's subordinate ranges when it has one in both `/etc/subuid` and
    /// `/etc/subgid` (by user name or numeric uid, as shadow-utils matches them) and both
    /// helpers are installed (`/usr/bin`, `/bin`); `None` otherwise.
    pub fn for_caller() -> Option<Subordinate> {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_owned())
            })
        })?;
        let find = |file: &str| {
            let text = std::fs::read_to_string(file).ok()?;
            parse_subid(&text)
                .into_iter()
                .find(|e| e.name == name || e.name == uid.to_string())
                .filter(|e| e.count > 0)
        };
        let (u, g) = (find("/etc/subuid")?, find("/etc/subgid")?);
        let tool = |n: &str| {
            ["/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(n))
                .find(|p| p.is_file())
        };
        Some(Subordinate {
            own: (uid, gid),
            uid_start: u.start,
            gid_start: g.start,
            count: u.count.min(g.count).min(u32::MAX - 1),
            newuidmap: tool("newuidmap")?,
            newgidmap: tool("newgidmap")?,
        })
    }

    /// The arguments after the pid: `0 <own> 1 1 <start> <count>`.
    pub fn map_args(&self, own: u32, start: u32) -> [String; 6] {
        [
            "0".into(),
            own.to_string(),
            "1".into(),
            "1".into(),
            start.to_string(),
            self.count.to_string(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_skips_junk() {
        let e = parse_subid("# c\nroot:100000:65536\n\nbad line\nx:1:2:3\nnebula:5:6\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].name, "nebula");
        assert_eq!((e[1].start, e[1].count), (5, 6));
    }

    #[test]
    fn free_start_skips_overlaps_and_aligns() {
        let c = u64::from(RANGE) * 4;
        assert_eq!(free_start(&[], DEFAULT_START, c), Some(DEFAULT_START));
        let e = parse_subid(&format!("a:{}:10\n", DEFAULT_START + 5));
        let s = free_start(&e, DEFAULT_START, c).unwrap();
        assert_eq!(s, DEFAULT_START + RANGE);
        assert_eq!(s % RANGE, 0);
        // An entry that fills everything up to the ceiling leaves no room.
        let full = parse_subid(&format!(
            "a:{DEFAULT_START}:{}\n",
            u32::try_from(CEILING).unwrap() - DEFAULT_START
        ));
        assert_eq!(free_start(&full, DEFAULT_START, c), None);
    }

    #[test]
    fn declare_adds_one_entry_and_leases_are_exclusive() {
        let dir = std::env::temp_dir().join(format!("nebula-idpool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (su, sg) = (dir.join("subuid"), dir.join("subgid"));
        std::fs::write(&su, format!("root:{DEFAULT_START}:65536\n")).unwrap();
        // A lock left by a shadow-utils tool that died: stale, taken over, then removed.
        std::fs::write(dir.join("subuid.lock"), "999999999").unwrap();
        let pool = IdPool::at(&su, &sg, dir.join("ids"));
        let d = pool.declare().unwrap();
        assert!(!dir.join("subuid.lock").exists() && !dir.join("subgid.lock").exists());
        let d2 = pool.declare().unwrap();
        assert_eq!(d, d2, "a second declare finds the first one's entries");
        let text = std::fs::read_to_string(&su).unwrap();
        assert_eq!(text.matches("nebula:").count(), 1, "{text}");
        assert_eq!(d.uid_start, DEFAULT_START + RANGE, "skips root's range");
        assert_eq!(d.slots, DEFAULT_SLOTS);
        let a = d.lease().unwrap();
        let b = d.lease().unwrap();
        assert_ne!(a.range(), b.range());
        assert_eq!(pool.leases(&d).unwrap().len(), 2);
        let ra = a.range();
        drop(a);
        let held = pool.leases(&d).unwrap();
        assert_eq!(held.len(), 1);
        assert!(held.iter().all(|l| l.range != ra && l.locked));
        drop(b);
        assert!(pool.leases(&d).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_entry_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("nebula-idpool-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (su, sg) = (dir.join("subuid"), dir.join("subgid"));
        let pool = IdPool::at(&su, &sg, dir.join("ids"));
        for (line, why) in [
            ("nebula:1000:65536", "below 65536"),
            ("nebula:4294901760:131072", "ends past"),
            ("nebula:100000:100", "fewer than"),
        ] {
            std::fs::write(&su, format!("{line}\n")).unwrap();
            std::fs::write(&sg, format!("{line}\n")).unwrap();
            let e = pool.declare().unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains(&su.display().to_string()),
                "{e}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_range_still_in_use_is_not_released_on_drop() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: running a process as a pool uid needs root");
            return;
        }
        use std::os::unix::process::CommandExt;
        let dir = std::env::temp_dir().join(format!("nebula-idpool-use-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A pool of its own, away from the system pool's ranges (tests run in parallel).
        let entry = format!("{POOL_NAME}:{}:{}\n", 0x6800_0000u32, RANGE * 4);
        for f in ["subuid", "subgid"] {
            std::fs::write(dir.join(f), &entry).unwrap();
        }
        let pool = IdPool::at(dir.join("subuid"), dir.join("subgid"), dir.join("ids"));
        let d = pool.declare().unwrap();
        let lease = d.lease().unwrap();
        let range = lease.range();
        // An orphan of the context, still running with an id of its range.
        let mut orphan = std::process::Command::new("sleep")
            .arg("30")
            .uid(range.uid + 7)
            .gid(range.gid + 7)
            .spawn()
            .unwrap();
        drop(lease);
        let left = pool.leases(&d).unwrap();
        assert!(
            left.iter().any(|l| l.range == range && !l.locked),
            "the record must stay while uid {} runs: {left:?}",
            range.uid + 7
        );
        assert!(
            pool.reclaim(&d).unwrap().is_empty(),
            "reclaimed while in use"
        );
        let next = d.lease().unwrap();
        assert_ne!(next.range(), range, "a range in use was leased again");
        orphan.kill().unwrap();
        orphan.wait().unwrap();
        assert_eq!(pool.reclaim(&d).unwrap(), [range]);
        drop(next);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
