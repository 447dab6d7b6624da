//! What nebula reads of `/proc/<pid>`: start time, parent, CPU times, threads, uids.

/// Reads the start time (field 22 of `/proc/<pid>/stat`) of a process, `None` when it is gone.
pub fn process_start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|s| s.start_time)
}

/// The fields of `/proc/<pid>/stat` nebula uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProcStat {
    pub(crate) ppid: i32,
    pub(crate) utime: u64,
    pub(crate) stime: u64,
    pub(crate) threads: u64,
    pub(crate) start_time: u64,
}

pub(crate) fn proc_stat(pid: i32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field can contain anything, including ") ": the fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): field N is f[N - 3].
    let n = |i: usize| f.get(i - 3).and_then(|x| x.parse::<u64>().ok());
    Some(ProcStat {
        ppid: f.get(1)?.parse().ok()?,
        utime: n(14)?,
        stime: n(15)?,
        threads: n(20)?,
        start_time: n(22)?,
    })
}

/// The real and saved uid of a process (`Uid:` in `/proc/<pid>/status`), `None` when it is
/// gone.
pub(crate) fn proc_uids(pid: i32) -> Option<(u32, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let f: Vec<u32> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Some((*f.first()?, *f.get(2)?))
}
