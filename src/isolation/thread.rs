//! The thread level ([`SecurityLevel::Low`](super::SecurityLevel::Low)): a fresh thread whose
//! PKRU opens only its own protection-key domain and the domains explicitly shared with it.
//!
//! ```text
//!  run_in_domain(f) ─ spawns ──▶ thread: affinity, priority (setpriority on its tid)
//!                                        own Domain (fresh), keys pinned: own + shared
//!                                        WRPKRU: every key of the set denied but those
//!                                        seccomp hook (this thread only), then f(&ctx)
//!  ◀── f's result, or ThreadPanicked; violations go to crate::violation per its policy
//! ```
//!
//! Key 0 stays open: the thread's stack, TLS, the heap and glibc's rseq area are key 0, and
//! denying it gets the thread killed on migration. So the thread is kept out of other
//! domains' regions, not out of ordinary process memory: this level contains bugs in code
//! that only touches its own domain through nebula, not attackers (any code can execute
//! `WRPKRU`; the kernel reads and writes for the thread without a fault). Pair it with a
//! seccomp filter for the thread where that matters: [`ThreadIsolation::with_thread_setup`]
//! runs on the new thread before `f`; [`ThreadIsolation::with_seccomp`] installs a
//! `nebula_memory::seccomp` profile there (without TSYNC, so it covers this thread only).
//!
//! The thread keeps its keys pinned while it runs: a set with `n` hardware keys runs at most
//! `n` isolated threads (plus their shared domains) at once; more fail with
//! [`PkeyError::NoKeyAvailable`](crate::pkey::PkeyError::NoKeyAvailable).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::base::ContextId;
use crate::error::{IsolationError, Result};
use crate::pkey::{Domain, DomainId, DomainSet, PkruValue};

thread_local! {
    static CURRENT: Cell<Option<(DomainId, Option<ContextId>)>> = const { Cell::new(None) };
}

type SetupHook = Box<dyn Fn() -> Result<()> + Send + Sync>;

/// Builds and runs isolated threads over a [`DomainSet`].
pub struct ThreadIsolation<'s> {
    set: &'s DomainSet,
    shared: Vec<&'s Domain>,
    context: Option<ContextId>,
    cpus: Option<Vec<usize>>,
    nice: Option<i32>,
    setup: Option<SetupHook>,
}

impl std::fmt::Debug for ThreadIsolation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadIsolation")
            .field(
                "shared",
                &self.shared.iter().map(|d| d.id()).collect::<Vec<_>>(),
            )
            .field("context", &self.context)
            .field("cpus", &self.cpus)
            .field("nice", &self.nice)
            .field("setup", &self.setup.is_some())
            .finish()
    }
}

/// What the isolated code gets: its own domain.
#[derive(Debug)]
pub struct IsolatedThread<'d> {
    domain: &'d Domain,
    tid: i32,
}

impl IsolatedThread<'_> {
    /// The thread's own domain: allocate its private memory here.
    pub fn domain(&self) -> &Domain {
        self.domain
    }

    /// The kernel thread id.
    pub fn thread_id(&self) -> i32 {
        self.tid
    }
}

impl<'s> ThreadIsolation<'s> {
    /// Isolated threads whose domains come from `set`.
    pub fn new(set: &'s DomainSet) -> Self {
        ThreadIsolation {
            set,
            shared: Vec::new(),
            context: None,
            cpus: None,
            nice: None,
            setup: None,
        }
    }

    /// Opens `domain` to the isolated thread too.
    #[must_use]
    pub fn share(mut self, domain: &'s Domain) -> Self {
        self.shared.push(domain);
        self
    }

    /// The context reports name.
    #[must_use]
    pub fn with_context(mut self, context: ContextId) -> Self {
        self.context = Some(context);
        self
    }

    /// Pins the thread to these CPUs (`sched_setaffinity` on the thread).
    #[must_use]
    pub fn with_affinity(mut self, cpus: &[usize]) -> Self {
        self.cpus = Some(cpus.to_vec());
        self
    }

    /// Sets the thread's nice value (`setpriority(PRIO_PROCESS, tid)`, per thread on Linux).
    #[must_use]
    pub fn with_priority(mut self, nice: i32) -> Self {
        self.nice = Some(nice);
        self
    }

    /// Runs `hook` on the new thread after its PKRU is set and before `f`: the place for a
    /// seccomp filter that covers this thread only. An error stops the thread before `f`.
    #[must_use]
    pub fn with_thread_setup(
        mut self,
        hook: impl Fn() -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.setup = Some(Box::new(hook));
        self
    }

    /// Confines the new thread with a seccomp `profile`: compiled here, on the calling
    /// thread, and installed on the isolated thread only (no TSYNC) right before `f`, so
    /// the rest of the process stays unfiltered. Pair it with the domain: protection keys
    /// contain bugs, a filter stops the thread from using the kernel as a side door
    /// (`process_vm_writev`, `/proc/self/mem` with `open`, ...). Replaces a
    /// [`with_thread_setup`](Self::with_thread_setup) hook.
    ///
    /// # Errors
    /// `Unsupported` when this kernel has no seccomp filters; the compile errors.
    pub fn with_seccomp(self, profile: crate::seccomp::Profile) -> Result<Self> {
        let filter = std::sync::Arc::new(profile.compile()?);
        Ok(self.with_thread_setup(move || filter.install_current_thread().map_err(Into::into)))
    }

    /// The domain and context of the isolated thread this is called on, if any.
    pub fn current() -> Option<(DomainId, Option<ContextId>)> {
        CURRENT.with(Cell::get)
    }

    /// The seed's `run_isolated`: runs `f` on a fresh thread inside a fresh domain of the
    /// set, exactly as [`run_in_domain`](Self::run_in_domain), for code that does not need
    /// its thread's handle.
    ///
    /// # Errors
    /// As [`run_in_domain`](Self::run_in_domain).
    pub fn run_isolated<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        self.run_in_domain(|_| f())
    }

    /// Runs `f` on a fresh thread inside a fresh domain of the set, with only that domain
    /// and the shared ones open; returns `f`'s result.
    ///
    /// # Errors
    /// [`IsolationError::ThreadPanicked`] when `f` panics; the key, affinity, priority and
    /// setup errors, before `f` runs.
    pub fn run_in_domain<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&IsolatedThread<'_>) -> T + Send,
        T: Send,
    {
        let domain = self.set.create_domain(self.context);
        std::thread::scope(|s| {
            let h = std::thread::Builder::new()
                .name("nebula-isolated".into())
                .spawn_scoped(s, || self.thread_body(&domain, f))
                .map_err(|e| IsolationError::system("spawning an isolated thread", e))?;
            match h.join() {
                Ok(r) => r,
                Err(p) => Err(IsolationError::ThreadPanicked(panic_message(&p))),
            }
        })
    }

    fn thread_body<T, F>(&self, domain: &Domain, f: F) -> Result<T>
    where
        F: FnOnce(&IsolatedThread<'_>) -> T,
    {
        let tid = rustix::thread::gettid();
        // std gives its threads a signal stack; make sure of it (faults must be handled
        // even when the thread's stack is the problem).
        let _altstack = crate::sys::signal::AltStack::ensure(64 * 1024)
            .map_err(|e| IsolationError::system("sigaltstack for an isolated thread", e))?;
        if let Some(cpus) = &self.cpus {
            let mut set = rustix::thread::CpuSet::new();
            for &c in cpus {
                set.set(c);
            }
            rustix::thread::sched_setaffinity(None, &set).map_err(|e| {
                IsolationError::system("sched_setaffinity of an isolated thread", e.into())
            })?;
        }
        if let Some(nice) = self.nice {
            rustix::process::setpriority_process(Some(tid), nice).map_err(|e| {
                IsolationError::system("setpriority of an isolated thread", e.into())
            })?;
        }
        // Pin own + shared keys for the thread's life, then one WRPKRU.
        let mut pinned: Vec<&Domain> = Vec::new();
        let unpin_all = |pinned: &[&Domain]| pinned.iter().for_each(|d| d.unpin());
        let mut open = 0u32;
        for d in std::iter::once(domain).chain(self.shared.iter().copied()) {
            match d.pin_for_thread() {
                Ok(k) => {
                    open |= 0b11 << (2 * k);
                    pinned.push(d);
                }
                Err(e) => {
                    unpin_all(&pinned);
                    return Err(e.into());
                }
            }
        }
        let pkeys = self.set.pkeys();
        let managed = domain.set_managed_mask();
        pkeys.set_pkru(PkruValue((pkeys.pkru().0 | managed) & !open));
        CURRENT.with(|c| c.set(Some((domain.id(), self.context))));
        let result = (|| {
            if let Some(setup) = &self.setup {
                setup()?;
            }
            let ctx = IsolatedThread {
                domain,
                tid: tid.as_raw_nonzero().get(),
            };
            catch_unwind(AssertUnwindSafe(|| f(&ctx)))
                .map_err(|p| IsolationError::ThreadPanicked(panic_message(&p)))
        })();
        CURRENT.with(|c| c.set(None));
        pkeys.set_pkru(PkruValue(pkeys.pkru().0 | managed));
        unpin_all(&pinned);
        result
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".into())
}

/// Whether the thread level runs here: it needs protection keys and seccomp.
pub fn availability(f: &crate::probe::Features) -> crate::base::LevelStatus {
    let mut lacks = Vec::new();
    if !f.pkeys.available {
        lacks.push(format!(
            "pkeys: {}",
            f.pkeys.reason.as_deref().unwrap_or("")
        ));
    }
    if !f.seccomp.available {
        lacks.push(format!(
            "seccomp: {}",
            f.seccomp.reason.as_deref().unwrap_or("")
        ));
    }
    crate::base::LevelStatus::from_lacks(lacks)
}
