#!/usr/bin/env python3
"""Reads `cargo test --no-run --message-format=json` on stdin, prints the test executables."""
import json
import sys

exes = []
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg.get("profile", {}).get("test") and msg.get("executable"):
        exes.append(msg["executable"])
    if msg.get("reason") == "build-finished" and not msg.get("success"):
        sys.exit(1)
if not exes:
    sys.exit("test-binaries: cargo reported no test executables")
print(" ".join(sorted(set(exes))))
