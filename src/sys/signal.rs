//! Signal plumbing for the violation core: one `SIGSEGV` action (`SA_SIGINFO | SA_ONSTACK`),
//! decoding `siginfo_t` (`si_code`, `si_addr`, `si_pkey`) and the interrupted context
//! (`REG_ERR` write bit, the PKRU saved in the frame's XSAVE area), chaining to the action
//! that was installed before, `sigaltstack`, and the few async-signal-safe outputs a handler
//! needs (stderr, `abort`).
//!
//! The safe policy code lives in `crate::violation`: the trampoline here decodes the fault into
//! a [`FaultFrame`] and calls a plain Rust function, which answers with a [`Disposition`].
//!
//! ```text
//!  kernel ──SIGSEGV──▶ trampoline (this file, unsafe) ──&mut FaultFrame──▶ violation::on_fault (safe)
//!                        │                                                     │
//!                        ◀──────────────── Disposition::{Resume, Chain} ───────┘
//!                        ├─ Resume: return; sigreturn restores the (possibly edited) frame
//!                        └─ Chain: call the previous action, or reset to SIG_DFL and return
//!                                  so that the access faults again and the default action runs
//! ```

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// `si_code` of a fault on a page whose protection key the thread's PKRU forbids (not in the
/// `libc` crate yet).
pub const SEGV_PKUERR: i32 = 4;
/// `si_code` of an access that the page protection forbids.
pub const SEGV_ACCERR: i32 = 2;
/// `si_code` of an access to an unmapped address (or a `MADV_GUARD_INSTALL` guard).
pub const SEGV_MAPERR: i32 = 1;

/// Byte offset of `si_pkey` in `siginfo_t` on x86-64: `_sigfault._addr` (8 bytes at 16), then
/// the `_addr_pkey` struct, whose `_pkey` follows an 8-byte pad (`__ADDR_BND_PKEY_PAD`).
const SI_PKEY_OFFSET: usize = 32;
/// `FP_XSTATE_MAGIC1`, in `sw_reserved` when the frame holds an XSAVE (not a bare FXSAVE) area.
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// Offset of `sw_reserved` (`struct _fpx_sw_bytes`) in the 512-byte legacy FXSAVE area.
const SW_RESERVED_OFFSET: usize = 464;
/// Offset of the XSAVE header (`xstate_bv` first) after the legacy area.
const XSAVE_HEADER_OFFSET: usize = 512;
/// The PKRU state component (bit 9 of XCR0 / `xstate_bv`).
const XFEATURE_PKRU: u64 = 1 << 9;
/// `REG_ERR` bit 1: the faulting access was a write (x86 page-fault error code).
const PF_WRITE: i64 = 1 << 1;

/// What a fault handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Return from the handler: the interrupted thread resumes with the frame as edited.
    Resume,
    /// Not ours: hand the signal to the action that was installed before ours.
    Chain,
}

/// One fault, as the kernel described it, with the interrupted context.
///
/// Lives on the signal stack for the duration of the handler only.
pub struct FaultFrame {
    /// `si_code`: [`SEGV_PKUERR`], [`SEGV_ACCERR`], [`SEGV_MAPERR`], or a kernel/user code.
    pub code: i32,
    /// `si_addr`: the faulting address.
    pub addr: usize,
    /// `si_pkey` for `SEGV_PKUERR`, else `None`.
    pub pkey: Option<u32>,
    /// Whether the access was a write (`REG_ERR` bit 1), when the frame says.
    pub write: Option<bool>,
    /// Points to the PKRU saved in the frame's XSAVE area, when it has one.
    saved_pkru: Option<*mut u32>,
}

impl FaultFrame {
    /// The PKRU the thread will resume with (the value saved at the fault), if the frame
    /// carries one.
    pub fn saved_pkru(&self) -> Option<u32> {
        // SAFETY: saved_pkru was computed by `decode` from the kernel-written frame and
        // checked to lie inside its XSAVE area (magic, xfeatures and extended_size tests);
        // the frame stays alive and exclusively ours until the handler returns, and
        // FaultFrame never escapes the handler.
        self.saved_pkru.map(|p| unsafe { p.read_volatile() })
    }

    /// Changes the PKRU the thread resumes with; returns `false` when the frame has no PKRU
    /// component. A `WRPKRU` inside the handler would be undone by `sigreturn`; editing the
    /// frame is how the kernel's own selftests change the interrupted thread's rights.
    pub fn set_saved_pkru(&mut self, pkru: u32) -> bool {
        let Some(p) = self.saved_pkru else {
            return false;
        };
        // SAFETY: as in `saved_pkru`; additionally the component's bit is set in
        // `xstate_bv` (by `decode`), so XRSTOR at sigreturn loads this value instead of the
        // init state (the AMD init-tracker case fixed upstream in ae6012d72fa6).
        unsafe { p.write_volatile(pkru) };
        true
    }
}

/// Offset of the PKRU component in the XSAVE area (`CPUID.(EAX=0xD,ECX=9).EBX`), 0 if none.
static PKRU_XSAVE_OFFSET: AtomicUsize = AtomicUsize::new(0);
/// The policy function the trampoline calls; set once by [`install_segv`].
static ON_FAULT: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
/// The `SIGSEGV` action found before ours, stored before ours is installed.
static PREVIOUS: OnceLock<PreviousAction> = OnceLock::new();

struct PreviousAction(libc::sigaction);
// SAFETY: a sigaction is plain data (a function address, a mask, flags); it is written once
// before the handler can run and only read afterwards.
unsafe impl Sync for PreviousAction {}
// SAFETY: as above.
unsafe impl Send for PreviousAction {}

fn pkru_xsave_offset() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID is available on every x86-64 CPU; leaf 0xD subleaf 9 reports the PKRU
        // component's size and offset (0 when the CPU has no PKRU state).
        #[allow(unused_unsafe)]
        let r = unsafe { core::arch::x86_64::__cpuid_count(0xD, 9) };
        if r.eax >= 4 { r.ebx as usize } else { 0 }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Installs `on_fault` as the process's `SIGSEGV` action (`SA_SIGINFO | SA_ONSTACK`), keeping
/// the action that was there before for [`Disposition::Chain`]. Call once per process; a
/// second call fails with `EBUSY`.
///
/// `on_fault` runs in signal context: it must not allocate, lock, or unwind.
///
/// # Errors
/// `EBUSY` on a second call; the `sigaction` errno otherwise.
///
/// # References
/// sigaction(2), signal(7) ("Async-signal-safe functions"), pkeys(7),
/// tools/testing/selftests/mm/protection_keys.c.
pub fn install_segv(on_fault: fn(&mut FaultFrame) -> Disposition) -> io::Result<()> {
    PKRU_XSAVE_OFFSET.store(pkru_xsave_offset(), Ordering::Relaxed);
    // SAFETY: a zeroed sigaction is a valid "query" buffer; sigaction with a null new action
    // only reads the current one into `old`.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `old` is a live sigaction the kernel writes.
    if unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if PREVIOUS.set(PreviousAction(old)).is_err() {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    ON_FAULT.store(on_fault as *mut (), Ordering::Release);
    // SAFETY: zeroed then filled: handler address, SA_SIGINFO|SA_ONSTACK, an empty mask (the
    // kernel blocks SIGSEGV itself while the handler runs, no SA_NODEFER).
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = trampoline as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: act.sa_mask is a live sigset_t.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // SAFETY: act is fully initialised; PREVIOUS and ON_FAULT were set above, so the
    // trampoline finds both as soon as it can run.
    if unsafe { libc::sigaction(libc::SIGSEGV, &act, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Decodes the kernel's siginfo and ucontext into a [`FaultFrame`].
///
/// # Safety
/// `info` and `uc` are the pointers the kernel passed to an `SA_SIGINFO` handler for SIGSEGV.
unsafe fn decode(info: *mut libc::siginfo_t, uc: *mut libc::c_void) -> FaultFrame {
    // SAFETY: the kernel passes a valid siginfo_t for the duration of the handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let pkey = (code == SEGV_PKUERR).then(|| {
        // SAFETY: for SEGV_PKUERR the kernel fills _sigfault._addr_pkey._pkey, a u32 at
        // SI_PKEY_OFFSET inside the 128-byte siginfo_t.
        unsafe {
            info.cast::<u8>()
                .add(SI_PKEY_OFFSET)
                .cast::<u32>()
                .read_unaligned()
        }
    });
    let mut write = None;
    let mut saved_pkru = None;
    if !uc.is_null() {
        let uc = uc.cast::<libc::ucontext_t>();
        // SAFETY: uc points to the kernel-written ucontext_t on the signal stack.
        let err = unsafe { (*uc).uc_mcontext.gregs[libc::REG_ERR as usize] };
        write = Some(err & PF_WRITE != 0);
        // SAFETY: as above; fpregs is null or points to the frame's FP/XSAVE area.
        let fp = unsafe { (*uc).uc_mcontext.fpregs }.cast::<u8>();
        let off = PKRU_XSAVE_OFFSET.load(Ordering::Relaxed);
        if !fp.is_null() && off >= XSAVE_HEADER_OFFSET + 64 {
            // SAFETY: the legacy 512-byte area is always present when fpregs is non-null;
            // sw_reserved (magic1 u32, extended_size u32, xfeatures u64) is at 464.
            let (magic, ext_size, xfeatures) = unsafe {
                let sw = fp.add(SW_RESERVED_OFFSET);
                (
                    sw.cast::<u32>().read_unaligned(),
                    sw.add(4).cast::<u32>().read_unaligned() as usize,
                    sw.add(8).cast::<u64>().read_unaligned(),
                )
            };
            if magic == FP_XSTATE_MAGIC1 && xfeatures & XFEATURE_PKRU != 0 && ext_size >= off + 4 {
                // SAFETY: magic1 says the area is an XSAVE image of `ext_size` bytes that
                // includes the PKRU component (xfeatures bit 9) at `off` (CPUID leaf 0xD);
                // setting xstate_bv bit 9 makes XRSTOR load it rather than the init value.
                unsafe {
                    let bv = fp.add(XSAVE_HEADER_OFFSET).cast::<u64>();
                    bv.write_unaligned(bv.read_unaligned() | XFEATURE_PKRU);
                }
                // SAFETY: in bounds, see above.
                saved_pkru = Some(unsafe { fp.add(off) }.cast::<u32>());
            }
        }
    }
    FaultFrame {
        code,
        addr,
        pkey,
        write,
        saved_pkru,
    }
}

extern "C" fn trampoline(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let f = ON_FAULT.load(Ordering::Acquire);
    let disposition = if f.is_null() {
        Disposition::Chain
    } else {
        // SAFETY: ON_FAULT holds a `fn(&mut FaultFrame) -> Disposition` stored by
        // install_segv, the only writer.
        let on_fault: fn(&mut FaultFrame) -> Disposition = unsafe { std::mem::transmute(f) };
        // SAFETY: info and uc come from the kernel for this SIGSEGV (SA_SIGINFO).
        let mut frame = unsafe { decode(info, uc) };
        on_fault(&mut frame)
    };
    if disposition == Disposition::Chain {
        // SAFETY: same kernel-provided pointers, passed on unchanged.
        unsafe { chain(sig, info, uc) };
    }
}

/// Passes the signal to the action that was installed before ours.
///
/// # Safety
/// Called from the SIGSEGV trampoline with the kernel's arguments.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let prev = PREVIOUS.get().map(|p| p.0);
    let handler = prev.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // A synchronous fault cannot be ignored (it would retry forever): restore the default
        // action and return, so the access faults again and the kernel kills the process
        // with SIGSEGV, core dump and exit status as without nebula.
        // SAFETY: a zeroed sigaction with SIG_DFL is a valid action; signal-safe call.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        return;
    }
    let flags = prev.map_or(0, |p| p.sa_flags);
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous action declared SA_SIGINFO, so its address is a
        // three-argument handler (e.g. Rust's own stack-overflow handler).
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, uc);
    } else {
        // SAFETY: without SA_SIGINFO the address is a one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

/// Writes `bytes` to file descriptor 2 with `write(2)` (async-signal-safe), retrying short
/// writes; errors are ignored (there is nowhere left to report them).
///
/// # References
/// write(2), signal-safety(7).
pub fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: bytes is a live slice; write reads at most bytes.len() bytes from it.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(n) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            // Negative: -1 and errno.
            Err(_) if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Aborts the process with `SIGABRT` (`abort(3)` is async-signal-safe): the default action of
/// SIGABRT is restored first, so the exit status always says SIGABRT.
///
/// # References
/// abort(3), signal-safety(7).
pub fn abort_now() -> ! {
    // SAFETY: restoring SIG_DFL for SIGABRT with a zeroed, valid sigaction; signal-safe.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGABRT, &dfl, std::ptr::null_mut());
    }
    std::process::abort()
}

/// An alternate signal stack owned by the calling thread (`sigaltstack(2)`), so that a fault
/// on a thread whose stack is exhausted or whose stack is not accessible under its PKRU can
/// still be handled. Rust's runtime already gives the main thread and `std::thread` threads
/// one; [`AltStack::ensure`] installs ours only where none is set. Dropping disables it and
/// unmaps the memory (only on the thread that installed it).
#[derive(Debug)]
pub struct AltStack {
    map: Option<super::mm::Mapping>,
    /// The alternate stack is per thread: keep the owner on the thread that installed it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl AltStack {
    /// Installs a `size`-byte alternate stack on the calling thread unless it has one.
    ///
    /// The stack is ordinary key-0 memory: signal handlers run with PKRU = key 0 only.
    ///
    /// # Errors
    /// The `mmap`/`mprotect`/`sigaltstack` errno.
    ///
    /// # References
    /// sigaltstack(2).
    pub fn ensure(size: usize) -> io::Result<AltStack> {
        // SAFETY: a zeroed stack_t is a valid output buffer; a null new stack only queries.
        let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: cur is live; a null first argument leaves the alternate stack unchanged.
        if unsafe { libc::sigaltstack(std::ptr::null(), &mut cur) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if cur.ss_flags & libc::SS_DISABLE == 0 {
            return Ok(AltStack {
                map: None,
                _not_send: std::marker::PhantomData,
            });
        }
        let size = size
            .max(libc::SIGSTKSZ)
            .next_multiple_of(super::mm::page_size());
        let map = super::mm::Mapping::reserve(size)?;
        map.protect(0, size, super::mm::Prot::ReadWrite)?;
        let st = libc::stack_t {
            ss_sp: map.base().as_ptr().cast(),
            ss_flags: 0,
            ss_size: size,
        };
        // SAFETY: st describes `map`, which this AltStack keeps mapped until it disables
        // the stack again in Drop.
        if unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(AltStack {
            map: Some(map),
            _not_send: std::marker::PhantomData,
        })
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        if self.map.is_some() {
            let st = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            // SAFETY: disables this thread's alternate stack before its memory is unmapped
            // (the Mapping field drops after this body). Fails with EPERM only while a
            // handler runs on it, which cannot be the case in Drop on that thread.
            unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) };
        }
    }
}
