#!/usr/bin/env bash
# Sign-in latency through an OpenID Connect provider: complete sign-ins, one new person after
# another (or C at a time), through a release sessiongate whose only provider is the tests'
# real one (tests/oidc/provider.mjs: panva's oidc-provider under node), every step timed.
#
#   bash tests/install-deps.sh --node-only     # once: oidc-provider into target/test-node
#   cargo build --release
#   benches/oidc_sign_in.sh [--bin PATH] [--n 200] [--rounds 1] [--warmup 20]
#                           [--concurrency 1] [--json FILE]
#
#   --bin PATH        the sessiongate to measure (default target/release/sessiongate)
#   --n N             sign-ins per round (default 200), each a new person: a fresh cookie jar,
#                     fresh connections and an account of their own at the provider
#   --rounds R        rounds of N against the same programs (default 1)
#   --warmup W        sign-ins first, not counted (default 20)
#   --concurrency C   people signing in at once (default 1)
#   --json FILE       every figure and sample (default: only the summary on stdout)
#
# One sign-in (benches/tools/oidc_sign_in.py has the detail): sessiongate's start (303 to the
# provider), the provider's part (authorization request, its login form, the form posted, back
# to the callback: four requests), sessiongate's callback (the code redeemed at the provider's
# token endpoint, the ID token checked, the session made: 303 with the cookie), and the first
# request to the app (200; the upstream echoes the X-Forwarded-User it got, and the client
# checks it). Reported: p50/p95/p99/max ms of each step and of the whole, sign-ins per second;
# to split them, sessiongate's own time for its requests (its access log's `micros`), the
# provider's token endpoint timed alone (a second client, one at a time, after each round),
# and CPU ms per sign-in of sessiongate, the provider and the client.
#
# Pinning, as the other benches: sessiongate and its nginx upstream on CPU 1; the provider and
# the client (the "browsers") on CPU 0, so the provider's work does not take sessiongate's CPU.
# Ports BENCH_PORT_BASE (default 18180) + 50..52, checked free first.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$ROOT/benches/lib.sh"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/sessiongate"
N=200 ROUNDS=1 WARMUP=20 CONC=1 JSON=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --n) N=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --json) JSON=$2; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
# Paths given relative to where the script was run from, before moving to the repository.
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
case "$JSON" in /*|"") ;; *) JSON="$PWD/$JSON" ;; esac
cd "$ROOT"
[ -x "$BIN" ] || { echo "no sessiongate at $BIN: build it (cargo build --release) or pass --bin" >&2; exit 2; }
need() { command -v "$1" >/dev/null || { echo "$1 is required ($2)" >&2; exit 2; }; }
need node "apt-get install npm (brings nodejs)"; need nginx "apt-get install nginx"
need python3 "the client"; need taskset "util-linux"
MODULES="$ROOT/target/test-node/node_modules"
[ -f "$MODULES/oidc-provider/package.json" ] ||
  { echo "oidc-provider is not in $MODULES: run bash tests/install-deps.sh --node-only" >&2; exit 2; }

WORK=$(mktemp -d /tmp/sessiongate-oidc-bench.XXXXXX)
PIDS=()  # everything started here, stopped by the EXIT trap (KEEP_WORK=1 keeps the logs)
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Prints the logs and stops, when a program did not come up.
died() {
  echo "$1" >&2
  for f in "$WORK"/*.log "$WORK"/*.err; do [ -s "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }; done
  exit 1
}

BASE=${BENCH_PORT_BASE:-18180}
UP=$((BASE + 50)) SG=$((BASE + 51)) OP=$((BASE + 52))
for p in $UP $SG $OP; do port_free "$p"; done
ISSUER="http://127.0.0.1:$OP"
GATE="http://127.0.0.1:$SG"
CLIENT_ID=sessiongate CLIENT_SECRET="bench-client-secret-0123456789"

# The app: nginx answering every request with the identity sessiongate sent it.
cat >"$WORK/upstream.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/upstream.pid; error_log $WORK/upstream.err warn;
events { worker_connections 1024; }
http { access_log off;
  server { listen 127.0.0.1:$UP;
    location / { default_type text/plain; return 200 "user=\$http_x_forwarded_user\n"; } } }
CONF
taskset -c 1 nginx -c "$WORK/upstream.conf" -e "$WORK/upstream.err" & PIDS+=($!)
wait_port $UP || died "the upstream did not start"

# The provider, with sessiongate registered as a client for its callback, and the client's
# probe (it times the token endpoint alone; its redirect URI is never fetched). The accounts
# are added by the client before the run.
cat >"$WORK/provider.json" <<JSON
{"port": $OP,
 "clients": [{"client_id": "$CLIENT_ID", "client_secret": "$CLIENT_SECRET",
              "redirect_uris": ["$GATE/.sessiongate/oidc/local/callback"]},
             {"client_id": "probe", "client_secret": "bench-probe-secret-0123456789",
              "redirect_uris": ["http://127.0.0.1:9/probe-callback"]}],
 "accounts": {}}
JSON
OIDC_PROVIDER_MODULES="$MODULES" taskset -c 0 node "$ROOT/tests/oidc/provider.mjs" "$WORK/provider.json" \
  >"$WORK/provider.out" 2>"$WORK/provider.log" & OP_PID=$!; PIDS+=("$OP_PID")
for _ in $(seq 1 600); do
  grep -q '^listening ' "$WORK/provider.out" 2>/dev/null && break
  kill -0 $OP_PID 2>/dev/null || died "the provider exited"
  sleep 0.1
done
grep -qx "listening $ISSUER" "$WORK/provider.out" || died "the provider did not say it listens on $ISSUER"

# sessiongate: the provider as its only [[providers]] entry, and one local user (a config
# with no [[users]] is refused by builds from before providers).
{
  sessiongate_toml $SG $UP
  cat <<CONF

[[providers]]
id = "local"
name = "Local test provider"
issuer = "$ISSUER"
client_id = "$CLIENT_ID"
client_secret = "$CLIENT_SECRET"
groups_claim = "groups"
CONF
  alice_user "$BIN"
} >"$WORK/sessiongate.toml"
RUST_LOG=info taskset -c 1 "$BIN" --config "$WORK/sessiongate.toml" >"$WORK/sessiongate.log" 2>&1 & SG_PID=$!; PIDS+=("$SG_PID")
wait_port $SG 300 || died "sessiongate did not start"
# The provider is discovered in the background: wait until its start answers 303, not 503.
for _ in $(seq 1 300); do
  code=$(python3 - "$GATE/.sessiongate/oidc/local/start" <<'PY'
import sys, urllib.parse, http.client
u = urllib.parse.urlsplit(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
c.request("GET", u.path)
print(c.getresponse().status)
PY
  ) || true
  [ "$code" = 303 ] && break
  kill -0 $SG_PID 2>/dev/null || died "sessiongate exited"
  sleep 0.1
done
[ "$code" = 303 ] || died "sessiongate's provider start never answered 303 (last: $code)"

# What was measured: the binary's modification time, and the HEAD of the repository it sits
# in (the binary may be older than that HEAD: compare the dates).
HEAD_NOW=$(git -C "$(dirname "$BIN")" log -1 --format='%h %cI' 2>/dev/null || echo unknown)
BUILT=$(date -u -r "$BIN" +%Y-%m-%dT%H:%M:%SZ)
META=$(python3 -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
  bin "$BIN" bin_sha256 "$(sha256sum "$BIN" | cut -c1-64)" bin_modified "$BUILT" repo_head "$HEAD_NOW" date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  pinning "sessiongate and its upstream on CPU 1, the provider and the client on CPU 0" \
  node "$(node --version)" \
  oidc_provider "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$MODULES/oidc-provider/package.json")")
args=(--gate "$GATE" --issuer "$ISSUER" --n "$N" --rounds "$ROUNDS" --warmup "$WARMUP"
      --concurrency "$CONC" --gate-pid "$SG_PID" --provider-pid "$OP_PID" --gate-log "$WORK/sessiongate.log"
      --meta "$META")
[ -n "$JSON" ] && args+=(--json "$JSON")
echo "sessiongate $BIN (modified $BUILT; its repository's HEAD: $HEAD_NOW), provider $ISSUER (oidc-provider under node $(node --version))"
# In the background and waited for, so a signal to this script stops the run at once (the
# trap stops the client with the rest).
taskset -c 0 python3 "$ROOT/benches/tools/oidc_sign_in.py" "${args[@]}" & CLIENT=$!; PIDS+=("$CLIENT")
wait "$CLIENT"
if grep -q ' WARN \| ERROR ' "$WORK/sessiongate.log"; then
  echo "--- sessiongate warned:" >&2; grep ' WARN \| ERROR ' "$WORK/sessiongate.log" | tail -n 5 >&2
fi
