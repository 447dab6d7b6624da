//! An OCI `linux.seccomp` profile compiled through nebula's seccomp layer: the JSON becomes
//! a [`ProfileTable`] (one [`SyscallRule`] per system call, argument conditions as
//! [`Case`]s), which [`crate::seccomp::CompiledFilter`] assembles and checks like nebula's
//! own profiles.
//!
//! Semantics, as libseccomp (and so runc and crun) apply a profile: a rule without
//! arguments sets the call's action; rules with arguments add cases (their conditions
//! ANDed, the rules ORed); a call no rule names gets `defaultAction`. A name x86-64 does not
//! have (`chown32`, `_llseek`) is skipped, as libseccomp skips it. nebula's filter is for
//! the x86-64 ABI: a call through another one (i386, x32) kills the process
//! (`KILL_PROCESS`) whatever `architectures` lists, which is stricter than a profile that
//! lists them.

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use super::error::OciError;
use crate::seccomp::{Action, ArgCmp, Case, CmpOp, Profile, ProfileTable, SyscallRule};

fn unsupported(field: &str, why: &str) -> OciError {
    OciError::Unsupported {
        field: field.to_owned(),
        reason: why.to_owned(),
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>, field: &str) -> Result<Action, OciError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => Action::Allow,
        LinuxSeccompAction::ScmpActErrno => Action::Errno(
            u16::try_from(errno.unwrap_or(1))
                .map_err(|_| unsupported(field, "errnoRet must fit 16 bits"))?,
        ),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            Action::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
        LinuxSeccompAction::ScmpActTrap => Action::Trap,
        LinuxSeccompAction::ScmpActLog => Action::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(unsupported(
                field,
                "SCMP_ACT_NOTIFY needs a listener (listenerPath), which nebula does not pass on",
            ));
        }
        LinuxSeccompAction::ScmpActTrace => {
            return Err(unsupported(
                field,
                "SCMP_ACT_TRACE needs a tracer; not supported",
            ));
        }
    })
}

/// Compiles `s` into a table (see the module docs).
///
/// # Errors
/// [`OciError::Unsupported`] naming the field: a notify or trace action, a listener, filter
/// flags, an argument index above 5.
pub fn table(s: &LinuxSeccomp) -> Result<ProfileTable, OciError> {
    if s.listener_path().is_some() || s.listener_metadata().is_some() {
        return Err(unsupported(
            "linux.seccomp.listenerPath",
            "nebula does not hand seccomp listeners to other programs",
        ));
    }
    if s.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(unsupported(
            "linux.seccomp.flags",
            "filter flags (SECCOMP_FILTER_FLAG_*) are not supported",
        ));
    }
    let default = action(
        s.default_action(),
        s.default_errno_ret(),
        "linux.seccomp.defaultAction",
    )?;
    let mut t = ProfileTable {
        profile: Profile::None,
        rules: Default::default(),
        default,
        bad_arch: Action::KillProcess,
        x32: Action::KillProcess,
        max_known: crate::seccomp::syscalls::MAX_KNOWN,
        above_known: default,
    };
    for sc in s.syscalls().as_deref().unwrap_or_default() {
        let act = action(
            sc.action(),
            sc.errno_ret(),
            "linux.seccomp.syscalls[].action",
        )?;
        let mut conds = Vec::new();
        for a in sc.args().as_deref().unwrap_or_default() {
            let arg = u8::try_from(a.index())
                .ok()
                .filter(|i| *i < 6)
                .ok_or_else(|| {
                    unsupported("linux.seccomp.syscalls[].args[].index", "must be 0 to 5")
                })?;
            let (op, value) = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => (CmpOp::Ne, a.value()),
                LinuxSeccompOperator::ScmpCmpLt => (CmpOp::Lt, a.value()),
                LinuxSeccompOperator::ScmpCmpLe => (CmpOp::Le, a.value()),
                LinuxSeccompOperator::ScmpCmpEq => (CmpOp::Eq, a.value()),
                LinuxSeccompOperator::ScmpCmpGe => (CmpOp::Ge, a.value()),
                LinuxSeccompOperator::ScmpCmpGt => (CmpOp::Gt, a.value()),
                // libseccomp: arg & value == valueTwo.
                LinuxSeccompOperator::ScmpCmpMaskedEq => {
                    (CmpOp::MaskedEq(a.value()), a.value_two().unwrap_or(0))
                }
            };
            conds.push(ArgCmp::qword(arg, op, value));
        }
        for name in sc.names() {
            let Some(nr) = crate::seccomp::syscalls::number(name) else {
                continue;
            };
            let static_name = crate::seccomp::syscalls::name(nr).unwrap_or("?");
            let rule = t.rules.entry(nr).or_insert_with(|| SyscallRule {
                nr,
                name: static_name,
                cases: Vec::new(),
                otherwise: default,
                why: "the bundle's linux.seccomp",
            });
            if conds.is_empty() {
                rule.otherwise = act;
            } else {
                rule.cases.push(Case {
                    any_of: vec![conds.clone()],
                    action: act,
                });
            }
        }
    }
    Ok(t)
}
