#!/usr/bin/env bash
# Side-by-side load comparison on loopback: the same upstream, reached directly and through each peer.
#
#   benches/peers/peers.sh [--duration S] [--conns N] [--rounds R] [--only a,b] [--bin PATH]
#                          [--base-bin PATH] [--rules N] [--metrics] [--json FILE] [--install]
#
# Vendored from the team's shared/bench/peers.sh (2026-11) so the repo is self-contained. Changes:
# --json FILE (raw rounds + medians, machine-readable); the default binary honours CARGO_TARGET_DIR;
# ports start at BENCH_PORT_BASE (default 18180) and must be free;
# the express peer is installed next to this script; an extra peer `sessiongate-quiet` (the same
# binary with RUST_LOG=warn, i.e. without the per-request access log line) shows what logging costs.
# The upstream config, sessiongate's config and the port helpers come from ../lib.sh (shared with
# load.sh and profile.sh); an INVALID round prints its status codes and the proxies' warnings,
# and KEEP_LOGS=DIR keeps the logs. The peer `sessiongate-redis` (2026-12): sessions in a Redis
# that the script starts itself, with Redis commands per proxied request in the summary.
#
# Peers (each skipped with a note when its program is missing):
#   direct       the upstream itself (nginx returning a ~100 byte body): the ceiling
#   nginx        nginx proxy_pass with upstream keep-alive, no auth: the C reference proxy
#   caddy        Caddy reverse_proxy, no auth
#   express      express + express-session (MemoryStore) + http-proxy-middleware: the classic session stack
#   sessiongate  this project, release build, logged in, every request carries the session cookie
#   sessiongate-quiet  the same with RUST_LOG=warn (no per-request log line; nginx's access_log is off too)
#   sessiongate-redis  the same binary and config plus `store = "redis"` and a [redis] table:
#                sessions in a redis-server the script starts (port BASE+19, no persistence:
#                --save "" --appendonly no), pinned to CPU 1 with the peer and the upstream, and
#                counted in the peer's CPU per request (sessiongate and Redis together). Also
#                reports Redis commands per proxied request (CONFIG RESETSTAT before each load, the
#                calls in INFO commandstats after, divided by the responses oha counted). Skipped
#                with a note when redis-server is missing.
#   nginx-authreq  nginx proxy_pass asking sessiongate (forward-auth only, no upstream) with
#                auth_request on every request: sessiongate behind an existing nginx
#   sessiongate-durable  the same binary and config plus `session.state_dir` (a directory in the
#                run's work dir): the memory store also kept on disk (2026-12, issue 23)
#   sessiongate-base   with --base-bin PATH: another sessiongate build (e.g. today's main) with the
#                plain config, to compare a change against in the same interleaved run
#
# --rules N gives the sessiongate, sessiongate-quiet and sessiongate-redis peers N access rules
# (benches/lib.sh bench_rules: the request is checked against all N); the base peer never gets
# them, so its binary may predate rules.
#
# --metrics (2026-12) gives the same three peers a [metrics] listener (ports BASE+20..22), scraped
# once a second during each load, as Prometheus would (more often); the base peer never gets one.
#
# Pinning: the load generator runs on CPU 0, the upstream and the peer under test on CPU 1 (with
# sessiongate-redis, its Redis too), so every peer gets the same CPU budget. Each figure is the
# median over --rounds; rounds alternate peers so machine drift hits all of them alike. Only the
# ratios are meaningful on a shared, noisy machine.
# A peer whose responses are not all 2xx is marked INVALID (a fast 302 is not a proxied request).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
DURATION=8 CONNS=64 ROUNDS=3 ONLY="" BIN="" BASE_BIN="" RULES=0 METRICS=0 INSTALL=0 JSON=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --base-bin) BASE_BIN=$2; shift 2 ;;
    --rules) RULES=$2; shift 2 ;;
    --metrics) METRICS=1; shift ;;
    --json) JSON=$2; shift 2 ;;
    --install) INSTALL=1; shift ;;
    -h|--help) sed -n '2,47p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [ "$INSTALL" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  command -v nginx >/dev/null && command -v wrk >/dev/null && command -v caddy >/dev/null &&
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq nginx wrk caddy redis-server >/dev/null; }
  command -v oha >/dev/null || cargo install oha --locked
  [ -d "$HERE/express-peer/node_modules" ] || (cd "$HERE/express-peer" && npm install --silent --no-audit --no-fund)
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
[ -z "$BIN" ] && [ -x "$TARGET_DIR/release/sessiongate" ] && BIN=$TARGET_DIR/release/sessiongate
WORK=$(mktemp -d /tmp/peers.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; sleep 0.3
  # A failed upstream request makes a round INVALID; say why before the logs go.
  for f in "$WORK"/sessiongate*.log; do
    if [ -f "$f" ]; then grep -m5 -E "WARN|ERROR" "$f" | sed "s|^|$(basename "$f"): |" >&2 || true; fi
  done
  # KEEP_LOGS=DIR keeps the proxies' logs for a closer look.
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS"; cp "$WORK"/*.log "$WORK"/*.err "$KEEP_LOGS"/ 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then PIN_SRV="taskset -c 1"; PIN_GEN="taskset -c 0"; else PIN_SRV=""; PIN_GEN=""; fi
# Ports from BENCH_PORT_BASE (default 18180) so two runs on one machine can use different ranges:
# BASE..BASE+10, and BASE+19 for sessiongate-redis's Redis.
BASE=${BENCH_PORT_BASE:-18180}
UP=$BASE NG=$((BASE + 1)) CA=$((BASE + 2)) EX=$((BASE + 3)) SG=$((BASE + 4)) SQ=$((BASE + 5)) SB=$((BASE + 6))
NA=$((BASE + 7)) NAG=$((BASE + 8)) SG_R=$((BASE + 9)) SG_D=$((BASE + 10)) RP=$((BASE + 19))
declare -A METRICS_PORT=([sessiongate]=$((BASE + 20)) [sessiongate-quiet]=$((BASE + 21)) [sessiongate-redis]=$((BASE + 22)))

want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
# A port someone else already listens on would make wait_port succeed against the wrong server.
for p in $UP $NG $CA $EX $SG $SQ $SB $NA $NAG $SG_R $SG_D $RP; do port_free "$p"; done

# --- upstream ----------------------------------------------------------------------------------
command -v nginx >/dev/null || { echo "nginx is required for the upstream (run with --install)" >&2; exit 2; }
upstream_conf "$WORK" $UP
$PIN_SRV nginx -c "$WORK/upstream.conf" -e "$WORK/upstream.err" & PIDS+=($!)
wait_port $UP

# --- load generator ------------------------------------------------------------------------------
# load URL [COOKIE] -> prints "rps p50_ms p99_ms non2xx responses"
load() {
  local url=$1 cookie=${2:-}
  if command -v oha >/dev/null; then
    local args=(-z "${DURATION}s" -w -c "$CONNS" --no-tui --output-format json)
    [ -n "$cookie" ] && args+=(-H "Cookie: $cookie")
    $PIN_GEN oha "${args[@]}" "$url" 2>/dev/null | python3 -c '
import json,sys
d=json.load(sys.stdin); s=d["summary"]; p=d["latencyPercentiles"]; codes=d.get("statusCodeDistribution",{})
bad=sum(v for k,v in codes.items() if not k.startswith("2"))+sum(d.get("errorDistribution",{}).values())
if bad: print("bad answers: status codes %s, errors %s" % (codes, d.get("errorDistribution")), file=sys.stderr)
print("%.0f %.3f %.3f %d %d"%(s["requestsPerSec"],(p.get("p50") or 0)*1e3,(p.get("p99") or 0)*1e3,bad,sum(codes.values())))'
  else
    local args=(-t1 -c"$CONNS" -d"${DURATION}s" --latency)
    [ -n "$cookie" ] && args+=(-H "Cookie: $cookie")
    $PIN_GEN wrk "${args[@]}" "$url" | python3 -c '
import re,sys
t=sys.stdin.read()
def ms(v):
    n,u=re.match(r"([\d.]+)([a-z]+)",v).groups(); return float(n)*{"us":1e-3,"ms":1,"s":1e3}[u]
rps=float(re.search(r"Requests/sec:\s+([\d.]+)",t).group(1))
p50=ms(re.search(r"^\s+50%\s+(\S+)",t,re.M).group(1)); p99=ms(re.search(r"^\s+99%\s+(\S+)",t,re.M).group(1))
m=re.search(r"Non-2xx or 3xx responses:\s+(\d+)",t); e=re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)",t)
n=int(re.search(r"(\d+) requests in",t).group(1))
print("%.0f %.3f %.3f %d %d"%(rps,p50,p99,(int(m.group(1)) if m else 0)+(sum(map(int,e.groups())) if e else 0),n))'
  fi
}

# cpu_ticks "PID [PID...]" -> user+system clock ticks used so far by the PIDs and all their
# descendants (a peer made of two processes, such as nginx asking sessiongate, counts both)
cpu_ticks() {
  python3 - "$1" <<'PY'
import os, sys
roots = [int(p) for p in sys.argv[1].split()]; kids = {}; ticks = {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    kids.setdefault(int(f[1]), []).append(int(d)); ticks[int(d)] = int(f[11]) + int(f[12])
todo, total = list(roots), 0
while todo:
    p = todo.pop(); total += ticks.get(p, 0); todo += kids.get(p, [])
print(total)
PY
}
TCK=$(getconf CLK_TCK)

# --- peers ---------------------------------------------------------------------------------------
# SESSION_TOML[name]: lines for a sessiongate peer's config right after its [session] table
# (more session keys, then tables of their own); REDIS_PORT[name]: the Redis whose commands
# the peer's rounds count.
declare -A URL COOKIE SPID SESSION_TOML REDIS_PORT
peers=()
if want direct; then peers+=(direct); URL[direct]=http://127.0.0.1:$UP/; fi

if want nginx; then
  nginx_proxy_conf "$WORK" nginx $NG $UP
  $PIN_SRV nginx -c "$WORK/nginx.conf" -e "$WORK/nginx.err" & PIDS+=($!); SPID[nginx]=$!
  wait_port $NG && { peers+=(nginx); URL[nginx]=http://127.0.0.1:$NG/; }
fi

if want caddy && command -v caddy >/dev/null; then
  printf '{\n admin off\n auto_https off\n}\nhttp://127.0.0.1:%s {\n reverse_proxy 127.0.0.1:%s {\n  header_up X-Forwarded-User alice\n }\n}\n' $CA $UP >"$WORK/Caddyfile"
  GOMAXPROCS=1 $PIN_SRV caddy run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 & PIDS+=($!); SPID[caddy]=$!
  wait_port $CA && { peers+=(caddy); URL[caddy]=http://127.0.0.1:$CA/; }
elif want caddy; then echo "note: caddy not installed, skipped" >&2; fi

if want express && command -v node >/dev/null && [ -d "$HERE/express-peer/node_modules" ]; then
  PORT=$EX UPSTREAM=http://127.0.0.1:$UP $PIN_SRV node "$HERE/express-peer/server.js" >"$WORK/express.log" 2>&1 & PIDS+=($!); SPID[express]=$!
  wait_port $EX
  COOKIE[express]=$(python3 "$HERE/login.py" --plain "http://127.0.0.1:$EX/login" alice wonderland)
  peers+=(express); URL[express]=http://127.0.0.1:$EX/
elif want express; then echo "note: express peer not installed (run with --install), skipped" >&2; fi

# start_sessiongate NAME PORT BIN RULES [VAR=value...]: the release build BIN with RULES access
# rules (and SESSION_TOML[NAME] after its [session] table), logged in as alice; the assignments
# go into its environment.
start_sessiongate() {
  local name=$1 port=$2 bin=$3 rules=$4 metrics=""; shift 4
  if [ "$METRICS" = 1 ] && [ -n "${METRICS_PORT[$name]:-}" ]; then
    metrics=$(printf '\n[metrics]\nlisten = "127.0.0.1:%s"' "${METRICS_PORT[$name]}")
  fi
  if [ "$rules" -gt 0 ]; then
    { sessiongate_toml "$port" "$UP"; printf '%s\n%s\n' "${SESSION_TOML[$name]:-}" "$metrics"; alice_user "$bin" '["bench"]'; bench_rules "$rules"; } >"$WORK/$name.toml"
  else
    { sessiongate_toml "$port" "$UP"; printf '%s\n%s\n' "${SESSION_TOML[$name]:-}" "$metrics"; alice_user "$bin"; } >"$WORK/$name.toml"
  fi
  env "$@" $PIN_SRV "$bin" --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 & PIDS+=($!); SPID[$name]=$!
  wait_port "$port"
  COOKIE[$name]=$(python3 "$HERE/login.py" "http://127.0.0.1:$port/" alice wonderland)
  peers+=("$name"); URL[$name]=http://127.0.0.1:$port/
}
if [ -z "$BIN" ]; then
  if want sessiongate || want sessiongate-quiet; then echo "note: no sessiongate binary (cargo build --release first), skipped" >&2; fi
else
  if want sessiongate; then start_sessiongate sessiongate $SG "$BIN" "$RULES"; fi
  if want sessiongate-quiet; then start_sessiongate sessiongate-quiet $SQ "$BIN" "$RULES" RUST_LOG=warn; fi
fi
if [ -n "$BIN" ] && want sessiongate-redis; then
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    # Redis on the peer's CPU like the upstream: its CPU is part of what a request through this
    # peer costs. Nothing written to disk; the session secret comes from sessiongate_toml.
    $PIN_SRV redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
      --logfile "$WORK/redis.log" --daemonize no & PIDS+=($!); redis_pid=$!
    wait_port $RP
    for _ in $(seq 1 100); do [ "$(redis-cli -p $RP ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
    SESSION_TOML[sessiongate-redis]=$(printf 'store = "redis"\n\n[redis]\nurl = "redis://127.0.0.1:%s/0"' $RP)
    start_sessiongate sessiongate-redis $SG_R "$BIN" "$RULES"
    SPID[sessiongate-redis]="${SPID[sessiongate-redis]} $redis_pid"
    REDIS_PORT[sessiongate-redis]=$RP
  else
    echo "note: redis-server (or redis-cli) not installed (run with --install), sessiongate-redis skipped" >&2
  fi
fi
if [ -n "$BIN" ] && want sessiongate-durable; then
  SESSION_TOML[sessiongate-durable]="state_dir = \"$WORK/state\""
  start_sessiongate sessiongate-durable $SG_D "$BIN" "$RULES"
fi
if [ -n "$BASE_BIN" ] && want sessiongate-base; then start_sessiongate sessiongate-base $SB "$BASE_BIN" 0; fi
if [ -n "$BIN" ] && want nginx-authreq; then
  # sessiongate as the login service only (no [upstream]), trusting nginx on loopback.
  printf '[server]\nlisten = "127.0.0.1:%s"\ntrusted_proxies = ["127.0.0.1"]\n\n[session]\nsecret = "bench-secret-0123456789abcdef0123456789abcdef"\nsecure = false\n' $NAG >"$WORK/authreq-gate.toml"
  alice_user "$BIN" >>"$WORK/authreq-gate.toml"
  $PIN_SRV "$BIN" --config "$WORK/authreq-gate.toml" >"$WORK/sessiongate-authreq.log" 2>&1 & PIDS+=($!); gate_pid=$!
  nginx_authreq_conf "$WORK" nginx-authreq $NA $UP $NAG
  $PIN_SRV nginx -c "$WORK/nginx-authreq.conf" -e "$WORK/nginx-authreq.err" & PIDS+=($!)
  SPID[nginx-authreq]="$! $gate_pid"
  wait_port $NAG && wait_port $NA
  COOKIE[nginx-authreq]=$(python3 "$HERE/login.py" "http://127.0.0.1:$NA/.sessiongate/login" alice wonderland)
  peers+=(nginx-authreq); URL[nginx-authreq]=http://127.0.0.1:$NA/
fi

# redis_calls PORT -> "CALLS NAME:CALLS,NAME:CALLS..." from INFO commandstats: every command
# Redis ran since the last CONFIG RESETSTAT, without the two this script sends (the RESETSTAT
# itself and INFO).
redis_calls() {
  redis-cli -p "$1" INFO commandstats | python3 -c '
import re, sys
calls = {m.group(1): int(m.group(2)) for m in re.finditer(r"^cmdstat_(\S+?):calls=(\d+)", sys.stdin.read(), re.M)}
calls = {k: v for k, v in calls.items() if k not in ("config|resetstat", "info")}
print(sum(calls.values()), ",".join("%s:%d" % kv for kv in sorted(calls.items(), key=lambda kv: -kv[1])) or "-")'
}

# --- measure -------------------------------------------------------------------------------------
# RES[peer]: one "rps p50 p99 bad cpu round responses redis_cmds_per_req redis_commands" per round
# (the Redis figures -1 and - for a peer without Redis).
declare -A RES
for r in $(seq 1 "$ROUNDS"); do
  for p in "${peers[@]}"; do
    rport=${REDIS_PORT[$p]:-}
    [ -z "$rport" ] || redis-cli -p "$rport" CONFIG RESETSTAT >/dev/null
    t0=$([ -n "${SPID[$p]:-}" ] && cpu_ticks "${SPID[$p]}" || echo 0)
    scraper=""
    if [ "$METRICS" = 1 ] && [ -n "${METRICS_PORT[$p]:-}" ]; then
      # A scrape a second during the load (from the generator's CPU), counted in the peer's CPU.
      (while :; do $PIN_GEN curl -sf -o /dev/null "http://127.0.0.1:${METRICS_PORT[$p]}/metrics" || echo "scrape of $p failed" >&2; sleep 1; done) &
      scraper=$!
    fi
    out=$(load "${URL[$p]}" "${COOKIE[$p]:-}")
    [ -z "$scraper" ] || { kill "$scraper" 2>/dev/null; wait "$scraper" 2>/dev/null || true; }
    t1=$([ -n "${SPID[$p]:-}" ] && cpu_ticks "${SPID[$p]}" || echo 0)
    read -r rps p50 p99 bad n <<<"$out"
    # CPU microseconds the peer's own processes spent per request (0 for direct: there is no proxy)
    cpu=$(python3 -c "import sys; rps=float(sys.argv[1]); print('%.2f' % ((int(sys.argv[3])-int(sys.argv[2]))*1e6/int(sys.argv[4])/max(1.0, rps*float(sys.argv[5]))))" \
          "$rps" "$t0" "$t1" "$TCK" "$DURATION")
    per=-1 list=-
    if [ -n "$rport" ]; then
      read -r calls list < <(redis_calls "$rport")
      per=$(python3 -c "import sys; print('%.6f' % (int(sys.argv[1]) / max(1, int(sys.argv[2]))))" "$calls" "$n")
    fi
    RES[$p]+="$rps $p50 $p99 $bad $cpu $r $n $per $list;"
  done
done

echo "peer               req/s   p50_ms   p99_ms  cpu_us/req  bad   vs nginx: req/s   p99  cpu/req   ($ROUNDS rounds x ${DURATION}s, $CONNS conns, gen: $(command -v oha >/dev/null && echo oha || echo wrk))"
python3 - "$(for p in "${peers[@]}"; do echo "$p=${RES[$p]}"; done)" "$JSON" "$CONNS" "$DURATION" "$ROUNDS" <<'REPORT'
import json, statistics, sys
med = statistics.median
out = {"conns": int(sys.argv[3]), "duration_s": float(sys.argv[4]), "rounds": int(sys.argv[5]), "peers": {}}
runs = {}
for line in sys.argv[1].splitlines():
    name, rs = line.split("=", 1)
    # rps p50 p99 bad cpu round responses redis_cmds_per_req, then the Redis commands by name
    runs[name] = [list(map(float, r.split()[:8])) + [r.split()[8]] for r in rs.split(";") if r.strip()]
ref = runs.get("nginx")
redis_lines = []
for name, vals in runs.items():
    rps, p50, p99, cpu = (med(v[i] for v in vals) for i in (0, 1, 2, 4))
    bad = int(sum(v[3] for v in vals))
    if ref:  # the median of per-round ratios: both halves of a pair ran on the same machine state
        pair = list(zip(vals, ref))
        rr = "%5.2f" % med(a[0] / b[0] for a, b in pair)
        pr = "%5.2f" % med(a[2] / b[2] for a, b in pair)
        cr = "%5.2f" % med(a[4] / b[4] for a, b in pair) if cpu and all(b[4] for b in ref) else "    -"
    else:
        rr = pr = cr = "    -"
    flag = "  INVALID: %d non-2xx/errors" % bad if bad else ""
    print("%-17s %7.0f %8.3f %8.3f %10s %5d   %15s %5s %8s%s" % (name, rps, p50, p99, ("%.1f" % cpu) if cpu else "-", bad, rr, pr, cr, flag))
    redis = vals[0][7] >= 0  # the peer's rounds counted Redis commands
    rounds = [dict(zip(("rps", "p50_ms", "p99_ms", "bad", "cpu_us_per_req", "round"), v), responses=int(v[6])) for v in vals]
    median = {"rps": rps, "p50_ms": p50, "p99_ms": p99, "cpu_us_per_req": cpu}
    if redis:
        for d, v in zip(rounds, vals):
            d["redis_cmds_per_req"] = v[7]
            d["redis_commands"] = {k: int(c) for k, c in (x.rsplit(":", 1) for x in v[8].split(",") if x != "-")}
        median["redis_cmds_per_req"] = med(v[7] for v in vals)
        redis_lines.append("%s: %.4f Redis commands per proxied request (median; rounds %s; last round: %s)" % (
            name, median["redis_cmds_per_req"], ", ".join("%.4f" % v[7] for v in vals),
            ", ".join("%s %s" % tuple(x.rsplit(":", 1)) for x in vals[-1][8].split(",") if x != "-") or "none"))
    out["peers"][name] = {
        "rounds": rounds,
        "median": median,
        "bad": bad,
        "vs_nginx": {"rps": float(rr), "p99": float(pr), "cpu": (float(cr) if cr.strip() != "-" else None)} if ref else None,
    }
for line in redis_lines:
    print(line)
if sys.argv[2]:
    with open(sys.argv[2], "w") as f:
        json.dump(out, f, indent=1)
REPORT
