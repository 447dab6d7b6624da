//! The guest's root filesystem: a `newc` cpio archive (the format the kernel unpacks into
//! its rootfs, `Documentation/driver-api/early-userspace/buffer-format.rst`), built from a
//! static busybox, the command's program, the libraries `ldd` names for it, the caller's
//! files and nebula's `/init`; cached under `<cache>/initramfs/<sha256>.cpio`, keyed by the
//! SHA-256 of every entry's guest path, mode and bytes, so a second context with the same
//! inputs only re-reads and hashes them. The per-run part (the command line and the
//! environment, `/cmd`) is a second small archive appended to the cached one: the kernel
//! unpacks concatenated archives in order.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::config::{HardwareError, next_serial};
use sha2::{Digest, Sha256};

/// The static busybox the guest runs as its shell and `/init` interpreter.
pub(crate) const BUSYBOX: &str = "/bin/busybox";

/// nebula's `/init`, the guest's pid 1: mounts, then runs `/cmd` with stdout on ttyS1 and
/// stderr on ttyS2, reports on ttyS3 and reboots (which ends qemu: `-no-reboot`).
pub(crate) const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root
mount -t tmpfs -o mode=1777 tmpfs /tmp
for t in 1 2 3; do stty -F /dev/ttyS$t raw -echo; done
echo NEBULA_STARTED >/dev/ttyS3
cd /tmp
/bin/busybox sh /cmd </dev/null >/dev/ttyS1 2>/dev/ttyS2
echo "NEBULA_RC=$?" >/dev/ttyS3
/bin/busybox reboot -f
"#;

#[derive(Clone, Debug)]
enum Data {
    Dir,
    File { bytes: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// An archive's entries by guest path (absolute, no trailing `/`).
#[derive(Debug, Default)]
pub(crate) struct Tree {
    entries: BTreeMap<String, Data>,
}

impl Tree {
    /// Adds `guest` and its parent directories.
    fn add(&mut self, guest: &str, data: Data) {
        let mut at = String::new();
        let parts: Vec<&str> = guest.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            at.push('/');
            at.push_str(part);
            if i + 1 < parts.len() {
                self.entries.entry(at.clone()).or_insert(Data::Dir);
            }
        }
        self.entries.insert(at, data);
    }

    pub(crate) fn add_bytes(&mut self, guest: &str, bytes: Vec<u8>, mode: u32) {
        self.add(guest, Data::File { bytes, mode });
    }

    fn add_dir(&mut self, guest: &str) {
        self.add(guest, Data::Dir);
    }

    /// Copies a host file (following symlinks) to `guest`, keeping its permission bits.
    pub(crate) fn add_host_file(&mut self, host: &Path, guest: &str) -> Result<(), HardwareError> {
        let read = |source| HardwareError::ReadInput {
            path: host.to_owned(),
            source,
        };
        let meta = fs::metadata(host).map_err(read)?;
        if !meta.is_file() {
            return Err(read(io::Error::other("not a regular file")));
        }
        let bytes = fs::read(host).map_err(read)?;
        self.add_bytes(guest, bytes, meta.permissions().mode() & 0o7777);
        Ok(())
    }

    /// Copies a host file and, when it is executable, every library `ldd` names for it
    /// (each at the path `ldd` reports, as the VM test tier does).
    pub(crate) fn add_with_libs(&mut self, host: &Path, guest: &str) -> Result<(), HardwareError> {
        self.add_host_file(host, guest)?;
        let exec = fs::metadata(host).is_ok_and(|m| m.mode() & 0o111 != 0);
        if exec {
            for lib in ldd(host)? {
                let g = lib.to_string_lossy().into_owned();
                if !self.entries.contains_key(&g) {
                    self.add_host_file(&lib, &g)?;
                }
            }
        }
        Ok(())
    }

    /// The SHA-256 of every entry (path, kind, mode, bytes), in path order; each field is
    /// prefixed with its length, so no two trees give the same input.
    pub(crate) fn digest(&self) -> String {
        fn field(h: &mut Sha256, data: &[u8]) {
            h.update((data.len() as u64).to_le_bytes());
            h.update(data);
        }
        let mut h = Sha256::new();
        field(&mut h, b"nebula-initramfs-v1");
        for (path, data) in &self.entries {
            field(&mut h, path.as_bytes());
            match data {
                Data::Dir => field(&mut h, b"d"),
                Data::File { bytes, mode } => {
                    field(&mut h, b"f");
                    field(&mut h, &mode.to_le_bytes());
                    field(&mut h, bytes);
                }
                Data::Symlink(t) => {
                    field(&mut h, b"l");
                    field(&mut h, t.as_bytes());
                }
            }
        }
        h.finalize()
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                use std::fmt::Write;
                let _ = write!(s, "{b:02x}");
                s
            })
    }

    /// The archive in `newc` format, terminated by `TRAILER!!!`.
    ///
    /// # Errors
    /// `InvalidInput` for what newc's 32-bit header fields cannot describe: a file of 4 GiB
    /// or more, a name as long, or more than `u32::MAX` entries.
    pub(crate) fn cpio(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        for (i, (path, data)) in self.entries.iter().enumerate() {
            let name = path.trim_start_matches('/');
            let (mode, body): (u32, &[u8]) = match data {
                Data::Dir => (0o040755, &[]),
                Data::File { bytes, mode } => (0o100000 | mode, bytes),
                Data::Symlink(t) => (0o120777, t.as_bytes()),
            };
            let nlink = if matches!(data, Data::Dir) { 2 } else { 1 };
            // Inode 0 is left to the trailer.
            let ino = header_field(name, "inode number", i + 1)?;
            cpio_entry(&mut out, ino, mode, nlink, name, body)?;
        }
        cpio_entry(&mut out, 0, 0, 1, "TRAILER!!!", &[])?;
        Ok(out)
    }
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn header_field(name: &str, what: &str, n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name}: a {what} of {n} does not fit a newc cpio header"),
        )
    })
}

fn cpio_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    body: &[u8],
) -> io::Result<()> {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        header_field(name, "file size", body.len())?,
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        // With its NUL.
        header_field(name, "name size", name.len() + 1)?,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(body);
    pad4(out);
    Ok(())
}

/// The libraries `ldd` names for `program` (none for a static program).
pub(crate) fn ldd(program: &Path) -> Result<Vec<PathBuf>, HardwareError> {
    let out = Command::new("ldd")
        .arg(program)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| HardwareError::Ldd {
            program: program.to_owned(),
            source,
        })?;
    // "not a dynamic executable" (exit 1): a static program or not an ELF file
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_ldd(&text))
}

/// Every absolute path in `ldd`'s output (`libc.so.6 => /lib/.../libc.so.6 (0x...)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`); `linux-vdso.so.1` has none.
pub(crate) fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libs = Vec::new();
    for word in text.split_whitespace() {
        if word.starts_with('/') {
            let p = PathBuf::from(word);
            if !libs.contains(&p) {
                libs.push(p);
            }
        }
    }
    libs
}

/// Is `path` a statically linked program (ldd names no library)?
pub(crate) fn is_static(path: &Path) -> Result<bool, HardwareError> {
    Ok(ldd(path)?.is_empty())
}

/// The base of every guest: directories, busybox (+ `/bin/sh`), `/init`, passwd and group.
pub(crate) fn base_tree() -> Result<Tree, HardwareError> {
    let mut t = Tree::default();
    for d in [
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/etc",
        "/root",
        "/run",
    ] {
        t.add_dir(d);
    }
    t.add_host_file(Path::new(BUSYBOX), BUSYBOX)?;
    t.add("/bin/sh", Data::Symlink("busybox".into()));
    t.add_bytes("/init", INIT.as_bytes().to_vec(), 0o755);
    t.add_bytes(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
            .to_vec(),
        0o644,
    );
    t.add_bytes(
        "/etc/group",
        b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        0o644,
    );
    Ok(t)
}

/// Whether the guest path is one nebula's own guest needs unchanged.
pub(crate) fn reserved(guest: &str) -> bool {
    matches!(guest, "/init" | "/cmd" | BUSYBOX) || guest == "/" || guest.is_empty()
}

/// Writes `tree` into the cache (`<dir>/<digest>.cpio`) unless it is there; returns the
/// path and whether it was already cached.
pub(crate) fn cached(tree: &Tree, dir: &Path) -> Result<(PathBuf, bool), HardwareError> {
    let path = dir.join(format!("{}.cpio", tree.digest()));
    if path.is_file() {
        return Ok((path, true));
    }
    let write = |source| HardwareError::WriteCache {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(write)?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), next_serial()));
    let res = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&tree.cpio()?).and_then(|()| f.sync_data()))
        .and_then(|()| fs::rename(&tmp, &path)); // atomic publish
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(write(e));
    }
    Ok((path, false))
}

/// Quotes a word for `sh`: single quotes, `'` as `'\''`.
pub(crate) fn sh_quote(word: &[u8]) -> Vec<u8> {
    let mut q = vec![b'\''];
    for &b in word {
        if b == b'\'' {
            q.extend_from_slice(b"'\\''");
        } else {
            q.push(b);
        }
    }
    q.push(b'\'');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn cpio_is_newc_with_parents_and_trailer() {
        let mut t = Tree::default();
        t.add_bytes("/a/b/c", b"hello".to_vec(), 0o644);
        let c = t.cpio().unwrap();
        assert!(c.starts_with(b"070701"));
        assert_eq!(c.len() % 4, 0);
        let text = String::from_utf8_lossy(&c);
        let (a, ab, abc) = (text.find("a\0"), text.find("a/b\0"), text.find("a/b/c\0"));
        assert!(a < ab && ab < abc && a.is_some(), "parents first: {text:?}");
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        // the cpio tool agrees, when it is installed
        if let Ok(mut child) = Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        {
            child.stdin.take().unwrap().write_all(&c).unwrap();
            let out = child.wait_with_output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), "a\na/b\na/b/c\n");
        }
    }

    #[test]
    fn digest_depends_on_content_path_and_mode() {
        let mk = |p: &str, b: &[u8], m: u32| {
            let mut t = Tree::default();
            t.add_bytes(p, b.to_vec(), m);
            t.digest()
        };
        let d = mk("/x", b"1", 0o644);
        assert_eq!(d, mk("/x", b"1", 0o644));
        assert_ne!(d, mk("/x", b"2", 0o644));
        assert_ne!(d, mk("/y", b"1", 0o644));
        assert_ne!(d, mk("/x", b"1", 0o755));
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote(b"it's"), b"'it'\\''s'".to_vec());
        assert_eq!(sh_quote(b""), b"''".to_vec());
    }
}
