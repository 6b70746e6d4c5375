#!/usr/bin/env bash
# Sets up and runs the main job: `oni run` on a preset (default configs/keyroom.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
exec "$CARGO_TARGET_DIR/release/oni" run --config "${1:-configs/keyroom.toml}" "${@:2}"
