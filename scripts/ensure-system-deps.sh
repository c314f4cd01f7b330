#!/usr/bin/env bash
# libp2p pins fastecdsa, which builds from source and needs gmp headers and a C compiler.
set -euo pipefail
need=()
dpkg -s libgmp-dev >/dev/null 2>&1 || need+=(libgmp-dev)
command -v gcc >/dev/null 2>&1 || need+=(build-essential)
# the dashboard test renders the page in Debian's headless Chromium
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing system packages: ${need[*]} (install them with apt as root)" >&2
    exit 1
  fi
fi
