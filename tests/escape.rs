//! Adversarial programs (STYLE.md practice 10): each test runs code inside a default process
//! context that tries to get out, and asserts on the answer the kernel gave the attempt.
//!
//! Every attempt runs twice where the layers differ: under the default configuration
//! (namespaces + dropped capabilities + the `default` seccomp profile), and with seccomp off
//! (`Profile::None`), which shows what the namespaces and the capability drop alone answer,
//! so that a regression in one layer is not hidden by the other.
//!
//! Host tier: needs root and user namespaces, no cgroups (the contexts run without a leaf on
//! the host and with one in the VM; nothing asserted here depends on it).
#![allow(unsafe_code)]

mod common;

use std::ffi::CString;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nebula_memory::isolation::process::{Command, Network, ProcessConfig, ProcessIsolation, Stdio};
use nebula_memory::seccomp::Profile;

fn ready() -> bool {
    common::require(common::is_root(), "needs root (namespaces, mounts)")
        && common::require(
            nebula_memory::features().user_namespaces.available,
            "needs user namespaces (nebula-ctl probe)",
        )
}

fn config(seccomp: bool) -> ProcessConfig {
    let c = ProcessConfig::new()
        .output(Stdio::Capture, Stdio::Capture)
        .wall_time(Duration::from_secs(60));
    if seccomp { c } else { c.seccomp(Profile::None) }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A system call's answer: `Ok(return value)` or `Err(errno)`.
type Answer = Result<i64, i32>;

fn answer(r: i64) -> Answer {
    if r < 0 { Err(errno()) } else { Ok(r) }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// Runs `attempt` in a fresh context with `cfg` and returns what it got.
fn inside<T, F>(cfg: ProcessConfig, attempt: F) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: FnOnce() -> T,
{
    let iso = ProcessIsolation::new(cfg).unwrap_or_else(|e| panic!("ProcessIsolation::new: {e}"));
    let r = iso.run_closure(attempt).expect("run_closure");
    match r.result {
        Ok(v) => v,
        Err(e) => panic!("the attempt did not report back: {e:?}; {:?}", r.outcome),
    }
}

/// The same attempt under both configurations.
fn both<F>(attempt: F) -> (Answer, Answer)
where
    F: Fn() -> Answer + Copy,
{
    (
        inside(config(true), attempt),
        inside(config(false), attempt),
    )
}

#[test]
fn sysfs_shows_only_the_contexts_network() {
    if !ready() {
        return;
    }
    let host: Vec<String> = list("/sys/class/net");
    let inner: Vec<String> = inside(config(true), || list("/sys/class/net"));
    assert_eq!(inner, vec!["lo".to_owned()], "host has {host:?}");
    // The exec path mounts the same (pid 1 of a clone3'd context).
    let iso = ProcessIsolation::new(config(true)).unwrap();
    let out = iso
        .run_command(&Command::new("/bin/ls").arg("/sys/class/net"))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout_text(), "lo\n");
    // The fresh sysfs is read-only.
    let w: Answer = inside(config(true), || {
        let p = cstr("/sys/kernel/nebula-escape");
        // SAFETY: p is a live NUL-terminated path.
        answer(unsafe { libc::mkdir(p.as_ptr(), 0o755) }.into())
    });
    assert_eq!(w, Err(libc::EROFS));
    // With the host's network there is no sysfs to show: /sys is an empty mask.
    let masked: (Vec<String>, Answer) = inside(config(true).network(Network::Host), || {
        let p = cstr("/sys/x");
        // SAFETY: p is a live NUL-terminated path.
        let w = answer(unsafe { libc::mkdir(p.as_ptr(), 0o755) }.into());
        (list("/sys"), w)
    });
    assert_eq!(masked, (Vec::new(), Err(libc::EROFS)));
}

fn list(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => vec![format!("error: {e}")],
    };
    v.sort();
    v
}

/// A sibling context (a `sleep`) and the host pid of its pid 1.
fn with_sibling(f: impl FnOnce(i32)) {
    let iso = ProcessIsolation::new(config(true).output(Stdio::Null, Stdio::Null)).unwrap();
    let sib = iso
        .spawn_command(&Command::new("/bin/sleep").arg("60"))
        .unwrap();
    let pid = sib.pid();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "sibling {pid} is running on the host"
    );
    f(pid);
    sib.kill().unwrap();
    let out = sib.wait().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
}

#[test]
fn another_contexts_memory_is_out_of_reach() {
    if !ready() {
        return;
    }
    with_sibling(|pid| {
        let vm_read = move || {
            let mut buf = [0u8; 16];
            let local = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let remote = libc::iovec {
                iov_base: 0x400000 as *mut libc::c_void,
                iov_len: 16,
            };
            // SAFETY: both iovecs are live for the call; the local one points at buf.
            answer(unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) } as i64)
        };
        // Seccomp refuses the call; without it the sibling's pid does not exist in here.
        assert_eq!(both(vm_read), (Err(libc::EPERM), Err(libc::ESRCH)));
        let attach = move || {
            // SAFETY: PTRACE_ATTACH with integer arguments only.
            answer(unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) })
        };
        assert_eq!(both(attach), (Err(libc::EPERM), Err(libc::ESRCH)));
        let mem = move || {
            let p = cstr(&format!("/proc/{pid}/mem"));
            // SAFETY: p is a live NUL-terminated path.
            answer(unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }.into())
        };
        assert_eq!(both(mem), (Err(libc::ENOENT), Err(libc::ENOENT)));
    });
}

#[test]
fn the_host_filesystem_is_read_only() {
    if !ready() {
        return;
    }
    let create = || {
        let p = cstr("/nebula-escape-probe");
        // SAFETY: p is a live NUL-terminated path.
        answer(unsafe { libc::open(p.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) }.into())
    };
    assert_eq!(both(create), (Err(libc::EROFS), Err(libc::EROFS)));
    // A file of the host's that the test owns: opening it for writing, truncating it and
    // removing it all meet the read-only mount.
    // (In a directory of its own under /var/tmp, searchable by everyone: /tmp would be hidden
    // by the context's private /tmp, and a path through a 0700 directory such as /root would
    // be refused at lookup, before the mount is consulted.)
    let dir = std::path::PathBuf::from(format!("/var/tmp/nebula-escape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, b"host").unwrap();
    let path = victim.to_str().unwrap().to_owned();
    let p = path.clone();
    let tamper = move || -> [Answer; 3] {
        let c = cstr(&p);
        // SAFETY: c is a live NUL-terminated path for each call.
        unsafe {
            [
                answer(libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_APPEND).into()),
                answer(libc::truncate(c.as_ptr(), 0).into()),
                answer(libc::unlink(c.as_ptr()).into()),
            ]
        }
    };
    // Root inside is an unprivileged host uid of the context's own range (the default
    // identity): the kernel's permission check refuses the writes (EACCES) before the
    // read-only mount would (EROFS); unlink needs write access to the directory's mount.
    // truncate(2) checks the mount first on some kernels (Debian's 6.1 in the VM tier: EROFS)
    // and the permission first on others (6.18 here: EACCES); both refuse.
    for cfg in [config(true), config(false)] {
        let [open, truncate, unlink] = inside(cfg, tamper.clone());
        assert_eq!(open, Err(libc::EACCES));
        assert!(
            matches!(truncate, Err(libc::EACCES | libc::EROFS)),
            "truncate: {truncate:?}"
        );
        assert_eq!(unlink, Err(libc::EROFS));
    }
    // Mapped to host root on request, only the read-only mount stands in the way.
    let rofs = [Err(libc::EROFS); 3];
    assert_eq!(inside(config(true).root_maps_to(0, 0), tamper), rofs);
    assert_eq!(std::fs::read(&victim).unwrap(), b"host");
    std::fs::remove_file(&victim).unwrap();
    std::fs::remove_dir(&dir).unwrap();
    assert!(!std::path::Path::new("/nebula-escape-probe").exists());
    // The private /tmp is writable, and none of it reaches the host's.
    let tmp: Answer = inside(config(true), || {
        let p = cstr("/tmp/nebula-escape-probe");
        // SAFETY: p is a live NUL-terminated path.
        answer(unsafe { libc::open(p.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) }.into())
    });
    assert!(tmp.is_ok(), "{tmp:?}");
    assert!(!std::path::Path::new("/tmp/nebula-escape-probe").exists());
}

#[test]
fn the_hosts_loopback_is_not_reachable() {
    if !ready() {
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let connect = move || {
        // SAFETY: socket(2) with integer arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(errno());
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap(),
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).unwrap();
        // SAFETY: addr is a live sockaddr_in of the size passed; fd is our socket.
        let r = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_in).cast(), len) };
        let a = answer(r.into());
        // SAFETY: fd is ours, closed once.
        unsafe { libc::close(fd) };
        a
    };
    // The context's lo is up and has nothing listening: the host's listener is elsewhere.
    assert_eq!(
        both(connect),
        (Err(libc::ECONNREFUSED), Err(libc::ECONNREFUSED))
    );
    assert_eq!(
        l.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "a connection from the context reached the host"
    );
    // And no interface but lo exists in there.
    let ifs: Vec<String> = inside(config(true), || {
        std::fs::read_to_string("/proc/net/dev")
            .unwrap()
            .lines()
            .skip(2)
            .map(|l| l.split(':').next().unwrap().trim().to_owned())
            .collect()
    });
    assert_eq!(ifs, vec!["lo".to_owned()]);
}

#[test]
fn mounts_and_namespace_changes_are_refused() {
    if !ready() {
        return;
    }
    let mount = || {
        let (s, t) = (cstr("tmpfs"), cstr("/tmp"));
        // SAFETY: live NUL-terminated strings; NULL data.
        answer(
            unsafe { libc::mount(s.as_ptr(), t.as_ptr(), s.as_ptr(), 0, std::ptr::null()) }.into(),
        )
    };
    // seccomp, then the missing CAP_SYS_ADMIN.
    assert_eq!(both(mount), (Err(libc::EPERM), Err(libc::EPERM)));
    let remount = || {
        let t = cstr("/");
        // SAFETY: live NUL-terminated string; NULL source, type and data.
        answer(
            unsafe {
                libc::mount(
                    std::ptr::null(),
                    t.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_BIND,
                    std::ptr::null(),
                )
            }
            .into(),
        )
    };
    assert_eq!(both(remount), (Err(libc::EPERM), Err(libc::EPERM)));
    let unshare_mnt = || {
        // SAFETY: integer flags only.
        answer(unsafe { libc::unshare(libc::CLONE_NEWNS) }.into())
    };
    assert_eq!(both(unshare_mnt), (Err(libc::EPERM), Err(libc::EPERM)));
    // A nested user namespace is what an unprivileged process may create: only seccomp
    // refuses it.
    let unshare_user = || {
        // SAFETY: integer flags only.
        answer(unsafe { libc::unshare(libc::CLONE_NEWUSER) }.into())
    };
    assert_eq!(inside(config(true), unshare_user), Err(libc::EPERM));
    let setns = || {
        let p = cstr("/proc/self/ns/net");
        // SAFETY: p is a live NUL-terminated path.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: fd is a namespace fd we own.
        let a = answer(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }.into());
        // SAFETY: fd is ours, closed once.
        unsafe { libc::close(fd) };
        a
    };
    assert_eq!(both(setns), (Err(libc::EPERM), Err(libc::EPERM)));
}

#[test]
fn capabilities_cannot_be_raised() {
    if !ready() {
        return;
    }
    let raise = || {
        // struct __user_cap_header_struct { u32 version; int pid; } (version 3), and two
        // struct __user_cap_data_struct { u32 effective, permitted, inheritable; }.
        let mut hdr: [u32; 2] = [0x2008_0522, 0];
        let data: [u32; 6] = [u32::MAX, u32::MAX, 0, u32::MAX, u32::MAX, 0];
        // SAFETY: hdr and data are live v3 structures for the call.
        answer(unsafe { libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) })
    };
    assert_eq!(both(raise), (Err(libc::EPERM), Err(libc::EPERM)));
    // What the kernel says the workload holds: nothing, in every set.
    let sets: Vec<String> = inside(config(true), || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("Cap"))
            .map(str::to_owned)
            .collect()
    });
    for s in &sets {
        assert!(s.ends_with("0000000000000000"), "{sets:?}");
    }
    assert_eq!(sets.len(), 5, "{sets:?}");
}

#[test]
fn processes_outside_the_pid_namespace_cannot_be_signalled() {
    if !ready() {
        return;
    }
    let me = std::process::id() as i32;
    let kill_supervisor = move || {
        // SAFETY: kill(2) with signal 0 only checks existence and permission.
        answer(unsafe { libc::kill(me, 0) }.into())
    };
    assert_eq!(both(kill_supervisor), (Err(libc::ESRCH), Err(libc::ESRCH)));
    // Broadcast: "every process I may signal" is nobody but pid 1, which kill(-1) skips.
    let broadcast = || {
        // SAFETY: signal 0 only checks; no process is affected.
        answer(unsafe { libc::kill(-1, 0) }.into())
    };
    assert_eq!(both(broadcast), (Err(libc::ESRCH), Err(libc::ESRCH)));
    with_sibling(|pid| {
        let kill_sibling = move || {
            // SAFETY: SIGKILL to a pid that must not be visible from in here.
            answer(unsafe { libc::kill(pid, libc::SIGKILL) }.into())
        };
        assert_eq!(both(kill_sibling), (Err(libc::ESRCH), Err(libc::ESRCH)));
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    });
}

#[test]
fn io_uring_and_ptrace_are_refused() {
    if !ready() {
        return;
    }
    let uring = || {
        let mut params = [0u8; 120]; // struct io_uring_params
        // SAFETY: params is a live, zeroed io_uring_params-sized buffer.
        answer(unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) })
    };
    assert_eq!(inside(config(true), uring), Err(libc::EPERM));
    // PTRACE_TRACEME, then exec: the classic way to get a tracer on a later (setuid) exec.
    let traceme = || {
        // SAFETY: PTRACE_TRACEME takes no pointers.
        answer(unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) })
    };
    assert_eq!(inside(config(true), traceme), Err(libc::EPERM));
    // And a command that execs after trying it gets no tracer either.
    let iso = ProcessIsolation::new(config(true)).unwrap();
    let out = iso
        .run_command(
            &Command::new("/bin/sh")
                .arg("-c")
                .arg("grep TracerPid /proc/self/status"),
        )
        .unwrap();
    assert_eq!(out.stdout_text().trim(), "TracerPid:\t0", "{out:?}");
}

#[test]
fn the_hosts_pid_1_is_not_visible() {
    if !ready() {
        return;
    }
    let host_init = std::fs::read("/proc/1/cmdline").unwrap();
    let me = std::process::id();
    let seen: (Vec<u8>, Vec<String>, Answer, bool) = inside(config(true), move || {
        let p = cstr("/proc/1/mem");
        // SAFETY: p is a live NUL-terminated path.
        let mem =
            answer(unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }.into());
        let pids = list("/proc")
            .into_iter()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        (
            std::fs::read("/proc/1/cmdline").unwrap_or_default(),
            pids,
            mem,
            std::path::Path::new(&format!("/proc/{me}")).exists(),
        )
    });
    let (cmdline, pids, mem, supervisor_visible) = seen;
    // /proc/1 is the context's own pid 1 (a fork of this test binary), not the host's init.
    let own = std::fs::read("/proc/self/cmdline").unwrap();
    assert_eq!(cmdline, own);
    if host_init != own {
        assert_ne!(cmdline, host_init);
    }
    assert_eq!(pids, vec!["1".to_owned(), "2".to_owned()]);
    // pid 1 is non-dumpable and the workload holds no CAP_SYS_PTRACE: no mem access.
    assert_eq!(mem, Err(libc::EACCES));
    assert!(!supervisor_visible);
}
