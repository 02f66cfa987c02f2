#!/usr/bin/env python3
"""A burst of concurrent logins against a running sessiongate: memory, status codes, and the
latency of logged-in traffic while the passwords are hashed.

    login_burst.py --port P --pid PID --users FILE [--n 200] [--json OUT]
                   [--stall-rounds R --rate Q --conns N]

FILE has one `name password` per line (the users configured in the proxy). Each login comes
from its own source address in 127.0.0.0/8 (the client socket is bound before connecting), so
per-address limits see distinct clients. All N connections are opened first and the N POSTs
are released together. The CSRF rule is met the way a browser meets it: an Origin header equal
to the Host.

Memory: RSS before, peak during (sampled every 10 ms), and 5 s and 30 s after the burst.
Logins answered 503/429 (the proxy bounds concurrent hashing) are retried after Retry-After,
as a person would press the button again, until every user is logged in; the first-attempt
codes and all codes are both reported.

Stall (--stall-rounds): oha sends logged-in requests (a session from the first burst) at a
fixed rate for the whole round;
the burst starts --quiet-s into it. Latency is cut from oha's per-request record into the
quiet window before the burst and the window during it (see common.Oha.window).
Standard library only.
"""
import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from common import Oha, RssSampler, rss_kib  # noqa: E402


def source_address(i):
    """A distinct loopback address per client, spread over 127.0.0.0/8."""
    return f"127.{(i * 37) % 254 + 1}.{(i * 11) % 254 + 1}.{i % 254 + 1}"


async def login(port, i, name, password, go, prefix):
    body = urllib.parse.urlencode({"username": name, "password": password, "rd": "/"})
    req = (f"POST {prefix}/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           f"Origin: http://127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source_address(i), 0))
    try:
        if go is not None:
            await go.wait()
        writer.write(req)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
        await reader.read()  # Connection: close
        return status, headers
    finally:
        writer.close()


async def burst(port, users, prefix, retry_deadline_s=120):
    """Fires every login at once; retries 503/429 after Retry-After. Returns a summary."""
    first, all_codes, attempts, cookies = {}, {}, 0, []
    t0 = time.time()
    go = asyncio.Event()

    async def one(i, name, password):
        nonlocal attempts
        gate = go
        while True:
            attempts += 1
            try:
                status, headers = await login(port, i, name, password, gate, prefix)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                status, headers = type(e).__name__, {}
            if gate is not None:
                first[str(status)] = first.get(str(status), 0) + 1
            gate = None
            all_codes[str(status)] = all_codes.get(str(status), 0) + 1
            if status == 303 and "set-cookie" in headers:
                cookies.append(headers["set-cookie"].split(";", 1)[0])
            if status in (503, 429) and time.time() - t0 < retry_deadline_s:
                await asyncio.sleep(float(headers.get("retry-after", "1")))
                continue
            return status == 303, time.time()

    tasks = [asyncio.create_task(one(i, n, p)) for i, (n, p) in enumerate(users)]
    await asyncio.sleep(0.5)  # every connection is open and waiting at the gate by now
    start = time.time()
    go.set()
    results = await asyncio.gather(*tasks)
    end = max(t for _, t in results)
    return {"start_epoch": start, "end_epoch": end, "duration_s": end - start,
            "logged_in": sum(ok for ok, _ in results), "attempts": attempts,
            "first_attempt_codes": first, "all_codes": all_codes, "cookie": cookies[0] if cookies else None}


def memory(a, users):
    before = statistics.median(rss_kib(a.pid) for _ in range(5))
    with RssSampler(a.pid) as s:
        b = asyncio.run(burst(a.port, users, a.prefix))
        peak_during = s.peak()
        # Memory that stays after the burst: the sampler keeps running through the waits.
        marks = {}
        for after in a.after:
            time.sleep(max(0.0, b["end_epoch"] + after - time.time()))
            marks[f"rss_{after:g}s_after_kib"] = rss_kib(a.pid)
    out = {"users": len(users), "rss_before_kib": before, "rss_peak_kib": s.peak(),
           "rss_peak_during_burst_kib": peak_during, **marks, **b}
    out["rise_peak_kib"] = out["rss_peak_kib"] - before
    return out


def stall(a, users, burst_s):
    url = f"http://127.0.0.1:{a.port}/"
    rounds = []
    for r in range(a.stall_rounds):
        # Long enough for the burst even if it runs several times slower under load.
        seconds = int(a.quiet_s + max(5.0, 4 * burst_s) + a.tail_s)
        oha = Oha(url, seconds, a.conns, rate=a.rate, cookie=a.cookie, oha=a.oha)
        time.sleep(a.quiet_s)
        b = asyncio.run(burst(a.port, users, a.prefix))
        b.pop("cookie")
        oha.wait()
        row = {"round": r + 1, "burst": b, "oha": oha.totals(),
               "quiet": oha.window(oha.started + 1.0, b["start_epoch"] - 0.2),
               "during": oha.window(b["start_epoch"], b["end_epoch"]),
               "after": oha.window(b["end_epoch"] + 1.0, oha.started + seconds - 0.5)}
        q, d = row["quiet"]["p99_ms"], row["during"]["p99_ms"]
        row["p99_ratio"] = d / q if q and d else None
        rounds.append(row)
        print(f"  login-burst stall round {r + 1}: quiet p99 {q:.3f} ms, during burst p99 {d:.3f} ms "
              f"({row['p99_ratio']:.2f}x), burst {b['duration_s']:.2f}s, {b['logged_in']} logged in",
              file=sys.stderr)
        oha.cleanup()
        time.sleep(1.0)
    ratios = [r["p99_ratio"] for r in rounds if r["p99_ratio"]]
    return {"rate": a.rate, "conns": a.conns, "rounds": rounds,
            "median_p99_ratio": statistics.median(ratios) if ratios else None}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--users", required=True, help="file of `name password` lines")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--prefix", default="/.sessiongate")
    p.add_argument("--after", type=float, nargs="*", default=[5.0, 30.0])
    p.add_argument("--json")
    p.add_argument("--stall-rounds", type=int, default=0)
    p.add_argument("--rate", type=float, default=4000)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--quiet-s", type=float, default=4.0)
    p.add_argument("--tail-s", type=float, default=2.0)
    p.add_argument("--oha", default="oha")
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(a.users) as f:
        users = [tuple(l.split()[:2]) for l in f if l.strip()][: a.n]
    if len(users) < a.n:
        sys.exit(f"{a.users} has {len(users)} users, {a.n} wanted")
    out = {"memory": memory(a, users)}
    m = out["memory"]
    cookie = m.pop("cookie")
    print(f"  login burst: {m['logged_in']}/{len(users)} logged in in {m['duration_s']:.2f}s, first attempt "
          f"{m['first_attempt_codes']}, RSS {m['rss_before_kib'] / 1024:.1f} -> peak {m['rss_peak_kib'] / 1024:.1f} MiB",
          file=sys.stderr)
    if a.stall_rounds:
        # The stall load is logged in with a session from the memory burst (logging in
        # beforehand would hash a password before the "before" RSS reading).
        a.cookie = cookie
        if not a.cookie:
            sys.exit("no login succeeded in the burst: no session for the stall load")
        out["stall"] = stall(a, users, m["duration_s"])
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
