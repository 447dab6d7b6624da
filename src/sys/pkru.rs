//! The PKRU register: `RDPKRU` / `WRPKRU` through `core::arch::asm!`.
//!
//! PKRU holds two bits per protection key (bit `2k`: access disable, bit `2k+1`: write
//! disable) and is per thread. Both instructions raise `#UD` unless the OS enabled PKU
//! (`CR4.OSPKE`, visible as `CPUID.(EAX=7,ECX=0):ECX[4]`), so they are reachable only through
//! a [`Pkru`] token that [`Pkru::detect`] hands out after checking that bit.
//!
//! Key 0 is never write- or access-disabled: glibc's rseq area lives under key 0 and the
//! kernel kills a thread whose PKRU denies it on its next migration (see DESIGN.md), and the
//! stack, heap and signal stacks are key 0. [`Pkru::write`] clears key 0's bits of every
//! value it writes.

/// Proof that this CPU and OS support `RDPKRU`/`WRPKRU` (`CPUID` OSPKE bit set).
#[derive(Clone, Copy, Debug)]
pub struct Pkru(());

/// Key 0's two bits.
pub const KEY0_BITS: u32 = 0b11;

/// `CPUID.(EAX=7,ECX=0):ECX` bit 4 (OSPKE: the OS enabled them, RDPKRU/WRPKRU work).
pub fn os_enabled() -> bool {
    cpuid7_ecx() & (1 << 4) != 0
}

fn cpuid7_ecx() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID exists on every x86-64 CPU; leaf 0 reports the highest leaf, so leaf
        // 7 is queried only where it exists.
        #[allow(unused_unsafe)]
        let max = unsafe { core::arch::x86_64::__cpuid(0) }.eax;
        if max < 7 {
            return 0;
        }
        // SAFETY: as above, leaf 7 subleaf 0 exists (max >= 7).
        #[allow(unused_unsafe)]
        let r = unsafe { core::arch::x86_64::__cpuid_count(7, 0) };
        r.ecx
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

impl Pkru {
    /// The token, when the OS enabled PKU.
    pub fn detect() -> Option<Pkru> {
        (cfg!(target_arch = "x86_64") && os_enabled()).then_some(Pkru(()))
    }

    /// `RDPKRU`: the calling thread's PKRU.
    #[inline]
    pub fn read(self) -> u32 {
        #[cfg(target_arch = "x86_64")]
        {
            let v: u32;
            // SAFETY: the token proves OSPKE, so RDPKRU does not fault; it needs ECX = 0,
            // writes EAX and EDX, and touches no memory.
            unsafe {
                core::arch::asm!(
                    "rdpkru",
                    in("ecx") 0u32,
                    out("eax") v,
                    out("edx") _,
                    options(nomem, nostack, preserves_flags)
                );
            }
            v
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            0
        }
    }

    /// `WRPKRU`: sets the calling thread's PKRU to `value` with key 0's bits cleared. Acts as
    /// a compiler memory barrier (no `nomem`): loads and stores are not moved across it,
    /// and the CPU does not execute it speculatively.
    ///
    /// Denying a key makes the pages that carry it fault on access (a `SIGSEGV` the violation
    /// core reports); nebula hands out no Rust references into tagged memory, so such a fault
    /// never invalidates a reference.
    #[inline]
    pub fn write(self, value: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: the token proves OSPKE, so WRPKRU does not fault; ECX = EDX = 0 as the
            // instruction requires. Key 0 stays read-write (value & !KEY0_BITS), so the
            // stack, TLS, rseq area and signal stacks stay accessible.
            unsafe {
                core::arch::asm!(
                    "wrpkru",
                    in("eax") value & !KEY0_BITS,
                    in("ecx") 0u32,
                    in("edx") 0u32,
                    options(nostack, preserves_flags)
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = value;
        }
    }
}
