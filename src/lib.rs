//! # nebula-memory
//!
//! Memory isolation for running untrusted or buggy components side by side on Linux, each
//! level built directly on the kernel mechanism that enforces it: the type you hold tells
//! you what protects you.
//!
//! ## Overview
//!
//! | Level | Unit | Enforced by | Status |
//! |---|---|---|---|
//! | region | [`isolation::IsolatedContext`], [`sandbox::MemorySandbox`] | mmap'd region, guard pages, atomic budgets | available |
//! | thread (`Low`) | [`pkey::Domain`] on an [`isolation::thread::ThreadIsolation`] thread | `pkey_mprotect`, per-thread PKRU, seccomp thread filter | available on x86-64 with PKU |
//! | process (`Medium`) | [`isolation::process::ProcessIsolation`] child | namespaces, cgroup v2 ([`cgroup`]), rlimits, [`privileges`], [`seccomp`], [`landlock`] | available (cgroup limits where cgroup v2 is) |
//! | wasm (`High`) | `isolation::wasm::WasmIsolation` (feature `wasm`) | bounds checks, StoreLimits, fuel, epoch deadlines | available with the `wasm` feature |
//! | hardware (`Critical`) | `isolation::hardware::HardwareIsolation` | a qemu microVM (nested paging under KVM, else TCG emulation) | available where qemu runs |
//!
//! [`features()`] says what this host can do and why not; `nebula-ctl probe` prints it.
//!
//! ## Examples
//!
//! ```
//! use nebula_memory::isolation::MemoryIsolation;
//! use nebula_memory::IsolationError;
//!
//! let iso = MemoryIsolation::new();
//! let parent = iso.create_context().with_memory_limit(64 * 1024).build()?;
//! let child = iso.create_context().with_parent(&parent).with_memory_limit(1 << 20).build()?;
//! // The child's own limit is larger, but its parent's budget bounds it.
//! let err = child.allocate(128 * 1024).unwrap_err();
//! assert!(matches!(err, IsolationError::LimitExceeded { context, .. } if context == parent.id()));
//! # Ok::<(), IsolationError>(())
//! ```
//!
//! ## Floors
//!
//! Each module imports only modules below it (`tools/modgraph.py --floors`; `make lint` fails
//! on any cycle, file by file and folder by folder):
//!
//! ```text
//!  runtimes     oci: the OCI runtime (runc's command line) on the process level
//!  front door   isolation: the seed's names, levels (for_level), tenants; authority::{channel, ipc}
//!  seed API     isolation::{context (region), thread}, memory::sandbox, authority::capability
//!  roll-up      error: IsolationError, the seed's variants and every module error below
//!  levels       isolation::{process, wasm, hardware}; admin::{registry, profile, report}
//!  mechanisms   memory::{guarded, region, pkey, uffd, violation}, seccomp, privileges,
//!               landlock, cgroup, probe (the host's facts)
//!  ground       base: ContextId, Permissions, LevelStatus, the violation record
//!  syscalls     sys: plain data in, nothing above it called
//! ```
//!
//! The mechanisms and the process, wasm and hardware levels each speak their own error;
//! the seed's API speaks [`IsolationError`], which holds those errors whole.
//!
//! ## Features
//!
//! - `wasm`: the wasm level on wasmtime (off by default: it is a long build).
//!
//! ## Safety
//!
//! All raw system calls live in `sys` (private). The rest of the crate is safe Rust
//! (`#![deny(unsafe_code)]`) but for a few unsafe doors, each an `unsafe fn` with a
//! `# Safety` contract or an `unsafe` block proving one, behind `#[allow(unsafe_code)]`
//! (`git grep 'allow(unsafe_code)'` is the audit list): turning a fresh allocation into a
//! slice and zeroing a region's pages ([`isolation::IsolatedContext`]), adopting an
//! inherited descriptor number ([`isolation::ipc`]), and closing the supervisor's
//! descriptors in a freshly forked closure context.
#![deny(unsafe_code)]

pub mod admin;
mod authority;
mod base;
pub mod cgroup;
pub mod error;
pub mod isolation;
pub mod landlock;
mod memory;
pub mod oci;
pub mod privileges;
pub mod probe;
pub mod seccomp;
mod sys;

pub use error::{IsolationError, Result};
pub use memory::{pkey, region, sandbox, uffd, violation};
pub use probe::{Features, features};
pub use sys::mm::{Prot, page_size};
