#!/usr/bin/env bash
# VM test tier: boot test binaries in one throw-away qemu (TCG) guest with cgroup v2.
#   tools/vm/vm-test.sh BIN... [-- LIBTEST-ARGS]     all binaries in one VM
#   tools/vm/vm-test.sh --runner BIN ARGS...         form usable as a cargo `runner`
# Knobs: VM_TIMEOUT VM_MEM VM_SMP VM_ACCEL VM_CACHE VM_ENV VM_EXTRA VM_APPEND
#        VM_KERNEL_PKG VM_PVH VM_KEEP (see tools/vm/README.md).
set -euo pipefail

START_NS=$(date +%s%N)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
[[ $TARGET == /* ]] || TARGET=$PWD/$TARGET
WORK=$TARGET/vm                       # logs, console, per-run temp dirs
CACHE=${VM_CACHE:-$WORK}              # kernels (may live outside the clone)
META=${VM_KERNEL_PKG:-linux-image-cloud-amd64}
BUSYBOX=/bin/busybox

die() { echo "vm-test: $*" >&2; exit 2; }
say() { echo "vm-test: $*" >&2; }

# ---- arguments ---------------------------------------------------------------
BINS=() ARGS=()
if [[ ${1:-} == --runner ]]; then
    shift; [[ $# -ge 1 ]] || die "usage: $0 --runner BIN ARGS..."
    BINS=("$1"); shift; ARGS=("$@")
else
    while [[ $# -gt 0 ]]; do
        if [[ $1 == -- ]]; then shift; ARGS=("$@"); break; fi
        BINS+=("$1"); shift
    done
fi
[[ ${#BINS[@]} -ge 1 ]] || die "usage: $0 BIN... [-- LIBTEST-ARGS]"
for b in "${BINS[@]}"; do [[ -f $b && -x $b ]] || die "not an executable file: $b"; done

STAGE=""
finish() {
    local rc=$?
    if [[ -n $STAGE && ${VM_KEEP:-0} == 1 ]]; then say "kept $STAGE (initrd.cpio, root/)"
    elif [[ -n $STAGE ]]; then rm -rf "$STAGE"; fi
    local end_ns; end_ns=$(date +%s%N)
    say "$(awk -v n=$((end_ns - START_NS)) 'BEGIN { printf "wall time %.1f s", n / 1e9 }')"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# ---- host tools (idempotent; apt only when something is missing) ----------------
# shellcheck source=tools/vm/deps.sh
source "$REPO/tools/vm/deps.sh"

mkdir -p "$WORK" "$CACHE"
exec 9>"$WORK/.lock"                  # one VM at a time: TCG timers suffer otherwise
flock -n 9 || { say "waiting for another vm-test run to finish"; flock 9; }

# ---- kernel (cached per versioned package; shared with the hardware isolation level) ----
KERNEL=$(VM_CACHE=$CACHE VM_KERNEL_PKG=$META VM_APT_UPDATED=$APT_UPDATED "$REPO/tools/vm/kernel.sh") ||
    die "no kernel (tools/vm/kernel.sh failed, see above)"
KDIR=$(dirname "$KERNEL")

# ---- initramfs ---------------------------------------------------------------
STAGE=$(mktemp -d "$WORK/run.XXXXXX")
R=$STAGE/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,var/tmp,run,etc,root,tests}
cp "$BUSYBOX" "$R/bin/busybox"; ln -s busybox "$R/bin/sh"
add_with_libs() {                             # $1 host file, $2 path inside the guest
    # --preserve=mode keeps a setuid bit (newuidmap's); cpio packs the files as root.
    mkdir -p "$(dirname "$R$2")"; cp -L --preserve=mode "$1" "$R$2"
    # Debug info is most of a test binary (wasmtime's especially): 23 binaries come to 4 GB
    # with it, more than an initrd may be; without it, ~5 MB each. VM_STRIP=0 keeps it.
    if [[ ${VM_STRIP:-1} == 1 ]] && command -v strip >/dev/null; then
        strip --strip-debug "$R$2" 2>/dev/null || true
    fi
    local lib
    for lib in $(LC_ALL=C ldd "$1" 2>/dev/null | grep -o '/[^ ]*' || true); do
        [[ -e $R$lib ]] || cp --parents -L "$lib" "$R"
    done
}
for b in "${BINS[@]}"; do add_with_libs "$b" "/tests/$(basename "$b")"; done
for x in ${VM_EXTRA:-}; do                     # host[:guest] files, e.g. CARGO_BIN_EXE targets
    h=${x%%:*}; g=${x#*:}; [[ $x == *:* ]] || g=$(realpath "$h")
    [[ -f $h ]] || die "VM_EXTRA: no such file: $h"; add_with_libs "$h" "$g"
done
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$R/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$R/etc/group"
printf '%s\n' "${ARGS[@]+"${ARGS[@]}"}" >"$R/args"
q() { printf "export %s='%s'\n" "$1" "${2//\'/\'\\\'\'}"; }
{
    q RUST_BACKTRACE "${RUST_BACKTRACE:-1}"
    [[ -n ${RUST_TEST_THREADS:-} ]] && q RUST_TEST_THREADS "$RUST_TEST_THREADS"
    [[ -n ${RUST_LOG:-} ]] && q RUST_LOG "$RUST_LOG"
    q NEBULA_TEST_REQUIRE all
    for v in ${VM_ENV:-}; do
        if [[ $v == *=* ]]; then q "${v%%=*}" "${v#*=}"; elif [[ -n ${!v+x} ]]; then q "$v" "${!v}"; fi
    done
} >"$R/env"
cat >"$R/init" <<'EOF'
#!/bin/busybox sh
# pivot_root(2) refuses the initramfs as the old root (rootfs has no parent mount), and OCI
# runtimes (nebula-runc, crun, runc) pivot: first move everything into a tmpfs and
# switch_root into it (moving, not copying: the initramfs's memory is freed file by file).
if [ ! -e /.switched ]; then
    /bin/busybox mount -t proc proc /proc
    if [ "$(/bin/busybox awk '$2 == "/" { print $1; exit }' /proc/mounts)" = rootfs ]; then
        /bin/busybox mkdir /newroot
        /bin/busybox mount -t tmpfs -o size=90% tmpfs /newroot
        /bin/busybox mkdir /newroot/.bb && /bin/busybox cp /bin/busybox /newroot/.bb/busybox
        for d in /* /.[!.]*; do
            # switch_root insists on finding /init in the old root: that one is copied.
            case $d in
                /proc|/newroot|/.bb|'/.[!.]*') ;;
                /init) /newroot/.bb/busybox cp -p /init /newroot/init ;;
                *) /newroot/.bb/busybox mv "$d" /newroot/ ;;
            esac
        done
        /newroot/.bb/busybox mkdir -p /newroot/proc
        /newroot/.bb/busybox touch /newroot/.switched
        /newroot/.bb/busybox umount /proc
        exec /newroot/.bb/busybox switch_root /newroot /init
    fi
    /bin/busybox umount /proc
fi
/bin/busybox rm -rf /.bb
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# Tests put files a context must reach under /var/tmp (a context has its own /tmp); on a
# tmpfs of its own they do not fill the rootfs, which the initramfs's binaries occupy.
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
stty -F /dev/ttyS1 -opost -echo; stty -F /dev/ttyS2 -opost -echo
exec </dev/null >/dev/ttyS1 2>&1
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null ||
        echo "vm-test: could not enable cgroup controller $c"
done
ip link set lo up || echo "vm-test: could not bring up lo"
read up _ </proc/uptime
echo "vm-test: guest $(uname -r) up after ${up}s; controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
. /env
set --
while IFS= read -r a; do [ -n "$a" ] && set -- "$@" "$a"; done </args
cd /tmp
worst=0
for t in /tests/*; do
    echo "vm-test: running ${t##*/} $*"
    "$t" "$@"; rc=$?
    echo "vm-test: ${t##*/} exited with status $rc"
    [ "$rc" -gt "$worst" ] && worst=$rc
done
read end _ </proc/uptime
echo "vm-test: guest done at ${end}s (booted at ${up}s)"
echo "VMTEST_RC=$worst" >/dev/ttyS2
sync
poweroff -f
EOF
chmod 755 "$R/init"
(cd "$R" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) >"$STAGE/initrd.cpio"

# ---- boot ----------------------------------------------------------------------
CONSOLE=$WORK/console.log LOG=$WORK/last-run.log RCF=$STAGE/rc
: >"$CONSOLE"; : >"$RCF"
case ${VM_ACCEL:-tcg} in
    # vendor=GenuineIntel: wasmtime turns on protection-key striping only for that CPUID
    # vendor; -cpu max still emulates PKU (pku, ospke) either way.
    tcg) ACCEL=(-accel tcg -cpu max,vendor=GenuineIntel) ;;
    kvm) ACCEL=(-accel kvm -cpu host) ;;
    *) die "VM_ACCEL must be tcg or kvm" ;;
esac
say "booting ${KDIR##*/} ($(basename "$KERNEL")), ${#BINS[@]} test binaries, accel ${VM_ACCEL:-tcg}"
set +e
timeout --foreground -k 10 "${VM_TIMEOUT:-900}" qemu-system-x86_64 "${ACCEL[@]}" \
    -smp "${VM_SMP:-2}" -m "${VM_MEM:-2G}" -nodefaults -no-user-config -display none -no-reboot \
    -serial "file:$CONSOLE" -chardev stdio,id=out,signal=off -serial chardev:out -serial "file:$RCF" \
    -kernel "$KERNEL" -initrd "$STAGE/initrd.cpio" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init ${VM_APPEND:-}" </dev/null | tee "$LOG"
st=("${PIPESTATUS[@]}")
set -e
QRC=${st[0]}

# ---- status ------------------------------------------------------------------------
panic_tail() {
    grep -q 'Kernel panic' "$CONSOLE" || return 1
    say "guest kernel panic; console ($CONSOLE):"
    grep -B10 -A30 'Kernel panic' "$CONSOLE" | tail -n 50 | tr -d '\r' >&2
}
RC=$(tr -d '\r' <"$RCF" | sed -n 's/^VMTEST_RC=\([0-9][0-9]*\)$/\1/p' | tail -n1)
if [[ -z $RC ]]; then
    say "no exit status from the VM (qemu exit $QRC; 124 = timed out)"
    if ! panic_tail; then
        say "last 30 console lines ($CONSOLE):"
        tail -n 30 "$CONSOLE" | tr -d '\r' >&2
    fi
    [[ $QRC != 0 ]] && exit "$QRC"
    exit 1
fi
if panic_tail && [[ $RC == 0 ]]; then RC=1; fi
say "guest exit status $RC"
if grep -q 'skipped:' "$LOG"; then
    say "a test skipped inside the VM (NEBULA_TEST_REQUIRE=all: a skip is a failure):"
    grep 'skipped:' "$LOG" | sed 's/^/    /' >&2
    [[ $RC != 0 ]] || RC=1
fi
exit "$RC"
