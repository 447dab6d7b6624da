#!/usr/bin/env bash
# The OCI spawn benchmark: create+start+wait+delete of the same bundle running /bin/true,
# nebula-runc vs crun vs runc, in one VM-tier guest (cgroup v2), interleaved rounds.
# Prints the median time per container for each runtime and nebula's ratio to each peer.
# Knobs: OCI_BENCH_RUNS (per round, 10), OCI_BENCH_ROUNDS (5).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
NEBULA=${NEBULA_RUNC:-$TARGET/release/nebula-runc}
[[ -x $NEBULA ]] || { echo "oci-bench: no $NEBULA (cargo build --release --bin nebula-runc)" >&2; exit 2; }
source "$REPO/tools/vm/deps.sh"
CRUN=$(command -v crun) RUNC=$(command -v runc)
OUT=$TARGET/oci/bench.log
mkdir -p "$(dirname "$OUT")"
VM_EXTRA="$NEBULA $CRUN $RUNC" \
    VM_ENV="OCI_RUNTIMES=$NEBULA:$CRUN:$RUNC OCI_BENCH_RUNS=${OCI_BENCH_RUNS:-10} OCI_BENCH_ROUNDS=${OCI_BENCH_ROUNDS:-5}" \
    "$REPO/tools/vm/vm-test.sh" "$REPO/tools/oci/bench-guest.sh" >"$OUT" 2>&1 || {
        echo "oci-bench: the VM run failed (log $OUT)" >&2; tail -n 20 "$OUT" >&2; exit 1; }
grep -q '^oci-bench: done' <(tr -d '\r' <"$OUT") || { echo "oci-bench: the guest did not finish ($OUT)" >&2; exit 1; }
tr -d '\r' <"$OUT" | python3 -c '
import sys, statistics
per = {}
for line in sys.stdin:
    p = line.split()
    if len(p) == 5 and p[0] == "oci-bench:" and p[1].isdigit():
        per.setdefault(p[2], []).append(float(p[3]) / int(p[4]))
    elif line.startswith("oci-bench:") and "failed" in line:
        print(line.strip())
if not per:
    sys.exit("oci-bench: no results")
med = {k: statistics.median(v) for k, v in per.items()}
neb = next(k for k in med if k.startswith("nebula"))
print("OCI spawn (create+start+wait+delete of /bin/true, VM guest, median of %d rounds):" % len(per[neb]))
for k, v in med.items():
    print(f"  {k:<12} {v * 1000:8.1f} ms per container")
for k, v in med.items():
    if k != neb:
        print(f"  nebula-runc / {k}: {med[neb] / v:.2f}x")
'
