#!/usr/bin/env python3
"""Prints the tables of one benches/load.sh run as Markdown.

    python3 benches/report.py benches/results/latest > summary.md

Reads the JSON files load.sh wrote (whichever sections ran) and criterion.txt. Every figure
printed comes from those files; ratios are medians of per-round ratios (peers.sh) or per-round
quiet/stall pairs. Standard library only.
"""
import glob
import json
import os
import re
import statistics
import sys

D = sys.argv[1] if len(sys.argv) > 1 else "benches/results/latest"


def load(name):
    path = os.path.join(D, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def f(v, fmt="%.2f"):
    return "-" if v is None else fmt % v


def mib(kib):
    return "-" if kib is None else "%.1f" % (kib / 1024)


def conns_of(path):
    return int(re.search(r"-(\d+)\.json$", path).group(1))


out = []
p = out.append
m = load("machine.json")
if m:
    p("Machine: %s, %s CPUs, %s GiB, kernel %s, %s; %s; %s, %s, %s, node %s; sessiongate %s; load average at start %s."
      % (m["cpu"], m["cpus"], m["mem_gib"], m["kernel"], m["os"], m["rustc"], m["oha"], m["nginx"],
         (m["caddy"] or "no caddy").split()[0], m["node"], m["sessiongate_commit"],
         " ".join("%.2f" % x for x in m["load_avg_at_start"])))
    p("")

targets = []  # (target, measured, verdict)

# --- peers -------------------------------------------------------------------------------------
for path in sorted(glob.glob(os.path.join(D, "peers-*.json")), key=conns_of):
    r = load(os.path.basename(path))
    c = r["conns"]
    p("### Peers at %d connections (%d rounds x %gs, medians)" % (c, r["rounds"], r["duration_s"]))
    p("")
    p("| peer | req/s | p50 ms | p99 ms | CPU µs/req | non-2xx | req/s vs nginx | p99 vs nginx | CPU vs nginx |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, v in r["peers"].items():
        md, vs = v["median"], v["vs_nginx"] or {}
        p("| %s | %.0f | %.3f | %.3f | %s | %d | %s | %s | %s |" % (
            name, md["rps"], md["p50_ms"], md["p99_ms"], f(md["cpu_us_per_req"], "%.1f") if md["cpu_us_per_req"] else "-",
            v["bad"], f(vs.get("rps")), f(vs.get("p99")), f(vs.get("cpu"))))
    sg, ex = r["peers"].get("sessiongate"), r["peers"].get("express")
    rounds_txt = lambda v: ", ".join("%.0f" % x["rps"] for x in v["rounds"])
    p("")
    if sg:
        p("Per-round req/s: " + "; ".join("%s %s" % (n, rounds_txt(v)) for n, v in r["peers"].items()) + ".")
        p("")
        vs = sg["vs_nginx"] or {}
        targets.append(("sessiongate req/s >= 1.0x nginx at %d conns" % c, f(vs.get("rps")) + "x",
                        "met" if vs.get("rps", 0) >= 1.0 else "MISSED"))
        targets.append(("sessiongate p99 <= nginx p99 at %d conns" % c, f(vs.get("p99")) + "x",
                        "met" if vs.get("p99", 9) <= 1.0 else "MISSED"))
        if ex:
            ratio = statistics.median(a["rps"] / b["rps"] for a, b in zip(sg["rounds"], ex["rounds"]))
            targets.append(("sessiongate >= 15x express-session at %d conns" % c, "%.1fx" % ratio,
                            "met" if ratio >= 15 else "MISSED"))

# --- growth ------------------------------------------------------------------------------------
growth = sorted(glob.glob(os.path.join(D, "growth-*.json")), key=conns_of)
if growth:
    first = load(os.path.basename(growth[0]))
    p("### Throughput and p99 vs connections (%d rounds x %gs per point, medians)" % (first["rounds"], first["duration_s"]))
    p("")
    p("| conns | direct req/s | direct p99 ms | nginx req/s | nginx p99 ms | sessiongate req/s | sessiongate p99 ms | sg/nginx req/s | sg/nginx p99 | non-2xx |")
    p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in growth:
        r = load(os.path.basename(path))
        pe = r["peers"]
        g = lambda n, k: pe[n]["median"][k] if n in pe else None
        bad = sum(v["bad"] for v in pe.values())
        vs = (pe.get("sessiongate") or {}).get("vs_nginx") or {}
        p("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %d |" % (
            r["conns"], f(g("direct", "rps"), "%.0f"), f(g("direct", "p99_ms"), "%.3f"), f(g("nginx", "rps"), "%.0f"),
            f(g("nginx", "p99_ms"), "%.3f"), f(g("sessiongate", "rps"), "%.0f"), f(g("sessiongate", "p99_ms"), "%.3f"),
            f(vs.get("rps")), f(vs.get("p99")), bad))
    p("")

# --- memory ------------------------------------------------------------------------------------
r = load("rss-sessions.json")
if r:
    p("### RSS vs live sessions (proxy in-process, 1 worker; base RSS %s MiB after one proxied request)" % mib(r["base_rss_kib"]))
    p("")
    p("| live sessions | RSS MiB | over empty MiB | bytes/session | fill time s |")
    p("|---:|---:|---:|---:|---:|")
    for row in r["rows"]:
        p("| %d | %s | %s | %s | %.2f |" % (row["sessions"], mib(row["rss_kib"]), mib(row["delta_kib"]),
                                          f(row["bytes_per_session"], "%.0f") if row["sessions"] else "-", row["create_s"]))
    p("")
    top = max(r["rows"], key=lambda x: x["sessions"])
    if top["sessions"] >= 1_000_000:
        targets.append(("1M live sessions <= 200 MiB over empty", mib(top["delta_kib"]) + " MiB",
                        "met" if top["delta_kib"] <= 200 * 1024 else "MISSED"))

idle = [(n, load("idle-%s.json" % n)) for n in ("sessiongate", "nginx")]
idle = [(n, v) for n, v in idle if v]
if idle:
    p("### Idle keep-alive connections")
    p("")
    p("| proxy | connections | responses | still open at end | RSS before MiB | RSS idle MiB | rise MiB | KiB/conn |")
    p("|---|---:|---|---:|---:|---:|---:|---:|")
    for n, v in idle:
        p("| %s | %d | %s | %d | %s | %s | %s | %.1f |" % (n, v["connections"], ", ".join("%s: %d" % kv for kv in v["responses"].items()),
                                                         v["open_at_end"], mib(v["rss_before_kib"]), mib(v["rss_idle_kib"]),
                                                         mib(v["delta_kib"]), v["kib_per_conn"]))
        if n == "sessiongate":
            targets.append(("10k idle connections <= 100 MiB", mib(v["delta_kib"]) + " MiB",
                            "met" if v["delta_kib"] <= 100 * 1024 and v["open_at_end"] >= v["connections"] else "MISSED"))
    p("")

b = load("login-burst.json")
if b:
    mm = b["memory"]
    p("### Login burst: %d concurrent logins, distinct source addresses" % mm["users"])
    p("")
    after = sorted((k for k in mm if k.startswith("rss_") and k.endswith("s_after_kib")), key=lambda k: float(k[4:-11]))
    p("| RSS before MiB | peak MiB | rise MiB | " + " | ".join("%ss after MiB" % k[4:-11] for k in after) + " | burst s | logged in | attempts | first-attempt codes | all codes |")
    p("|---:|---:|---:|" + "---:|" * len(after) + "---:|---:|---:|---|---|")
    p("| %s | %s | %s | %s | %.2f | %d | %d | %s | %s |" % (
        mib(mm["rss_before_kib"]), mib(mm["rss_peak_kib"]), mib(mm["rise_peak_kib"]), " | ".join(mib(mm[k]) for k in after),
        mm["duration_s"], mm["logged_in"], mm["attempts"], ", ".join("%s: %d" % kv for kv in sorted(mm["first_attempt_codes"].items())),
        ", ".join("%s: %d" % kv for kv in sorted(mm["all_codes"].items()))))
    p("")
    targets.append(("200-login burst raises RSS <= 100 MiB", mib(mm["rise_peak_kib"]) + " MiB",
                    "met" if mm["rise_peak_kib"] <= 100 * 1024 else "MISSED"))
    if after:
        last = after[-1]
        fell = mm[last] - mm["rss_before_kib"]
        targets.append(("...and falls back afterwards (%ss after)" % last[4:-11], "+%s MiB over before" % mib(fell),
                        "met" if fell <= 0.25 * max(1, mm["rise_peak_kib"]) else "MISSED"))


def stall_table(title, s, during_label):
    p("### %s (fixed rate %g req/s, %d connections, latency from scheduled start)" % (title, s["rate"], s["conns"]))
    p("")
    p("| round | quiet p50 ms | quiet p99 ms | %s p50 ms | %s p99 ms | %s max ms | p99 ratio | requests quiet / during | after p99 ms | non-2xx |" % ((during_label,) * 3))
    p("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for row in s["rounds"]:
        q, d, a = row["quiet"], row["during"], row["after"]
        p("| %d | %s | %s | %s | %s | %s | %s | %d / %d | %s | %d |" % (
            row["round"], f(q["p50_ms"], "%.3f"), f(q["p99_ms"], "%.3f"), f(d["p50_ms"], "%.3f"), f(d["p99_ms"], "%.3f"),
            f(d["max_ms"], "%.1f"), f(row["p99_ratio"]), q["requests"], d["requests"], f(a["p99_ms"], "%.3f"),
            q["non2xx"] + d["non2xx"] + a["non2xx"]))
    p("")


if b and b.get("stall"):
    s = b["stall"]
    stall_table("Stall: logged-in requests during the login burst", s, "burst")
    p("Burst durations under load: " + ", ".join("%.2fs (%d logged in, codes %s)" % (
        r["burst"]["duration_s"], r["burst"]["logged_in"], r["burst"]["all_codes"]) for r in s["rounds"]) + ".")
    p("")
    targets.append(("p99 during login burst <= 1.5x quiet", f(s["median_p99_ratio"]) + "x (median)",
                    "met" if s["median_p99_ratio"] and s["median_p99_ratio"] <= 1.5 else "MISSED"))

sw = load("sweep-stall.json")
if sw:
    stall_table("Stall: logged-in requests while %d expired sessions are swept" % sw["sessions"], sw, "sweep")
    p("Sweep passes (from the expected start to the store seen empty): " + ", ".join("<= %.3fs (fill %.1fs, RSS filled %s MiB -> after sweep %s MiB)" % (
        r["sweep"]["window_s"], r["ready"]["fill_s"], mib(r["ready"]["rss_filled_kib"]), mib(r["sweep"]["rss_after_kib"]))
        for r in sw["rounds"]) + ".")
    p("")
    targets.append(("p99 while 1M sessions are swept <= 1.5x quiet", f(sw["median_p99_ratio"]) + "x (median)",
                    "met" if sw["median_p99_ratio"] and sw["median_p99_ratio"] <= 1.5 else "MISSED"))

# --- criterion ---------------------------------------------------------------------------------
crit = os.path.join(D, "criterion.txt")
if os.path.exists(crit):
    text = open(crit).read()
    rows = re.findall(r"^(\S[^\n]*?)\s*\n?\s+time:\s+\[(\S+ \S+) (\S+ \S+) (\S+ \S+)\]", text, re.M)
    if rows:
        p("### Criterion (pinned to CPU 1)")
        p("")
        p("| bench | low | estimate | high |")
        p("|---|---:|---:|---:|")
        for name, lo, mid, hi in rows:
            p("| %s | %s | %s | %s |" % (name.strip(), lo, mid, hi))
            if name.strip() == "auth path (authenticate + header rewrite)":
                v, unit = mid.split()
                ns = float(v) * {"ps": 1e-3, "ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6}[unit]
                targets.append(("auth work < 1 µs (criterion)", mid, "met" if ns < 1000 else "MISSED"))
        p("")

if targets:
    p("### Targets")
    p("")
    p("| target | measured | verdict |")
    p("|---|---|---|")
    for t in targets:
        p("| %s | %s | %s |" % t)
    p("")

print("\n".join(out))
