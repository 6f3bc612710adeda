#!/usr/bin/env bash
# Installs Debian's redis-server when it is missing: the integration and e2e tiers (shared cache and
# rate limits across sidecars) and the demo start a real one on a loopback port. Nothing is started
# here, and the system service is left as Debian configures it.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
  exit 0
fi
echo "==> installing Debian's redis-server (used by the tests; once per machine)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "redis-server is missing and this user cannot install packages: apt-get install redis-server" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null || true
$SUDO apt-get install -y -q --no-install-recommends redis-server >/dev/null
# Debian's package may start its own service on 6379; tests never use that port.
echo "==> redis-server installed: $(redis-server --version | cut -d' ' -f1-3)"
