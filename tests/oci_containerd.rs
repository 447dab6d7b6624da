//! A real client: Debian's containerd and `ctr`, with nebula-runc as the runc binary of its
//! runc shim (`ctr run --runc-binary`). The image is built here: a busybox root filesystem
//! packed as an OCI image layout (nothing can be fetched). Needs root, cgroup v2 and the
//! containerd package: it runs in the VM tier.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const RUNC: &str = env!("CARGO_BIN_EXE_nebula-runc");
const NS: &str = "nebula";
const IMAGE: &str = "nebula/busybox:test";

fn ready() -> bool {
    common::require(common::is_root(), "needs root")
        && common::require(
            nebula_memory::features().cgroup_v2.available,
            "needs cgroup v2 (containerd's OOM and limits)",
        )
        && common::require(
            [
                "/usr/bin/containerd",
                "/usr/bin/ctr",
                "/usr/bin/containerd-shim-runc-v2",
            ]
            .iter()
            .all(|p| Path::new(p).is_file()),
            "needs Debian's containerd package (containerd, ctr, containerd-shim-runc-v2)",
        )
        && common::require(Path::new("/bin/busybox").is_file(), "needs /bin/busybox")
}

/// A ustar archive, written by hand: regular files, directories and symlinks.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn entry(&mut self, path: &str, kind: u8, mode: u32, data: &[u8], link: &str) {
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, u64::from(mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, data.len() as u64);
        octal(&mut h, 136, 12, 0);
        h[148..156].copy_from_slice(b"        ");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
    }
    fn dir(&mut self, path: &str) {
        self.entry(path, b'5', 0o755, &[], "");
    }
    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.entry(path, b'0', mode, data, "");
    }
    fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, b'2', 0o777, &[], target);
    }
    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

/// An OCI image layout (oci-layout, index.json, blobs) of one busybox layer, as a tar that
/// `ctr image import` reads.
fn busybox_image() -> Vec<u8> {
    let mut layer = Tar::default();
    for d in ["bin/", "dev/", "proc/", "sys/", "tmp/", "etc/"] {
        layer.dir(d);
    }
    layer.file(
        "bin/busybox",
        0o755,
        &std::fs::read("/bin/busybox").unwrap(),
    );
    for app in [
        "sh", "echo", "sleep", "cat", "head", "tail", "true", "ls", "id",
    ] {
        layer.symlink(&format!("bin/{app}"), "busybox");
    }
    layer.file("etc/passwd", 0o644, b"root:x:0:0:root:/:/bin/sh\n");
    let layer = layer.finish();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]}
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(&layer), "size": layer.len()}]
    })
    .to_string()
    .into_bytes();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha(&manifest), "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": IMAGE, "io.containerd.image.name": IMAGE}
        }]
    })
    .to_string()
    .into_bytes();
    let mut out = Tar::default();
    out.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
    out.file("index.json", 0o644, &index);
    out.dir("blobs/");
    out.dir("blobs/sha256/");
    for blob in [&layer, &config, &manifest] {
        let name = format!("blobs/sha256/{}", &sha(blob)[7..]);
        out.file(&name, 0o644, blob);
    }
    out.finish()
}

/// containerd on a socket, root and state of its own, stopped on drop.
struct Containerd {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = PathBuf::from(format!("/var/tmp/nebula-containerd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = sock.display(),
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("containerd.err")).unwrap())
            .spawn()
            .unwrap();
        let c = Containerd { child, dir, sock };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !c.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.err")).unwrap_or_default()
    }

    /// `ctr --address SOCK --namespace nebula ARGS`, output to files (a container's output
    /// goes through ctr, whose pipes may stay open while a shim lives).
    fn ctr(&self, args: &[&str]) -> Output {
        common::output_via_files(
            Command::new("/usr/bin/ctr")
                .arg("--address")
                .arg(&self.sock)
                .args(["--namespace", NS])
                .args(args),
            &self.dir.join("ctr.out"),
            &self.dir.join("ctr.err"),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "ctr {args:?}: {}\n{}\ncontainerd: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn wait_stopped(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ls = self.ok(&["task", "ls"]);
            if ls
                .lines()
                .any(|l| l.starts_with(id) && l.contains("STOPPED"))
            {
                return;
            }
            assert!(Instant::now() < deadline, "{id} did not stop: {ls}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The runc shim's state root for our namespace.
fn shim_root() -> PathBuf {
    PathBuf::from(format!("/run/containerd/runc/{NS}"))
}

fn nothing_left(id: &str) {
    let leaf = format!("{NS}-{id}");
    let cgroups: Vec<String> = std::fs::read_dir("/sys/fs/cgroup/nebula")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| *n == leaf)
                .collect()
        })
        .unwrap_or_default();
    assert!(cgroups.is_empty(), "{id}: cgroup left: {cgroups:?}");
    assert!(!shim_root().join(id).exists(), "{id}: state directory left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mine: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&format!("/{id}/")))
        .collect();
    assert!(mine.is_empty(), "{id}: mounts left: {mine:?}");
}

#[test]
fn containerd_runs_nebula_containers() {
    if !ready() {
        return;
    }
    let c = Containerd::start();
    let image = c.dir.join("busybox-oci.tar");
    std::fs::write(&image, busybox_image()).unwrap();
    // The image is named by its manifest's annotation (an --index-name would name the
    // index.json itself, which an OCI layout keeps outside its blobs).
    c.ok(&["images", "import", image.to_str().unwrap()]);
    let run = |extra: &[&str], id: &str, cmd: &[&str]| {
        let mut args = vec!["run", "--snapshotter", "native", "--runc-binary", RUNC];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.push(id);
        args.extend_from_slice(cmd);
        c.ctr(&args)
    };

    // 1. echo hi, exit 0.
    let o = run(&["--rm"], "t1", &["echo", "hi"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        c.log()
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\n");
    nothing_left("t1");

    // 2. Past its memory limit: OOM-killed (137), and nebula says so. ctr run deletes the
    // task when it ends; a detached one waits, stopped, for `ctr task delete`, and meanwhile
    // nebula-runc's state (read from the shim's state root) says how it ended.
    let hog = ["sh", "-c", "head -c 200000000 /dev/zero | tail"];
    let o = run(&["--rm", "--memory-limit", "33554432"], "t2", &hog);
    assert_eq!(
        o.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    nothing_left("t2");
    let o = run(&["-d", "--memory-limit", "33554432"], "t4", &hog);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    c.wait_stopped("t4");
    let st = Command::new(RUNC)
        .arg("--root")
        .arg(shim_root())
        .args(["state", "t4"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["status"], "stopped");
    let outcome = st["org.nebula.outcome"].as_str().unwrap_or_default();
    assert!(
        outcome.contains("out of memory") && outcome.contains("memory.max=32.0M"),
        "{st}"
    );
    c.ok(&["task", "delete", "t4"]);
    c.ok(&["container", "delete", "t4"]);
    nothing_left("t4");

    // 3. exec and kill on a running container.
    let o = run(&["-d"], "t3", &["sleep", "1000"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = c.ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "t3",
        "sh",
        "-c",
        "echo from-exec; cat /proc/1/cmdline",
    ]);
    assert!(out.starts_with("from-exec\n"), "{out}");
    c.ok(&["task", "kill", "--signal", "SIGKILL", "t3"]);
    c.wait_stopped("t3");
    c.ok(&["task", "delete", "t3"]);
    c.ok(&["container", "delete", "t3"]);
    nothing_left("t3");
}
