#!/usr/bin/env bash
# The OCI runtime peer tests: opencontainers/runtime-tools' validation programs, run in the
# VM tier's guest (cgroup v2) against nebula-runc and, in the same run, Debian's crun and
# runc. Prints one line per test (pass/fail/skip for each runtime), the totals, and fails
# when nebula fails a test that crun passes and tools/oci/known-failures does not list.
#
# Usage: tools/oci/validate.sh [TEST...]      (default: every validation program)
# Knobs: OCI_TEST_TIMEOUT (s per program, 180), VM_TIMEOUT (s, 3600), OCI_RESULTS (file).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
say() { echo "oci-validate: $*" >&2; }

for p in crun runc; do
    command -v $p >/dev/null || {
        [[ $(id -u) == 0 ]] || { say "$p is not installed (apt-get install $p)"; exit 2; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends crun runc >&2
    }
done
SUITE=$("$REPO/tools/oci/build-validation.sh")
NEBULA=${NEBULA_RUNC:-$TARGET/debug/nebula-runc}
[[ -x $NEBULA ]] || { say "no $NEBULA (cargo build --bin nebula-runc)"; exit 2; }
CRUN=$(command -v crun) RUNC=$(command -v runc)

# GNU tar and gzip: the programs unpack rootfs-amd64.tar.gz with "tar -xf", which busybox
# tar does not decompress; files already in the guest win over busybox's links.
extra="$NEBULA $CRUN $RUNC $SUITE/runtimetest $SUITE/rootfs-amd64.tar.gz $(command -v tar):/bin/tar $(command -v gzip):/bin/gzip"
tests=()
if [[ $# -gt 0 ]]; then tests=("$@"); else
    for d in "$SUITE"/validation/*/; do
        n=$(basename "$d"); [[ -x $d/$n.t ]] && tests+=("$n")
    done
fi
for t in "${tests[@]}"; do extra+=" $SUITE/validation/$t/$t.t"; done

OUT=${OCI_RESULTS:-$TARGET/oci/validation.txt}
mkdir -p "$(dirname "$OUT")"
say "${#tests[@]} programs x 3 runtimes in one VM"
set +e
VM_EXTRA="$extra" VM_TIMEOUT=${VM_TIMEOUT:-3600} VM_MEM=${VM_MEM:-3G} \
    VM_ENV="OCI_SUITE=$SUITE OCI_TESTS=$(IFS=,; echo "${tests[*]}") OCI_RUNTIMES=$NEBULA:$CRUN:$RUNC OCI_TEST_TIMEOUT=${OCI_TEST_TIMEOUT:-180}" \
    "$REPO/tools/vm/vm-test.sh" "$REPO/tools/oci/validate-guest.sh" >"$OUT.log" 2>&1
vrc=$?
set -e
grep -E '^oci-(validate|time|tap):' "$OUT.log" | tr -d '\r' >"$OUT.raw" || true
python3 "$REPO/tools/oci/table.py" "$OUT.raw" "$REPO/tools/oci/known-failures" | tee "$OUT"
trc=${PIPESTATUS[0]}
grep -q '^oci-validate: done' "$OUT.raw" || { say "the guest did not finish (vm-test exit $vrc; log $OUT.log)"; tail -n 20 "$OUT.log" >&2; exit 1; }
exit "$trc"
