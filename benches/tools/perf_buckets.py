#!/usr/bin/env python3
"""Sorts the samples of a `perf record --call-graph dwarf` profile of sessiongate into the
phases of a proxied request, so the cost of each phase (user and kernel) is one number.

    perf script -i perf.data --no-inline -F comm,tid,ip,sym,dso | python3 perf_buckets.py

Each sample goes to the phase of the frame nearest its leaf that matches a rule below;
"kernel" is the share of the phase's samples whose leaf frame is in the kernel.
Standard library only.
"""
import collections
import re
import sys

# (bucket, regex over one frame's symbol). The stack is walked from the leaf up and the first
# frame that matches any rule decides, so a malloc or a syscall is charged to the nearest phase
# that called it. The connection tasks are told apart by the closures that spawned them.
BUCKETS = [
    ("access log line (tracing fmt + write to stderr)", r"tracing_subscriber|tracing_core::|^tracing::"),
    ("session check (App::authenticate: cookie, HMAC, lookup)", r"sessiongate::app::App::authenticate|CookieSigner::verify|SessionStore::touch"),
    ("header rewrite (Upstream::prepare, headers.rs)", r"sessiongate::proxy::Upstream::prepare|sessiongate::headers::"),
    ("upstream connection task (hyper client: write request, read response)", r"sessiongate::proxy::Upstream::connect::\{\{closure\}\}::\{\{closure\}\}"),
    ("proxy.rs: pool, send to the connection task, relay the body", r"sessiongate::proxy::"),
    ("request handler, other (handler.rs, paths.rs)", r"sessiongate::handler::|sessiongate::paths::"),
    ("client connection task (hyper server: read, parse, write response)", r"sessiongate::server::connection::spawn_plain::\{\{closure\}\}|sessiongate::server::https::serve_tls::\{\{closure\}\}"),
    ("accept loop", r"sessiongate::server::serve::"),
    ("runtime: epoll wait and wake-ups", r"tokio::runtime::io::driver|tokio::runtime::time|epoll_wait"),
    ("runtime: task scheduling", r"tokio::runtime::"),
]


def main():
    counts = collections.Counter()
    kernel = collections.Counter()
    total = 0
    stack, leaf_kernel = [], None
    sample_head = re.compile(r"^\S.*")

    def flush():
        nonlocal total
        if not stack:
            return
        total += 1
        name = "other"
        # Our own phases first, nearest the leaf; the runtime only when none is on the stack
        # (tokio's I/O wrappers sit between every phase and its syscalls).
        for rules in (BUCKETS[:-2], BUCKETS[-2:]):
            hit = next((b for frame in stack for b, rx in rules if re.search(rx, frame)), None)
            if hit:
                name = hit
                break
        counts[name] += 1
        if leaf_kernel:
            kernel[name] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            stack, leaf_kernel = [], None
            continue
        if sample_head.match(line):
            continue  # the "comm tid" header line of a sample
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        rest = parts[1]
        sym, _, dso = rest.rpartition(" (")
        if leaf_kernel is None:
            leaf_kernel = "kernel" in dso or dso.startswith("[k")
        stack.append(sym)
    flush()
    print("%-72s %7s %8s" % ("phase (nearest matching frame to the leaf)", "share", "kernel"))
    for name, n in counts.most_common():
        print("%-72s %6.1f%% %7.0f%%" % (name, 100 * n / total, 100 * kernel[name] / n))
    print("%d samples" % total)


if __name__ == "__main__":
    main()
