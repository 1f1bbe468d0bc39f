#!/usr/bin/env bash
# Install promtool (Prometheus's rule checker), used by tests/chart to check and unit-test the chart's alert
# rules. It comes with Debian's `prometheus` package (the server is installed too, but not started here).
# Idempotent: does nothing if promtool already runs. Needs root and apt-get (Debian/Ubuntu).
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && promtool --version >/dev/null 2>&1; then
  echo "promtool already installed: $(command -v promtool)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_promtool.sh: apt-get not found; install Prometheus's promtool another way (tests skip without it)" >&2
  exit 1
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
echo "installed $(command -v promtool): $(promtool --version 2>&1 | head -n 1)"
