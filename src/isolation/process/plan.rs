//! Planning a process context: `ProcessIsolation::new`'s steps, each checking one part of
//! the configuration against the host and preparing it for the child (C strings, compiled
//! filters, the cgroup root). Nothing here runs in the child.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::config::{
    CgroupUse, Identity, MemoryFallback, Namespaces, ProcessConfig, Resource, Stdio, Sysfs,
};
use super::idpool;
use super::outcome::{MemoryEnforcement, ProcessError};
use crate::cgroup::{CgroupRoot, Controller};
use crate::probe::Features;
use crate::seccomp::CompiledFilter;
use crate::sys::mount::MountStep;
use crate::sys::rlimit;

/// Contradictions within the configuration, before anything is asked of the host.
pub(super) fn check_shape(config: &ProcessConfig, f: &Features) -> Result<(), ProcessError> {
    let ns = config.namespaces;
    if ns.contains(Namespaces::USER) && !f.user_namespaces.available {
        return Err(unsupported(
            "user namespaces",
            f.user_namespaces.reason.as_deref().unwrap_or("unavailable"),
        ));
    }
    if config.stdin == Stdio::Capture {
        return Err(ProcessError::InvalidConfig(
            "stdin cannot be captured (use Inherit or Null)".into(),
        ));
    }
    let uts_joined = config.join.iter().any(|(k, _)| k.contains(Namespaces::UTS));
    if config.hostname.is_some() && !ns.contains(Namespaces::UTS) && !uts_joined {
        return Err(ProcessError::InvalidConfig(
            "a hostname needs the UTS namespace".into(),
        ));
    }
    let wants_mounts = config.read_only_root
        || !config.tmpfs.is_empty()
        || config.mount_proc
        || !config.binds.is_empty()
        || config.sysfs == Sysfs::Masked;
    if wants_mounts && !ns.contains(Namespaces::MOUNT) {
        return Err(ProcessError::InvalidConfig(
            "a read-only root, tmpfs, /proc or bind mounts need the mount namespace".into(),
        ));
    }
    if config.mount_proc && !ns.contains(Namespaces::PID) {
        return Err(ProcessError::InvalidConfig(
            "a fresh /proc needs the pid namespace (set mount_proc = false)".into(),
        ));
    }
    let l = &config.limits;
    let has_limits = l.memory_max.is_some()
        || l.memory_high.is_some()
        || l.memory_low.is_some()
        || l.memory_swap_max.is_some()
        || l.cpu_max.is_some()
        || l.cpu_weight.is_some()
        || !l.io_max.is_empty()
        || l.pids_max.is_some()
        || config.device_rules.is_some();
    if config.cgroup_path.is_some() && has_limits {
        return Err(ProcessError::InvalidConfig(
            "a context that joins an existing cgroup (cgroup_path) takes that cgroup's limits; \
             it sets none of its own"
                .into(),
        ));
    }
    if config.root.is_some() && !config.binds.is_empty() {
        return Err(ProcessError::InvalidConfig(
            "bind mounts with a root filesystem of the context's own go in mounts (set up \
             before the pivot, their targets resolved inside the root), not in binds"
                .into(),
        ));
    }
    if config.root.is_some() && !ns.contains(Namespaces::MOUNT) {
        return Err(ProcessError::InvalidConfig(
            "a root filesystem of its own needs the mount namespace".into(),
        ));
    }
    if config.root.is_none() && !(config.mounts.is_empty() && config.devices.is_empty()) {
        return Err(ProcessError::InvalidConfig(
            "mounts and devices are set up under a root filesystem of the context's own: set root"
                .into(),
        ));
    }
    if ns.contains(Namespaces::USER) && !config.join.is_empty() {
        return Err(ProcessError::InvalidConfig(
            "namespaces joined by path together with a new user namespace: the clone creates \
             the user namespace first, and the joins would then need rights over namespaces \
             it does not own; join them without a new user namespace"
                .into(),
        ));
    }
    for (kind, path) in &config.join {
        if kind.intersects(Namespaces::USER) || kind.bits().count_ones() != 1 {
            return Err(ProcessError::InvalidConfig(format!(
                "joining the namespace {} ({kind:?}) is not supported: the pid, mount, network, \
                 IPC, UTS and cgroup namespaces can be joined by path, not the user namespace",
                path.display()
            )));
        }
        if ns.intersects(*kind) {
            return Err(ProcessError::InvalidConfig(format!(
                "the namespace {kind:?} is both created and joined ({})",
                path.display()
            )));
        }
    }
    for (key, _) in &config.sysctl {
        const NAMESPACED: [&str; 6] = [
            "kernel.msgmax",
            "kernel.msgmnb",
            "kernel.msgmni",
            "kernel.sem",
            "kernel.shmall",
            "kernel.shmmax",
        ];
        let ok = (key.starts_with("net.") && ns.contains(Namespaces::NET))
            || ((NAMESPACED.contains(&key.as_str())
                || key == "kernel.shmmni"
                || key == "kernel.shm_rmid_forced"
                || key.starts_with("fs.mqueue."))
                && ns.contains(Namespaces::IPC))
            || ((key == "kernel.hostname" || key == "kernel.domainname")
                && ns.contains(Namespaces::UTS));
        if !ok || key.contains('/') || key.contains("..") {
            return Err(ProcessError::InvalidConfig(format!(
                "the sysctl {key} is not namespaced by the namespaces this context creates, so \
                 writing it would change the host; only net.* (network namespace), the IPC \
                 ones (IPC namespace) and kernel.hostname/domainname (UTS) are allowed"
            )));
        }
    }
    if !config.sysctl.is_empty() && config.root.is_none() && !config.mount_proc {
        return Err(ProcessError::InvalidConfig(
            "sysctls are written under /proc/sys of the context: it needs its own /proc".into(),
        ));
    }
    for p in config.masked_paths.iter().chain(&config.readonly_paths) {
        if !p.is_absolute() {
            return Err(ProcessError::InvalidConfig(format!(
                "masked and read-only paths must be absolute: {}",
                p.display()
            )));
        }
    }
    Ok(())
}

/// The cgroup decision and every limit that needs it, the rlimits, and nebula's cgroup
/// root when cgroups are used.
pub(super) fn limits(
    config: &ProcessConfig,
    f: &Features,
) -> Result<
    (
        Option<CgroupRoot>,
        MemoryEnforcement,
        Vec<rlimit::RlimitSetting>,
    ),
    ProcessError,
> {
    // cgroups: decide, then check every limit that needs them.
    let cg = &f.cgroup_v2;
    let cg_reason = match config.cgroup {
        CgroupUse::Off => Some(
            "cgroups are switched off in this context's configuration (CgroupUse::Off)".to_owned(),
        ),
        _ if !cg.available => Some(
            cg.reason
                .clone()
                .unwrap_or_else(|| "cgroup v2 is not available".into()),
        ),
        _ => None,
    };
    // A caller that may not create cgroups under its parent (a user without cgroup v2
    // delegation): as without cgroup v2, limits that need it are refused with the reason.
    let cg_reason = cg_reason.or_else(|| {
        let parent = config
            .cgroup_parent
            .clone()
            .or_else(|| cg.supervisor_cgroup())?;
        cgroup_delegation_gap(&parent)
    });
    if config.cgroup == CgroupUse::Required
        && let Some(r) = &cg_reason
    {
        return Err(unsupported("cgroup v2", r));
    }
    let lim = &config.limits;
    let mut rlimits = Vec::new();
    let mut memory = MemoryEnforcement::None;
    let controller_ok = |c: Controller| {
        cg_reason.is_none() && cg.controllers.get(c.name()).is_some_and(|a| a.available)
    };
    let controller_why = |c: Controller| -> String {
        cg_reason.clone().unwrap_or_else(|| {
            cg.controllers
                .get(c.name())
                .and_then(|a| a.reason.clone())
                .unwrap_or_else(|| format!("the {c} controller is not available"))
        })
    };
    if let Some(max) = lim.memory_max {
        if controller_ok(Controller::Memory) {
            memory = MemoryEnforcement::Cgroup;
        } else if lim.memory_fallback == MemoryFallback::RlimitAs {
            memory = MemoryEnforcement::RlimitAs;
            rlimits.push(rlimit::RlimitSetting {
                resource: Resource::As,
                soft: max,
                hard: max,
            });
        } else {
            return Err(ProcessError::Unsupported {
                feature: "cgroup v2 memory controller",
                reason: format!(
                    "{}; the RLIMIT_AS memory fallback (off by default) can limit each process's address space instead",
                    controller_why(Controller::Memory)
                ),
            });
        }
    }
    let needs: [(bool, Controller, &'static str); 8] = [
        (
            lim.memory_pressure.is_some(),
            Controller::Memory,
            "a memory.pressure PSI trigger (cgroup v2 memory controller)",
        ),
        (
            lim.memory_high.is_some(),
            Controller::Memory,
            "memory.high (cgroup v2 memory controller)",
        ),
        (
            lim.memory_low.is_some(),
            Controller::Memory,
            "memory.low (cgroup v2 memory controller)",
        ),
        (
            lim.memory_swap_max.is_some(),
            Controller::Memory,
            "memory.swap.max (cgroup v2 memory controller)",
        ),
        (
            lim.cpu_max.is_some(),
            Controller::Cpu,
            "cpu.max (cgroup v2 cpu controller)",
        ),
        (
            lim.cpu_weight.is_some(),
            Controller::Cpu,
            "cpu.weight (cgroup v2 cpu controller)",
        ),
        (
            !lim.io_max.is_empty(),
            Controller::Io,
            "io.max (cgroup v2 io controller)",
        ),
        (
            lim.pids_max.is_some(),
            Controller::Pids,
            "pids.max (cgroup v2 pids controller)",
        ),
    ];
    for (asked, c, feature) in needs {
        if asked && !controller_ok(c) {
            return Err(unsupported(feature, &controller_why(c)));
        }
    }
    if config.device_rules.is_some()
        && let Some(r) = &cg_reason
    {
        return Err(unsupported(
            "device rules (a cgroup v2 BPF_CGROUP_DEVICE program)",
            r,
        ));
    }
    rlimits.extend(lim.rlimits.iter().copied());
    if let Some(cpu) = lim.cpu_time {
        let secs = cpu.as_secs() + u64::from(cpu.subsec_nanos() > 0);
        let secs = secs.max(1);
        rlimits.push(rlimit::RlimitSetting {
            resource: Resource::Cpu,
            soft: secs,
            hard: secs + 1,
        });
    }
    let root = if cg_reason.is_none() {
        let parent = match &config.cgroup_parent {
            Some(p) => p.clone(),
            None => cg
                .supervisor_cgroup()
                .ok_or_else(|| ProcessError::Unsupported {
                    feature: "cgroup v2",
                    reason: "no cgroup2 mount was found in /proc/self/mountinfo".into(),
                })?,
        };
        let controllers: Vec<Controller> = Controller::ALL
            .into_iter()
            .filter(|c| controller_ok(*c))
            .collect();
        Some(
            CgroupRoot::open(&parent, "nebula", &controllers)
                .map_err(|source| ProcessError::OpenCgroupRoot { parent, source })?,
        )
    } else {
        None
    };
    Ok((root, memory, rlimits))
}

/// Who the context is on the host (see idpool's docs for why), and whether the caller is
/// root.
pub(super) fn identity(config: &ProcessConfig) -> Result<(IdSource, bool), ProcessError> {
    let ns = config.namespaces;
    // Identity: who the context is on the host (see idpool's docs for why).
    let caller_root = rustix::process::geteuid().is_root();
    let identity = match &config.identity {
        _ if !ns.contains(Namespaces::USER) => IdSource::Single {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        },
        Identity::Host { uid, gid } => IdSource::Single {
            uid: *uid,
            gid: *gid,
        },
        Identity::Pool(pool) => IdSource::Pool(pool.declare()?),
        Identity::Maps { uid, gid } => {
            if !caller_root {
                return Err(ProcessError::InvalidConfig(
                    "explicit uid/gid maps are written by root; an unprivileged caller maps \
                     its own ids or its /etc/subuid range (Identity::Auto)"
                        .into(),
                ));
            }
            let text = |m: &[super::config::IdMapping], what: &str| {
                if m.is_empty() || m.len() > 340 {
                    return Err(ProcessError::InvalidConfig(format!(
                        "a {what} map needs 1 to 340 lines, not {}",
                        m.len()
                    )));
                }
                Ok(m.iter()
                    .map(|l| format!("{} {} {}\n", l.inside, l.outside, l.count))
                    .collect::<String>())
            };
            let root_of = |m: &[super::config::IdMapping]| {
                m.iter()
                    .find(|l| l.inside == 0)
                    .map_or(u32::MAX, |l| l.outside)
            };
            IdSource::Maps {
                uid_map: text(uid, "uid")?,
                gid_map: text(gid, "gid")?,
                root: (root_of(uid), root_of(gid)),
                count: uid.iter().map(|l| l.count).max().unwrap_or(1),
            }
        }
        Identity::Auto if caller_root => IdSource::Pool(idpool::IdPool::system().declare()?),
        Identity::Auto => match idpool::Subordinate::for_caller() {
            Some(sub) => IdSource::Subordinate(sub),
            None => IdSource::Single {
                uid: rustix::process::geteuid().as_raw(),
                gid: rustix::process::getegid().as_raw(),
            },
        },
    };
    if let IdSource::Single { uid, gid } = identity
        && !caller_root
        && (uid != rustix::process::geteuid().as_raw()
            || gid != rustix::process::getegid().as_raw())
    {
        return Err(ProcessError::InvalidConfig(format!(
            "a caller that is not root can map only its own ids (uid {}, gid {}), not \
             {uid}:{gid}; Hint: drop --uid, or run as root",
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw()
        )));
    }
    if let Some((u, g)) = config.user
        && !ns.contains(Namespaces::USER)
        && !caller_root
    {
        return Err(ProcessError::InvalidConfig(format!(
            "running as {u}:{g} inside needs the user namespace"
        )));
    }
    if let Some((u, g)) = config.user
        && ns.contains(Namespaces::USER)
    {
        // The highest id inside that the maps will hold.
        let (top, why) = match &identity {
            IdSource::Maps { .. } => (u32::MAX, ""),
            IdSource::Single { .. } => (0, "this context maps one id (root)"),
            IdSource::Pool(_) => (idpool::RANGE - 1, "its range holds ids 0..=65535"),
            IdSource::Subordinate(s) => (s.count, "the caller's /etc/subuid range ends there"),
        };
        if u.max(g) > top {
            return Err(ProcessError::InvalidConfig(format!(
                "the user {u}:{g} inside is not mapped: {why}, so the highest id inside is \
                 {top}; Hint: pick a smaller --user, or as root leave --uid out so the \
                 context gets a range of its own"
            )));
        }
    }
    Ok((identity, caller_root))
}

/// The mount steps, prepared as C strings.
pub(super) fn mounts(config: &ProcessConfig) -> Result<Vec<MountStep>, ProcessError> {
    let ns = config.namespaces;
    // Mounts, prepared as C strings.
    let mut mounts = Vec::new();
    if ns.contains(Namespaces::MOUNT) {
        match config.root.as_ref().and_then(|r| r.propagation) {
            Some(p) => mounts.push(MountStep::Propagation {
                target: c"/".into(),
                flags: p.flags(),
            }),
            None => mounts.push(MountStep::MakePrivate),
        }
        mounts.extend(super::rootfs::steps(config)?);
        if config.read_only_root {
            mounts.push(MountStep::ReadOnlyRoot);
        }
        for b in &config.binds {
            mounts.push(MountStep::Bind {
                source: cstring("bind source", b.source.as_os_str())?,
                target: cstring("bind target", b.target.as_os_str())?,
                read_only: !b.writable,
            });
        }
        for t in &config.tmpfs {
            mounts.push(MountStep::Tmpfs {
                target: cstring("tmpfs target", t.target.as_os_str())?,
                options: CString::new(format!("size={},mode=1777", t.size))
                    .expect("no NUL in digits"),
            });
        }
        if config.mount_proc {
            mounts.push(MountStep::Proc {
                target: c"/proc".into(),
            });
        }
        // /sys: a sysfs shows the network namespace of whoever mounts it, and may only be
        // mounted by a user namespace owning that network namespace; otherwise hide it.
        let own_net = ns.contains(Namespaces::NET | Namespaces::USER);
        match config.sysfs {
            Sysfs::Auto if own_net => mounts.push(MountStep::Sysfs {
                target: c"/sys".into(),
            }),
            Sysfs::Auto | Sysfs::Masked => mounts.push(MountStep::Mask {
                target: c"/sys".into(),
            }),
            Sysfs::Host => {}
        }
        for (key, value) in &config.sysctl {
            mounts.push(MountStep::Sysctl {
                path: cstring(
                    "sysctl",
                    OsStr::new(&format!("/proc/sys/{}", key.replace('.', "/"))),
                )?,
                value: cstring("sysctl value", OsStr::new(value))?,
            });
        }
        // runc's hardening, over the fresh /proc and /sys: read-only paths, then masks.
        for p in &config.readonly_paths {
            mounts.push(MountStep::ReadOnlyPath {
                target: cstring("read-only path", p.as_os_str())?,
            });
        }
        for p in &config.masked_paths {
            mounts.push(MountStep::MaskPath {
                target: cstring("masked path", p.as_os_str())?,
            });
        }
        if config.root.as_ref().is_some_and(|r| r.read_only) {
            mounts.push(MountStep::RemountReadOnly {
                target: c"/".into(),
            });
        }
    }
    Ok(mounts)
}

/// The Landlock ruleset: checked and prepared here (C strings, rights masked to the ABI),
/// built and enforced by the workload inside its mounts ([`crate::landlock`]).
pub(super) fn landlock(
    config: &ProcessConfig,
    f: &Features,
) -> Result<Option<crate::sys::landlock::RulesetPlan>, ProcessError> {
    let landlock = match &config.landlock {
        None => None,
        Some(l) => {
            let ll = &f.landlock;
            if !ll.available {
                return Err(unsupported(
                    "Landlock",
                    ll.reason.as_deref().unwrap_or("unavailable"),
                ));
            }
            let mut writable: Vec<(PathBuf, bool)> = config
                .tmpfs
                .iter()
                .map(|t| (t.target.clone(), true))
                .collect();
            writable.extend(
                config
                    .binds
                    .iter()
                    .filter(|b| b.writable)
                    .map(|b| (b.target.clone(), b.source.is_dir())),
            );
            Some(
                l.plan(&writable, ll.abi)
                    .map_err(|e| ProcessError::InvalidConfig(e.to_string()))?,
            )
        }
    };
    Ok(landlock)
}

/// The privilege drop: the capabilities kept and the user taken inside.
pub(super) fn privileges(
    config: &ProcessConfig,
) -> Result<Option<crate::privileges::PrivilegePlan>, ProcessError> {
    let caps = if config.drop_caps || config.user.is_some() {
        let mut b = crate::privileges::PrivilegePlan::drop_all();
        if config.drop_caps {
            for c in &config.keep_caps {
                b = b.keep(*c);
            }
            for c in &config.ambient_caps {
                b = b.keep_ambient(*c);
            }
        } else {
            for c in ::caps::all() {
                b = b.keep(c);
            }
        }
        if let Some((u, g)) = config.user {
            b = b.uid(u).gid(g).groups(&config.groups);
        }
        if !config.no_new_privs && config.landlock.is_none() {
            b = b.allow_new_privs();
        }
        Some(b.build().map_err(|e| ProcessError::Privileges {
            what: "capability plan",
            source: Box::new(e),
        })?)
    } else {
        None
    };
    Ok(caps)
}

/// The seccomp filter, and the plain one a notifying filter falls back to.
pub(super) fn seccomp(
    config: &ProcessConfig,
    f: &Features,
) -> Result<(Option<CompiledFilter>, Option<CompiledFilter>), ProcessError> {
    // seccomp: where the kernel has user notification, the profile's kills notify the
    // supervisor, which names the denied call and kills the context (crate::seccomp's
    // docs); the plain filter is the fallback when the child gets no listener.
    let seccomp_err = |e| match e {
        crate::seccomp::SeccompError::Unsupported { reason } => ProcessError::Unsupported {
            feature: "seccomp",
            reason,
        },
        other => ProcessError::Privileges {
            what: "seccomp profile",
            source: Box::new(other),
        },
    };
    if let Some(t) = &config.seccomp_table {
        let plain = CompiledFilter::compile(t).map_err(seccomp_err)?;
        if f.seccomp.actions.contains(&"user_notif")
            && t.actions().contains(&crate::seccomp::Action::KillProcess)
        {
            let notifying =
                CompiledFilter::compile(&t.clone().with_kill_as(crate::seccomp::Action::UserNotif))
                    .map_err(seccomp_err)?;
            return Ok((Some(notifying), Some(plain)));
        }
        return Ok((Some(plain), None));
    }
    let (filter, filter_fallback) = match config.seccomp {
        crate::seccomp::Profile::None => (None, None),
        p => {
            let plain = p.compile().map_err(seccomp_err)?;
            if f.seccomp.actions.contains(&"user_notif") {
                let notifying = p.compile_notifying().map_err(seccomp_err)?;
                (Some(notifying), Some(plain))
            } else {
                (Some(plain), None)
            }
        }
    };
    Ok((filter, filter_fallback))
}

pub(super) fn cstring(what: &str, s: &OsStr) -> Result<CString, ProcessError> {
    CString::new(s.as_bytes())
        .map_err(|_| ProcessError::InvalidConfig(format!("{what} {s:?} contains a NUL byte")))
}

/// Why the caller cannot create nebula's cgroup root and its leaves under `parent`, or
/// `None` when it can: it must be able to write `parent`'s `cgroup.procs` (moving a child
/// into a leaf needs write access at the common ancestor), `parent` itself or the existing
/// `nebula` root (to create it or its leaves), and the `cgroup.subtree_control` files that
/// still need a controller enabled. Checked with `access(2)`, nothing is written; root
/// passes, a user passes where the subtree was delegated to them.
pub(super) fn cgroup_delegation_gap(parent: &Path) -> Option<String> {
    let writable = |p: &Path| rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok();
    let controllers = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let offered = controllers(&parent.join("cgroup.controllers"));
    let missing_in = |dir: &Path| {
        let enabled = controllers(&dir.join("cgroup.subtree_control"));
        offered
            .split_whitespace()
            .any(|c| !enabled.split_whitespace().any(|e| e == c))
    };
    let root = parent.join("nebula");
    let mut need = vec![parent.join("cgroup.procs")];
    if missing_in(parent) {
        need.push(parent.join("cgroup.subtree_control"));
    }
    if root.is_dir() {
        need.push(root.clone());
        need.push(root.join("cgroup.subtree_control"));
    } else {
        need.push(parent.to_owned());
    }
    let denied: Vec<String> = need
        .iter()
        .filter(|p| !writable(p))
        .map(|p| p.display().to_string())
        .collect();
    if denied.is_empty() {
        return None;
    }
    let uid = rustix::process::geteuid().as_raw();
    Some(format!(
        "cgroup v2 is not delegated to uid {uid} at {}: {} {} not writable by uid {uid}; run as root, \
         under `systemd-run --user --scope -p Delegate=yes`, or have root chown that cgroup \
         (the directory, cgroup.procs and cgroup.subtree_control) to uid {uid}",
        parent.display(),
        denied.join(", "),
        if denied.len() == 1 { "is" } else { "are" },
    ))
}

pub(super) fn unsupported(feature: &'static str, why: &str) -> ProcessError {
    ProcessError::Unsupported {
        feature,
        reason: why.to_owned(),
    }
}

/// Where a configuration's host ids come from.
#[derive(Debug)]
pub(super) enum IdSource {
    /// Root inside is this one host id.
    Single { uid: u32, gid: u32 },
    /// Each context leases a range of the pool.
    Pool(idpool::DeclaredPool),
    /// An unprivileged caller: root inside is the caller, the rest its subordinate ids.
    Subordinate(idpool::Subordinate),
    /// Maps given as they are ([`Identity::Maps`]), already formatted.
    Maps {
        uid_map: String,
        gid_map: String,
        /// The host ids of root inside (`u32::MAX` when root is not mapped).
        root: (u32, u32),
        /// The largest line's count.
        count: u32,
    },
}
