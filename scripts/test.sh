#!/usr/bin/env bash
# Sets up everything the tests need and runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
# Redis for the label-bank tests (the tests start their own instances on 127.0.0.1).
if ! command -v redis-server >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    pkill -x redis-server 2>/dev/null || true  # the package may start one on 6379; tests use their own
fi
# Prometheus (promtool, and a real server scraping a loopback cluster) and debootstrap (the
# compose test's base image). No recommends: the node exporter would take port 9100.
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    pkill -x prometheus 2>/dev/null || true  # the package starts one on 9090; tests start their own
fi
# A real llama-server and a small GGUF for the LLM client tests (cached after the first run).
scripts/llm-server.sh build
scripts/llm-server.sh model smollm2 >/dev/null
cargo test --release --workspace -- --test-threads 2
