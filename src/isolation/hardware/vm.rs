//! A hardware context's virtual machine: booting it, streaming its output, reporting how it
//! ended, and the KVM probe that picks the accelerator.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::base::ContextId;
use crate::violation::{ViolationInfo, ViolationKind};

use super::config::{
    Accel, CONNECT_TIMEOUT, CONSOLE_KEEP, DEFAULT_MEMORY, GuestCommand, HardwareConfig,
    HardwareError, KernelSource, MAX_CAPTURE, MIN_MEMORY, Machine, Output, Program, TICK, absolute,
    default_cache_dir, next_serial,
};
use super::initramfs;
use super::kernel::{self, HardwareProbe, cached_probe, debian_kernel, kvm_device, read_cached};

/// Hardware contexts with one configuration: host tools, kernel and accelerator resolved
/// once, then any number of contexts run with [`HardwareIsolation::run_command`], each in a
/// fresh VM.
#[derive(Debug)]
pub struct HardwareIsolation {
    config: HardwareConfig,
    qemu: PathBuf,
    setpriv: Option<PathBuf>,
    kernel: PathBuf,
    accel: Accel,
    cache: PathBuf,
    work: PathBuf,
}

/// How a hardware context ended.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    /// The context's id.
    pub context: ContextId,
    /// qemu's pid on the host.
    pub pid: i32,
    /// The command's exit status as the guest's shell saw it (`$?`: 128 + N for signal N);
    /// `None` when the guest ended without reporting one (time limit, panic, qemu killed).
    pub status: Option<i32>,
    /// The wall-clock limit ran out and nebula killed the VM.
    pub timed_out: bool,
    /// The guest kernel's OOM killer killed a process (its console said "Out of memory").
    pub oom_killed: bool,
    /// The guest kernel panicked.
    pub guest_panic: bool,
    /// The accelerator the guest ran on.
    pub accel: Accel,
    /// Guest memory in bytes.
    pub memory: u64,
    /// From qemu's start until the guest's `/init` started the command.
    pub boot_time: Duration,
    /// From the command's start until the VM ended (zero when it never started).
    pub run_time: Duration,
    /// From qemu's start until it exited.
    pub wall_time: Duration,
    /// The base initramfs came from the cache (not written by this context).
    pub initramfs_cached: bool,
    /// qemu's peak resident set on the host (`VmHWM` in `/proc/<pid>/status`, last sample
    /// before it exited), in bytes.
    pub host_peak_rss: Option<u64>,
    /// The violations, as also delivered to the config's callback.
    pub violations: Vec<ViolationInfo>,
    /// The guest kernel's OOM report line(s) and panic line, if any.
    pub kernel_reports: Vec<String>,
    /// The last lines of the guest kernel's console (for panics and boot failures).
    pub console_tail: String,
    /// Captured stdout ([`Output::Capture`]).
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    /// Captured stderr.
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    /// Bytes of captured output dropped beyond [`MAX_CAPTURE`].
    pub output_dropped: u64,
}

impl Outcome {
    /// The command exited with 0 and no limit fired.
    pub fn success(&self) -> bool {
        self.status == Some(0) && !self.timed_out && !self.oom_killed && !self.guest_panic
    }

    /// The shell's convention for the CLI: the command's status, else 137 (killed) for a time
    /// limit or out of memory, else 1.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            Some(s) => s,
            None if self.timed_out || self.oom_killed => 128 + libc::SIGKILL,
            None => 1,
        }
    }

    /// Captured stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Captured stderr as text (lossy).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// `total-vm` and `anon-rss + file-rss + shmem-rss` in bytes from the kernel's
/// "Out of memory: Killed process N (x) total-vm:NkB, anon-rss:NkB, file-rss:NkB,
/// shmem-rss:NkB, ..." line.
pub(crate) fn parse_oom_line(line: &str) -> Option<(u64, u64)> {
    let kb = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
        n.parse::<u64>().ok().map(|k| k * 1024)
    };
    let total = kb("total-vm:")?;
    let rss =
        kb("anon-rss:").unwrap_or(0) + kb("file-rss:").unwrap_or(0) + kb("shmem-rss:").unwrap_or(0);
    Some((total, rss))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin:/usr/sbin:/sbin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|c| rustix::fs::access(c, rustix::fs::Access::EXEC_OK).is_ok() && c.is_file())
}

impl HardwareIsolation {
    /// Checks the host tools (qemu, a static busybox), resolves the kernel (fetching the
    /// Debian one on first use) and the accelerator ([`Accel::Auto`] runs [`probe`]).
    ///
    /// # Errors
    /// [`HardwareError::ToolMissing`], [`HardwareError::InvalidConfig`] (memory below
    /// [`MIN_MEMORY`], no vCPU, a reserved or relative guest path, a bad variable name),
    /// [`HardwareError::Kernel`], or the probe's error.
    pub fn new(config: HardwareConfig) -> Result<HardwareIsolation, HardwareError> {
        if config.memory < MIN_MEMORY {
            return Err(HardwareError::InvalidConfig(format!(
                "guest memory of {} bytes is below the minimum of {MIN_MEMORY} (the guest kernel needs it)",
                config.memory
            )));
        }
        if config.vcpus == 0 || config.vcpus > 64 {
            return Err(HardwareError::InvalidConfig(format!(
                "{} vCPUs (1 to 64)",
                config.vcpus
            )));
        }
        for (_, g) in &config.files {
            if !g.starts_with('/') || initramfs::reserved(g.trim_end_matches('/')) {
                return Err(HardwareError::InvalidConfig(format!(
                    "guest path {g:?} must be absolute and not one of /init, /cmd, {}",
                    initramfs::BUSYBOX
                )));
            }
        }
        for (k, _) in &config.env {
            let ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(HardwareError::InvalidConfig(format!(
                    "environment variable name {k:?}"
                )));
            }
        }
        let qemu = find_on_path("qemu-system-x86_64").ok_or(HardwareError::ToolMissing {
            tool: "qemu-system-x86_64",
            reason: "not on PATH".into(),
            package: "qemu-system-x86",
        })?;
        if !Path::new(initramfs::BUSYBOX).is_file()
            || !initramfs::is_static(Path::new(initramfs::BUSYBOX))?
        {
            return Err(HardwareError::ToolMissing {
                tool: "a static /bin/busybox",
                reason: "missing or dynamically linked".into(),
                package: "busybox-static",
            });
        }
        let setpriv = find_on_path("setpriv");
        let cache = config.cache_dir.clone().unwrap_or_else(default_cache_dir);
        let work = config
            .work_dir
            .clone()
            .unwrap_or_else(|| cache.join("hw-run"));
        let kernel = match &config.kernel {
            KernelSource::Path(p) if p.is_file() => p.clone(),
            KernelSource::Path(p) => {
                return Err(HardwareError::Kernel {
                    detail: format!("{} is not a file", p.display()),
                    source: None,
                });
            }
            KernelSource::Debian => kernel::debian_kernel(&cache)?,
        };
        let accel = match config.accel {
            Accel::Auto => probe(&cache)?.accel,
            a => a,
        };
        Ok(HardwareIsolation {
            config,
            qemu,
            setpriv,
            kernel,
            accel,
            cache,
            work,
        })
    }

    /// The accelerator contexts run on.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The kernel contexts boot.
    pub fn kernel_path(&self) -> &Path {
        &self.kernel
    }

    /// The configuration.
    pub fn config(&self) -> &HardwareConfig {
        &self.config
    }

    /// Runs `cmd` in a fresh VM and waits for it to end. Output is streamed as configured
    /// while it runs.
    ///
    /// # Errors
    /// Building the initramfs, starting qemu or supervising it failed, qemu exited before
    /// the guest started, or the guest did not boot in time. A command that fails, runs out
    /// of time or memory, or panics the guest is an [`Outcome`], not an error.
    pub fn run_command(&self, cmd: &GuestCommand) -> Result<Outcome, HardwareError> {
        let context = ContextId::fresh();
        let (base, cached) = self.base_initramfs(cmd)?;
        let vm = Vm::create(&self.work, context)?;
        let initrd = vm.dir.join("initrd");
        {
            let werr = |source| HardwareError::WriteCache {
                path: initrd.clone(),
                source,
            };
            let mut bytes = std::fs::read(&base).map_err(|source| HardwareError::ReadInput {
                path: base.clone(),
                source,
            })?;
            bytes.extend_from_slice(&self.run_archive(cmd)?);
            std::fs::write(&initrd, bytes).map_err(werr)?;
        }
        self.boot(vm, context, &initrd, cached)
    }

    fn program_path(cmd: &GuestCommand) -> Result<Option<PathBuf>, HardwareError> {
        match &cmd.program {
            Program::Busybox(_) => Ok(None),
            Program::Host(p) if p.as_bytes().contains(&b'/') => {
                Ok(Some(absolute(PathBuf::from(p))))
            }
            Program::Host(p) => find_on_path(&p.to_string_lossy()).map(Some).ok_or_else(|| {
                HardwareError::ProgramNotFound {
                    program: p.to_string_lossy().into_owned(),
                }
            }),
        }
    }

    fn base_initramfs(&self, cmd: &GuestCommand) -> Result<(PathBuf, bool), HardwareError> {
        let mut tree = initramfs::base_tree()?;
        if let Some(p) = Self::program_path(cmd)? {
            let g = p.to_string_lossy().into_owned();
            if initramfs::reserved(&g) {
                return Err(HardwareError::InvalidConfig(format!(
                    "program {g:?}: use GuestCommand::busybox for busybox applets"
                )));
            }
            tree.add_with_libs(&p, &g)?;
        }
        for (h, g) in &self.config.files {
            tree.add_with_libs(h, g.trim_end_matches('/'))?;
        }
        initramfs::cached(&tree, &self.cache.join("initramfs"))
    }

    /// The per-run archive: `/cmd`, a shell script that exports the environment and execs
    /// the command (every word single-quoted).
    fn run_archive(&self, cmd: &GuestCommand) -> Result<Vec<u8>, HardwareError> {
        let mut script = Vec::new();
        for (k, v) in &self.config.env {
            script.extend_from_slice(b"export ");
            script.extend_from_slice(k.as_bytes());
            script.push(b'=');
            script.extend_from_slice(&initramfs::sh_quote(v.as_bytes()));
            script.push(b'\n');
        }
        script.extend_from_slice(b"exec");
        let mut words: Vec<Vec<u8>> = Vec::new();
        match &cmd.program {
            Program::Busybox(applet) => {
                words.push(initramfs::BUSYBOX.as_bytes().to_vec());
                words.push(applet.as_bytes().to_vec());
            }
            Program::Host(_) => {
                let p = Self::program_path(cmd)?.expect("a host program has a path");
                words.push(p.as_os_str().as_bytes().to_vec());
            }
        }
        words.extend(cmd.args.iter().map(|a| a.as_bytes().to_vec()));
        for w in words {
            script.push(b' ');
            script.extend_from_slice(&initramfs::sh_quote(&w));
        }
        script.push(b'\n');
        let mut t = initramfs::Tree::default();
        t.add_bytes("/cmd", script, 0o644);
        t.cpio()
            .map_err(|e| HardwareError::InvalidConfig(format!("the command line: {e}")))
    }

    fn qemu_command(&self, dir: &Path, initrd: &Path) -> std::process::Command {
        let mut c = match &self.setpriv {
            Some(sp) => {
                let mut c = std::process::Command::new(sp);
                c.args(["--pdeathsig", "KILL", "--"]).arg(&self.qemu);
                c
            }
            None => std::process::Command::new(&self.qemu),
        };
        match self.config.machine {
            Machine::Microvm => c.args(["-M", "microvm,acpi=off"]),
            Machine::Q35 => c.args(["-M", "q35"]),
        };
        match self.accel {
            Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg | Accel::Auto => c.args(["-accel", "tcg", "-cpu", "max"]),
        };
        c.arg("-m")
            .arg(format!("{}M", self.config.memory >> 20))
            .arg("-smp")
            .arg(self.config.vcpus.to_string())
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
                "-nic",
                "none",
            ]);
        for (i, name) in PORTS.iter().enumerate() {
            let sock = dir.join(format!("{name}.sock"));
            let mut spec = OsString::from(format!("socket,id={name},path="));
            spec.push(sock.as_os_str());
            c.arg("-chardev").arg(spec);
            if i == 0 {
                c.arg("-serial").arg(format!("chardev:{name}"));
            } else {
                c.arg("-device").arg(format!("isa-serial,chardev={name}"));
            }
        }
        c.arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(initrd);
        c.arg("-append").arg(format!(
            "console=ttyS0 quiet loglevel=4 panic=-1 reboot=t rdinit=/init {}",
            self.config.append
        ));
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        c
    }

    fn boot(
        &self,
        mut vm: Vm,
        context: ContextId,
        initrd: &Path,
        initramfs_cached: bool,
    ) -> Result<Outcome, HardwareError> {
        let sup = |operation| move |source| HardwareError::Supervise { operation, source };
        let mut listeners = Vec::new();
        for name in PORTS {
            let l = UnixListener::bind(vm.dir.join(format!("{name}.sock")))
                .map_err(sup("binding a serial-port socket"))?;
            l.set_nonblocking(true)
                .map_err(sup("setting a socket non-blocking"))?;
            listeners.push(l);
        }
        let start = Instant::now();
        let child = self
            .qemu_command(&vm.dir, initrd)
            .spawn()
            .map_err(|source| HardwareError::Spawn {
                qemu: self.qemu.clone(),
                source,
            })?;
        let pid = child.id() as i32;
        vm.child = Some(child);
        let mut qemu_err = vm.child.as_mut().and_then(|c| c.stderr.take());
        let err_thread = qemu_err.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = e.read_to_end(&mut s);
                String::from_utf8_lossy(&s).into_owned()
            })
        });

        // qemu connects all four ports while it starts; the backlog holds them until here
        let mut streams: Vec<Option<UnixStream>> = vec![None, None, None, None];
        let connect_deadline = start + CONNECT_TIMEOUT;
        while streams.iter().any(Option::is_none) {
            for (i, l) in listeners.iter().enumerate() {
                if streams[i].is_none() {
                    match l.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false)
                                .map_err(sup("setting a socket blocking"))?;
                            streams[i] = Some(s);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(sup("accepting qemu's serial connection")(e)),
                    }
                }
            }
            if streams.iter().all(Option::is_some) {
                break;
            }
            if let Some(st) = vm.try_wait().map_err(sup("waiting for qemu"))? {
                let stderr = err_thread.and_then(|t| t.join().ok()).unwrap_or_default();
                return Err(HardwareError::QemuFailed {
                    status: st.to_string(),
                    stderr: last_lines(&stderr, 5),
                });
            }
            if Instant::now() > connect_deadline {
                return Err(sup("waiting for qemu to connect its serial ports")(
                    io::Error::from(io::ErrorKind::TimedOut),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(listeners);
        let mut it = streams.into_iter().map(|s| s.expect("all connected"));
        let (con, out, err, status) = (
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
        );

        let console = spawn_sink(con, Sink::Tail(CONSOLE_KEEP));
        let stdout = spawn_sink(out, Sink::from(self.config.stdout, false));
        let stderr = spawn_sink(err, Sink::from(self.config.stderr, true));
        let (tx, rx) = mpsc::channel();
        let status_thread = std::thread::spawn(move || read_status(status, tx));

        let mut started: Option<Instant> = None;
        let mut rc: Option<i32> = None;
        let mut timed_out = false;
        let mut boot_timed_out = false;
        let mut peak_rss = None;
        let exit = loop {
            match rx.recv_timeout(TICK) {
                Ok(StatusLine::Started) => started = Some(Instant::now()),
                Ok(StatusLine::Rc(n)) => rc = Some(n),
                Err(_) => {}
            }
            if let Some(v) = vm_hwm(pid) {
                peak_rss = Some(v);
            }
            if let Some(st) = vm.try_wait().map_err(sup("waiting for qemu"))? {
                break st;
            }
            let now = Instant::now();
            match (started, self.config.wall_time) {
                (None, _) if now > start + self.config.boot_timeout => {
                    boot_timed_out = true;
                    break vm.kill_and_wait().map_err(sup("killing qemu"))?;
                }
                (Some(s), Some(limit)) if rc.is_none() && now > s + limit => {
                    timed_out = true;
                    break vm.kill_and_wait().map_err(sup("killing qemu"))?;
                }
                _ => {}
            }
        };
        let end = Instant::now();
        // qemu is gone: every socket is at EOF, the threads finish
        let console_text =
            String::from_utf8_lossy(&console.join().unwrap_or_default().0).replace('\r', "");
        let (stdout_bytes, out_dropped) = stdout.join().unwrap_or_default();
        let (stderr_bytes, err_dropped) = stderr.join().unwrap_or_default();
        for line in status_thread.join().unwrap_or_default() {
            match line {
                StatusLine::Started => started = started.or(Some(end)),
                StatusLine::Rc(n) => rc = Some(n),
            }
        }
        while let Ok(line) = rx.try_recv() {
            match line {
                StatusLine::Started => started = started.or(Some(end)),
                StatusLine::Rc(n) => rc = Some(n),
            }
        }
        let qemu_stderr = err_thread.and_then(|t| t.join().ok()).unwrap_or_default();
        let console_tail = last_lines(&console_text, 40);
        if boot_timed_out {
            return Err(HardwareError::BootTimeout {
                timeout: self.config.boot_timeout,
                accel: self.accel,
                console: last_lines(&console_text, 5),
            });
        }
        if started.is_none() && !console_text.contains("Kernel panic") {
            return Err(HardwareError::QemuFailed {
                status: exit.to_string(),
                stderr: format!(
                    "{}{}",
                    last_lines(&qemu_stderr, 5),
                    if console_tail.is_empty() {
                        String::new()
                    } else {
                        format!("; console: {}", last_lines(&console_text, 5))
                    }
                ),
            });
        }

        let mut kernel_reports: Vec<String> = console_text
            .lines()
            .filter(|l| l.contains("Out of memory") || l.contains("Kernel panic"))
            .map(|l| l.trim().to_owned())
            .collect();
        kernel_reports.dedup();
        let oom_killed = console_text.contains("Out of memory");
        let guest_panic = console_text.contains("Kernel panic");
        let mut violations = Vec::new();
        let violation = |kind| ViolationInfo {
            address: None,
            kind,
            region: None,
            context: Some(context),
            thread_id: None,
            pid: Some(pid),
            timestamp: SystemTime::now(),
        };
        if oom_killed {
            violations.push(violation(ViolationKind::OutOfMemory {
                memory_max: Some(self.config.memory),
            }));
        }
        if timed_out {
            violations.push(violation(ViolationKind::TimeLimit));
        }
        if let Some(cb) = &self.config.on_violation {
            for v in &violations {
                cb(v);
            }
        }
        let outcome = Outcome {
            context,
            pid,
            status: rc,
            timed_out,
            oom_killed,
            guest_panic,
            accel: self.accel,
            memory: self.config.memory,
            boot_time: started.map_or(end - start, |s| s - start),
            run_time: started.map_or(Duration::ZERO, |s| end.saturating_duration_since(s)),
            wall_time: end - start,
            initramfs_cached,
            host_peak_rss: peak_rss,
            violations,
            kernel_reports,
            console_tail,
            stdout: stdout_bytes,
            stderr: stderr_bytes,
            output_dropped: out_dropped + err_dropped,
        };
        drop(vm); // removes the run directory
        Ok(outcome)
    }
}

/// The serial ports, in ttyS order.
const PORTS: [&str; 4] = ["console", "stdout", "stderr", "status"];

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// `VmHWM` of a process, in bytes.
fn vm_hwm(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[derive(Clone, Copy, Debug)]
enum StatusLine {
    Started,
    Rc(i32),
}

fn read_status(mut s: UnixStream, tx: mpsc::Sender<StatusLine>) -> Vec<StatusLine> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    let mut unsent = Vec::new();
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line).trim().to_owned();
            let parsed = if line == "NEBULA_STARTED" {
                Some(StatusLine::Started)
            } else {
                line.strip_prefix("NEBULA_RC=")
                    .and_then(|n| n.parse().ok())
                    .map(StatusLine::Rc)
            };
            if let Some(p) = parsed
                && tx.send(p).is_err()
            {
                unsent.push(p);
            }
        }
    }
    unsent
}

enum Sink {
    Stdout,
    Stderr,
    Capture,
    Tail(usize),
    Null,
}

impl Sink {
    fn from(o: Output, is_err: bool) -> Sink {
        match (o, is_err) {
            (Output::Inherit, false) => Sink::Stdout,
            (Output::Inherit, true) => Sink::Stderr,
            (Output::Capture, _) => Sink::Capture,
            (Output::Null, _) => Sink::Null,
        }
    }
}

/// Reads a serial port's socket until EOF; returns what was kept and how much was dropped.
fn spawn_sink(mut s: UnixStream, sink: Sink) -> JoinHandle<(Vec<u8>, u64)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut dropped = 0u64;
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            let n = match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let data = &chunk[..n];
            match sink {
                Sink::Stdout => {
                    let mut o = io::stdout().lock();
                    let _ = o.write_all(data).and_then(|()| o.flush());
                }
                Sink::Stderr => {
                    let _ = io::stderr().lock().write_all(data);
                }
                Sink::Capture => {
                    let room = MAX_CAPTURE - kept.len();
                    kept.extend_from_slice(&data[..n.min(room)]);
                    dropped += n.saturating_sub(room) as u64;
                }
                Sink::Tail(keep) => {
                    kept.extend_from_slice(data);
                    if kept.len() > 2 * keep {
                        kept.drain(..kept.len() - keep);
                    }
                }
                Sink::Null => {}
            }
        }
        (kept, dropped)
    })
}

/// One VM's host resources: the qemu process (group) and the run directory. Dropping it
/// kills the group, reaps qemu and removes the directory, on every path out.
struct Vm {
    dir: PathBuf,
    child: Option<Child>,
}

impl Vm {
    fn create(work: &Path, context: ContextId) -> Result<Vm, HardwareError> {
        let dir = work.join(format!(
            "run.{}.{}.{}",
            std::process::id(),
            context,
            next_serial()
        ));
        let werr = |source| HardwareError::WriteCache {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(work).map_err(werr)?;
        std::fs::create_dir(&dir).map_err(werr)?;
        Ok(Vm { dir, child: None })
    }

    fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Ok(None),
        }
    }

    fn kill_and_wait(&mut self) -> io::Result<std::process::ExitStatus> {
        match self.child.as_mut() {
            Some(c) => {
                kill_group(c);
                let _ = c.kill();
                c.wait()
            }
            None => Err(io::Error::other("no qemu process")),
        }
    }
}

/// SIGKILL to qemu's process group (its id is qemu's pid: `process_group(0)`, and setpriv
/// exec'd into qemu), so anything qemu started goes with it.
fn kill_group(c: &Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut()
            && !matches!(c.try_wait(), Ok(Some(_)))
        {
            kill_group(c);
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What `nebula-ctl run --level critical [--memory BYTES] [--time DURATION] -- CMD ARGS...`
/// does: runs `argv` (a host program, looked up on `PATH`, copied into the guest with its
/// libraries) in a fresh VM with [`Accel::Auto`], the guest's output streamed to this
/// process's stdout and stderr. The CLI exits with [`Outcome::exit_code`] and, when
/// [`Outcome::error`] says why the context failed, prints that line.
///
/// # Errors
/// An empty `argv`, and everything [`HardwareIsolation::new`] and
/// [`HardwareIsolation::run_command`] return.
pub fn run_cli(
    argv: &[OsString],
    memory: Option<u64>,
    wall_time: Option<Duration>,
) -> Result<Outcome, HardwareError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| HardwareError::InvalidConfig("no command given".into()))?;
    let mut config = HardwareConfig::new().memory(memory.unwrap_or(DEFAULT_MEMORY));
    if let Some(t) = wall_time {
        config = config.wall_time(t);
    }
    let iso = HardwareIsolation::new(config)?;
    iso.run_command(&GuestCommand::new(program.clone()).args(args.iter().cloned()))
}

/// A command as it would be typed, for reports.
pub fn describe(cmd: &GuestCommand) -> String {
    let mut s = match &cmd.program {
        Program::Host(p) => p.to_string_lossy().into_owned(),
        Program::Busybox(a) => format!("busybox {a}"),
    };
    for a in &cmd.args {
        s.push(' ');
        s.push_str(&OsStr::new(a).to_string_lossy());
    }
    s
}

/// Whether the hardware level runs here, from what is installed and from the cached KVM
/// probe (the probe itself boots a guest, so this never runs it: `nebula-ctl probe
/// --hardware` or the first `Critical` context does).
pub fn availability() -> crate::base::LevelStatus {
    let on_path = |exe: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(exe).is_file())
    };
    let mut lacks = Vec::new();
    if !on_path("qemu-system-x86_64") {
        lacks.push("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86, or tools/vm/deps.sh)".to_string());
    }
    if !Path::new("/bin/busybox").is_file() {
        lacks.push(
            "no /bin/busybox for the guest's userland (apt-get install busybox-static)".to_string(),
        );
    }
    let mut status = crate::base::LevelStatus::from_lacks(lacks);
    if status.available {
        let note = match cached_probe(&default_cache_dir()) {
            Some(p) if p.kvm => format!(
                "KVM works; start-up {:.1} s per context",
                p.startup.as_secs_f64()
            ),
            Some(p) => format!(
                "TCG only (software emulation, 10-50x slower; KVM: {}); start-up {:.1} s per context",
                p.kvm_reason,
                p.startup.as_secs_f64()
            ),
            None => {
                "KVM not probed yet on this boot (nebula-ctl probe --hardware boots a test guest)"
                    .into()
            }
        };
        status.limited.push(note);
    }
    status
}

/// How long a KVM probe guest may take before KVM counts as hung. KVM boots this kernel
/// to user space in well under a second where it works; TCG needs 2-3 s.
pub const KVM_PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// Probes the accelerator once per boot of the host: boots the guest kernel with `/bin/true`
/// under KVM with a [`KVM_PROBE_DEADLINE`] (only when `/dev/kvm` opens read-write), else
/// (or when that fails or hangs) under TCG, and measures the start-up cost. The answer is
/// cached in the process and in `<cache>/hw-probe` (keyed by the host's boot id), so a
/// guest is booted for it once per host boot.
///
/// # Errors
/// The kernel cannot be had, or not even a TCG guest boots ([`HardwareError`]).
pub fn probe(cache: &Path) -> Result<HardwareProbe, HardwareError> {
    static MEMO: Mutex<Option<HardwareProbe>> = Mutex::new(None);
    let mut memo = MEMO.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = memo.as_ref() {
        return Ok(p.clone());
    }
    let kernel = debian_kernel(cache)?;
    let file = cache.join("hw-probe");
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_owned();
    if let Some(p) = read_cached(&file, &boot_id, &kernel) {
        *memo = Some(p.clone());
        return Ok(p);
    }
    let p = run_probe(cache, &kernel)?;
    let text = format!(
        "boot_id={boot_id}\nkernel={}\nkvm={}\nkvm_reason={}\nstartup_us={}\n",
        kernel.display(),
        p.kvm,
        p.kvm_reason.replace('\n', " "),
        p.startup.as_micros()
    );
    let tmp = cache.join(format!(".hw-probe.{}", std::process::id()));
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, &file);
    }
    let _ = std::fs::remove_file(&tmp);
    *memo = Some(p.clone());
    Ok(p)
}

fn run_probe(cache: &Path, kernel: &Path) -> Result<HardwareProbe, HardwareError> {
    let base = HardwareConfig::new()
        .memory(128 << 20)
        .cache_dir(cache)
        .kernel(kernel)
        .output(Output::Null, Output::Capture)
        .wall_time(Duration::from_secs(30));
    let true_cmd = GuestCommand::busybox("true");
    let kvm_reason = match kvm_device() {
        Err(reason) => reason,
        Ok(()) => {
            let cfg = base
                .clone()
                .accel(Accel::Kvm)
                .boot_timeout(KVM_PROBE_DEADLINE);
            let t = Instant::now();
            match HardwareIsolation::new(cfg).and_then(|iso| iso.run_command(&true_cmd)) {
                Ok(o) if o.status == Some(0) => {
                    return Ok(HardwareProbe {
                        kvm: true,
                        kvm_reason: "ok".into(),
                        accel: Accel::Kvm,
                        startup: t.elapsed(),
                        kernel: kernel.to_owned(),
                    });
                }
                Ok(o) => format!(
                    "the KVM probe guest ended without success (status {:?}, panic {})",
                    o.status, o.guest_panic
                ),
                Err(e) => format!("the KVM probe guest failed: {e}"),
            }
        }
    };
    let t = Instant::now();
    let o = HardwareIsolation::new(base.accel(Accel::Tcg))?.run_command(&true_cmd)?;
    if o.status != Some(0) {
        return Err(HardwareError::Probe(format!(
            "/bin/true did not succeed in a TCG guest (status {:?}); console: {}",
            o.status, o.console_tail
        )));
    }
    Ok(HardwareProbe {
        kvm: false,
        kvm_reason,
        accel: Accel::Tcg,
        startup: t.elapsed(),
        kernel: kernel.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_line_is_parsed() {
        let l = "[    5.1] Out of memory: Killed process 75 (sh) total-vm:137232kB, anon-rss:120000kB, file-rss:4kB, shmem-rss:0kB, UID:0 pgtables:300kB oom_score_adj:0";
        assert_eq!(
            parse_oom_line(l),
            Some((137232 * 1024, (120000 + 4) * 1024))
        );
        assert_eq!(parse_oom_line("nothing"), None);
    }

    #[test]
    fn config_is_validated_before_anything_runs() {
        let e = HardwareIsolation::new(HardwareConfig::new().memory(1 << 20)).unwrap_err();
        assert!(matches!(e, HardwareError::InvalidConfig(_)), "{e}");
        let e =
            HardwareIsolation::new(HardwareConfig::new().file("/bin/true", "/init")).unwrap_err();
        assert!(matches!(e, HardwareError::InvalidConfig(_)), "{e}");
        let e = HardwareIsolation::new(HardwareConfig::new().env("A-B", "x")).unwrap_err();
        assert!(matches!(e, HardwareError::InvalidConfig(_)), "{e}");
        let e = HardwareIsolation::new(HardwareConfig::new().kernel("/nonexistent/vmlinux"))
            .unwrap_err();
        // without qemu on PATH the tool check answers first; either names the problem
        assert!(
            matches!(
                e,
                HardwareError::Kernel { .. } | HardwareError::ToolMissing { .. }
            ),
            "{e}"
        );
    }

    #[test]
    fn exit_code_follows_the_shell() {
        let mut o = Outcome {
            context: ContextId::fresh(),
            pid: 1,
            status: Some(3),
            timed_out: false,
            oom_killed: false,
            guest_panic: false,
            accel: Accel::Tcg,
            memory: 1,
            boot_time: Duration::ZERO,
            run_time: Duration::ZERO,
            wall_time: Duration::ZERO,
            initramfs_cached: false,
            host_peak_rss: None,
            violations: vec![],
            kernel_reports: vec![],
            console_tail: String::new(),
            stdout: vec![],
            stderr: vec![],
            output_dropped: 0,
        };
        assert_eq!(o.exit_code(), 3);
        assert!(o.error(None).is_none());
        o.status = None;
        o.timed_out = true;
        assert_eq!(o.exit_code(), 137);
        // The seed's DeadlineExceeded (Outcome::error lives with IsolationError, in error.rs).
        let e = o.error(None).expect("a timed-out context failed");
        assert!(e.to_string().contains("deadline"), "{e}");
    }
}
