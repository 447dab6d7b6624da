//! Landlock for process contexts: a second filesystem layer under the read-only root.
//!
//! # Overview
//!
//! A process context's read-only root is a mount property: the workload cannot write to the
//! host's tree because the mounts say read-only. That holds only as long as the mount table
//! does, and it says nothing about the writable places a configuration opens on purpose (a
//! `--rw-root`, a writable bind). [`Landlock`] adds a rule that does not depend on mounts:
//! the Landlock LSM checks every path the workload opens, creates, renames or removes
//! against a ruleset that the workload itself enforced (`landlock_restrict_self`) and can
//! never lift. With [`crate::isolation::process::ProcessConfig::landlock`] on (`nebula-ctl
//! run --landlock`, profile key `landlock = true`):
//!
//! * **Writes** (the handled rights below other than `read_file`, `read_dir` and `execute`)
//!   are allowed only beneath the context's private tmpfs mounts (`ProcessConfig::tmpfs`,
//!   `/tmp` by default) and its writable binds (`ProcessConfig::binds` with `writable`),
//!   plus, as file rules, the character devices a shell needs: [`DEVICES`]. Everywhere else
//!   a write is `EACCES`, even where the mount is writable.
//! * **Reads and execution** are untouched unless [`Landlock::read_allow`] is non-empty
//!   (`--landlock-read PATH`, key `landlock-read`). Then `read_file`, `read_dir` and
//!   `execute` are handled too and allowed only beneath those paths (read + execute), the
//!   writable places and the devices. The program, its interpreter (`/lib64/ld-linux...`)
//!   and its libraries must be beneath an allowed path, or `execve` fails with `EACCES`.
//! * **Mounts**: the kernel refuses `mount(2)`, `umount(2)`, `pivot_root(2)` and the new
//!   mount API to a task restricted by a filesystem ruleset (`EPERM`), whatever capabilities
//!   it holds in its user namespace. So the layer survives exactly the attack it is there
//!   for: a workload that kept `CAP_SYS_ADMIN` (a `keep_caps` configuration) cannot remount
//!   the root writable, and if a mount had been changed before, the path rules still hold.
//!
//! # What the kernel's ABI adds
//!
//! `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)` reports the ABI
//! ([`crate::features`]`().landlock`, `nebula-ctl probe`). nebula handles the best the
//! kernel offers and masks the rest ([`AccessFs::for_abi`]):
//!
//! | ABI | Linux | filesystem rights added |
//! |---|---|---|
//! | 1 | 5.13 | `execute`, `write_file`, `read_file`, `read_dir`, `remove_dir`, `remove_file`, `make_char`, `make_dir`, `make_reg`, `make_sock`, `make_fifo`, `make_block`, `make_sym` |
//! | 2 | 5.19 | `refer` (link or rename into another directory; under ABI 1 that is always denied to a landlocked task) |
//! | 3 | 6.2 | `truncate` (`truncate`, `ftruncate`, `open(O_TRUNC)`) |
//! | 4 | 6.7 | none (TCP bind/connect rules) |
//! | 5 | 6.10 | `ioctl_dev` (ioctls on devices opened after the restriction) |
//! | 6, 7 | 6.12, 6.15 | none (signal and abstract-socket scoping; audit logging) |
//!
//! Network rules and scoping are left out: process contexts have their own network and pid
//! namespaces for that. Landlock missing (`ENOSYS`: not built; `EOPNOTSUPP`: not enabled at
//! boot) is never silently tolerated: asking for it is an error naming the reason and the fix.
//!
//! # Where and when it is applied
//!
//! The ruleset must be built *inside* the context, after its mounts exist: a rule binds to
//! an inode, and the tmpfs inodes exist only in the context's mount namespace. The workload
//! process builds it as part of the privilege step, after `no_new_privs` (which
//! `landlock_restrict_self` requires once the capability drop took `CAP_SYS_ADMIN`) and
//! before the seccomp filter: last-but-one, because the filter, installed last, may deny the
//! Landlock calls and `open` to the workload without preventing nebula's own, while
//! everything before it (rlimits, `chdir`, the capability drop and uid change) needs no path
//! that the ruleset would deny. On the exec path the child is a raw `clone3` child of a multi-threaded
//! supervisor, so everything is prepared in the supervisor ([`ProcessIsolation::new`]: C
//! strings of the paths, the rights of each rule, masked to the ABI) and the child runs only
//! raw system calls on that plan, allocation-free: per rule `open(O_PATH | O_CLOEXEC)`,
//! `landlock_add_rule`, `close`; then `landlock_restrict_self`. A failure names the step, the
//! path and the errno. Closures get the same ruleset (their workload runs the same step).
//! pid 1 of the context, which only reaps, is not restricted.
//!
//! # What it does not cover
//!
//! * **Inherited file descriptors**: Landlock checks opening (and truncating, and device
//!   ioctls on what was opened after the restriction), not using. A descriptor the workload
//!   inherits (its stdio, a passed socket, an fd received over `SCM_RIGHTS`) keeps the access
//!   it was opened with, wherever it points.
//! * **The kernel's side doors**: objects without a path in the context's tree are not
//!   checked (pipes, sockets, memfds, anonymous inodes, `/proc/<pid>/fd/N` reopening a pipe),
//!   and operations that are not Landlock rights as of ABI 7 are left to the mounts and to
//!   DAC: `chmod`, `chown`, `utime`, extended attributes, `stat`/path lookup (a denied file's
//!   existence is visible), `ioctl` on non-device files. Landlock does forbid a landlocked
//!   task to ptrace one outside its domain (pid 1, the supervisor), which the pid namespace
//!   and pid 1's non-dumpable flag already do.
//! * **Truncation before ABI 3** (Linux < 6.2): the kernel has no `truncate` right, so a
//!   landlocked task may still `truncate(2)` or `open(O_TRUNC)` a file it can write by DAC
//!   outside the writable places; the read-only root (`EROFS`) and the unprivileged identity
//!   (`EACCES`) are what refuse it there. `nebula-ctl probe` shows the ABI.
//! * Reads are not restricted without a read allow-list, and network access is never
//!   restricted by this layer (the network namespace and seccomp are the layers for it).
//!
//! [`ProcessIsolation::new`]: crate::isolation::process::ProcessIsolation::new

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use crate::sys::landlock::AccessFs;
use crate::sys::landlock::{PathRule, RulesetPlan};

/// The character devices a shell needs, allowed as file rules (read, write, truncate,
/// device ioctls) in every landlocked context; a device missing on the host is skipped.
pub const DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/random",
    "/dev/urandom",
];

/// The rights a read allow-list path gets: read files and directories, execute.
pub const READ: AccessFs = AccessFs::READ_FILE
    .union(AccessFs::READ_DIR)
    .union(AccessFs::EXECUTE);

/// The rights the device rules get (masked to what the ruleset handles).
const DEVICE: AccessFs = AccessFs::READ_FILE
    .union(AccessFs::WRITE_FILE)
    .union(AccessFs::TRUNCATE)
    .union(AccessFs::IOCTL_DEV);

/// The Landlock plan of a process context (see the module docs): writes only beneath the
/// context's tmpfs mounts and writable binds (and to [`DEVICES`]); with a non-empty
/// [`Landlock::read_allow`], reads and execution only beneath those paths too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Landlock {
    /// Absolute paths that stay readable and executable, with everything beneath them
    /// (`--landlock-read`). Empty: reads and execution are not restricted. Each must exist
    /// when the context is configured.
    pub read_allow: Vec<PathBuf>,
}

impl Landlock {
    /// Writes restricted, reads not.
    pub fn new() -> Landlock {
        Landlock::default()
    }

    /// Adds a path to the read allow-list (which turns read restriction on).
    pub fn read(mut self, path: impl Into<PathBuf>) -> Landlock {
        self.read_allow.push(path.into());
        self
    }

    /// The rights handled under ABI `abi`: every filesystem right the ABI knows, without
    /// `read_file`, `read_dir` and `execute` unless there is a read allow-list.
    pub fn handled(&self, abi: u32) -> AccessFs {
        let all = AccessFs::for_abi(abi);
        if self.read_allow.is_empty() {
            all.difference(READ)
        } else {
            all
        }
    }

    /// The ruleset for a context whose writable places are `writable` (`(path, is_dir)`),
    /// under ABI `abi`: checked against the host's tree (read allow-list paths must exist)
    /// and prepared as C strings for the child.
    ///
    /// # Errors
    /// [`LandlockError::RelativePath`], [`LandlockError::ReadPathMissing`],
    /// [`LandlockError::NulByte`].
    pub(crate) fn plan(
        &self,
        writable: &[(PathBuf, bool)],
        abi: u32,
    ) -> Result<RulesetPlan, LandlockError> {
        let handled = self.handled(abi);
        let mut rules = Vec::new();
        let mut push = |path: &Path, access: AccessFs, dir: bool, optional: bool| {
            let access = if dir { access } else { access & AccessFs::FILE } & handled;
            let c =
                CString::new(path.as_os_str().as_bytes()).map_err(|_| LandlockError::NulByte {
                    path: path.to_owned(),
                })?;
            rules.push(PathRule {
                path: c,
                access,
                optional,
            });
            Ok::<(), LandlockError>(())
        };
        for (path, dir) in writable {
            push(path, handled, *dir, false)?;
        }
        for d in DEVICES {
            if Path::new(d).exists() {
                push(Path::new(d), DEVICE, false, true)?;
            }
        }
        for path in &self.read_allow {
            if !path.is_absolute() {
                return Err(LandlockError::RelativePath { path: path.clone() });
            }
            let meta =
                std::fs::metadata(path).map_err(|source| LandlockError::ReadPathMissing {
                    path: path.clone(),
                    source,
                })?;
            push(path, READ, meta.is_dir(), false)?;
        }
        Ok(RulesetPlan {
            handled_fs: handled,
            rules,
        })
    }
}

/// Why a Landlock plan was refused (in the supervisor, before anything is spawned).
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// A read allow-list path is relative.
    #[error(
        "the Landlock read allow-list path {} is not absolute; Hint: pass an absolute path to --landlock-read (profile key landlock-read)",
        .path.display()
    )]
    RelativePath {
        /// The path.
        path: PathBuf,
    },
    /// A read allow-list path does not exist (or cannot be looked up).
    #[error(
        "the Landlock read allow-list path {} cannot be used: {source}; Hint: fix or drop that --landlock-read path (profile key landlock-read)",
        .path.display()
    )]
    ReadPathMissing {
        /// The path.
        path: PathBuf,
        /// The lookup error.
        #[source]
        source: std::io::Error,
    },
    /// A path contains a NUL byte.
    #[error("the Landlock rule path {path:?} contains a NUL byte")]
    NulByte {
        /// The path.
        path: PathBuf,
    },
}

/// The reason Landlock is unavailable, for an errno of the version query: the fix a user can
/// apply (a kernel setting), not a library type.
pub(crate) fn unavailable_reason(errno: Option<i32>) -> String {
    match errno {
        Some(libc::ENOSYS) => "landlock_create_ruleset(2) is ENOSYS: the kernel was built \
            without Landlock (CONFIG_SECURITY_LANDLOCK, Linux 5.13 or later), or a seccomp \
            filter around nebula hides it (a container runtime's profile); Hint: use a kernel \
            with Landlock, or run without --landlock"
            .to_owned(),
        Some(libc::EOPNOTSUPP) => "landlock_create_ruleset(2) is EOPNOTSUPP: the kernel has \
            Landlock but was booted without it in lsm=; Hint: add landlock to the lsm= kernel \
            parameter (e.g. lsm=landlock,lockdown,yama,integrity,apparmor) or to CONFIG_LSM, \
            or run without --landlock"
            .to_owned(),
        Some(e) => format!(
            "landlock_create_ruleset(2) failed: {}; Hint: run without --landlock",
            std::io::Error::from_raw_os_error(e)
        ),
        None => "the Landlock version query failed; Hint: run without --landlock".to_owned(),
    }
}

/// The detail of a failed Landlock step, for the context's start-up error: which call, and
/// for a rule its path (` (open(O_PATH) of /var/tmp/x)`).
pub(crate) fn describe_failure(plan: Option<&RulesetPlan>, detail: i32) -> String {
    use crate::sys::landlock::Failure;
    let path = |i: usize| {
        plan.and_then(|p| p.rules.get(i)).map_or_else(
            || format!("rule #{i}"),
            |r| r.path.to_string_lossy().into_owned(),
        )
    };
    // The report carries Failure::encode's u32 in an i32: the bits are the same.
    #[allow(clippy::cast_sign_loss)]
    let code = detail as u32;
    match Failure::decode(code) {
        Some(Failure::CreateRuleset) => " (landlock_create_ruleset)".to_owned(),
        Some(Failure::Open(i)) => format!(" (open(O_PATH) of {} for its rule)", path(i)),
        Some(Failure::AddRule(i)) => format!(" (landlock_add_rule for {})", path(i)),
        Some(Failure::RestrictSelf) => " (landlock_restrict_self)".to_owned(),
        None => format!(" (#{detail})"),
    }
}

/// The detail of an `execve` that failed with `EACCES`: with a read allow-list that may be
/// Landlock's `execute`/`read_file` denial, so say which flag fixes it.
pub(crate) fn exec_denied(plan: Option<&RulesetPlan>) -> String {
    match plan {
        Some(p) if p.handled_fs.contains(AccessFs::EXECUTE) => " (Landlock may deny it: the \
            program, its interpreter and its libraries must be beneath a --landlock-read path, \
            e.g. --landlock-read /usr)"
            .to_owned(),
        _ => " (the context runs as host ids of its own, which are \"others\" to the host's \
            files: the program, its interpreter and every directory above them must be \
            executable by others; Hint: install it outside a private home such as /root, or \
            pick the host id with --uid)"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(p: &RulesetPlan) -> Vec<String> {
        p.rules
            .iter()
            .map(|r| r.path.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn landlock_writes_only_is_masked_to_the_abi() {
        let l = Landlock::new();
        let p = l.plan(&[("/tmp".into(), true)], 1).unwrap();
        assert_eq!(p.handled_fs, AccessFs::for_abi(1) - READ);
        assert!(!p.handled_fs.contains(AccessFs::REFER));
        assert_eq!(paths(&p)[0], "/tmp");
        assert_eq!(p.rules[0].access, p.handled_fs);
        let p7 = l.plan(&[("/tmp".into(), true)], 7).unwrap();
        assert!(p7.handled_fs.contains(
            AccessFs::REFER | AccessFs::TRUNCATE | AccessFs::IOCTL_DEV | AccessFs::WRITE_FILE
        ));
        assert!(!p7.handled_fs.intersects(READ));
        // Device rules are file rules: no directory rights, no read (unhandled).
        for r in p7
            .rules
            .iter()
            .filter(|r| r.path.to_bytes().starts_with(b"/dev/"))
        {
            assert!(r.optional);
            assert_eq!(
                r.access,
                AccessFs::WRITE_FILE | AccessFs::TRUNCATE | AccessFs::IOCTL_DEV
            );
        }
        assert!(paths(&p7).contains(&"/dev/null".to_owned()));
    }

    #[test]
    fn landlock_read_allow_list_handles_reads() {
        let l = Landlock::new().read("/usr").read("/etc/passwd");
        let p = l
            .plan(&[("/tmp".into(), true), ("/data/file".into(), false)], 3)
            .unwrap();
        assert!(p.handled_fs.contains(READ));
        let by = |s: &str| p.rules.iter().find(|r| r.path.to_bytes() == s.as_bytes());
        assert_eq!(by("/usr").unwrap().access, READ);
        assert_eq!(
            by("/etc/passwd").unwrap().access,
            AccessFs::READ_FILE | AccessFs::EXECUTE
        );
        assert_eq!(
            by("/data/file").unwrap().access,
            AccessFs::for_abi(3) & AccessFs::FILE
        );
        assert_eq!(by("/tmp").unwrap().access, AccessFs::for_abi(3));
    }

    #[test]
    fn landlock_bad_read_paths_are_refused_by_name() {
        let e = Landlock::new()
            .read("/nonexistent/nebula-landlock")
            .plan(&[], 7)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/nebula-landlock") && e.contains("--landlock-read"),
            "{e}"
        );
        let e = Landlock::new().read("usr").plan(&[], 7).unwrap_err();
        assert!(matches!(e, LandlockError::RelativePath { .. }), "{e}");
    }

    #[test]
    fn landlock_failures_name_the_path() {
        use crate::sys::landlock::Failure;
        let p = Landlock::new().plan(&[("/data".into(), true)], 7).unwrap();
        let d = describe_failure(Some(&p), Failure::Open(0).encode() as i32);
        assert_eq!(d, " (open(O_PATH) of /data for its rule)");
        let d = describe_failure(None, Failure::RestrictSelf.encode() as i32);
        assert_eq!(d, " (landlock_restrict_self)");
    }

    #[test]
    fn landlock_reasons_name_the_fix() {
        assert!(unavailable_reason(Some(libc::EOPNOTSUPP)).contains("lsm="));
        assert!(unavailable_reason(Some(libc::ENOSYS)).contains("CONFIG_SECURITY_LANDLOCK"));
    }
}
