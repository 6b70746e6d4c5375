#!/usr/bin/env bash
# Sets up everything the tests need and runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
cargo test --release --workspace -- --test-threads 2
