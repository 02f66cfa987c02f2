#!/usr/bin/env bash
# Sign-ins per second with `session.state_dir` against the memory store alone: the same binary
# and config (alice with sessiongate's default argon2id cost), one with a state_dir, measured
# in alternating rounds so that machine drift hits both alike.
#
#   cargo build --release && benches/state_logins.sh [--rounds R] [--duration S] [--conns N]
#                                                   [--bin PATH] [--json FILE]
#
# Each sign-in is a real POST to the login endpoint (oha, --conns at a time): the password is
# checked and a session made, which with a state_dir also writes its record. The server and the
# upstream share CPU 1, oha runs on CPU 0. Answers other than 303 make the round INVALID (the
# sign-ins oha cancels when the time is up are not answers).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
ROUNDS=5 DURATION=8 CONNS=4 BIN="" JSON=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --json) JSON=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
BIN=${BIN:-${CARGO_TARGET_DIR:-$HERE/../target}/release/sessiongate}
command -v oha >/dev/null || { echo "oha is required (cargo install oha)" >&2; exit 2; }
command -v nginx >/dev/null || { echo "nginx is required for the upstream" >&2; exit 2; }

WORK=$(mktemp -d /tmp/state-logins.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
if [ "$(nproc)" -ge 2 ]; then PIN_SRV="taskset -c 1"; PIN_GEN="taskset -c 0"; else PIN_SRV=""; PIN_GEN=""; fi

BASE=${BENCH_PORT_BASE:-18280}
UP=$BASE MEM=$((BASE + 1)) DUR=$((BASE + 2))
for p in $UP $MEM $DUR; do port_free "$p"; done
upstream_conf "$WORK" $UP
$PIN_SRV nginx -c "$WORK/upstream.conf" -e "$WORK/upstream.err" & PIDS+=($!)
wait_port $UP

USER_TOML=$(alice_user "$BIN")
start() {
  local name=$1 port=$2 extra=$3
  { sessiongate_toml "$port" "$UP"; printf '%s\n[auth]\nmax_failures = 1000000\n%s\n' "$extra" "$USER_TOML"; } >"$WORK/$name.toml"
  RUST_LOG=warn $PIN_SRV "$BIN" --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 & PIDS+=($!)
  wait_port "$port"
}
start memory $MEM ""
start durable $DUR "state_dir = \"$WORK/state\""

# logins PORT -> "signins_per_s p50_ms p99_ms other_answers"
logins() {
  $PIN_GEN oha -z "${DURATION}s" -c "$CONNS" --no-tui --output-format json -m POST \
    -H "content-type: application/x-www-form-urlencoded" -H "origin: http://127.0.0.1:$1" \
    -d "username=alice&password=wonderland" "http://127.0.0.1:$1/.sessiongate/login" 2>/dev/null |
    python3 -c '
import json,sys
d=json.load(sys.stdin); codes=d.get("statusCodeDistribution",{}); p=d["latencyPercentiles"]
# oha cancels the sign-ins still in flight when the time is up: those are not answers.
errors={k:v for k,v in d.get("errorDistribution",{}).items() if "deadline" not in k}
ok=codes.get("303",0); other=sum(codes.values())-ok+sum(errors.values())
if other: print("other answers: status codes %s, errors %s" % (codes, errors), file=sys.stderr)
print("%.1f %.1f %.1f %d"%(ok/d["summary"]["total"],(p.get("p50") or 0)*1e3,(p.get("p99") or 0)*1e3,other))'
}

declare -A ALL
for r in $(seq 1 "$ROUNDS"); do
  for name in memory durable; do
    port=$MEM; [ "$name" = durable ] && port=$DUR
    read -r rate p50 p99 other < <(logins $port)
    state="ok"; [ "$other" -gt 0 ] && state="INVALID ($other other answers)"
    printf 'round %d %-8s %7.1f sign-ins/s  p50 %6.1f ms  p99 %6.1f ms  %s\n' "$r" "$name" "$rate" "$p50" "$p99" "$state"
    ALL[$name]="${ALL[$name]:-} $rate"
  done
done
python3 - "${ALL[memory]}" "${ALL[durable]}" "$JSON" <<'PY'
import json, statistics, sys
mem = [float(x) for x in sys.argv[1].split()]; dur = [float(x) for x in sys.argv[2].split()]
ratios = [d / m for m, d in zip(mem, dur)]
out = {"memory": mem, "durable": dur, "median_memory": statistics.median(mem),
       "median_durable": statistics.median(dur), "median_ratio": statistics.median(ratios)}
print("median sign-ins/s: memory %.1f, durable %.1f; median per-round ratio %.3f" % (
    out["median_memory"], out["median_durable"], out["median_ratio"]))
if sys.argv[3]:
    json.dump(out, open(sys.argv[3], "w"), indent=2)
PY
