#!/usr/bin/env python3
"""Keeps at most N fuzzer-made inputs in fuzz/corpus/<target>/ (seed-* and regress-* always stay).

Usage (from fuzz/, after `cargo fuzz build --sanitizer none`):
    python3 trim_corpus.py config 300

For a target whose fully minimised corpus is still large (config: ~720 inputs after
`cargo fuzz cmin ... -set_cover_merge=1 -use_counters=0`). One libFuzzer merge pass over the
corpus (edges only, no hit counts) records which features each input adds first; the N inputs
adding the most are kept, the other non-seed inputs are deleted. Prints the coverage before
and after. Set SESSIONGATE_FUZZ_SKIP_KNOWN as for `cargo fuzz run` when the target needs it.
"""
import os
import re
import subprocess
import sys
import tempfile

target, limit = sys.argv[1], int(sys.argv[2])
binary = os.path.join("target", "x86_64-unknown-linux-gnu", "release", target)
corpus = os.path.join("corpus", target)


def coverage():
    out = subprocess.run([binary, "-runs=0", "-timeout=10", corpus], capture_output=True, text=True).stderr
    return re.findall(r"INITED cov: (\d+) ft: (\d+)", out)[-1]


print("before: cov %s ft %s" % coverage())
with tempfile.TemporaryDirectory() as tmp:
    control = os.path.join(tmp, "control")
    into = os.path.join(tmp, "into")
    os.mkdir(into)
    subprocess.run([binary, "-merge=1", "-use_counters=0", "-timeout=10",
                    "-merge_control_file=" + control, into, corpus],
                   capture_output=True, check=True)
    lines = open(control).read().split("\n")
    n = int(lines[0])
    files = lines[2:2 + n]
    adds = {}
    for line in lines[2 + n:]:
        parts = line.split()
        if parts and parts[0] == "FT":
            adds[int(parts[1])] = len(parts) - 2

keep = set()
ranked = sorted(adds, key=lambda i: (-adds[i], os.path.getsize(files[i])))
for i in ranked:
    name = os.path.basename(files[i])
    if name.startswith(("seed-", "regress-")) or adds[i] == 0:
        continue
    if len(keep) < limit:
        keep.add(name)
removed = 0
for name in os.listdir(corpus):
    if not name.startswith(("seed-", "regress-")) and name not in keep:
        os.remove(os.path.join(corpus, name))
        removed += 1
print("removed %d, kept %d fuzzer-made inputs, %d files in all"
      % (removed, len(keep), len(os.listdir(corpus))))
print("after: cov %s ft %s" % coverage())
