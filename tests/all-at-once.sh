#!/usr/bin/env bash
# Runs every test binary at the same time, as a loaded CI machine does, ROUNDS times (default
# 3), and prints the failing tests of each round. A test that fails here depends on how fast
# the machine is: mend the test, never the round count. Add load beside it (for example
# `yes > /dev/null &` once per core) to make a round harsher.
#
# The integration tests are one binary (tests/it), so each binary is started once per
# top-level module (`login_flow`, `websockets`, ... and the library's `auth`, `config`, ...),
# each process with its own test threads: the same load as when every file was a binary.
#
#   tests/install-deps.sh && tests/all-at-once.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
out=target/all-at-once
mkdir -p "$out"
# The test executables of this checkout, built once.
cargo test --locked --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"] + "-" + m["target"]["kind"][0], m["executable"])
' > "$out/binaries"

# One line per process to start: a label, the executable and the exact names of its tests.
while read -r name binary; do
  "$binary" --list --format terse | python3 -c '
import sys
name, binary = sys.argv[1:]
groups = {}
for line in sys.stdin:
    if line.endswith(": test\n"):
        test = line[: -len(": test\n")]
        groups.setdefault(test.split("::")[0] if "::" in test else "root", []).append(test)
for module, tests in sorted(groups.items()):
    print(name + "." + module, binary, *tests)
' "$name" "$binary"
done < "$out/binaries" > "$out/processes"

failed=0
for round in $(seq 1 "$rounds"); do
  rm -f "$out"/*.log
  while read -r label binary tests; do
    read -ra names <<< "$tests"
    # Not `cmd; echo $?`: under set -e the subshell would stop at a failing test binary
    # before writing its status, and the round would pass.
    ( "$binary" --exact "${names[@]}" > "$out/$label.log" 2>&1 && status=0 || status=$?
      echo "exit=$status" >> "$out/$label.log" ) &
  done < "$out/processes"
  wait
  bad=$(grep -l '^exit=[1-9]' "$out"/*.log || true)
  if [ -z "$bad" ]; then
    echo "round $round: all $(wc -l < "$out/processes") test processes passed ($(wc -l < "$out/binaries") binaries)"
  else
    failed=1
    echo "round $round: failures in $(echo $bad | xargs -n1 basename | tr '\n' ' ')"
    grep -h '^test .* FAILED\|panicked at' $bad | head -20
    mkdir -p "$out/round-$round" && cp $bad "$out/round-$round/"
  fi
done
exit $failed
