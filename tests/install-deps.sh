#!/usr/bin/env bash
# Installs the programs the test suite runs that a fresh Debian machine lacks. Safe to run
# again: a package is installed only when the command that proves it is there is missing.
# With --node-only, only the npm packages (see below).
set -euo pipefail

# command that proves the package is installed -> Debian package that provides it.
# To add a dependency, add one line here (e.g. [nginx]=nginx [redis-server]=redis-server).
declare -A PACKAGES=(
  [nginx]=nginx                     # tests/it/edge_proxies.rs: forward-auth behind a real nginx
  [caddy]=caddy                     # tests/it/edge_proxies.rs: forward-auth behind a real Caddy
  [chromium]=chromium               # tests/it/browser.rs: the real browser
  [chromedriver]=chromium-driver    # tests/it/browser.rs: WebDriver for that browser
  [redis-server]=redis-server       # tests/it/redis_*.rs: the Redis session store
  [redis-sentinel]=redis-sentinel   # tests/it/redis_sentinel.rs: three sentinels watching master and replica
  [npm]=npm                         # installs axe-core and oidc-provider (brings nodejs, which runs them)
  [curl]=curl                       # tests/it/security_upgrades.rs: the h2c attack as curl makes it
)

missing=()
for cmd in "${!PACKAGES[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    missing+=("${PACKAGES[$cmd]}")
  fi
done

# From npm into target/test-node, once the system packages are in (npm may be one of them):
# axe-core, the accessibility checker tests/it/browser.rs runs in the page, and oidc-provider,
# the OpenID Connect provider tests/oidc/provider.mjs runs for the sign-in tests
# (tests/it/common/oidc.rs) and scripts/try-oidc.sh. A package is (re)installed only when
# the installed version differs from the pinned one.
node_modules_dir="$(cd "$(dirname "$0")/.." && pwd)/target/test-node"
node_packages=(axe-core@4.14.1 oidc-provider@9.13.3)
install_node_packages() {
  local spec name version wanted=()
  for spec in "${node_packages[@]}"; do
    name="${spec%@*}"
    version="${spec##*@}"
    if ! grep -qs "\"version\": \"$version\"" "$node_modules_dir/node_modules/$name/package.json"; then
      wanted+=("$spec")
    fi
  done
  if [ ${#wanted[@]} -gt 0 ]; then
    echo "--- installing for the tests from npm: ${wanted[*]}"
    npm install --prefix "$node_modules_dir" --save-exact --no-audit --no-fund --silent "${wanted[@]}"
  fi
}

# scripts/try-oidc.sh needs only these: `tests/install-deps.sh --node-only`.
if [ "${1:-}" = "--node-only" ]; then
  install_node_packages
  exit 0
fi

# Python packages some tests parse with (a real Prometheus text-format parser, a real
# Dockerfile parser, a YAML loader), and hypercorn, the h2c-capable app server
# tests/it/security_upgrades.rs puts behind sessiongate (with h2, the HTTP/2 library its client
# speaks), in a virtual environment of their own under target/, so the system's Python is
# left alone. tests/it/common/python.rs finds it there.
pyenv="$(cd "$(dirname "$0")/.." && pwd)/target/test-python"
python_packages=(prometheus-client==0.26.0 dockerfile-parse==2.0.1 pyyaml==6.0.4 hypercorn==0.18.0 h2==4.4.1)
if ! "$pyenv/bin/python3" -c 'import prometheus_client, dockerfile_parse, yaml, hypercorn, h2' 2>/dev/null; then
  echo "--- installing Python packages for the tests: ${python_packages[*]}"
  python3 -m venv "$pyenv"
  "$pyenv/bin/python3" -m pip install --quiet --disable-pip-version-check "${python_packages[@]}"
fi

if [ ${#missing[@]} -eq 0 ]; then
  install_node_packages
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi

# Another apt run (unattended upgrades, a parallel job) is waited for instead of failing at
# once: DPkg::Lock::Timeout covers dpkg's lock for the install, but not the lists lock that
# apt-get update takes, so update is retried for up to 5 minutes.
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)

echo "--- installing for the tests: ${missing[*]}"
for try in $(seq 60); do
  "${apt[@]}" update -qq && break
  if [ "$try" -eq 60 ]; then
    echo "install-deps: apt-get update kept failing" >&2
    exit 1
  fi
  echo "install-deps: apt-get update failed (another apt running?), retrying in 5s" >&2
  sleep 5
done
"${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Fail here, not later in a test, if a package did not bring the command it was listed for.
for cmd in "${!PACKAGES[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || {
    echo "install-deps: '$cmd' is still missing after installing ${PACKAGES[$cmd]}" >&2
    exit 1
  }
done

install_node_packages
