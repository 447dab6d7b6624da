//! An OCI bundle's `config.json`, read with `oci-spec`'s types and mapped onto a
//! [`ProcessConfig`]: the process level is what runs a container; this file only translates.
//!
//! Every field is either mapped or refused by name. `oci-spec` drops keys it does not know
//! while it deserializes, so [`load`] first compares the JSON text with what `oci-spec`
//! read back ([`unknown_fields`]): a key that did not survive is an error too.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{
    Hook, Hooks, LinuxCapabilities, LinuxDeviceType, LinuxNamespaceType, LinuxResources,
    PosixRlimitType, Spec,
};
use serde_json::Value;

use super::error::OciError;
use crate::cgroup::CpuMax;
use crate::isolation::process::{
    CgroupUse, Command, Device, DeviceKind, IdMapping, Identity, Mount, Namespaces, ProcessConfig,
    Propagation, Resource, RlimitSetting, RootFs, Stdio, Sysfs,
};

/// The annotation prefix of nebula's own options (documented in the module docs of
/// [`super`]).
pub const ANNOTATION_PREFIX: &str = "org.nebula.";

/// A bundle, read and mapped.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory (absolute).
    pub dir: PathBuf,
    /// The spec as `oci-spec` read it.
    pub spec: Spec,
    /// The context configuration it maps to.
    pub config: ProcessConfig,
    /// The workload.
    pub command: Command,
    /// The hooks.
    pub hooks: Hooks,
}

fn unsupported(field: &str, why: &str) -> OciError {
    OciError::Unsupported {
        field: field.to_owned(),
        reason: why.to_owned(),
    }
}

/// The dotted paths of keys in `input` that `parsed` (the same document after a round trip
/// through `oci-spec`) lacks: keys `oci-spec`, and so the runtime spec, does not define.
/// `null` values count as absent. Annotations are free-form and not compared.
pub fn unknown_fields(input: &Value, parsed: &Value) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in a {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if v.is_null() || p == "annotations" {
                        continue;
                    }
                    match b.get(k) {
                        Some(w) => walk(&p, v, w, out),
                        None => out.push(p),
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                for (i, (v, w)) in a.iter().zip(b).enumerate() {
                    walk(&format!("{path}[{i}]"), v, w, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", input, parsed, &mut out);
    out
}

/// Reads `<bundle>/config.json` and maps it (see the module docs).
///
/// # Errors
/// [`OciError::Bundle`] for a file that cannot be read or parsed, [`OciError::UnknownField`]
/// and [`OciError::Unsupported`] naming the field.
pub fn load(bundle: &Path, id: &str) -> Result<Bundle, OciError> {
    let dir = bundle.canonicalize().map_err(|e| OciError::Bundle {
        path: bundle.to_owned(),
        reason: e.to_string(),
    })?;
    let spec: Spec = read_checked(&dir.join("config.json"))?;
    map(dir, spec, id)
}

/// Reads a JSON document of `T` (a `config.json`, an `exec --process` file) with the same
/// unknown-field check as [`load`].
///
/// # Errors
/// [`OciError::Bundle`], [`OciError::UnknownField`].
pub fn read_checked<T: serde::de::DeserializeOwned + serde::Serialize>(
    file: &Path,
) -> Result<T, OciError> {
    let bad = |reason: String| OciError::Bundle {
        path: file.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
    let input: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let v: T = serde_json::from_value(input.clone()).map_err(|e| bad(e.to_string()))?;
    let back = serde_json::to_value(&v).map_err(|e| bad(e.to_string()))?;
    if let Some(field) = unknown_fields(&input, &back).into_iter().next() {
        return Err(OciError::UnknownField { field });
    }
    Ok(v)
}

/// What a container's process gets before its bundle says more: nothing (no namespace,
/// mount, mask, capability or filter the bundle does not name: runtime-spec semantics, the
/// bundle is the sandbox).
pub fn base_config(id: &str) -> ProcessConfig {
    ProcessConfig {
        namespaces: Namespaces::empty(),
        identity: Identity::Auto,
        user: None,
        masked_paths: Vec::new(),
        readonly_paths: Vec::new(),
        read_only_root: false,
        tmpfs: Vec::new(),
        mount_proc: false,
        sysfs: Sysfs::Host,
        no_new_privs: false,
        drop_caps: true,
        keep_caps: Vec::new(),
        seccomp: crate::seccomp::Profile::None,
        cgroup: CgroupUse::Auto,
        stdin: Stdio::Inherit,
        stdout: Stdio::Inherit,
        stderr: Stdio::Inherit,
        cgroup_name: Some(format!("oci-{id}")),
        ..ProcessConfig::default()
    }
}

fn map(dir: PathBuf, spec: Spec, id: &str) -> Result<Bundle, OciError> {
    if !spec.version().starts_with("1.") {
        return Err(unsupported(
            "ociVersion",
            &format!("{} is not a runtime-spec 1.x version", spec.version()),
        ));
    }
    for (present, field) in [
        (spec.solaris().is_some(), "solaris"),
        (spec.windows().is_some(), "windows"),
        (spec.vm().is_some(), "vm"),
        (spec.zos().is_some(), "zos"),
    ] {
        if present {
            return Err(unsupported(field, "nebula is a Linux runtime"));
        }
    }
    let mut c = base_config(id);
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| unsupported("process", "a container needs a process to run"))?;
    let command = process_fields(process, &mut c)?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| unsupported("root", "a container needs a root filesystem"))?;
    let root_path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        dir.join(root.path())
    };
    let linux_section = spec.linux().as_ref();
    let propagation = match linux_section.and_then(|l| l.rootfs_propagation().as_deref()) {
        None => None,
        Some("private" | "rprivate") => Some(Propagation::Private),
        Some("slave" | "rslave") => Some(Propagation::Slave),
        Some("shared" | "rshared") => Some(Propagation::Shared),
        Some("unbindable" | "runbindable") => Some(Propagation::Unbindable),
        Some(other) => {
            return Err(unsupported(
                "linux.rootfsPropagation",
                &format!("\"{other}\" is not one of private, slave, shared, unbindable"),
            ));
        }
    };
    c.root = Some(RootFs {
        path: root_path,
        read_only: root.readonly().unwrap_or(false),
        propagation,
    });
    for m in spec.mounts().as_deref().unwrap_or_default() {
        c.mounts.push(Mount {
            target: m.destination().clone(),
            fstype: m.typ().clone(),
            source: m.source().as_ref().map(|s| {
                if s.is_absolute() || m.typ().as_deref() != Some("bind") {
                    s.clone()
                } else {
                    dir.join(s)
                }
            }),
            options: m.options().clone().unwrap_or_default(),
        });
    }
    c.hostname = spec.hostname().clone();
    if spec.domainname().is_some() {
        return Err(unsupported("domainname", "not implemented"));
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| unsupported("linux", "a Linux container needs the linux section"))?;
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        let flag = match ns.typ() {
            LinuxNamespaceType::Mount => Namespaces::MOUNT,
            LinuxNamespaceType::Cgroup => Namespaces::CGROUP,
            LinuxNamespaceType::Uts => Namespaces::UTS,
            LinuxNamespaceType::Ipc => Namespaces::IPC,
            LinuxNamespaceType::User => Namespaces::USER,
            LinuxNamespaceType::Pid => Namespaces::PID,
            LinuxNamespaceType::Network => Namespaces::NET,
            LinuxNamespaceType::Time => {
                return Err(unsupported(
                    "linux.namespaces[type=time]",
                    "the time namespace is not implemented",
                ));
            }
        };
        match ns.path() {
            Some(p) => c.join.push((flag, p.clone())),
            None => c.namespaces |= flag,
        }
    }
    if c.namespaces.contains(Namespaces::USER) {
        let maps = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>, field: &str| {
            let m = m.as_deref().unwrap_or_default();
            if m.is_empty() {
                return Err(unsupported(
                    field,
                    "a new user namespace needs its id mappings",
                ));
            }
            Ok(m.iter()
                .map(|l| IdMapping {
                    inside: l.container_id(),
                    outside: l.host_id(),
                    count: l.size(),
                })
                .collect::<Vec<_>>())
        };
        c.identity = Identity::Maps {
            uid: maps(linux.uid_mappings(), "linux.uidMappings")?,
            gid: maps(linux.gid_mappings(), "linux.gidMappings")?,
        };
    } else if linux.uid_mappings().is_some() || linux.gid_mappings().is_some() {
        return Err(unsupported(
            "linux.uidMappings",
            "id mappings need a new user namespace in linux.namespaces",
        ));
    }
    if let Some(r) = linux.resources() {
        resources(r, &mut c)?;
    }
    if let Some(path) = linux.cgroups_path() {
        let flat: String = path
            .to_string_lossy()
            .trim_matches('/')
            .replace(['/', ':'], "-");
        if flat.is_empty() || flat.starts_with('.') {
            return Err(unsupported("linux.cgroupsPath", "names no cgroup"));
        }
        c.cgroup_name = Some(flat);
    }
    for d in linux.devices().as_deref().unwrap_or_default() {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::P => DeviceKind::Fifo,
            LinuxDeviceType::A => {
                return Err(unsupported(
                    "linux.devices[].type",
                    "\"a\" is not a node type",
                ));
            }
        };
        let num = |v: i64, what: &str| {
            u64::try_from(v).map_err(|_| unsupported(what, "must not be negative"))
        };
        c.devices.push(Device {
            path: d.path().clone(),
            kind,
            major: num(d.major(), "linux.devices[].major")?,
            minor: num(d.minor(), "linux.devices[].minor")?,
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    if let Some(s) = linux.seccomp() {
        c.seccomp_table = Some(super::seccomp::table(s)?);
    }
    let paths = |v: &Option<Vec<String>>| -> Vec<PathBuf> {
        v.iter().flatten().map(PathBuf::from).collect()
    };
    c.masked_paths = paths(linux.masked_paths());
    c.readonly_paths = paths(linux.readonly_paths());
    if let Some(s) = linux.sysctl() {
        let sorted: BTreeMap<_, _> = s.iter().collect();
        c.sysctl = sorted
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
    for (present, field) in [
        (linux.intel_rdt().is_some(), "linux.intelRdt"),
        (linux.mount_label().is_some(), "linux.mountLabel"),
        (linux.personality().is_some(), "linux.personality"),
        (linux.time_offsets().is_some(), "linux.timeOffsets"),
        (linux.memory_policy().is_some(), "linux.memoryPolicy"),
        (linux.net_devices().is_some(), "linux.netDevices"),
    ] {
        if present {
            return Err(unsupported(field, "not implemented by nebula"));
        }
    }
    annotations(&spec, &mut c)?;
    let hooks = spec.hooks().clone().unwrap_or_default();
    Ok(Bundle {
        dir,
        command,
        config: c,
        hooks,
        spec,
    })
}

/// Maps `process` (of `config.json`, or of `exec --process`) onto `c`: the workload, its
/// environment, cwd, user, capabilities, rlimits and `noNewPrivileges`.
///
/// # Errors
/// [`OciError::Unsupported`] naming the field.
pub fn process_fields(
    process: &oci_spec::runtime::Process,
    c: &mut ProcessConfig,
) -> Result<Command, OciError> {
    let args = process
        .args()
        .as_ref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| unsupported("process.args", "the process needs at least one argument"))?;
    let command = Command::new(&args[0]).args(&args[1..]);
    for kv in process.env().as_deref().unwrap_or_default() {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| unsupported("process.env", &format!("\"{kv}\" is not KEY=VALUE")))?;
        c.env.push((OsString::from(k), OsString::from(v)));
    }
    c.cwd = process.cwd().clone();
    if !c.cwd.is_absolute() {
        return Err(unsupported("process.cwd", "must be an absolute path"));
    }
    if process.terminal().unwrap_or(false) {
        return Err(unsupported(
            "process.terminal",
            "a terminal for the container (console socket) is not implemented yet",
        ));
    }
    if process.console_size().is_some() {
        return Err(unsupported(
            "process.consoleSize",
            "no terminal support yet",
        ));
    }
    let user = process.user();
    c.user = Some((user.uid(), user.gid()));
    c.groups = user.additional_gids().clone().unwrap_or_default();
    c.umask = user.umask();
    if let Some(caps) = process.capabilities() {
        let (keep, ambient) = capabilities(caps)?;
        c.keep_caps = keep;
        c.ambient_caps = ambient;
    }
    for r in process.rlimits().as_deref().unwrap_or_default() {
        c.limits.rlimits.push(RlimitSetting {
            resource: rlimit(r.typ())?,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    c.no_new_privs = process.no_new_privileges().unwrap_or(false);
    for (present, field) in [
        (
            process.apparmor_profile().is_some(),
            "process.apparmorProfile",
        ),
        (process.selinux_label().is_some(), "process.selinuxLabel"),
        (process.io_priority().is_some(), "process.ioPriority"),
        (process.scheduler().is_some(), "process.scheduler"),
        (
            process.exec_cpu_affinity().is_some(),
            "process.execCPUAffinity",
        ),
    ] {
        if present {
            return Err(unsupported(field, "not implemented by nebula"));
        }
    }
    c.oom_score_adj = process.oom_score_adj();
    Ok(command)
}

fn cap_set(set: &Option<oci_spec::runtime::Capabilities>) -> Result<BTreeSet<String>, OciError> {
    let mut out = BTreeSet::new();
    for cap in set.iter().flatten() {
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.insert(name);
    }
    Ok(out)
}

/// nebula keeps one set of capabilities (bounding = permitted = effective) plus an ambient
/// subset; bundles whose sets relate otherwise are refused by name.
fn capabilities(
    caps: &LinuxCapabilities,
) -> Result<
    (
        Vec<crate::privileges::Capability>,
        Vec<crate::privileges::Capability>,
    ),
    OciError,
> {
    let b = cap_set(caps.bounding())?;
    let p = cap_set(caps.permitted())?;
    let e = cap_set(caps.effective())?;
    let i = cap_set(caps.inheritable())?;
    let a = cap_set(caps.ambient())?;
    if p != b || e != b {
        return Err(unsupported(
            "process.capabilities",
            "nebula keeps one set: bounding, permitted and effective must list the same \
             capabilities",
        ));
    }
    if !a.is_subset(&b) || !(i.is_empty() || i == a || i == b) {
        return Err(unsupported(
            "process.capabilities.ambient",
            "ambient must be a subset of the bounding set, and inheritable empty, equal to \
             ambient or to the bounding set",
        ));
    }
    let parse = |s: &BTreeSet<String>| {
        s.iter()
            .map(|n| {
                crate::privileges::Capability::from_str(n).map_err(|_| {
                    unsupported("process.capabilities", &format!("unknown capability {n}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    // An ambient capability needs it inheritable too: with i == b, ambient is what the
    // bundle gave; nebula raises inheritable for the ambient ones only.
    Ok((parse(&b)?, parse(&a)?))
}

fn rlimit(t: PosixRlimitType) -> Result<Resource, OciError> {
    Ok(match t {
        PosixRlimitType::RlimitCpu => Resource::Cpu,
        PosixRlimitType::RlimitFsize => Resource::Fsize,
        PosixRlimitType::RlimitData => Resource::Data,
        PosixRlimitType::RlimitStack => Resource::Stack,
        PosixRlimitType::RlimitCore => Resource::Core,
        PosixRlimitType::RlimitRss => Resource::Rss,
        PosixRlimitType::RlimitNproc => Resource::Nproc,
        PosixRlimitType::RlimitNofile => Resource::Nofile,
        PosixRlimitType::RlimitMemlock => Resource::Memlock,
        PosixRlimitType::RlimitAs => Resource::As,
        PosixRlimitType::RlimitLocks => Resource::Locks,
        PosixRlimitType::RlimitSigpending => Resource::Sigpending,
        PosixRlimitType::RlimitMsgqueue => Resource::Msgqueue,
        PosixRlimitType::RlimitNice => Resource::Nice,
        PosixRlimitType::RlimitRtprio => Resource::Rtprio,
        PosixRlimitType::RlimitRttime => Resource::Rttime,
    })
}

fn resources(r: &LinuxResources, c: &mut ProcessConfig) -> Result<(), OciError> {
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit().filter(|l| *l >= 0) {
            c.limits.memory_max = Some(limit.unsigned_abs());
            if let Some(swap) = m.swap().filter(|s| *s >= 0) {
                // OCI's swap is memory + swap (runc's v2 conversion).
                if swap < limit {
                    return Err(unsupported(
                        "linux.resources.memory.swap",
                        "is memory + swap, so it cannot be below memory.limit",
                    ));
                }
                c.limits.memory_swap_max = Some(swap.unsigned_abs() - limit.unsigned_abs());
            }
        } else if m.swap().is_some_and(|s| s >= 0) {
            return Err(unsupported(
                "linux.resources.memory.swap",
                "a swap limit needs a memory limit",
            ));
        }
        if let Some(r) = m.reservation().filter(|r| *r >= 0) {
            // runc's cgroup v2 conversion: the reservation is memory.low.
            c.limits.memory_low = Some(r.unsigned_abs());
        }
        for (present, field) in [
            (m.kernel().is_some(), "linux.resources.memory.kernel"),
            (m.kernel_tcp().is_some(), "linux.resources.memory.kernelTCP"),
            (
                m.swappiness().is_some(),
                "linux.resources.memory.swappiness",
            ),
            (
                m.disable_oom_killer().unwrap_or(false),
                "linux.resources.memory.disableOOMKiller",
            ),
        ] {
            if present {
                return Err(unsupported(field, "not implemented on cgroup v2 by nebula"));
            }
        }
    }
    if let Some(cpu) = r.cpu() {
        if let Some(q) = cpu.quota().filter(|q| *q > 0) {
            let period = cpu.period().unwrap_or(100_000);
            c.limits.cpu_max = Some(CpuMax {
                quota: crate::cgroup::Limit::Value(q.unsigned_abs()),
                period,
            });
        }
        if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
            // runc's cgroup v2 conversion: shares 2..262144 onto weight 1..10000.
            let s = shares.clamp(2, 262_144);
            c.limits.cpu_weight = Some(1 + (s - 2) * 9999 / 262_142);
        }
        for (present, field) in [
            (
                cpu.realtime_runtime().is_some(),
                "linux.resources.cpu.realtimeRuntime",
            ),
            (
                cpu.realtime_period().is_some(),
                "linux.resources.cpu.realtimePeriod",
            ),
            (cpu.cpus().is_some(), "linux.resources.cpu.cpus"),
            (cpu.mems().is_some(), "linux.resources.cpu.mems"),
            (cpu.idle().is_some(), "linux.resources.cpu.idle"),
        ] {
            if present {
                return Err(unsupported(field, "not implemented by nebula"));
            }
        }
    }
    if let Some(p) = r.pids()
        && p.limit() > 0
    {
        c.limits.pids_max = Some(p.limit().unsigned_abs());
    }
    if r.block_io().is_some() {
        return Err(unsupported(
            "linux.resources.blockIO",
            "not mapped onto io.max yet",
        ));
    }
    for (present, field) in [
        (
            r.hugepage_limits().is_some(),
            "linux.resources.hugepageLimits",
        ),
        (r.network().is_some(), "linux.resources.network"),
        (r.rdma().is_some(), "linux.resources.rdma"),
    ] {
        if present {
            return Err(unsupported(field, "not implemented by nebula"));
        }
    }
    if let Some(u) = r.unified() {
        let sorted: BTreeMap<_, _> = u.iter().collect();
        for (k, v) in sorted {
            let bytes = || {
                v.trim().parse::<u64>().map_err(|_| {
                    unsupported(&format!("linux.resources.unified.{k}"), "expects a number")
                })
            };
            match k.as_str() {
                "memory.max" => c.limits.memory_max = Some(bytes()?),
                "memory.high" => c.limits.memory_high = Some(bytes()?),
                "memory.swap.max" => c.limits.memory_swap_max = Some(bytes()?),
                "pids.max" => c.limits.pids_max = Some(bytes()?),
                "cpu.max" => {
                    let bad = || {
                        unsupported(
                            "linux.resources.unified.cpu.max",
                            "expects \"QUOTA PERIOD\" or \"max PERIOD\"",
                        )
                    };
                    let mut it = v.split_whitespace();
                    let quota = match it.next().ok_or_else(bad)? {
                        "max" => crate::cgroup::Limit::Max,
                        q => crate::cgroup::Limit::Value(q.parse().map_err(|_| bad())?),
                    };
                    let period = match it.next() {
                        Some(p) => p.parse().map_err(|_| bad())?,
                        None => 100_000,
                    };
                    c.limits.cpu_max = Some(CpuMax { quota, period });
                }
                other => {
                    return Err(unsupported(
                        &format!("linux.resources.unified.{other}"),
                        "nebula sets memory.max, memory.high, memory.swap.max, pids.max and \
                         cpu.max",
                    ));
                }
            }
        }
    }
    if let Some(devices) = r.devices() {
        device_rules(devices, c)?;
    }
    Ok(())
}

/// Device cgroup rules, as a cgroup v2 device program ([`crate::cgroup::devices`]), with
/// the runtime spec's default devices allowed after the bundle's rules (runc does the same).
fn device_rules(
    rules: &[oci_spec::runtime::LinuxDeviceCgroup],
    c: &mut ProcessConfig,
) -> Result<(), OciError> {
    use crate::cgroup::devices::{ACC_MKNOD, ACC_READ, ACC_WRITE, DEV_BLOCK, DEV_CHAR, DeviceRule};
    let num = |v: Option<i64>, field: &str| -> Result<Option<u32>, OciError> {
        match v {
            None | Some(-1) => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| unsupported(field, "out of range")),
        }
    };
    let mut out = Vec::new();
    for r in rules {
        let kind = match r.typ() {
            None | Some(LinuxDeviceType::A) => None,
            Some(LinuxDeviceType::C | LinuxDeviceType::U) => Some(DEV_CHAR),
            Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
            Some(LinuxDeviceType::P) => {
                return Err(unsupported(
                    "linux.resources.devices[].type",
                    "\"p\" is not a device cgroup type (use a, b or c)",
                ));
            }
        };
        let mut access = 0;
        for ch in r.access().as_deref().unwrap_or("rwm").chars() {
            access |= match ch {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                other => {
                    return Err(unsupported(
                        "linux.resources.devices[].access",
                        &format!("\"{other}\" is not one of r, w, m"),
                    ));
                }
            };
        }
        out.push(DeviceRule {
            kind,
            major: num(r.major(), "linux.resources.devices[].major")?,
            minor: num(r.minor(), "linux.resources.devices[].minor")?,
            access,
            allow: r.allow(),
        });
    }
    let rwm = ACC_READ | ACC_WRITE | ACC_MKNOD;
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        out.push(DeviceRule {
            kind: Some(DEV_CHAR),
            major: Some(major),
            minor: Some(minor),
            access: rwm,
            allow: true,
        });
    }
    // /dev/pts/*.
    out.push(DeviceRule {
        kind: Some(DEV_CHAR),
        major: Some(136),
        minor: None,
        access: rwm,
        allow: true,
    });
    c.device_rules = Some(out);
    Ok(())
}

pub(super) fn annotations(spec: &Spec, c: &mut ProcessConfig) -> Result<(), OciError> {
    for (k, v) in spec.annotations().iter().flatten() {
        let Some(key) = k.strip_prefix(ANNOTATION_PREFIX) else {
            continue;
        };
        match key {
            "seccomp" => {
                c.seccomp = crate::seccomp::Profile::from_str(v).map_err(|_| {
                    unsupported(
                        &format!("annotations.{k}"),
                        "names one of default, strict, deny-network, none",
                    )
                })?;
            }
            other => {
                return Err(unsupported(
                    &format!("annotations.{ANNOTATION_PREFIX}{other}"),
                    "nebula knows org.nebula.seccomp",
                ));
            }
        }
    }
    Ok(())
}

/// The hooks of one kind, in order.
pub fn hooks_of(hooks: &Hooks, kind: HookKind) -> &[Hook] {
    #[allow(deprecated)]
    let list = match kind {
        HookKind::Prestart => hooks.prestart(),
        HookKind::CreateRuntime => hooks.create_runtime(),
        HookKind::CreateContainer => hooks.create_container(),
        HookKind::StartContainer => hooks.start_container(),
        HookKind::Poststart => hooks.poststart(),
        HookKind::Poststop => hooks.poststop(),
    };
    list.as_deref().unwrap_or_default()
}

/// The points of a container's life where hooks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    /// `prestart` (deprecated by the spec, still run): after the namespaces exist.
    Prestart,
    /// `createRuntime`: likewise, in the runtime's namespaces.
    CreateRuntime,
    /// `createContainer`: in the container's namespaces, before it starts.
    CreateContainer,
    /// `startContainer`: in the container's namespaces, at start.
    StartContainer,
    /// `poststart`: after the container started.
    Poststart,
    /// `poststop`: after the container was deleted.
    Poststop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let input = serde_json::json!({"a": 1, "b": {"c": 2, "d": null, "e": [{"f": 1, "g": 2}]}});
        let back = serde_json::json!({"a": 1, "b": {"c": 2, "e": [{"f": 1}]}});
        assert_eq!(unknown_fields(&input, &back), ["b.e[0].g"]);
        assert!(unknown_fields(&input, &input).is_empty());
    }
}
