//! A context's own root filesystem ([`ProcessConfig::root`]): the mount steps that bind it
//! onto itself, set up its mounts, device nodes and `/dev` links under it, and pivot into
//! it. Paths inside the root are resolved here, in the supervisor, with every symlink
//! followed *inside* the root (a link to `/etc` in an image means the image's `/etc`, never
//! the host's), before the child mounts anything.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::config::{Device, DeviceKind, Mount, Namespaces, ProcessConfig};
use super::outcome::ProcessError;
use crate::sys::mount::{MountStep, MountTarget, OciMount};

/// Symlinks followed while resolving one path before it is refused (as `ELOOP`).
const MAX_LINKS: usize = 255;

fn invalid(msg: String) -> ProcessError {
    ProcessError::InvalidConfig(msg)
}

fn cstr(what: &str, p: &OsStr) -> Result<CString, ProcessError> {
    CString::new(p.as_bytes()).map_err(|_| invalid(format!("{what} contains a NUL byte: {p:?}")))
}

/// `path` (absolute or relative to the root) resolved under `root`: each component's
/// symlink is followed with the root as `/`, and `..` stops at the root. Components that do
/// not exist yet are appended as they are (the child creates them).
///
/// # Errors
/// [`ProcessError::InvalidConfig`] after [`MAX_LINKS`] links (a loop).
pub(super) fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf, ProcessError> {
    let mut done = PathBuf::new(); // relative to root, symlink-free
    let mut todo: Vec<PathBuf> = path
        .components()
        .rev()
        .map(|c| c.as_os_str().into())
        .collect();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match Path::new(&c).components().next() {
            None | Some(Component::RootDir | Component::CurDir | Component::Prefix(_)) => {}
            Some(Component::ParentDir) => {
                done.pop();
            }
            Some(Component::Normal(name)) => {
                let candidate = done.join(name);
                let full = root.join(&candidate);
                match std::fs::symlink_metadata(&full) {
                    Ok(m) if m.file_type().is_symlink() => {
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(invalid(format!(
                                "{} under the root {} has a symlink loop",
                                path.display(),
                                root.display()
                            )));
                        }
                        let target = std::fs::read_link(&full).map_err(|e| {
                            invalid(format!("reading the link {}: {e}", full.display()))
                        })?;
                        if target.is_absolute() {
                            done = PathBuf::new();
                        }
                        todo.extend(
                            target
                                .components()
                                .rev()
                                .map(|c| PathBuf::from(c.as_os_str())),
                        );
                    }
                    _ => done = candidate,
                }
            }
        }
    }
    Ok(root.join(done))
}

/// mount(8)-style options as `mount(2)` flags, propagation flags and the data string.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Options {
    pub(super) flags: libc::c_ulong,
    pub(super) propagation: libc::c_ulong,
    pub(super) data: Vec<String>,
}

/// Parses OCI mount options. A flag this parser does not know is passed to the
/// filesystem as data (`mode=755`), as runc does; `tmpcopyup`, `idmap` and similar runtime
/// extensions are refused by name.
pub(super) fn parse_options(options: &[String]) -> Result<Options, ProcessError> {
    let mut o = Options::default();
    for opt in options {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match opt.as_str() {
            "defaults" => (0, 0),
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let rec = if opt.starts_with('r') {
                    libc::MS_REC
                } else {
                    0
                };
                let kind = match opt.trim_start_matches('r') {
                    "private" => libc::MS_PRIVATE,
                    "shared" => libc::MS_SHARED,
                    "slave" => libc::MS_SLAVE,
                    _ => libc::MS_UNBINDABLE,
                };
                o.propagation = kind | rec;
                continue;
            }
            "tmpcopyup" | "idmap" | "ridmap" | "recursive" | "rro" | "rrw" | "rnosuid"
            | "rnodev" | "rnoexec" | "rnoatime" | "rrelatime" | "rstrictatime" | "nosymfollow"
            | "rnosymfollow" => {
                return Err(invalid(format!(
                    "the mount option \"{opt}\" is not supported by nebula; drop it from the \
                     mount's options"
                )));
            }
            other => {
                o.data.push(other.to_owned());
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
    }
    Ok(o)
}

/// The directories to create for `target` (outermost first), below `root`.
fn parents(root: &Path, target: &Path) -> Result<Vec<CString>, ProcessError> {
    let mut out = Vec::new();
    let mut p = target.parent();
    let mut chain = Vec::new();
    while let Some(d) = p {
        if d == root || !d.starts_with(root) {
            break;
        }
        chain.push(d.to_owned());
        p = d.parent();
    }
    for d in chain.into_iter().rev() {
        out.push(cstr("mount target", d.as_os_str())?);
    }
    Ok(out)
}

fn oci_step(root: &Path, m: &Mount) -> Result<MountStep, ProcessError> {
    if !m.target.is_absolute() {
        return Err(invalid(format!(
            "mount destinations must be absolute: {}",
            m.target.display()
        )));
    }
    let o = parse_options(&m.options)?;
    let target = resolve_in_root(root, &m.target)?;
    let bind = o.flags & libc::MS_BIND != 0 || m.fstype.as_deref() == Some("bind");
    let source = m.source.as_ref();
    let kind = if bind {
        let s = source.ok_or_else(|| {
            invalid(format!(
                "the bind mount on {} has no source",
                m.target.display()
            ))
        })?;
        let meta = std::fs::metadata(s).map_err(|e| {
            invalid(format!(
                "the source {} of the bind mount on {}: {e}",
                s.display(),
                m.target.display()
            ))
        })?;
        if meta.is_dir() {
            MountTarget::Dir
        } else {
            MountTarget::File
        }
    } else {
        MountTarget::Dir
    };
    // runc's "cgroup" mount: the cgroup v2 hierarchy (which a cgroup namespace roots at
    // the context's own cgroup); without cgroup v2 the context has no cgroup, and sees an
    // empty read-only directory there.
    let cgroup2 = crate::features().cgroup_v2.available;
    let (fstype, o) = match m.fstype.as_deref() {
        Some("cgroup") if cgroup2 => (Some("cgroup2"), o),
        Some("cgroup") => (
            Some("tmpfs"),
            Options {
                flags: o.flags | libc::MS_RDONLY,
                propagation: o.propagation,
                data: vec!["size=4k".into(), "mode=0555".into()],
            },
        ),
        other => (other, o),
    };
    let fstype = match fstype {
        _ if bind => None,
        None | Some("") => {
            return Err(invalid(format!(
                "the mount on {} has neither a type nor a bind option",
                m.target.display()
            )));
        }
        Some(t) => Some(cstr("mount type", OsStr::new(t))?),
    };
    let data = if o.data.is_empty() {
        None
    } else {
        Some(cstr("mount data", OsStr::new(&o.data.join(",")))?)
    };
    Ok(MountStep::Oci(Box::new(OciMount {
        source: source
            .map(|s| cstr("mount source", s.as_os_str()))
            .transpose()?,
        parents: parents(root, &target)?,
        target: cstr("mount target", target.as_os_str())?,
        kind,
        fstype,
        flags: o.flags | if bind { libc::MS_BIND } else { 0 },
        data,
        propagation: o.propagation,
    })))
}

/// The default devices every OCI container gets (runtime-spec config-linux.md, "Default
/// Devices"), beside the ones the bundle lists.
const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

fn device_step(root: &Path, d: &Device, may_mknod: bool) -> Result<Vec<MountStep>, ProcessError> {
    if !d.path.is_absolute() {
        return Err(invalid(format!(
            "device paths must be absolute: {}",
            d.path.display()
        )));
    }
    let target = resolve_in_root(root, &d.path)?;
    let parents = parents(root, &target)?;
    let path = cstr("device path", target.as_os_str())?;
    if may_mknod {
        let kind = match d.kind {
            DeviceKind::Char => libc::S_IFCHR,
            DeviceKind::Block => libc::S_IFBLK,
            DeviceKind::Fifo => libc::S_IFIFO,
        };
        let major = u32::try_from(d.major)
            .map_err(|_| invalid(format!("device {}: major out of range", d.path.display())))?;
        let minor = u32::try_from(d.minor)
            .map_err(|_| invalid(format!("device {}: minor out of range", d.path.display())))?;
        return Ok(vec![MountStep::Mknod {
            path,
            parents,
            mode: kind | (d.mode & 0o7777),
            dev: libc::makedev(major, minor),
            owner: (d.uid, d.gid),
        }]);
    }
    // In a user namespace mknod is refused: bind the host's node of the same path, if it is
    // the same device.
    let host = Path::new(&d.path);
    let meta = std::fs::metadata(host).map_err(|e| {
        invalid(format!(
            "device {}: a context with a user namespace cannot create device nodes, and the \
             host's {} to bind instead: {e}",
            d.path.display(),
            host.display()
        ))
    })?;
    use std::os::unix::fs::MetadataExt;
    let rdev = meta.rdev();
    if (libc::major(rdev) as u64, libc::minor(rdev) as u64) != (d.major, d.minor) {
        return Err(invalid(format!(
            "device {}: a context with a user namespace cannot create device nodes, and the \
             host's node of that path is {}:{}, not {}:{}",
            d.path.display(),
            libc::major(rdev),
            libc::minor(rdev),
            d.major,
            d.minor
        )));
    }
    Ok(vec![MountStep::Oci(Box::new(OciMount {
        source: Some(cstr("device path", host.as_os_str())?),
        target: path,
        parents,
        kind: MountTarget::File,
        fstype: None,
        flags: libc::MS_BIND,
        data: None,
        propagation: 0,
    }))])
}

/// The steps for [`ProcessConfig::root`], before the masks and read-only paths: bind the root
/// onto itself, its mounts, devices (the bundle's and the defaults), the `/dev` links, then
/// `pivot_root`. Empty without a root.
pub(super) fn steps(config: &ProcessConfig) -> Result<Vec<MountStep>, ProcessError> {
    let Some(rootfs) = &config.root else {
        return Ok(Vec::new());
    };
    let root = rootfs.path.canonicalize().map_err(|e| {
        invalid(format!(
            "the root filesystem {}: {e}",
            rootfs.path.display()
        ))
    })?;
    if !root.is_dir() {
        return Err(invalid(format!(
            "the root filesystem {} is not a directory",
            root.display()
        )));
    }
    let root_c = cstr("root", root.as_os_str())?;
    let mut steps = vec![MountStep::Oci(Box::new(OciMount {
        source: Some(root_c.clone()),
        target: root_c.clone(),
        parents: Vec::new(),
        kind: MountTarget::Dir,
        fstype: None,
        flags: libc::MS_BIND | libc::MS_REC,
        data: None,
        propagation: 0,
    }))];
    for m in &config.mounts {
        steps.push(oci_step(&root, m)?);
    }
    let may_mknod = !config.namespaces.contains(Namespaces::USER);
    let mut devices = config.devices.clone();
    for (path, major, minor) in DEFAULT_DEVICES {
        if !devices.iter().any(|d| d.path == Path::new(path)) {
            devices.push(Device {
                path: path.into(),
                kind: DeviceKind::Char,
                major,
                minor,
                mode: 0o666,
                uid: 0,
                gid: 0,
            });
        }
    }
    for d in &devices {
        steps.extend(device_step(&root, d, may_mknod)?);
    }
    for (target, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
        ("/proc/kcore", "/dev/core"),
        ("pts/ptmx", "/dev/ptmx"),
    ] {
        let at = resolve_in_root(&root, Path::new(link))?;
        if at.parent().is_some_and(Path::is_dir)
            || config.mounts.iter().any(|m| m.target == Path::new("/dev"))
        {
            steps.push(MountStep::Symlink {
                target: cstr("link", OsStr::new(target))?,
                link: cstr("link", at.as_os_str())?,
            });
        }
    }
    steps.push(MountStep::PivotRoot { new_root: root_c });
    if let Some(p) = rootfs.propagation {
        steps.push(MountStep::Propagation {
            target: c"/".into(),
            flags: p.flags(),
        });
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("nebula-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", dir.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../..", dir.join("usr/lib/up")).unwrap();
        std::os::unix::fs::symlink("loop", dir.join("loop")).unwrap();
        let r = |p: &str| resolve_in_root(&dir, Path::new(p)).unwrap();
        assert_eq!(r("/lib/x"), dir.join("usr/lib/x"));
        assert_eq!(r("/usr/lib/up/etc"), dir.join("etc"));
        assert_eq!(r("/../../etc/passwd"), dir.join("etc/passwd"));
        assert_eq!(r("/new/dir"), dir.join("new/dir"));
        assert!(resolve_in_root(&dir, Path::new("/loop/x")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn options_become_flags_and_data() {
        let o = |v: &[&str]| parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let p = o(&["nosuid", "strictatime", "mode=755", "size=65536k"]).unwrap();
        assert_eq!(p.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(p.data, ["mode=755", "size=65536k"]);
        let p = o(&["rbind", "ro", "rprivate"]).unwrap();
        assert_eq!(p.flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert_eq!(p.propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(o(&["ro", "rw"]).unwrap().flags, 0);
        let e = o(&["tmpcopyup"]).unwrap_err().to_string();
        assert!(e.contains("tmpcopyup"), "{e}");
    }
}
