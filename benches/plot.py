#!/usr/bin/env python3
"""Plots one benches/load.sh run: throughput and p99 vs connections (direct, nginx,
sessiongate), and RSS over empty vs live sessions.

    pip install matplotlib
    python3 benches/plot.py benches/results/latest docs/benchmarks.png
"""
import glob
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

src, dst = sys.argv[1], sys.argv[2]
title = sys.argv[3] if len(sys.argv) > 3 else "sessiongate benchmarks"
COLORS = {"direct": "#888888", "nginx": "#2a9d3a", "sessiongate": "#d1495b"}

growth = {}
for path in glob.glob(os.path.join(src, "growth-*.json")):
    r = json.load(open(path))
    for name, v in r["peers"].items():
        growth.setdefault(name, []).append((r["conns"], v["median"]["rps"], v["median"]["p99_ms"]))

fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 5))
for name in ("direct", "nginx", "sessiongate"):
    pts = sorted(growth.get(name, []))
    if not pts:
        continue
    c, rps, p99 = zip(*pts)
    ax1.plot(c, [x / 1000 for x in rps], "o-", label=name, color=COLORS[name])
    ax2.plot(c, p99, "o-", label=name, color=COLORS[name])
for ax, ylabel, t in ((ax1, "thousand requests/s (median)", "Throughput vs connections"),
                      (ax2, "p99 latency, ms (median)", "p99 latency vs connections")):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent connections (oha, CPU 0; proxy + upstream on CPU 1)")
    ax.set_ylabel(ylabel)
    ax.set_title(t)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
ax1.set_ylim(bottom=0)
ax2.set_yscale("log")
if growth:
    ticks = sorted({c for pts in growth.values() for c, _, _ in pts})
    for ax in (ax1, ax2):
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])

rss_path = os.path.join(src, "rss-sessions.json")
if os.path.exists(rss_path):
    r = json.load(open(rss_path))
    rows = [x for x in r["rows"] if x["sessions"] > 0]
    n = [x["sessions"] for x in rows]
    ax3.plot(n, [x["delta_kib"] / 1024 for x in rows], "o-", color=COLORS["sessiongate"], label="sessiongate: RSS over empty")
    for i, x in enumerate(rows):
        last = i == len(rows) - 1
        ax3.annotate("%.0f MiB (%.0f B/session)" % (x["delta_kib"] / 1024, x["bytes_per_session"]),
                     (x["sessions"], x["delta_kib"] / 1024), textcoords="offset points",
                     xytext=(-6, 6) if last else (8, -4 + 12 * i), ha="right" if last else "left", fontsize=8)
    ax3.axhline(200, color="#555555", linestyle="--", linewidth=1, label="target at 1M: 200 MiB")
    ax3.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: "%gk" % (v / 1000) if v else "0"))
    ax3.set_xlabel("live sessions")
    ax3.set_ylabel("MiB")
    ax3.set_title("Memory vs live sessions")
    ax3.grid(True, which="both", alpha=0.3)
    ax3.legend(loc="upper left")
    ax3.set_ylim(0, max([230] + [x["delta_kib"] / 1024 * 1.25 for x in rows]))
    ax3.set_xlim(0, max(n) * 1.08)

m = os.path.join(src, "machine.json")
sub = ""
if os.path.exists(m):
    mm = json.load(open(m))
    sub = " — %s, %d CPUs, sessiongate %s" % (mm["cpu"], mm["cpus"], mm["sessiongate_commit"])
fig.suptitle(title + sub)
fig.tight_layout()
fig.savefig(dst, dpi=110)
print("wrote", dst)
