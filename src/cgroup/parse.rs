//! Pure parsers and formatters for cgroup v2 interface files and for the limits people type.
//!
//! Nothing here touches the file system: every function takes the text of a file (or a
//! command-line value) and returns a typed value, so all of it is unit-tested on any host.
//!
//! The kernel's file formats (Documentation/admin-guide/cgroup-v2.rst, "Interface Files"):
//!
//! | Format | Example file | Shape |
//! |---|---|---|
//! | single value | `memory.max`, `pids.max` | `max` or a number ([`Limit`]) |
//! | flat keyed | `memory.events`, `memory.stat`, `cpu.stat`, `cgroup.events` | `key value` per line |
//! | nested keyed | `io.stat`, `io.max`, `memory.pressure` | `key sub=value sub=value ...` per line |
//! | two values | `cpu.max` | `$QUOTA $PERIOD` ([`CpuMax`]) |

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// An error from parsing cgroup file contents or a limit given by a user.
///
/// Every variant carries the offending text, so the message names the value that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A value that should be a number or `max` is neither.
    #[error("invalid limit {value:?}: {reason} (expected a whole number or \"max\")")]
    Limit {
        /// The text that was refused.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A size such as `64M` could not be read.
    #[error("invalid size {value:?}: {reason} (expected e.g. 4096, 512k, 64M, 1.5G or max)")]
    Size {
        /// The text that was refused.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A CPU share such as `0.5` or `50%` could not be read.
    #[error("invalid CPU share {value:?}: {reason} (expected e.g. 0.5, 50%, 2 or max)")]
    CpuShare {
        /// The text that was refused.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// `cpu.max` contents or a quota/period pair is malformed or out of the kernel's range.
    #[error("invalid cpu.max {value:?}: {reason}")]
    CpuMax {
        /// The text that was refused.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A block device number is not `MAJOR:MINOR`.
    #[error("invalid device {value:?}: expected MAJOR:MINOR such as 8:0")]
    Device {
        /// The text that was refused.
        value: String,
    },
    /// A line of a keyed file does not have the expected shape.
    #[error("malformed line {line:?}: {reason}")]
    Line {
        /// The line that was refused.
        line: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A key has a value of the wrong kind.
    #[error("invalid value {value:?} for key {key:?}: {reason}")]
    Value {
        /// The key whose value was refused.
        key: String,
        /// The text that was refused.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A key that the file always has on supported kernels is missing.
    #[error("missing key {key:?}")]
    MissingKey {
        /// The key that was expected.
        key: &'static str,
    },
}

// ---------------------------------------------------------------------------------------------
// Single values

/// A limit as cgroup files spell it: a number, or `max` for "no limit".
///
/// Used for byte limits (`memory.max`, `memory.high`, `memory.swap.max`), counts (`pids.max`)
/// and `io.max` rates. `Display` writes the form the kernel accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    /// A finite limit.
    Value(u64),
    /// No limit (`max`).
    Max,
}

impl Limit {
    /// The finite value, or `None` for [`Limit::Max`].
    pub const fn value(self) -> Option<u64> {
        match self {
            Limit::Value(v) => Some(v),
            Limit::Max => None,
        }
    }
}

impl From<u64> for Limit {
    fn from(v: u64) -> Self {
        Limit::Value(v)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Value(v) => write!(f, "{v}"),
            Limit::Max => f.write_str("max"),
        }
    }
}

impl FromStr for Limit {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        parse_limit(s)
    }
}

/// Parses a single-value file (`memory.max`, `pids.max`, ...): `max` or a whole number.
///
/// Surrounding whitespace (the kernel's trailing newline) is ignored.
///
/// # Errors
///
/// [`ParseError::Limit`] naming the value when it is neither.
pub fn parse_limit(text: &str) -> Result<Limit, ParseError> {
    let s = text.trim();
    let err = |reason| ParseError::Limit {
        value: s.to_owned(),
        reason,
    };
    if s == "max" {
        return Ok(Limit::Max);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("not a whole number"));
    }
    s.parse::<u64>()
        .map(Limit::Value)
        .map_err(|_| err("too large for 64 bits"))
}

/// Parses a single number such as `memory.current` or `pids.current`.
///
/// # Errors
///
/// [`ParseError::Limit`] naming the value when it is not a whole number (`max` included).
pub fn parse_u64(text: &str) -> Result<u64, ParseError> {
    match parse_limit(text)? {
        Limit::Value(v) => Ok(v),
        Limit::Max => Err(ParseError::Limit {
            value: text.trim().to_owned(),
            reason: "expected a number here, not max",
        }),
    }
}

/// Parses a human size into bytes: `4096`, `512k`, `64M`, `1.5G`, `2T`, `64MiB`, `max`.
///
/// Units are binary (k = 1024) and case-insensitive, optionally followed by `B` or `iB`.
/// A fractional value is allowed with a unit and rounded down to a whole byte (the kernel
/// rounds memory limits to pages anyway); a plain byte count must be whole.
///
/// # Errors
///
/// [`ParseError::Size`] naming the value: empty, negative, unknown unit, fraction of a byte,
/// more than 64 bits.
pub fn parse_size(text: &str) -> Result<Limit, ParseError> {
    let s = text.trim();
    let err = |reason| ParseError::Size {
        value: s.to_owned(),
        reason,
    };
    if s.eq_ignore_ascii_case("max") {
        return Ok(Limit::Max);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.starts_with('-') {
        return Err(err("negative"));
    }
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(num_end);
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() {
        return Err(err("no digits before the unit"));
    }
    if frac.contains('.') {
        return Err(err("more than one decimal point"));
    }
    if num.ends_with('.') {
        return Err(err("no digits after the decimal point"));
    }
    if frac.len() > 9 {
        return Err(err("more than 9 decimals"));
    }
    let unit_lc = unit.trim_start().to_ascii_lowercase();
    let base = unit_lc
        .strip_suffix("ib")
        .or_else(|| unit_lc.strip_suffix('b'))
        .unwrap_or(&unit_lc);
    let shift = match base {
        "" if unit_lc != "ib" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(err("unknown unit (use k, M, G, T or P)")),
    };
    let int: u128 = int.parse().map_err(|_| err("too large"))?;
    let frac_num: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| err("bad decimals"))?
    };
    if shift == 0 && frac_num != 0 {
        return Err(err("a byte count must be whole"));
    }
    let mult: u128 = 1 << shift;
    let digits = u32::try_from(frac.len()).map_err(|_| err("more than 9 decimals"))?;
    let scale = 10u128.pow(digits);
    let bytes = int
        .checked_mul(mult)
        .and_then(|b| b.checked_add(frac_num * mult / scale))
        .ok_or_else(|| err("too large"))?;
    u64::try_from(bytes)
        .map(Limit::Value)
        .map_err(|_| err("more than 2^64 bytes"))
}

/// Formats a byte count the short way people write it (`32M`, `1536K`, `4097`), exact: the
/// largest binary unit that divides it.
pub fn format_size(bytes: Limit) -> String {
    let Limit::Value(b) = bytes else {
        return "max".to_owned();
    };
    for (shift, unit) in [(50, 'P'), (40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')] {
        if b != 0 && b.trailing_zeros() >= shift {
            return format!("{}{unit}", b >> shift);
        }
    }
    b.to_string()
}

// ---------------------------------------------------------------------------------------------
// cpu.max

/// The default `cpu.max` period, 100 ms, in microseconds (the kernel's default too).
pub const CPU_MAX_DEFAULT_PERIOD_USEC: u64 = 100_000;
/// The smallest quota and period the kernel accepts, 1 ms, in microseconds.
pub const CPU_MAX_MIN_USEC: u64 = 1_000;
/// The largest period the kernel accepts, 1 s, in microseconds.
pub const CPU_MAX_MAX_PERIOD_USEC: u64 = 1_000_000;

/// `cpu.max`: a CPU bandwidth quota per period, both in microseconds.
///
/// A quota of `q` per period `p` allows `q / p` CPUs' worth of run time; `0.5` is half a CPU,
/// `2.0` two full CPUs. `Display` writes `"$QUOTA $PERIOD"` as the kernel expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CpuMax {
    /// Run time allowed per period in microseconds, or `max` for no limit.
    pub quota: Limit,
    /// The period in microseconds (1 000 to 1 000 000).
    pub period: u64,
}

impl CpuMax {
    /// No limit, with the default period.
    pub const UNLIMITED: CpuMax = CpuMax {
        quota: Limit::Max,
        period: CPU_MAX_DEFAULT_PERIOD_USEC,
    };

    /// A quota of `cpus` CPUs per default period, e.g. `0.2` gives `20000 100000`.
    ///
    /// # Errors
    ///
    /// [`ParseError::CpuShare`] when `cpus` is not finite and positive or the quota would be
    /// below the kernel's 1 ms minimum.
    pub fn from_fraction(cpus: f64) -> Result<CpuMax, ParseError> {
        Self::from_fraction_with_period(cpus, CPU_MAX_DEFAULT_PERIOD_USEC)
    }

    /// Like [`CpuMax::from_fraction`] with an explicit period in microseconds.
    ///
    /// # Errors
    ///
    /// As [`CpuMax::from_fraction`]; [`ParseError::CpuMax`] for a period outside 1 ms to 1 s.
    pub fn from_fraction_with_period(cpus: f64, period: u64) -> Result<CpuMax, ParseError> {
        let value = cpus.to_string();
        if !(CPU_MAX_MIN_USEC..=CPU_MAX_MAX_PERIOD_USEC).contains(&period) {
            return Err(ParseError::CpuMax {
                value: format!("{value} per {period} us"),
                reason: "the period must be 1000 to 1000000 us",
            });
        }
        let err = |reason| ParseError::CpuShare {
            value: value.clone(),
            reason,
        };
        if !cpus.is_finite() || cpus <= 0.0 {
            return Err(err("must be a positive number of CPUs"));
        }
        let quota = (cpus * period as f64).round();
        if quota > (u64::MAX / 2) as f64 {
            return Err(err("too large"));
        }
        // Whole (rounded), positive and below 2^63 (both checked above): the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let quota = quota as u64;
        if quota < CPU_MAX_MIN_USEC {
            return Err(err("below the kernel's minimum quota of 1 ms per period"));
        }
        Ok(CpuMax {
            quota: Limit::Value(quota),
            period,
        })
    }

    /// The share of one CPU this allows (`quota / period`), or `None` when unlimited.
    pub fn fraction(&self) -> Option<f64> {
        self.quota.value().map(|q| q as f64 / self.period as f64)
    }
}

impl fmt::Display for CpuMax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.quota, self.period)
    }
}

/// Parses a CPU share as people write it: `0.5` (CPUs), `50%` (of one CPU), `2`, or `max`.
///
/// # Errors
///
/// [`ParseError::CpuShare`] naming the value: empty, not a plain decimal (no signs, exponents,
/// `inf` or `nan`), zero, or below the kernel's 1 ms quota.
pub fn parse_cpu_share(text: &str) -> Result<CpuMax, ParseError> {
    let s = text.trim();
    let err = |reason| ParseError::CpuShare {
        value: s.to_owned(),
        reason,
    };
    if s.eq_ignore_ascii_case("max") {
        return Ok(CpuMax::UNLIMITED);
    }
    let (num, percent) = match s.strip_suffix('%') {
        Some(n) => (n.trim_end(), true),
        None => (s, false),
    };
    if num.is_empty() {
        return Err(err("empty"));
    }
    if !num.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || num.bytes().filter(|&b| b == b'.').count() > 1
        || num.starts_with('.')
        || num.ends_with('.')
    {
        return Err(err("not a plain decimal number"));
    }
    let v: f64 = num.parse().map_err(|_| err("not a number"))?;
    let cpus = if percent { v / 100.0 } else { v };
    if cpus == 0.0 {
        return Err(err("zero CPU would stop the context; use a positive share"));
    }
    CpuMax::from_fraction(cpus).map_err(|e| match e {
        ParseError::CpuShare { reason, .. } => err(reason),
        other => other,
    })
}

/// Parses the contents of `cpu.max` (`max 100000`, `20000 100000`).
///
/// # Errors
///
/// [`ParseError::CpuMax`] naming the text when it is not two fields of the right kind.
pub fn parse_cpu_max(text: &str) -> Result<CpuMax, ParseError> {
    let s = text.trim();
    let err = |reason| ParseError::CpuMax {
        value: s.to_owned(),
        reason,
    };
    let mut it = s.split_whitespace();
    let (Some(q), Some(p), None) = (it.next(), it.next(), it.next()) else {
        return Err(err("expected \"$QUOTA $PERIOD\""));
    };
    let quota = parse_limit(q).map_err(|_| err("the quota is neither a number nor max"))?;
    let period = p
        .parse::<u64>()
        .map_err(|_| err("the period is not a number"))?;
    Ok(CpuMax { quota, period })
}

// ---------------------------------------------------------------------------------------------
// Keyed files

/// Parses a flat-keyed file (`memory.events`, `memory.stat`, `cpu.stat`, `pids.events`):
/// one `key value` pair per line, values whole numbers.
///
/// # Errors
///
/// [`ParseError::Line`] for a line that is not two fields; [`ParseError::Value`] naming the
/// key and value when the value is not a whole number.
pub fn parse_flat_keyed(text: &str) -> Result<BTreeMap<String, u64>, ParseError> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) else {
            return Err(ParseError::Line {
                line: line.to_owned(),
                reason: "expected \"key value\"",
            });
        };
        let n = v.parse::<u64>().map_err(|_| ParseError::Value {
            key: k.to_owned(),
            value: v.to_owned(),
            reason: "not a whole number",
        })?;
        map.insert(k.to_owned(), n);
    }
    Ok(map)
}

/// Parses a nested-keyed file (`io.stat`, `io.max`, `*.pressure`): per line a key, then
/// `name=value` pairs. Values stay text, since some files use `max` or decimals.
///
/// # Errors
///
/// [`ParseError::Line`] for a pair without `=`, an empty name, or a key seen twice.
pub fn parse_nested_keyed(
    text: &str,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, ParseError> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(key) = it.next() else { continue };
        let mut fields = BTreeMap::new();
        for pair in it {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(ParseError::Line {
                    line: line.to_owned(),
                    reason: "expected name=value pairs after the key",
                });
            };
            if name.is_empty() {
                return Err(ParseError::Line {
                    line: line.to_owned(),
                    reason: "empty name before '='",
                });
            }
            fields.insert(name.to_owned(), value.to_owned());
        }
        if map.insert(key.to_owned(), fields).is_some() {
            return Err(ParseError::Line {
                line: line.to_owned(),
                reason: "key appears twice",
            });
        }
    }
    Ok(map)
}

fn required(map: &BTreeMap<String, u64>, key: &'static str) -> Result<u64, ParseError> {
    map.get(key).copied().ok_or(ParseError::MissingKey { key })
}

/// `memory.events`: how often the memory controller hit each boundary (cumulative counters).
///
/// The counters cover the whole subtree (`memory.events.local` would be the cgroup alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryEvents {
    /// Reclaimed despite being under `memory.low`.
    pub low: u64,
    /// Usage went over `memory.high` and the cgroup was throttled.
    pub high: u64,
    /// Usage was about to go over `memory.max`.
    pub max: u64,
    /// The cgroup reached its limit and allocations were about to fail (the OOM path ran).
    pub oom: u64,
    /// Processes killed by the OOM killer in this subtree: tells an OOM kill from any other
    /// `SIGKILL`.
    pub oom_kill: u64,
    /// Times the whole cgroup was killed together (`memory.oom.group`; Linux 5.17+, else 0).
    pub oom_group_kill: u64,
}

impl MemoryEvents {
    /// Parses the contents of `memory.events`.
    ///
    /// # Errors
    ///
    /// As [`parse_flat_keyed`]; [`ParseError::MissingKey`] when one of `low high max oom
    /// oom_kill` is absent.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let m = parse_flat_keyed(text)?;
        Ok(MemoryEvents {
            low: required(&m, "low")?,
            high: required(&m, "high")?,
            max: required(&m, "max")?,
            oom: required(&m, "oom")?,
            oom_kill: required(&m, "oom_kill")?,
            oom_group_kill: m.get("oom_group_kill").copied().unwrap_or(0),
        })
    }
}

/// `pids.events`: how often a fork or clone failed at `pids.max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidsEvents {
    /// Forks refused because the subtree was at `pids.max`.
    pub max: u64,
}

impl PidsEvents {
    /// Parses the contents of `pids.events`.
    ///
    /// # Errors
    ///
    /// As [`parse_flat_keyed`]; [`ParseError::MissingKey`] without a `max` line.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let m = parse_flat_keyed(text)?;
        Ok(PidsEvents {
            max: required(&m, "max")?,
        })
    }
}

/// `cpu.stat`: CPU time used and, with the cpu controller enabled, bandwidth throttling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// Total CPU time in microseconds.
    pub usage_usec: u64,
    /// User-mode CPU time in microseconds.
    pub user_usec: u64,
    /// Kernel-mode CPU time in microseconds.
    pub system_usec: u64,
    /// Enforcement periods that elapsed with runnable tasks (cpu controller only).
    pub nr_periods: Option<u64>,
    /// Periods in which the cgroup ran out of quota (cpu controller only).
    pub nr_throttled: Option<u64>,
    /// Total time throttled in microseconds (cpu controller only).
    pub throttled_usec: Option<u64>,
    /// Periods in which burst was used (cpu controller, Linux 5.14+).
    pub nr_bursts: Option<u64>,
    /// Total burst time used in microseconds (cpu controller, Linux 5.14+).
    pub burst_usec: Option<u64>,
}

impl CpuStat {
    /// Parses the contents of `cpu.stat`.
    ///
    /// # Errors
    ///
    /// As [`parse_flat_keyed`]; [`ParseError::MissingKey`] without `usage_usec`,
    /// `user_usec` or `system_usec`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let m = parse_flat_keyed(text)?;
        Ok(CpuStat {
            usage_usec: required(&m, "usage_usec")?,
            user_usec: required(&m, "user_usec")?,
            system_usec: required(&m, "system_usec")?,
            nr_periods: m.get("nr_periods").copied(),
            nr_throttled: m.get("nr_throttled").copied(),
            throttled_usec: m.get("throttled_usec").copied(),
            nr_bursts: m.get("nr_bursts").copied(),
            burst_usec: m.get("burst_usec").copied(),
        })
    }
}

/// `cgroup.events`: whether the subtree has processes and whether it is frozen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupEvents {
    /// Some process lives in this cgroup or a descendant.
    pub populated: bool,
    /// The cgroup is frozen (the freeze has completed, not merely been requested).
    pub frozen: bool,
}

impl CgroupEvents {
    /// Parses the contents of `cgroup.events`. `frozen` is absent before Linux 5.2 (false).
    ///
    /// # Errors
    ///
    /// As [`parse_flat_keyed`]; [`ParseError::MissingKey`] without `populated`;
    /// [`ParseError::Value`] for a flag other than 0 or 1.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let m = parse_flat_keyed(text)?;
        let flag = |key: &'static str, v: u64| match v {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ParseError::Value {
                key: key.to_owned(),
                value: v.to_string(),
                reason: "expected 0 or 1",
            }),
        };
        Ok(CgroupEvents {
            populated: flag("populated", required(&m, "populated")?)?,
            frozen: flag("frozen", m.get("frozen").copied().unwrap_or(0))?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// io

/// A block device number, `MAJOR:MINOR` in `io.max` and `io.stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IoDevice {
    /// The major number (8 for sd*, 259 for nvme, 253/254 for virtio-blk on many kernels).
    pub major: u32,
    /// The minor number.
    pub minor: u32,
}

impl IoDevice {
    /// The device with this major and minor number.
    pub const fn new(major: u32, minor: u32) -> Self {
        IoDevice { major, minor }
    }

    /// The device of a `dev_t` (e.g. `st_rdev` of a block device node).
    pub fn from_dev(dev: rustix::fs::Dev) -> Self {
        IoDevice {
            major: rustix::fs::major(dev),
            minor: rustix::fs::minor(dev),
        }
    }
}

impl fmt::Display for IoDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for IoDevice {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = || ParseError::Device {
            value: s.to_owned(),
        };
        let (maj, min) = s.trim().split_once(':').ok_or_else(err)?;
        let num = |x: &str| {
            if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
                Err(err())
            } else {
                x.parse::<u32>().map_err(|_| err())
            }
        };
        Ok(IoDevice {
            major: num(maj)?,
            minor: num(min)?,
        })
    }
}

/// One line of `io.max`: rate limits for one device. `None` leaves a limit as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoMax {
    /// The device the limits apply to.
    pub device: IoDevice,
    /// Read bytes per second.
    pub rbps: Option<Limit>,
    /// Write bytes per second.
    pub wbps: Option<Limit>,
    /// Read operations per second.
    pub riops: Option<Limit>,
    /// Write operations per second.
    pub wiops: Option<Limit>,
}

impl IoMax {
    /// No change for `device` yet; set the fields you want to limit.
    pub const fn new(device: IoDevice) -> Self {
        IoMax {
            device,
            rbps: None,
            wbps: None,
            riops: None,
            wiops: None,
        }
    }

    /// Parses the contents of `io.max`: one line per device that has a limit.
    ///
    /// # Errors
    ///
    /// As [`parse_nested_keyed`]; [`ParseError::Device`] for a bad device;
    /// [`ParseError::Value`] for a rate that is neither a number nor `max`.
    pub fn parse_file(text: &str) -> Result<Vec<IoMax>, ParseError> {
        let mut out = Vec::new();
        for (dev, fields) in parse_nested_keyed(text)? {
            let mut m = IoMax::new(dev.parse()?);
            for (name, value) in fields {
                let limit = parse_limit(&value).map_err(|_| ParseError::Value {
                    key: name.clone(),
                    value: value.clone(),
                    reason: "not a number or max",
                })?;
                match name.as_str() {
                    "rbps" => m.rbps = Some(limit),
                    "wbps" => m.wbps = Some(limit),
                    "riops" => m.riops = Some(limit),
                    "wiops" => m.wiops = Some(limit),
                    _ => {}
                }
            }
            out.push(m);
        }
        Ok(out)
    }
}

impl fmt::Display for IoMax {
    /// The line to write into `io.max`, e.g. `8:0 rbps=1048576 wiops=max`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.device)?;
        for (name, v) in [
            ("rbps", self.rbps),
            ("wbps", self.wbps),
            ("riops", self.riops),
            ("wiops", self.wiops),
        ] {
            if let Some(v) = v {
                write!(f, " {name}={v}")?;
            }
        }
        Ok(())
    }
}

/// Parses `io.stat`: per device, counters such as `rbytes wbytes rios wios dbytes dios`.
///
/// # Errors
///
/// As [`parse_nested_keyed`]; [`ParseError::Device`] for a bad device; [`ParseError::Value`]
/// for a counter that is not a whole number.
pub fn parse_io_stat(text: &str) -> Result<BTreeMap<IoDevice, BTreeMap<String, u64>>, ParseError> {
    let mut out = BTreeMap::new();
    for (dev, fields) in parse_nested_keyed(text)? {
        let mut counters = BTreeMap::new();
        for (name, value) in fields {
            let n = value.parse::<u64>().map_err(|_| ParseError::Value {
                key: name.clone(),
                value: value.clone(),
                reason: "not a whole number",
            })?;
            counters.insert(name, n);
        }
        out.insert(dev.parse()?, counters);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// PSI

/// Which PSI line: `some` (at least one task stalled) or `full` (all non-idle tasks stalled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PsiKind {
    /// At least one task was stalled on the resource.
    Some,
    /// All non-idle tasks were stalled at once.
    Full,
}

impl PsiKind {
    /// The word the kernel uses, `some` or `full`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PsiKind::Some => "some",
            PsiKind::Full => "full",
        }
    }
}

impl fmt::Display for PsiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One PSI line: stall-time percentages over 10 s, 60 s and 300 s, and the total stall time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiLine {
    /// Percentage of wall time stalled, averaged over 10 s.
    pub avg10: f64,
    /// Percentage of wall time stalled, averaged over 60 s.
    pub avg60: f64,
    /// Percentage of wall time stalled, averaged over 300 s.
    pub avg300: f64,
    /// Total stall time in microseconds.
    pub total_usec: u64,
}

/// A pressure file (`memory.pressure`, `/proc/pressure/io`, ...): `some` and, except for the
/// system-wide CPU file on old kernels, `full`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiStats {
    /// The `some` line.
    pub some: PsiLine,
    /// The `full` line, when the file has one.
    pub full: Option<PsiLine>,
}

/// Parses one PSI line: `some avg10=0.00 avg60=0.00 avg300=0.00 total=0`.
///
/// # Errors
///
/// [`ParseError::Line`] for a line without `some`/`full` or with missing fields;
/// [`ParseError::Value`] naming a field whose value is not a number.
pub fn parse_psi_line(line: &str) -> Result<(PsiKind, PsiLine), ParseError> {
    let mut it = line.split_whitespace();
    let kind = match it.next() {
        Some("some") => PsiKind::Some,
        Some("full") => PsiKind::Full,
        _ => {
            return Err(ParseError::Line {
                line: line.to_owned(),
                reason: "a PSI line starts with \"some\" or \"full\"",
            });
        }
    };
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for pair in it {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(ParseError::Line {
                line: line.to_owned(),
                reason: "expected name=value pairs",
            });
        };
        let bad = |reason| ParseError::Value {
            key: name.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let avg = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| bad("not a percentage"))
        };
        match name {
            "avg10" => avg10 = Some(avg()?),
            "avg60" => avg60 = Some(avg()?),
            "avg300" => avg300 = Some(avg()?),
            "total" => {
                total = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| bad("not a whole number"))?,
                )
            }
            _ => {}
        }
    }
    let (Some(avg10), Some(avg60), Some(avg300), Some(total_usec)) = (avg10, avg60, avg300, total)
    else {
        return Err(ParseError::Line {
            line: line.to_owned(),
            reason: "needs avg10, avg60, avg300 and total",
        });
    };
    Ok((
        kind,
        PsiLine {
            avg10,
            avg60,
            avg300,
            total_usec,
        },
    ))
}

/// Parses a whole pressure file.
///
/// # Errors
///
/// As [`parse_psi_line`]; [`ParseError::MissingKey`] without a `some` line.
pub fn parse_psi(text: &str) -> Result<PsiStats, ParseError> {
    let (mut some, mut full) = (None, None);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_psi_line(line)? {
            (PsiKind::Some, l) => some = Some(l),
            (PsiKind::Full, l) => full = Some(l),
        }
    }
    Ok(PsiStats {
        some: some.ok_or(ParseError::MissingKey { key: "some" })?,
        full,
    })
}

// ---------------------------------------------------------------------------------------------
// /proc/<pid>/cgroup

/// The cgroup v2 path of a process from the text of `/proc/<pid>/cgroup` (the `0::/path`
/// line), e.g. `/nebula/ctx-1`. `None` when the process is in no v2 hierarchy.
pub fn parse_proc_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    #[test]
    fn limits() {
        assert_eq!(parse_limit("max\n"), Ok(Limit::Max));
        assert_eq!(parse_limit("33554432\n"), Ok(Limit::Value(32 * M)));
        assert_eq!(parse_limit("0"), Ok(Limit::Value(0)));
        assert_eq!(Limit::Max.to_string(), "max");
        assert_eq!(Limit::Value(7).to_string(), "7");
        assert!(Limit::Value(u64::MAX) < Limit::Max);
        for bad in ["", "-1", "1.5", "maxx", "12k", "99999999999999999999999"] {
            let e = parse_limit(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(parse_u64("12\n"), Ok(12));
        assert!(
            parse_u64("max")
                .unwrap_err()
                .to_string()
                .contains("\"max\"")
        );
    }

    #[test]
    fn sizes() {
        let ok = |s: &str, v: u64| assert_eq!(parse_size(s), Ok(Limit::Value(v)), "{s}");
        ok("4096", 4096);
        ok("0", 0);
        ok("512k", 512 * 1024);
        ok("512K", 512 * 1024);
        ok("64M", 64 * M);
        ok("64m", 64 * M);
        ok("64MiB", 64 * M);
        ok("64MB", 64 * M);
        ok("64 M", 64 * M);
        ok("1.5G", 3 * 512 * M);
        ok("0.5k", 512);
        ok("1.1k", 1126); // 1126.4 rounded down
        ok("2T", 2 << 40);
        ok("100b", 100);
        ok("16383P", 16383 << 50);
        assert_eq!(parse_size("max"), Ok(Limit::Max));
        assert_eq!(parse_size("MAX"), Ok(Limit::Max));
        for bad in [
            "",
            "-1M",
            "M",
            "1.5",
            "12X",
            "1..5G",
            "1.G",
            ".5G",
            "1.5.5G",
            "16384P",
            "64ib",
            "1.0000000001G",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(
                e.to_string().contains(&format!("{:?}", bad.trim())),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn size_round_trip() {
        for v in [0, 1, 4097, 1024, 32 * M, 1536 * 1024, 3 << 30, 1 << 50] {
            let s = format_size(Limit::Value(v));
            assert_eq!(parse_size(&s), Ok(Limit::Value(v)), "{s}");
        }
        assert_eq!(format_size(Limit::Value(32 * M)), "32M");
        assert_eq!(format_size(Limit::Max), "max");
    }

    #[test]
    fn cpu_shares() {
        let q = |s: &str| parse_cpu_share(s).map(|c| c.to_string());
        assert_eq!(q("0.5").as_deref(), Ok("50000 100000"));
        assert_eq!(q("50%").as_deref(), Ok("50000 100000"));
        assert_eq!(q("20 %").as_deref(), Ok("20000 100000"));
        assert_eq!(q("2").as_deref(), Ok("200000 100000"));
        assert_eq!(q("1.25").as_deref(), Ok("125000 100000"));
        assert_eq!(q("150%").as_deref(), Ok("150000 100000"));
        assert_eq!(q("0.01").as_deref(), Ok("1000 100000"));
        assert_eq!(q("max").as_deref(), Ok("max 100000"));
        for bad in [
            "", "%", "0", "0%", "-0.5", "abc", "1e3", "inf", "nan", "0.001", "0.5.5", ".5", "5.",
        ] {
            let e = parse_cpu_share(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        let c = CpuMax::from_fraction(0.2).unwrap();
        assert_eq!(c.fraction(), Some(0.2));
        assert_eq!(CpuMax::UNLIMITED.fraction(), None);
        assert!(CpuMax::from_fraction(f64::NAN).is_err());
        assert!(CpuMax::from_fraction_with_period(0.5, 999).is_err());
        assert_eq!(
            CpuMax::from_fraction_with_period(0.5, 1_000_000)
                .unwrap()
                .to_string(),
            "500000 1000000"
        );
    }

    #[test]
    fn cpu_max_file() {
        assert_eq!(parse_cpu_max("max 100000\n"), Ok(CpuMax::UNLIMITED));
        assert_eq!(
            parse_cpu_max("20000 100000\n"),
            Ok(CpuMax {
                quota: Limit::Value(20000),
                period: 100000
            })
        );
        for bad in ["", "max", "1 2 3", "x 100000", "max y"] {
            let e = parse_cpu_max(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn flat_keyed() {
        let ev = "low 0\nhigh 34\nmax 35\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(
            MemoryEvents::parse(ev),
            Ok(MemoryEvents {
                low: 0,
                high: 34,
                max: 35,
                oom: 1,
                oom_kill: 1,
                oom_group_kill: 0
            })
        );
        // Before 5.17 there is no oom_group_kill.
        let old = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n";
        assert_eq!(MemoryEvents::parse(old).unwrap().oom_group_kill, 0);
        assert_eq!(
            MemoryEvents::parse("low 0\n"),
            Err(ParseError::MissingKey { key: "high" })
        );
        let e = MemoryEvents::parse("low x\n").unwrap_err();
        assert!(e.to_string().contains("\"x\"") && e.to_string().contains("\"low\""));
        let e = parse_flat_keyed("low 1 2\n").unwrap_err();
        assert!(e.to_string().contains("\"low 1 2\""), "{e}");
        let stat = parse_flat_keyed("anon 4096\nfile 0\npgfault 12\n\n").unwrap();
        assert_eq!(stat["anon"], 4096);
        assert_eq!(stat.len(), 3);

        assert_eq!(PidsEvents::parse("max 6\n"), Ok(PidsEvents { max: 6 }));
        assert_eq!(PidsEvents::parse("max 6\nmax.imposed 2\n").unwrap().max, 6);

        let cpu = "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 21\n\
                   nr_throttled 20\nthrottled_usec 1000\nnr_bursts 0\nburst_usec 0\n";
        let c = CpuStat::parse(cpu).unwrap();
        assert_eq!((c.usage_usec, c.nr_throttled), (2000, Some(20)));
        let core_only = CpuStat::parse("usage_usec 1\nuser_usec 1\nsystem_usec 0\n").unwrap();
        assert_eq!(core_only.nr_throttled, None);

        assert_eq!(
            CgroupEvents::parse("populated 1\nfrozen 0\n"),
            Ok(CgroupEvents {
                populated: true,
                frozen: false
            })
        );
        assert_eq!(
            CgroupEvents::parse("populated 0\n"),
            Ok(CgroupEvents::default())
        );
        let e = CgroupEvents::parse("populated 2\n").unwrap_err();
        assert!(e.to_string().contains("\"2\""), "{e}");
    }

    #[test]
    fn nested_keyed_and_io() {
        let stat = "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n\
                    253:16 rbytes=10 wbytes=20 rios=30 wios=40 dbytes=0 dios=0\n";
        let s = parse_io_stat(stat).unwrap();
        assert_eq!(s[&IoDevice::new(8, 0)]["wios"], 4);
        assert_eq!(s[&IoDevice::new(253, 16)]["rbytes"], 10);
        assert!(parse_io_stat("8:0 rbytes=x\n").is_err());
        let e = parse_io_stat("sda rbytes=1\n").unwrap_err();
        assert!(e.to_string().contains("\"sda\""), "{e}");
        let e = parse_nested_keyed("8:0 rbytes\n").unwrap_err();
        assert!(e.to_string().contains("\"8:0 rbytes\""), "{e}");
        assert!(parse_nested_keyed("8:0 a=1\n8:0 a=2\n").is_err());

        let mut m = IoMax::new("8:0".parse().unwrap());
        m.rbps = Some(Limit::Value(1 << 20));
        m.wiops = Some(Limit::Max);
        assert_eq!(m.to_string(), "8:0 rbps=1048576 wiops=max");
        let back = IoMax::parse_file("8:0 rbps=1048576 wbps=max riops=max wiops=120\n").unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].rbps, Some(Limit::Value(1 << 20)));
        assert_eq!(back[0].wiops, Some(Limit::Value(120)));
        assert_eq!(back[0].riops, Some(Limit::Max));
        for bad in ["8", "8:", ":0", "a:b", "8:0:1", "-8:0"] {
            let e = bad.parse::<IoDevice>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(
            IoDevice::from_dev(rustix::fs::makedev(259, 3)),
            IoDevice::new(259, 3)
        );
    }

    #[test]
    fn psi() {
        let text = "some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=42\n";
        let p = parse_psi(text).unwrap();
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.total_usec, 123456);
        assert_eq!(p.full.unwrap().total_usec, 42);
        let only_some = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        assert_eq!(only_some.full, None);
        assert!(parse_psi("").is_err());
        for bad in [
            "none avg10=0.00 avg60=0.00 avg300=0.00 total=0",
            "some avg10=0.00 avg60=0.00 total=0",
            "some avg10 avg60=0.00 avg300=0.00 total=0",
        ] {
            let e = parse_psi_line(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let e = parse_psi_line("some avg10=x avg60=0.00 avg300=0.00 total=0").unwrap_err();
        assert!(e.to_string().contains("\"x\"") && e.to_string().contains("avg10"));
        let e = parse_psi_line("some avg10=0 avg60=0 avg300=0 total=-1").unwrap_err();
        assert!(e.to_string().contains("\"-1\""), "{e}");
    }

    #[test]
    fn proc_cgroup() {
        assert_eq!(
            parse_proc_cgroup("0::/nebula/ctx-1\n"),
            Some("/nebula/ctx-1")
        );
        let hybrid = "12:memory:/x\n1:name=systemd:/y\n0::/\n";
        assert_eq!(parse_proc_cgroup(hybrid), Some("/"));
        assert_eq!(parse_proc_cgroup("4:pids:/a\n"), None);
    }
}
