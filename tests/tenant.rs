//! In-process tenants: budgets, runs, metrics, monitors, and refused limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nebula_memory::IsolationError;
use nebula_memory::isolation::{TenantLimits, TenantManager};

fn limits(memory: u64) -> TenantLimits {
    TenantLimits {
        memory: Some(memory),
        ..Default::default()
    }
}

#[test]
fn runs_are_bounded_by_the_tenant_budget_and_counted() {
    let tm = TenantManager::new();
    tm.create_tenant("acme", limits(64 * 1024)).unwrap();
    let n = tm.execute_tenant_code("acme", |ctx| {
        let mut n = 0;
        while ctx.allocate(4096).is_ok() {
            n += 1;
        }
        n
    });
    assert_eq!(n.unwrap(), 16);
    // The run's memory went back to the tenant when it ended.
    assert_eq!(tm.tenant_stats("acme").unwrap().memory_used, 0);
    tm.execute_tenant_code("acme", |ctx| ctx.allocate(100).map(|_| ()))
        .unwrap()
        .unwrap();
    let err = tm
        .execute_tenant_code("acme", |_| panic!("tenant bug"))
        .unwrap_err();
    assert!(matches!(err, IsolationError::ThreadPanicked(_)));
    let m = tm.tenant_metrics("acme").unwrap();
    assert_eq!((m.runs, m.failed_runs), (3, 1));
    assert_eq!(m.peak_memory, 64 * 1024);
    assert_eq!(m.violations, 2, "one refused allocation and one panic");
}

#[test]
fn tenants_are_separate() {
    let tm = TenantManager::new();
    tm.create_tenant("a", limits(8192)).unwrap();
    tm.create_tenant("b", limits(8192)).unwrap();
    tm.execute_tenant_code("a", |ctx| assert!(ctx.allocate(8192).is_ok()))
        .unwrap();
    tm.execute_tenant_code("b", |ctx| assert!(ctx.allocate(8192).is_ok()))
        .unwrap();
    assert_eq!(tm.tenants(), vec!["a".to_string(), "b".to_string()]);
    tm.remove_tenant("a").unwrap();
    assert!(
        matches!(tm.execute_tenant_code("a", |_| ()), Err(IsolationError::TenantNotFound(n)) if n == "a")
    );
    assert!(matches!(
        tm.tenant_metrics("zzz"),
        Err(IsolationError::TenantNotFound(_))
    ));
}

#[test]
fn limits_this_level_cannot_enforce_are_errors() {
    let tm = TenantManager::new();
    let cpu = TenantLimits {
        cpu: Some(0.5),
        ..limits(1 << 20)
    };
    assert!(matches!(
        tm.create_tenant("x", cpu),
        Err(IsolationError::Unsupported { .. })
    ));
    let device = nebula_memory::cgroup::IoDevice { major: 8, minor: 0 };
    let io_max = nebula_memory::cgroup::IoMax {
        device,
        rbps: None,
        wbps: None,
        riops: None,
        wiops: None,
    };
    let io = TenantLimits {
        io: vec![io_max],
        ..limits(1 << 20)
    };
    assert!(matches!(
        tm.create_tenant("x", io),
        Err(IsolationError::Unsupported { .. })
    ));
    assert!(matches!(
        tm.create_tenant("x", TenantLimits::default()),
        Err(IsolationError::InvalidConfig(_))
    ));
    tm.create_tenant("x", limits(4096)).unwrap();
    assert!(matches!(
        tm.create_tenant("x", limits(4096)),
        Err(IsolationError::InvalidConfig(_))
    ));
}

#[test]
fn deadlines_and_monitors() {
    let tm = TenantManager::new();
    tm.create_tenant(
        "slow",
        TenantLimits {
            timeout: Some(Duration::from_millis(10)),
            ..limits(100 * 1024)
        },
    )
    .unwrap();
    let err = tm
        .execute_tenant_code("slow", |_| std::thread::sleep(Duration::from_millis(30)))
        .unwrap_err();
    assert!(
        matches!(err, IsolationError::DeadlineExceeded { .. }),
        "{err}"
    );
    let fired = Arc::new(AtomicU64::new(0));
    let f = Arc::clone(&fired);
    tm.set_monitor("slow", 0.9, move |s| {
        f.store(s.memory_used, Ordering::SeqCst)
    })
    .unwrap();
    tm.execute_tenant_code("slow", |ctx| ctx.allocate(95 * 1024).map(|_| ()))
        .unwrap()
        .unwrap();
    assert_eq!(
        fired.load(Ordering::SeqCst),
        95 * 1024,
        "the 90 % monitor saw the crossing"
    );
}
