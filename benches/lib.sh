# Shell helpers shared by benches/load.sh, benches/profile.sh and benches/peers/peers.sh:
# ports, the nginx upstream every benchmark proxies to, the nginx reference proxy, and
# sessiongate's bench config.
# Source it; it defines functions only.

# Exits when something already listens on the port: measuring through someone else's server
# would be wrong.
port_free() {
  if (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then
    echo "port $1 is already in use (another benchmark running?): set BENCH_PORT_BASE (or --ports) to a free range" >&2
    exit 2
  fi
}

# wait_port PORT [TENTHS]: waits up to TENTHS x 0.1 s (default 100) for a listener.
wait_port() {
  for _ in $(seq 1 "${2:-100}"); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2; return 1
}

# upstream_conf DIR PORT: writes DIR/upstream.conf, the upstream of every benchmark: one nginx
# worker answering every request with a ~100-byte body, keep-alive without a request limit.
upstream_conf() {
  cat >"$1/upstream.conf" <<CONF
worker_processes 1; daemon off; pid $1/upstream.pid; error_log $1/upstream.err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:$2 backlog=4096;
    location / { default_type text/plain; return 200 "hello from upstream: a small body of about one hundred bytes for the proxy benchmark\n"; } } }
CONF
}

# nginx_proxy_conf DIR NAME PORT UPSTREAM_PORT [CONNECTIONS [HTTP_DIRECTIVES]]: writes
# DIR/NAME.conf, the reference proxy: nginx proxy_pass on PORT with upstream keep-alive and no
# auth (it sets the identity header a login proxy would, so the upstream sees the same
# request). CONNECTIONS (default 8192) raises worker_connections and the file limit with it.
nginx_proxy_conf() {
  local limit=""
  [ -n "${5:-}" ] && limit="worker_rlimit_nofile $(($5 + 10000));"
  cat >"$1/$2.conf" <<CONF
worker_processes 1; daemon off; pid $1/$2.pid; error_log $1/$2.err warn; $limit
events { worker_connections ${5:-8192}; }
http { access_log off; keepalive_requests 10000000; ${6:-}
  upstream up { server 127.0.0.1:$4; keepalive 256; }
  server { listen 127.0.0.1:$3 backlog=4096;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header X-Forwarded-User "alice"; } } }
CONF
}

# nginx_authreq_conf DIR NAME PORT UPSTREAM_PORT GATE_PORT: writes DIR/NAME.conf, nginx in front
# of the upstream asking sessiongate on GATE_PORT about every request with auth_request, as
# README.md's forward-auth config does (upstream keep-alive to both).
nginx_authreq_conf() {
  cat >"$1/$2.conf" <<CONF
worker_processes 1; daemon off; pid $1/$2.pid; error_log $1/$2.err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  upstream up { server 127.0.0.1:$4; keepalive 256; }
  upstream gate { server 127.0.0.1:$5; keepalive 256; }
  server { listen 127.0.0.1:$3 backlog=4096;
    location / {
      auth_request /.sessiongate/auth/nginx;
      auth_request_set \$auth_user \$upstream_http_x_forwarded_user;
      auth_request_set \$auth_groups \$upstream_http_x_forwarded_groups;
      proxy_set_header X-Forwarded-User \$auth_user; proxy_set_header X-Forwarded-Groups \$auth_groups;
      proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location = /.sessiongate/auth/nginx {
      internal; proxy_pass http://gate; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass_request_body off; proxy_set_header Content-Length "";
      proxy_set_header Host \$http_host; proxy_set_header X-Original-Method \$request_method;
      proxy_set_header X-Original-URI \$request_uri; }
    location /.sessiongate/ { proxy_pass http://gate; proxy_set_header Host \$http_host; } } }
CONF
}

# sessiongate_toml PORT UPSTREAM_PORT [EXTRA_SERVER_LINES]: prints sessiongate's bench config
# without users (plain http, so the cookie is not Secure; a fixed secret).
sessiongate_toml() {
  cat <<CONF
[server]
listen = "127.0.0.1:$1"
${3:-}

[upstream]
url = "http://127.0.0.1:$2"

[session]
secret = "bench-secret-0123456789abcdef0123456789abcdef"
secure = false
CONF
}

# alice_user BIN [GROUPS]: prints the [[users]] entry of the bench user alice (password
# "wonderland"), in GROUPS (a TOML array such as '["bench"]') when given.
alice_user() {
  printf '\n[[users]]\nname = "alice"\npassword_hash = "%s"\n' "$(printf wonderland | "$1" hash-password)"
  if [ -n "${2:-}" ]; then printf 'groups = %s\n' "$2"; fi
}

# bench_rules N: prints N [[rules]] tables of the kinds operators write (prefixes for other
# users and groups, method- and host-specific ones, a deny), none of which matches the bench
# request GET / until the last, path = "/" allowing group bench: the request is checked
# against every rule. Needs alice_user with groups '["bench"]'.
bench_rules() {
  local n=$1 i
  for i in $(seq 1 $((n - 1))); do
    case $((i % 4)) in
      0) printf '\n[[rules]]\npath = "/app%d"\nallow = ["alice"]\n' "$i" ;;
      1) printf '\n[[rules]]\npath = "/admin%d/"\nallow = ["group:bench"]\n' "$i" ;;
      2) printf '\n[[rules]]\npath = "/api%d"\nmethods = ["POST", "PUT"]\nallow = ["group:bench"]\n' "$i" ;;
      3) printf '\n[[rules]]\npath = "/"\nhost = "host%d.example.com"\ndeny = true\n' "$i" ;;
    esac
  done
  printf '\n[[rules]]\npath = "/"\nallow = ["group:bench"]\n'
}

# start_identity_upstream WORK PORT STAT_PORT: starts nginx (one worker) answering 200 on PORT,
# logging to WORK/upstream-unidentified.log only the requests that arrive without
# `X-Forwarded-User: alice` (a request forwarded without a checked session), with stub_status on
# STAT_PORT; appends its pid to PIDS and waits for STAT_PORT only (wait_port's probe on PORT
# would be logged as such a request). Used by redis_outage.sh and redis_failover.sh.
start_identity_upstream() {
  local work=$1 port=$2 stat=$3
  cat >"$work/upstream.conf" <<CONF
worker_processes 1; daemon off; pid $work/upstream.pid; error_log $work/upstream.err warn;
events { worker_connections 8192; }
http { keepalive_requests 10000000;
  map \$http_x_forwarded_user \$unidentified { "alice" 0; default 1; }
  log_format unidentified '\$msec \$remote_addr "\$request" user="\$http_x_forwarded_user"';
  access_log $work/upstream-unidentified.log unidentified if=\$unidentified;
  server { listen 127.0.0.1:$port backlog=4096;
    location / { default_type text/plain; return 200 "hello from upstream: a small body of about one hundred bytes for the proxy benchmark\n"; } }
  server { listen 127.0.0.1:$stat; access_log off; location / { stub_status; } } }
CONF
  : >"$work/upstream-unidentified.log"
  nginx -c "$work/upstream.conf" -e "$work/upstream.err" & PIDS+=($!)
  wait_port "$stat"
}

# upstream_requests_at STAT_PORT: stub_status's request count (every request nginx served, this
# one included).
upstream_requests_at() { curl -sf "http://127.0.0.1:$1/" | awk 'NR == 3 { print $3 }'; }
