"""Helpers shared by the load tools: RSS of a process, oha runs whose every request is kept
(oha --db-url, a SQLite file) so latency can be cut into time windows, and percentiles.

Standard library only (sqlite3 is part of it).
"""
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time


def rss_kib(pid):
    """VmRSS of `pid` (and not its children) in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's RSS every `period` seconds on a thread: peak and a timeline."""

    def __init__(self, pid, period=0.01):
        self.pid, self.period = pid, period
        self.samples = []  # (epoch, kib)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), rss_kib(self.pid)))
            except (OSError, RuntimeError):
                return
            time.sleep(self.period)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def peak(self):
        return max((k for _, k in self.samples), default=0)


def pin_prefix(cpu):
    """`taskset -c CPU` when the machine has that CPU and taskset exists, else nothing."""
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) <= int(cpu):
        return []
    return ["taskset", "-c", str(cpu)]


class Oha:
    """One oha run in the background that records every request (start, end, status) in a
    SQLite file, so the latency of any time window can be computed afterwards.

    `rate` > 0 sends at that fixed rate with latency correction (open loop: a stall shows up
    as latency of the requests that should have been sent during it); 0 means closed loop.
    """

    def __init__(self, url, seconds, conns, rate=0, cookie=None, pin=0, oha="oha"):
        self.dir = tempfile.mkdtemp(prefix="oha-win.")
        self.db = os.path.join(self.dir, "requests.db")
        cmd = pin_prefix(pin) + [oha, "-z", f"{seconds}s", "-w", "-c", str(conns), "--no-tui",
                                 "--output-format", "json", "--db-url", self.db]
        if rate:
            cmd += ["-q", str(rate), "--latency-correction"]
        if cookie:
            cmd += ["-H", f"Cookie: {cookie}"]
        cmd.append(url)
        self.out = open(os.path.join(self.dir, "summary.json"), "w+")
        # The epoch oha's own clock starts from, to within its start-up time (a few ms).
        self.started = time.time()
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.DEVNULL)

    def wait(self):
        self.proc.wait()
        self.out.seek(0)
        self.summary = json.load(self.out)
        self.out.close()
        return self.summary

    def window(self, t0, t1):
        """Latency stats of the requests *scheduled* (or, closed loop, started) within
        [t0, t1] (epoch seconds). Latency is measured from the scheduled start when a rate
        is set, so requests delayed behind a stall count their full wait."""
        a, b = t0 - self.started, t1 - self.started
        con = sqlite3.connect(self.db)
        rows = con.execute(
            "SELECT COALESCE(start_latency_correction, start) AS s, end, status FROM oha "
            "WHERE COALESCE(start_latency_correction, start) BETWEEN ? AND ?", (a, b)).fetchall()
        con.close()
        lat = sorted((e - s) * 1e3 for s, e, _ in rows)
        bad = sum(1 for _, _, st in rows if not 200 <= st < 300)
        return {"from_s": a, "to_s": b, "requests": len(lat), "non2xx": bad,
                "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "p999_ms": pct(lat, 99.9),
                "max_ms": lat[-1] if lat else None}

    def totals(self):
        s = self.summary
        codes = s.get("statusCodeDistribution", {})
        return {"rps": s["summary"]["requestsPerSec"],
                "non2xx": sum(v for k, v in codes.items() if not k.startswith("2")),
                "errors": sum(s.get("errorDistribution", {}).values())}

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def pct(sorted_values, p):
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def wait_port(port, host="127.0.0.1", timeout=10):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")
