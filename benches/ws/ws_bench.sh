#!/usr/bin/env bash
# WebSocket proxying on loopback: echo round trips on many sockets, straight to a WebSocket echo
# server and through each peer, and what idle tunnels cost each proxy in memory.
#
#   benches/ws/ws_bench.sh [--rounds R] [--duration S] [--sockets N] [--message-bytes B]
#                          [--inflight K] [--hold-sockets N] [--only a,b] [--bin PATH]
#                          [--json FILE] [--no-build] [--no-memory]
#
# Defaults: 3 rounds of 10 s, 1000 sockets, 64-byte messages, one message in flight per socket,
# 1000 sockets held for the memory part; all peers; --bin $CARGO_TARGET_DIR/release/sessiongate
# (built by `cargo build --release`, which this script does not do). It builds the two tools
# itself (`cargo build --release --example ws_load --example ws_echo`) unless --no-build.
#
# Peers:
#   direct       ws_load straight to ws_echo: the ceiling
#   nginx        proxy_pass with the standard WebSocket config (HTTP/1.1, Upgrade $http_upgrade,
#                Connection "upgrade"), access_log off, no auth: the C reference proxy
#   sessiongate  the release build, RUST_LOG=warn (no access log line per handshake), upstream
#                ws_echo, user alice logged in with ../peers/login.py; every handshake carries
#                the session cookie
# Every handshake also carries the Origin a browser would send (the peer's own origin).
#
# Tools: examples/ws_echo.rs (the upstream, one thread) and examples/ws_load.rs (the load: opens
# the sockets 32 handshakes at a time, then each sends a binary message and waits for its echo
# until the duration is up; see its --help). Pinning as in ../peers/peers.sh: ws_load on CPU 0,
# ws_echo and the peer under test on CPU 1. Rounds alternate the peers so machine drift hits
# all of them alike; each figure is the median over the rounds, "vs nginx" the median of the
# per-round ratios. cpu_us/msg: the peer's own CPU (nginx: master and worker) per echoed message
# (0 in the JSON for direct, which has no proxy). ws_load on one thread tops out near 100k msgs/s
# here, so direct is a loose ceiling.
#
# A peer whose handshakes all fail is reported with the HTTP status it answered (e.g.
# "sessiongate: 1000 of 1000 handshakes failed: HTTP 502 x 1000"), dropped from the later rounds
# and the memory part, and the other peers carry on. Partial failures, errors and sockets that
# closed early mark the peer's row INVALID.
#
# Memory (before the load, on the freshly started and logged-in peers, so the load's freed
# memory does not hide the cost): VmRSS from /proc/PID/status (nginx: master + workers) before,
# and with --hold-sockets idle WebSockets open (ws_load --hold), and the difference per socket.
#
# Ports: BENCH_PORT_BASE (default 18180) +40 ws_echo, +41 nginx, +42 sessiongate; they must be
# free. KEEP_LOGS=DIR keeps the logs and ws_load's raw JSON.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
ROUNDS=3 DURATION=10 SOCKETS=1000 BYTES=64 INFLIGHT=1 HOLD=1000 ONLY="" BIN="" JSON="" BUILD=1 MEMORY=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --sockets) SOCKETS=$2; shift 2 ;;
    --message-bytes) BYTES=$2; shift 2 ;;
    --inflight) INFLIGHT=$2; shift 2 ;;
    --hold-sockets) HOLD=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --json) JSON=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-memory) MEMORY=0; shift ;;
    -h|--help) sed -n '2,42p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
if [ "$BUILD" = 1 ]; then
  (cd "$REPO" && cargo build --release --quiet --example ws_load --example ws_echo)
fi
WS_LOAD=$TARGET_DIR/release/examples/ws_load WS_ECHO=$TARGET_DIR/release/examples/ws_echo
for t in "$WS_LOAD" "$WS_ECHO"; do
  [ -x "$t" ] || { echo "$t is missing (cargo build --release --example ws_load --example ws_echo)" >&2; exit 2; }
done
[ -z "$BIN" ] && BIN=$TARGET_DIR/release/sessiongate

WORK=$(mktemp -d /tmp/ws_bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; sleep 0.3
  if [ -f "$WORK/sessiongate.log" ]; then
    grep -m5 -E "WARN|ERROR" "$WORK/sessiongate.log" | sed "s|^|sessiongate.log: |" >&2 || true
  fi
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS"; cp -r "$WORK"/. "$KEEP_LOGS"/ 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(nproc)" -ge 2 ]; then PIN_SRV="taskset -c 1"; PIN_GEN="taskset -c 0"; else PIN_SRV=""; PIN_GEN=""; fi
BASE=${BENCH_PORT_BASE:-18180}
ECHO=$((BASE + 40)) NG=$((BASE + 41)) SG=$((BASE + 42))
for p in $ECHO $NG $SG; do port_free "$p"; done
# Every proxied socket is two file descriptors in the proxy.
MAXSOCK=$((SOCKETS > HOLD ? SOCKETS : HOLD))

# --- upstream ----------------------------------------------------------------------------------
$PIN_SRV "$WS_ECHO" --listen 127.0.0.1:$ECHO 2>"$WORK/ws_echo.log" & PIDS+=($!)
wait_port $ECHO

# --- peers ---------------------------------------------------------------------------------------
# URL[peer], COOKIE[peer], SPID[peer] (the process whose tree is the peer), FAILED[peer] (why it
# is out of the run)
declare -A URL COOKIE SPID FAILED
peers=()
if want direct; then peers+=(direct); URL[direct]=ws://127.0.0.1:$ECHO/ws; fi

if want nginx; then
  if command -v nginx >/dev/null; then
    cat >"$WORK/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err warn;
worker_rlimit_nofile $((2 * MAXSOCK + 10000));
events { worker_connections $((2 * MAXSOCK + 1024)); }
http { access_log off;
  upstream ws { server 127.0.0.1:$ECHO; }
  server { listen 127.0.0.1:$NG backlog=4096;
    location / {
      proxy_pass http://ws; proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection "upgrade";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-User "alice";
      proxy_read_timeout 3600s; proxy_send_timeout 3600s; } } }
CONF
    $PIN_SRV nginx -c "$WORK/nginx.conf" -e "$WORK/nginx.err" & PIDS+=($!); SPID[nginx]=$!
    wait_port $NG && { peers+=(nginx); URL[nginx]=ws://127.0.0.1:$NG/ws; }
  else
    echo "note: nginx not installed (benches/peers/peers.sh --install), skipped" >&2
  fi
fi

if want sessiongate; then
  if [ -x "$BIN" ]; then
    { sessiongate_toml $SG $ECHO; alice_user "$BIN"; } >"$WORK/sessiongate.toml"
    RUST_LOG=warn $PIN_SRV "$BIN" --config "$WORK/sessiongate.toml" >"$WORK/sessiongate.log" 2>&1 & PIDS+=($!); SPID[sessiongate]=$!
    wait_port $SG
    if COOKIE[sessiongate]=$(python3 "$HERE/../peers/login.py" "http://127.0.0.1:$SG/" alice wonderland); then
      peers+=(sessiongate); URL[sessiongate]=ws://127.0.0.1:$SG/ws
    else
      echo "sessiongate: login failed, skipped" >&2
    fi
  else
    echo "note: no sessiongate binary at $BIN (cargo build --release, or --bin PATH), skipped" >&2
  fi
fi
[ ${#peers[@]} -gt 0 ] || { echo "no peer to measure" >&2; exit 2; }

# ws_args PEER: the handshake headers of PEER's sockets, as ws_load arguments
ws_args() {
  local origin=${URL[$1]#ws://}
  printf '%s\n' --header "Origin: http://${origin%%/*}"
  if [ -n "${COOKIE[$1]:-}" ]; then printf '%s\n' --header "Cookie: ${COOKIE[$1]}"; fi
}

# why_failed JSON -> "F of N handshakes failed: HTTP 502 x F" (empty when none failed)
why_failed() {
  python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
if d["handshakes_failed"]:
    print("%d of %d handshakes failed: %s" % (d["handshakes_failed"], d["sockets"],
          ", ".join("%s x %d" % kv for kv in d["handshake_failures"].items())))' "$1"
}

# cpu_ticks "PID..." -> user+system clock ticks used so far by the PIDs and all their descendants
# rss_kib "PID..." -> VmRSS in KiB summed over the PIDs and all their descendants
proc_tree() {
  python3 - "$1" "$2" <<'PY'
import os, sys
what, roots = sys.argv[1], [int(p) for p in sys.argv[2].split()]
kids, val = {}, {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        if what == "rss":
            v = next(int(l.split()[1]) for l in open(f"/proc/{d}/status") if l.startswith("VmRSS:"))
        else:
            v = int(f[11]) + int(f[12])
    except (OSError, StopIteration):
        continue
    kids.setdefault(int(f[1]), []).append(int(d)); val[int(d)] = v
todo, total = list(roots), 0
while todo:
    p = todo.pop(); total += val.get(p, 0); todo += kids.get(p, [])
print(total)
PY
}
cpu_ticks() { proc_tree cpu "$1"; }
rss_kib() { proc_tree rss "$1"; }

# --- memory: idle sockets held open --------------------------------------------------------------
# MEM[peer]: "before_kib held_kib opened closed_while_held" or "FAILED why"
declare -A MEM
if [ "$MEMORY" = 1 ]; then
  for p in "${peers[@]}"; do
    [ -n "${SPID[$p]:-}" ] || continue
    mapfile -t hdr < <(ws_args "$p")
    before=$(rss_kib "${SPID[$p]}")
    $PIN_GEN "$WS_LOAD" --url "${URL[$p]}" --sockets "$HOLD" --hold --json "$WORK/hold-$p.json" "${hdr[@]}" \
      >"$WORK/hold-$p.out" 2>"$WORK/hold-$p.err" & hpid=$!; PIDS+=("$hpid")
    for _ in $(seq 1 1200); do
      grep -q '^holding' "$WORK/hold-$p.out" && break
      kill -0 $hpid 2>/dev/null || break
      sleep 0.1
    done
    if grep -q '^holding' "$WORK/hold-$p.out"; then
      sleep 2 # let the last tunnels settle
      held=$(rss_kib "${SPID[$p]}")
      kill -TERM $hpid; wait $hpid 2>/dev/null || true
      opened=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["opened"])' "$WORK/hold-$p.json")
      closed=$(sed -n 's/.*; \([0-9]*\) had closed while held/\1/p' "$WORK/hold-$p.out")
      MEM[$p]="$before $held $opened ${closed:-0}"
      why=$(why_failed "$WORK/hold-$p.json")
      [ -z "$why" ] || echo "$p (memory): $why" >&2
    else
      kill -TERM $hpid 2>/dev/null || true; wait $hpid 2>/dev/null || true
      if [ -f "$WORK/hold-$p.json" ]; then why=$(why_failed "$WORK/hold-$p.json"); else why="ws_load: $(tail -1 "$WORK/hold-$p.err")"; fi
      MEM[$p]="FAILED $why"
      echo "$p (memory): $why" >&2
    fi
  done
fi

# --- load rounds ---------------------------------------------------------------------------------
# ROUNDFILES[peer]: "round:cpu_us_per_msg:file ..." for each round that ran
declare -A ROUNDFILES
TCK=$(getconf CLK_TCK)
for r in $(seq 1 "$ROUNDS"); do
  for p in "${peers[@]}"; do
    [ -z "${FAILED[$p]:-}" ] || continue
    mapfile -t hdr < <(ws_args "$p")
    f=$WORK/load-$p-$r.json
    t0=$([ -n "${SPID[$p]:-}" ] && cpu_ticks "${SPID[$p]}" || echo 0)
    $PIN_GEN "$WS_LOAD" --url "${URL[$p]}" --sockets "$SOCKETS" --duration "$DURATION" \
      --message-bytes "$BYTES" --inflight "$INFLIGHT" --json "$f" "${hdr[@]}" \
      >"$WORK/load-$p-$r.out" 2>"$WORK/load-$p-$r.err" || true
    t1=$([ -n "${SPID[$p]:-}" ] && cpu_ticks "${SPID[$p]}" || echo 0)
    if [ ! -s "$f" ]; then
      FAILED[$p]="ws_load failed: $(tail -1 "$WORK/load-$p-$r.err")"
      echo "$p: ${FAILED[$p]}" >&2; continue
    fi
    why=$(why_failed "$f")
    opened=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["opened"])' "$f")
    if [ "$opened" = 0 ]; then
      FAILED[$p]=$why
      echo "$p: $why" >&2; continue
    fi
    [ -z "$why" ] || echo "$p, round $r: $why" >&2
    cpu=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.2f" % ((int(sys.argv[3])-int(sys.argv[2]))*1e6/int(sys.argv[4])/max(1, d["messages"])))' \
          "$f" "$t0" "$t1" "$TCK")
    ROUNDFILES[$p]+="$r:$cpu:$f "
  done
done

# --- report --------------------------------------------------------------------------------------
echo "peer           msgs/s   p50_ms   p99_ms  cpu_us/msg  errors   vs nginx: msgs/s   p99  cpu/msg   ($ROUNDS rounds x ${DURATION}s, $SOCKETS sockets, ${BYTES}-byte messages, $INFLIGHT in flight)"
python3 - "$JSON" "$ROUNDS" "$DURATION" "$SOCKETS" "$BYTES" "$INFLIGHT" "$HOLD" \
  "$(for p in "${peers[@]}"; do printf '%s\t%s\t%s\n' "$p" "${ROUNDFILES[$p]:-}" "${FAILED[$p]:-}"; done)" \
  "$(for p in "${!MEM[@]}"; do printf '%s\t%s\n' "$p" "${MEM[$p]}"; done)" <<'REPORT'
import json, statistics, sys
med = statistics.median
jpath, rounds, duration, sockets, nbytes, inflight, hold, peers, mem = sys.argv[1:10]
out = {"rounds": int(rounds), "duration_s": float(duration), "sockets": int(sockets), "message_bytes": int(nbytes),
       "inflight": int(inflight), "hold_sockets": int(hold), "peers": {}, "memory": {}}
# runs[peer]: ws_load's JSON of each round that ran, with its round number and the peer's CPU
runs, failed = {}, {}
for line in peers.splitlines():
    name, files, why = (line.split("\t") + ["", ""])[:3]
    runs[name] = []
    for item in files.split():
        r, cpu, f = item.split(":", 2)
        d = json.load(open(f))
        d["round"], d["cpu_us_per_msg"] = int(r), float(cpu)
        runs[name].append(d)
    failed[name] = why or None
ref = {v["round"]: v for v in runs.get("nginx", [])}
for name, vals in runs.items():
    entry = out["peers"][name] = {"rounds": vals, "failed": failed[name], "median": None, "vs_nginx": None}
    if not vals:
        print("%-12s FAILED: %s" % (name, failed[name] or "no round ran"))
        continue
    rate = med(v["messages_per_s"] for v in vals)
    p50 = med(v["latency_ms"]["p50"] for v in vals)
    p99 = med(v["latency_ms"]["p99"] for v in vals)
    cpu = med(v["cpu_us_per_msg"] for v in vals)
    errs = sum(v["errors"] + v["closed_early"] + v["handshakes_failed"] for v in vals)
    entry["median"] = {"messages_per_s": rate, "p50_ms": p50, "p99_ms": p99, "cpu_us_per_msg": cpu}
    # the median of per-round ratios: both halves of a pair ran on the same machine state
    pairs = [(v, ref[v["round"]]) for v in vals if v["round"] in ref]
    rr = pr = cr = "    -"
    if pairs:
        ratios = {"messages_per_s": med(a["messages_per_s"] / b["messages_per_s"] for a, b in pairs),
                  "p99": med(a["latency_ms"]["p99"] / b["latency_ms"]["p99"] for a, b in pairs),
                  "cpu": med(a["cpu_us_per_msg"] / b["cpu_us_per_msg"] for a, b in pairs) if cpu else None}
        entry["vs_nginx"] = ratios
        rr, pr = "%5.2f" % ratios["messages_per_s"], "%5.2f" % ratios["p99"]
        if ratios["cpu"]:
            cr = "%5.2f" % ratios["cpu"]
    flag = "  INVALID: %d handshake failures, errors or sockets closed early" % errs if errs else ""
    if failed[name]:
        flag += "  (then dropped: %s)" % failed[name]
    print("%-12s %8.0f %8.3f %8.3f %10s %7d   %16s %5s %8s%s" % (
        name, rate, p50, p99, ("%.1f" % cpu) if cpu else "-", errs, rr, pr, cr, flag))
if "sessiongate" in runs and "nginx" in runs:
    s = [a["messages_per_s"] / ref[a["round"]]["messages_per_s"] for a in runs["sessiongate"] if a["round"] in ref]
    if s:
        out["sessiongate_vs_nginx"] = med(s)
        print("sessiongate / nginx, messages/s: %.2f (median of per-round ratios; rounds %s)" % (
            med(s), ", ".join("%.2f" % x for x in s)))
    else:
        print("sessiongate / nginx, messages/s: - (no round with both)")
if mem.strip():
    print("\nmemory with %s idle WebSockets held open (VmRSS; nginx: master + worker)" % hold)
for line in sorted(mem.splitlines()):
    name, rest = line.split("\t")
    if rest.startswith("FAILED"):
        print("%-12s not measured: %s" % (name, rest[7:]))
        out["memory"][name] = {"failed": rest[7:]}
        continue
    before, held, opened, closed = map(int, rest.split())
    per = (held - before) / opened
    out["memory"][name] = {"rss_before_kib": before, "rss_held_kib": held, "sockets_held": opened,
                           "closed_while_held": closed, "kib_per_socket": round(per, 2)}
    note = "" if opened == int(hold) and not closed else "  (%d of %s open, %d closed while held)" % (opened, hold, closed)
    print("%-12s %8.1f MiB -> %8.1f MiB  (+%.1f MiB, %.1f KiB per socket)%s" % (
        name, before / 1024, held / 1024, (held - before) / 1024, per, note))
if jpath:
    with open(jpath, "w") as f:
        json.dump(out, f, indent=1)
REPORT
