//! Hardware contexts ([`SecurityLevel::Critical`](super::SecurityLevel::Critical)): a command
//! in its own virtual machine, with a guest kernel of its own and memory separated by the
//! MMU's nested page tables (KVM) or by qemu's software MMU (TCG).
//!
//! # Overview
//!
//! ```text
//!  supervisor (this process)                          the guest (qemu -M microvm)
//!  ─────────────────────────                          ───────────────────────────
//!  HardwareIsolation::new(config)
//!    ├ kernel: tools/vm/kernel.sh (embedded; Debian cloud kernel, cached, PVH vmlinux)
//!    └ accel: Tcg / Kvm / Auto = probe() (boots /bin/true under KVM with a 5 s deadline,
//!             falls back to TCG; cached per host boot)
//!  run_command(cmd)
//!    ├ initramfs: busybox + program + ldd libs + files + /init, cached by SHA-256
//!    │  + a per-run archive with /cmd (argv, env), appended
//!    ├ run dir <work>/run.<pid>.<n>: four unix sockets, the initrd       ttyS0 kernel console
//!    ├ setpriv --pdeathsig KILL qemu (own process group) ─────────────▶ ttyS1 stdout
//!    │   -m <memory> -smp <vcpus>, no network device                      ttyS2 stderr
//!    ├ streams stdout/stderr to the caller (threads)                      ttyS3 NEBULA_STARTED,
//!    ├ wall-clock limit from NEBULA_STARTED, boot deadline before it           NEBULA_RC=<n>
//!    └ console: "Out of memory: Killed process", "Kernel panic" → Outcome, ViolationInfo
//!  Drop of the VM guard: SIGKILL to qemu's process group, wait, remove the run dir
//! ```
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use nebula_memory::isolation::hardware::{GuestCommand, HardwareConfig, HardwareIsolation, Output};
//!
//! # fn main() -> Result<(), nebula_memory::IsolationError> {
//! let iso = HardwareIsolation::new(
//!     HardwareConfig::new()
//!         .memory(128 << 20)
//!         .wall_time(Duration::from_secs(10))
//!         .output(Output::Capture, Output::Inherit),
//! )?;
//! let out = iso.run_command(&GuestCommand::busybox("sh").args(["-c", "echo hi; exit 7"]))?;
//! assert_eq!(out.stdout_text(), "hi\n");
//! assert_eq!(out.status, Some(7));
//! # Ok(()) }
//! ```
//!
//! # Why these choices
//!
//! * **microvm, not q35**: under qemu 7.2 TCG `-M microvm` boots the PVH vmlinux with the
//!   initrd and takes extra `isa-serial` devices for ttyS1-3; it has no PCI, no firmware
//!   tables (`acpi=off`), so the guest has less to probe. [`Machine::Q35`] stays available.
//! * **serial ports, not virtio**: the cloud kernel has the 8250 driver built in, virtio
//!   drivers only as modules; four ports give the console, stdout, stderr and the status
//!   without loading anything. They run at about 160 KB/s under TCG: fine for command output,
//!   not for bulk data.
//! * **The status over its own port**: the guest's stdout may carry anything; the status
//!   port only carries nebula's two lines.
//! * **No network device** is ever attached: the guest has only `lo` (not configured). A
//!   network needs the virtio-net module in the initramfs, which this level does not ship.
//! * **Lifetime**: qemu runs in its own process group with `PR_SET_PDEATHSIG=SIGKILL`
//!   (through `setpriv`, so no code runs between fork and exec in this process); the guard
//!   kills the whole group and removes the run directory on every path out, panics included.
//!
//! # What the outcome can tell
//!
//! The guest's exit status is the shell's `$?` of the command (128 + N when signal N killed
//! it). An out-of-memory kill is read from the guest kernel's own report on its console
//! ("Out of memory: Killed process"), a guest panic from "Kernel panic"; both also appear as
//! [`Outcome::guest_panic`] / [`Outcome::oom_killed`]. Time-limit and out-of-memory events
//! are returned as [`ViolationInfo`](crate::violation::ViolationInfo)s and passed to [`HardwareConfig::on_violation`].
//! [`Outcome::error`] turns an outcome that did not succeed into an [`IsolationError`](crate::IsolationError).

mod config;
mod initramfs;
mod kernel;
mod vm;

pub use config::{
    Accel, DEFAULT_BOOT_TIMEOUT, DEFAULT_MEMORY, GuestCommand, HardwareConfig, HardwareError,
    KernelSource, MAX_CAPTURE, MIN_MEMORY, Machine, Output, ViolationCallback, default_cache_dir,
};
pub use kernel::{HardwareProbe, cached_probe};
pub(crate) use vm::parse_oom_line;
pub use vm::{
    HardwareIsolation, KVM_PROBE_DEADLINE, Outcome, availability, describe, probe, run_cli,
};
