//! What this kernel and CPU offer, detected once and cached.
//!
//! [`features()`] is the single source of truth: the library refuses a level with the same
//! reason `nebula-ctl probe` prints, and the tests skip (or, in the VM tier, fail) on the
//! same answer. Every check is read-only or runs in a throw-away child: the probe never
//! writes to a cgroup tree and never changes the calling process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

use crate::sys;

/// Everything the probe found.
#[derive(Clone, Debug, Serialize)]
pub struct Features {
    /// `uname -r`.
    pub kernel_release: String,
    /// The CPU architecture this build targets.
    pub arch: &'static str,
    /// Memory protection keys (x86 PKU).
    pub pkeys: PkeysFeature,
    /// userfaultfd.
    pub userfaultfd: UffdFeature,
    /// seccomp filters.
    pub seccomp: SeccompFeature,
    /// Unprivileged-style user namespaces (`unshare(CLONE_NEWUSER)`).
    pub user_namespaces: Availability,
    /// cgroup v2 and its controllers.
    pub cgroup_v2: CgroupFeature,
    /// Landlock (`landlock_create_ruleset` version query).
    pub landlock: LandlockFeature,
}

/// A yes/no with the reason for no.
#[derive(Clone, Debug, Serialize)]
pub struct Availability {
    /// Whether the feature works here.
    pub available: bool,
    /// Why not (absent when available).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Availability {
    fn yes() -> Self {
        Availability {
            available: true,
            reason: None,
        }
    }
    fn no(reason: impl Into<String>) -> Self {
        Availability {
            available: false,
            reason: Some(reason.into()),
        }
    }
}

/// Protection keys.
#[derive(Clone, Debug, Serialize)]
pub struct PkeysFeature {
    /// Whether pkeys work.
    pub available: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The CPU advertises `pku`.
    pub cpu_flag: bool,
    /// The OS enabled it (`ospke`).
    pub os_enabled: bool,
    /// `pkey_alloc` returned a key.
    pub alloc_works: bool,
    /// Keys this process could still allocate when probed.
    pub keys_free: u32,
}

/// userfaultfd.
#[derive(Clone, Debug, Serialize)]
pub struct UffdFeature {
    /// Whether a userfaultfd can be created here (either way).
    pub available: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `userfaultfd(2)` system call works (user-mode faults).
    pub syscall: bool,
    /// `/dev/userfaultfd` opens and creates descriptors.
    pub dev_userfaultfd: bool,
    /// The `UFFDIO_API` feature mask.
    pub api_features: u64,
    /// The same mask, by name.
    pub feature_names: Vec<&'static str>,
    /// The `UFFDIO_API` ioctl mask (bit n: ioctl number n is allowed).
    pub api_ioctls: u64,
}

/// seccomp.
#[derive(Clone, Debug, Serialize)]
pub struct SeccompFeature {
    /// Whether filters can be installed.
    pub available: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// This process's mode now (0 none, 1 strict, 2 filter).
    pub mode: u32,
    /// Filter return actions the kernel supports.
    pub actions: Vec<&'static str>,
}

/// cgroup v2.
#[derive(Clone, Debug, Serialize)]
pub struct CgroupFeature {
    /// Whether a cgroup2 mount with at least the memory controller is usable.
    pub available: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where cgroup2 is mounted (the first mount found).
    pub mount: Option<PathBuf>,
    /// This process's cgroup (from `/proc/self/cgroup`, `0::` line).
    pub own_cgroup: Option<String>,
    /// memory, cpu, io, pids: usable by a nebula root or not, and why.
    pub controllers: BTreeMap<&'static str, Availability>,
}

impl CgroupFeature {
    /// The cgroup v2 directory this process lives in (the mount joined with `own_cgroup`):
    /// where nebula puts its own roots. `None` without a cgroup2 mount.
    pub fn supervisor_cgroup(&self) -> Option<PathBuf> {
        let mount = self.mount.clone()?;
        let own = self
            .own_cgroup
            .as_deref()
            .unwrap_or("/")
            .trim_start_matches('/');
        Some(if own.is_empty() {
            mount
        } else {
            mount.join(own)
        })
    }
}

/// Landlock.
#[derive(Clone, Debug, Serialize)]
pub struct LandlockFeature {
    /// Whether rulesets can be created and enforced here.
    pub available: bool,
    /// Why not, and the fix (a kernel setting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The ABI version `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`
    /// returned; 0 when unavailable.
    pub abi: u32,
    /// The filesystem rights this ABI handles, by uapi name ([`crate::landlock::AccessFs`]).
    pub access_fs: Vec<&'static str>,
}

/// The controllers nebula's process level uses.
pub const CONTROLLERS: [&str; 4] = ["memory", "cpu", "io", "pids"];

/// The cached probe result; the first call detects, later calls are free.
pub fn features() -> &'static Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    FEATURES.get_or_init(detect)
}

fn detect() -> Features {
    let pkeys = probe_pkeys();
    let userfaultfd = probe_uffd();
    let seccomp = probe_seccomp();
    let user_namespaces = match sys::process::probe_unshare(libc::CLONE_NEWUSER) {
        Ok(()) => Availability::yes(),
        Err(e) => Availability::no(format!(
            "unshare(CLONE_NEWUSER) failed in a child: {e}; check /proc/sys/user/max_user_namespaces"
        )),
    };
    let cgroup_v2 = probe_cgroup(
        Path::new("/proc/self/mountinfo"),
        Path::new("/proc/self/cgroup"),
    );
    let landlock = probe_landlock();
    Features {
        kernel_release: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        arch: std::env::consts::ARCH,
        pkeys,
        userfaultfd,
        seccomp,
        user_namespaces,
        cgroup_v2,
        landlock,
    }
}

fn probe_landlock() -> LandlockFeature {
    match sys::landlock::abi_version() {
        Ok(abi) if abi >= 1 => LandlockFeature {
            available: true,
            reason: None,
            abi,
            access_fs: sys::landlock::AccessFs::for_abi(abi).names(),
        },
        Ok(abi) => LandlockFeature {
            available: false,
            reason: Some(format!("the kernel reports Landlock ABI {abi}")),
            abi: 0,
            access_fs: vec![],
        },
        Err(e) => LandlockFeature {
            available: false,
            reason: Some(crate::landlock::unavailable_reason(e.raw_os_error())),
            abi: 0,
            access_fs: vec![],
        },
    }
}

fn cpu_flags() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn probe_pkeys() -> PkeysFeature {
    let flags = cpu_flags();
    let cpu_flag = flags.iter().any(|f| f == "pku");
    let os_enabled = flags.iter().any(|f| f == "ospke");
    // Count free keys by taking them all, then give every one back.
    let mut keys = Vec::new();
    let mut first_err = None;
    while keys.len() < 16 {
        match sys::pkey::pkey_alloc(0) {
            Ok(k) => keys.push(k),
            Err(e) => {
                first_err = Some(e);
                break;
            }
        }
    }
    for &k in &keys {
        // No page carries a key we just allocated, so freeing is safe.
        let _ = sys::pkey::pkey_free(k);
    }
    let alloc_works = !keys.is_empty();
    let reason = if !cpu_flag {
        Some("the CPU does not advertise pku (under qemu use -cpu max or host)".to_string())
    } else if !os_enabled {
        Some("the kernel did not enable PKU (ospke missing; CONFIG_X86_INTEL_MEMORY_PROTECTION_KEYS)".into())
    } else if !alloc_works {
        Some(format!(
            "pkey_alloc failed: {}",
            first_err.map(|e| e.to_string()).unwrap_or_default()
        ))
    } else {
        None
    };
    // At most 16: the loop above stops there.
    #[allow(clippy::cast_possible_truncation)]
    let keys_free = keys.len() as u32;
    PkeysFeature {
        available: reason.is_none(),
        reason,
        cpu_flag,
        os_enabled,
        alloc_works,
        keys_free,
    }
}

/// `UFFD_FEATURE_*` bits by name (linux/userfaultfd.h).
pub const UFFD_FEATURE_NAMES: [(u64, &str); 17] = [
    (1 << 0, "PAGEFAULT_FLAG_WP"),
    (1 << 1, "EVENT_FORK"),
    (1 << 2, "EVENT_REMAP"),
    (1 << 3, "EVENT_REMOVE"),
    (1 << 4, "MISSING_HUGETLBFS"),
    (1 << 5, "MISSING_SHMEM"),
    (1 << 6, "EVENT_UNMAP"),
    (1 << 7, "SIGBUS"),
    (1 << 8, "THREAD_ID"),
    (1 << 9, "MINOR_HUGETLBFS"),
    (1 << 10, "MINOR_SHMEM"),
    (1 << 11, "EXACT_ADDRESS"),
    (1 << 12, "WP_HUGETLBFS_SHMEM"),
    (1 << 13, "WP_UNPOPULATED"),
    (1 << 14, "POISON"),
    (1 << 15, "WP_ASYNC"),
    (1 << 16, "MOVE"),
];

fn probe_uffd() -> UffdFeature {
    let via_syscall = sys::uffd::open_syscall();
    let via_device = sys::uffd::open_device();
    let syscall = via_syscall.is_ok();
    let dev_userfaultfd = via_device.is_ok();
    let fd = via_syscall.as_ref().ok().or(via_device.as_ref().ok());
    let api = fd.map(|fd| sys::uffd::api(fd, 0));
    let (api_features, api_ioctls, reason) = match (&api, &via_syscall, &via_device) {
        (Some(Ok(r)), _, _) => (r.features, r.ioctls, None),
        (Some(Err(e)), _, _) => (0, 0, Some(format!("UFFDIO_API failed: {e}"))),
        (None, Err(s), Err(d)) => (
            0,
            0,
            Some(format!(
                "userfaultfd(2) failed ({s}) and /dev/userfaultfd failed ({d})"
            )),
        ),
        (None, _, _) => unreachable!("no fd means both ways failed"),
    };
    let feature_names = UFFD_FEATURE_NAMES
        .iter()
        .filter(|(bit, _)| api_features & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    UffdFeature {
        available: reason.is_none(),
        reason,
        syscall,
        dev_userfaultfd,
        api_features,
        feature_names,
        api_ioctls,
    }
}

fn probe_seccomp() -> SeccompFeature {
    const ACTIONS: [(u32, &str); 8] = [
        (libc::SECCOMP_RET_KILL_PROCESS, "kill_process"),
        (libc::SECCOMP_RET_KILL_THREAD, "kill_thread"),
        (libc::SECCOMP_RET_TRAP, "trap"),
        (libc::SECCOMP_RET_ERRNO, "errno"),
        (libc::SECCOMP_RET_USER_NOTIF, "user_notif"),
        (libc::SECCOMP_RET_TRACE, "trace"),
        (libc::SECCOMP_RET_LOG, "log"),
        (libc::SECCOMP_RET_ALLOW, "allow"),
    ];
    let mode = match sys::seccomp::current_mode() {
        Ok(m) => m,
        Err(e) => {
            return SeccompFeature {
                available: false,
                reason: Some(format!(
                    "prctl(PR_GET_SECCOMP) failed: {e}; the kernel lacks CONFIG_SECCOMP"
                )),
                mode: 0,
                actions: vec![],
            };
        }
    };
    let mut actions = Vec::new();
    let mut err = None;
    for (action, name) in ACTIONS {
        match sys::seccomp::action_available(action) {
            Ok(true) => actions.push(name),
            Ok(false) => {}
            Err(e) => err = Some(e),
        }
    }
    let reason = if !actions.contains(&"allow") {
        Some(format!(
            "seccomp(SECCOMP_GET_ACTION_AVAIL) failed: {}; the kernel lacks CONFIG_SECCOMP_FILTER",
            err.map(|e| e.to_string())
                .unwrap_or_else(|| "no actions".into())
        ))
    } else {
        None
    };
    SeccompFeature {
        available: reason.is_none(),
        reason,
        mode,
        actions,
    }
}

/// One line of `/proc/self/mountinfo`: the mount point and the filesystem type.
fn mounts(mountinfo: &str) -> Vec<(PathBuf, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            let fstype = right.split_whitespace().next()?;
            // mountinfo escapes spaces and friends as octal (\040).
            Some((
                PathBuf::from(unescape_octal(mount_point)),
                fstype.to_string(),
            ))
        })
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the cgroup picture from the given files (parameters so tests can feed fixtures).
fn probe_cgroup(mountinfo: &Path, proc_cgroup: &Path) -> CgroupFeature {
    let info = std::fs::read_to_string(mountinfo).unwrap_or_default();
    let all = mounts(&info);
    let v2 = all
        .iter()
        .find(|(_, t)| t == "cgroup2")
        .map(|(p, _)| p.clone());
    let v1: Vec<&PathBuf> = all
        .iter()
        .filter(|(_, t)| t == "cgroup")
        .map(|(p, _)| p)
        .collect();
    let own_cgroup = std::fs::read_to_string(proc_cgroup).ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_string))
    });
    let offered: Vec<String> = match (&v2, &own_cgroup) {
        // The controllers our own cgroup's parent could hand down: read our cgroup's
        // cgroup.controllers (what our parent enabled for us), falling back to the root.
        (Some(m), Some(own)) => {
            let own_dir = m.join(own.trim_start_matches('/'));
            std::fs::read_to_string(own_dir.join("cgroup.controllers"))
                .or_else(|_| std::fs::read_to_string(m.join("cgroup.controllers")))
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        }
        (Some(m), None) => std::fs::read_to_string(m.join("cgroup.controllers"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        _ => vec![],
    };
    let mut controllers = BTreeMap::new();
    for c in CONTROLLERS {
        let state = if offered.iter().any(|o| o == c) {
            Availability::yes()
        } else if let Some(m) = &v2 {
            let v1_home = v1.iter().find(|p| {
                p.file_name().is_some_and(|n| {
                    n.to_string_lossy()
                        .split(',')
                        .any(|x| x == c || (c == "io" && x == "blkio"))
                })
            });
            match v1_home {
                Some(p) => Availability::no(format!(
                    "not in the cgroup2 mount at {}: bound to the cgroup v1 hierarchy at {}",
                    m.display(),
                    p.display()
                )),
                None => {
                    Availability::no(format!("not offered in {}/cgroup.controllers", m.display()))
                }
            }
        } else {
            Availability::no("no cgroup2 filesystem is mounted")
        };
        controllers.insert(c, state);
    }
    let reason = if controllers["memory"].available {
        None
    } else {
        let v1_note = if v1.is_empty() {
            String::new()
        } else {
            let root = v1[0]
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            format!("{root} is a cgroup v1 tree ({} hierarchies); ", v1.len())
        };
        Some(format!(
            "{v1_note}the memory controller is not available on cgroup v2 ({}); boot with systemd.unified_cgroup_hierarchy=1 on the kernel command line to get it",
            controllers["memory"].reason.as_deref().unwrap_or("")
        ))
    };
    CgroupFeature {
        available: reason.is_none(),
        reason,
        mount: v2,
        own_cgroup,
        controllers,
    }
}

impl Features {
    /// A human-readable report, one feature per line.
    pub fn report(&self) -> String {
        use std::fmt::Write;
        let yn = |b: bool| if b { "yes" } else { "no " };
        let mut s = String::new();
        let _ = writeln!(s, "kernel {} ({})", self.kernel_release, self.arch);
        let why = |r: &Option<String>| r.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "pkeys            {}  cpu flag {}, os enabled {}, {} keys free{}",
            yn(self.pkeys.available),
            yn(self.pkeys.cpu_flag).trim(),
            yn(self.pkeys.os_enabled).trim(),
            self.pkeys.keys_free,
            why(&self.pkeys.reason)
        );
        let _ = writeln!(
            s,
            "userfaultfd      {}  syscall {}, /dev/userfaultfd {}, features {}{}",
            yn(self.userfaultfd.available),
            yn(self.userfaultfd.syscall).trim(),
            yn(self.userfaultfd.dev_userfaultfd).trim(),
            self.userfaultfd.feature_names.join(","),
            why(&self.userfaultfd.reason)
        );
        let _ = writeln!(
            s,
            "seccomp          {}  mode {}, actions {}{}",
            yn(self.seccomp.available),
            self.seccomp.mode,
            self.seccomp.actions.join(","),
            why(&self.seccomp.reason)
        );
        let _ = writeln!(
            s,
            "user namespaces  {}{}",
            yn(self.user_namespaces.available),
            why(&self.user_namespaces.reason)
        );
        let _ = writeln!(
            s,
            "cgroup v2        {}  mount {}{}",
            yn(self.cgroup_v2.available),
            self.cgroup_v2
                .mount
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into()),
            why(&self.cgroup_v2.reason)
        );
        for (name, c) in &self.cgroup_v2.controllers {
            let _ = writeln!(s, "  {name:<14} {}{}", yn(c.available), why(&c.reason));
        }
        let _ = writeln!(
            s,
            "landlock         {}  ABI {}, fs rights {}{}",
            yn(self.landlock.available),
            self.landlock.abi,
            if self.landlock.access_fs.is_empty() {
                "none".to_owned()
            } else {
                self.landlock.access_fs.join(",")
            },
            why(&self.landlock.reason)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 23 0:39 / /mnt/with\\040space rw - ext4 /dev/vdb rw
";

    #[test]
    fn mountinfo_parsing_finds_types_and_unescapes() {
        let m = mounts(HYBRID);
        assert_eq!(m.len(), 5);
        assert_eq!(
            m[3],
            (
                PathBuf::from("/sys/fs/cgroup/unified"),
                "cgroup2".to_string()
            )
        );
        assert_eq!(m[4].0, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn hybrid_host_reports_memory_bound_to_v1() {
        let dir = std::env::temp_dir().join(format!("nebula-probe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mi = dir.join("mountinfo");
        std::fs::write(&mi, HYBRID).unwrap();
        let pc = dir.join("cgroup");
        std::fs::write(&pc, "4:memory:/x\n0::/\n").unwrap();
        let c = probe_cgroup(&mi, &pc);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!c.available);
        let reason = c.reason.clone().unwrap();
        assert!(
            reason.contains("/sys/fs/cgroup is a cgroup v1 tree"),
            "{reason}"
        );
        let mem = &c.controllers["memory"];
        assert!(!mem.available);
        assert!(
            mem.reason
                .as_ref()
                .unwrap()
                .contains("/sys/fs/cgroup/memory"),
            "{:?}",
            mem.reason
        );
        assert_eq!(c.own_cgroup.as_deref(), Some("/"));
        assert_eq!(
            c.supervisor_cgroup(),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let nested = CgroupFeature {
            own_cgroup: Some("/a/b".into()),
            ..c
        };
        assert_eq!(
            nested.supervisor_cgroup(),
            Some(PathBuf::from("/sys/fs/cgroup/unified/a/b"))
        );
        assert_eq!(
            CgroupFeature {
                mount: None,
                ..nested
            }
            .supervisor_cgroup(),
            None
        );
    }

    #[test]
    fn no_cgroup2_at_all() {
        let dir = std::env::temp_dir().join(format!("nebula-probe-test2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mi = dir.join("mountinfo");
        std::fs::write(&mi, "1 0 0:1 / / rw - ext4 /dev/vda rw\n").unwrap();
        let c = probe_cgroup(&mi, &dir.join("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!c.available);
        assert_eq!(
            c.controllers["pids"].reason.as_deref(),
            Some("no cgroup2 filesystem is mounted")
        );
    }
}
