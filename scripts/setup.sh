#!/usr/bin/env bash
# Installs what building and testing oni needs on a Debian machine with a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

if ! command -v cargo >/dev/null; then
    echo "error: cargo not found. Install Rust (https://rustup.rs), then run this again." >&2
    exit 1
fi
need=()
command -v cc >/dev/null || need+=(build-essential)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}";
    else sudo apt-get update -qq && sudo apt-get install -y -qq "${need[@]}"; fi
fi
echo "building oni (release) into $CARGO_TARGET_DIR"
cargo build --release --workspace --all-targets
