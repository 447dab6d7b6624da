//! VM tier: process tenants on cgroup v2 — shared limits, kernel-fed monitors, metrics,
//! nothing left behind.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nebula_memory::isolation::TenantLimits;
use nebula_memory::isolation::process::{Command, ProcessConfig, Stdio};
use nebula_memory::isolation::tenant_process::{ProcessTenants, TenantUsage};

fn sh(script: &str) -> Command {
    Command::new("/bin/sh").args(["-c", script])
}

fn template() -> ProcessConfig {
    ProcessConfig::new()
        .output(Stdio::Capture, Stdio::Capture)
        .wall_time(Duration::from_secs(120))
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn a_tenant_limit_is_shared_by_its_runs_and_monitored_by_the_kernel() {
    if !common::require(
        nebula_memory::features().cgroup_v2.available,
        "needs cgroup v2 with the memory controller",
    ) {
        return;
    }
    let tenants = ProcessTenants::new().unwrap();
    let limits = TenantLimits {
        memory: Some(64 << 20),
        cpu: Some(0.5),
        ..Default::default()
    };
    tenants.create_tenant("acme", limits, template()).unwrap();
    let path = tenants.cgroup_path("acme").unwrap();
    assert_eq!(
        std::fs::read_to_string(path.join("memory.max"))
            .unwrap()
            .trim(),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        std::fs::read_to_string(path.join("cpu.max"))
            .unwrap()
            .trim(),
        "50000 100000"
    );

    let seen: Arc<Mutex<Vec<TenantUsage>>> = Arc::default();
    let log = Arc::clone(&seen);
    tenants
        .set_monitor("acme", 0.7, move |u| log.lock().unwrap().push(u.clone()))
        .unwrap();

    // 50 MiB in the run's private tmpfs: charged to the tenant, past 70 % of 64 MiB.
    let o = tenants
        .execute_tenant_command(
            "acme",
            &sh("dd if=/dev/zero of=/tmp/fill bs=1M count=50 2>/dev/null; sleep 2; echo done"),
        )
        .unwrap();
    assert!(o.success(), "{:?} {}", o.status, o.stderr_text());
    assert_eq!(o.stdout_text().trim(), "done");
    let crossing = seen
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("the monitor saw the crossing");
    assert!(
        crossing.memory_current >= (64u64 << 20) * 7 / 10,
        "{crossing:?}"
    );
    assert_eq!(crossing.memory_max, Some(64 << 20));

    // A run that grows without bound is OOM-killed at the tenant's limit.
    let o = tenants
        .execute_tenant_command("acme", &sh("awk 'BEGIN { s = \"x\"; while (1) s = s s }'"))
        .unwrap();
    assert!(o.oom_killed, "{o:?}");
    std::thread::sleep(Duration::from_millis(500));
    let events = tenants.usage("acme").unwrap().memory_events;
    assert!(events.oom_kill >= 1, "{events:?}");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|u| u.memory_events.oom_kill >= 1),
        "the monitor saw the OOM kill"
    );

    let m = tenants.tenant_metrics("acme").unwrap();
    assert_eq!((m.runs, m.failed_runs), (2, 1));
    assert!(m.peak_memory >= 50 << 20, "{m:?}");
    assert!(m.violations >= 1, "{m:?}");

    tenants.remove_tenant("acme").unwrap();
    assert!(!path.exists(), "the tenant's cgroup is removed");
    let base = path.parent().unwrap().to_path_buf();
    drop(tenants);
    assert!(!base.exists(), "nothing left under the nebula tenants root");
}

#[test]
#[ignore = "needs root and cgroup v2: runs in the VM tier (make vm-test)"]
fn two_runs_share_one_budget() {
    if !common::require(
        nebula_memory::features().cgroup_v2.available,
        "needs cgroup v2 with the memory controller",
    ) {
        return;
    }
    let tenants = ProcessTenants::new().unwrap();
    tenants
        .create_tenant(
            "pair",
            TenantLimits {
                memory: Some(48 << 20),
                ..Default::default()
            },
            template(),
        )
        .unwrap();
    // Each run alone fits (30 MiB); together they do not: one is OOM-killed.
    let script = "dd if=/dev/zero of=/tmp/fill bs=1M count=30 2>/dev/null; sleep 3";
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let a = s.spawn(|| tenants.execute_tenant_command("pair", &sh(script)).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        let b = s.spawn(|| tenants.execute_tenant_command("pair", &sh(script)).unwrap());
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    let killed = outcomes.iter().filter(|o| o.oom_killed).count();
    assert!(
        killed >= 1,
        "the shared 48 MiB budget held: {:?}",
        outcomes.iter().map(|o| o.status).collect::<Vec<_>>()
    );
    assert_eq!(tenants.tenant_metrics("pair").unwrap().runs, 2);
}
