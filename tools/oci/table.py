#!/usr/bin/env python3
"""Turns tools/oci/validate-guest.sh's lines into the validation table and its totals.

Usage: table.py RAW KNOWN_FAILURES
Exit status 1 when nebula does not pass a test that crun passes and KNOWN_FAILURES (lines
"test: reason") does not list it. Every other test nebula does not pass must be listed
there too, with its reason (the README shows the list); a listed test that passes now is
reported, not failed (tests with races, such as pidfile, may pass on one run).
"""
import sys

raw, known_path = sys.argv[1], sys.argv[2]
known = {}
try:
    for line in open(known_path):
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, reason = line.partition(":")
            known[name.strip()] = reason.strip()
except FileNotFoundError:
    pass

rows, runtimes = [], []
for line in open(raw):
    if not line.startswith("oci-validate: ") or line.startswith("oci-validate: done"):
        continue
    parts = line.split()[1:]
    test, results = parts[0], dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    for r in results:
        if r not in runtimes:
            runtimes.append(r)
    rows.append((test, results))

if not rows:
    print("oci-validate: no results")
    sys.exit(1)
nebula = next((r for r in runtimes if r.startswith("nebula")), runtimes[0])
width = max(len(t) for t, _ in rows)
print(f"{'test':<{width}}  " + "  ".join(f"{r:<11}" for r in runtimes))
totals = {r: {"pass": 0, "fail": 0, "skip": 0} for r in runtimes}
bad, stale = [], []
for test, res in rows:
    note = ""
    for r in runtimes:
        totals[r][res.get(r, "fail")] += 1
    if res.get("crun") == "pass" and res.get(nebula) != "pass":
        if test in known:
            note = f"  known: {known[test]}"
        else:
            bad.append(test)
            note = "  <- crun passes, nebula does not"
    elif res.get(nebula) == "fail":
        if test in known:
            note = f"  known: {known[test]}"
        else:
            bad.append(test)
            note = "  <- not in known-failures"
    elif test in known and res.get(nebula) == "pass":
        stale.append(test)
        note = "  (listed in known-failures, passes now)"
    print(f"{test:<{width}}  " + "  ".join(f"{res.get(r, '-'):<11}" for r in runtimes) + note)
print()
for r in runtimes:
    t = totals[r]
    print(f"total {r}: {t['pass']} pass, {t['fail']} fail, {t['skip']} skip of {len(rows)}")
if bad:
    print(f"nebula fails {len(bad)} test(s) that tools/oci/known-failures does not explain: {' '.join(bad)}")
if stale:
    print(f"note: known-failures lists test(s) that passed in this run: {' '.join(stale)}")
sys.exit(1 if bad else 0)
