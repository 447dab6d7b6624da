//! From a [`ProfileTable`] to one BPF program, and installing it.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::OwnedFd;

use seccompiler::{SeccompAction, SeccompFilter, SeccompRule, TargetArch};

use super::bpf::{self, SeccompData};
use super::error::SeccompError;
use super::table::{
    AUDIT_ARCH_X86_64, Action, NOTIFY_SENTINEL_DATA, Profile, ProfileTable, X32_SYSCALL_BIT,
};
use crate::sys;

/// The return value seccompiler is told to use for "no match"; every `ret` of it is
/// rewritten into a jump to the next stage. `SECCOMP_RET_TRACE` is never a profile action.
const NEXT_STAGE: u32 = libc::SECCOMP_RET_TRACE | 0xbeef;
const NOTIFY_SENTINEL: u32 = libc::SECCOMP_RET_TRACE | NOTIFY_SENTINEL_DATA as u32;

const LD_W_ABS: u16 = 0x20;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A profile compiled into a seccomp BPF program, ready to install.
///
/// Build it in the parent ([`CompiledFilter::compile`] allocates, reads the probe, and
/// checks the program); install it in the child with
/// [`install_current_thread`](CompiledFilter::install_current_thread) or
/// [`install_all_threads`](CompiledFilter::install_all_threads), which touch nothing but the
/// instructions built here. A `CompiledFilter` for [`Profile::None`] holds no program and
/// installs nothing.
///
/// A filter whose table has [`Action::UserNotif`] verdicts ([`CompiledFilter::notifies`],
/// e.g. from [`Profile::compile_notifying`]) is meant to be installed with
/// [`install_current_thread_with_listener`](CompiledFilter::install_current_thread_with_listener),
/// which hands back the listener its supervisor answers.
#[derive(Clone)]
pub struct CompiledFilter {
    table: ProfileTable,
    program: Box<[libc::sock_filter]>,
    /// [`CompiledFilter::notifies`], found at compile time: a raw-cloned child asks, and
    /// may not allocate (another thread of the supervisor may hold malloc's lock).
    notifies: bool,
}

impl fmt::Debug for CompiledFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledFilter")
            .field("profile", &self.table.profile)
            .field("instructions", &self.program.len())
            .finish()
    }
}

impl CompiledFilter {
    /// Compiles `table` into one program: the prologue (architecture check, x32 guard,
    /// `ENOSYS` above the table's highest number), then one seccompiler stage per
    /// (case layer, action), then the default action. Refuses with
    /// [`SeccompError::Unsupported`] when `features().seccomp` says filters cannot be
    /// installed here, or the kernel lacks one of the table's actions.
    ///
    /// Call it in the parent: it allocates and may run the probe (which forks).
    ///
    /// # Errors
    /// [`SeccompError::Unsupported`], or a code-generation error (`BuildStage`,
    /// `UnexpectedPrologue`, `ProgramTooLong`, `VerifyProgram`), which would be a bug.
    pub fn compile(table: &ProfileTable) -> Result<CompiledFilter, SeccompError> {
        if table.profile == Profile::None
            && table.rules.is_empty()
            && table.default == Action::Allow
        {
            return Ok(CompiledFilter {
                table: table.clone(),
                program: Box::new([]),
                notifies: false,
            });
        }
        let probe = &crate::features().seccomp;
        if !probe.available {
            return Err(SeccompError::Unsupported {
                reason: probe.reason.clone().unwrap_or_default(),
            });
        }
        for a in table.actions() {
            if !probe.actions.contains(&a.kernel_name()) {
                return Err(SeccompError::Unsupported {
                    reason: format!(
                        "the kernel does not know the return action {} (SECCOMP_GET_ACTION_AVAIL)",
                        a.kernel_name()
                    ),
                });
            }
        }
        let program = assemble(table)?;
        Ok(CompiledFilter {
            table: table.clone(),
            notifies: !program.is_empty() && table.actions().contains(&Action::UserNotif),
            program: program.into_boxed_slice(),
        })
    }

    /// The profile this filter enforces.
    pub fn profile(&self) -> Profile {
        self.table.profile
    }

    /// The table the program was compiled from.
    pub fn table(&self) -> &ProfileTable {
        &self.table
    }

    /// The BPF instructions (empty for [`Profile::None`]).
    pub fn program(&self) -> &[libc::sock_filter] {
        &self.program
    }

    /// Whether the program can return `SECCOMP_RET_USER_NOTIF`: it needs a listener
    /// ([`install_current_thread_with_listener`](CompiledFilter::install_current_thread_with_listener)),
    /// or its notified calls fail with `ENOSYS` instead of ending the process.
    /// Allocation-free (a raw-cloned child calls it).
    pub fn notifies(&self) -> bool {
        self.notifies
    }

    /// Runs the program in the [`bpf`] interpreter on `data`, decoding the result like the
    /// kernel. [`Profile::None`] allows everything.
    ///
    /// # Errors
    /// The interpreter's checks (a compiled program passes them).
    pub fn simulate(&self, data: &SeccompData) -> Result<Option<Action>, bpf::BpfError> {
        if self.program.is_empty() {
            return Ok(Some(Action::Allow));
        }
        bpf::run(&self.program, data).map(Action::from_ret)
    }

    /// Installs the filter on the **calling thread only** (no TSYNC), after setting
    /// `no_new_privs` on it. Threads that already exist stay unfiltered; threads the caller
    /// creates afterwards inherit the filter. In a child between `clone` and `execve` (one
    /// thread) this is the whole process.
    ///
    /// Child-safe: no allocation, no lock, only `prctl` and `seccomp` on the instructions
    /// built by [`compile`](CompiledFilter::compile); async-signal-safe.
    ///
    /// # Errors
    /// [`SeccompError::SetNoNewPrivs`] or [`SeccompError::InstallFilter`] (integers only).
    pub fn install_current_thread(&self) -> Result<(), SeccompError> {
        self.install(false)
    }

    /// Installs the filter on **every thread of the process** (`SECCOMP_FILTER_FLAG_TSYNC`),
    /// after setting `no_new_privs` on the caller (TSYNC gives it to the others).
    ///
    /// Child-safe in the same way as
    /// [`install_current_thread`](CompiledFilter::install_current_thread).
    ///
    /// # Errors
    /// [`SeccompError::SyncThreads`] when another thread runs a filter the caller's does not
    /// descend from; otherwise as `install_current_thread`.
    pub fn install_all_threads(&self) -> Result<(), SeccompError> {
        self.install(true)
    }

    /// Installs the filter on the **calling thread only** with
    /// `SECCOMP_FILTER_FLAG_NEW_LISTENER` (after setting `no_new_privs`) and returns the
    /// listener: the descriptor on which the kernel reports every call the filter answers with
    /// [`Action::UserNotif`] (close-on-exec). The caller must hand it to its supervisor and
    /// close its own copy before running anything it does not trust: whoever holds the
    /// listener decides whether a notified call runs.
    ///
    /// Child-safe like [`install_current_thread`](CompiledFilter::install_current_thread):
    /// no allocation, only `prctl` and `seccomp`.
    ///
    /// # Errors
    /// [`SeccompError::SetNoNewPrivs`] or [`SeccompError::InstallListener`] (integers only);
    /// [`SeccompError::InstallListener`] with `EINVAL` for [`Profile::None`] (no program).
    pub fn install_current_thread_with_listener(&self) -> Result<OwnedFd, SeccompError> {
        self.as_sys()
            .install_with_listener()
            .map_err(SeccompError::from)
    }

    fn install(&self, tsync: bool) -> Result<(), SeccompError> {
        self.as_sys().install(tsync).map_err(SeccompError::from)
    }

    /// The filter as the plain data a raw-cloned child installs.
    pub(crate) fn as_sys(&self) -> sys::seccomp::Program<'_> {
        sys::seccomp::Program {
            insns: &self.program,
            notifies: self.notifies,
        }
    }
}

/// One seccompiler stage: the system calls whose case of this layer has this action.
type Stage = (Action, BTreeMap<i64, Vec<SeccompRule>>);

fn stages(table: &ProfileTable) -> Result<Vec<Stage>, SeccompError> {
    let p = table.profile;
    let build_err = |what: String| {
        move |source| SeccompError::BuildStage {
            profile: p,
            what,
            source,
        }
    };
    // layers[k][(refuses, unconditional, action)] = rules of every system call whose k-th
    // case has that action. Within a layer each system call appears once, so the stages of a
    // layer can come in any order: every Allow stage first, conditional before unconditional
    // (short, and the only ones the kernel's constant-action cache cannot answer), then the
    // refusals. So a conditional refusal (seccomp's NEW_LISTENER check) adds nothing to the
    // path of any allowed call: it sits behind every allow stage of its layer.
    type Layer = BTreeMap<(bool, bool, Action), BTreeMap<i64, Vec<SeccompRule>>>;
    let mut layers: Vec<Layer> = Vec::new();
    let mut put = |layer: usize, action: Action, nr: u32, rules: Vec<SeccompRule>| {
        if layers.len() <= layer {
            layers.resize_with(layer + 1, BTreeMap::new);
        }
        let key = (action != Action::Allow, rules.is_empty(), action);
        layers[layer]
            .entry(key)
            .or_default()
            .insert(i64::from(nr), rules);
    };
    for r in table.rules.values() {
        for (k, case) in r.cases.iter().enumerate() {
            let mut rules = Vec::new();
            for group in &case.any_of {
                let conds = group
                    .iter()
                    .map(|c| c.to_seccompiler())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(build_err(format!("a condition of {}", r.name)))?;
                rules.push(
                    SeccompRule::new(conds).map_err(build_err(format!("a rule of {}", r.name)))?,
                );
            }
            put(k, case.action, r.nr, rules);
        }
        // The unconditional verdict comes after the cases; a call without cases has no
        // competing rule, so it can sit in the first layer.
        if r.otherwise != table.default {
            put(r.cases.len(), r.otherwise, r.nr, vec![]);
        }
    }
    Ok(layers
        .into_iter()
        .flat_map(|layer| layer.into_iter().map(|((_, _, a), rules)| (a, rules)))
        .collect())
}

/// The prologue this module writes itself; `default` is appended at the very end.
fn prologue(table: &ProfileTable) -> Vec<libc::sock_filter> {
    vec![
        ins(LD_W_ABS, 0, 0, 4),
        ins(JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        ins(RET_K, 0, 0, table.bad_arch.ret()),
        ins(LD_W_ABS, 0, 0, 0),
        ins(JMP_JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(RET_K, 0, 0, table.x32.ret()),
        ins(JMP_JGT_K, 0, 1, table.max_known),
        ins(RET_K, 0, 0, table.above_known.ret()),
    ]
}

fn assemble(table: &ProfileTable) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let p = table.profile;
    let mut program = prologue(table);
    for (action, rules) in stages(table)? {
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Trace(NEXT_STAGE & libc::SECCOMP_RET_DATA),
            action.to_seccompiler(),
            TargetArch::x86_64,
        )
        .map_err(|source| SeccompError::BuildStage {
            profile: p,
            what: format!("the {action} stage"),
            source,
        })?;
        let code: seccompiler::BpfProgram =
            filter
                .try_into()
                .map_err(|source| SeccompError::BuildStage {
                    profile: p,
                    what: format!("the {action} stage"),
                    source,
                })?;
        // seccompiler starts every program with: ld [4]; jeq ARCH, 1, 0; ret KILL_PROCESS.
        let expected = [
            (LD_W_ABS, 0, 0, 4),
            (JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
            (RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        ];
        let head_ok = code.len() > 3
            && code
                .iter()
                .zip(expected)
                .all(|(i, (c, jt, jf, k))| (i.code, i.jt, i.jf, i.k) == (c, jt, jf, k));
        if !head_ok {
            return Err(SeccompError::UnexpectedPrologue { profile: p });
        }
        // All of seccompiler's jumps are forward and stay inside its program, so dropping the
        // head keeps them valid. The stage ends where the next one starts.
        let body = &code[3..];
        let start = program.len();
        let end = start + body.len();
        for (j, i) in body.iter().enumerate() {
            let pc = start + j;
            if i.code == RET_K && i.k == NEXT_STAGE {
                // ja to `end`: offset from the next instruction.
                let offset =
                    u32::try_from(end - pc - 1).map_err(|_| SeccompError::ProgramTooLong {
                        profile: p,
                        len: end,
                    })?;
                program.push(ins(JMP_JA, 0, 0, offset));
            } else if i.code == RET_K && i.k == NOTIFY_SENTINEL {
                program.push(ins(RET_K, 0, 0, libc::SECCOMP_RET_USER_NOTIF));
            } else {
                program.push(ins(i.code, i.jt, i.jf, i.k));
            }
        }
    }
    program.push(ins(RET_K, 0, 0, table.default.ret()));
    if program.len() > bpf::MAX_INSNS {
        return Err(SeccompError::ProgramTooLong {
            profile: p,
            len: program.len(),
        });
    }
    bpf::check(&program).map_err(|source| SeccompError::VerifyProgram { profile: p, source })?;
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_fit_and_pass_the_checker() {
        for p in Profile::ALL {
            let t = p.table();
            if p == Profile::None {
                continue;
            }
            let prog = assemble(&t).unwrap();
            assert!(prog.len() < 4096, "{p}: {}", prog.len());
            bpf::check(&prog).unwrap();
            // No stage sentinel survives.
            assert!(prog.iter().all(|i| !(i.code == RET_K && i.k == NEXT_STAGE)));
            // The notifying variant: the same instructions, only the kills of system calls
            // return USER_NOTIF (no sentinel left); the guards stay KILL_PROCESS.
            let n = assemble(&t.clone().with_kill_as(Action::UserNotif)).unwrap();
            assert_eq!(n.len(), prog.len(), "{p}");
            for (a, b) in prog.iter().zip(&n) {
                assert_eq!((a.code, a.jt, a.jf), (b.code, b.jt, b.jf), "{p}");
                if a.k != b.k {
                    assert_eq!((a.code, a.k), (RET_K, libc::SECCOMP_RET_KILL_PROCESS));
                    assert_eq!(b.k, libc::SECCOMP_RET_USER_NOTIF);
                }
            }
            assert!(
                n.iter()
                    .all(|i| !(i.code == RET_K && i.k == NOTIFY_SENTINEL))
            );
            assert_eq!(n[2].k, libc::SECCOMP_RET_KILL_PROCESS, "{p}: arch guard");
            assert_eq!(n[5].k, libc::SECCOMP_RET_KILL_PROCESS, "{p}: x32 guard");
        }
    }

    #[test]
    fn install_errors_round_trip_through_a_u64() {
        for e in [
            SeccompError::SetNoNewPrivs { errno: 22 },
            SeccompError::InstallFilter {
                errno: 13,
                tsync: true,
            },
            SeccompError::InstallFilter {
                errno: 12,
                tsync: false,
            },
            SeccompError::SyncThreads { tid: 4242 },
            SeccompError::InstallListener { errno: 16 },
            SeccompError::SendListener { errno: 32 },
        ] {
            let back = SeccompError::decode(e.encode().unwrap()).unwrap();
            assert_eq!(back.to_string(), e.to_string());
        }
        assert!(SeccompError::decode(0).is_none());
    }

    #[test]
    fn the_childs_plain_failure_decodes_to_the_same_error() {
        use crate::sys::seccomp::Failure;
        for f in [
            Failure::SetNoNewPrivs(22),
            Failure::InstallFilter {
                errno: 13,
                tsync: true,
            },
            Failure::InstallFilter {
                errno: 12,
                tsync: false,
            },
            Failure::SyncThreads(4242),
            Failure::InstallListener(16),
            Failure::SendListener(32),
        ] {
            assert_eq!(SeccompError::from(f).encode(), Some(f.encode()), "{f:?}");
        }
    }
}
