//! A container's state directory `<root>/<id>/`: `state.json` (a [`Record`]) and, until it
//! is started, the `exec.fifo` its workload waits on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::OciError;
pub use super::status::Status;

/// What `create` wrote down about a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The container id.
    pub id: String,
    /// Its top process, in the runtime's pid namespace.
    pub pid: i32,
    /// That process's start time (`/proc/<pid>/stat` field 22), so a reused pid is not
    /// taken for it.
    pub start_time: u64,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The root filesystem.
    pub rootfs: PathBuf,
    /// Its cgroup leaf, when it has one.
    pub cgroup: Option<PathBuf>,
    /// When it was created (RFC 3339, UTC).
    pub created: String,
    /// The bundle's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The bundle's hooks, as `create` read them: a later change to `config.json` does not
    /// affect the container (runtime.md, "Lifecycle").
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
}

/// The start time of `pid` and whether it is a zombie, from `/proc/<pid>/stat`; `None`
/// when there is no such process.
pub(super) fn proc_start(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); starttime is field 22.
    let start = fields.get(19)?.parse().ok()?;
    let zombie = matches!(fields.first(), Some(&"Z" | &"X"));
    Some((start, zombie))
}

impl Record {
    /// Whether its top process is still the one `create` started and has not exited.
    pub fn alive(&self) -> bool {
        matches!(proc_start(self.pid), Some((s, false)) if s == self.start_time)
    }

    /// Its state now.
    pub fn status(&self, dir: &Path) -> Status {
        if !self.alive() {
            return Status::Stopped;
        }
        if let Some(cg) = &self.cgroup
            && std::fs::read_to_string(cg.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
        {
            return Status::Paused;
        }
        if dir.join(FIFO).exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    /// How a stopped container ended, in nebula's words, from what its cgroup counted: an
    /// OOM kill (`killed: out of memory (memory.max=32M, peak 31.9M)`), or `None` when the
    /// cgroup saw none or is gone.
    pub fn outcome(&self) -> Option<String> {
        let leaf = crate::cgroup::Leaf::open_recorded(self.cgroup.as_ref()?).ok()?;
        let events = leaf.memory_events().ok()?;
        if events.oom_kill == 0 {
            return None;
        }
        let max = match leaf.memory_max() {
            Ok(crate::cgroup::Limit::Value(v)) => crate::admin::report::human(v),
            _ => "max".into(),
        };
        let peak = std::fs::read_to_string(leaf.path().join("memory.peak"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|p| format!(", peak {}", crate::admin::report::human(p)))
            .unwrap_or_default();
        Some(format!(
            "killed: out of memory (memory.max={max}{peak}; {} OOM kill{})",
            events.oom_kill,
            if events.oom_kill == 1 { "" } else { "s" }
        ))
    }

    /// The state as the runtime spec's JSON (`ociVersion`, `id`, `status`, `pid`, `bundle`,
    /// `annotations`), with runc's `rootfs` and `created` too, and for a stopped container
    /// that its cgroup saw OOM-killed, `org.nebula.outcome` ([`Record::outcome`]).
    pub fn state_json(&self, status: Status) -> serde_json::Value {
        let mut v = self.spec_state(status);
        if status == Status::Stopped
            && let Some(o) = self.outcome()
        {
            v["org.nebula.outcome"] = o.into();
        }
        v
    }

    fn spec_state(&self, status: Status) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "status": status,
            "pid": if status == Status::Stopped { 0 } else { self.pid },
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": "",
            "annotations": self.annotations,
        })
    }
}

/// The runtime-spec version nebula reports.
pub const OCI_VERSION: &str = "1.2.0";
/// The start gate's FIFO in a state directory.
pub const FIFO: &str = "exec.fifo";
/// The record in a state directory.
pub const RECORD: &str = "state.json";
/// The bundle's `config.json` as `create` read it.
pub const CONFIG: &str = "config.json";

/// A container id is a plain file name.
pub(super) fn check_id(id: &str) -> Result<(), OciError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(OciError::InvalidId { id: id.to_owned() })
    }
}

/// Reads `<dir>/state.json`.
pub(super) fn load(dir: &Path, id: &str) -> Result<Record, OciError> {
    let path = dir.join(RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OciError::NotFound {
                id: id.to_owned(),
                path,
            });
        }
        Err(source) => {
            return Err(OciError::State {
                what: "reading",
                path,
                source,
            });
        }
    };
    serde_json::from_str(&text).map_err(|e| OciError::State {
        what: "parsing",
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Writes `<dir>/state.json` atomically (a temporary file renamed over it).
pub(super) fn save(dir: &Path, r: &Record) -> Result<(), OciError> {
    let tmp = dir.join(".state.json.tmp");
    let path = dir.join(RECORD);
    let text = serde_json::to_vec_pretty(r).expect("a record serializes");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| OciError::State {
            what: "writing",
            path,
            source,
        })
}

/// `SystemTime::now()` as RFC 3339 in UTC with nanoseconds (`2026-12-06T21:40:00.123456789Z`).
pub(super) fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let tod = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_names() {
        for ok in ["a", "test-1", "x.y_z+1"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", ".hidden"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn our_start_time_is_read() {
        let (start, zombie) = proc_start(std::process::id().try_into().unwrap()).unwrap();
        assert!(start > 0);
        assert!(!zombie);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 30, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
        assert_eq!(&t[10..11], "T");
    }
}
