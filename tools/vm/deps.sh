#!/usr/bin/env bash
# Installs what the VM tier and the hardware isolation level need on a Debian machine:
# qemu-system-x86, busybox-static, cpio. Idempotent: apt runs only when something is
# missing. Run it (`tools/vm/deps.sh`, `make deps`) or source it (vm-test.sh does, and
# reads APT_UPDATED afterwards).
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
fi
BUSYBOX=${BUSYBOX:-/bin/busybox}
declare -F say >/dev/null || say() { echo "vm-deps: $*" >&2; }
declare -F die >/dev/null || die() { echo "vm-deps: $*" >&2; exit 2; }

APT_UPDATED=0
apt_update() {
    [[ $APT_UPDATED == 1 || $(id -u) != 0 ]] && return 0
    APT_UPDATED=1
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get -q update >&2 || say "warning: apt-get update failed"
}
static_busybox() { [[ -x $BUSYBOX ]] && ! LC_ALL=C ldd "$BUSYBOX" 2>&1 | grep -q '=>'; }
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v cpio >/dev/null || missing+=(cpio)
# newuidmap/newgidmap: the rootless tests map a user's /etc/subuid range with them.
[[ -x /usr/bin/newuidmap && -x /usr/bin/newgidmap ]] || missing+=(uidmap)
# The OCI runtime's peers and client: crun and runc (tools/oci/validate.sh), containerd with
# ctr and its runc shim (tests/oci_containerd.rs). Its service is not started here.
command -v crun >/dev/null || missing+=(crun)
command -v runc >/dev/null || missing+=(runc)
[[ -x /usr/bin/containerd && -x /usr/bin/ctr && -x /usr/bin/containerd-shim-runc-v2 ]] || missing+=(containerd)
# tools/oci/build-validation.sh gets Go from PyPI into a venv.
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if [[ ! -x $BUSYBOX ]]; then missing+=(busybox-static)
elif ! static_busybox; then
    die "$BUSYBOX is dynamically linked; install busybox-static (apt-get install busybox-static)"
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    [[ $(id -u) == 0 ]] || die "missing packages: ${missing[*]} (install them as root)"
    apt_update
    say "installing ${missing[*]}"
    had_qemu_img=$(command -v qemu-img || true)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >&2
    static_busybox || die "$BUSYBOX is not a static busybox"
    # bookworm's qemu-system-x86 conflicts with a backported qemu-utils (apt removes it): put
    # bookworm's qemu-img back if the machine had one
    if [[ -n $had_qemu_img ]] && ! command -v qemu-img >/dev/null; then
        say "restoring qemu-img (qemu-utils) removed by the qemu-system-x86 install"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-utils >&2 ||
            say "warning: could not reinstall qemu-utils"
    fi
fi

