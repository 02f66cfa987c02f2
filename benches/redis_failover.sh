#!/usr/bin/env bash
# A Redis Sentinel failover under load, on loopback: a redis-server master and its replica,
# three redis-sentinel processes (quorum 2, down after 1 s, failover timeout 5 s), two
# sessiongate replicas (release build) on [redis] sentinels, a logged-in oha load through
# each at once, and a failover in the middle of it.
#
#   benches/redis_failover.sh [--how forced|kill] [--duration S] [--conns N] [--lead S]
#                             [--bin PATH] [--out DIR]
#
#   --how       forced: SENTINEL FAILOVER (the master stays up and is demoted); kill: SIGKILL
#               to the master (the sentinels must first see it down). Default forced.
#   --duration  length of each oha run (default 30; at least --lead + 15)
#   --conns N   connections per oha (default 32)
#   --lead S    seconds of load before the failover (default 5)
#   --bin PATH  the sessiongate binary (default: $CARGO_TARGET_DIR/release/sessiongate, else
#               ./target/release/sessiongate)
#   --out DIR   where the results go (default: a new /tmp/redis-failover.XXXXXX, kept)
#
# From the issue "Sessions that survive": "a Sentinel failover's 503 window under load (as
# benches/redis_outage.sh does for an outage)".
#
# What it checks (each line PASS or FAIL; exits 1 on any FAIL):
#   answers     every response of both oha runs is 2xx or 503, no connection error or timeout
#   503 window  no 503 before the failover began (less 0.25 s for oha's clock); each replica
#               answered 2xx again after the new master was promoted
#   identity    the upstream saw no request without `X-Forwarded-User: alice`
#   forwarded   the upstream served exactly as many requests during the load as oha got 2xx
#   sessions    after the load the cookie from before gets 200 on both replicas, readyz 200
# Reported per replica: how many 503s, the first after the failover began, the last and the
# first 2xx again measured from the promotion (every sentinel naming the new master, polled
# every 0.1 s).
# Nothing is pinned: on a 2-core machine oha, both replicas, Redis, the sentinels and the
# upstream share the cores. Ports: BENCH_PORT_BASE (default 18180) + 30..38, checked free first.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
HOW=forced DURATION=30 CONNS=32 LEAD=5 BIN="" OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --how) HOW=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --lead) LEAD=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$HOW" in forced|kill) ;; *) echo "--how is forced or kill" >&2; exit 2 ;; esac
[ "$DURATION" -ge $((LEAD + 15)) ] || { echo "--duration must be at least --lead + 15" >&2; exit 2; }
for tool in redis-server redis-sentinel redis-cli nginx oha curl python3; do
  command -v $tool >/dev/null || { echo "$tool is required (tests/install-deps.sh installs it)" >&2; exit 2; }
done
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
[ -z "$BIN" ] && BIN=$TARGET_DIR/release/sessiongate
[ -x "$BIN" ] || { echo "no sessiongate binary at $BIN (cargo build --release, or --bin PATH)" >&2; exit 2; }

BASE=${BENCH_PORT_BASE:-18180}
UP=$((BASE + 30)) A=$((BASE + 31)) B=$((BASE + 32)) STAT=$((BASE + 33))
RM=$((BASE + 34)) RR=$((BASE + 35)) SENTINELS=($((BASE + 36)) $((BASE + 37)) $((BASE + 38)))
for p in $UP $A $B $STAT $RM $RR "${SENTINELS[@]}"; do port_free "$p"; done

[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/redis-failover.XXXXXX)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/redis-failover-work.XXXXXX)
PIDS=() OHA_PIDS=() MASTER_PID=""
cleanup() {
  for p in "${OHA_PIDS[@]:-}" "${PIDS[@]:-}" "$MASTER_PID"; do
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
unidentified() { grep -c . "$WORK/upstream-unidentified.log" || true; }

# --- master, replica, three sentinels ----------------------------------------------------------
redis_node() { # redis_node NAME PORT [replicaof args...]
  local name=$1 port=$2; shift 2
  mkdir -p "$WORK/$name"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK/$name" \
    --logfile "$WORK/$name.log" --daemonize no "$@" &
  for _ in $(seq 1 300); do
    [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && return 0; sleep 0.1
  done
  echo "redis-server on $port did not answer PING" >&2; exit 1
}
redis_node master $RM; MASTER_PID=$!
redis_node replica $RR --replicaof 127.0.0.1 $RM; PIDS+=($!)
for port in "${SENTINELS[@]}"; do
  mkdir -p "$WORK/sentinel-$port"
  cat >"$WORK/sentinel-$port/sentinel.conf" <<CONF
port $port
bind 127.0.0.1
dir $WORK/sentinel-$port
logfile $WORK/sentinel-$port.log
sentinel monitor mymaster 127.0.0.1 $RM 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 5000
CONF
  redis-sentinel "$WORK/sentinel-$port/sentinel.conf" & PIDS+=($!)
done
named_master() { redis-cli -p "$1" sentinel get-master-addr-by-name mymaster 2>/dev/null | sed -n 2p; }
ready_sentinel() {
  redis-cli -p "$1" sentinel master mymaster 2>/dev/null | grep -A1 -x num-other-sentinels | tail -1 | grep -qx 2 &&
    redis-cli -p "$1" sentinel replicas mymaster 2>/dev/null | grep -A1 -x master-link-status | tail -1 | grep -qx ok
}
for port in "${SENTINELS[@]}"; do
  for i in $(seq 1 600); do ready_sentinel "$port" && break; sleep 0.1; done
  ready_sentinel "$port" || { echo "sentinel $port never knew the replica and the other sentinels" >&2; exit 1; }
done

# --- two sessiongate replicas on the sentinels ------------------------------------------------
USERS=$(alice_user "$BIN")
LIST=$(printf '"127.0.0.1:%s", ' "${SENTINELS[@]}"); LIST=${LIST%, }
start_replica() {
  { sessiongate_toml "$2" $UP
    printf 'store = "redis"\n\n[redis]\nsentinels = [%s]\nmaster_name = "mymaster"\n' "$LIST"
    echo "$USERS"; } >"$WORK/replica-$1.toml"
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
COOKIE=$(python3 "$HERE/peers/login.py" "http://127.0.0.1:$A/" alice wonderland)
for port in $A $B; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$port/")
  [ "$code" = 200 ] || { echo "the cookie from A gets $code on port $port before the load" >&2; exit 1; }
done
# The session is on the replica before the failover.
[ "$(redis-cli -p $RM wait 1 5000)" -ge 1 ] || { echo "the replica did not acknowledge the session" >&2; exit 1; }

# --- load, and the failover in the middle of it ------------------------------------------------
FACTS=$WORK/facts
: >"$FACTS"
fact() { echo "$1=$2" >>"$FACTS"; }
fact how "$HOW"; fact duration "$DURATION"; fact conns "$CONNS"; fact lead "$LEAD"
fact oha "$(oha --version)"; fact redis "$(redis-server --version)"
UP_BEFORE=$(upstream_requests)
OHA_ARGS=(-z "${DURATION}s" -c "$CONNS" -w -t 10s --no-tui --output-format json -H "Cookie: $COOKIE")
log "load: 2 x oha -c $CONNS for ${DURATION}s; failover ($HOW) after ${LEAD}s (out: $OUT)"
T0=$(now); fact t0 "$T0"
for r in A B; do
  port=$A; [ $r = B ] && port=$B
  timeout $((DURATION + 120)) oha "${OHA_ARGS[@]}" -o "$OUT/oha-$r.json" --db-url "$WORK/oha-$r.db" \
    "http://127.0.0.1:$port/" >"$WORK/oha-$r.log" 2>&1 & OHA_PIDS+=($!)
done
python3 -c 'import sys,time; time.sleep(max(0, float(sys.argv[1]) + float(sys.argv[2]) - time.time()))' "$T0" "$LEAD"
fact failover "$(now)"
if [ "$HOW" = forced ]; then
  for _ in $(seq 1 100); do
    [ "$(redis-cli -p "${SENTINELS[0]}" sentinel failover mymaster)" = OK ] && break; sleep 0.1
  done
else
  kill -KILL "$MASTER_PID"; wait "$MASTER_PID" 2>/dev/null || true; MASTER_PID=""
fi
log "failover ($HOW) begun"
for port in "${SENTINELS[@]}"; do
  for _ in $(seq 1 600); do [ "$(named_master "$port")" = "$RR" ] && break; sleep 0.1; done
done
fact promoted "$(now)"
log "every sentinel names the replica the master"

for i in 0 1; do
  rc=0; wait "${OHA_PIDS[$i]}" || rc=$?
  fact "oha_rc_$i" "$rc"
done
OHA_PIDS=()
UP_AFTER=$(upstream_requests)
fact upstream_requests "$((UP_AFTER - UP_BEFORE - 1))"
fact unidentified "$(unidentified)"
for r in A B; do
  pid=$PID_A port=$A; [ $r = B ] && { pid=$PID_B port=$B; }
  if kill -0 "$pid" 2>/dev/null; then fact "alive_$r" 1; else fact "alive_$r" 0; fi
  fact "after_$r" "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$port/")"
  fact "readyz_$r" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/.sessiongate/readyz")"
done

python3 - "$FACTS" "$OUT" "$WORK" <<'PY'
import json, sqlite3, sys
facts = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[1]) if "=" in l)
out, work = sys.argv[2], sys.argv[3]
t0 = float(facts["t0"])
began, promoted = float(facts["failover"]) - t0, float(facts["promoted"]) - t0
checks, lines = [], []
def check(name, ok, detail):
    checks.append({"check": name, "ok": bool(ok), "detail": detail})
res = {}
for r in "AB":
    d = json.load(open("%s/oha-%s.json" % (out, r)))
    codes = {k: int(v) for k, v in d.get("statusCodeDistribution", {}).items()}
    errors = {k: int(v) for k, v in d.get("errorDistribution", {}).items()}
    rows = sqlite3.connect("%s/oha-%s.db" % (work, r)).execute("select end, status from oha").fetchall()
    bad = {k: n for k, n in codes.items() if not (k.startswith("2") or k == "503")}
    rc = int(facts["oha_rc_%d" % "AB".index(r)])
    check("answers %s" % r, not bad and not errors and rc == 0, "codes %s, errors %s" % (codes, errors or "none"))
    t503 = sorted(t for t, s in rows if s == 503)
    early = [t for t in t503 if t < began - 0.25]
    back = [t for t, s in rows if 200 <= s < 300 and t > (t503[-1] if t503 else began)]
    check("503 window %s" % r, not early and back,
          "%d x 503, %d before the failover began; 2xx again after the last" % (len(t503), len(early)))
    res[r] = {"codes": codes, "rps": d["summary"]["requestsPerSec"], "n503": len(t503),
              "first_503_after_begin_s": round(t503[0] - began, 3) if t503 else None,
              "last_503_after_promotion_s": round(t503[-1] - promoted, 3) if t503 else None,
              "first_2xx_after_last_503_vs_promotion_s": round(min(back) - promoted, 3) if back and t503 else None}
    check("alive %s" % r, facts["alive_%s" % r] == "1", "the replica's process runs")
    check("session intact %s" % r, facts["after_%s" % r] == "200" and facts["readyz_%s" % r] == "200",
          "the cookie from before: %s; readyz %s" % (facts["after_%s" % r], facts["readyz_%s" % r]))
check("identity", int(facts["unidentified"]) == 0, "%s requests without X-Forwarded-User: alice" % facts["unidentified"])
ok2xx = sum(n for v in res.values() for k, n in v["codes"].items() if k.startswith("2"))
check("forwarded = 2xx", int(facts["upstream_requests"]) == ok2xx,
      "the upstream served %s requests during the load, oha got %d 2xx" % (facts["upstream_requests"], ok2xx))
p = lines.append
p("Sentinel failover (%s) under load: 2 replicas x oha -c %s for %ss, failover begun at %.2f s, "
  "every sentinel named the new master at %.2f s (%.2f s later)" % (
      facts["how"], facts["conns"], facts["duration"], began, promoted, promoted - began))
p("  %s; %s" % (facts["oha"], facts["redis"].split(" sha=")[0]))
for r, v in res.items():
    p("  replica %s: %.0f req/s, codes %s; %d x 503, the first %s s after the failover began, the last %s s "
      "after the promotion; 2xx again %s s after the promotion" % (
          r, v["rps"], v["codes"], v["n503"], v["first_503_after_begin_s"], v["last_503_after_promotion_s"],
          v["first_2xx_after_last_503_vs_promotion_s"]))
p("")
for c in checks:
    p("%s  %-20s %s" % ("PASS" if c["ok"] else "FAIL", c["check"], c["detail"]))
failed = [c["check"] for c in checks if not c["ok"]]
p("")
p("RESULT: %s" % ("FAIL (%s)" % ", ".join(failed) if failed else "PASS (%d checks)" % len(checks)))
text = "\n".join(lines)
print(text)
open(out + "/summary.txt", "w").write(text + "\n")
json.dump({"facts": facts, "replicas": res, "checks": checks, "ok": not failed},
          open(out + "/summary.json", "w"), indent=1)
sys.exit(1 if failed else 0)
PY
