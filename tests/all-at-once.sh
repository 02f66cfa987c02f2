#!/usr/bin/env bash
# Runs every test binary at the same time, as a loaded CI machine does, ROUNDS times (default
# 3), and prints the failing tests of each round. A test that fails here depends on how fast
# the machine is: mend the test, never the round count. Add load beside it (for example
# `yes > /dev/null &` once per core) to make a round harsher.
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

failed=0
for round in $(seq 1 "$rounds"); do
  rm -f "$out"/*.log
  while read -r name binary; do
    ( "$binary" > "$out/$name.log" 2>&1; echo "exit=$?" >> "$out/$name.log" ) &
  done < "$out/binaries"
  wait
  bad=$(grep -l '^exit=[1-9]' "$out"/*.log || true)
  if [ -z "$bad" ]; then
    echo "round $round: all $(wc -l < "$out/binaries") test binaries passed"
  else
    failed=1
    echo "round $round: failures in $(echo $bad | xargs -n1 basename | tr '\n' ' ')"
    grep -h '^test .* FAILED\|panicked at' $bad | head -20
    mkdir -p "$out/round-$round" && cp $bad "$out/round-$round/"
  fi
done
exit $failed
