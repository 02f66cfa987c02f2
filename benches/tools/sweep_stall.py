#!/usr/bin/env python3
"""Latency of logged-in requests while a million sessions expire and are swept.

    sweep_stall.py --bench-bin PATH --upstream URL [--sessions 1000000] [--rounds 3] [--json OUT]

Each round starts `PATH --mode serve` (benches/sessions_rss.rs: the real proxy in-process, one
worker, its store filled with --sessions sessions that expire before the first sweep), pinned
with --pin-proxy. oha (pinned with --pin-load) sends logged-in requests at a fixed rate from
the moment the store is filled until after the sweep; the proxy reports when the sweeper's pass starts and ends,
and the latency record is cut into: quiet (sessions present, no sweep), during the sweep, and
after (store empty). Standard library only.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
import os

sys.path.insert(0, os.path.dirname(__file__))
from common import Oha, pin_prefix  # noqa: E402


def one_round(a, r):
    cmd = pin_prefix(a.pin_proxy) + [a.bench_bin, "--mode", "serve", "--sessions", str(a.sessions),
                                     "--upstream", a.upstream, "--idle-timeout-s", str(a.idle_timeout_s),
                                     "--sweep-interval-s", str(a.sweep_interval_s),
                                     "--exit-after-s", str(int(a.sweep_interval_s + a.after_s + 5))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        if ready.get("event") != "ready":
            raise RuntimeError(f"unexpected first line from the bench binary: {ready}")
        url = f"http://127.0.0.1:{ready['port']}/"
        # The load starts at once and keeps the one live session alive (its idle timeout is
        # short too). The quiet window begins once every filled session has expired, so it
        # sees the same store the sweep will, and ends just before the sweep is due.
        quiet_from = ready["started_epoch"] + ready["fill_s"] + ready["idle_timeout_s"] + 0.5
        if ready["expected_sweep_epoch"] - quiet_from < 2.0:
            raise RuntimeError("quiet window shorter than 2 s; raise --sweep-interval-s")
        seconds = int(ready["expected_sweep_epoch"] - time.time() + a.after_s + 2)
        oha = Oha(url, seconds, a.conns, rate=a.rate, cookie=ready["cookie"], pin=a.pin_load, oha=a.oha)
        events = {}
        for line in proc.stdout:
            ev = json.loads(line)
            events[ev["event"]] = ev
            if ev["event"] in ("sweep_end", "exit"):
                break
        oha.wait()
        if "sweep_start" not in events or "sweep_end" not in events:
            raise RuntimeError(f"no sweep seen during the round: {events}")
        # The sweeper's first pass starts `sweep_interval` after App::new (its thread sleeps
        # that long first); the poller only notices once len() gets past the shards being
        # swept, so the window starts at the expected time (or the first sighting, if earlier).
        s = min(ready["expected_sweep_epoch"], events["sweep_start"]["epoch"])
        e = events["sweep_end"]["epoch"]
        row = {"round": r + 1, "ready": {k: v for k, v in ready.items() if k != "cookie"}, "sweep": dict(events["sweep_end"], window_s=e - s),
               "sweep_started_epoch": s, "oha": oha.totals(),
               "quiet": oha.window(max(oha.started + 1.0, quiet_from), s - 0.3),
               "during": oha.window(s - 0.02, e),
               "after": oha.window(e + 0.5, oha.started + seconds - 0.5)}
        q, d = row["quiet"]["p99_ms"], row["during"]["p99_ms"]
        row["p99_ratio"] = d / q if q and d else None
        fmt = lambda v, spec=".3f": "-" if v is None else format(v, spec)
        print(f"  sweep stall round {r + 1}: {ready['sessions'] - 1} sessions swept in <= {e - s:.3f}s; "
              f"quiet p99 {fmt(q)} ms ({row['quiet']['requests']} requests), during sweep p99 {fmt(d)} ms "
              f"({row['during']['requests']} requests), ratio {fmt(row['p99_ratio'], '.2f')}", file=sys.stderr)
        oha.cleanup()
        return row
    finally:
        proc.terminate()
        proc.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench-bin", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--sessions", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate", type=float, default=4000)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--idle-timeout-s", type=int, default=8)
    p.add_argument("--sweep-interval-s", type=int, default=25)
    p.add_argument("--after-s", type=float, default=4.0)
    p.add_argument("--pin-proxy", default="1")
    p.add_argument("--pin-load", default="0")
    p.add_argument("--oha", default="oha")
    p.add_argument("--json")
    a = p.parse_args()
    rounds = [one_round(a, r) for r in range(a.rounds)]
    ratios = [r["p99_ratio"] for r in rounds if r["p99_ratio"]]
    out = {"sessions": a.sessions, "rate": a.rate, "conns": a.conns, "rounds": rounds,
           "median_p99_ratio": statistics.median(ratios) if ratios else None}
    print(json.dumps({"median_p99_ratio": out["median_p99_ratio"]}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
