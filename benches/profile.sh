#!/usr/bin/env bash
# Profiles sessiongate under logged-in load, pinned like peers.sh (oha on CPU 0; sessiongate
# and its nginx upstream on CPU 1), so the optimiser can see where a request's time goes.
#
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release   # symbols + lines
#   benches/profile.sh [--perf | --callgrind] [--conns N] [--seconds S] [--requests N] [--out DIR]
#
#   --perf       (default) `perf record -e cpu-clock --call-graph dwarf` for --seconds while oha
#                keeps --conns connections busy; writes perf-self.txt (self time by symbol),
#                perf-children.txt (inclusive), perf-dso.txt (kernel vs user vs libc) and
#                perf-phases.txt (samples sorted into the request's phases, tools/perf_buckets.py);
#                then perf-stat.txt: syscalls, context switches and CPU per request for
#                sessiongate and for an nginx proxy_pass worker under the same load.
#   --callgrind  valgrind --tool=callgrind around exactly --requests requests (instrumentation is
#                switched on only for them), so instructions per request are exact and
#                stable run to run; writes callgrind-inclusive.txt and callgrind-self.txt.
#
# KEEP_PERF_DATA=1 keeps perf.data (large) for your own `perf report`.
# EXTRA_TOML='...' adds tables to sessiongate's config, e.g. $'[metrics]\nlisten = "127.0.0.1:9464"'
# or $'[log]\nformat = "json"' (both need a build that knows them).
# RUST_LOG is left as a user would run it (info: one log line per request) unless set.
# The cpu-clock event is used because this VM exposes no hardware counters.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$ROOT/benches/lib.sh"
cd "$ROOT"
MODE=perf CONNS=64 SECONDS_=10 REQUESTS=20000 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --perf) MODE=perf; shift ;;
    --callgrind) MODE=callgrind; shift ;;
    --conns) CONNS=$2; shift 2 ;;
    --seconds) SECONDS_=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET_DIR/release/sessiongate}
[ -x "$BIN" ] || { echo "no $BIN: build it first (see --help)" >&2; exit 2; }
need() { command -v "$1" >/dev/null || { echo "$1 is required ($2)" >&2; exit 2; }; }
need oha "cargo install oha"; need nginx "apt-get install nginx"
[ "$MODE" = perf ] && need perf "apt-get install linux-perf"
[ "$MODE" = callgrind ] && need valgrind "apt-get install valgrind"
OUT=${OUT:-$ROOT/benches/results/profile-$MODE-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/sessiongate-profile.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT

# Ports from BENCH_PORT_BASE (default 18180) + 110..112, checked free first.
BASE=${BENCH_PORT_BASE:-18180}
UP=$((BASE + 110)) SG=$((BASE + 111)) NGP=$((BASE + 112))
for p in $UP $SG $NGP; do port_free "$p"; done
upstream_conf "$WORK" $UP
taskset -c 1 nginx -c "$WORK/upstream.conf" -e "$WORK/upstream.err" & PIDS+=($!)
wait_port $UP
{ sessiongate_toml $SG $UP; printf '%s\n' "${EXTRA_TOML:-}"; alice_user "$BIN"; } >"$WORK/sessiongate.toml"

if [ "$MODE" = perf ]; then
  taskset -c 1 "$BIN" --config "$WORK/sessiongate.toml" >"$WORK/sessiongate.log" 2>&1 & SG_PID=$!; PIDS+=($SG_PID)
  wait_port $SG
  COOKIE=$(python3 "$ROOT/benches/peers/login.py" "http://127.0.0.1:$SG/" alice wonderland)
  # Warm up (pool, buffers), then sample only while the load is steady.
  taskset -c 0 oha -z 2s -c "$CONNS" --no-tui -H "Cookie: $COOKIE" "http://127.0.0.1:$SG/" >/dev/null
  taskset -c 0 oha -z "$((SECONDS_ + 2))s" -c "$CONNS" --no-tui --output-format json -H "Cookie: $COOKIE" \
    "http://127.0.0.1:$SG/" >"$OUT/oha.json" & LOAD=$!
  sleep 1
  perf record -F 1999 -e cpu-clock --call-graph dwarf,16384 -p "$SG_PID" -o "$OUT/perf.data" -- sleep "$SECONDS_" 2>"$OUT/perf-record.log"
  wait $LOAD
  perf report -i "$OUT/perf.data" --stdio --no-children --sort dso -g none 2>/dev/null >"$OUT/perf-dso.txt"
  perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol -g none --percent-limit 0.4 2>/dev/null >"$OUT/perf-self.txt"
  perf report -i "$OUT/perf.data" --stdio --children --no-inline --sort symbol -g none --percent-limit 2 2>/dev/null >"$OUT/perf-children.txt"
  perf script -i "$OUT/perf.data" --no-inline -F comm,tid,ip,sym,dso 2>/dev/null |
    python3 "$ROOT/benches/tools/perf_buckets.py" >"$OUT/perf-phases.txt"
  [ -n "${KEEP_PERF_DATA:-}" ] || rm -f "$OUT/perf.data"  # hundreds of MB; the reports are what is kept
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; print("load during the profile: %.0f req/s" % s["requestsPerSec"])' "$OUT/oha.json"

  # System calls and context switches per request, for sessiongate and (same load, same
  # pinning) an nginx proxy_pass worker as the reference.
  nginx_proxy_conf "$WORK" nginx-proxy $NGP $UP
  taskset -c 1 nginx -c "$WORK/nginx-proxy.conf" -e "$WORK/nginx-proxy.err" & NG_MASTER=$!; PIDS+=($NG_MASTER)
  wait_port $NGP
  stat_one() {  # name pid url [cookie]
    local args=(-z 5s -c "$CONNS" --no-tui --output-format json)
    [ -n "${4:-}" ] && args+=(-H "Cookie: $4")
    taskset -c 0 oha "${args[@]}" "$3" >"$OUT/stat-$1-oha.json" & local load=$!
    sleep 1
    perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$2" -o "$OUT/stat-$1.csv" -- sleep 3
    wait $load
    python3 - "$1" "$OUT/stat-$1.csv" "$OUT/stat-$1-oha.json" <<'PY'
import csv, json, sys
rps = json.load(open(sys.argv[3]))["summary"]["requestsPerSec"]
v = {r[2]: float(r[0]) for r in csv.reader(l for l in open(sys.argv[2]) if l.strip() and not l.startswith("#")) if r[0][:1].isdigit()}
req = rps * 3.0
print("%-12s %7.0f req/s  %5.2f syscalls/req  %5.3f context switches/req  %5.1f CPU us/req" % (
    sys.argv[1], rps, v["raw_syscalls:sys_enter"] / req, v["context-switches"] / req, v["task-clock"] * 1e3 / req))
PY
  }
  echo "--- per request (perf stat, 3 s under the same load)"
  stat_one sessiongate "$SG_PID" "http://127.0.0.1:$SG/" "$COOKIE" | tee "$OUT/perf-stat.txt"
  stat_one nginx "$(pgrep -P "$NG_MASTER" | head -n 1)" "http://127.0.0.1:$NGP/" | tee -a "$OUT/perf-stat.txt"
  echo "--- self time by DSO"; grep -v '^#' "$OUT/perf-dso.txt" | grep -v '^$' | head -n 12
  echo "--- by phase of the request"; cat "$OUT/perf-phases.txt"
  echo "--- self time by symbol"; grep -v '^#' "$OUT/perf-self.txt" | grep -v '^$' | head -n 40
else
  need callgrind_control "valgrind"
  taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
    "$BIN" --config "$WORK/sessiongate.toml" >"$WORK/sessiongate.log" 2>&1 & SG_PID=$!; PIDS+=($SG_PID)
  wait_port $SG 300  # valgrind starts slowly
  COOKIE=$(python3 "$ROOT/benches/peers/login.py" "http://127.0.0.1:$SG/" alice wonderland)
  taskset -c 0 oha -n 2000 -c 16 --no-tui -H "Cookie: $COOKIE" "http://127.0.0.1:$SG/" >/dev/null
  callgrind_control -i on "$SG_PID" >/dev/null
  taskset -c 0 oha -n "$REQUESTS" -c 16 --no-tui --output-format json -H "Cookie: $COOKIE" "http://127.0.0.1:$SG/" >"$OUT/oha.json"
  callgrind_control -i off "$SG_PID" >/dev/null
  kill "$SG_PID"; wait "$SG_PID" 2>/dev/null || true
  # Whole reports to files first: `| head` would end callgrind_annotate with SIGPIPE (pipefail).
  callgrind_annotate --inclusive=yes "$OUT/callgrind.out" >"$OUT/callgrind-inclusive.txt" 2>/dev/null
  callgrind_annotate "$OUT/callgrind.out" >"$OUT/callgrind-self.txt" 2>/dev/null
  python3 - "$OUT/callgrind.out" "$REQUESTS" "$OUT/oha.json" <<'PY'
import json, sys
lines = [l.split() for l in open(sys.argv[1]) if l.startswith(("summary:", "totals:"))]
total = max(int(l[1]) for l in lines)  # "totals:" holds the count when "summary:" says 0
codes = json.load(open(sys.argv[3]))["statusCodeDistribution"]
print("user-space instructions per request: %.0f (%d requests, status codes %s)" % (total / int(sys.argv[2]), int(sys.argv[2]), codes))
PY
  echo "--- self instructions by function"; grep -E '^ *[0-9,]+ \(' "$OUT/callgrind-self.txt" | head -n 40
fi
echo "profile: $OUT" >&2
