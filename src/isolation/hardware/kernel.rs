//! The guest kernel and the accelerator probe.
//!
//! The kernel comes from `tools/vm/kernel.sh`, the same script the VM test tier calls: it is
//! embedded here (`include_str!`) and run with `bash -c`, so there is one code path for
//! resolving, downloading (`apt-get download`), caching and PVH-extracting the Debian cloud
//! kernel, and an installed binary does not depend on the source tree being around.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::HardwareError;

/// `tools/vm/kernel.sh`, verbatim.
pub(crate) const KERNEL_SH: &str = include_str!("../../../tools/vm/kernel.sh");

/// Resolves (and on first use fetches) the Debian cloud kernel into `cache`; memoised per
/// cache directory for the life of the process (the script costs ~0.8 s even when warm:
/// `apt-cache depends`).
pub(crate) fn debian_kernel(cache: &Path) -> Result<PathBuf, HardwareError> {
    static MEMO: OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    let mut m = memo.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = m.get(cache).filter(|k| k.is_file()) {
        return Ok(k.clone());
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(KERNEL_SH)
        .arg("kernel.sh")
        .env("VM_CACHE", cache)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HardwareError::Kernel {
            detail: "cannot run bash for tools/vm/kernel.sh".into(),
            source: Some(source),
        })?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.is_file() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(HardwareError::Kernel {
            detail: format!(
                "tools/vm/kernel.sh exited with {}: {}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
            source: None,
        });
    }
    m.insert(cache.to_owned(), path.clone());
    Ok(path)
}

/// What the accelerator probe found; [`probe`] returns it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HardwareProbe {
    /// KVM booted the probe guest to user space and back within the deadline.
    pub kvm: bool,
    /// Why KVM is not used (or "ok"): no `/dev/kvm`, cannot open it, qemu's error, or the
    /// deadline that a hung guest ran into.
    pub kvm_reason: String,
    /// The accelerator contexts with [`super::Accel::Auto`] use.
    pub accel: super::Accel,
    /// Start-to-exit of `/bin/true` in a guest with that accelerator (kernel boot, `/init`,
    /// the command, reboot), measured by the probe: the start-up cost of one context.
    pub startup: Duration,
    /// The kernel the probe booted.
    pub kernel: PathBuf,
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

/// The probe's answer if it is already known (in this process, or cached for this host
/// boot and kernel in `<cache>/hw-probe`); never boots a guest. For reports that must stay
/// fast (`nebula-ctl probe` without `--hardware`).
pub fn cached_probe(cache: &Path) -> Option<HardwareProbe> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let text = std::fs::read_to_string(cache.join("hw-probe")).ok()?;
    let kernel = text
        .lines()
        .find_map(|l| l.strip_prefix("kernel="))
        .map(PathBuf::from)?;
    read_cached(&cache.join("hw-probe"), boot_id.trim(), &kernel)
}

fn read_cached(file: &Path, boot_id: &str, kernel: &Path) -> Option<HardwareProbe> {
    let text = std::fs::read_to_string(file).ok()?;
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::to_owned)
    };
    if boot_id.is_empty() || get("boot_id")? != boot_id || get("kernel")? != kernel.to_str()? {
        return None;
    }
    let kvm = get("kvm")? == "true";
    Some(HardwareProbe {
        kvm,
        kvm_reason: get("kvm_reason")?,
        accel: if kvm {
            super::Accel::Kvm
        } else {
            super::Accel::Tcg
        },
        startup: Duration::from_micros(get("startup_us")?.parse().ok()?),
        kernel: kernel.to_owned(),
    })
}

fn run_probe(cache: &Path, kernel: &Path) -> Result<HardwareProbe, HardwareError> {
    use super::{Accel, GuestCommand, HardwareConfig, HardwareIsolation, Output};
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

/// `/dev/kvm` exists and opens read-write (its presence alone proves nothing: on nested
/// hosts it opens and guests still hang or fail).
fn kvm_device() -> Result<(), String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no /dev/kvm".into()),
        Err(e) => Err(format!("cannot open /dev/kvm: {e}")),
    }
}
