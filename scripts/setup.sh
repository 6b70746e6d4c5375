#!/usr/bin/env bash
# Installs what running oni needs on a Debian machine with a Rust toolchain and builds the
# `oni` binary (release) into $CARGO_TARGET_DIR. The tests' extra needs are in test.sh.
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
# NetHack: NLE's libnethack.so from the nle==1.3.0 wheel, in a project-owned venv (the
# binary loads the library itself; no Python at run time).
NLE_VERSION=1.3.0
VENV="$ONI_CACHE/venv"
PY="${ONI_PYTHON:-python3}"
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('nle') == '$NLE_VERSION'" 2>/dev/null; then
    echo "installing nle==$NLE_VERSION into $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "nle==$NLE_VERSION"
fi

echo "building oni (release) into $CARGO_TARGET_DIR"
cargo build --release -p oni --bin oni
