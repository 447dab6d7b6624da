//! nebula-ctl: exit codes, messages and JSON of each subcommand that exists.

use std::process::Command;

fn ctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nebula-ctl"))
        .args(args)
        .output()
        .expect("run nebula-ctl")
}

#[test]
fn probe_json_has_every_feature_and_level() {
    let out = ctl(&["probe", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in [
        "pkeys",
        "userfaultfd",
        "seccomp",
        "user_namespaces",
        "cgroup_v2",
        "landlock",
    ] {
        let f = &v[key];
        let available = f["available"]
            .as_bool()
            .unwrap_or_else(|| panic!("{key}.available is not a bool: {f}"));
        if !available {
            let reason = f["reason"]
                .as_str()
                .unwrap_or_else(|| panic!("{key} is unavailable without a reason"));
            assert!(!reason.is_empty());
        } else {
            assert!(
                f.get("reason").is_none(),
                "{key} is available but has a reason"
            );
        }
    }
    for level in ["region", "thread", "process", "wasm"] {
        let l = &v["levels"][level];
        assert!(l["available"].is_boolean(), "levels.{level}: {l}");
        assert_eq!(
            l["available"].as_bool().unwrap(),
            l["lacks"].as_array().unwrap().is_empty()
        );
    }
    assert_eq!(v["levels"]["region"]["available"], true);
    // The probe agrees with the library's own answer.
    let lib = nebula_memory::features();
    assert_eq!(v["pkeys"]["available"], lib.pkeys.available);
    assert_eq!(v["cgroup_v2"]["available"], lib.cgroup_v2.available);
    assert_eq!(
        v["userfaultfd"]["api_features"],
        lib.userfaultfd.api_features
    );
}

#[test]
fn probe_agrees_with_the_kernel() {
    let f = nebula_memory::features();
    // PKU: the CPU flag in /proc/cpuinfo decides.
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let has_pku = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|w| w == "ospke"));
    assert_eq!(f.pkeys.available, has_pku, "{:?}", f.pkeys);
    // cgroup v2 memory: available exactly when a cgroup2 mount offers the memory controller.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let v2 = mounts
        .lines()
        .filter_map(|l| l.split_once(" - "))
        .find(|(_, r)| r.starts_with("cgroup2 "));
    match v2 {
        Some((left, _)) => {
            let mp = left.split_whitespace().nth(4).unwrap();
            let ctrl =
                std::fs::read_to_string(format!("{mp}/cgroup.controllers")).unwrap_or_default();
            if !ctrl.split_whitespace().any(|c| c == "memory") {
                assert!(!f.cgroup_v2.available);
            }
        }
        None => assert!(!f.cgroup_v2.available),
    }
    if !f.cgroup_v2.available {
        assert!(
            f.cgroup_v2
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("memory")),
            "{:?}",
            f.cgroup_v2.reason
        );
    }
    assert_eq!(
        f.kernel_release,
        String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout)
            .unwrap()
            .trim()
    );
}

#[test]
fn probe_text_names_every_feature() {
    let out = ctl(&["probe"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "pkeys",
        "userfaultfd",
        "seccomp",
        "user namespaces",
        "cgroup v2",
        "landlock",
        "levels",
        "region",
    ] {
        assert!(text.contains(word), "probe output lacks {word}:\n{text}");
    }
}

#[test]
fn demo_contains_every_misbehaving_workload() {
    let out = ctl(&["demo"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = nebula_memory::features();
    let process = usize::from(nebula_memory::isolation::levels::levels()["process"].available);
    let expected = 4
        + 2 * process
        + 2 * process * usize::from(f.cgroup_v2.available)
        + usize::from(f.seccomp.available)
        + usize::from(f.userfaultfd.available)
        + usize::from(f.pkeys.available);
    let summary = format!("{expected}/{expected} misbehaving workloads contained");
    assert!(text.contains(&summary), "{text}");
    assert!(text.contains("guard page hit"), "{text}");
    if f.seccomp.available {
        assert!(text.contains("killed it with SIGSYS"), "{text}");
    }
    if f.pkeys.available {
        assert!(text.contains("protection-key fault"), "{text}");
    }
    assert!(text.contains("SIGSEGV on the guard page"), "{text}");
    assert!(!text.contains("NOT contained"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    let out = ctl(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
    let out = ctl(&["probe", "--jsn"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn completions_and_man_page_come_from_the_clap_definitions() {
    let out = ctl(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(
        script.contains("nebula-ctl") && script.contains("probe") && script.contains("demo"),
        "{script}"
    );
    let out = ctl(&["completions", "no-such-shell"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ctl(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH"),
        "not roff: {}",
        &page[..page.len().min(200)]
    );
    assert!(page.contains("probe"));
}
