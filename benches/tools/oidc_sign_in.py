#!/usr/bin/env python3
"""Complete OpenID Connect sign-ins through a running sessiongate and the tests' provider
(tests/oidc/provider.mjs), one new person after another (or C at a time), each step timed.

    oidc_sign_in.py --gate URL --issuer URL [--provider-id ID] [--prefix /.sessiongate]
                    [--n 200] [--rounds 1] [--warmup 20] [--concurrency 1] [--json OUT]
                    [--gate-pid PID] [--provider-pid PID] [--meta JSON]

benches/oidc_sign_in.sh starts the three programs and runs this; see there.

One sign-in is what a browser does, every request made by hand so each is timed:

  start     GET {gate}{prefix}/oidc/{id}/start?rd=/          -> 303 to the provider
  provider  GET its authorization URL -> 303 /interaction/UID -> 200 the login form ->
            POST login=NAME -> 303 /auth/UID -> 303 back to the callback
  callback  GET {gate}{prefix}/oidc/{id}/callback?code&state&iss -> 303 / with the session
            cookie (sessiongate redeems the code at the provider's token endpoint and checks
            the ID token on the way: that request is inside this step)
  app       GET {gate}/ -> 200 from the upstream, which echoes the X-Forwarded-User it got

Every person has a cookie jar and connections of their own (keep-alive per host, as a browser
keeps them, closed after the sign-in) and an account of their own at the provider (added
through its POST /_test/accounts before the run). "whole" is the wall time from the first byte
of `start` to the end of `app`, so it includes this client's own work between the steps.
With --gate-pid/--provider-pid, the CPU time each process used during the measured sign-ins
(/proc/PID/stat, all threads) is divided by the sign-ins, and so is this client's own.

After each round, the provider's token endpoint is timed alone: the same code flow as a client
of its own (`probe`), one at a time, its POST /token made and timed here. That is the share of
sessiongate's callback step spent at the provider when nothing else waits for node; the rest
of the callback is sessiongate's (and, with --concurrency > 1, queueing at the provider).

The warm-up sign-ins are not counted: the first ones pay for node's JIT and sessiongate's
first JWKS fetch. With --rounds R, R rounds of N run one after another against the same
programs; percentiles pool every round's sign-ins, the rate and CPU figures are the rounds'
medians, and each round is kept in the JSON.
Standard library only.
"""
import argparse
import base64
import email.utils
import hashlib
import http.client
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(__file__))
from common import pct  # noqa: E402

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) oidc_sign_in.py"
FORM_ACTION = re.compile(r'<form method="post" action="(/interaction/[^"]+/login)"')
MAX_PROVIDER_REQUESTS = 10


class Failed(Exception):
    pass


def origin_of(url):
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.hostname}:{u.port or 80}"


class Person:
    """One browser: cookies by (origin, path, name) and a keep-alive connection per origin."""

    def __init__(self):
        self.cookies = {}
        self.conns = {}

    def cookie_header(self, url):
        u = urllib.parse.urlsplit(url)
        here, path = origin_of(url), u.path or "/"

        def matches(scope):
            return path == scope or (path.startswith(scope) and (scope.endswith("/") or path[len(scope)] == "/"))

        pairs = [f"{n}={v}" for (o, p, n), v in self.cookies.items() if o == here and matches(p)]
        return "; ".join(pairs) or None

    def keep(self, url, set_cookies):
        here = origin_of(url)
        for line in set_cookies:
            first, *attrs = line.split(";")
            name, _, value = first.partition("=")
            name, value = name.strip(), value.strip()
            # RFC 6265 5.1.4: without a Path, the request's path up to its last '/'.
            path = urllib.parse.urlsplit(url).path.rsplit("/", 1)[0] or "/"
            gone = not value
            for a in attrs:
                k, _, v = a.strip().partition("=")
                k = k.lower()
                if k == "path" and v.startswith("/"):
                    path = v
                elif k == "max-age" and v.strip().lstrip("-").isdigit() and int(v) <= 0:
                    gone = True
                elif k == "expires":
                    try:
                        gone = gone or email.utils.parsedate_to_datetime(v) <= datetime.now(timezone.utc)
                    except (TypeError, ValueError):
                        pass
            if gone:
                self.cookies.pop((here, path, name), None)
            else:
                self.cookies[(here, path, name)] = value

    def request(self, method, url, body=None, headers=None):
        """One request, no redirect followed: (status, headers, body, milliseconds)."""
        u = urllib.parse.urlsplit(url)
        here = origin_of(url)
        conn = self.conns.get(here)
        if conn is None:
            conn = self.conns[here] = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
        h = {"Accept": "text/html", "User-Agent": USER_AGENT}
        h.update(headers or {})
        cookie = self.cookie_header(url)
        if cookie:
            h["Cookie"] = cookie
        target = u.path + (f"?{u.query}" if u.query else "")
        t0 = time.perf_counter()
        conn.request(method, target, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        ms = (time.perf_counter() - t0) * 1e3
        self.keep(url, r.msg.get_all("Set-Cookie") or [])
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data, ms

    def close(self):
        for c in self.conns.values():
            c.close()


def provider_label(method, url):
    path = urllib.parse.urlsplit(url).path
    if method == "POST":
        return "login_submit"
    if path == "/auth":
        return "authorize"
    if path.startswith("/interaction/"):
        return "login_page"
    if path.startswith("/auth/"):
        return "resume"
    return path


def sign_in(args, login):
    """One person's whole sign-in; the milliseconds of each step, or Failed."""
    p = Person()
    gate = args.gate.rstrip("/")
    base = f"{gate}{args.prefix}/oidc/{args.provider_id}"
    steps = {}
    try:
        t0 = time.perf_counter()
        status, h, _, steps["start"] = p.request("GET", f"{base}/start?rd=%2F")
        if status != 303 or not h.get("location", "").startswith(args.issuer):
            raise Failed(f"start: {status}, location {h.get('location')!r}")
        parts, url = at_provider(p, h["location"], login)
        if origin_of(url) != origin_of(gate):
            raise Failed(f"the provider sent the browser to {origin_of(url)}")
        steps["provider"] = sum(parts.values())
        if not urllib.parse.urlsplit(url).path.endswith("/callback"):
            raise Failed(f"the provider sent the browser to {urllib.parse.urlsplit(url).path}")
        status, h, page, steps["callback"] = p.request("GET", url)
        if status != 303:
            raise Failed(f"callback: {status}: {page[:300]!r}")
        status, h, page, steps["app"] = p.request("GET", urllib.parse.urljoin(url, h["location"]))
        if status != 200 or not page.startswith(b"user=") or page.strip() == b"user=":
            raise Failed(f"app: {status}: {page[:200]!r} (no X-Forwarded-User)")
        steps["whole"] = (time.perf_counter() - t0) * 1e3
        steps["signed_in_as"] = page.decode().strip()[len("user="):]
        steps["provider_parts"] = parts
        return steps
    finally:
        p.close()


def at_provider(p, url, login):
    """Signs `login` in at the provider from its authorization `url`: the milliseconds of each
    request by label, and the URL it sends the browser back to (off the provider)."""
    parts = {}
    method, body = "GET", None
    for _ in range(MAX_PROVIDER_REQUESTS):
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else None
        status, h, page, ms = p.request(method, url, body, headers)
        label = provider_label(method, url)
        parts[label] = parts.get(label, 0.0) + ms
        if status in (302, 303):
            there = origin_of(url)
            url, method, body = urllib.parse.urljoin(url, h["location"]), "GET", None
            if origin_of(url) != there:
                return parts, url
        elif status == 200 and method == "GET" and (m := FORM_ACTION.search(page.decode("utf-8", "replace"))):
            url, method = urllib.parse.urljoin(url, m.group(1)), "POST"
            body = urllib.parse.urlencode({"login": login})
        else:
            raise Failed(f"provider: {method} {urllib.parse.urlsplit(url).path}: {status}")
    raise Failed("the provider never sent the browser back")


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token_probe(args, login):
    """The provider's token endpoint alone, for the split of sessiongate's callback: the same
    code flow as a client of its own (`probe`, registered by benches/oidc_sign_in.sh), whose
    token request is made here and timed (a connection of its own, client_secret_basic,
    PKCE), as sessiongate makes it inside its callback. Milliseconds of that request."""
    p = Person()
    try:
        verifier = b64url(secrets.token_bytes(32))
        query = urllib.parse.urlencode({
            "response_type": "code", "client_id": args.probe_client, "redirect_uri": args.probe_redirect,
            "scope": "openid email profile groups", "state": b64url(secrets.token_bytes(16)),
            "nonce": b64url(secrets.token_bytes(16)), "code_challenge_method": "S256",
            "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest())})
        _, back = at_provider(p, f"{args.issuer}/auth?{query}", login)
        code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query)).get("code")
        if not code:
            raise Failed(f"probe: no code in the redirect ({urllib.parse.urlsplit(back).query[:100]})")
        basic = base64.b64encode(f"{args.probe_client}:{args.probe_secret}".encode()).decode()
        body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code,
                                       "redirect_uri": args.probe_redirect, "code_verifier": verifier})
        token = Person()
        try:
            status, _, answer, ms = token.request("POST", f"{args.issuer}/token", body, {
                "Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Basic {basic}",
                "Accept": "application/json"})
        finally:
            token.close()
        if status != 200 or "id_token" not in json.loads(answer):
            raise Failed(f"probe: token request {status}")
        return ms
    finally:
        p.close()


def cpu_seconds(pid):
    """User + system CPU of `pid`, all its threads, from /proc/PID/stat."""
    if not pid:
        return None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu_seconds():
    t = os.times()
    return t.user + t.system


def run(args, logins, one=sign_in):
    """`one(args, login)` for every login, `args.concurrency` at a time: (results, failures,
    seconds)."""
    results, failures = [], []
    lock = threading.Lock()
    todo = iter(logins)

    def worker():
        while True:
            with lock:
                login = next(todo, None)
            if login is None:
                return
            try:
                r = one(args, login)
                with lock:
                    results.append(r)
            except (Failed, OSError, http.client.HTTPException) as e:
                with lock:
                    failures.append(f"{login}: {e}")

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, failures, time.perf_counter() - t0


def post_json(url, value):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request("POST", u.path, body=json.dumps(value), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    c.close()
    if r.status != 204:
        sys.exit(f"POST {u.path} to the provider: {r.status}")


def get_json(url):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request("GET", u.path)
    r = c.getresponse()
    data = r.read()
    c.close()
    return json.loads(data)


def summary(values):
    v = sorted(values)
    return {"p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99), "max": v[-1] if v else None,
            "mean": sum(v) / len(v) if v else None}


STEPS = ["start", "provider", "callback", "app", "whole"]


def measure(args, logins):
    """One measured round: every login signed in; its figures."""
    stats0 = get_json(f"{args.issuer}/_test/stats")
    cpu0 = {k: cpu_seconds(pid) for k, pid in (("sessiongate", args.gate_pid), ("provider", args.provider_pid))}
    cpu0["client"] = client_cpu_seconds()
    began = time.time()
    results, failures, seconds = run(args, logins)
    ended = time.time()
    cpu1 = {k: cpu_seconds(pid) for k, pid in (("sessiongate", args.gate_pid), ("provider", args.provider_pid))}
    cpu1["client"] = client_cpu_seconds()
    stats1 = get_json(f"{args.issuer}/_test/stats")
    if failures:
        sys.exit(f"{len(failures)} of {len(logins)} sign-ins failed:\n  " + "\n  ".join(failures[:5]))
    wrong = [r["signed_in_as"] for r in results if not r["signed_in_as"].startswith(f"{args.provider_id}:person")]
    if wrong:
        sys.exit(f"the app saw unexpected users: {wrong[:5]}")
    labels = sorted({k for r in results for k in r["provider_parts"]})
    # The token endpoint alone, after the round and one at a time whatever --concurrency: what
    # the provider's part of a callback costs when nothing waits for node.
    probes, failures, _ = run(argparse.Namespace(**{**vars(args), "concurrency": 1}), logins, token_probe)
    if failures:
        sys.exit(f"{len(failures)} token probes failed:\n  " + "\n  ".join(failures[:5]))
    return {
        "window": [began, ended],
        "sign_ins_per_second": len(logins) / seconds,
        "seconds": seconds,
        "ms": {s: summary([r[s] for r in results]) for s in STEPS},
        "provider_requests_ms": {k: summary([r["provider_parts"].get(k, 0.0) for r in results]) for k in labels},
        "cpu_ms_per_sign_in": {k: (None if cpu0[k] is None else (cpu1[k] - cpu0[k]) * 1e3 / len(logins)) for k in cpu0},
        "provider_stats_during": {k: stats1[k] - stats0.get(k, 0) for k in stats1},
        "distinct_users_seen": len({r["signed_in_as"] for r in results}),
        "samples_ms": {s: [round(r[s], 3) for r in results] for s in STEPS},
        "provider_samples_ms": {k: [round(r["provider_parts"].get(k, 0.0), 3) for r in results] for k in labels},
        "token_endpoint_ms": summary(probes),
        "token_endpoint_samples_ms": [round(ms, 3) for ms in probes],
    }


LOG_LINE = re.compile(r'^(\S+)  INFO method=GET path="([^"]*)" status=(\d+) .*? user="([^"]*)" .*? micros=(\d+)')


def gate_log(path, rounds, prefix, provider_id, n):
    """sessiongate's own view from its access log: for each round (epoch window), the micros
    (request head to response head) of its start, callback and app requests. Waits for the
    log flusher to write the last round's lines out."""
    own = f"{prefix}/oidc/{provider_id}"
    deadline = time.time() + 30
    while True:
        found = [{"start": [], "callback": [], "app": []} for _ in rounds]
        with open(path, errors="replace") as f:
            for line in f:
                m = LOG_LINE.match(line)
                if not m:
                    continue
                at = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
                step = {f"{own}/start": "start", f"{own}/callback": "callback", "/": "app"}.get(m.group(2))
                # A round's lines are those from its start to the next round's (the token
                # probes between rounds send nothing to sessiongate).
                for i, into in enumerate(found):
                    if step and rounds[i][0] <= at and (i + 1 == len(rounds) or at < rounds[i + 1][0]):
                        into[step].append(int(m.group(5)) / 1e3)
        if all(len(v) >= n for r in found for v in r.values()) or time.time() > deadline:
            return found
        time.sleep(0.1)


def median(values):
    v = sorted(values)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gate", required=True, help="sessiongate's origin, http://127.0.0.1:PORT")
    ap.add_argument("--issuer", required=True, help="the provider's issuer, http://127.0.0.1:PORT")
    ap.add_argument("--provider-id", default="local")
    ap.add_argument("--prefix", default="/.sessiongate", help="sessiongate's auth.prefix")
    ap.add_argument("--n", type=int, default=200, help="sign-ins per round")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--gate-pid", type=int)
    ap.add_argument("--provider-pid", type=int)
    ap.add_argument("--probe-client", default="probe", help="a second client registered at the provider")
    ap.add_argument("--probe-secret", default="bench-probe-secret-0123456789")
    ap.add_argument("--probe-redirect", default="http://127.0.0.1:9/probe-callback",
                    help="the probe client's redirect URI (never fetched)")
    ap.add_argument("--gate-log", help="sessiongate's log (text format, RUST_LOG=info): its own timings")
    ap.add_argument("--meta", default="{}", help="a JSON object copied into the output's `run`")
    args = ap.parse_args()
    args.issuer = args.issuer.rstrip("/")

    # A provider account per person, warm-up ones apart, so no person signs in twice.
    stamp = f"{os.getpid()}-{int(time.time())}"
    warm = [f"warm{i:04d}-{stamp}" for i in range(args.warmup)]
    rounds = [[f"person{r}-{i:04d}-{stamp}" for i in range(args.n)] for r in range(args.rounds)]
    post_json(f"{args.issuer}/_test/accounts", {
        login: {"email": f"{login}@example.com", "email_verified": True, "preferred_username": login,
                "name": login, "groups": ["staff"]} for login in warm + sum(rounds, [])})

    _, failures, _ = run(args, warm)
    if failures:
        sys.exit("warm-up sign-ins failed:\n  " + "\n  ".join(failures[:5]))
    measured = []
    for i, logins in enumerate(rounds):
        m = measure(args, logins)
        measured.append(m)
        print(f"round {i + 1}/{args.rounds}: {m['sign_ins_per_second']:.1f} sign-ins/s, whole sign-in p50 "
              f"{m['ms']['whole']['p50']:.2f} ms", file=sys.stderr)

    # Every round's sign-ins pooled for the percentiles; rates and CPU as the rounds' medians.
    pooled = {s: summary(sum((m["samples_ms"][s] for m in measured), [])) for s in STEPS}
    labels = sorted({k for m in measured for k in m["provider_samples_ms"]})
    pooled_parts = {k: summary(sum((m["provider_samples_ms"].get(k, []) for m in measured), [])) for k in labels}
    cpu = {k: (None if measured[0]["cpu_ms_per_sign_in"][k] is None
               else median([m["cpu_ms_per_sign_in"][k] for m in measured])) for k in measured[0]["cpu_ms_per_sign_in"]}
    own = {}
    if args.gate_log:
        found = gate_log(args.gate_log, [m["window"] for m in measured], args.prefix, args.provider_id, args.n)
        for m, f in zip(measured, found):
            counts = {k: len(v) for k, v in f.items()}
            if any(c != args.n for c in counts.values()):
                sys.exit(f"sessiongate's log has {counts} lines for a round of {args.n} sign-ins")
            m["sessiongate_log_ms"] = {k: summary(v) for k, v in f.items()}
            m["sessiongate_log_samples_ms"] = f
        own = {k: summary(sum((f[k] for f in found), [])) for k in ("start", "callback", "app")}
    rate = median([m["sign_ins_per_second"] for m in measured])
    token = summary(sum((m["token_endpoint_samples_ms"] for m in measured), []))
    out = {
        "run": {"n": args.n, "rounds": args.rounds, "warmup": args.warmup, "concurrency": args.concurrency,
                **json.loads(args.meta)},
        "all": {"sign_ins": args.n * args.rounds, "sign_ins_per_second_median": rate, "ms": pooled,
                "provider_requests_ms": pooled_parts, "token_endpoint_ms": token,
                "sessiongate_log_ms": own,
                "cpu_ms_per_sign_in_median": cpu},
        "rounds": measured,
    }
    if args.json:
        # Indented, but each list of samples on one line.
        text = re.sub(r"\[([-0-9.e,\s]+)\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                      json.dumps(out, indent=1))
        with open(args.json, "w") as f:
            f.write(text + "\n")

    print(f"{args.rounds} x {args.n} sign-ins, {args.concurrency} at a time: {rate:.1f} sign-ins/s "
          f"(median of rounds: " + ", ".join(f"{m['sign_ins_per_second']:.1f}" for m in measured)
          + f"; {args.warmup} warm-up sign-ins first, not counted)")
    print(f"{'step (ms, all rounds)':<30} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
    names = {"start": "sessiongate: start", "provider": "provider (all its requests)",
             "callback": "sessiongate: callback", "app": "first request to the app", "whole": "whole sign-in"}
    for s in STEPS:
        m = pooled[s]
        print(f"{names[s]:<30} {m['p50']:8.2f} {m['p95']:8.2f} {m['p99']:8.2f} {m['max']:8.2f}")
    for k in labels:
        m = pooled_parts[k]
        print(f"{'  provider: ' + k:<30} {m['p50']:8.2f} {m['p95']:8.2f} {m['p99']:8.2f} {m['max']:8.2f}")
    print(f"{'provider token endpoint alone':<30} {token['p50']:8.2f} {token['p95']:8.2f} {token['p99']:8.2f} {token['max']:8.2f}"
          "  (the provider's share of a callback: timed\n"
          f"{'':<30} by a client of its own after each round, one at a time)")
    for k, m in own.items():
        print(f"{'  sessiongate log: ' + k:<30} {m['p50']:8.2f} {m['p95']:8.2f} {m['p99']:8.2f} {m['max']:8.2f}")
    print("CPU per sign-in (median of rounds): " + ", ".join(f"{k} {v:.2f} ms" for k, v in cpu.items() if v is not None))
    print(f"provider requests counted in the last round: {measured[-1]['provider_stats_during']}")


if __name__ == "__main__":
    main()
