//! What a hardware context is made of: its configuration, the command it runs and its
//! errors.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::violation::ViolationInfo;

/// Guest memory used when none is given: 256 MiB.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// The least guest memory accepted: the Debian cloud kernel and the unpacked initramfs need
/// about this much before the command gets any (64 MiB panics at boot: "System is
/// deadlocked on memory"; 72 MiB boots).
pub const MIN_MEMORY: u64 = 80 << 20;
/// How long the guest may take to boot to `/init` when no boot timeout is given (TCG).
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes of stdout or stderr kept by [`Output::Capture`]; the rest is dropped (and
/// counted in [`Outcome::output_dropped`](super::Outcome::output_dropped)).
pub const MAX_CAPTURE: usize = 16 << 20;
/// Most bytes of the kernel console kept for [`Outcome::console_tail`].
pub(super) const CONSOLE_KEEP: usize = 64 << 10;
/// How long the supervisor waits for qemu to connect its serial ports.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The supervisor's poll interval (qemu exit, deadlines, host memory sample).
pub(super) const TICK: Duration = Duration::from_millis(20);

static SERIAL: AtomicU64 = AtomicU64::new(0);

pub(crate) fn next_serial() -> u64 {
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

/// Which accelerator runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// [`probe`](super::probe) decides: KVM when a probe guest really booted under it, else TCG.
    #[default]
    Auto,
    /// qemu's software emulation (`-accel tcg -cpu max`): slower, works everywhere.
    Tcg,
    /// Hardware virtualisation (`-accel kvm -cpu host`), without probing; a guest that hangs
    /// is stopped by the boot timeout.
    Kvm,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        })
    }
}

/// The qemu machine type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Machine {
    /// `-M microvm,acpi=off`: no PCI, no firmware tables (the default).
    #[default]
    Microvm,
    /// `-M q35`: a PC with PCI and ACPI, for kernels or qemus where microvm does not boot.
    Q35,
}

/// Which kernel the guest boots.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum KernelSource {
    /// The Debian cloud kernel, fetched and cached by `tools/vm/kernel.sh` (the VM test
    /// tier's code path).
    #[default]
    Debian,
    /// A kernel image the caller provides (an ELF vmlinux with a PVH note, or a bzImage),
    /// with the 8250 serial driver, devtmpfs, tmpfs and initramfs support built in.
    Path(PathBuf),
}

/// Where the guest's stdout or stderr goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Output {
    /// Written to the supervisor's own stream as it arrives.
    #[default]
    Inherit,
    /// Collected into [`Outcome::stdout`](super::Outcome::stdout) / [`Outcome::stderr`](super::Outcome::stderr) (at most [`MAX_CAPTURE`]).
    Capture,
    /// Read and dropped.
    Null,
}

/// A callback for violations (out of memory, time limit).
pub type ViolationCallback = Arc<dyn Fn(&ViolationInfo) + Send + Sync>;

/// What a hardware context gets: memory, vCPUs, a wall-clock limit, the kernel, the
/// accelerator, extra files and environment. Plain data with chainable setters.
#[derive(Clone)]
pub struct HardwareConfig {
    pub(super) memory: u64,
    pub(super) vcpus: u32,
    pub(super) wall_time: Option<Duration>,
    pub(super) boot_timeout: Duration,
    pub(super) accel: Accel,
    pub(super) machine: Machine,
    pub(super) kernel: KernelSource,
    pub(super) files: Vec<(PathBuf, String)>,
    pub(super) env: Vec<(String, OsString)>,
    pub(super) stdout: Output,
    pub(super) stderr: Output,
    pub(super) cache_dir: Option<PathBuf>,
    pub(super) work_dir: Option<PathBuf>,
    pub(super) append: String,
    pub(super) on_violation: Option<ViolationCallback>,
}

impl fmt::Debug for HardwareConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HardwareConfig")
            .field("memory", &self.memory)
            .field("vcpus", &self.vcpus)
            .field("wall_time", &self.wall_time)
            .field("boot_timeout", &self.boot_timeout)
            .field("accel", &self.accel)
            .field("machine", &self.machine)
            .field("kernel", &self.kernel)
            .field("files", &self.files)
            .field("env", &self.env)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .field("cache_dir", &self.cache_dir)
            .field("work_dir", &self.work_dir)
            .field("append", &self.append)
            .field("on_violation", &self.on_violation.is_some())
            .finish()
    }
}

impl Default for HardwareConfig {
    fn default() -> Self {
        HardwareConfig {
            memory: DEFAULT_MEMORY,
            vcpus: 1,
            wall_time: None,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            accel: Accel::Auto,
            machine: Machine::Microvm,
            kernel: KernelSource::Debian,
            files: Vec::new(),
            env: Vec::new(),
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            cache_dir: None,
            work_dir: None,
            append: String::new(),
            on_violation: None,
        }
    }
}

impl HardwareConfig {
    /// The defaults: [`DEFAULT_MEMORY`], one vCPU, no wall-clock limit, [`Accel::Auto`],
    /// microvm, the Debian kernel, output inherited.
    pub fn new() -> Self {
        Self::default()
    }

    /// Guest memory in bytes (qemu `-m`, rounded down to MiB): the context's memory limit,
    /// guest kernel included.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }

    /// Number of vCPUs (`-smp`).
    pub fn vcpus(mut self, n: u32) -> Self {
        self.vcpus = n;
        self
    }

    /// Wall-clock limit for the command, counted from the moment the guest's `/init` starts
    /// it (boot is bounded by [`HardwareConfig::boot_timeout`]).
    pub fn wall_time(mut self, d: Duration) -> Self {
        self.wall_time = Some(d);
        self
    }

    /// How long the guest may take to reach `/init` ([`DEFAULT_BOOT_TIMEOUT`]).
    pub fn boot_timeout(mut self, d: Duration) -> Self {
        self.boot_timeout = d;
        self
    }

    /// The accelerator.
    pub fn accel(mut self, a: Accel) -> Self {
        self.accel = a;
        self
    }

    /// The machine type.
    pub fn machine(mut self, m: Machine) -> Self {
        self.machine = m;
        self
    }

    /// Boots this kernel image instead of the Debian cloud kernel.
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = KernelSource::Path(path.into());
        self
    }

    /// Copies a host file into the guest at `guest` (an absolute path), with the libraries
    /// `ldd` names when it is executable.
    pub fn file(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.files.push((host.into(), guest.into()));
        self
    }

    /// Sets an environment variable for the command (the guest sees only `PATH`, `HOME`
    /// and these).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Where stdout and stderr go.
    pub fn output(mut self, stdout: Output, stderr: Output) -> Self {
        self.stdout = stdout;
        self.stderr = stderr;
        self
    }

    /// The cache for kernels, initramfs archives and the probe result; defaults to
    /// [`default_cache_dir`] (the VM test tier's cache).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Where per-context run directories are created (defaults to `<cache>/hw-run`).
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// Extra kernel command-line arguments (e.g. `loglevel=7`).
    pub fn kernel_append(mut self, args: impl Into<String>) -> Self {
        self.append = args.into();
        self
    }

    /// Called for every violation (out of memory, time limit), on the supervising thread.
    pub fn on_violation(mut self, f: impl Fn(&ViolationInfo) + Send + Sync + 'static) -> Self {
        self.on_violation = Some(Arc::new(f));
        self
    }

    /// The guest memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory
    }
}

/// The cache the VM test tier uses: `$VM_CACHE`, else `$CARGO_TARGET_DIR/vm`, else the
/// target directory this crate was built into (`CARGO_TARGET_DIR` at build time, else
/// `<crate>/target`) + `/vm`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VM_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return absolute(PathBuf::from(d)).join("vm");
    }
    match option_env!("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => absolute(PathBuf::from(d)).join("vm"),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vm"),
    }
}

pub(super) fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

/// A command to run in the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestCommand {
    pub(super) program: Program,
    pub(super) args: Vec<OsString>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Program {
    /// A host program, copied into the guest at its host path with its libraries.
    Host(OsString),
    /// A busybox applet (`/bin/busybox <applet>` in the guest).
    Busybox(String),
}

impl GuestCommand {
    /// A host program: copied into the guest at the same absolute path, with the libraries
    /// `ldd` names. A name without `/` is looked up on the supervisor's `PATH`.
    pub fn new(program: impl Into<OsString>) -> GuestCommand {
        GuestCommand {
            program: Program::Host(program.into()),
            args: Vec::new(),
        }
    }

    /// A busybox applet (`sh`, `true`, `cat`, ...), run as `/bin/busybox <applet>`; nothing is
    /// copied from the host.
    pub fn busybox(applet: impl Into<String>) -> GuestCommand {
        GuestCommand {
            program: Program::Busybox(applet.into()),
            args: Vec::new(),
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> GuestCommand {
        self.args.push(a.into());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> GuestCommand {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// An error of the hardware level. Converts into [`IsolationError`](crate::IsolationError).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HardwareError {
    /// A host tool this level needs is missing.
    #[error("{tool} is not available: {reason}; Hint: apt-get install {package}")]
    ToolMissing {
        /// The tool.
        tool: &'static str,
        /// What is wrong.
        reason: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// The configuration is invalid.
    #[error("invalid hardware context configuration: {0}")]
    InvalidConfig(String),
    /// KVM was asked for but cannot be used here.
    #[error("{feature} is not available here: {reason}")]
    Unsupported {
        /// What was asked for.
        feature: &'static str,
        /// Why not.
        reason: String,
    },
    /// The guest kernel could not be had.
    #[error(
        "no guest kernel: {detail}; Hint: run tools/vm/kernel.sh by hand (it fetches a Debian kernel into the VM cache, $VM_CACHE), or configure the path of a kernel image"
    )]
    Kernel {
        /// What failed.
        detail: String,
        /// The system error, when there is one.
        #[source]
        source: Option<io::Error>,
    },
    /// The program was not found on `PATH`.
    #[error("program {program:?} not found on PATH; Hint: pass an absolute path")]
    ProgramNotFound {
        /// The name given.
        program: String,
    },
    /// Running `ldd` on a program failed.
    #[error("running ldd on {} failed", .program.display())]
    Ldd {
        /// The program.
        program: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Reading a file for the initramfs failed.
    #[error("reading {} for the guest's initramfs failed", .path.display())]
    ReadInput {
        /// The host file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Writing the initramfs cache or the run directory failed.
    #[error("writing {} failed", .path.display())]
    WriteCache {
        /// The file or directory.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Starting qemu failed.
    #[error("starting {} failed", .qemu.display())]
    Spawn {
        /// The qemu binary.
        qemu: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// qemu exited before the guest started the command.
    #[error("qemu exited with {status} before the guest started: {stderr}")]
    QemuFailed {
        /// qemu's exit status.
        status: String,
        /// qemu's own error output (the last lines).
        stderr: String,
    },
    /// The guest did not reach `/init` within the boot timeout.
    #[error(
        "the guest did not start the command within {timeout:?} (accel {accel}); console: {console}; Hint: allow a longer boot timeout, or use the TCG accelerator (software emulation) where KVM hangs"
    )]
    BootTimeout {
        /// The timeout.
        timeout: Duration,
        /// The accelerator.
        accel: Accel,
        /// The console's last lines.
        console: String,
    },
    /// Supervising qemu (sockets, wait) failed.
    #[error("{operation} failed")]
    Supervise {
        /// What was being done.
        operation: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The accelerator probe could not boot even a TCG guest.
    #[error("the hardware probe failed: {0}")]
    Probe(String),
}
