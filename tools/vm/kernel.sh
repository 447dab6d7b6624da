#!/usr/bin/env bash
# The guest kernel, one code path for the VM test tier (tools/vm/vm-test.sh calls this file)
# and the hardware isolation level (src/isolation/hardware.rs embeds this file with
# include_str! and runs it with `bash -c`): resolves the versioned package behind
# $VM_KERNEL_PKG (linux-image-cloud-amd64), fetches it with `apt-get download` into
# $VM_CACHE/<package>/ once, extracts the PVH vmlinux once, and prints the kernel to boot
# (vmlinux, else vmlinuz) on stdout. Diagnostics go to stderr.
#   tools/vm/kernel.sh            exit 0 and the kernel's path, or 2 when there is no kernel
# Knobs: VM_CACHE (default ${CARGO_TARGET_DIR:-<repo>/target}/vm), VM_KERNEL_PKG, VM_PVH,
#        VM_APT_UPDATED=1 (the caller already ran apt-get update in this run).
set -euo pipefail

if [[ -z ${VM_CACHE:-} ]]; then
    here=${BASH_SOURCE[0]:-}
    [[ -n $here && -f $here ]] || { echo "kernel: VM_CACHE is not set" >&2; exit 2; }
    REPO=$(cd "$(dirname "$here")/../.." && pwd)
    TARGET=${CARGO_TARGET_DIR:-$REPO/target}
    [[ $TARGET == /* ]] || TARGET=$PWD/$TARGET
    VM_CACHE=$TARGET/vm
fi
CACHE=$VM_CACHE
META=${VM_KERNEL_PKG:-linux-image-cloud-amd64}

die() { echo "kernel: $*" >&2; exit 2; }
say() { echo "kernel: $*" >&2; }

FETCH_TMP=""
trap '[[ -n $FETCH_TMP ]] && rm -rf "$FETCH_TMP"' EXIT
trap 'exit 130' INT TERM

mkdir -p "$CACHE"
exec 8>"$CACHE/.kernel.lock"          # one fetch/extraction at a time per cache
flock 8

APT_UPDATED=${VM_APT_UPDATED:-0}
apt_update() {
    [[ $APT_UPDATED == 1 || $(id -u) != 0 ]] && return 0
    APT_UPDATED=1
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get -q update >&2 || say "warning: apt-get update failed"
}

resolve_pkg() {
    LC_ALL=C apt-cache depends "$META" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
lists_fresh() { [[ -n $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n1) ]]; }
hexat() { od -An -tx1 -j "$2" -N "$3" "$1" | tr -d ' \n'; }
u32at() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' \n'; }

# Uncompressed ELF vmlinux for PVH boot: skips the in-guest decompressor under TCG.
extract_pvh() {
    local bz=$1 out=$2 setup off len start dec
    [[ $(hexat "$bz" $((0x202)) 4) == 48647253 ]] || return 1          # "HdrS"
    setup=$(od -An -tu1 -j $((0x1f1)) -N1 "$bz" | tr -d ' \n'); [[ $setup != 0 ]] || setup=4
    off=$(u32at "$bz" $((0x248))); len=$(u32at "$bz" $((0x24c)))
    start=$(( (setup + 1) * 512 + off ))
    case $(hexat "$bz" "$start" 4) in
        02214c18) dec="lz4 -dc" ;;  fd377a58) dec="xz -dc --single-stream" ;;
        28b52ffd) dec="zstd -dcq" ;; 1f8b*) dec="gzip -dc" ;;  *) return 1 ;;
    esac
    command -v "${dec%% *}" >/dev/null && command -v readelf >/dev/null || return 1
    # decompressors may complain about trailing bytes: judge the output, not the status
    tail -c +$((start + 1)) "$bz" | head -c "$len" | $dec >"$out" 2>/dev/null || true
    [[ $(hexat "$out" 0 4) == 7f454c46 ]] || return 1
    LC_ALL=C readelf -n "$out" 2>/dev/null | grep -Eq '^ *Xen .*(0x00000012|PHYS32_ENTRY)'
}

fetch_kernel() {
    local pkg=$1
    FETCH_TMP=$(mktemp -d "$CACHE/.fetch.XXXXXX"); chmod 755 "$FETCH_TMP"
    say "downloading $pkg"
    (cd "$FETCH_TMP" && apt-get download -q -o APT::Sandbox::User=root "$pkg") >&2 || return 1
    dpkg-deb --fsys-tarfile "$FETCH_TMP"/*.deb |
        tar -x -C "$FETCH_TMP" --wildcards './boot/vmlinuz-*' './boot/config-*' || return 1
    mv "$FETCH_TMP"/boot/vmlinuz-* "$FETCH_TMP/vmlinuz" || return 1
    mv "$FETCH_TMP"/boot/config-* "$FETCH_TMP/config" 2>/dev/null || true
    rmdir "$FETCH_TMP/boot" 2>/dev/null || true
    rm -rf "${CACHE:?}/$pkg"                        # a stale entry without vmlinuz
    mv -T "$FETCH_TMP" "$CACHE/$pkg" || return 1    # atomic publish
    FETCH_TMP=""
}

KDIR=""
pkg=$(resolve_pkg || true)
if [[ -z $pkg || ! -f $CACHE/$pkg/vmlinuz ]]; then
    if [[ -z $pkg ]] || ! lists_fresh; then apt_update; pkg=$(resolve_pkg || true); fi
    if [[ -n $pkg && ! -f $CACHE/$pkg/vmlinuz ]] && ! fetch_kernel "$pkg"; then
        rm -rf "$FETCH_TMP"; FETCH_TMP=""
        if [[ $APT_UPDATED == 0 ]]; then
            apt_update; pkg=$(resolve_pkg || true)
            [[ -z $pkg || -f $CACHE/$pkg/vmlinuz ]] || fetch_kernel "$pkg" ||
                { rm -rf "$FETCH_TMP"; FETCH_TMP=""; }
        fi
    fi
fi
if [[ -n $pkg && -f $CACHE/$pkg/vmlinuz ]]; then
    KDIR=$CACHE/$pkg
else
    KDIR=$(find "$CACHE" -mindepth 2 -maxdepth 2 -path '*/linux-image-*/vmlinuz' -printf '%h\n' 2>/dev/null |
        sort -V | tail -n1)
    [[ -n $KDIR ]] || die "no kernel: could not resolve/download $META and nothing is cached in $CACHE"
    say "could not resolve/download $META; using cached ${KDIR##*/}"
fi
KERNEL=$KDIR/vmlinuz
if [[ ${VM_PVH:-1} != 0 ]]; then              # once per cached kernel; bzImage as fallback
    if [[ ! -f $KDIR/vmlinux && ! -f $KDIR/no-pvh ]]; then
        FETCH_TMP=$(mktemp "$KDIR/.vmlinux.XXXXXX")
        if extract_pvh "$KERNEL" "$FETCH_TMP"; then chmod 644 "$FETCH_TMP"; mv -f "$FETCH_TMP" "$KDIR/vmlinux"
        else say "no PVH vmlinux could be extracted; booting the bzImage"; touch "$KDIR/no-pvh"; fi
        rm -f "$FETCH_TMP"; FETCH_TMP=""
    fi
    [[ -f $KDIR/vmlinux ]] && KERNEL=$KDIR/vmlinux
fi
printf '%s\n' "$KERNEL"
