//! A filter as data: the actions, the argument comparisons, the per-call rules, the table
//! a profile compiles from, and the named profiles.

use std::collections::BTreeMap;
use std::fmt;

use super::syscalls;

/// The data of the `SECCOMP_RET_TRACE` sentinel seccompiler is given for
/// [`Action::UserNotif`] (it has no such action); every `ret` of it becomes
/// `ret SECCOMP_RET_USER_NOTIF`.
pub(super) const NOTIFY_SENTINEL_DATA: u16 = 0xbeed;

/// `AUDIT_ARCH_X86_64`: the `arch` field of `seccomp_data` for native x86_64 system calls.
pub const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `AUDIT_ARCH_I386`: the `arch` of a system call made through `int 0x80` (IA-32 emulation).
pub const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
/// `__X32_SYSCALL_BIT`: x32 system call numbers have this bit set.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What a filter tells the kernel to do with one system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Run it.
    Allow,
    /// Do not run it; return `-errno` to the caller.
    Errno(u16),
    /// Kill the whole process as if by `SIGSYS` (`SECCOMP_RET_KILL_PROCESS`).
    KillProcess,
    /// Kill only the calling thread (`SECCOMP_RET_KILL_THREAD`); never used by the profiles:
    /// it leaves a half-dead process.
    KillThread,
    /// Deliver `SIGSYS` to the calling thread (`SECCOMP_RET_TRAP`); the handler sees
    /// `si_code == SYS_SECCOMP`, `si_syscall`, `si_arch`.
    Trap,
    /// Run it and log it to the audit log (`SECCOMP_RET_LOG`).
    Log,
    /// Stop the calling thread in the kernel and notify the filter's listener
    /// (`SECCOMP_RET_USER_NOTIF`); the call runs only if the listener says so. Process
    /// contexts use it in place of [`Action::KillProcess`]: their supervisor records the call
    /// and kills the context, never letting it run (see the module docs). Without a listener
    /// the kernel fails the call with `ENOSYS`.
    UserNotif,
}

impl Action {
    /// The value a BPF program returns for this action.
    pub const fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(e) => libc::SECCOMP_RET_ERRNO | e as u32,
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Log => libc::SECCOMP_RET_LOG,
            Action::UserNotif => libc::SECCOMP_RET_USER_NOTIF,
        }
    }

    /// Decodes a filter's return value the way the kernel does: the action is the top 16
    /// bits (`SECCOMP_RET_ACTION_FULL`), the data the low 16; an action the kernel does not
    /// know kills the process. Returns `None` for `SECCOMP_RET_TRACE`, which no nebula
    /// profile uses.
    pub fn from_ret(ret: u32) -> Option<Action> {
        let data = (ret & libc::SECCOMP_RET_DATA) as u16;
        Some(match ret & libc::SECCOMP_RET_ACTION_FULL {
            libc::SECCOMP_RET_ALLOW => Action::Allow,
            libc::SECCOMP_RET_ERRNO => Action::Errno(data),
            libc::SECCOMP_RET_KILL_THREAD => Action::KillThread,
            libc::SECCOMP_RET_TRAP => Action::Trap,
            libc::SECCOMP_RET_LOG => Action::Log,
            libc::SECCOMP_RET_USER_NOTIF => Action::UserNotif,
            libc::SECCOMP_RET_TRACE => return None,
            _ => Action::KillProcess,
        })
    }

    /// The name of the action in `features().seccomp.actions`.
    pub const fn kernel_name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Errno(_) => "errno",
            Action::KillProcess => "kill_process",
            Action::KillThread => "kill_thread",
            Action::Trap => "trap",
            Action::Log => "log",
            Action::UserNotif => "user_notif",
        }
    }

    /// seccompiler has no `USER_NOTIF` action: [`Action::UserNotif`] stages are generated
    /// with a `SECCOMP_RET_TRACE` sentinel that the assembler rewrites (see `compile.rs`).
    pub(super) fn to_seccompiler(self) -> seccompiler::SeccompAction {
        use seccompiler::SeccompAction as S;
        match self {
            Action::Allow => S::Allow,
            Action::Errno(e) => S::Errno(e.into()),
            Action::KillProcess => S::KillProcess,
            Action::KillThread => S::KillThread,
            Action::Trap => S::Trap,
            Action::Log => S::Log,
            Action::UserNotif => S::Trace(u32::from(NOTIFY_SENTINEL_DATA)),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Allow => f.write_str("allow"),
            Action::Errno(e) => match errno_name(*e) {
                Some(n) => write!(f, "errno {n}"),
                None => write!(f, "errno {e}"),
            },
            Action::KillProcess => f.write_str("kill process (SIGSYS)"),
            Action::KillThread => f.write_str("kill thread"),
            Action::Trap => f.write_str("trap (SIGSYS to the thread)"),
            Action::Log => f.write_str("allow and log"),
            Action::UserNotif => f.write_str("notify the supervisor, which kills the process"),
        }
    }
}

fn errno_name(e: u16) -> Option<&'static str> {
    Some(match i32::from(e) {
        libc::EPERM => "EPERM",
        libc::ENOSYS => "ENOSYS",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EACCES => "EACCES",
        _ => return None,
    })
}

/// How much of a 64-bit system call argument a comparison looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgWidth {
    /// The low 32 bits (for `int` and `unsigned int` arguments: the kernel ignores the upper
    /// half, and a sign-extended negative `int` must still match).
    Dword,
    /// All 64 bits (pointers, `long`, `size_t`).
    Qword,
}

/// A comparison of an argument with a constant (unsigned, as BPF compares).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `arg == value`.
    Eq,
    /// `arg != value`.
    Ne,
    /// `arg < value`.
    Lt,
    /// `arg <= value`.
    Le,
    /// `arg > value`.
    Gt,
    /// `arg >= value`.
    Ge,
    /// `arg & mask == value & mask`.
    MaskedEq(u64),
}

/// One condition on one argument of a system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgCmp {
    /// The argument, 0 to 5.
    pub arg: u8,
    /// How many bits are compared.
    pub width: ArgWidth,
    /// The comparison.
    pub op: CmpOp,
    /// The constant.
    pub value: u64,
}

impl ArgCmp {
    /// A 32-bit comparison of argument `arg`.
    pub const fn dword(arg: u8, op: CmpOp, value: u64) -> Self {
        ArgCmp {
            arg,
            width: ArgWidth::Dword,
            op,
            value,
        }
    }

    /// A 64-bit comparison of argument `arg`.
    pub const fn qword(arg: u8, op: CmpOp, value: u64) -> Self {
        ArgCmp {
            arg,
            width: ArgWidth::Qword,
            op,
            value,
        }
    }

    /// Evaluates the condition on `args` directly (the reference semantics the oracle test
    /// holds the compiled BPF to).
    pub fn matches(&self, args: &[u64; 6]) -> bool {
        let cut = |v: u64| match self.width {
            ArgWidth::Dword => v & 0xffff_ffff,
            ArgWidth::Qword => v,
        };
        let a = cut(args[usize::from(self.arg)]);
        let v = cut(self.value);
        match self.op {
            CmpOp::Eq => a == v,
            CmpOp::Ne => a != v,
            CmpOp::Lt => a < v,
            CmpOp::Le => a <= v,
            CmpOp::Gt => a > v,
            CmpOp::Ge => a >= v,
            CmpOp::MaskedEq(m) => a & cut(m) == v & cut(m),
        }
    }

    pub(super) fn to_seccompiler(
        self,
    ) -> Result<seccompiler::SeccompCondition, seccompiler::BackendError> {
        use seccompiler::{SeccompCmpArgLen as L, SeccompCmpOp as O};
        let len = match self.width {
            ArgWidth::Dword => L::Dword,
            ArgWidth::Qword => L::Qword,
        };
        let op = match self.op {
            CmpOp::Eq => O::Eq,
            CmpOp::Ne => O::Ne,
            CmpOp::Lt => O::Lt,
            CmpOp::Le => O::Le,
            CmpOp::Gt => O::Gt,
            CmpOp::Ge => O::Ge,
            CmpOp::MaskedEq(m) => O::MaskedEq(m),
        };
        seccompiler::SeccompCondition::new(self.arg, len, op, self.value)
    }
}

impl fmt::Display for ArgCmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = match self.width {
            ArgWidth::Dword => "(u32)",
            ArgWidth::Qword => "",
        };
        let a = self.arg;
        let v = self.value;
        match self.op {
            CmpOp::Eq => write!(f, "{w}arg{a} == {v:#x}"),
            CmpOp::Ne => write!(f, "{w}arg{a} != {v:#x}"),
            CmpOp::Lt => write!(f, "{w}arg{a} < {v:#x}"),
            CmpOp::Le => write!(f, "{w}arg{a} <= {v:#x}"),
            CmpOp::Gt => write!(f, "{w}arg{a} > {v:#x}"),
            CmpOp::Ge => write!(f, "{w}arg{a} >= {v:#x}"),
            CmpOp::MaskedEq(m) => write!(f, "{w}arg{a} & {m:#x} == {:#x}", v & m),
        }
    }
}

/// One case of a system call's verdict: if any of the condition groups holds (each group is
/// an AND), the action applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// OR of ANDs; never empty, and no group is empty.
    pub any_of: Vec<Vec<ArgCmp>>,
    /// The action when a group holds.
    pub action: Action,
}

impl Case {
    /// Whether the case applies to `args`.
    pub fn matches(&self, args: &[u64; 6]) -> bool {
        self.any_of
            .iter()
            .any(|group| group.iter().all(|c| c.matches(args)))
    }
}

/// What a profile does with one system call: the first case that matches, else `otherwise`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallRule {
    /// The x86_64 system call number.
    pub nr: u32,
    /// Its name.
    pub name: &'static str,
    /// Argument-dependent cases, tried in order.
    pub cases: Vec<Case>,
    /// The action when no case matches (or the only action, without cases).
    pub otherwise: Action,
    /// Why, in a few words.
    pub why: &'static str,
}

impl SyscallRule {
    /// The action for these arguments.
    pub fn action(&self, args: &[u64; 6]) -> Action {
        self.cases
            .iter()
            .find(|c| c.matches(args))
            .map_or(self.otherwise, |c| c.action)
    }
}

impl fmt::Display for SyscallRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): ", self.name, self.nr)?;
        for c in &self.cases {
            let groups: Vec<String> = c
                .any_of
                .iter()
                .map(|g| {
                    g.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" && ")
                })
                .collect();
            write!(f, "{} if {}; ", c.action, groups.join(" || "))?;
        }
        if self.cases.is_empty() {
            write!(f, "{}", self.otherwise)?;
        } else {
            write!(f, "else {}", self.otherwise)?;
        }
        if !self.why.is_empty() {
            write!(f, " ({})", self.why)?;
        }
        Ok(())
    }
}

/// A profile written as data: what the compiled filter must answer for every system call.
/// The oracle test replays the compiled program against [`ProfileTable::expected`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileTable {
    /// Which profile this is.
    pub profile: Profile,
    /// The system calls the profile names, by number.
    pub rules: BTreeMap<u32, SyscallRule>,
    /// The action for known system calls the profile does not name.
    pub default: Action,
    /// The action for a foreign architecture (i386 through `int 0x80`, ...).
    pub bad_arch: Action,
    /// The action for numbers with the x32 bit, or negative ones (`nr >= 0x40000000`).
    pub x32: Action,
    /// Numbers above this are newer than the table...
    pub max_known: u32,
    /// ... and get this action (`ENOSYS`, so that libraries fall back).
    pub above_known: Action,
}

impl ProfileTable {
    /// The action the filter must return for a system call `nr` made with architecture
    /// `arch` and arguments `args`.
    pub fn expected(&self, arch: u32, nr: i32, args: &[u64; 6]) -> Action {
        if arch != AUDIT_ARCH_X86_64 {
            return self.bad_arch;
        }
        // The filter compares the kernel's bits of `nr` unsigned; a negative one is above every
        // known call.
        #[allow(clippy::cast_sign_loss)]
        let n = nr as u32;
        if n >= X32_SYSCALL_BIT {
            return self.x32;
        }
        if n > self.max_known {
            return self.above_known;
        }
        self.rules.get(&n).map_or(self.default, |r| r.action(args))
    }

    /// The rule for `nr`, if the profile names it.
    pub fn rule(&self, nr: u32) -> Option<&SyscallRule> {
        self.rules.get(&nr)
    }

    /// One line about what the profile does with native system call `nr` (for reports such
    /// as "killed by seccomp: open (2): ...").
    pub fn describe(&self, nr: u32) -> String {
        if nr >= X32_SYSCALL_BIT {
            return format!("x32 or negative number {nr:#x}: {}", self.x32);
        }
        if nr > self.max_known {
            return format!("{nr}: newer than the table: {}", self.above_known);
        }
        match self.rules.get(&nr) {
            Some(r) => r.to_string(),
            None => format!(
                "{} ({nr}): {} (profile default)",
                syscalls::name(nr).unwrap_or("unnamed"),
                self.default
            ),
        }
    }

    /// The same table with every `KillProcess` verdict of a system call (and the default)
    /// replaced by `action`; the architecture and x32 verdicts stay `KillProcess`. With
    /// [`Action::UserNotif`] this is what process contexts install
    /// ([`Profile::compile_notifying`]); with [`Action::Trap`] a debugging variant whose
    /// `SIGSYS` handler can report `si_syscall`; with [`Action::Log`] a learning variant.
    pub fn with_kill_as(mut self, action: Action) -> Self {
        let swap = |a: &mut Action| {
            if *a == Action::KillProcess {
                *a = action;
            }
        };
        swap(&mut self.default);
        for r in self.rules.values_mut() {
            swap(&mut r.otherwise);
            for c in &mut r.cases {
                swap(&mut c.action);
            }
        }
        self
    }

    /// Every action the filter can return (for the probe: the kernel must know each).
    pub fn actions(&self) -> Vec<Action> {
        let mut v = vec![self.default, self.bad_arch, self.x32, self.above_known];
        for r in self.rules.values() {
            v.push(r.otherwise);
            v.extend(r.cases.iter().map(|c| c.action));
        }
        v.sort();
        v.dedup();
        v
    }
}

/// The named policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Close to Docker's default: ordinary programs run; namespaces, mounts, kernel
    /// modules, kexec, BPF, perf, userfaultfd, keyrings, io_uring, tracing and clock setting
    /// are refused (`EPERM`, or a kill for the clearly hostile). Default action `EPERM`.
    Default,
    /// Compute only: read/write on descriptors that are already open, memory management
    /// without `PROT_EXEC`, futexes, signals' return path, clocks, `getrandom`, exit. No
    /// `open`, no `socket`, no new threads. Default action: kill the process. Meant for
    /// closures; `execve` is allowed (the exec way into a context needs it after the
    /// filter is in), but a dynamically linked program is killed at its loader's first
    /// `openat`.
    Strict,
    /// `default`, plus `socket` and `socketpair` only for `AF_UNIX` (`EAFNOSUPPORT`
    /// otherwise). Pair it with an empty network namespace, which is the real control.
    DenyNetwork,
    /// No filter at all.
    None,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
