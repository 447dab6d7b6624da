//! The OCI operations on containers kept under one state root.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::process::{Pid, PidfdFlags, WaitOptions};

use super::error::OciError;
use super::hooks;
use super::spec::{self, HookKind};
use super::state::{self, FIFO, Record, Status};
use crate::cgroup::Leaf;
use crate::isolation::process::ProcessIsolation;

/// How long `delete` waits for a killed container to be gone.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Containers under one state root (runc's `--root`; nebula's default is
/// `/run/nebula/oci`).
#[derive(Clone, Debug)]
pub struct Runtime {
    root: PathBuf,
}

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OciError {
    let what = what.into();
    move |source| OciError::Sys { what, source }
}

/// Undoes a half-made `create`: kills the container, removes its cgroup and state
/// directory, unless disarmed.
struct Undo {
    dir: PathBuf,
    pid: Option<i32>,
    cgroup: Option<PathBuf>,
    armed: bool,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(cg) = self
            .cgroup
            .as_ref()
            .and_then(|p| Leaf::open_recorded(p).ok())
        {
            let _ = cg.kill_and_remove(STOP_WAIT);
        } else if let Some(pid) = self.pid.and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        if let Some(pid) = self.pid.and_then(Pid::from_raw) {
            let _ = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Runtime {
    /// Containers under `root` (created, mode 0700, when the first container is).
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    /// The state directory of `id`.
    fn dir(&self, id: &str) -> Result<PathBuf, OciError> {
        state::check_id(id)?;
        Ok(self.root.join(id))
    }

    fn record(&self, id: &str) -> Result<(PathBuf, Record), OciError> {
        let dir = self.dir(id)?;
        if !dir.is_dir() {
            return Err(OciError::NotFound {
                id: id.to_owned(),
                path: dir,
            });
        }
        let r = state::load(&dir, id)?;
        Ok((dir, r))
    }

    /// The record of `id`, which must be `want`; otherwise [`OciError::WrongState`] saying
    /// `what`.
    fn record_in(&self, id: &str, want: Status, what: &str) -> Result<(PathBuf, Record), OciError> {
        let (dir, r) = self.record(id)?;
        let status = r.status(&dir);
        if status != want {
            return Err(OciError::WrongState {
                id: id.to_owned(),
                status,
                what: what.into(),
            });
        }
        Ok((dir, r))
    }

    /// `create`: sets the container up to its start gate (see the module docs of
    /// [`super`]); writes its pid to `pid_file`.
    ///
    /// # Errors
    /// [`OciError::Exists`], the bundle's errors ([`spec::load`]), the process level's, a
    /// failed hook. Nothing is left behind on error.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: Option<&Path>,
    ) -> Result<Record, OciError> {
        let dir = self.dir(id)?;
        let b = spec::load(bundle, id)?;
        std::fs::create_dir_all(&self.root).map_err(|source| OciError::State {
            what: "creating the state root",
            path: self.root.clone(),
            source,
        })?;
        let _ = rustix::fs::chmod(&self.root, Mode::from_raw_mode(0o700));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(OciError::Exists { id: id.to_owned() });
            }
            Err(source) => {
                return Err(OciError::State {
                    what: "creating the state directory",
                    path: dir,
                    source,
                });
            }
        }
        let mut undo = Undo {
            dir: dir.clone(),
            pid: None,
            cgroup: None,
            armed: true,
        };
        let fifo = dir.join(FIFO);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .map_err(|e| sys(format!("mkfifo {}", fifo.display()))(e.into()))?;
        // Read-write: the workload's read waits for start's byte and never sees EOF.
        let gate = rustix::fs::open(&fifo, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| sys(format!("opening {}", fifo.display()))(e.into()))?;
        let config = b.config;
        let rootfs = config
            .root
            .as_ref()
            .map(|r| r.path.clone())
            .unwrap_or_default();
        let iso = ProcessIsolation::new(config)?;
        let d = iso.create_detached(&b.command, gate.as_fd())?;
        undo.pid = Some(d.pid);
        undo.cgroup.clone_from(&d.cgroup);
        let (start_time, _) = state::proc_start(d.pid).ok_or_else(|| {
            sys(format!("reading /proc/{}/stat", d.pid))(std::io::Error::from_raw_os_error(
                libc::ESRCH,
            ))
        })?;
        let record = Record {
            id: id.to_owned(),
            pid: d.pid,
            start_time,
            bundle: b.dir.clone(),
            rootfs,
            cgroup: d.cgroup,
            created: state::now_rfc3339(),
            annotations: b
                .spec
                .annotations()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            hooks: Some(b.hooks.clone()),
        };
        state::save(&dir, &record)?;
        // The spec as created: `exec` reads its namespaces and seccomp profile from here, as
        // later changes to the bundle must not affect the container.
        std::fs::copy(b.dir.join("config.json"), dir.join(state::CONFIG)).map_err(|source| {
            OciError::State {
                what: "copying config.json into",
                path: dir.clone(),
                source,
            }
        })?;
        let st = record.state_json(Status::Created);
        for kind in [
            HookKind::Prestart,
            HookKind::CreateRuntime,
            HookKind::CreateContainer,
        ] {
            hooks::run(kind, spec::hooks_of(&b.hooks, kind), &st, d.pid)?;
        }
        if let Some(pf) = pid_file {
            let tmp = pf.with_extension("nebula-tmp");
            std::fs::write(&tmp, d.pid.to_string())
                .and_then(|()| std::fs::rename(&tmp, pf))
                .map_err(|source| OciError::State {
                    what: "writing the pid file",
                    path: pf.to_owned(),
                    source,
                })?;
        }
        undo.armed = false;
        Ok(record)
    }

    /// `start`: runs the `startContainer` hooks, opens the start gate, runs `poststart`.
    /// Returns the `poststart` failures, which the spec makes warnings.
    ///
    /// # Errors
    /// [`OciError::WrongState`] unless the container is created; a failed `startContainer`
    /// hook.
    pub fn start(&self, id: &str) -> Result<Vec<OciError>, OciError> {
        let (dir, r) = self.record_in(
            id,
            Status::Created,
            "only a created container can be started",
        )?;
        let bundle_hooks = r.hooks.clone().unwrap_or_default();
        let st = r.state_json(Status::Created);
        hooks::run(
            HookKind::StartContainer,
            spec::hooks_of(&bundle_hooks, HookKind::StartContainer),
            &st,
            r.pid,
        )?;
        let fifo = dir.join(FIFO);
        let w = rustix::fs::open(
            &fifo,
            OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            sys(format!(
                "opening {} (has the container died?)",
                fifo.display()
            ))(e.into())
        })?;
        rustix::io::write(&w, &[0])
            .map_err(|e| sys(format!("writing {}", fifo.display()))(e.into()))?;
        let _ = std::fs::remove_file(&fifo);
        let st = r.state_json(Status::Running);
        let warnings = spec::hooks_of(&bundle_hooks, HookKind::Poststart)
            .iter()
            .filter_map(|h| {
                hooks::run(HookKind::Poststart, std::slice::from_ref(h), &st, r.pid).err()
            })
            .collect();
        Ok(warnings)
    }

    /// `state`: the runtime spec's state JSON.
    ///
    /// # Errors
    /// [`OciError::NotFound`], a record that cannot be read.
    pub fn state(&self, id: &str) -> Result<serde_json::Value, OciError> {
        let (dir, r) = self.record(id)?;
        Ok(r.state_json(r.status(&dir)))
    }

    /// Every container under the root, with its status.
    ///
    /// # Errors
    /// The root cannot be read.
    pub fn list(&self) -> Result<Vec<(Record, Status)>, OciError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(OciError::State {
                    what: "listing",
                    path: self.root.clone(),
                    source,
                });
            }
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if let Ok((dir, r)) = self.record(&id) {
                let s = r.status(&dir);
                out.push((r, s));
            }
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(out)
    }

    /// `kill`: `sig` to the container's top process, or with `all` to every process of its
    /// cgroup.
    ///
    /// # Errors
    /// [`OciError::WrongState`] for a stopped container; the signal's error.
    pub fn kill(&self, id: &str, sig: i32, all: bool) -> Result<(), OciError> {
        let (dir, r) = self.record(id)?;
        let status = r.status(&dir);
        if status == Status::Stopped {
            return Err(OciError::WrongState {
                id: id.to_owned(),
                status,
                what: "there is no process to signal".into(),
            });
        }
        if all && let Some(cg) = &r.cgroup {
            let leaf = Leaf::open_recorded(cg)?;
            if sig == libc::SIGKILL {
                return leaf.kill().map_err(OciError::from);
            }
            for pid in leaf.procs()? {
                let _ = signal_pid(pid.as_raw_nonzero().get(), None, sig);
            }
            return Ok(());
        }
        signal_pid(r.pid, Some(r.start_time), sig)
    }

    /// `delete`: a stopped or created container (any with `force`) is killed if need be,
    /// its cgroup and state directory removed, and its `poststop` hooks run. Returns the
    /// `poststop` failures (warnings, as the spec says).
    ///
    /// # Errors
    /// [`OciError::WrongState`] for a running or paused container without `force`.
    pub fn delete(&self, id: &str, force: bool) -> Result<Vec<OciError>, OciError> {
        let (dir, r) = self.record(id)?;
        let status = r.status(&dir);
        // runtime.md, "Delete": deleting a container that is not stopped MUST be an error
        // (runc deletes a created one; the spec does not).
        if status != Status::Stopped && !force {
            return Err(OciError::WrongState {
                id: id.to_owned(),
                status,
                what: "only a stopped container is deleted; kill it first or use --force".into(),
            });
        }
        let leaf = match &r.cgroup {
            Some(cg) => match Leaf::open_recorded(cg) {
                Ok(l) => Some(l),
                Err(crate::cgroup::CgroupError::OpenDir { .. }) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        // Whatever is left in its cgroup goes too (daemonized children, or every process of a
        // container without a pid namespace of its own).
        if let Some(l) = &leaf {
            l.kill()?;
        }
        if status != Status::Stopped {
            match &leaf {
                Some(l) => l.kill()?,
                None => {
                    let _ = signal_pid(r.pid, Some(r.start_time), libc::SIGKILL);
                }
            }
            let deadline = Instant::now() + STOP_WAIT;
            while r.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(l) = leaf {
            l.wait_empty(STOP_WAIT)?;
            l.remove()?;
        }
        let bundle_hooks = r.hooks.clone().unwrap_or_default();
        let st = r.state_json(Status::Stopped);
        let warnings = spec::hooks_of(&bundle_hooks, HookKind::Poststop)
            .iter()
            .filter_map(|h| {
                hooks::run(HookKind::Poststop, std::slice::from_ref(h), &st, r.pid).err()
            })
            .collect();
        std::fs::remove_dir_all(&dir).map_err(|source| OciError::State {
            what: "removing",
            path: dir,
            source,
        })?;
        Ok(warnings)
    }

    /// `run`: `create`, `start`, and (unless `detach`) wait for the container to end and
    /// delete it. Returns its exit status as a shell has it (128+N for a signal N).
    ///
    /// # Errors
    /// As [`Runtime::create`] and [`Runtime::start`].
    pub fn run(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: Option<&Path>,
        detach: bool,
    ) -> Result<i32, OciError> {
        let r = self.create(id, bundle, pid_file)?;
        if let Err(e) = self.start(id) {
            let _ = self.delete(id, true);
            return Err(e);
        }
        if detach {
            return Ok(0);
        }
        let code = wait_exit(r.pid)?;
        self.delete(id, true)?;
        Ok(code)
    }

    /// `exec`: runs the process described by `process_file` (an OCI `process` object) in the
    /// running container: its namespaces (joined through `/proc/<pid>/ns`), its cgroup and its
    /// seccomp profile. With `detach` returns once it runs (its reaper is whoever inherits
    /// it, containerd's shim); otherwise waits and returns its exit status.
    ///
    /// # Errors
    /// [`OciError::WrongState`] unless the container runs; the process file's errors; a
    /// container with a user namespace of its own ([`OciError::Unsupported`]).
    pub fn exec(
        &self,
        id: &str,
        process: ExecProcess<'_>,
        pid_file: Option<&Path>,
        detach: bool,
    ) -> Result<i32, OciError> {
        let (dir, r) = self.record_in(id, Status::Running, "exec needs a running container")?;
        let spec: oci_spec::runtime::Spec = spec::read_checked(&dir.join(state::CONFIG))?;
        let process: oci_spec::runtime::Process = match process {
            ExecProcess::File(f) => spec::read_checked(f)?,
            ExecProcess::Args(args) => {
                // runc's form: the container's own process with other arguments.
                let mut p = spec
                    .process()
                    .clone()
                    .ok_or_else(|| OciError::Unsupported {
                        field: "process".into(),
                        reason:
                            "the container has no process to take the others from; pass --process"
                                .into(),
                    })?;
                p.set_args(Some(args.to_vec()));
                p
            }
        };
        let mut c = spec::base_config(id);
        c.cgroup_name = None;
        c.cgroup_path.clone_from(&r.cgroup);
        let cmd = spec::process_fields(&process, &mut c)?;
        let linux = spec.linux().as_ref();
        for ns in linux
            .and_then(|l| l.namespaces().as_ref())
            .into_iter()
            .flatten()
        {
            use crate::isolation::process::Namespaces;
            use oci_spec::runtime::LinuxNamespaceType as T;
            let (flag, name) = match ns.typ() {
                T::Mount => (Namespaces::MOUNT, "mnt"),
                T::Cgroup => (Namespaces::CGROUP, "cgroup"),
                T::Uts => (Namespaces::UTS, "uts"),
                T::Ipc => (Namespaces::IPC, "ipc"),
                T::Pid => (Namespaces::PID, "pid"),
                T::Network => (Namespaces::NET, "net"),
                T::User | T::Time => {
                    return Err(OciError::Unsupported {
                        field: format!("linux.namespaces[type={}]", ns.typ()),
                        reason: "exec into a container with its own user or time namespace is \
                                 not implemented"
                            .into(),
                    });
                }
            };
            c.join
                .push((flag, PathBuf::from(format!("/proc/{}/ns/{name}", r.pid))));
        }
        if let Some(s) = linux.and_then(|l| l.seccomp().as_ref()) {
            c.seccomp_table = Some(super::seccomp::table(s)?);
        }
        // nebula's own options (org.nebula.seccomp) hold for exec'd processes too.
        spec::annotations(&spec, &mut c)?;
        // The program is looked up inside the container's root, which /proc/<pid>/root is.
        let cmd = cmd.resolved_in(Path::new(&format!("/proc/{}/root", r.pid)), &c.env)?;
        let iso = ProcessIsolation::new(c)?;
        let d = iso.spawn_detached(&cmd)?;
        if let Some(pf) = pid_file {
            std::fs::write(pf, d.pid.to_string()).map_err(|source| OciError::State {
                what: "writing the pid file",
                path: pf.to_owned(),
                source,
            })?;
        }
        if detach {
            return Ok(0);
        }
        wait_exit(d.pid)
    }

    /// `ps`: the pids of the container's processes (its cgroup's, or its top process).
    ///
    /// # Errors
    /// [`OciError::NotFound`], the cgroup cannot be read.
    pub fn ps(&self, id: &str) -> Result<Vec<i32>, OciError> {
        let (dir, r) = self.record(id)?;
        if r.status(&dir) == Status::Stopped {
            return Ok(Vec::new());
        }
        match &r.cgroup {
            Some(cg) => Ok(Leaf::open_recorded(cg)?
                .procs()?
                .into_iter()
                .map(|p| p.as_raw_nonzero().get())
                .collect()),
            None => Ok(vec![r.pid]),
        }
    }

    /// `pause` (`resume` with `frozen == false`): `cgroup.freeze`, waiting until the kernel
    /// reports the cgroup frozen.
    ///
    /// # Errors
    /// [`OciError::WrongState`] without a cgroup or in the wrong state; the cgroup's errors.
    pub fn freeze(&self, id: &str, frozen: bool) -> Result<(), OciError> {
        let (want, what) = if frozen {
            (Status::Running, "only a running container can be paused")
        } else {
            (Status::Paused, "only a paused container can be resumed")
        };
        let (_, r) = self.record_in(id, want, what)?;
        let cg = r.cgroup.as_ref().ok_or_else(|| OciError::WrongState {
            id: id.to_owned(),
            status: want,
            what: "it has no cgroup (this host has no cgroup v2), and pausing needs cgroup.freeze"
                .into(),
        })?;
        let leaf = Leaf::open_recorded(cg)?;
        if frozen {
            leaf.freeze()?;
            leaf.wait_frozen(STOP_WAIT)?;
        } else {
            leaf.thaw()?;
        }
        Ok(())
    }
}

/// What `exec` runs.
#[derive(Clone, Copy, Debug)]
pub enum ExecProcess<'a> {
    /// An OCI `process` object in this file (`--process`).
    File(&'a Path),
    /// The container's own process with these arguments.
    Args(&'a [String]),
}

/// Waits for the child `pid` and returns its end as a shell has it (128+N for a signal N).
fn wait_exit(pid: i32) -> Result<i32, OciError> {
    let p = Pid::from_raw(pid).ok_or_else(|| OciError::Signal(pid.to_string()))?;
    loop {
        match rustix::process::waitpid(Some(p), WaitOptions::empty()) {
            Ok(Some((_, s))) => {
                if let Some(c) = s.exit_status() {
                    return Ok(c);
                }
                if let Some(sig) = s.terminating_signal() {
                    return Ok(128 + sig);
                }
            }
            Ok(None) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(sys(format!("waiting for {pid}"))(e.into())),
        }
    }
}

/// `sig` to `pid` through a pidfd; with `start_time`, only if the pid is still the process
/// that started then (checked after the pidfd was opened, so the pidfd holds that process).
fn signal_pid(pid: i32, start_time: Option<u64>, sig: i32) -> Result<(), OciError> {
    let p = Pid::from_raw(pid).ok_or_else(|| OciError::Signal(pid.to_string()))?;
    let fd = match rustix::process::pidfd_open(p, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(()),
        Err(e) => return Err(sys(format!("pidfd_open({pid})"))(e.into())),
    };
    if let Some(t) = start_time
        && state::proc_start(pid).map(|(s, _)| s) != Some(t)
    {
        return Ok(());
    }
    match crate::sys::process::pidfd_send_raw_signal(fd.as_fd(), sig) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(e) => Err(sys(format!("signal {sig} to {pid}"))(e)),
    }
}

/// `features`: what this runtime implements, as the runtime spec's features document.
pub fn features() -> serde_json::Value {
    let caps: Vec<String> = ::caps::all().iter().map(ToString::to_string).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": state::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand",
            "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime",
            "nosuid", "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared",
            "rslave", "runbindable", "rw", "shared", "slave", "strictatime", "suid", "sync",
            "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": false, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {"enabled": true, "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRAP"], "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"], "archs": ["SCMP_ARCH_X86_64"]},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": {
            "org.nebula.seccomp": "default|strict|deny-network|none: nebula's named seccomp profile"
        }
    })
}
