//! The file plumbing under [`CgroupRoot`](super::CgroupRoot) and [`Leaf`](super::Leaf): a
//! cgroup directory held open by fd, with dirfd-relative reads, single-`write(2)` writes and
//! `poll(POLLPRI)` waits.
//!
//! Interface files are small kernfs files: a value must reach the kernel in one `write(2)`
//! (a short write would be a different value), and a read is repeated from offset 0 for a
//! fresh snapshot. Reading also rearms kernfs change notification for that open file: after a
//! read, `poll` with `POLLPRI` sleeps until the kernel calls `cgroup_file_notify` on it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{Mode, OFlags, SeekFrom, openat, seek};
use rustix::io::Errno;

use super::error::{CGROUP2_SUPER_MAGIC, CgroupError};

/// A cgroup directory, open by fd, and the path it was opened at (for messages).
#[derive(Debug)]
pub(crate) struct CgroupDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Flags for the directory fd: readable (so it is accepted by `clone3(CLONE_INTO_CGROUP)` and
/// usable as an `openat` base) and close-on-exec (contexts must not inherit it).
const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC);

impl CgroupDir {
    /// Opens the directory at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, CgroupError> {
        let fd =
            rustix::fs::open(path, DIR_FLAGS, Mode::empty()).map_err(|e| CgroupError::OpenDir {
                path: path.to_owned(),
                source: e.into(),
            })?;
        Ok(CgroupDir {
            fd,
            path: path.to_owned(),
        })
    }

    /// Opens a cgroup directory named by someone nebula does not trust (a registry entry
    /// that its user wrote): no symlink and no `/proc` magic link is followed on the way
    /// (`openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`), and the directory reached
    /// must be on cgroup2 (`fstatfs` of the fd, so nothing can be swapped in after the
    /// check). A cgroup2 directory holds only the kernel's interface files and child
    /// cgroups: files opened under it are the kernel's, not a FIFO or `/etc/shadow`.
    pub(crate) fn open_untrusted(path: &Path) -> Result<Self, CgroupError> {
        use rustix::fs::ResolveFlags;
        let open_err = |e: Errno| CgroupError::OpenDir {
            path: path.to_owned(),
            source: e.into(),
        };
        if !path.is_absolute() {
            return Err(open_err(Errno::INVAL));
        }
        let fd = rustix::fs::openat2(
            rustix::fs::CWD,
            path,
            DIR_FLAGS,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(open_err)?;
        let st = rustix::fs::fstatfs(&fd).map_err(|e| CgroupError::Statfs {
            path: path.to_owned(),
            source: e.into(),
        })?;
        // Magics are 32-bit; `f_type` is a signed word on some targets: the mask keeps the
        // kernel's bits whatever the sign.
        #[allow(clippy::cast_sign_loss)]
        let found = (st.f_type as u64) & 0xffff_ffff;
        if found != super::CGROUP2_SUPER_MAGIC {
            return Err(CgroupError::NotCgroup2 {
                path: path.to_owned(),
                found,
            });
        }
        Ok(CgroupDir {
            fd,
            path: path.to_owned(),
        })
    }

    /// The uid that owns the directory (`fstat` of the fd).
    pub(crate) fn owner(&self) -> io::Result<u32> {
        Ok(rustix::fs::fstat(&self.fd)?.st_uid)
    }

    /// Opens the child directory `name` of this one.
    pub(crate) fn open_child(&self, name: &str) -> Result<Self, CgroupError> {
        let path = self.path.join(name);
        let fd =
            openat(&self.fd, name, DIR_FLAGS, Mode::empty()).map_err(|e| CgroupError::OpenDir {
                path: path.clone(),
                source: e.into(),
            })?;
        Ok(CgroupDir { fd, path })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn file_path(&self, file: &str) -> PathBuf {
        self.path.join(file)
    }

    /// Opens an interface file of this directory: never through a symlink, never blocking
    /// in `open` (a FIFO where a cgroup file should be would otherwise hang the caller).
    pub(crate) fn open_file(&self, file: &str, flags: OFlags) -> io::Result<OwnedFd> {
        Ok(openat(
            &self.fd,
            file,
            flags | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
        )?)
    }

    /// The uid that owns interface file `file` (`fstat` of an `O_PATH` fd on it).
    pub(crate) fn file_owner(&self, file: &str) -> io::Result<u32> {
        let fd = openat(
            &self.fd,
            file,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(rustix::fs::fstat(&fd)?.st_uid)
    }

    /// Reads a whole interface file; the raw `io::Error` so callers can tell `ENOENT` apart.
    pub(crate) fn read_raw(&self, file: &str) -> io::Result<String> {
        let fd = self.open_file(file, OFlags::RDONLY)?;
        read_from_start(&fd)
    }

    /// Reads a whole interface file.
    pub(crate) fn read(&self, file: &str) -> Result<String, CgroupError> {
        self.read_raw(file).map_err(|source| CgroupError::Read {
            path: self.file_path(file),
            source,
        })
    }

    /// Writes `value` with one `write(2)`; the raw `io::Error` for the caller to classify.
    pub(crate) fn write_raw(&self, file: &str, value: &[u8]) -> io::Result<()> {
        let fd = self.open_file(file, OFlags::WRONLY)?;
        write_once(&fd, value)
    }
}

/// The most [`read_from_start`] reads: far above any interface file (`cgroup.procs` of
/// 100,000 processes is about 700 KiB), and a bound on what a file that never ends (a
/// `/dev/zero` where a cgroup file should be) can cost.
pub(crate) const MAX_FILE_LEN: usize = 4 << 20;

/// Reads a kernfs file from offset 0 to its end, at most [`MAX_FILE_LEN`] bytes (`EFBIG`
/// beyond).
pub(crate) fn read_from_start(fd: &OwnedFd) -> io::Result<String> {
    retry_intr(|| seek(fd, SeekFrom::Start(0)))?;
    let mut out = Vec::with_capacity(256);
    let mut buf = [0u8; 4096];
    loop {
        let n = retry_intr(|| rustix::io::read(fd, &mut buf[..]))?;
        if n == 0 {
            break;
        }
        if out.len() + n > MAX_FILE_LEN {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// One `write(2)` of the whole value: a partial write would hand the kernel another value.
pub(crate) fn write_once(fd: &OwnedFd, value: &[u8]) -> io::Result<()> {
    let n = retry_intr(|| rustix::io::write(fd, value))?;
    if n != value.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes", value.len()),
        ));
    }
    Ok(())
}

fn retry_intr<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// What one `poll(POLLPRI)` wait saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// `POLLPRI` without `POLLERR`: a PSI trigger fired.
    Pri,
    /// `POLLERR` (with or without `POLLPRI`): kernfs reports a change to a notified file this
    /// way, and a PSI file whose trigger is gone too.
    Err,
    /// The timeout expired first.
    Timeout,
}

/// Polls `fd` for `POLLPRI` until `deadline`, retrying on `EINTR`.
pub(crate) fn poll_pri(fd: BorrowedFd<'_>, deadline: Instant) -> io::Result<Wake> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Wake::Timeout);
        }
        // Round up to a whole millisecond so a sub-millisecond remainder does not spin.
        let left = left.max(Duration::from_millis(1));
        let ts = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::PRI)];
        match poll(&mut fds, Some(&ts)) {
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(0) => continue, // re-check the deadline
            Ok(_) => {
                let r = fds[0].revents();
                if r.intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL) {
                    return Ok(Wake::Err);
                }
                if r.contains(PollFlags::PRI) {
                    return Ok(Wake::Pri);
                }
            }
        }
    }
}

/// Validates the name of a cgroup directory: one path component the kernel will accept.
pub(crate) fn validate_name(name: &str) -> Result<(), CgroupError> {
    let bad = |reason| {
        Err(CgroupError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name == "." || name == ".." {
        return bad("not a directory name");
    }
    if name.contains('/') {
        return bad("contains '/': give a single directory name");
    }
    if name.contains('\n') || name.contains('\0') {
        return bad("contains a newline or NUL");
    }
    if name.len() > 255 {
        return bad("longer than 255 bytes");
    }
    if name.starts_with("cgroup.") {
        return bad("names starting with \"cgroup.\" collide with interface files");
    }
    Ok(())
}

/// Checks with `statfs(2)` that `path` is on a cgroup v2 filesystem.
///
/// # Errors
///
/// [`CgroupError::Statfs`] when the path cannot be examined; [`CgroupError::NotCgroup2`]
/// naming the filesystem found otherwise (a cgroup v1 or hybrid `/sys/fs/cgroup` is tmpfs).
pub fn verify_cgroup2(path: impl AsRef<Path>) -> Result<(), CgroupError> {
    let path = path.as_ref();
    let st = rustix::fs::statfs(path).map_err(|e| CgroupError::Statfs {
        path: path.to_owned(),
        source: e.into(),
    })?;
    // Magics are 32-bit; `f_type` is a signed word on some targets: the mask keeps the
    // kernel's bits whatever the sign.
    #[allow(clippy::cast_sign_loss)]
    let found = (st.f_type as u64) & 0xffff_ffff;
    if found != CGROUP2_SUPER_MAGIC {
        return Err(CgroupError::NotCgroup2 {
            path: path.to_owned(),
            found,
        });
    }
    Ok(())
}

/// The controllers a cgroup directory offers to itself (`cgroup.controllers`), by kernel
/// name, including ones this manager does not configure (`cpuset`, `hugetlb`, ...).
///
/// # Errors
///
/// As [`verify_cgroup2`]; [`CgroupError::Read`] when the file cannot be read.
pub fn available_controllers(cgroup_dir: impl AsRef<Path>) -> Result<Vec<String>, CgroupError> {
    let dir = cgroup_dir.as_ref();
    verify_cgroup2(dir)?;
    let path = dir.join("cgroup.controllers");
    let text =
        std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
    Ok(text.split_whitespace().map(str::to_owned).collect())
}

/// The cgroup v2 path of process `pid` (`None` for the calling process) relative to the
/// cgroup2 mount, from `/proc/<pid>/cgroup`, e.g. `/nebula/ctx-1`. `Ok(None)` when the process
/// is in no v2 hierarchy.
///
/// # Errors
///
/// [`CgroupError::Read`] when the proc file cannot be read.
pub fn process_cgroup(pid: Option<rustix::process::Pid>) -> Result<Option<String>, CgroupError> {
    let path = match pid {
        Some(p) => format!("/proc/{}/cgroup", p.as_raw_pid()),
        None => "/proc/self/cgroup".to_owned(),
    };
    let text = std::fs::read_to_string(&path).map_err(|source| CgroupError::Read {
        path: path.into(),
        source,
    })?;
    Ok(super::parse::parse_proc_cgroup(&text).map(str::to_owned))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A temporary directory removed on drop (no tempfile crate in this package).
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "nebula-cgroup-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn read_write_relative_to_the_dir_fd() {
        let t = TempDir::new("fs");
        std::fs::write(t.0.join("memory.max"), "max\n").unwrap();
        let d = CgroupDir::open(&t.0).unwrap();
        assert_eq!(d.read("memory.max").unwrap(), "max\n");
        d.write_raw("memory.max", b"33554432").unwrap();
        assert_eq!(d.read("memory.max").unwrap(), "33554432");
        let e = d.read("nope").unwrap_err();
        assert!(matches!(e, CgroupError::Read { .. }), "{e}");
        assert!(e.to_string().contains("/nope"), "{e}");
        let e = d.write_raw("nope", b"1").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        std::fs::create_dir(t.0.join("leaf")).unwrap();
        let c = d.open_child("leaf").unwrap();
        assert_eq!(c.path(), t.0.join("leaf"));
        assert!(d.open_child("missing").is_err());
    }

    #[test]
    fn rereads_from_offset_zero() {
        let t = TempDir::new("fs");
        let f = t.0.join("cgroup.events");
        std::fs::write(&f, "populated 1\nfrozen 0\n").unwrap();
        let d = CgroupDir::open(&t.0).unwrap();
        let fd = d.open_file("cgroup.events", OFlags::RDONLY).unwrap();
        assert_eq!(read_from_start(&fd).unwrap(), "populated 1\nfrozen 0\n");
        assert_eq!(read_from_start(&fd).unwrap(), "populated 1\nfrozen 0\n");
    }

    #[test]
    fn poll_times_out_on_a_quiet_file() {
        // A pipe never raises POLLPRI: the wait ends at the deadline.
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let t0 = Instant::now();
        let w = poll_pri(r.as_fd(), t0 + Duration::from_millis(30)).unwrap();
        assert_eq!(w, Wake::Timeout);
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn names() {
        for ok in ["ctx-1", "nebula", "a.b", "tenant_7"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\nb",
            "cgroup.procs",
            &"x".repeat(256),
        ] {
            let e = validate_name(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn refuses_what_is_not_cgroup2() {
        // Reading only: statfs never changes anything. On a cgroup v1 or hybrid host
        // /sys/fs/cgroup is a tmpfs; a temp directory is never cgroup2.
        let tmp = std::env::temp_dir();
        let e = verify_cgroup2(&tmp).unwrap_err();
        assert!(matches!(e, CgroupError::NotCgroup2 { .. }), "{e}");
        assert!(e.to_string().contains("is not a cgroup v2 mount"), "{e}");
        let e = verify_cgroup2("/nonexistent/nebula").unwrap_err();
        assert!(matches!(e, CgroupError::Statfs { .. }), "{e}");
        assert!(available_controllers(&tmp).is_err());
    }

    #[test]
    fn own_cgroup_is_readable() {
        // Every Linux process has a /proc/self/cgroup; the v2 line may or may not exist.
        process_cgroup(None).unwrap();
    }
}
