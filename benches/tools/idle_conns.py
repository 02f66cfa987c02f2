#!/usr/bin/env python3
"""Memory cost of idle keep-alive client connections on a running proxy.

    idle_conns.py --port P --pid PID [--cookie C] [--n 10000] [--json OUT]

Opens N connections to 127.0.0.1:P, sends one request on each (logged in when --cookie is
given), reads the whole response, and then keeps every connection open and idle. Reports the
proxy's RSS (/proc/PID/status VmRSS) before and after, and how many connections were still
open at the end. Standard library only.
"""
import argparse
import asyncio
import json
import resource
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import rss_kib  # noqa: E402


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    if length:
        await reader.readexactly(length)
    return status


async def open_one(i, port, cookie, sem, conns, codes):
    # Spread the client side over a few source addresses so ephemeral ports never run short.
    src = f"127.0.{1 + (i // 20000)}.{1 + (i % 200)}"
    async with sem:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
            req = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: idle-conns\r\n"
            if cookie:
                req += f"Cookie: {cookie}\r\n"
            writer.write((req + "\r\n").encode())
            status = await asyncio.wait_for(read_response(reader), 30)
            codes[status] = codes.get(status, 0) + 1
            conns.append((reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            key = type(e).__name__
            codes[key] = codes.get(key, 0) + 1


async def still_open(reader):
    """True if the server has not closed the connection (nothing to read, no EOF)."""
    try:
        data = await asyncio.wait_for(reader.read(1), 0.05)
        return bool(data)  # b"" is EOF
    except asyncio.TimeoutError:
        return True
    except OSError:
        return False


async def main(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < a.n + 100:
        sys.exit(f"file descriptor limit {hard} is too low for {a.n} connections (ulimit -n)")
    before = rss_kib(a.pid)
    conns, codes = [], {}
    sem = asyncio.Semaphore(a.concurrency)
    t0 = time.time()
    await asyncio.gather(*(open_one(i, a.port, a.cookie, sem, conns, codes) for i in range(a.n)))
    opened_s = time.time() - t0
    await asyncio.sleep(a.hold_s)  # let the proxy settle (pool returns, timers) before reading RSS
    after = rss_kib(a.pid)
    alive = sum(await asyncio.gather(*(still_open(r) for r, _ in conns)))
    after_check = rss_kib(a.pid)
    for _, w in conns:
        w.close()
    out = {
        "connections": a.n, "responses": {str(k): v for k, v in sorted(codes.items(), key=str)},
        "open_at_end": alive, "open_s": opened_s, "rss_before_kib": before,
        "rss_idle_kib": after, "rss_idle_after_check_kib": after_check,
        "delta_kib": after - before, "kib_per_conn": (after - before) / max(1, len(conns)),
    }
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="process whose RSS is measured")
    p.add_argument("--cookie")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=200, help="connections being opened at once")
    p.add_argument("--hold-s", type=float, default=3.0)
    p.add_argument("--json")
    asyncio.run(main(p.parse_args()))
