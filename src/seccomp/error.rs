//! What goes wrong while compiling or installing a filter.

use super::bpf;
use super::table::Profile;

/// What went wrong while compiling or installing a filter.
///
/// The install variants ([`SeccompError::SetNoNewPrivs`], [`SeccompError::InstallFilter`],
/// [`SeccompError::SyncThreads`], [`SeccompError::InstallListener`],
/// [`SeccompError::SendListener`]) hold only integers. The child packs its failure into a
/// `u64` with the syscall layer's `Failure::encode` (allocation-free); the supervisor unpacks
/// it with [`SeccompError::decode`]. [`SeccompError::encode`] is the same packing (a test
/// checks the two agree).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// No such profile.
    #[error("unknown seccomp profile {name:?}; Hint: one of default, strict, deny-network, none")]
    UnknownProfile {
        /// What was asked for.
        name: String,
    },
    /// The kernel cannot install filters, or lacks a return action the profile uses.
    #[error("seccomp filters are not available here: {reason}; nebula-ctl probe shows why")]
    Unsupported {
        /// The probe's reason.
        reason: String,
    },
    /// seccompiler refused a condition, rule or stage.
    #[error("profile {profile}: seccompiler refused {what}")]
    BuildStage {
        /// The profile.
        profile: Profile,
        /// Which system call or stage.
        what: String,
        /// seccompiler's reason.
        #[source]
        source: seccompiler::BackendError,
    },
    /// seccompiler's output did not start with the architecture check this module strips.
    #[error(
        "profile {profile}: seccompiler's program does not start with its 3-instruction architecture check; Hint: the seccompiler version changed its code generation"
    )]
    UnexpectedPrologue {
        /// The profile.
        profile: Profile,
    },
    /// The program is longer than the kernel accepts.
    #[error("profile {profile}: {len} BPF instructions, the kernel accepts at most 4096")]
    ProgramTooLong {
        /// The profile.
        profile: Profile,
        /// The length.
        len: usize,
    },
    /// The assembled program fails the checks the kernel applies (jump targets, loads).
    #[error("profile {profile}: the assembled program is invalid")]
    VerifyProgram {
        /// The profile.
        profile: Profile,
        /// What the checker found.
        #[source]
        source: bpf::BpfError,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed in the child.
    #[error("prctl(PR_SET_NO_NEW_PRIVS) failed with errno {errno}")]
    SetNoNewPrivs {
        /// The errno.
        errno: i32,
    },
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed.
    #[error(
        "seccomp(SECCOMP_SET_MODE_FILTER{}) failed with errno {errno}{}",
        if *tsync { ", TSYNC" } else { "" },
        if *errno == libc::ENOMEM { "; Hint: too many filters are stacked already (the kernel caps their total length)" } else { "" }
    )]
    InstallFilter {
        /// The errno.
        errno: i32,
        /// Whether TSYNC was asked for.
        tsync: bool,
    },
    /// TSYNC could not synchronise thread `tid` (it runs a filter that is not an ancestor of
    /// the caller's).
    #[error(
        "seccomp TSYNC: thread {tid} has a different filter; Hint: install before creating threads, or from the thread whose filter the others inherited"
    )]
    SyncThreads {
        /// The thread that could not be synchronised.
        tid: i32,
    },
    /// `seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER)` failed.
    #[error(
        "seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER) failed with errno {errno}{}",
        match *errno {
            libc::EBUSY => "; Hint: a filter with a listener is in this thread's chain already (one per chain); process contexts install the plain filter then",
            libc::EINVAL => "; Hint: the kernel lacks seccomp user notification (Linux 5.0); nebula-ctl probe lists the actions it has",
            _ => "",
        }
    )]
    InstallListener {
        /// The errno.
        errno: i32,
    },
    /// Sending the listener to the supervisor (`sendmsg` with `SCM_RIGHTS`) failed.
    #[error(
        "sending the seccomp listener to the supervisor failed with errno {errno}{}",
        if *errno == libc::EPIPE { "; Hint: the supervisor ended before the context started" } else { "" }
    )]
    SendListener {
        /// The errno.
        errno: i32,
    },
}

impl SeccompError {
    /// Packs an install error (built in the child) into a `u64` for a pipe; `None` for the
    /// parent-side variants.
    pub fn encode(&self) -> Option<u64> {
        let (tag, v): (u64, i32) = match *self {
            SeccompError::SetNoNewPrivs { errno } => (1, errno),
            SeccompError::InstallFilter {
                errno,
                tsync: false,
            } => (2, errno),
            SeccompError::InstallFilter { errno, tsync: true } => (3, errno),
            SeccompError::SyncThreads { tid } => (4, tid),
            SeccompError::InstallListener { errno } => (5, errno),
            SeccompError::SendListener { errno } => (6, errno),
            _ => return None,
        };
        // The errno's or tid's bits as they are: decode casts them back.
        #[allow(clippy::cast_sign_loss)]
        let v = v as u32;
        Some(tag << 32 | u64::from(v))
    }

    /// Unpacks what [`SeccompError::encode`] packed.
    pub fn decode(code: u64) -> Option<SeccompError> {
        // The low half of the code, bits as they are.
        #[allow(clippy::cast_possible_truncation)]
        let v = code as u32 as i32;
        Some(match code >> 32 {
            1 => SeccompError::SetNoNewPrivs { errno: v },
            2 => SeccompError::InstallFilter {
                errno: v,
                tsync: false,
            },
            3 => SeccompError::InstallFilter {
                errno: v,
                tsync: true,
            },
            4 => SeccompError::SyncThreads { tid: v },
            5 => SeccompError::InstallListener { errno: v },
            6 => SeccompError::SendListener { errno: v },
            _ => return None,
        })
    }
}

impl From<crate::sys::seccomp::Failure> for SeccompError {
    fn from(f: crate::sys::seccomp::Failure) -> Self {
        use crate::sys::seccomp::Failure;
        match f {
            Failure::SetNoNewPrivs(errno) => SeccompError::SetNoNewPrivs { errno },
            Failure::InstallFilter { errno, tsync } => SeccompError::InstallFilter { errno, tsync },
            Failure::SyncThreads(tid) => SeccompError::SyncThreads { tid },
            Failure::InstallListener(errno) => SeccompError::InstallListener { errno },
            Failure::SendListener(errno) => SeccompError::SendListener { errno },
        }
    }
}
