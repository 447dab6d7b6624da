//! `nebula-ctl run`, `list`, `stats`, `kill` and `top`: exit codes, the one-line messages,
//! the JSON record, profiles (every flag's TOML twin), the registry, and `top` under a
//! pseudo-terminal.
//!
//! Host tier (cgroup v1 here): cgroup limits must be refused (exit 125) naming the reason.
//! VM tier (ignored by default with a reason, run by `make vm-test` with `VM_EXTRA=target/debug/nebula-ctl`): the
//! OOM line and record, the pids line, and stats/kill through the cgroup.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nebula-ctl");

fn run_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nebula-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("NEBULA_RUN_DIR", dir)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
    c
}

fn ctl(dir: &Path, args: &[&str]) -> Output {
    cmd(dir, args)
        .stdin(Stdio::null())
        .output()
        .expect("run nebula-ctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("nebula-ctl exited, not killed")
}

fn cgroup_v2() -> bool {
    let f = nebula_memory::features();
    f.cgroup_v2.available
        && ["memory", "pids", "cpu"]
            .iter()
            .all(|c| f.cgroup_v2.controllers.get(*c).is_some_and(|a| a.available))
}

fn write_profile(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn exit_codes_mirror_the_child() {
    let d = run_dir("codes");
    let o = ctl(
        &d,
        &["run", "--", "/bin/sh", "-c", "echo out; echo err >&2"],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "out\n");
    assert_eq!(
        text(&o.stderr),
        "err\n",
        "a normal end prints no summary line"
    );
    let o = ctl(&d, &["run", "--", "/bin/sh", "-c", "exit 7"]);
    assert_eq!(code(&o), 7);
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    let o = ctl(&d, &["run", "--", "/bin/sh", "-c", "kill -TERM $$"]);
    assert_eq!(code(&o), 128 + 15);
    assert!(
        text(&o.stderr).contains("killed: SIGTERM"),
        "{}",
        text(&o.stderr)
    );
    // stdin passes through.
    let mut c = cmd(&d, &["run", "--", "/bin/cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"through\n").unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(text(&o.stdout), "through\n");
    assert_eq!(code(&o), 0);
    let o = ctl(&d, &["run", "--", "no-such-program-here"]);
    assert_eq!(code(&o), 127, "{}", text(&o.stderr));
    let o = ctl(&d, &["run", "--", "/etc/passwd"]);
    assert_eq!(code(&o), 126, "{}", text(&o.stderr));
    assert_no_entries(&d);
}

#[test]
fn time_limit_line_and_json_record() {
    let d = run_dir("time");
    let json = d.join("out.json");
    let o = ctl(
        &d,
        &[
            "run",
            "--time",
            "300ms",
            "--json-file",
            json.to_str().unwrap(),
            "--",
            "/bin/sleep",
            "10",
        ],
    );
    assert_eq!(code(&o), 137);
    assert_eq!(text(&o.stderr).trim(), "killed: time limit 300ms");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["signal"], 9);
    assert_eq!(v["exit_code"], serde_json::Value::Null);
    assert_eq!(v["oom_killed"], false);
    assert_eq!(v["seccomp_killed"], false);
    assert!(v["cpu_time"].is_f64());
    assert!(v.get("memory_peak").is_some());
    assert!(v["wall_time"].as_f64().unwrap() >= 0.3);
    // --json: the record is the last line on stderr.
    let o = ctl(&d, &["run", "--json", "--", "/bin/sh", "-c", "exit 3"]);
    assert_eq!(code(&o), 3);
    let err = text(&o.stderr);
    let v: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["signal"], serde_json::Value::Null);
    assert_eq!(v["timed_out"], false);
}

#[test]
fn seccomp_kill_line_and_record() {
    let d = run_dir("seccomp");
    // `strict` refuses open: the context's filter notifies the supervisor, which names the
    // loader's first openat(2) and kills the context; the exit code stays 128+SIGSYS. (A
    // dynamically linked program: a static busybox would die at arch_prctl first.)
    let o = ctl_calling(&d, &["--seccomp", "strict"], 39);
    assert_eq!(code(&o), 128 + 31);
    assert!(o.stdout.is_empty(), "the program ran: {}", text(&o.stdout));
    let err = text(&o.stderr);
    assert_eq!(
        err.lines().last().unwrap(),
        "killed: seccomp violation at openat(2) (nr 257; profile strict)",
        "{err}"
    );
    let o = ctl_calling(&d, &["--seccomp", "strict", "--json"], 39);
    assert_eq!(code(&o), 128 + 31);
    let err = text(&o.stderr);
    assert!(
        err.lines()
            .next()
            .unwrap()
            .starts_with("killed: seccomp violation at openat(2)"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(v["seccomp_killed"], true);
    assert_eq!(v["signal"], 31);
    assert_eq!(v["shell_code"], 159);
    assert_eq!(v["denied_syscall"]["name"], "openat");
    assert_eq!(v["denied_syscall"]["nr"], 257);
    assert_eq!(v["denied_syscall"]["arch"], "x86_64");
    let p = write_profile(&d, "s.toml", "seccomp = \"strict\"\n");
    let o = ctl(
        &d,
        &["run", "--profile", p.to_str().unwrap(), "--", "/bin/true"],
    );
    assert_eq!(code(&o), 128 + 31);
}

/// `nebula-ctl run ARGS -- <this test binary> <helper_raw_syscall>` calling system call `nr`
/// with zero arguments (see `common::raw_syscall_helper`); `survived ...` on stdout if it
/// returned to the program.
fn ctl_calling(d: &Path, args: &[&str], nr: u32) -> std::process::Output {
    let exe = common::shared_exe();
    let nr = format!("NEBULA_HELPER_SYSCALL={nr}");
    let mut all = vec!["run", "--env", "NEBULA_HELPER=1", "--env", &nr];
    all.extend_from_slice(args);
    all.push("--");
    all.push(exe.to_str().unwrap());
    all.extend(common::helper_args("helper_raw_syscall"));
    ctl(d, &all)
}

#[test]
#[ignore = "helper: run inside a context by the seccomp tests"]
fn helper_raw_syscall() {
    common::raw_syscall_helper();
}

#[test]
fn default_profile_names_a_hostile_call() {
    let d = run_dir("seccomp-default");
    // kexec_load(0, 0, 0, 0): a call on the default profile's hostile list (a kill).
    let o = ctl_calling(&d, &["--json"], 246);
    assert_eq!(code(&o), 128 + 31, "{}", text(&o.stderr));
    assert!(!text(&o.stdout).contains("survived"), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert_eq!(
        err.lines().next().unwrap(),
        "killed: seccomp violation at kexec_load(2) (nr 246; profile default)",
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(v["denied_syscall"]["name"], "kexec_load");
    assert_eq!(v["denied_syscall"]["nr"], 246);
    // mount(2), which the profile refuses with EPERM, is no kill: the program goes on.
    let o = ctl_calling(&d, &["--json"], 165);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("survived -1 1"),
        "mount did not fail with EPERM: {}",
        text(&o.stdout)
    );
    let v: serde_json::Value =
        serde_json::from_str(text(&o.stderr).lines().last().unwrap()).unwrap();
    assert_eq!(v["seccomp_killed"], false);
    assert_eq!(v["denied_syscall"], serde_json::Value::Null);
}

#[test]
fn cpu_time_limit_kills() {
    let d = run_dir("cputime");
    let t = Instant::now();
    let o = ctl(
        &d,
        &[
            "run",
            "--cpu-time",
            "1s",
            "--time",
            "20s",
            "--",
            "/bin/sh",
            "-c",
            "while :; do :; done",
        ],
    );
    assert!(t.elapsed() < Duration::from_secs(15));
    assert!(
        text(&o.stderr).contains("killed: cpu time limit 1s"),
        "{}",
        text(&o.stderr)
    );
    // RLIMIT_CPU: SIGXCPU (or the SIGKILL a second later).
    assert!([128 + 24, 137].contains(&code(&o)), "{}", code(&o));
}

#[test]
fn usage_errors_exit_2_naming_the_problem() {
    let d = run_dir("usage");
    for (args, needle) in [
        (vec!["run", "--memory", "64Q", "--", "true"], "64Q"),
        (vec!["run", "--time", "30", "--", "true"], "no unit"),
        (vec!["run", "--cpu", "0", "--", "true"], "--cpu"),
        (vec!["run", "--net", "wifi", "--", "true"], "wifi"),
        (vec!["run", "--seccomp", "lax", "--", "true"], "lax"),
        (vec!["run", "--bind", "/a", "--", "true"], "SRC:DST"),
        (vec!["run", "--env", "NOEQ", "--", "true"], "NAME=VALUE"),
        (vec!["run", "--bogus", "--", "true"], "--bogus"),
        (vec!["run", "--memory", "64M"], "CMD"),
        (vec!["stats"], "CONTEXT"),
        (vec!["run", "--name", "../x", "--", "true"], "context name"),
    ] {
        let o = ctl(&d, &args);
        assert_eq!(code(&o), 2, "{args:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(needle),
            "{args:?}: {}",
            text(&o.stderr)
        );
    }
    let help = text(&ctl(&d, &["run", "--help"]).stdout);
    assert!(help.contains("125") && help.contains("128+N"), "{help}");
}

#[test]
fn profile_errors_name_key_value_and_line() {
    let d = run_dir("profile-err");
    for (body, needles) in [
        (
            "time = \"1s\"\nmemroy = \"64M\"\n",
            vec!["line 2", "memroy", "unknown key"],
        ),
        (
            "memory = \"64Q\"\n",
            vec!["line 1", "`memory`", "\"64Q\"", "unit"],
        ),
        ("pids = \"ten\"\n", vec!["`pids`", "\"ten\"", "integer"]),
        ("ro-root = 1\n", vec!["`ro-root`", "true or false"]),
        ("env = \"A=1\"\n", vec!["`env`", "array"]),
        ("[limits]\nmemory = \"1G\"\n", vec!["unknown key `limits`"]),
        (
            "name = \"a/b\"\n",
            vec!["`name`", "\"a/b\"", "context name"],
        ),
        ("memory = \n", vec!["line 1", "not valid TOML"]),
    ] {
        let p = write_profile(&d, "bad.toml", body);
        let o = ctl(
            &d,
            &["run", "--profile", p.to_str().unwrap(), "--", "/bin/true"],
        );
        assert_eq!(code(&o), 2, "{body:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        for n in needles {
            assert!(err.contains(n), "{body:?}: missing {n:?} in {err}");
        }
    }
    let o = ctl(
        &d,
        &["run", "--profile", "/nonexistent.toml", "--", "/bin/true"],
    );
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));
}

/// What the context sees, printed by a shell script; the same for a flag and its TOML twin.
const PROBE_SCRIPT: &str = "echo env=$A; echo cwd=$(pwd); echo host=$(hostname); \
    echo root=$(awk '$5==\"/\"{print substr($6,1,2)}' /proc/self/mountinfo | tail -1); \
    echo tmpfs=$(grep -c ' /mnt tmpfs ' /proc/self/mounts); \
    echo bind=$(test -f /mnt/passwd && echo yes || echo no); \
    echo uidmap=$(awk '{print $2}' /proc/self/uid_map); \
    echo seccomp=$(awk '/^Seccomp:/{print $2}' /proc/self/status); \
    echo user=$(id -u):$(id -g); \
    echo netdevs=$(tail -n +3 /proc/net/dev | wc -l)";

/// A directory that exists here, for mounting over (`/mnt` is absent in the VM's initramfs).
fn mount_point() -> &'static str {
    ["/mnt", "/srv", "/opt", "/media", "/root", "/home"]
        .into_iter()
        .find(|p| Path::new(p).is_dir())
        .expect("some mount point exists")
}

/// `s` with `/mnt` replaced by [`mount_point`].
fn mp(s: &str) -> String {
    s.replace("/mnt", mount_point())
}

fn probe_run(d: &Path, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| mp(a)).collect();
    let script = mp(PROBE_SCRIPT);
    let mut a = vec!["run"];
    a.extend(args.iter().map(String::as_str));
    a.extend_from_slice(&["--", "/bin/sh", "-c", &script]);
    let o = ctl(d, &a);
    assert_eq!(code(&o), 0, "{args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn every_flag_has_a_toml_twin() {
    let d = run_dir("twins");
    let host_devs = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count()
        - 2;
    // Defaults: read-only root, network none (only lo), default seccomp (filter mode 2).
    let def = probe_run(&d, &[]);
    assert!(def.contains("root=ro"), "{def}");
    assert!(def.contains("netdevs=1\n"), "{def}");
    assert!(def.contains("seccomp=2\n"), "{def}");
    assert!(def.contains("user=0:0\n"), "{def}");
    // --user picks the id inside (the context keeps its range of host ids).
    let flags = probe_run(&d, &["--user", "7:8"]);
    let p = write_profile(&d, "user.toml", "user = \"7:8\"\n");
    let toml = probe_run(&d, &["--profile", p.to_str().unwrap()]);
    assert_eq!(flags, toml);
    assert!(flags.contains("user=7:8\n"), "{flags}");
    let flags = probe_run(
        &d,
        &[
            "--env",
            "A=1",
            "--cwd",
            "/tmp",
            "--hostname",
            "twinbox",
            "--rw-root",
            "--tmpfs",
            "/mnt:1M",
            "--uid",
            "4242",
            "--seccomp",
            "none",
            "--net",
            "host",
        ],
    );
    let p = write_profile(
        &d,
        "twins.toml",
        &mp(
            "env = [\"A=1\"]\ncwd = \"/tmp\"\nhostname = \"twinbox\"\nro-root = false\n\
         tmpfs = [\"/mnt:1M\"]\nuid = 4242\nseccomp = \"none\"\nnet = \"host\"\n",
        ),
    );
    let toml = probe_run(&d, &["--profile", p.to_str().unwrap()]);
    assert_eq!(flags, toml);
    for want in [
        "env=1\n",
        "cwd=/tmp\n",
        "host=twinbox\n",
        "root=rw\n",
        "tmpfs=1\n",
        "uidmap=4242\n",
        "seccomp=0\n",
    ] {
        assert!(flags.contains(want), "missing {want:?} in {flags}");
    }
    assert!(flags.contains(&format!("netdevs={host_devs}\n")), "{flags}");
    // bind (read-only) and the other seccomp profile names.
    let flags = probe_run(&d, &["--bind", "/etc:/mnt:ro", "--seccomp", "deny-network"]);
    let p = write_profile(
        &d,
        "bind.toml",
        &mp("bind = [\"/etc:/mnt:ro\"]\nseccomp = \"deny-network\"\nro-root = true\n"),
    );
    let toml = probe_run(&d, &["--profile", p.to_str().unwrap(), "--ro-root"]);
    assert_eq!(flags, toml);
    assert!(
        flags.contains("bind=yes") && flags.contains("seccomp=2"),
        "{flags}"
    );
    // Read-only and writable binds of a scratch directory.
    let scratch = d.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    // Root inside is an unprivileged host uid of the context's own range: let it write.
    std::fs::set_permissions(
        &scratch,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    for (mode, writable) in [(":ro", false), ("", true)] {
        let spec = format!("{}:{}{mode}", scratch.display(), mount_point());
        let touch = format!("touch {}/x", mount_point());
        let o = ctl(&d, &["run", "--bind", &spec, "--", "/bin/sh", "-c", &touch]);
        assert_eq!(code(&o) == 0, writable, "{spec}: {}", text(&o.stderr));
        assert_eq!(scratch.join("x").exists(), writable, "{spec}");
    }
    // time and cpu-time twins.
    let p = write_profile(&d, "time.toml", "time = \"200ms\"\n");
    let o = ctl(
        &d,
        &[
            "run",
            "--profile",
            p.to_str().unwrap(),
            "--",
            "/bin/sleep",
            "5",
        ],
    );
    assert_eq!(code(&o), 137);
    assert!(text(&o.stderr).contains("killed: time limit 200ms"));
    // Flags override the profile.
    let p = write_profile(&d, "over.toml", "time = \"200ms\"\nenv = [\"A=toml\"]\n");
    let o = ctl(
        &d,
        &[
            "run",
            "--profile",
            p.to_str().unwrap(),
            "--time",
            "20s",
            "--env",
            "A=flag",
            "--",
            "/bin/sh",
            "-c",
            "echo $A",
        ],
    );
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "flag\n");
    // The name key: shown by list (checked in the registry test for the flag).
    let p = write_profile(&d, "name.toml", "name = \"from-toml\"\n");
    let mut c = cmd(
        &d,
        &[
            "run",
            "--profile",
            p.to_str().unwrap(),
            "--",
            "/bin/sleep",
            "30",
        ],
    )
    .stdin(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let e = wait_listed(&d, "from-toml");
    assert_eq!(e["name"], "from-toml");
    let _ = ctl(&d, &["kill", "from-toml"]);
    assert_eq!(c.wait().unwrap().code(), Some(137));
}

/// The cgroup limits: refused on a host without cgroup v2 (exit 125, naming why), the same
/// for the flag and the key; with cgroup v2 they are accepted.
#[test]
fn cgroup_limits_are_refused_without_cgroup_v2_flag_and_key_alike() {
    let d = run_dir("refuse");
    for (flag, value, key, tval) in [
        ("--memory", "64M", "memory", "\"64M\""),
        ("--memory-high", "32M", "memory-high", "\"32M\""),
        ("--swap", "0", "swap", "\"1M\""),
        ("--cpu", "50%", "cpu", "0.5"),
        ("--pids", "16", "pids", "16"),
        ("--io", "8:0 rbps=1M", "io", "[\"8:0 rbps=1M\"]"),
    ] {
        let p = write_profile(&d, "cg.toml", &format!("{key} = {tval}\n"));
        for args in [
            vec!["run", flag, value, "--", "/bin/true"],
            vec!["run", "--profile", p.to_str().unwrap(), "--", "/bin/true"],
        ] {
            let o = ctl(&d, &args);
            if cgroup_v2() && flag != "--io" && flag != "--swap" {
                assert_eq!(code(&o), 0, "{args:?}: {}", text(&o.stderr));
            } else if !cgroup_v2() {
                assert_eq!(code(&o), 125, "{args:?}: {}", text(&o.stderr));
                let err = text(&o.stderr);
                assert!(
                    err.contains("refused:") && err.contains("not available here"),
                    "{args:?}: {err}"
                );
            }
        }
    }
    assert_no_entries(&d);
}

fn list(d: &Path) -> Vec<serde_json::Value> {
    let o = ctl(d, &["list", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).unwrap()
}

fn wait_listed(d: &Path, name: &str) -> serde_json::Value {
    let t = Instant::now();
    loop {
        if let Some(e) = list(d).into_iter().find(|e| e["name"] == name) {
            return e;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{name} never listed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_no_entries(d: &Path) {
    let left: Vec<_> = std::fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    (n.ends_with(".json") && n != "out.json")
                        || n.ends_with(".name")
                        || n.ends_with(".killed")
                        || n.ends_with(".tmp")
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "registry entries left: {left:?}");
}

fn spawn_sleeper(d: &Path, name: &str, extra: &[&str]) -> Child {
    let mut a = vec!["run", "--name", name];
    a.extend_from_slice(extra);
    a.extend_from_slice(&["--", "/bin/sleep", "30"]);
    cmd(d, &a)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn list_stats_kill(d: &Path, extra: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let mut run = spawn_sleeper(d, "sleeper", extra);
    let e = wait_listed(d, "sleeper");
    let pid = e["pid"].as_i64().unwrap();
    // The registered pid is the context's pid 1 and runs the supervisor's child.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: u32 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, run.id());
    assert_eq!(e["supervisor"].as_u64().unwrap(), u64::from(run.id()));
    // A second context with the same name is refused.
    let o = ctl(d, &["run", "--name", "sleeper", "--", "/bin/true"]);
    assert_eq!(code(&o), 125, "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("already named"));
    // Table output.
    let o = ctl(d, &["list"]);
    let t = text(&o.stdout);
    assert!(
        t.contains("sleeper") && t.contains(e["id"].as_str().unwrap()),
        "{t}"
    );
    // stats by name and by id prefix.
    let o = ctl(d, &["stats", "sleeper", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(s["stats"]["memory_current"].as_u64().unwrap() > 0, "{s}");
    assert!(s["stats"]["pids_current"].as_u64().unwrap() >= 2, "{s}");
    let id = e["id"].as_str().unwrap();
    let o = ctl(d, &["stats", &id[..8]]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("memory"), "{}", text(&o.stdout));
    let o = ctl(d, &["stats", "nobody"]);
    assert_eq!(code(&o), 1);
    assert!(text(&o.stderr).contains("no running context"));
    // kill: the run exits 128+9 and its entry is gone.
    let o = ctl(d, &["kill", "sleeper"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let out = wait_timeout(&mut run, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(137));
    assert!(
        text(&out.stderr).contains("killed: by nebula-ctl kill"),
        "{}",
        text(&out.stderr)
    );
    assert!(list(d).is_empty());
    assert_no_entries(d);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            // A reused pid has another start time.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default() != stat
        }
    );
    let o = ctl(d, &["kill", "sleeper"]);
    assert_eq!(code(&o), 1);
    (e, s)
}

fn wait_timeout(c: &mut Child, limit: Duration) -> Output {
    let t = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = c.kill();
            panic!("child did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stderr = Vec::new();
    if let Some(mut e) = c.stderr.take() {
        std::io::Read::read_to_end(&mut e, &mut stderr).unwrap();
    }
    Output {
        status: c.wait().unwrap(),
        stdout: Vec::new(),
        stderr,
    }
}

#[test]
fn list_stats_and_kill_a_running_context() {
    let d = run_dir("lsk");
    let (e, s) = list_stats_kill(&d, &[]);
    if !cgroup_v2() {
        assert_eq!(e["cgroup"], serde_json::Value::Null);
        assert_eq!(s["stats"]["source"], "proc");
    }
}

#[test]
fn a_stale_entry_is_cleaned_by_list() {
    let d = run_dir("stale");
    // A pid that is certainly dead: a child that was reaped.
    let mut c = Command::new("/bin/true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    let entry = serde_json::json!({
        "id": "deadbeef0001", "name": "ghost", "pid": pid, "pid_start": 1,
        "supervisor": pid, "cgroup": null, "limits": {}, "started": 0, "command": ["x"],
    });
    let path = d.join("deadbeef0001.json");
    std::fs::write(&path, entry.to_string()).unwrap();
    // Another with a live pid (ours) but the wrong start time: a reused pid.
    let reused = serde_json::json!({
        "id": "deadbeef0002", "name": "reused", "pid": std::process::id(), "pid_start": 1,
        "supervisor": 1, "cgroup": null, "limits": {}, "started": 0, "command": ["x"],
    });
    let path2 = d.join("deadbeef0002.json");
    std::fs::write(&path2, reused.to_string()).unwrap();
    std::fs::write(d.join("garbage.json"), "{not json").unwrap();
    assert!(list(&d).is_empty());
    assert!(!path.exists() && !path2.exists() && !d.join("garbage.json").exists());
    let o = ctl(&d, &["kill", "reused"]);
    assert_eq!(code(&o), 1, "{}", text(&o.stderr));
}

/// A supervisor killed outright cannot clean up: its context dies with it (PDEATHSIG) and
/// the next reader removes the entry, the name claim and (with cgroup v2) the empty leaf.
#[test]
fn a_killed_supervisor_is_cleaned_up_by_the_next_reader() {
    let d = run_dir("orphan");
    let extra: &[&str] = if cgroup_v2() {
        &["--memory", "64M"]
    } else {
        &[]
    };
    let mut run = spawn_sleeper(&d, "orphan", extra);
    let e = wait_listed(&d, "orphan");
    let pid = e["pid"].as_i64().unwrap();
    // pid 1 of the context, as registered (not a zombie, same start time).
    let start = e["pid_start"].as_u64().unwrap();
    let same = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split_whitespace().collect();
            f[0] != "Z" && f[19].parse::<u64>().unwrap() == start
        })
    };
    assert!(same(), "the registered pid is not the context");
    run.kill().unwrap(); // SIGKILL to nebula-ctl run itself
    run.wait().unwrap();
    let t = Instant::now();
    while !list(&d).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(30), "the entry stayed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Then it is gone: no such pid, a zombie, or another start time.
    let t = Instant::now();
    while same() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the context outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_no_entries(&d);
    if let Some(cg) = e["cgroup"].as_str() {
        assert!(!Path::new(cg).exists(), "leaf {cg} left behind");
    }
}

/// `top` under a pseudo-terminal (`script` from util-linux), while a context runs.
#[test]
fn top_under_a_pty_shows_the_context_and_quits_on_q() {
    if !common::require(
        Path::new("/usr/bin/script").exists(),
        "needs script(1) from util-linux for a pseudo-terminal",
    ) {
        return;
    }
    if !Path::new("/dev/pts/ptmx").exists() && common::require_all() {
        // The VM's initramfs mounts no devpts; it is a throw-away guest, so mount one.
        std::fs::create_dir_all("/dev/pts").unwrap();
        let st = Command::new("mount")
            .args(["-t", "devpts", "devpts", "/dev/pts"])
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .status()
            .unwrap();
        assert!(st.success(), "mount devpts: {st}");
    }
    let d = run_dir("top");
    // With cgroup v2 (the VM) the bar is measured against a real limit.
    let limited = cgroup_v2();
    let extra: &[&str] = if limited { &["--memory", "64M"] } else { &[] };
    let mut run = spawn_sleeper(&d, "topped", extra);
    wait_listed(&d, "topped");
    let mut top = Command::new("/usr/bin/script")
        .args(["-qfec", &format!("{BIN} top"), "/dev/null"])
        .env("NEBULA_RUN_DIR", &d)
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = top.stdin.take().unwrap();
    // Two refreshes, then q.
    std::thread::sleep(Duration::from_millis(2500));
    stdin.write_all(b"q").unwrap();
    stdin.flush().unwrap();
    let t = Instant::now();
    while top.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(20) {
            let _ = top.kill();
            panic!("top did not quit on q");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let out = top.wait_with_output().unwrap();
    let screen = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{screen}\n{}",
        text(&out.stderr)
    );
    assert!(
        screen.contains("\x1b[?1049h"),
        "no alternate screen: {screen:?}"
    );
    assert!(
        screen.contains("\x1b[?1049l"),
        "screen not restored: {screen:?}"
    );
    assert!(screen.contains("topped"), "{screen:?}");
    assert!(
        screen.contains("MEMORY") && screen.contains('['),
        "{screen:?}"
    );
    // Two frames at least: it refreshes.
    assert!(screen.matches("nebula-ctl top:").count() >= 2, "{screen:?}");
    let _ = ctl(&d, &["kill", "topped"]);
    assert_eq!(
        wait_timeout(&mut run, Duration::from_secs(60))
            .status
            .code(),
        Some(137)
    );
    // Not a terminal: plain text, once.
    let o = ctl(&d, &["top", "--once"]);
    assert_eq!(code(&o), 0);
    assert!(!text(&o.stdout).contains('\x1b'));
    assert!(
        text(&o.stdout).contains("0 context(s)"),
        "{}",
        text(&o.stdout)
    );
}

// ---------------------------------------------------------------------------------------------
// VM tier: cgroup v2.

#[test]
#[ignore = "needs cgroup v2 and 256 MiB: runs in the VM tier (make vm-test)"]
fn vm_memory_limit_oom_line_and_record() {
    if !common::require(cgroup_v2(), "needs cgroup v2 with memory, pids, cpu") {
        return;
    }
    let d = run_dir("oom");
    let o = ctl(
        &d,
        &[
            "run",
            "--memory",
            "64M",
            "--json",
            "--",
            "/bin/dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=256M",
            "count=1",
        ],
    );
    let err = text(&o.stderr);
    eprintln!(
        "nebula-ctl run --memory 64M (dd of 256 MiB): exit {}\n{err}",
        code(&o)
    );
    assert_eq!(code(&o), 137, "{err}");
    assert!(
        err.contains("killed: out of memory (memory.max=64M, peak "),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(v["oom_killed"], true, "{v}");
    assert_eq!(v["signal"], 9);
    assert!(v["memory_peak"].as_u64().unwrap() >= 60 << 20, "{v}");
    assert_no_entries(&d);
}

#[test]
#[ignore = "needs cgroup v2: runs in the VM tier (make vm-test)"]
fn vm_pids_limit_line() {
    if !common::require(cgroup_v2(), "needs cgroup v2 with memory, pids, cpu") {
        return;
    }
    let d = run_dir("pids");
    let o = ctl(
        &d,
        &[
            "run",
            "--pids",
            "4",
            "--json",
            "--",
            "/bin/sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do /bin/sleep 1 & done; wait",
        ],
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("pids limit: ") && err.contains("pids.max=4"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert!(v["pids_limit_hits"].as_u64().unwrap() > 0, "{v}");
}

#[test]
#[ignore = "needs cgroup v2: runs in the VM tier (make vm-test)"]
fn vm_list_stats_kill_through_the_cgroup() {
    if !common::require(cgroup_v2(), "needs cgroup v2 with memory, pids, cpu") {
        return;
    }
    let d = run_dir("vmlsk");
    let (e, s) = list_stats_kill(&d, &["--memory", "64M", "--pids", "32", "--cpu", "50%"]);
    assert!(e["cgroup"].is_string(), "{e}");
    assert_eq!(s["stats"]["source"], "cgroup");
    assert_eq!(s["stats"]["memory_max"], 64u64 << 20);
    assert_eq!(s["stats"]["pids_max"], 32);
    assert_eq!(s["stats"]["memory_events"]["oom_kill"], 0);
    assert_eq!(e["limits"]["cpus"], 0.5);
}

#[test]
fn a_path_match_the_context_may_not_execute_is_skipped_as_execvp_does() {
    if !common::require(
        common::is_root(),
        "needs root (the default identity is a range)",
    ) {
        return;
    }
    // A `true` in a root-only directory (as a shim under /root is), first on PATH.
    let base = PathBuf::from(format!("/var/tmp/nebula-cli-path-{}", std::process::id()));
    let private = base.join("private");
    std::fs::create_dir_all(&private).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let shim = private.join("true");
    std::fs::write(&shim, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = run_dir("path");
    let path = format!("{}:/usr/bin:/bin", private.display());
    let run = |extra: &[&str]| {
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "true"]);
        cmd(&dir, &args)
            .env("PATH", &path)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // The context's own ids may not enter the directory: the next match runs.
    let o = run(&[]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    // Mapped to host root, the shim is the first match it may execute.
    let o = run(&["--uid", "0"]);
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
    // Alone on PATH, the refusal is reported with what to do.
    let o = cmd(&dir, &["run", "--", "true"])
        .env("PATH", private.as_os_str())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&o.stderr);
    // 126, as a shell gives for a program found but not executable.
    assert_eq!(code(&o), 126, "{err}");
    assert!(
        err.contains("Permission denied") && err.contains("executable by others"),
        "{err}"
    );
    std::fs::remove_dir_all(&base).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
