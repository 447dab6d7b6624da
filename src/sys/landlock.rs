//! Landlock: the three system calls (`landlock_create_ruleset`, `landlock_add_rule`,
//! `landlock_restrict_self`), the uapi structures and access rights, and the child-side
//! [`RulesetPlan::apply_current_thread`] that builds and enforces a ruleset with raw system
//! calls on prepared data (no allocation), for the process module's privilege step.
//!
//! rustix has no Landlock wrappers and libc only the syscall numbers (`SYS_landlock_*`); the
//! structures and constants below are transcribed from `include/uapi/linux/landlock.h`
//! (Linux 6.18). The policy (what is handled, which paths get which rights) is built in
//! [`crate::landlock`].
//!
//! # References
//! landlock(7), landlock_create_ruleset(2), landlock_add_rule(2), landlock_restrict_self(2),
//! Documentation/userspace-api/landlock.rst.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `LANDLOCK_CREATE_RULESET_VERSION` (`landlock.h`): with a NULL attribute and size 0,
/// `landlock_create_ruleset` returns the highest ABI version the kernel supports.
pub const CREATE_RULESET_VERSION: u32 = 1 << 0;

/// `LANDLOCK_RULE_PATH_BENEATH` (`enum landlock_rule_type`, `landlock.h`).
pub const RULE_PATH_BENEATH: u32 = 1;

bitflags::bitflags! {
    /// Filesystem access rights, `LANDLOCK_ACCESS_FS_*` (`landlock.h`). A right is
    /// *handled* by a ruleset (denied unless a rule allows it beneath a path) or not handled
    /// (allowed everywhere, as without Landlock).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct AccessFs: u64 {
        /// `LANDLOCK_ACCESS_FS_EXECUTE`: execute a file (ABI 1).
        const EXECUTE = 1 << 0;
        /// `LANDLOCK_ACCESS_FS_WRITE_FILE`: open a file for writing (ABI 1).
        const WRITE_FILE = 1 << 1;
        /// `LANDLOCK_ACCESS_FS_READ_FILE`: open a file for reading (ABI 1).
        const READ_FILE = 1 << 2;
        /// `LANDLOCK_ACCESS_FS_READ_DIR`: open a directory or list its content (ABI 1).
        const READ_DIR = 1 << 3;
        /// `LANDLOCK_ACCESS_FS_REMOVE_DIR`: remove or rename an empty directory (ABI 1).
        const REMOVE_DIR = 1 << 4;
        /// `LANDLOCK_ACCESS_FS_REMOVE_FILE`: unlink or rename a file (ABI 1).
        const REMOVE_FILE = 1 << 5;
        /// `LANDLOCK_ACCESS_FS_MAKE_CHAR`: create a character device (ABI 1).
        const MAKE_CHAR = 1 << 6;
        /// `LANDLOCK_ACCESS_FS_MAKE_DIR`: create a directory (ABI 1).
        const MAKE_DIR = 1 << 7;
        /// `LANDLOCK_ACCESS_FS_MAKE_REG`: create a regular file (ABI 1).
        const MAKE_REG = 1 << 8;
        /// `LANDLOCK_ACCESS_FS_MAKE_SOCK`: create a UNIX socket (ABI 1).
        const MAKE_SOCK = 1 << 9;
        /// `LANDLOCK_ACCESS_FS_MAKE_FIFO`: create a named pipe (ABI 1).
        const MAKE_FIFO = 1 << 10;
        /// `LANDLOCK_ACCESS_FS_MAKE_BLOCK`: create a block device (ABI 1).
        const MAKE_BLOCK = 1 << 11;
        /// `LANDLOCK_ACCESS_FS_MAKE_SYM`: create a symbolic link (ABI 1).
        const MAKE_SYM = 1 << 12;
        /// `LANDLOCK_ACCESS_FS_REFER`: link or rename a file into another directory
        /// (ABI 2; before it, such a reparenting is always denied to a landlocked task).
        const REFER = 1 << 13;
        /// `LANDLOCK_ACCESS_FS_TRUNCATE`: `truncate(2)`, `ftruncate(2)`, `open(O_TRUNC)`
        /// (ABI 3).
        const TRUNCATE = 1 << 14;
        /// `LANDLOCK_ACCESS_FS_IOCTL_DEV`: `ioctl(2)` on character and block devices opened
        /// after the restriction (ABI 5).
        const IOCTL_DEV = 1 << 15;
    }
}

impl AccessFs {
    /// The rights that apply to a file (not a directory): a path-beneath rule on a file
    /// may only allow these (`EINVAL` otherwise).
    pub const FILE: AccessFs = AccessFs::EXECUTE
        .union(AccessFs::WRITE_FILE)
        .union(AccessFs::READ_FILE)
        .union(AccessFs::TRUNCATE)
        .union(AccessFs::IOCTL_DEV);

    /// Every right that ABI version `abi` knows: ABI 1 has `EXECUTE` to `MAKE_SYM`, 2 adds
    /// `REFER`, 3 `TRUNCATE`, 5 `IOCTL_DEV` (4 added network rules, 6 scoping, 7 audit
    /// logging; none of them filesystem rights). Empty for 0 (no Landlock).
    pub fn for_abi(abi: u32) -> AccessFs {
        let mut a = AccessFs::empty();
        if abi >= 1 {
            a = AccessFs::from_bits_retain((1 << 13) - 1);
        }
        if abi >= 2 {
            a |= AccessFs::REFER;
        }
        if abi >= 3 {
            a |= AccessFs::TRUNCATE;
        }
        if abi >= 5 {
            a |= AccessFs::IOCTL_DEV;
        }
        a
    }

    /// The uapi names of the rights set, lower-case without the prefix (`read_file`).
    pub fn names(self) -> Vec<&'static str> {
        self.iter_names()
            .map(|(n, _)| match n {
                "EXECUTE" => "execute",
                "WRITE_FILE" => "write_file",
                "READ_FILE" => "read_file",
                "READ_DIR" => "read_dir",
                "REMOVE_DIR" => "remove_dir",
                "REMOVE_FILE" => "remove_file",
                "MAKE_CHAR" => "make_char",
                "MAKE_DIR" => "make_dir",
                "MAKE_REG" => "make_reg",
                "MAKE_SOCK" => "make_sock",
                "MAKE_FIFO" => "make_fifo",
                "MAKE_BLOCK" => "make_block",
                "MAKE_SYM" => "make_sym",
                "REFER" => "refer",
                "TRUNCATE" => "truncate",
                _ => "ioctl_dev",
            })
            .collect()
    }
}

/// `struct landlock_ruleset_attr` (`landlock.h`): what a ruleset handles. The kernel reads
/// `min(size, its own size)` bytes and requires the bytes it does not know to be zero, so
/// the full structure may be passed to an older kernel as long as the newer fields are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RulesetAttr {
    /// `handled_access_fs`: [`AccessFs`] bits.
    pub handled_access_fs: u64,
    /// `handled_access_net` (ABI 4): `LANDLOCK_ACCESS_NET_*` bits; nebula leaves it 0.
    pub handled_access_net: u64,
    /// `scoped` (ABI 6): `LANDLOCK_SCOPE_*` bits; nebula leaves it 0.
    pub scoped: u64,
}

/// `struct landlock_path_beneath_attr` (`landlock.h`), which the uapi declares
/// `__attribute__((packed))`: 12 bytes, the fd unaligned.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug)]
pub struct PathBeneathAttr {
    /// `allowed_access`: [`AccessFs`] bits allowed beneath the path.
    pub allowed_access: u64,
    /// `parent_fd`: an fd of the file or directory (an `O_PATH` fd is enough).
    pub parent_fd: i32,
}

const _: () = assert!(std::mem::size_of::<PathBeneathAttr>() == 12);
const _: () = assert!(std::mem::size_of::<RulesetAttr>() == 24);

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the highest Landlock
/// ABI version this kernel supports (1 on Linux 5.13, 7 on 6.15 and later).
///
/// # Errors
/// `ENOSYS`: the kernel was built without `CONFIG_SECURITY_LANDLOCK` (or a seccomp filter of
/// the caller hides the call); `EOPNOTSUPP`: built in but not enabled at boot (not in
/// `lsm=`/`CONFIG_LSM`).
///
/// # References
/// landlock_create_ruleset(2).
pub fn abi_version() -> io::Result<u32> {
    // SAFETY: a NULL attribute with size 0 and the VERSION flag is the documented query; the
    // kernel reads and writes no memory of ours.
    let r = check(unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    })?;
    u32::try_from(r).map_err(super::overflow)
}

/// `landlock_create_ruleset(attr, sizeof attr, 0)`: a new ruleset fd (close-on-exec).
/// Allocation-free.
///
/// # Errors
/// `EINVAL` (unknown rights or an empty handled set), `E2BIG`, `EOPNOTSUPP`, `ENOSYS`.
///
/// # References
/// landlock_create_ruleset(2).
pub fn create_ruleset(attr: &RulesetAttr) -> io::Result<OwnedFd> {
    // SAFETY: attr is a live RulesetAttr of the size passed; the kernel only reads it.
    let r = check(unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    })?;
    let fd = i32::try_from(r).map_err(super::overflow)?;
    // SAFETY: the kernel returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `landlock_add_rule(ruleset, LANDLOCK_RULE_PATH_BENEATH, {allowed, parent}, 0)`: allows
/// `allowed` on `parent` and everything beneath it. Allocation-free.
///
/// # Errors
/// `EINVAL` (rights not handled by the ruleset, or directory rights on a file), `ENOMSG`
/// (empty `allowed`), `EBADFD`/`EBADF`, `EPERM` (the ruleset fd lacks write access).
///
/// # References
/// landlock_add_rule(2).
pub fn add_path_beneath(
    ruleset: BorrowedFd<'_>,
    parent: BorrowedFd<'_>,
    allowed: AccessFs,
) -> io::Result<()> {
    let attr = PathBeneathAttr {
        allowed_access: allowed.bits(),
        parent_fd: parent.as_raw_fd(),
    };
    // SAFETY: attr is a live, packed landlock_path_beneath_attr as the rule type requires;
    // the kernel only reads it; both fds are open for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    })?;
    Ok(())
}

/// `landlock_restrict_self(ruleset, 0)`: enforces the ruleset on the calling thread (and
/// what it later creates or execs) for good. Needs `no_new_privs` or `CAP_SYS_ADMIN` in the
/// thread's user namespace. Allocation-free.
///
/// # Errors
/// `EPERM` (neither `no_new_privs` nor `CAP_SYS_ADMIN`), `E2BIG` (more than 16 stacked
/// rulesets), `EBADFD`/`EBADF`.
///
/// # References
/// landlock_restrict_self(2).
pub fn restrict_self(ruleset: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: integer arguments; the fd is open for the call.
    check(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) })?;
    Ok(())
}

/// One rule of a [`RulesetPlan`]: `access` beneath `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRule {
    /// The path, as the restricted thread sees it (inside the context's mounts).
    pub path: CString,
    /// What is allowed beneath it (a subset of the plan's handled rights; only
    /// [`AccessFs::FILE`] rights when the path is not a directory).
    pub access: AccessFs,
    /// A path that may be missing: `ENOENT` when opening it skips the rule instead of
    /// failing (the optional device nodes).
    pub optional: bool,
}

/// Which part of [`RulesetPlan::apply_current_thread`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `landlock_create_ruleset`.
    CreateRuleset,
    /// `open(O_PATH)` of rule number `n` (an index into [`RulesetPlan::rules`]).
    Open(usize),
    /// `landlock_add_rule` of rule number `n`.
    AddRule(usize),
    /// `landlock_restrict_self`.
    RestrictSelf,
}

impl Failure {
    /// As a 32-bit detail for the child's report: the phase in the top byte, the rule index
    /// below.
    pub fn encode(self) -> u32 {
        let (phase, i) = match self {
            Failure::CreateRuleset => (1, 0),
            Failure::Open(i) => (2, i),
            Failure::AddRule(i) => (3, i),
            Failure::RestrictSelf => (4, 0),
        };
        // The rule index keeps its low 24 bits (no plan has 2^24 rules): it only names the
        // rule in a message.
        #[allow(clippy::cast_possible_truncation)]
        let i = i as u32 & 0x00ff_ffff;
        (phase << 24) | i
    }

    /// The inverse of [`Failure::encode`]; `None` for a value it never produces.
    pub fn decode(v: u32) -> Option<Failure> {
        let i = (v & 0x00ff_ffff) as usize;
        match v >> 24 {
            1 => Some(Failure::CreateRuleset),
            2 => Some(Failure::Open(i)),
            3 => Some(Failure::AddRule(i)),
            4 => Some(Failure::RestrictSelf),
            _ => None,
        }
    }
}

/// A Landlock ruleset to build and enforce in the child: the handled rights and the rules,
/// every path a prepared C string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesetPlan {
    /// The handled filesystem rights (already masked to the kernel's ABI).
    pub handled_fs: AccessFs,
    /// The rules, in order.
    pub rules: Vec<PathRule>,
}

impl RulesetPlan {
    /// Builds the ruleset (one `open(O_PATH | O_CLOEXEC)`, `landlock_add_rule` and `close`
    /// per rule) and enforces it on the calling thread with `landlock_restrict_self`. Call it
    /// after `no_new_privs` is set (or with `CAP_SYS_ADMIN`) and before the seccomp filter.
    ///
    /// Child-safe: no allocation, no lock, raw system calls on the plan's data only; every
    /// fd it opens is closed before it returns.
    ///
    /// # Errors
    /// The part that failed and its errno. Nothing is enforced unless it returns `Ok`.
    pub fn apply_current_thread(&self) -> Result<(), (Failure, i32)> {
        let errno = |e: &io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        let attr = RulesetAttr {
            handled_access_fs: self.handled_fs.bits(),
            ..RulesetAttr::default()
        };
        let ruleset = create_ruleset(&attr).map_err(|e| (Failure::CreateRuleset, errno(&e)))?;
        for (i, rule) in self.rules.iter().enumerate() {
            let fd = match rustix::fs::open(
                rule.path.as_c_str(),
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if rule.optional => continue,
                Err(e) => return Err((Failure::Open(i), e.raw_os_error())),
            };
            add_path_beneath(ruleset.as_fd(), fd.as_fd(), rule.access)
                .map_err(|e| (Failure::AddRule(i), errno(&e)))?;
        }
        restrict_self(ruleset.as_fd()).map_err(|e| (Failure::RestrictSelf, errno(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_per_abi() {
        assert!(AccessFs::for_abi(0).is_empty());
        assert_eq!(AccessFs::for_abi(1).bits(), 0x1fff);
        assert!(!AccessFs::for_abi(1).contains(AccessFs::REFER));
        assert!(AccessFs::for_abi(2).contains(AccessFs::REFER));
        assert!(!AccessFs::for_abi(2).contains(AccessFs::TRUNCATE));
        assert_eq!(AccessFs::for_abi(4), AccessFs::for_abi(3));
        assert_eq!(AccessFs::for_abi(5), AccessFs::all());
        assert_eq!(AccessFs::for_abi(7), AccessFs::all());
        assert_eq!(AccessFs::for_abi(1).names().len(), 13);
        assert_eq!(AccessFs::IOCTL_DEV.names(), ["ioctl_dev"]);
    }

    #[test]
    fn failures_round_trip() {
        for f in [
            Failure::CreateRuleset,
            Failure::Open(0),
            Failure::Open(41),
            Failure::AddRule(7),
            Failure::RestrictSelf,
        ] {
            assert_eq!(Failure::decode(f.encode()), Some(f));
        }
        assert_eq!(Failure::decode(0), None);
    }
}
