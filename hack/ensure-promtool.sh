#!/usr/bin/env bash
# Installs promtool when it is missing: tests/integration/test_alert_rules.py checks the chart's alert
# rules with `promtool check rules` and runs their unit tests (`promtool test rules`). Debian ships
# promtool in its `prometheus` package (2.42 on bookworm); only the binary is used. The Prometheus
# server of that package is never started here: while apt-get runs, a policy-rc.d (the Debian way)
# refuses service starts, unless the machine already has one.
set -euo pipefail
if command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ]; then
  exit 0
fi
echo "==> installing promtool from Debian's prometheus package (used by the tests; once per machine)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "promtool is missing and this user cannot install packages: apt-get install prometheus" >&2
    exit 1
  fi
fi
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  trap '$SUDO rm -f "$POLICY"' EXIT
  printf '#!/bin/sh\n# written by llmroute hack/ensure-promtool.sh while apt-get runs\nexit 101\n' \
    | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
fi
export DEBIAN_FRONTEND=noninteractive
echo "==> apt-get update"
$SUDO apt-get update -q >/dev/null || true
echo "==> apt-get install prometheus (for /usr/bin/promtool; its service is not started)"
$SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null
echo "==> promtool installed: $(/usr/bin/promtool --version 2>&1 | head -n1)"
