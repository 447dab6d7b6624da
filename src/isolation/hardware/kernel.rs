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
use std::time::Duration;

use super::config::{Accel, HardwareError};

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

/// What the accelerator probe found; [`probe`](super::probe) returns it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HardwareProbe {
    /// KVM booted the probe guest to user space and back within the deadline.
    pub kvm: bool,
    /// Why KVM is not used (or "ok"): no `/dev/kvm`, cannot open it, qemu's error, or the
    /// deadline that a hung guest ran into.
    pub kvm_reason: String,
    /// The accelerator contexts with [`Accel::Auto`](super::Accel::Auto) use.
    pub accel: Accel,
    /// Start-to-exit of `/bin/true` in a guest with that accelerator (kernel boot, `/init`,
    /// the command, reboot), measured by the probe: the start-up cost of one context.
    pub startup: Duration,
    /// The kernel the probe booted.
    pub kernel: PathBuf,
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

pub(super) fn read_cached(file: &Path, boot_id: &str, kernel: &Path) -> Option<HardwareProbe> {
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
        accel: if kvm { Accel::Kvm } else { Accel::Tcg },
        startup: Duration::from_micros(get("startup_us")?.parse().ok()?),
        kernel: kernel.to_owned(),
    })
}

/// `/dev/kvm` exists and opens read-write (its presence alone proves nothing: on nested
/// hosts it opens and guests still hang or fail).
pub(super) fn kvm_device() -> Result<(), String> {
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
