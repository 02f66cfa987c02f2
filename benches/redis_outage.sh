#!/usr/bin/env bash
# Redis outage under load, on loopback: two sessiongate replicas (release build, store = "redis",
# the same Redis and the same secret), a logged-in oha load through each at once, and Redis stopped
# and started twice in the middle of it.
#
#   benches/redis_outage.sh [--duration S] [--conns N] [--qps Q] [--lead S] [--grace S]
#                           [--bin PATH] [--out DIR] [--install]
#
#   --duration S  length of each oha run (default 30; at least --lead + 16 + 5)
#   --conns N     connections per oha (default 32)
#   --qps Q       rate limit per oha (default 0: as fast as it goes)
#   --lead S      seconds of load before Redis is first stopped (default 5)
#   --grace S     how long after Redis answers PING again a replica may still say 503 (default 2)
#   --bin PATH    the sessiongate binary (default: $CARGO_TARGET_DIR/release/sessiongate, else
#                 ./target/release/sessiongate)
#   --out DIR     where the results go (default: a new /tmp/redis-outage.XXXXXX, kept)
#   --install     apt-get install redis-server, nginx, curl and cargo install oha when missing
#
# From the issue "Redis session store": "A load test (oha) through two replicas with Redis stopped
# and started twice in the middle: no request forwarded without a session, no crash, every request
# answered (2xx, or 503 while Redis is away)."
#
# The timeline, from the start of the load: --lead s of load; Redis stopped (SIGTERM: it writes
# its RDB, --save 3600 1, and exits); 3 s away; started again (it loads the RDB); 5 s up; stopped;
# 3 s away; started again; the rest of --duration with Redis up.
#
# What it checks (each line PASS or FAIL; exits 1 on any FAIL):
#   answers       every response of both oha runs is 2xx or 503, and oha saw no connection error,
#                 timeout or aborted request (-w: requests in flight at the deadline are waited for)
#   503 windows   a 503 only while Redis was away: from the SIGTERM (less 0.25 s for the offset
#                 between oha's clock and ours) until --grace s after Redis
#                 answered PING again (by the response's end time, from oha's per-request sqlite
#                 log, --db-url); each replica answered 503 in each outage (the outage was seen)
#                 and 2xx again after each restart
#   alive         both sessiongate processes are the ones started, still running
#   identity      the upstream saw 0 requests without `X-Forwarded-User: alice` (an nginx that logs
#                 only such requests; the counter is proved first with one request straight to it)
#   forwarded     the upstream served exactly as many requests during the load as oha got 2xx
#                 (nginx stub_status): no request was forwarded whose answer was then lost
#   sessions      Redis kept its keys across each restart (DBSIZE before the stop = after the
#                 start; its log says the RDB was saved and loaded each time); after the load the
#                 cookie from before the outages still gets 200 on both replicas, readyz is 200
# Also reported, per replica and outage: how many 503s and how long each took, when the last 2xx
# came after the SIGTERM and the first after the start; and a per-second timeline of 2xx and 503
# per replica with the Redis events.
#
# The upstream is nginx (one worker, as benches/lib.sh's upstream) with a conditional access log:
# it is as fast as the benchmarks' upstream and counts what it must without a program of our own.
# Nothing is pinned: this is a correctness test under load, not a measurement; on a 2-core machine
# oha, both replicas, Redis and the upstream share the cores.
# The replicas log at RUST_LOG=warn unless RUST_LOG is set (the access log would be a line per
# request); logs, oha's JSON, the timeline and summary.{txt,json} go to --out.
# Ports: BENCH_PORT_BASE (default 18180) + 20..24, each checked free first.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
DURATION=30 CONNS=32 QPS=0 LEAD=5 GRACE=2 BIN="" OUT="" INSTALL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --qps) QPS=$2; shift 2 ;;
    --lead) LEAD=$2; shift 2 ;;
    --grace) GRACE=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --install) INSTALL=1; shift ;;
    -h|--help) sed -n '2,53p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
DOWN=3 UP_FOR=5   # seconds Redis stays away, and up between the two outages
if [ "$DURATION" -lt $((LEAD + 2 * DOWN + UP_FOR + 5 + 5)) ]; then
  echo "--duration $DURATION is too short: --lead $LEAD + 16 s of outages and restarts + 5 s after" >&2; exit 2
fi

if [ "$INSTALL" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && command -v nginx >/dev/null &&
    command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server nginx curl >/dev/null; }
  command -v oha >/dev/null || cargo install oha --locked
fi
for tool in redis-server redis-cli nginx oha curl python3; do
  command -v $tool >/dev/null || { echo "$tool is required (run with --install)" >&2; exit 2; }
done
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
[ -z "$BIN" ] && BIN=$TARGET_DIR/release/sessiongate
[ -x "$BIN" ] || { echo "no sessiongate binary at $BIN (cargo build --release, or --bin PATH)" >&2; exit 2; }

BASE=${BENCH_PORT_BASE:-18180}
UP=$((BASE + 20)) A=$((BASE + 21)) B=$((BASE + 22)) RP=$((BASE + 23)) STAT=$((BASE + 24))
for p in $UP $A $B $RP $STAT; do port_free "$p"; done

[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/redis-outage.XXXXXX)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/redis-outage-work.XXXXXX)
mkdir -p "$WORK/redis"
PIDS=() REDIS_PID="" OHA_PIDS=()
cleanup() {
  for p in "${OHA_PIDS[@]:-}" "${PIDS[@]:-}" "$REDIS_PID"; do
    if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi
  done
  sleep 0.3
  cp "$WORK"/*.log "$WORK"/*.err "$WORK"/*.toml "$OUT"/ 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }
now() { echo "$EPOCHREALTIME"; }

# --- upstream: nginx answering 200, logging only requests without X-Forwarded-User: alice -------
start_identity_upstream "$WORK" $UP $STAT
upstream_requests() { upstream_requests_at $STAT; }
unidentified() { grep -vc ' "GET /upstream-selftest ' "$WORK/upstream-unidentified.log" || true; }
# Prove the counter: a request without the header, straight to the upstream, must be logged.
curl -sf -o /dev/null "http://127.0.0.1:$UP/upstream-selftest"
sleep 0.1
if ! grep -q ' "GET /upstream-selftest ' "$WORK/upstream-unidentified.log"; then
  echo "the upstream did not log a request without X-Forwarded-User: the identity check would see nothing" >&2; exit 1
fi

# --- Redis, with RDB persistence: SIGTERM saves, a start loads --------------------------------
redis_cli() { redis-cli -p $RP "$@"; }
redis_start() {
  redis-server --port $RP --bind 127.0.0.1 --save 3600 1 --appendonly no --dir "$WORK/redis" \
    --dbfilename dump.rdb --logfile "$WORK/redis.log" --daemonize no &
  REDIS_PID=$!
  for _ in $(seq 1 300); do
    [ "$(redis_cli ping 2>/dev/null)" = PONG ] && return 0
    kill -0 "$REDIS_PID" 2>/dev/null || { echo "redis-server exited:" >&2; tail -5 "$WORK/redis.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "redis-server did not answer PING within 30 s" >&2; exit 1
}
redis_stop() {
  local rc=0
  kill -TERM "$REDIS_PID"
  wait "$REDIS_PID" || rc=$?
  REDIS_PID=""
  [ "$rc" = 0 ] || { echo "redis-server exited with $rc on SIGTERM" >&2; tail -5 "$WORK/redis.log" >&2; exit 1; }
}
redis_start

# --- two replicas on the same Redis with the same secret (sessiongate_toml's) ------------------
# The same users too: a session holds a fingerprint of the user's password hash, and a hash made
# twice has two salts, so each replica would refuse the other's sessions.
USERS=$(alice_user "$BIN")
start_replica() {
  { sessiongate_toml "$2" $UP; printf 'store = "redis"\n\n[redis]\nurl = "redis://127.0.0.1:%s/0"\n' $RP; echo "$USERS"; } >"$WORK/replica-$1.toml"
  RUST_LOG=${RUST_LOG:-warn} "$BIN" --config "$WORK/replica-$1.toml" >"$WORK/sessiongate-$1.log" 2>&1 & PIDS+=($!)
  wait_port "$2"
}
start_replica A $A; PID_A=${PIDS[-1]}
start_replica B $B; PID_B=${PIDS[-1]}
for port in $A $B; do
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/.sessiongate/readyz")" = 200 ] && break; sleep 0.1
  done
done

# Logged in once, on A; the same cookie on B too (the session is in Redis).
COOKIE=$(python3 "$HERE/peers/login.py" "http://127.0.0.1:$A/" alice wonderland)
for port in $A $B; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$port/")
  [ "$code" = 200 ] || { echo "the cookie from A gets $code on port $port before the load" >&2; exit 1; }
done

# --- load, and the outages in the middle of it -------------------------------------------------
FACTS=$WORK/facts
: >"$FACTS"
fact() { echo "$1=$2" >>"$FACTS"; }
keys() { redis_cli dbsize; }
fact duration "$DURATION"; fact conns "$CONNS"; fact qps "$QPS"; fact grace "$GRACE"; fact lead "$LEAD"
fact bin "$BIN"; fact oha "$(oha --version)"; fact redis "$(redis-server --version)"

UP_BEFORE=$(upstream_requests)
OHA_ARGS=(-z "${DURATION}s" -c "$CONNS" -w -t 10s --no-tui --output-format json -H "Cookie: $COOKIE")
[ "$QPS" != 0 ] && OHA_ARGS+=(-q "$QPS")
log "load: 2 x oha ${OHA_ARGS[*]:0:7} for ${DURATION}s, Redis on port $RP (out: $OUT)"
T0=$(now); fact t0 "$T0"
for r in A B; do
  port=$A; [ $r = B ] && port=$B
  timeout $((DURATION + 120)) oha "${OHA_ARGS[@]}" -o "$OUT/oha-$r.json" --db-url "$WORK/oha-$r.db" \
    "http://127.0.0.1:$port/" >"$WORK/oha-$r.log" 2>&1 & OHA_PIDS+=($!)
done

at() { # at SECONDS: sleeps until SECONDS after T0
  python3 -c 'import sys,time; d=float(sys.argv[1])+float(sys.argv[2])-time.time(); time.sleep(max(0,d))' "$T0" "$1"
}
outage() { # outage N: stop Redis, DOWN s away, start it again
  local n=$1 before after
  before=$(keys)
  fact "stop$n" "$(now)"; log "outage $n: SIGTERM to Redis ($before keys)"
  redis_stop
  fact "stopped$n" "$(now)"
  sleep $DOWN
  fact "start$n" "$(now)"
  redis_start
  fact "ready$n" "$(now)"
  after=$(keys)
  log "outage $n: Redis answers again ($after keys)"
  fact "keys_before$n" "$before"; fact "keys_after$n" "$after"
}
at "$LEAD"
outage 1
sleep $UP_FOR
outage 2

log "waiting for both oha runs"
for i in 0 1; do
  rc=0; wait "${OHA_PIDS[$i]}" || rc=$?
  fact "oha_rc_$i" "$rc"
done
OHA_PIDS=()
UP_AFTER=$(upstream_requests)
# The requests in between: the load's, without the two stub_status requests.
fact upstream_requests "$((UP_AFTER - UP_BEFORE - 1))"
fact unidentified "$(unidentified)"
for r in A B; do
  pid=$PID_A; port=$A; [ $r = B ] && { pid=$PID_B; port=$B; }
  if kill -0 "$pid" 2>/dev/null; then fact "alive_$r" 1; else fact "alive_$r" 0; fi
  fact "after_$r" "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$port/")"
  fact "readyz_$r" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/.sessiongate/readyz")"
done
fact unidentified_after "$(unidentified)"
fact rdb_saved "$(grep -c 'DB saved on disk' "$WORK/redis.log" || true)"
fact rdb_loaded "$(grep -c 'DB loaded from disk' "$WORK/redis.log" || true)"
cp "$WORK/upstream-unidentified.log" "$OUT/"

python3 - "$FACTS" "$OUT" "$WORK" <<'PY'
import json, sqlite3, sys
facts = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[1]) if "=" in l)
out, work = sys.argv[2], sys.argv[3]
t0 = float(facts["t0"]); grace = float(facts["grace"])
f = lambda k: float(facts[k]) - t0  # an event's time from the start of the load
outages = [(f("stop%d" % n), f("ready%d" % n)) for n in (1, 2)]
# Where a 503 is allowed. oha's clock starts a few ms after t0 (it is launched after), so its
# times run a little early against ours: the windows open 0.25 s before the SIGTERM.
windows = [(s - 0.25, r + grace) for s, r in outages]
checks, lines = [], []
def check(name, ok, detail):
    checks.append({"check": name, "ok": bool(ok), "detail": detail})

res = {}
for r in "AB":
    d = json.load(open("%s/oha-%s.json" % (out, r)))
    codes = {k: int(v) for k, v in d.get("statusCodeDistribution", {}).items()}
    errors = {k: int(v) for k, v in d.get("errorDistribution", {}).items()}
    rows = sqlite3.connect("%s/oha-%s.db" % (work, r)).execute("select end, status, duration from oha").fetchall()
    res[r] = {"codes": codes, "errors": errors, "rows": rows, "rps": d["summary"]["requestsPerSec"],
              "oha_rc": int(facts["oha_rc_%d" % "AB".index(r)])}

# answers
for r, v in res.items():
    bad = {k: n for k, n in v["codes"].items() if not (k.startswith("2") or k == "503")}
    check("answers %s" % r, not bad and not v["errors"] and v["oha_rc"] == 0,
          "codes %s, errors %s%s" % (v["codes"], v["errors"] or "none",
                                      "" if v["oha_rc"] == 0 else ", oha exit %d" % v["oha_rc"]))
# 503 windows: by the end of each response
def where(t):
    for i, (s, e) in enumerate(windows):
        if s <= t <= e:
            return i
    return None
for r, v in res.items():
    outside = [t for t, s, _ in v["rows"] if s == 503 and where(t) is None]
    check("503 only while Redis is away %s" % r, not outside,
          "%d of %d 503s outside the windows%s" % (len(outside), sum(1 for _, s, _ in v["rows"] if s == 503),
                                                  (" (first at %.2f s)" % min(outside)) if outside else ""))
    for i, (s, ready) in enumerate(outages):
        start = f("start%d" % (i + 1))
        nxt = outages[i + 1][0] if i + 1 < len(outages) else float("inf")
        in503 = sorted((t, d) for t, st, d in v["rows"] if st == 503 and windows[i][0] <= t <= windows[i][1])
        away2xx = [t for t, st, _ in v["rows"] if 200 <= st < 300 and s <= t <= start]
        resumed = [t for t, st, _ in v["rows"] if 200 <= st < 300 and start < t < nxt]
        lat = sorted(d for _, d in in503)
        o = {"stop_s": round(s, 3), "start_s": round(start, 3), "ready_s": round(ready, 3), "n503": len(in503),
             "first_503_after_stop_s": round(in503[0][0] - s, 3) if in503 else None,
             "last_503_after_start_s": round(in503[-1][0] - start, 3) if in503 else None,
             "503_ms_p50": round(lat[len(lat) // 2] * 1e3, 1) if lat else None,
             "503_ms_max": round(lat[-1] * 1e3, 1) if lat else None,
             "2xx_after_stop": len(away2xx),
             "last_2xx_after_stop_s": round(max(away2xx) - s, 3) if away2xx else None,
             "first_2xx_after_start_s": round(min(resumed) - start, 3) if resumed else None}
        v.setdefault("outages", []).append(o)
        check("outage %d seen and recovered %s" % (i + 1, r), in503 and resumed,
              "%d x 503 from %s s after the stop; 2xx again %s s after Redis was started" % (
                  len(in503), "%.2f" % o["first_503_after_stop_s"] if in503 else "-",
                  "%.2f" % o["first_2xx_after_start_s"] if resumed else "never"))
# alive
for r in "AB":
    check("alive %s" % r, facts["alive_%s" % r] == "1", "the replica started before the load is running" if facts["alive_%s" % r] == "1" else "the replica's process is gone")
# identity
un, un_after = int(facts["unidentified"]), int(facts["unidentified_after"])
check("identity", un == 0 and un_after == 0,
      "%d requests reached the upstream without X-Forwarded-User: alice (%d counting the checks after the load)" % (un, un_after))
# sessions
for n in (1, 2):
    kb, ka = int(facts["keys_before%d" % n]), int(facts["keys_after%d" % n])
    check("redis restart %d kept the keys" % n, ka == kb and ka > 0, "DBSIZE %d before the stop, %d after the start" % (kb, ka))
check("redis RDB saved and loaded", int(facts["rdb_saved"]) >= 2 and int(facts["rdb_loaded"]) >= 2,
      "log: saved %s times, loaded %s times" % (facts["rdb_saved"], facts["rdb_loaded"]))
for r in "AB":
    check("session intact %s" % r, facts["after_%s" % r] == "200" and facts["readyz_%s" % r] == "200",
          "the cookie from before the outages: %s; readyz %s" % (facts["after_%s" % r], facts["readyz_%s" % r]))

ok2xx = sum(n for v in res.values() for k, n in v["codes"].items() if k.startswith("2"))
upstream = int(facts["upstream_requests"])
# oha waits for every request in flight (-w): each 2xx is one forwarded request, and a request
# forwarded whose answer did not come back as 2xx would make the upstream's count larger.
check("forwarded = 2xx", upstream == ok2xx,
      "the upstream served %d requests during the load, oha got %d 2xx" % (upstream, ok2xx))

# timeline: per second, 2xx and 503 per replica, with the events
events = {}
for n, (s, ready) in enumerate(outages, 1):
    events.setdefault(int(s), []).append("stop %d" % n)
    events.setdefault(int(f("start%d" % n)), []).append("start %d" % n)
    events.setdefault(int(ready), []).append("ready %d" % n)
dur = int(float(facts["duration"])) + 1
tl = ["   s   A 2xx  A 503   B 2xx  B 503   Redis"]
buckets = {r: [[0, 0] for _ in range(dur + 2)] for r in res}
for r, v in res.items():
    for t, st, _ in v["rows"]:
        b = buckets[r][min(max(int(t), 0), dur + 1)]
        if 200 <= st < 300: b[0] += 1
        elif st == 503: b[1] += 1
for s in range(dur + 1):
    a, b = buckets["A"][s], buckets["B"][s]
    if a == [0, 0] and b == [0, 0] and s not in events:
        continue
    tl.append("%4d %7d %6d %7d %6d   %s" % (s, a[0], a[1], b[0], b[1], ", ".join(events.get(s, []))))

p = lines.append
p("Redis outage under load: 2 replicas x oha -c %s%s for %ss, Redis stopped at %.1f s and %.1f s for %d s each" % (
    facts["conns"], "" if facts["qps"] == "0" else " -q " + facts["qps"], facts["duration"], outages[0][0], outages[1][0], 3))
p("  %s; %s; %s" % (facts["oha"], facts["redis"].split(" sha=")[0], facts["bin"]))
for r, v in res.items():
    p("  replica %s: %.0f req/s, codes %s, errors %s" % (r, v["rps"], v["codes"], v["errors"] or "none"))
    for i, o in enumerate(v["outages"], 1):
        rel = lambda x: "-" if x is None else "%.3f s %s" % (abs(x), "before" if x < 0 else "after")
        p("    outage %d: %d x 503 (median %s ms, at most %s), the first %s the SIGTERM, the last %s"
          " the start; %d x 2xx after the SIGTERM%s; 2xx again %s the start" % (
            i, o["n503"], o["503_ms_p50"], o["503_ms_max"], rel(o["first_503_after_stop_s"]), rel(o["last_503_after_start_s"]),
            o["2xx_after_stop"], " (the last %s it)" % rel(o["last_2xx_after_stop_s"]) if o["2xx_after_stop"] else "",
            rel(o["first_2xx_after_start_s"])))
p("  Redis answered PING %s s after each start (our poll: every 0.1 s)" % ", ".join(
    "%.2f" % (r_ - f("start%d" % n)) for n, (_, r_) in enumerate(outages, 1)))
p("  upstream: %d requests during the load, %d 2xx responses" % (upstream, ok2xx))
p("")
p("\n".join(tl))
p("")
for c in checks:
    p("%s  %-36s %s" % ("PASS" if c["ok"] else "FAIL", c["check"], c["detail"]))
failed = [c["check"] for c in checks if not c["ok"]]
p("")
p("RESULT: %s" % ("FAIL (%s)" % ", ".join(failed) if failed else "PASS (%d checks)" % len(checks)))
text = "\n".join(lines)
print(text)
open(out + "/summary.txt", "w").write(text + "\n")
json.dump({"facts": facts, "windows_s": windows, "upstream_requests": upstream, "responses_2xx": ok2xx,
           "replicas": {r: {k: v[k] for k in ("codes", "errors", "rps", "outages")} for r, v in res.items()},
           "checks": checks, "ok": not failed}, open(out + "/summary.json", "w"), indent=1)
with open(out + "/timeline.txt", "w") as fh:
    fh.write("\n".join(tl) + "\n")
sys.exit(1 if failed else 0)
PY
