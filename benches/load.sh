#!/usr/bin/env bash
# sessiongate's load benchmarks: one entry point for everything that needs real processes.
#
#   cargo build --release && benches/load.sh [options]
#
# Sections (all by default; pick with --only a,b):
#   peers     side-by-side peer comparison (direct, nginx, caddy, express-session, sessiongate,
#             sessiongate-quiet, nginx-authreq, sessiongate-redis) at --peer-conns (64 and 512), via benches/peers/peers.sh
#   growth    req/s and p99 vs connections (--growth-conns: 1 16 64 256 1024) for direct, nginx,
#             sessiongate
#   memory    RSS vs live sessions (0..1M, benches/sessions_rss.rs); 10k idle keep-alive
#             connections (sessiongate and nginx); a burst of 200 concurrent logins from
#             distinct 127/8 addresses (RSS before, peak, 5 s and 30 s after; status codes)
#   stall     p99 of logged-in requests quiet vs during the login burst, and quiet vs while 1M
#             sessions expire and are swept
#   criterion the criterion benches (auth_path, session_store), output kept
#   login     only the login burst: its memory and (with --stall-rounds > 0) its stall check,
#             without the sessions, idle-connection and sweep measurements of memory and stall
#
# Options:
#   --quick              a smoke run of a few minutes (short windows, one round, fewer points)
#   --duration S         seconds per peer measurement (8)       --rounds R   rounds (3)
#   --growth-duration S  seconds per growth point (5)           --growth-rounds R (3)
#   --peer-conns "64 512"   --growth-conns "1 16 64 256 1024"
#   --rate Q             fixed request rate of the stall load (4000 req/s, ~1/9 of capacity here)
#   --stall-rounds R     rounds of each stall check (3)
#   --out DIR            results directory (benches/results/run-DATE)
#   --only LIST          comma-separated sections
#   --ports BASE         the port range to use (sets BENCH_PORT_BASE, below)
#                        (18190), for two runs at once on a shared machine
#   --login-workers N    auth.login_workers for the login burst (default: sessiongate's own)
#   --bin PATH           the sessiongate binary under test ($CARGO_TARGET_DIR/release/sessiongate),
#                        e.g. a saved copy of a previous build, to compare two builds in one session
#
# Writes JSON per measurement into the results directory, then summary.md (the tables) and,
# when matplotlib is installed (pip install matplotlib), plot.png. benches/results/latest
# points at the newest run.
#
# Ports: BENCH_PORT_BASE (default 18180) .. +12; set it to run two benchmarks side by side.
#
# Pinning as in peers.sh: load generators (oha, the Python clients) on CPU 0; the proxy under
# test and the upstream on CPU 1. The machine is shared and noisy: compare peers within one
# run (ratios), never absolute figures across runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BENCHES=$ROOT/benches
# shellcheck source=lib.sh
. "$BENCHES/lib.sh"

DURATION=8 ROUNDS=3 GROWTH_DURATION=5 GROWTH_ROUNDS=3 PEER_CONNS="64 512"
GROWTH_CONNS="1 16 64 256 1024" RATE=4000 STALL_ROUNDS=3 OUT="" ONLY="" BIN="" PORT_BASE=""
LOGIN_WORKERS=""
SESSION_COUNTS=0,10000,100000,1000000 IDLE_CONNS=10000 LOGINS=200 AFTER="5 30" SWEEP_SESSIONS=1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) DURATION=3 ROUNDS=1 GROWTH_DURATION=2 GROWTH_ROUNDS=1 STALL_ROUNDS=1 AFTER="5"; shift ;;
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --growth-duration) GROWTH_DURATION=$2; shift 2 ;;
    --growth-rounds) GROWTH_ROUNDS=$2; shift 2 ;;
    --peer-conns) PEER_CONNS=$2; shift 2 ;;
    --growth-conns) GROWTH_CONNS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --stall-rounds) STALL_ROUNDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --ports) PORT_BASE=$2; shift 2 ;;
    --login-workers) LOGIN_WORKERS=$2; shift 2 ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET_DIR/release/sessiongate}
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release first" >&2; exit 2; }
for tool in oha nginx python3; do
  command -v $tool >/dev/null || { echo "$tool is required (benches/peers/peers.sh --install sets up the peers)" >&2; exit 2; }
done
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  PIN_SRV="taskset -c 1" PIN_GEN="taskset -c 0"
else
  PIN_SRV="" PIN_GEN=""; echo "note: fewer than 2 CPUs or no taskset: nothing is pinned" >&2
fi
# 10,000 client connections plus upstream ones need more descriptors than the usual 1024.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

OUT=${OUT:-$BENCHES/results/run-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/sessiongate-load.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.3
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '\n== %s\n' "$*" >&2; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# The machine, recorded with the results.
python3 - "$OUT/machine.json" "$BIN" <<'PY'
import json, os, platform, subprocess, sys
def run(*c):
    try: return subprocess.run(c, capture_output=True, text=True).stdout.strip()
    except OSError: return None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
json.dump({"cpu": cpu, "cpus": os.cpu_count(), "mem_gib": round(mem / 2**20, 1), "kernel": platform.release(),
           "os": run("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"), "rustc": run("rustc", "--version"),
           "oha": run("oha", "--version"), "nginx": run("sh", "-c", "nginx -v 2>&1"), "caddy": run("caddy", "version"),
           "node": run("node", "--version"), "git": run("git", "-C", os.path.dirname(sys.argv[2]), "rev-parse", "--short", "HEAD"),
           "sessiongate_commit": run("git", "rev-parse", "--short", "HEAD"), "bin": sys.argv[2],
           "load_avg_at_start": os.getloadavg()}, open(sys.argv[1], "w"), indent=1)
PY

# --- the upstream the memory and stall sections use (peers.sh starts its own) ------------------
# Ports from BENCH_PORT_BASE (default 18180; --ports sets it): peers.sh uses BASE..BASE+9 and BASE+19,
# this script BASE+10..BASE+12, each checked free first.
BASE=${PORT_BASE:-${BENCH_PORT_BASE:-18180}}
export BENCH_PORT_BASE=$BASE
UP=$((BASE + 10)) SG=$((BASE + 11)) NGP=$((BASE + 12))
for p in $UP $SG $NGP; do port_free "$p"; done
start_upstream() {
  upstream_conf "$WORK" $UP
  port_free $UP
  $PIN_SRV nginx -c "$WORK/upstream.conf" -e "$WORK/upstream.err" & PIDS+=($!)
  wait_port $UP
}

# sessiongate_config FILE [extra [server] lines] -- users come from $USERS_TOML when set.
sessiongate_config() {
  local file=$1
  sessiongate_toml $SG $UP "${2:-}" >"$file"
  if [ -n "$LOGIN_WORKERS" ]; then printf '\n[auth]\nlogin_workers = %s\n' "$LOGIN_WORKERS" >>"$file"; fi
  if [ -n "${USERS_TOML:-}" ]; then cat "$USERS_TOML" >>"$file"; else alice_user "$BIN" >>"$file"; fi
}

# start_sessiongate CONFIG -> sets SG_PID; logs to $WORK
start_sessiongate() {
  port_free $SG
  $PIN_SRV "$BIN" --config "$1" >"$WORK/sessiongate.$(basename "$1").log" 2>&1 & SG_PID=$!; PIDS+=($SG_PID)
  wait_port $SG
}

# The bench binary that runs the proxy in-process (RSS vs sessions, sweep stall).
bench_bin() {
  cargo bench --bench sessions_rss --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "sessions_rss" and m.get("executable"): print(m["executable"])' | tail -n 1
}

# --- peers -------------------------------------------------------------------------------------
if want peers; then
  for c in $PEER_CONNS; do
    log "peers at $c connections (${ROUNDS} rounds x ${DURATION}s)"
    "$BENCHES/peers/peers.sh" --bin "$BIN" --conns "$c" --duration "$DURATION" --rounds "$ROUNDS" \
      --json "$OUT/peers-$c.json" | tee "$OUT/peers-$c.txt"
  done
fi

# --- growth ------------------------------------------------------------------------------------
if want growth; then
  for c in $GROWTH_CONNS; do
    log "growth: $c connections (${GROWTH_ROUNDS} rounds x ${GROWTH_DURATION}s)"
    "$BENCHES/peers/peers.sh" --bin "$BIN" --only direct,nginx,sessiongate --conns "$c" \
      --duration "$GROWTH_DURATION" --rounds "$GROWTH_ROUNDS" --json "$OUT/growth-$c.json" | tee "$OUT/growth-$c.txt"
  done
fi

if want memory || want stall || want login; then
  start_upstream
fi
if want memory || want stall; then
  BENCH_BIN=$(bench_bin)
  [ -x "$BENCH_BIN" ] || { echo "could not build the sessions_rss bench binary" >&2; exit 1; }
fi

# --- memory: sessions, idle connections ----------------------------------------------------------
if want memory; then
  log "memory: RSS vs live sessions ($SESSION_COUNTS)"
  $PIN_SRV "$BENCH_BIN" --counts "$SESSION_COUNTS" --upstream "http://127.0.0.1:$UP" --json "$OUT/rss-sessions.json"

  log "memory: $IDLE_CONNS idle keep-alive connections"
  # header_read_timeout also closes idle keep-alive connections (default 30 s); it is raised so
  # the connections stay for the measurement. max_connections (default 10000) is raised too so
  # the probe login still gets in.
  sessiongate_config "$WORK/idle.toml" $'header_read_timeout = "10m"\nmax_connections = 12000'
  start_sessiongate "$WORK/idle.toml"
  COOKIE=$(python3 "$BENCHES/peers/login.py" "http://127.0.0.1:$SG/" alice wonderland)
  $PIN_GEN python3 "$BENCHES/tools/idle_conns.py" --port $SG --pid $SG_PID --cookie "$COOKIE" --n "$IDLE_CONNS" \
    --json "$OUT/idle-sessiongate.json"
  stop $SG_PID

  # nginx as a proxy (same config as the peer) for reference; its worker's RSS is measured.
  nginx_proxy_conf "$WORK" nginx-proxy $NGP $UP 30000 "keepalive_timeout 10m;"
  port_free $NGP
  $PIN_SRV nginx -c "$WORK/nginx-proxy.conf" -e "$WORK/nginx-proxy.err" & NG_MASTER=$!; PIDS+=($NG_MASTER)
  wait_port $NGP
  NG_WORKER=$(pgrep -P "$NG_MASTER" | head -n 1)
  $PIN_GEN python3 "$BENCHES/tools/idle_conns.py" --port $NGP --pid "$NG_WORKER" --n "$IDLE_CONNS" \
    --json "$OUT/idle-nginx.json"
  stop $NG_MASTER
fi

# --- login burst (memory and stall) ----------------------------------------------------------------
if want memory || want stall || want login; then
  # 200 users, each with its own default-cost argon2id hash. Hashing them takes a while, so
  # they are kept in benches/.cache (not committed) and reused.
  CACHE=$BENCHES/.cache
  mkdir -p "$CACHE"
  USERS_TXT=$CACHE/users-$LOGINS.txt USERS_TOML=$CACHE/users-$LOGINS.toml
  if [ ! -s "$USERS_TOML" ] || [ "$(wc -l <"$USERS_TXT")" -ne "$LOGINS" ]; then
    log "hashing $LOGINS passwords (cached in $CACHE)"
    : >"$USERS_TXT.tmp"; : >"$USERS_TOML.tmp"
    for i in $(seq -w 1 "$LOGINS"); do
      pw="pw-$i-$RANDOM$RANDOM"
      echo "user$i $pw" >>"$USERS_TXT.tmp"
      printf '\n[[users]]\nname = "user%s"\npassword_hash = "%s"\n' "$i" "$(printf '%s' "$pw" | "$BIN" hash-password)" >>"$USERS_TOML.tmp"
    done
    mv "$USERS_TXT.tmp" "$USERS_TXT"; mv "$USERS_TOML.tmp" "$USERS_TOML"
  fi
  STALL_ARGS=()
  if want stall || { want login && [ "$STALL_ROUNDS" -gt 0 ]; }; then
    STALL_ARGS=(--stall-rounds "$STALL_ROUNDS" --rate "$RATE")
  fi
  log "login burst: $LOGINS concurrent logins from distinct addresses"
  sessiongate_config "$WORK/burst.toml"
  start_sessiongate "$WORK/burst.toml"
  # shellcheck disable=SC2086
  $PIN_GEN python3 "$BENCHES/tools/login_burst.py" --port $SG --pid $SG_PID --users "$USERS_TXT" --n "$LOGINS" \
    --after $AFTER "${STALL_ARGS[@]}" --json "$OUT/login-burst.json" >/dev/null
  stop $SG_PID
  unset USERS_TOML
fi

# --- stall: sweeping 1M expired sessions ---------------------------------------------------------
if want stall; then
  log "stall: p99 while $SWEEP_SESSIONS sessions expire and are swept ($STALL_ROUNDS rounds at $RATE req/s)"
  python3 "$BENCHES/tools/sweep_stall.py" --bench-bin "$BENCH_BIN" --upstream "http://127.0.0.1:$UP" \
    --sessions "$SWEEP_SESSIONS" --rounds "$STALL_ROUNDS" --rate "$RATE" --json "$OUT/sweep-stall.json" >/dev/null
fi

# --- criterion -----------------------------------------------------------------------------------
if want criterion; then
  log "criterion: auth_path, session_store (pinned to CPU 1)"
  $PIN_SRV cargo bench --bench auth_path --bench session_store 2>&1 | tee "$OUT/criterion.txt"
fi

# --- report --------------------------------------------------------------------------------------
python3 "$BENCHES/report.py" "$OUT" | tee "$OUT/summary.md"
if python3 -c 'import matplotlib' 2>/dev/null; then
  python3 "$BENCHES/plot.py" "$OUT" "$OUT/plot.png"
else
  echo "note: matplotlib not installed (pip install matplotlib): no plot" >&2
fi
ln -sfn "$(basename "$OUT")" "$BENCHES/results/latest" 2>/dev/null || true
echo "results: $OUT" >&2
