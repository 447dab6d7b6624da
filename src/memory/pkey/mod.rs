//! Protection keys (x86 PKU): owned keys, tagging, this thread's PKRU, and domains — a key
//! plus the regions it guards — virtualized beyond the 15 hardware keys.
//!
//! ## Mechanism
//!
//! Every page carries a 4-bit key (set with `pkey_mprotect`, at allocation time: it costs
//! as much as `mprotect`). Every thread has a PKRU register with an access-disable and a
//! write-disable bit per key; a load or store to a page whose key the thread's PKRU denies
//! faults with `SIGSEGV`/`SEGV_PKUERR` (key in `si_pkey`), which the violation core
//! ([`crate::violation`]) reports. Switching domains is one `WRPKRU` (about 15 ns), no
//! system call.
//!
//! ```text
//!  DomainSet ── hardware keys k1..k14 (+ one "sealed" key no thread ever opens)
//!   ├ Domain A ─ key k3 ─ regions tagged k3        enter(A): PKRU = all managed keys denied
//!   ├ Domain B ─ key k7 ─ regions tagged k7                     except k3 (one WRPKRU)
//!   └ Domain C ─ evicted ─ regions tagged "sealed"  enter(C): take the least recently used
//!                                                  unpinned domain's key, retag its pages
//!                                                  to "sealed", retag C's pages to that key
//! ```
//!
//! ## Virtualization (libmpk-style)
//!
//! A [`DomainSet`] allocates hardware keys as it needs them; when `pkey_alloc` runs out, it
//! evicts a domain: the least recently used one (approximated with the CLOCK algorithm over
//! a per-domain reference bit, so the switch path writes no shared counter) that no thread
//! is inside. Its pages are retagged to the sealed key, so an evicted domain is as closed as
//! a keyed one, and the key goes to the domain being entered. Entering a domain that holds
//! a key costs one atomic increment, one `RDPKRU` and one `WRPKRU`; entering an evicted one
//! costs two `pkey_mprotect` calls per region. So 1,000 domains work; how fast depends on
//! how many are hot at once.
//!
//! ## What it protects against
//!
//! Bugs, not attackers: any code in the process can execute `WRPKRU`; the kernel reads and
//! writes protected memory on a thread's behalf without a signal (`read(2)` into a denied
//! buffer fails with `EFAULT`), and `/proc/self/mem` and `process_vm_writev` ignore PKRU.
//! Pair it with a seccomp thread filter where that matters, or use the process level.
//!
//! ## Twins
//!
//! `enabled` (x86-64) and `disabled` (elsewhere) export the same names. On an x86-64 host
//! whose CPU or kernel lacks PKU, [`Pkeys::probe`] returns [`Unsupported`] with the probe's
//! reason (`nebula-ctl probe` prints the same), and nothing else can be reached without the
//! token. On other architectures the types are uninhabited.

mod types;

pub use types::{DomainId, PkeyError, PkruValue, Rights, Unsupported};

#[cfg(target_arch = "x86_64")]
mod enabled;
#[cfg(target_arch = "x86_64")]
pub use enabled::*;

#[cfg(not(target_arch = "x86_64"))]
mod disabled;
#[cfg(not(target_arch = "x86_64"))]
pub use disabled::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkru_values_round_trip_rights() {
        let v = PkruValue(0x5555_5554);
        assert_eq!(v.rights(0), Rights::ReadWrite);
        assert_eq!(v.rights(1), Rights::NoAccess);
        let w = v.with(3, Rights::ReadOnly).with(1, Rights::ReadWrite);
        assert_eq!(w.rights(3), Rights::ReadOnly);
        assert_eq!(w.rights(1), Rights::ReadWrite);
        assert_eq!(w.rights(2), Rights::NoAccess);
        assert_eq!(w.with(3, Rights::NoAccess).with(1, Rights::NoAccess), v);
    }

    #[test]
    fn the_probe_and_the_token_agree() {
        match Pkeys::probe() {
            Ok(_) => assert!(crate::features().pkeys.available),
            Err(e) => {
                assert!(!crate::features().pkeys.available);
                assert_eq!(
                    Some(e.reason.as_str()),
                    crate::features().pkeys.reason.as_deref()
                );
            }
        }
    }
}
