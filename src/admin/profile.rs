//! [`RunProfile`]: the options of a process context as an administrator writes them, on the
//! command line (`nebula-ctl run --memory 64M ...`) or in a TOML profile (`memory = "64M"`),
//! with the same name for each, turned into a [`ProcessConfig`].
//!
//! A profile is flat TOML: one `key = value` per option, no tables. Parsing is strict: an
//! unknown key, a value of the wrong type or a value that does not parse is an error naming
//! the key, the value, why, and the line. The value parsers ([`parse_duration`],
//! [`parse_tmpfs`], [`parse_bind`], [`parse_env`], [`parse_io`], ...) are the same ones the
//! CLI's flags use, so a flag and its key accept exactly the same text.
//!
//! | key | value | effect |
//! |---|---|---|
//! | `name` | string | the context's name in the registry |
//! | `memory` | size (`"64M"`, `"1.5G"`, or bytes) | `memory.max` |
//! | `memory-fallback` | `"refuse"` / `"rlimit-as"` | without cgroup v2: refuse `memory` (the default), or limit each process's address space (`RLIMIT_AS`) instead |
//! | `memory-high` | size | `memory.high` |
//! | `swap` | size | `memory.swap.max` |
//! | `cpu` | `"50%"`, `0.5`, `2` | `cpu.max` |
//! | `pids` | integer | `pids.max` |
//! | `io` | array of `"DEV rbps=SIZE wbps=SIZE riops=N wiops=N"` | `io.max` (DEV: `MAJ:MIN` or a block device path) |
//! | `time` | duration (`"500ms"`, `"30s"`, `"2m"`) | wall-clock limit |
//! | `cpu-time` | duration | CPU-time limit |
//! | `net` | `"none"` / `"host"` | network namespace or the host's network |
//! | `seccomp` | `"default"`, `"strict"`, `"deny-network"`, `"none"` | seccomp profile |
//! | `landlock` | boolean | Landlock: writes only to the tmpfs mounts, writable binds and shell devices (default `false`) |
//! | `landlock-read` | array of absolute paths | with Landlock, reads and execution only beneath these (implies `landlock = true` unless it is `false`) |
//! | `ro-root` | boolean | read-only root (default `true`) |
//! | `tmpfs` | array of `"PATH[:SIZE]"` | private tmpfs mounts (a path already mounted is replaced) |
//! | `bind` | array of `"SRC:DST[:ro]"` | bind mounts (writable unless `:ro`) |
//! | `uid` | integer or `"UID[:GID]"` | the one host id root inside is mapped to (default: a range of the context's own; `0` is host root) |
//! | `user` | integer or `"UID[:GID]"` | the id inside the command runs as (default root, 0) |
//! | `hostname` | string | hostname inside |
//! | `env` | array of `"K=V"` | environment of the command |
//! | `cwd` | string | working directory |

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup::{CpuMax, IoDevice, IoMax, Limit, parse_cpu_share, parse_size};
use crate::seccomp::Profile as SeccompProfile;

use crate::isolation::process::{
    BindMount, DEFAULT_TMP_SIZE, MemoryFallback, Network, ProcessConfig, TmpfsMount,
};

/// Every key a profile may hold, in the order of the module's table.
pub const KEYS: [&str; 22] = [
    "name",
    "memory",
    "memory-fallback",
    "memory-high",
    "swap",
    "cpu",
    "pids",
    "io",
    "time",
    "cpu-time",
    "net",
    "seccomp",
    "landlock",
    "landlock-read",
    "ro-root",
    "tmpfs",
    "bind",
    "uid",
    "user",
    "hostname",
    "env",
    "cwd",
];

/// Why a profile (or one of its values) was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The profile file could not be read.
    #[error("cannot read profile {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("profile {}: line {line}: not valid TOML: {message}", .path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// The TOML parser's message.
        message: String,
    },
    /// A key nebula does not know.
    #[error(
        "profile {}: line {line}: unknown key `{key}`; Hint: the keys are {}",
        .path.display(), KEYS.join(", ")
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The line (1-based; 0 when not found).
        line: usize,
        /// The key.
        key: String,
    },
    /// A known key with a value that does not fit.
    #[error("profile {}: line {line}: key `{key}`: bad value {value}: {reason}", .path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The line (1-based; 0 when not found).
        line: usize,
        /// The key.
        key: &'static str,
        /// The value as written (TOML syntax).
        value: String,
        /// Why.
        reason: String,
    },
}

/// A value that does not parse: the reason, for a flag's or a key's error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

fn verr(s: impl Into<String>) -> ValueError {
    ValueError(s.into())
}

/// Parses a size (`64M`, `1.5G`, `4096`) into bytes; `max` is refused (leave the option
/// out for no limit).
///
/// # Errors
///
/// [`ValueError`] with the reason from [`parse_size`], or for `max`.
pub fn parse_bytes(s: &str) -> Result<u64, ValueError> {
    match parse_size(s) {
        Ok(Limit::Value(v)) => Ok(v),
        Ok(Limit::Max) => Err(verr("\"max\" is no limit: leave the option out instead")),
        Err(e) => Err(verr(e.to_string())),
    }
}

/// Parses a CPU share: `0.5` or `50%` (of one CPU), `2` (two CPUs).
///
/// # Errors
///
/// [`ValueError`] with the reason from [`parse_cpu_share`]; `max` is refused.
pub fn parse_cpu(s: &str) -> Result<CpuMax, ValueError> {
    let c = parse_cpu_share(s).map_err(|e| verr(e.to_string()))?;
    if c.quota == Limit::Max {
        return Err(verr("\"max\" is no limit: leave the option out instead"));
    }
    Ok(c)
}

/// Checks a context name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
///
/// # Errors
///
/// [`ValueError`] naming the rule.
pub fn parse_name(s: &str) -> Result<String, ValueError> {
    let ok = (1..=64).contains(&s.len())
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(verr(format!(
            "{s:?} is not a context name (1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -)"
        )))
    }
}

/// Parses a positive whole count (`pids`).
///
/// # Errors
///
/// [`ValueError`] when it is not a whole number above zero.
pub fn parse_count(s: &str) -> Result<u64, ValueError> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(verr(format!("{t:?} is not a whole number")));
    }
    match t.parse::<u64>() {
        Ok(0) => Err(verr("0 would refuse every process, the workload included")),
        Ok(n) => Ok(n),
        Err(_) => Err(verr("too large")),
    }
}

/// Parses a duration with a unit: `500ms`, `30s`, `1.5s`, `2m`, `1h`, `250us`.
///
/// # Errors
///
/// [`ValueError`] without a unit, with an unknown unit, for zero or a non-number.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let t = s.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(verr(format!("{t:?} does not start with a plain number")));
    }
    let scale: f64 = match unit.trim() {
        "" => return Err(verr(format!("{t:?} has no unit (use ms, s, m or h)"))),
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => return Err(verr(format!("unknown unit {u:?} (use us, ms, s, m or h)"))),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| verr(format!("{num:?} is not a number")))?;
    let secs = v * scale;
    if secs <= 0.0 {
        return Err(verr("a zero time limit would kill the context at once"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| verr("too large"))
}

/// Formats a duration the way [`parse_duration`] reads it (`500ms`, `30s`, `1.5s`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) && d.subsec_nanos() % 1_000_000 == 0 {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Parses `none` or `host`.
///
/// # Errors
///
/// [`ValueError`] for anything else.
pub fn parse_net(s: &str) -> Result<Network, ValueError> {
    match s.trim() {
        "none" => Ok(Network::None),
        "host" => Ok(Network::Host),
        o => Err(verr(format!("{o:?} is neither \"none\" nor \"host\""))),
    }
}

/// Parses a memory fallback: `refuse` (the default) or `rlimit-as`.
///
/// # Errors
///
/// [`ValueError`] naming the two.
pub fn parse_memory_fallback(s: &str) -> Result<MemoryFallback, ValueError> {
    match s.trim() {
        "refuse" => Ok(MemoryFallback::Refuse),
        "rlimit-as" => Ok(MemoryFallback::RlimitAs),
        o => Err(verr(format!(
            "{o:?} is neither \"refuse\" nor \"rlimit-as\""
        ))),
    }
}

/// Parses a seccomp profile name (`default`, `strict`, `deny-network`, `none`).
///
/// # Errors
///
/// [`ValueError`] naming the profiles.
pub fn parse_seccomp(s: &str) -> Result<SeccompProfile, ValueError> {
    s.trim().parse::<SeccompProfile>().map_err(|_| {
        let names: Vec<&str> = SeccompProfile::ALL.iter().map(|p| p.name()).collect();
        verr(format!(
            "{:?} is not a seccomp profile (one of {})",
            s.trim(),
            names.join(", ")
        ))
    })
}

fn absolute(what: &str, p: &str) -> Result<PathBuf, ValueError> {
    if !p.starts_with('/') {
        return Err(verr(format!("the {what} {p:?} is not an absolute path")));
    }
    Ok(PathBuf::from(p))
}

/// Parses a Landlock read allow-list path (`--landlock-read`): absolute. Whether it exists
/// is checked when the context is configured.
///
/// # Errors
///
/// [`ValueError`] for a relative path.
pub fn parse_landlock_path(s: &str) -> Result<PathBuf, ValueError> {
    absolute("Landlock read path", s)
}

/// Parses `PATH[:SIZE]` (size defaults to 64 MiB).
///
/// # Errors
///
/// [`ValueError`] for a relative path or a bad size.
pub fn parse_tmpfs(s: &str) -> Result<TmpfsMount, ValueError> {
    let (path, size) = match s.rsplit_once(':') {
        Some((p, sz)) => (p, parse_bytes(sz)?),
        None => (s, DEFAULT_TMP_SIZE),
    };
    Ok(TmpfsMount {
        target: absolute("tmpfs mount point", path)?,
        size,
    })
}

/// Parses `SRC:DST[:ro]` (writable unless `:ro`; `:rw` is accepted too).
///
/// # Errors
///
/// [`ValueError`] for a missing part, a relative path or an unknown mode.
pub fn parse_bind(s: &str) -> Result<BindMount, ValueError> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, writable) = match parts.as_slice() {
        [src, dst] => (*src, *dst, true),
        [src, dst, "ro"] => (*src, *dst, false),
        [src, dst, "rw"] => (*src, *dst, true),
        [_, _, m] => return Err(verr(format!("unknown mode {m:?} (use ro or rw)"))),
        _ => return Err(verr(format!("{s:?} is not SRC:DST[:ro]"))),
    };
    Ok(BindMount {
        source: absolute("bind source", src)?,
        target: absolute("bind target", dst)?,
        writable,
    })
}

/// Parses `K=V` (`K` non-empty, without `=`).
///
/// # Errors
///
/// [`ValueError`] without `=` or with an empty name.
pub fn parse_env(s: &str) -> Result<(String, String), ValueError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(verr(format!("{s:?} is not NAME=VALUE"))),
    }
}

/// Parses `UID[:GID]` (the gid defaults to the uid).
///
/// # Errors
///
/// [`ValueError`] for non-numbers.
pub fn parse_uid(s: &str) -> Result<(u32, u32), ValueError> {
    let num = |x: &str| {
        x.trim()
            .parse::<u32>()
            .map_err(|_| verr(format!("{x:?} is not a numeric id")))
    };
    match s.split_once(':') {
        Some((u, g)) => Ok((num(u)?, num(g)?)),
        None => num(s).map(|u| (u, u)),
    }
}

/// Parses `DEV rbps=SIZE wbps=SIZE riops=N wiops=N` (fields separated by spaces or commas;
/// `DEV` is `MAJ:MIN` or the path of a block device).
///
/// # Errors
///
/// [`ValueError`] for a bad device, an unknown field or a bad rate.
pub fn parse_io(s: &str) -> Result<IoMax, ValueError> {
    let mut fields = s.split([' ', ',']).filter(|f| !f.is_empty());
    let dev = fields
        .next()
        .ok_or_else(|| verr("empty: expected \"DEV rbps=SIZE ...\""))?;
    let device = if dev.starts_with('/') {
        let st = rustix::fs::stat(dev).map_err(|e| verr(format!("cannot stat {dev}: {e}")))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::BlockDevice {
            return Err(verr(format!("{dev} is not a block device")));
        }
        IoDevice::from_dev(st.st_rdev)
    } else {
        dev.parse::<IoDevice>()
            .map_err(|_| verr(format!("{dev:?} is neither MAJ:MIN nor a device path")))?
    };
    let mut m = IoMax::new(device);
    let mut any = false;
    for f in fields {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| verr(format!("{f:?} is not FIELD=VALUE")))?;
        let lim = match k {
            "rbps" | "wbps" => Limit::Value(parse_bytes(v)?),
            "riops" | "wiops" => Limit::Value(parse_count(v)?),
            _ => {
                return Err(verr(format!(
                    "unknown field {k:?} (use rbps, wbps, riops, wiops)"
                )));
            }
        };
        match k {
            "rbps" => m.rbps = Some(lim),
            "wbps" => m.wbps = Some(lim),
            "riops" => m.riops = Some(lim),
            _ => m.wiops = Some(lim),
        }
        any = true;
    }
    if !any {
        return Err(verr(format!(
            "{s:?} sets no rate (rbps, wbps, riops, wiops)"
        )));
    }
    Ok(m)
}

/// The options of one `nebula-ctl run`: every field is unset unless a profile key or a flag
/// set it; [`RunProfile::overlay`] puts flags over a profile; [`RunProfile::to_config`]
/// turns it into a [`ProcessConfig`] on top of the strict default.
///
/// One struct serves both doors: clap derives the flags from it (`nebula-ctl run` flattens
/// it), serde the profile's keys (kebab-case, each value read by the same parser as its
/// flag). `landlock` and `ro-root` are flags of their own on the command line
/// (`--landlock`/`--no-landlock`, `--ro-root`/`--rw-root`).
#[derive(Clone, Debug, Default, PartialEq, clap::Args, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RunProfile {
    /// The context's name in `nebula-ctl list` (unique among running contexts).
    #[arg(long, value_parser = parse_name)]
    #[serde(default, deserialize_with = "de::name")]
    pub name: Option<String>,
    /// Memory limit (memory.max), e.g. 64M, 1.5G; beyond it the context is OOM-killed.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    #[serde(default, deserialize_with = "de::size")]
    pub memory: Option<u64>,
    /// Without cgroup v2: refuse --memory (the default), or rlimit-as: limit each process's
    /// address space to it instead (RLIMIT_AS: reserved address space per process, not
    /// resident memory per context).
    #[arg(long, value_name = "refuse|rlimit-as", value_parser = parse_memory_fallback)]
    #[serde(default, deserialize_with = "de::memory_fallback")]
    pub memory_fallback: Option<MemoryFallback>,
    /// Memory throttling threshold (memory.high).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    #[serde(default, deserialize_with = "de::size")]
    pub memory_high: Option<u64>,
    /// Swap limit (memory.swap.max).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    #[serde(default, deserialize_with = "de::size")]
    pub swap: Option<u64>,
    /// CPU bandwidth (cpu.max): 0.5 or 50% of one CPU, 2 for two CPUs.
    #[arg(long, value_name = "CPUS", value_parser = parse_cpu)]
    #[serde(default, deserialize_with = "de::cpu")]
    pub cpu: Option<CpuMax>,
    /// Most processes and threads (pids.max).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    #[serde(default, deserialize_with = "de::pids")]
    pub pids: Option<u64>,
    /// I/O limit (io.max), "DEV rbps=SIZE,wbps=SIZE,riops=N,wiops=N"; DEV is MAJ:MIN or a
    /// device path. Repeatable.
    #[arg(long, value_name = "DEV RATES", value_parser = parse_io)]
    #[serde(default, deserialize_with = "de::io")]
    pub io: Vec<IoMax>,
    /// Wall-clock limit, e.g. 500ms, 30s, 2m; then the context is killed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub time: Option<Duration>,
    /// CPU-time limit of the whole context.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub cpu_time: Option<Duration>,
    /// Network: none (own namespace, only lo; the default) or host.
    #[arg(long, value_name = "none|host", value_parser = parse_net)]
    #[serde(default, deserialize_with = "de::net")]
    pub net: Option<Network>,
    /// Seccomp profile: default, strict, deny-network or none.
    #[arg(long, value_name = "PROFILE", value_parser = parse_seccomp)]
    #[serde(default, deserialize_with = "de::seccomp")]
    pub seccomp: Option<SeccompProfile>,
    /// Landlock under the read-only root (`landlock = true`; on the command line
    /// `--landlock`/`--no-landlock`).
    #[arg(skip)]
    #[serde(default, deserialize_with = "de::boolean")]
    pub landlock: Option<bool>,
    /// With Landlock, reads and execution only beneath PATH (and the writable places);
    /// implies --landlock. List the program's and its libraries' directories too (e.g.
    /// /usr). Repeatable.
    #[arg(long, value_name = "PATH", value_parser = parse_landlock_path)]
    #[serde(default, deserialize_with = "de::landlock_read")]
    pub landlock_read: Vec<PathBuf>,
    /// Read-only root (`ro-root = false` turns it off; on the command line `--rw-root`).
    #[arg(skip)]
    #[serde(default, deserialize_with = "de::boolean")]
    pub ro_root: Option<bool>,
    /// A private tmpfs at PATH (default size 64M; /tmp has one already). Repeatable.
    #[arg(long, value_name = "PATH[:SIZE]", value_parser = parse_tmpfs)]
    #[serde(default, deserialize_with = "de::tmpfs")]
    pub tmpfs: Vec<TmpfsMount>,
    /// Bind-mount host path SRC at DST (writable unless :ro). Repeatable.
    #[arg(long, value_name = "SRC:DST[:ro]", value_parser = parse_bind)]
    #[serde(default, deserialize_with = "de::bind")]
    pub bind: Vec<BindMount>,
    /// The one host uid (and gid) that root inside the context maps to. By default a root
    /// caller gives each context a range of 65,536 host ids of its own (nebula's pool in
    /// /etc/subuid); `--uid 0` makes the workload root of the host.
    #[arg(long, value_name = "UID[:GID]", value_parser = parse_uid)]
    #[serde(default, deserialize_with = "de::ids")]
    pub uid: Option<(u32, u32)>,
    /// The id inside the context that the command runs as (default 0, root of the context).
    #[arg(long, value_name = "UID[:GID]", value_parser = parse_uid)]
    #[serde(default, deserialize_with = "de::ids")]
    pub user: Option<(u32, u32)>,
    /// The hostname inside.
    #[arg(long)]
    #[serde(default, deserialize_with = "de::hostname")]
    pub hostname: Option<String>,
    /// An environment variable of the command (the environment is empty otherwise).
    /// Repeatable.
    #[arg(long, value_name = "K=V", value_parser = parse_env)]
    #[serde(default, deserialize_with = "de::env")]
    pub env: Vec<(String, String)>,
    /// Working directory inside (an absolute path).
    #[arg(long, value_name = "DIR", value_parser = parse_cwd)]
    #[serde(default, deserialize_with = "de::cwd")]
    pub cwd: Option<PathBuf>,
}

/// A working directory inside: an absolute path.
///
/// # Errors
///
/// [`ValueError`] for a relative path.
pub fn parse_cwd(s: &str) -> Result<PathBuf, ValueError> {
    absolute("cwd", s)
}

/// The profile's value readers: each takes the TOML value of one key and gives what the
/// flag's parser gives for the same text, or the reason it does not fit.
mod de {
    use std::path::PathBuf;
    use std::time::Duration;

    use serde::de::{Deserialize, Deserializer, Error as _};
    use toml::Value as V;

    use super::*;

    /// Reads the key's TOML value and converts it with `f`, the reason becoming serde's error.
    fn with<'de, D: Deserializer<'de>, T>(
        d: D,
        f: impl FnOnce(&V) -> Result<T, String>,
    ) -> Result<T, D::Error> {
        let v = V::deserialize(d)?;
        f(&v).map_err(D::Error::custom)
    }

    fn string(v: &V) -> Result<String, String> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("expected a string, found {}", v.type_str()))
    }

    fn strings<T>(v: &V, parse: fn(&str) -> Result<T, ValueError>) -> Result<Vec<T>, String> {
        let a = v
            .as_array()
            .ok_or_else(|| format!("expected an array of strings, found {}", v.type_str()))?;
        a.iter()
            .map(|x| parse(&string(x)?).map_err(|e| e.0))
            .collect()
    }

    fn parsed<T>(v: &V, parse: fn(&str) -> Result<T, ValueError>) -> Result<T, String> {
        parse(&string(v)?).map_err(|e| e.0)
    }

    pub(super) fn name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        with(d, |v| parsed(v, parse_name).map(Some))
    }

    pub(super) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        with(d, |v| match v {
            V::String(s) => parse_bytes(s).map(Some).map_err(|e| e.0),
            V::Integer(i) => u64::try_from(*i)
                .ok()
                .filter(|&n| n > 0)
                .map(Some)
                .ok_or_else(|| "must be positive".into()),
            o => Err(format!(
                "expected a size (\"64M\" or bytes), found {}",
                o.type_str()
            )),
        })
    }

    pub(super) fn memory_fallback<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<MemoryFallback>, D::Error> {
        with(d, |v| parsed(v, parse_memory_fallback).map(Some))
    }

    pub(super) fn cpu<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CpuMax>, D::Error> {
        with(d, |v| {
            let text = match v {
                V::String(s) => s.clone(),
                V::Integer(i) => i.to_string(),
                V::Float(f) => f.to_string(),
                o => {
                    return Err(format!(
                        "expected \"50%\" or a number, found {}",
                        o.type_str()
                    ));
                }
            };
            parse_cpu(&text).map(Some).map_err(|e| e.0)
        })
    }

    pub(super) fn pids<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        with(d, |v| match v {
            V::Integer(i) => parse_count(&i.to_string()).map(Some).map_err(|e| e.0),
            o => Err(format!("expected an integer, found {}", o.type_str())),
        })
    }

    pub(super) fn io<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IoMax>, D::Error> {
        with(d, |v| strings(v, parse_io))
    }

    pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        with(d, |v| match v {
            V::String(s) => parse_duration(s).map(Some).map_err(|e| e.0),
            o => Err(format!(
                "expected a duration string with a unit (\"30s\"), found {}",
                o.type_str()
            )),
        })
    }

    pub(super) fn net<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Network>, D::Error> {
        with(d, |v| parsed(v, parse_net).map(Some))
    }

    pub(super) fn seccomp<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SeccompProfile>, D::Error> {
        with(d, |v| parsed(v, parse_seccomp).map(Some))
    }

    pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        with(d, |v| {
            v.as_bool()
                .map(Some)
                .ok_or_else(|| format!("expected true or false, found {}", v.type_str()))
        })
    }

    pub(super) fn landlock_read<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        with(d, |v| strings(v, parse_landlock_path))
    }

    pub(super) fn tmpfs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TmpfsMount>, D::Error> {
        with(d, |v| strings(v, parse_tmpfs))
    }

    pub(super) fn bind<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<BindMount>, D::Error> {
        with(d, |v| strings(v, parse_bind))
    }

    pub(super) fn ids<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(u32, u32)>, D::Error> {
        with(d, |v| match v {
            V::Integer(i) => u32::try_from(*i)
                .map(|u| Some((u, u)))
                .map_err(|_| "not a valid id".to_owned()),
            V::String(s) => parse_uid(s).map(Some).map_err(|e| e.0),
            o => Err(format!("expected an id, found {}", o.type_str())),
        })
    }

    pub(super) fn hostname<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        with(d, |v| string(v).map(Some))
    }

    pub(super) fn env<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        with(d, |v| strings(v, parse_env))
    }

    pub(super) fn cwd<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        with(d, |v| parsed(v, parse_cwd).map(Some))
    }
}

/// A TOML value as written (the crate's `display` feature is off).
fn show(v: &toml::Value) -> String {
    use toml::Value as V;
    match v {
        V::String(s) => format!("{s:?}"),
        V::Integer(i) => i.to_string(),
        V::Float(f) => f.to_string(),
        V::Boolean(b) => b.to_string(),
        V::Datetime(d) => d.to_string(),
        V::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(", ")),
        V::Table(t) => format!(
            "{{{}}}",
            t.iter()
                .map(|(k, v)| format!("{k} = {}", show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")));
            rest.is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

impl RunProfile {
    /// Reads and parses a profile file.
    ///
    /// # Errors
    ///
    /// [`ProfileError::Read`], or as [`RunProfile::parse`].
    pub fn load(path: &Path) -> Result<RunProfile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_owned(),
            source,
        })?;
        RunProfile::parse(&text, path)
    }

    /// Parses profile text (`path` only names it in errors).
    ///
    /// # Errors
    ///
    /// [`ProfileError::Syntax`] for invalid TOML, [`ProfileError::UnknownKey`],
    /// [`ProfileError::BadValue`] for a value of the wrong type, that does not parse, or a
    /// table.
    pub fn parse(text: &str, path: &Path) -> Result<RunProfile, ProfileError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            ProfileError::Syntax {
                path: path.to_owned(),
                line,
                message: e.message().to_owned(),
            }
        })?;
        // The whole table at once (each key appears once, so nothing is merged); when it
        // does not fit, key by key, so that the error names its key, value and line.
        for key in table.keys() {
            if !KEYS.contains(&key.as_str()) {
                return Err(ProfileError::UnknownKey {
                    path: path.to_owned(),
                    line: line_of(text, key),
                    key: key.clone(),
                });
            }
        }
        let whole = match <RunProfile as serde::Deserialize>::deserialize(toml::Value::Table(
            table.clone(),
        )) {
            Ok(p) => return Ok(p),
            Err(e) => e,
        };
        for (key, value) in &table {
            let one = toml::Table::from_iter([(key.clone(), value.clone())]);
            if let Err(e) = <RunProfile as serde::Deserialize>::deserialize(toml::Value::Table(one))
            {
                let k = KEYS
                    .iter()
                    .copied()
                    .find(|k| *k == key.as_str())
                    .expect("every key was checked against KEYS");
                return Err(ProfileError::BadValue {
                    path: path.to_owned(),
                    line: line_of(text, k),
                    key: k,
                    value: show(value),
                    reason: e.message().to_owned(),
                });
            }
        }
        Err(ProfileError::Syntax {
            path: path.to_owned(),
            line: 0,
            message: whole.message().to_owned(),
        })
    }

    /// Each key of [`KEYS`] and whether this profile sets it.
    pub fn keys(&self) -> [(&'static str, bool); KEYS.len()] {
        [
            ("name", self.name.is_some()),
            ("memory", self.memory.is_some()),
            ("memory-fallback", self.memory_fallback.is_some()),
            ("memory-high", self.memory_high.is_some()),
            ("swap", self.swap.is_some()),
            ("cpu", self.cpu.is_some()),
            ("pids", self.pids.is_some()),
            ("io", !self.io.is_empty()),
            ("time", self.time.is_some()),
            ("cpu-time", self.cpu_time.is_some()),
            ("net", self.net.is_some()),
            ("seccomp", self.seccomp.is_some()),
            ("landlock", self.landlock.is_some()),
            ("landlock-read", !self.landlock_read.is_empty()),
            ("ro-root", self.ro_root.is_some()),
            ("tmpfs", !self.tmpfs.is_empty()),
            ("bind", !self.bind.is_empty()),
            ("uid", self.uid.is_some()),
            ("user", self.user.is_some()),
            ("hostname", self.hostname.is_some()),
            ("env", !self.env.is_empty()),
            ("cwd", self.cwd.is_some()),
        ]
    }

    /// `top` over `self`: each option `top` sets wins; lists are appended (`env`: a name set
    /// in both takes `top`'s value; `tmpfs`: `top`'s mount replaces one at the same path).
    pub fn overlay(mut self, top: RunProfile) -> RunProfile {
        macro_rules! over {
            ($($f:ident),*) => { $( if top.$f.is_some() { self.$f = top.$f; } )* };
        }
        over!(
            name,
            memory,
            memory_fallback,
            memory_high,
            swap,
            cpu,
            pids,
            time,
            cpu_time,
            net,
            seccomp,
            landlock,
            ro_root,
            uid,
            user,
            hostname,
            cwd
        );
        self.io.extend(top.io);
        self.landlock_read.extend(top.landlock_read);
        self.bind.extend(top.bind);
        for t in top.tmpfs {
            self.tmpfs.retain(|x| x.target != t.target);
            self.tmpfs.push(t);
        }
        for (k, v) in top.env {
            self.env.retain(|(x, _)| *x != k);
            self.env.push((k, v));
        }
        self
    }

    /// The [`ProcessConfig`]: the strict default ([`ProcessConfig::new`]) with every option
    /// set here applied. Limits that need cgroup v2 are not checked here but by
    /// [`ProcessIsolation::new`](crate::isolation::process::ProcessIsolation::new), which refuses what the host cannot enforce.
    pub fn to_config(&self) -> ProcessConfig {
        let mut c = ProcessConfig::new();
        let l = &mut c.limits;
        l.memory_max = self.memory;
        l.memory_high = self.memory_high;
        if let Some(f) = self.memory_fallback {
            l.memory_fallback = f;
        }
        l.memory_swap_max = self.swap;
        l.cpu_max = self.cpu;
        l.pids_max = self.pids;
        l.io_max = self.io.clone();
        l.wall_time = self.time;
        l.cpu_time = self.cpu_time;
        if let Some(n) = self.net {
            c = c.network(n);
        }
        if let Some(s) = self.seccomp {
            c.seccomp = s;
        }
        if let Some(ro) = self.ro_root {
            c.read_only_root = ro;
        }
        if self.landlock.unwrap_or(!self.landlock_read.is_empty()) {
            c.landlock = Some(crate::landlock::Landlock {
                read_allow: self.landlock_read.clone(),
            });
        }
        for t in &self.tmpfs {
            c.tmpfs.retain(|x| x.target != t.target);
            c.tmpfs.push(t.clone());
        }
        c.binds = self.bind.clone();
        if let Some((uid, gid)) = self.uid {
            c = c.root_maps_to(uid, gid);
        }
        c.user = self.user;
        c.hostname = self.hostname.clone();
        c.env = self
            .env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        if let Some(d) = &self.cwd {
            c.cwd = d.clone();
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<RunProfile, ProfileError> {
        RunProfile::parse(t, Path::new("p.toml"))
    }

    #[test]
    fn the_key_list_is_the_struct() {
        let names: Vec<&str> = RunProfile::default().keys().iter().map(|k| k.0).collect();
        assert_eq!(names, KEYS);
        assert!(RunProfile::default().keys().iter().all(|k| !k.1));
    }

    #[test]
    fn every_key_parses() {
        let p = parse(
            r#"
name = "web"
memory = "64M"
memory-fallback = "rlimit-as"
memory-high = 1048576
swap = "0.5G"
cpu = "50%"
pids = 32
io = ["8:0 rbps=1M,wiops=100"]
time = "30s"
cpu-time = "500ms"
net = "host"
seccomp = "deny-network"
ro-root = false
tmpfs = ["/tmp:16M", "/run"]
bind = ["/usr:/usr:ro", "/srv:/data"]
uid = "1000:1001"
hostname = "box"
env = ["A=1", "B=x=y"]
cwd = "/tmp"
"#,
        )
        .unwrap();
        assert_eq!(p.name.as_deref(), Some("web"));
        assert_eq!(p.memory, Some(64 << 20));
        assert_eq!(p.memory_fallback, Some(MemoryFallback::RlimitAs));
        assert_eq!(p.memory_high, Some(1 << 20));
        assert_eq!(p.swap, Some(512 << 20));
        assert_eq!(p.cpu.unwrap().fraction(), Some(0.5));
        assert_eq!(p.pids, Some(32));
        assert_eq!(p.io[0].to_string(), "8:0 rbps=1048576 wiops=100");
        assert_eq!(p.time, Some(Duration::from_secs(30)));
        assert_eq!(p.cpu_time, Some(Duration::from_millis(500)));
        assert_eq!(p.net, Some(Network::Host));
        assert_eq!(p.seccomp, Some(SeccompProfile::DenyNetwork));
        assert_eq!(p.ro_root, Some(false));
        assert_eq!(p.tmpfs[0].size, 16 << 20);
        assert_eq!(p.tmpfs[1].size, DEFAULT_TMP_SIZE);
        assert!(!p.bind[0].writable && p.bind[1].writable);
        assert_eq!(p.uid, Some((1000, 1001)));
        assert_eq!(p.env[1], ("B".into(), "x=y".into()));
        let c = p.to_config();
        assert_eq!(c.limits.memory_fallback, MemoryFallback::RlimitAs);
        assert!(!c.read_only_root);
        assert_eq!(c.tmpfs.len(), 2);
        assert_eq!(c.tmpfs[0].size, 16 << 20);
    }

    #[test]
    fn errors_name_key_value_line_and_reason() {
        let e = parse("pids = 3\nmemroy = \"1G\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("unknown key `memroy`"),
            "{e}"
        );
        let e = parse("\n\nmemory = \"64Q\"").unwrap_err().to_string();
        assert!(
            e.contains("line 3")
                && e.contains("`memory`")
                && e.contains("\"64Q\"")
                && e.contains("unit"),
            "{e}"
        );
        let e = parse("time = 30").unwrap_err().to_string();
        assert!(
            e.contains("`time`") && e.contains("30") && e.contains("duration"),
            "{e}"
        );
        let e = parse("ro-root = \"yes\"").unwrap_err().to_string();
        assert!(e.contains("true or false"), "{e}");
        let e = parse("[limits]\nmemory = \"1G\"").unwrap_err().to_string();
        assert!(e.contains("unknown key `limits`"), "{e}");
        let e = parse("memory = ").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn landlock_keys() {
        let p = parse("landlock = true\nlandlock-read = [\"/usr\", \"/etc\"]").unwrap();
        assert_eq!(p.landlock, Some(true));
        let c = p.to_config();
        let l = c.landlock.expect("landlock on");
        assert_eq!(l.read_allow, [PathBuf::from("/usr"), PathBuf::from("/etc")]);
        // The read list alone turns Landlock on; `landlock = false` wins over it.
        assert!(
            parse("landlock-read = [\"/usr\"]")
                .unwrap()
                .to_config()
                .landlock
                .is_some()
        );
        let off = parse("landlock = false\nlandlock-read = [\"/usr\"]").unwrap();
        assert!(off.to_config().landlock.is_none());
        assert!(parse("").unwrap().to_config().landlock.is_none());
        let e = parse("landlock-read = [\"usr\"]").unwrap_err().to_string();
        assert!(
            e.contains("`landlock-read`") && e.contains("absolute"),
            "{e}"
        );
        let e = parse("landlock = 1").unwrap_err().to_string();
        assert!(e.contains("true or false"), "{e}");
    }

    #[test]
    fn flags_override_the_profile() {
        let base = parse("memory = \"1G\"\nenv = [\"A=1\", \"B=2\"]\ntime = \"5s\"").unwrap();
        let flags = RunProfile {
            memory: Some(64 << 20),
            env: vec![("A".into(), "9".into())],
            ..Default::default()
        };
        let p = base.overlay(flags);
        assert_eq!(p.memory, Some(64 << 20));
        assert_eq!(p.time, Some(Duration::from_secs(5)));
        assert_eq!(
            p.env,
            vec![("B".into(), "2".into()), ("A".into(), "9".into())]
        );
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert!(parse_bind("/a").is_err());
        assert!(parse_bind("a:/b").is_err());
        assert!(parse_bind("/a:/b:rx").is_err());
        assert!(parse_tmpfs("tmp").is_err());
        assert!(parse_env("=1").is_err());
        assert!(parse_bytes("max").is_err());
        assert!(parse_cpu("0").is_err());
        assert!(parse_count("0").is_err());
        assert!(parse_io("8:0").is_err());
        assert!(parse_io("8:0 foo=1").is_err());
    }
}
