//! The one door for raw system calls.
//!
//! Everything outside this module is safe Rust (`#![deny(unsafe_code)]` at the crate root);
//! `git grep 'allow(unsafe_code)'` lists every place that talks to the kernel without a safe
//! wrapper. Each function here reads like a man-page summary: what it does, `# Errors`, and
//! `# References`. Calls that rustix has go through rustix; `libc` fills the gaps (`pkey_*`,
//! `seccomp(2)`, `userfaultfd(2)`).
#![allow(unsafe_code)]

pub mod bpf;
pub mod clone;
pub mod fd;
pub mod landlock;
pub mod mm;
pub mod mount;
pub mod pkey;
pub mod pkru;
pub mod privileges;
pub mod process;
pub mod rlimit;
pub mod scm;
pub mod seccomp;
pub mod seccomp_notify;
pub mod signal;
pub mod uffd;

/// `EOVERFLOW`, for a kernel return that does not fit the type its man page gives it
/// (`syscall(2)` widens every return to a `long`); a kernel that keeps its ABI never
/// produces it.
fn overflow(_: std::num::TryFromIntError) -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::EOVERFLOW)
}
