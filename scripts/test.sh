#!/usr/bin/env bash
# Sets up everything the tests need and runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
VENV="$ONI_CACHE/venv"
# The Python client (clients/python, `oni_env`) with what its tests use: Gymnasium,
# MiniHack on the nle above, grpcio-tools to check the shipped stubs; matplotlib for the
# plots of `oni bench learning`; TensorBoard, whose own reader checks a run's event files.
"$VENV/bin/pip" install -q --disable-pip-version-check "./clients/python[dev,minihack]" "matplotlib>=3.8" \
    "tensorboard>=2.16"

# Debian packages the tests use: redis-server (label-bank tests), prometheus and promtool
# (a real server scraping a loopback cluster), debootstrap (the compose test's base image),
# Slurm, ttyrec.
# The tests start their own servers on 127.0.0.1, so the packages' own services are kept
# from starting (policy-rc.d) instead of being killed afterwards, which would also kill a
# server of the user's.
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v prometheus >/dev/null || need+=(prometheus)
command -v debootstrap >/dev/null || need+=(debootstrap)
# iproute2 and iptables: the partition tests cut links between network namespaces.
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
# ttyrec: ttyplay and ttytime read the NetHack recordings a run makes.
command -v ttyplay >/dev/null || need+=(ttyrec)
# chromium: the run page is loaded headless in a real browser (cli/tests/page.rs); DejaVu
# gives its screenshots a monospace font.
command -v chromium >/dev/null || need+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ] || need+=(fonts-dejavu-core)
# munge, slurmctld, slurmd and slurm-client: the Slurm test runs deploy/slurm/oni.sbatch on
# a one-node cluster it configures and starts itself.
command -v munged >/dev/null || need+=(munge)
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd >/dev/null || need+=(slurmd)
command -v sbatch >/dev/null || need+=(slurm-client)
# Mesa's lavapipe, a Vulkan driver that runs on the CPU, and the Vulkan loader: the GPU
# code path (burn's wgpu backend) is checked against the CPU backend without a GPU.
[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || need+=(mesa-vulkan-drivers)
ldconfig -p | grep -q 'libvulkan.so.1 ' || need+=(libvulkan1)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    rc_policy=/usr/sbin/policy-rc.d
    saved=""
    if [ -e "$rc_policy" ]; then saved=$(mktemp); $sudo cp -p "$rc_policy" "$saved"; fi
    printf '#!/bin/sh\n# oni scripts/test.sh: no service starts during this install\nexit 101\n' | $sudo tee "$rc_policy" >/dev/null
    $sudo chmod +x "$rc_policy"
    restore() { if [ -n "$saved" ]; then $sudo mv "$saved" "$rc_policy"; else $sudo rm -f "$rc_policy"; fi; }
    trap restore EXIT
    # No recommends: the node exporter would take port 9100.
    $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    restore
    trap - EXIT
fi
# A real llama-server and a small GGUF for the LLM client tests (cached after the first run).
scripts/llm-server.sh build
scripts/llm-server.sh model smollm2 >/dev/null
cargo test --release --workspace -- --test-threads 2
# One learner update on burn's wgpu backend (the CubeCL kernels and fusion that CUDA runs)
# on lavapipe, against the CPU backend.
cargo test --release -p oni-learner --features wgpu --test cross_backend
