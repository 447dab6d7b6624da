//! Protection keys, domains, virtualization and the thread level.
//!
//! This host's CPU has no PKU: these tests print `skipped: ...` here and run for real in the
//! VM tier (`-cpu max` emulates PKU; `NEBULA_TEST_REQUIRE=all` turns a skip into a failure).
//! Bodies that fault, change the violation policy or install the SIGSEGV action run in a
//! re-executed child; the parent asserts on the child's exit signal and stderr.

mod common;

use common::{in_helper, mark, run_helper, say, stderr_of};

use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nebula_memory::IsolationError;
use nebula_memory::isolation::thread::ThreadIsolation;
use nebula_memory::pkey::{DomainSet, Pkeys, PkruValue, Rights};
use nebula_memory::violation::{self, Policy, ViolationInfo, ViolationKind};

const SIGABRT: i32 = 6;

fn tid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

fn pkeys() -> Option<Pkeys> {
    let ok = common::require(
        nebula_memory::features().pkeys.available,
        "needs protection keys (PKU); runs in the VM tier (make vm-test)",
    );
    ok.then(|| Pkeys::probe().expect("the probe said pkeys work"))
}

fn done(o: &Output) {
    assert!(
        o.status.success(),
        "helper failed: {}\n{}",
        o.status,
        stderr_of(o)
    );
    assert_eq!(mark(o, "done").as_deref(), Some("1"), "{}", stderr_of(o));
}

#[test]
fn the_token_and_the_probe_agree() {
    match Pkeys::probe() {
        Ok(_) => assert!(nebula_memory::features().pkeys.available),
        Err(e) => {
            let f = &nebula_memory::features().pkeys;
            assert!(!f.available);
            assert_eq!(Some(&e.reason), f.reason.as_ref());
            let err: IsolationError = e.into();
            assert!(matches!(
                err,
                IsolationError::Unsupported {
                    feature: "pkeys",
                    ..
                }
            ));
        }
    }
}

#[test]
fn keys_are_owned_and_this_threads_pkru_obeys_them() {
    let Some(pk) = pkeys() else { return };
    let before = pk.pkru();
    let key = pk.alloc(Rights::NoAccess).unwrap();
    assert!((1..16).contains(&key.id()));
    // pkey_alloc set the caller's rights.
    assert_eq!(pk.pkru().rights(key.id()), Rights::NoAccess);
    pk.set_pkru(pk.pkru().with(key.id(), Rights::ReadOnly));
    assert_eq!(pk.pkru().rights(key.id()), Rights::ReadOnly);
    // Key 0 can never be denied through the API.
    pk.set_pkru(PkruValue(pk.pkru().0 | 0b11));
    assert_eq!(pk.pkru().rights(0), Rights::ReadWrite);
    let id = key.id();
    drop(key);
    pk.set_pkru(before);
    // Freed: the kernel hands the same number out again.
    let again = pk.alloc(Rights::NoAccess).unwrap();
    assert_eq!(again.id(), id);
}

#[test]
fn a_thread_without_rights_to_a_domain_faults_and_the_report_names_the_key() {
    if pkeys().is_none() {
        return;
    }
    let o = run_helper("helper_cross_domain_read");
    let err = stderr_of(&o);
    assert_eq!(o.status.signal(), Some(SIGABRT), "{err}");
    let key = mark(&o, "key").unwrap();
    let addr = mark(&o, "addr").unwrap();
    let line = err
        .lines()
        .find(|l| l.contains("nebula-memory: violation: protection-key fault"))
        .unwrap_or_else(|| panic!("no report: {err}"));
    assert!(line.contains(&format!("at {addr} (pkey {key})")), "{line}");
    assert!(
        line.contains(&format!("thread {};", mark(&o, "reader").unwrap())),
        "{line}"
    );
    let v: serde_json::Value = serde_json::from_str(&mark(&o, "handler").unwrap()).unwrap();
    assert_eq!(v["kind"]["PkeyFault"]["pkey"].to_string(), key);
    assert_eq!(v["thread_id"].to_string(), mark(&o, "reader").unwrap());
    assert!(mark(&o, "survived").is_none());
}

#[test]
#[ignore = "helper: run by a_thread_without_rights_to_a_domain_faults_and_the_report_names_the_key"]
fn helper_cross_domain_read() {
    if !in_helper() {
        return;
    }
    let pk = Pkeys::probe().unwrap();
    violation::set_violation_handler(|i| say("handler", serde_json::to_string(i).unwrap()));
    let set = DomainSet::new(&pk);
    let secret = set.create_domain(None);
    let region = secret.alloc_region(4096).unwrap();
    {
        let _in = secret.enter().unwrap();
        region.write(0, b"secret").unwrap();
    }
    say("key", secret.current_key().unwrap());
    say("addr", format!("{:#x}", region.start()));
    std::thread::scope(|s| {
        s.spawn(|| {
            say("reader", tid());
            let mut b = [0u8; 6];
            let _ = region.read(0, &mut b);
            say("survived", String::from_utf8_lossy(&b));
        });
    });
}

#[test]
fn audit_records_the_fault_and_lets_the_access_proceed() {
    if pkeys().is_none() {
        return;
    }
    let o = run_helper("helper_audit");
    done(&o);
    assert_eq!(mark(&o, "read").as_deref(), Some("secret"));
    assert_eq!(mark(&o, "reports").as_deref(), Some("1"));
    assert_eq!(mark(&o, "report_key"), mark(&o, "key"));
    assert_eq!(mark(&o, "report_tid"), mark(&o, "reader"));
    assert_eq!(mark(&o, "inside_other").as_deref(), Some("false"));
}

#[test]
#[ignore = "helper: run by audit_records_the_fault_and_lets_the_access_proceed"]
fn helper_audit() {
    if !in_helper() {
        return;
    }
    let pk = Pkeys::probe().unwrap();
    let seen: Arc<Mutex<Vec<ViolationInfo>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    violation::set_violation_handler(move |i| s2.lock().unwrap().push(i.clone()));
    violation::set_policy(Policy::Audit);
    let set = DomainSet::new(&pk);
    let d = set.create_domain(None);
    let other = set.create_domain(None);
    let region = d.alloc_region(4096).unwrap();
    {
        let _in = d.enter().unwrap();
        region.write(0, b"secret").unwrap();
    }
    say("key", d.current_key().unwrap());
    std::thread::scope(|s| {
        s.spawn(|| {
            say("reader", tid());
            let mut b = [0u8; 6];
            region.read(0, &mut b).unwrap();
            say("read", String::from_utf8_lossy(&b));
            // The audit opened the key for this thread; switching into another domain
            // closes it again (leaving restores the PKRU found at entry, key open).
            let _in = other.enter().unwrap();
            say("inside_other", region.kernel_says_readable(6).unwrap());
        });
    });
    assert!(violation::flush(Duration::from_secs(10)));
    let seen = seen.lock().unwrap();
    say("reports", seen.len());
    if let Some(ViolationKind::PkeyFault { pkey }) = seen.first().map(|i| i.kind.clone()) {
        say("report_key", pkey);
    }
    say("report_tid", seen[0].thread_id.unwrap());
    say("done", 1);
}

#[test]
fn a_thousand_virtual_domains_are_each_readable_only_when_switched_in() {
    if pkeys().is_none() {
        return;
    }
    let o = run_helper("helper_thousand_domains");
    done(&o);
    assert_eq!(mark(&o, "checked").as_deref(), Some("1000"));
    let hw: usize = mark(&o, "hardware_keys").unwrap().parse().unwrap();
    assert!((1..=15).contains(&hw), "{hw}");
    let ev: u64 = mark(&o, "evictions").unwrap().parse().unwrap();
    assert!(ev >= 1000 - hw as u64, "{ev}");
}

#[test]
#[ignore = "helper: run by a_thousand_virtual_domains_are_each_readable_only_when_switched_in"]
fn helper_thousand_domains() {
    if !in_helper() {
        return;
    }
    let pk = Pkeys::probe().unwrap();
    let set = DomainSet::new(&pk);
    let domains: Vec<_> = (0..1000).map(|_| set.create_domain(None)).collect();
    let regions: Vec<_> = domains
        .iter()
        .map(|d| d.alloc_region(4096).unwrap())
        .collect();
    for (i, (d, r)) in domains.iter().zip(&regions).enumerate() {
        let _in = d.enter().unwrap();
        r.write(0, &u32::try_from(i).unwrap().to_ne_bytes())
            .unwrap();
    }
    // The kernel is the oracle (write(2) of the page: EFAULT unless PKRU allows it), so an
    // isolated domain is checked without a fault.
    let mut checked = 0;
    for (i, (d, r)) in domains.iter().zip(&regions).enumerate().rev() {
        assert!(
            !r.kernel_says_readable(4).unwrap(),
            "domain {i} readable while out"
        );
        let _in = d.enter().unwrap();
        assert!(
            r.kernel_says_readable(4).unwrap(),
            "domain {i} unreadable while in"
        );
        // Only this one: its neighbours stay closed.
        let other = &regions[(i + 1) % regions.len()];
        assert!(
            !other.kernel_says_readable(4).unwrap(),
            "neighbour of {i} readable"
        );
        let mut b = [0u8; 4];
        r.read(0, &mut b).unwrap();
        assert_eq!(u32::from_ne_bytes(b), u32::try_from(i).unwrap());
        checked += 1;
    }
    say("checked", checked);
    say("hardware_keys", set.hardware_keys());
    say("evictions", set.evictions());
    say("done", 1);
}

#[test]
fn ten_thousand_domain_cycles_leak_no_key_mapping_or_fd() {
    if pkeys().is_none() {
        return;
    }
    let o = run_helper("helper_domain_cycles");
    done(&o);
    assert_eq!(mark(&o, "keys_delta").as_deref(), Some("0"));
    assert_eq!(mark(&o, "maps_delta").as_deref(), Some("0"));
    assert_eq!(mark(&o, "fds_delta").as_deref(), Some("0"));
}

#[test]
#[ignore = "helper: run by ten_thousand_domain_cycles_leak_no_key_mapping_or_fd"]
fn helper_domain_cycles() {
    if !in_helper() {
        return;
    }
    let pk = Pkeys::probe().unwrap();
    let free_keys = || {
        let mut held = Vec::new();
        while let Ok(k) = pk.alloc(Rights::NoAccess) {
            held.push(k);
        }
        held.len()
    };
    let maps = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count()
    };
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    // Warm up the violation core (its thread and eventfd) before measuring.
    {
        let set = DomainSet::new(&pk);
        let d = set.create_domain(None);
        drop(d.alloc_region(4096).unwrap());
    }
    let (k0, m0, f0) = (free_keys(), maps(), fds());
    for round in 0..100 {
        let set = DomainSet::with_max_keys(&pk, 3);
        for i in 0..100 {
            let d = set.create_domain(None);
            let r = d.alloc_region(4096).unwrap();
            let _in = d.enter().unwrap();
            r.write(0, &[u8::try_from(round + i).unwrap()]).unwrap();
        }
    }
    say("keys_delta", free_keys() as i64 - k0 as i64);
    say("maps_delta", maps() as i64 - m0 as i64);
    say("fds_delta", fds() as i64 - f0 as i64);
    say("done", 1);
}

#[test]
fn an_isolated_thread_reaches_its_own_and_shared_domains_only() {
    if pkeys().is_none() {
        return;
    }
    let o = run_helper("helper_thread_isolation");
    done(&o);
    let o = run_helper("helper_thread_reads_unshared");
    assert_eq!(o.status.signal(), Some(SIGABRT), "{}", stderr_of(&o));
    assert!(
        stderr_of(&o).contains("protection-key fault"),
        "{}",
        stderr_of(&o)
    );
    assert_eq!(mark(&o, "report_tid"), mark(&o, "isolated_tid"));
}

#[test]
#[ignore = "helper: run by an_isolated_thread_reaches_its_own_and_shared_domains_only"]
fn helper_thread_isolation() {
    if !in_helper() {
        return;
    }
    let pk = Pkeys::probe().unwrap();
    let set = DomainSet::new(&pk);
    let shared = set.create_domain(None);
    let private = set.create_domain(None);
    let sr = shared.alloc_region(4096).unwrap();
    let pr = private.alloc_region(4096).unwrap();
    {
        let _in = shared.enter().unwrap();
        sr.write(0, b"shared").unwrap();
    }
    assert!(ThreadIsolation::current().is_none());
    let iso = ThreadIsolation::new(&set)
        .share(&shared)
        .with_affinity(&[0])
        .with_priority(5);
    let got = iso
        .run_in_domain(|t| {
            assert!(ThreadIsolation::current().is_some());
            let own = t.domain().alloc_region(4096).unwrap();
            own.write(0, b"mine").unwrap();
            let mut b = [0u8; 6];
            sr.read(0, &mut b).unwrap();
            let cpus = rustix::thread::sched_getaffinity(None).unwrap();
            assert_eq!(cpus.count(), 1);
            assert!(cpus.is_set(0));
            let nice = rustix::process::getpriority_process(None).unwrap();
            // The kernel (not our bookkeeping) says who may read what.
            (
                String::from_utf8_lossy(&b).into_owned(),
                own.kernel_says_readable(4).unwrap(),
                pr.kernel_says_readable(4).unwrap(),
                nice,
            )
        })
        .unwrap();
    assert_eq!(got.0, "shared");
    assert!(got.1, "own domain readable");
    assert!(!got.2, "an unshared domain is closed");
    assert_eq!(got.3, 5, "the thread's own nice value");
    match iso.run_in_domain(|_| panic!("boom")) {
        Err(IsolationError::ThreadPanicked(m)) => assert!(m.contains("boom")),
        other => panic!("expected ThreadPanicked, got {other:?}"),
    }
    say("done", 1);
}

#[test]
#[ignore = "helper: run by an_isolated_thread_reaches_its_own_and_shared_domains_only"]
fn helper_thread_reads_unshared() {
    if !in_helper() {
        return;
    }
    let pk = Pkeys::probe().unwrap();
    violation::set_violation_handler(|i| say("report_tid", i.thread_id.unwrap()));
    let set = DomainSet::new(&pk);
    let other = set.create_domain(None);
    let r = other.alloc_region(4096).unwrap();
    let _ = ThreadIsolation::new(&set).run_in_domain(|t| {
        say("isolated_tid", t.thread_id());
        let mut b = [0u8; 1];
        let _ = r.read(0, &mut b);
        say("survived", 1);
    });
}

/// Adversarial programs: code in an isolated thread tries to read another domain's secret
/// and must be stopped (reported, then fail-stop) each way.
#[test]
fn adversaries_reading_another_domains_secret_are_stopped() {
    if pkeys().is_none() {
        return;
    }
    for helper in [
        "helper_adversary_direct",
        "helper_adversary_pkru_from_signal_handler",
        "helper_adversary_new_thread",
    ] {
        let o = run_helper(helper);
        let err = stderr_of(&o);
        assert_eq!(o.status.signal(), Some(SIGABRT), "{helper}: {err}");
        assert!(err.contains("protection-key fault"), "{helper}: {err}");
        assert_eq!(mark(&o, "started").as_deref(), Some("1"), "{helper}: {err}");
        assert!(
            mark(&o, "leaked").is_none(),
            "{helper} read the secret: {err}"
        );
    }
}

fn adversary(attack: impl FnOnce(&nebula_memory::pkey::DomainRegion) + Send) {
    let pk = Pkeys::probe().unwrap();
    let set = DomainSet::new(&pk);
    let victim = set.create_domain(None);
    let secret = victim.alloc_region(4096).unwrap();
    {
        let _in = victim.enter().unwrap();
        secret.write(0, b"secret").unwrap();
    }
    let _ = ThreadIsolation::new(&set).run_in_domain(|_| {
        say("started", 1);
        attack(&secret);
    });
}

fn steal(r: &nebula_memory::pkey::DomainRegion) {
    let mut b = [0u8; 6];
    let _ = r.read(0, &mut b);
    say("leaked", String::from_utf8_lossy(&b));
}

#[test]
#[ignore = "helper: run by adversaries_reading_another_domains_secret_are_stopped"]
fn helper_adversary_direct() {
    if in_helper() {
        adversary(steal);
    }
}

static TOKEN: std::sync::OnceLock<Pkeys> = std::sync::OnceLock::new();

extern "C" fn open_everything(_sig: i32) {
    // An adversary's signal handler writes PKRU = 0 (every key open). sigreturn restores
    // the PKRU saved in the frame, so the interrupted code resumes with its own rights.
    if let Some(pk) = TOKEN.get() {
        pk.set_pkru(PkruValue(0));
    }
}

#[test]
#[ignore = "helper: run by adversaries_reading_another_domains_secret_are_stopped"]
fn helper_adversary_pkru_from_signal_handler() {
    if !in_helper() {
        return;
    }
    let _ = TOKEN.set(Pkeys::probe().unwrap());
    #[allow(unsafe_code)]
    // SAFETY: installs a handler that only writes PKRU (async-signal-safe), in a child
    // process that exists for this test.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = open_everything as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut());
    }
    adversary(|r| {
        #[allow(unsafe_code)]
        // SAFETY: raise delivers SIGUSR1 to this thread; the handler above runs and returns.
        unsafe {
            libc::raise(libc::SIGUSR1);
        }
        steal(r);
    });
}

#[test]
#[ignore = "helper: run by adversaries_reading_another_domains_secret_are_stopped"]
fn helper_adversary_new_thread() {
    if in_helper() {
        // A thread spawned from the isolated thread inherits its PKRU: still closed.
        adversary(|r| std::thread::scope(|s| drop(s.spawn(|| steal(r)))));
    }
}

#[test]
fn a_seccomp_profile_confines_the_isolated_thread_only() {
    if pkeys().is_none() {
        return;
    }
    let o = run_helper("helper_thread_seccomp");
    done(&o);
}

#[allow(unsafe_code)]
fn try_unshare_uts() -> Option<rustix::io::Errno> {
    // SAFETY: CLONE_NEWUTS only changes this thread's hostname namespace; it touches no
    // descriptor table (the hazard unshare_unsafe warns about is CLONE_FILES).
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUTS) }.err()
}

fn seccomp_mode_of_this_thread() -> String {
    std::fs::read_to_string("/proc/thread-self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim().to_string()))
        .unwrap()
}

#[test]
#[ignore = "helper: run by a_seccomp_profile_confines_the_isolated_thread_only"]
fn helper_thread_seccomp() {
    if !in_helper() {
        return;
    }
    let pk = Pkeys::probe().unwrap();
    let set = DomainSet::new(&pk);
    let iso = ThreadIsolation::new(&set)
        .with_seccomp(nebula_memory::seccomp::Profile::Default)
        .unwrap();
    let (mode, unshare) = iso
        .run_in_domain(|_| {
            // The default profile refuses new namespaces with EPERM (the kernel's answer).
            (seccomp_mode_of_this_thread(), try_unshare_uts())
        })
        .unwrap();
    assert_eq!(mode, "2", "the isolated thread is filtered");
    assert_eq!(unshare, Some(rustix::io::Errno::PERM));
    assert_eq!(
        seccomp_mode_of_this_thread(),
        "0",
        "the spawning thread is not"
    );
    say("done", 1);
}
