#!/bin/sh
# Runs inside the VM tier's guest (tools/oci/validate.sh boots it): every runtime-tools
# validation program against every runtime, one line per test:
#   oci-validate: TEST RUNTIME=pass|fail|skip ...
# TAP output of each failure goes to the console log under "oci-tap:" lines.
cd "$OCI_SUITE" || { echo "oci-validate: no suite at $OCI_SUITE"; exit 2; }
tests=$(echo "$OCI_TESTS" | tr , " ")
for t in $tests; do
    line="oci-validate: $t"
    for rt in $(echo "$OCI_RUNTIMES" | tr : " "); do
        name=${rt##*/}
        out=/tmp/tap.$$.out
        start=$(cut -d' ' -f1 /proc/uptime)
        RUNTIME=$rt timeout "${OCI_TEST_TIMEOUT:-180}" "./validation/$t/$t.t" >"$out" 2>&1
        rc=$?
        end=$(cut -d' ' -f1 /proc/uptime)
        oks=$(grep -c '^ok ' "$out")
        skips=$(grep -ciE '^ok [0-9]+ # skip|^1\.\.0 # skip' "$out")
        fails=$(grep -c '^not ok ' "$out")
        if [ "$fails" -eq 0 ] && [ "$rc" -eq 0 ] && [ "$oks" -gt "$skips" ]; then r=pass
        elif [ "$fails" -eq 0 ] && [ "$rc" -eq 0 ] && [ "$skips" -gt 0 ]; then r=skip
        elif [ "$fails" -eq 0 ] && [ "$rc" -eq 0 ] && grep -qi '^1\.\.0' "$out"; then r=skip
        else r=fail
        fi
        line="$line $name=$r"
        echo "oci-time: $t $name $start $end rc=$rc ok=$oks skip=$skips notok=$fails"
        if [ "$r" = fail ]; then
            # Each "not ok" with its diagnostic, and the last lines (a crash's message).
            awk '/^not ok/ { n = 14 } n > 0 { print; n-- }' "$out" | head -n 120 |
                sed "s/^/oci-tap: $t $name: /"
            tail -n 6 "$out" | sed "s/^/oci-tap: $t $name: (tail) /"
        fi
        rm -f "$out"
        # Whatever a failed test left behind must not spill into the next one.
        for d in /run/nebula/oci/* /run/crun/* /run/runc/*; do
            [ -d "$d" ] && "$rt" delete --force "${d##*/}" >/dev/null 2>&1
        done
    done
    echo "$line"
done
echo "oci-validate: done"
