#!/usr/bin/env bash
# Try "Sign in with ..." on one machine with one command, from a fresh clone:
#
#   scripts/try-oidc.sh
#
# Starts the tests' local OpenID Connect provider (tests/oidc/provider.mjs: panva's
# oidc-provider under node) with two accounts, a tiny app that shows who is signed in, and
# sessiongate on http://127.0.0.1:8080 in front of the app with that provider as its only way
# in. Ctrl-C stops all three.
#
# Needs node and npm (oidc-provider is put under target/test-node on the first run), python3
# for the app, and a Rust toolchain to build sessiongate; set SESSIONGATE_BIN to use a
# sessiongate binary already built instead. Port 8080 must be free.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
listen="127.0.0.1:8080"
client_id="sessiongate"
client_secret="try-it-secret"
callback="http://$listen/.sessiongate/oidc/local/callback"

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "try-oidc: '$1' is needed: $2" >&2
    exit 1
  }
}
need node "install Node.js 20 or later with npm (Debian: apt-get install npm)"
need npm "install npm (Debian: apt-get install npm)"
need python3 "the app behind sessiongate is a few lines of Python"

# oidc-provider at the version the tests pin; quick when it is already there.
"$root/tests/install-deps.sh" --node-only

if [ -n "${SESSIONGATE_BIN:-}" ]; then
  sessiongate="$SESSIONGATE_BIN"
else
  need cargo "install a Rust toolchain, or set SESSIONGATE_BIN to a sessiongate binary"
  echo "--- building sessiongate (cargo build --release)"
  (cd "$root" && cargo build --release --quiet)
  sessiongate="${CARGO_TARGET_DIR:-$root/target}/release/sessiongate"
fi
[ -x "$sessiongate" ] || {
  echo "try-oidc: no sessiongate binary at $sessiongate" >&2
  exit 1
}

work="$(mktemp -d "${TMPDIR:-/tmp}/sessiongate-try-oidc.XXXXXX")"
pids=()
# shellcheck disable=SC2317 # run by the EXIT trap
stop_all() {
  trap - EXIT INT TERM
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap stop_all EXIT
trap 'echo; echo "--- stopping"; exit 0' INT TERM

# Waits up to 30 s for the first line of file $1, written by process $2; prints that line.
first_line() {
  local file="$1" pid="$2" what="$3" line
  for _ in $(seq 300); do
    if line="$(head -n 1 "$file" 2>/dev/null)" && [ -n "$line" ]; then
      echo "$line"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "try-oidc: $what exited:" >&2
      cat "$work"/*.log >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
  echo "try-oidc: $what did not start within 30 s" >&2
  exit 1
}

# The provider: two accounts and sessiongate's client, registered for its callback.
cat >"$work/provider.json" <<EOF
{
  "port": 0,
  "clients": [{
    "client_id": "$client_id",
    "client_secret": "$client_secret",
    "redirect_uris": ["$callback"],
    "post_logout_redirect_uris": ["http://$listen/"]
  }],
  "accounts": {
    "ann": {"sub": "ann", "email": "ann@example.com", "email_verified": true,
            "preferred_username": "ann", "name": "Ann", "groups": ["staff"]},
    "bob": {"sub": "bob", "email": "bob@example.com", "email_verified": true,
            "preferred_username": "bob", "name": "Bob"}
  }
}
EOF
node "$root/tests/oidc/provider.mjs" "$work/provider.json" >"$work/provider.out" 2>"$work/provider.log" &
pids+=($!)
issuer="$(first_line "$work/provider.out" "${pids[-1]}" "the OpenID provider")"
issuer="${issuer#listening }"

# The app: says who sessiongate signed in, and shows the headers it got.
python3 -u -c '
import html, http.server
class App(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        user = self.headers.get("X-Forwarded-User", "(nobody: this request did not come through sessiongate)")
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in self.headers.items())
        body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>try-oidc app</title>
<style>body{{font-family:system-ui,sans-serif;margin:3rem}}td{{padding:.2rem .8rem;border-bottom:1px solid #ddd;font-family:monospace}}</style></head>
<body><h1>Hello, {html.escape(user)}!</h1>
<p>sessiongate signed you in with the local OpenID provider and sent your name in <code>X-Forwarded-User</code>.</p>
<form method="post" action="/.sessiongate/logout"><button type="submit">Log out</button></form>
<h2>Headers the app received</h2><table>{rows}</table></body></html>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), App)
print(server.server_address[1])
server.serve_forever()
' >"$work/app.out" 2>"$work/app.log" &
pids+=($!)
app_port="$(first_line "$work/app.out" "${pids[-1]}" "the app")"

secret="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
cat >"$work/sessiongate.toml" <<EOF
[server]
listen = "$listen"

[upstream]
url = "http://127.0.0.1:$app_port"

[session]
secret = "$secret"
# Plain http on loopback, so the cookie cannot be Secure here.
secure = false

[[providers]]
id = "local"
name = "Local test provider"
issuer = "$issuer"
client_id = "$client_id"
client_secret = "$client_secret"
groups_claim = "groups"
EOF

if (exec 3<>"/dev/tcp/127.0.0.1/8080") 2>/dev/null; then
  echo "try-oidc: something already listens on $listen; stop it first" >&2
  exit 1
fi
"$sessiongate" --config "$work/sessiongate.toml" &
pids+=($!)
sessiongate_pid="${pids[-1]}"
for _ in $(seq 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/8080") 2>/dev/null; then
    break
  fi
  if ! kill -0 "$sessiongate_pid" 2>/dev/null; then
    echo "try-oidc: sessiongate exited; the config it was given:" >&2
    sed 's/^secret = .*/secret = "(random, not shown)"/' "$work/sessiongate.toml" >&2
    exit 1
  fi
  sleep 0.1
done

cat <<EOF

  sessiongate with OpenID Connect sign-in
  open        http://$listen/
  provider    $issuer (the tests' oidc-provider; sign in by typing a username)
  accounts    ann  (ann@example.com, group staff)
              bob  (bob@example.com, no groups)
  registered  client_id $client_id, redirect URI $callback
  stop with   Ctrl-C

EOF

# Runs until Ctrl-C, or until one of the three exits on its own.
wait -n "${pids[@]}" || true
echo "try-oidc: sessiongate, the provider or the app exited; stopping the others." >&2
echo "--- provider's log" >&2
cat "$work/provider.log" "$work/app.log" >&2 || true
exit 1
