//! The levels by trust: which mechanism a [`SecurityLevel`] picks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use super::context::MemoryIsolation;
use super::hardware;
use super::process;
use super::thread;
#[cfg(feature = "wasm")]
use super::wasm;
pub use crate::base::LevelStatus;
use crate::error::Result;

/// Each level's status by name: `region`, `thread`, `process`, `wasm`, `hardware`.
pub type Levels = BTreeMap<&'static str, LevelStatus>;

/// The levels' status on this host, computed once from [`crate::features()`]; each level
/// answers for itself (`thread::availability`, `process::availability`, ...).
pub fn levels() -> &'static Levels {
    static LEVELS: OnceLock<Levels> = OnceLock::new();
    LEVELS.get_or_init(|| {
        let f = crate::features();
        let mut m = Levels::new();
        m.insert("region", LevelStatus::from_lacks(vec![]));
        m.insert("thread", thread::availability(f));
        m.insert("process", process::availability(f));
        #[cfg(feature = "wasm")]
        m.insert("wasm", wasm::availability(f));
        #[cfg(not(feature = "wasm"))]
        m.insert(
            "wasm",
            LevelStatus::from_lacks(vec![
                "built without the `wasm` feature (cargo build --features wasm)".to_string(),
            ]),
        );
        m.insert("hardware", hardware::availability());
        m
    })
}

/// The `levels` part of `nebula-ctl probe`'s report, one level per line.
pub fn report(levels: &Levels) -> String {
    let mut s = String::from("levels\n");
    for (name, l) in levels {
        let yn = if l.available { "yes" } else { "no " };
        let lacks = if l.lacks.is_empty() {
            String::new()
        } else {
            format!(": {}", l.lacks.join("; "))
        };
        let _ = writeln!(s, "  {name:<14} {yn}{lacks}");
        for note in &l.limited {
            let _ = writeln!(s, "  {:<14}      limited: {note}", "");
        }
    }
    s
}

/// How strongly a workload is separated from the rest, mapped to a mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityLevel {
    /// A thread with its own protection-key domain (contains bugs, not attackers).
    Low,
    /// A child process in its own namespaces and cgroup.
    Medium,
    /// A wasm instance (feature `wasm`).
    High,
    /// A virtual machine.
    Critical,
}

/// The isolation a [`SecurityLevel`] maps to, ready to use
/// ([`MemoryIsolation::for_level`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum LevelIsolation {
    /// `Low`: protection-key domains; run code with
    /// [`thread::ThreadIsolation::new`]`(&domains)`.
    Thread {
        /// The probe token.
        pkeys: crate::pkey::Pkeys,
        /// A domain set to create domains in.
        domains: crate::pkey::DomainSet,
    },
    /// `Medium`: process contexts with the strict default configuration.
    Process(Box<process::ProcessIsolation>),
    /// `High`: wasm instances.
    #[cfg(feature = "wasm")]
    Wasm(wasm::WasmIsolation),
    /// `Critical`: a virtual machine per command.
    Hardware(Box<hardware::HardwareIsolation>),
}

impl MemoryIsolation {
    /// The seed's best practice: pick the mechanism by how much you trust the code.
    /// `Low` → a thread in its own protection-key domain, `Medium` → a process context,
    /// `High` → a wasm instance (built with the `wasm` feature), `Critical` → a virtual
    /// machine.
    ///
    /// # Errors
    /// [`IsolationError::Unsupported`](crate::IsolationError::Unsupported) naming what this host or build lacks (the same
    /// answer as `nebula-ctl probe`): no PKU for `Low`, no user namespaces for `Medium`,
    /// a build without `wasm` for `High`; for `Critical`, no qemu or kernel (the first
    /// `Critical` on a host boot also probes whether KVM really works: 3 to 5 s, then cached).
    pub fn for_level(level: SecurityLevel) -> Result<LevelIsolation> {
        match level {
            SecurityLevel::Low => {
                let pkeys = crate::pkey::Pkeys::probe()?;
                let domains = crate::pkey::DomainSet::new(&pkeys);
                Ok(LevelIsolation::Thread { pkeys, domains })
            }
            SecurityLevel::Medium => Ok(LevelIsolation::Process(Box::new(
                process::ProcessIsolation::new(process::ProcessConfig::new())?,
            ))),
            #[cfg(feature = "wasm")]
            SecurityLevel::High => Ok(LevelIsolation::Wasm(wasm::WasmIsolation::new(
                Default::default(),
            )?)),
            #[cfg(not(feature = "wasm"))]
            SecurityLevel::High => Err(crate::error::IsolationError::Unsupported {
                feature: "the wasm level",
                reason:
                    "this build has no `wasm` feature; rebuild with `cargo build --features wasm`"
                        .into(),
            }),
            SecurityLevel::Critical => Ok(LevelIsolation::Hardware(Box::new(
                hardware::HardwareIsolation::new(hardware::HardwareConfig::new())?,
            ))),
        }
    }
}
