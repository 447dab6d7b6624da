#!/bin/sh
# Runs in the VM tier's guest (tools/oci/bench.sh boots it): create+start+wait+delete of one
# busybox bundle running /bin/true, with each runtime's `run` (which is those four steps),
# in interleaved rounds; one line per round and runtime:
#   oci-bench: ROUND RUNTIME SECONDS-FOR-N-RUNS N
B=/tmp/oci-bench-bundle
mkdir -p $B/rootfs/bin $B/rootfs/proc $B/rootfs/dev $B/rootfs/sys
cp /bin/busybox $B/rootfs/bin/busybox && ln -sf busybox $B/rootfs/bin/true
cat >$B/config.json <<'JSON'
{
  "ociVersion": "1.0.2",
  "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"],
              "env": ["PATH=/bin"], "cwd": "/",
              "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
              "noNewPrivileges": true},
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "bench",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=65536k"]}
  ],
  "linux": {
    "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}],
    "resources": {"pids": {"limit": 64}, "memory": {"limit": 67108864}},
    "maskedPaths": ["/proc/kcore"],
    "readonlyPaths": ["/proc/sys"]
  }
}
JSON
N=${OCI_BENCH_RUNS:-10}
ROUNDS=${OCI_BENCH_ROUNDS:-5}
up() { cut -d' ' -f1 /proc/uptime; }
# One warm-up run each (page cache, first cgroup).
for rt in $(echo "$OCI_RUNTIMES" | tr : " "); do
    "$rt" run --bundle $B warm >/dev/null 2>&1 || echo "oci-bench: ${rt##*/} failed its warm-up run: $("$rt" run --bundle $B warm 2>&1 | tail -n 2)"
done
r=1
while [ $r -le "$ROUNDS" ]; do
    for rt in $(echo "$OCI_RUNTIMES" | tr : " "); do
        t0=$(up)
        i=0
        while [ $i -lt "$N" ]; do
            "$rt" run --bundle $B "b$i" >/dev/null 2>&1 || { echo "oci-bench: ${rt##*/} run failed"; break; }
            i=$((i + 1))
        done
        t1=$(up)
        echo "oci-bench: $r ${rt##*/} $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') $i"
    done
    r=$((r + 1))
done
echo "oci-bench: done"
