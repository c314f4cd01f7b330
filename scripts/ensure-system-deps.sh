#!/usr/bin/env bash
# libp2p pins fastecdsa, which builds from source and needs gmp headers and a C compiler.
set -euo pipefail
need=()
dpkg -s libgmp-dev >/dev/null 2>&1 || need+=(libgmp-dev)
command -v gcc >/dev/null 2>&1 || need+=(build-essential)
# the dashboard test renders the page in Debian's headless Chromium
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# challenge toolchains (docs/challenge-authors.md, section 2). Rust: Debian bookworm's rustc 1.63 with
# the wasm32 standard library; `challenge build` runs /usr/bin/rustc and its linker /usr/bin/rust-lld
# (a symlink to lld-14) by path, never a rustup toolchain, so every machine builds the same bytes.
[ -x /usr/bin/rustc ] || need+=(rustc)
dpkg -s libstd-rust-dev-wasm32 >/dev/null 2>&1 || need+=(libstd-rust-dev-wasm32)
dpkg -s lld-14 >/dev/null 2>&1 || need+=(lld-14)
# AssemblyScript: Node.js and npm (any Node.js >= 18); the pinned asc itself is npm-installed by
# `challenge build` on first use into ~/.cache/platform-validator/assemblyscript ($PV_ASC_CACHE).
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing system packages: ${need[*]} (install them with apt as root)" >&2
    exit 1
  fi
fi
