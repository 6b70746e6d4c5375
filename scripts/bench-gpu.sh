#!/usr/bin/env bash
# Every GPU figure in one run, on a machine with an NVIDIA GPU and its driver:
#   1. `oni bench learner` on ONI's network (configs/nethack-score.toml, batch 128 × 32) on
#      cuda with burn, alternating with the PyTorch reference of the same network, update and
#      batch on cuda, and their ratio;
#   2. `oni bench e2e` on nethack-score with the learner on the GPU and one actor per
#      remaining core (64 envs each), with inference on the actors' CPUs (local) and on the
#      learner's GPU (remote: the central inference service);
# and prints one JSON object with all of it.
#
#   scripts/bench-gpu.sh [path/to/oni built with --features cuda]
#
# Build the binary with `cargo build --release -p oni --features cuda` (x86_64; it needs the
# NVIDIA driver's libcuda at run time, nothing else). The PyTorch reference needs a python
# with torch: $ONI_TORCH_PYTHON, else ~/.cache/oni/torch-venv (scripts/torch-venv.sh).
# NetHack needs NLE's libnethack.so: $ONI_NLE_DIR, else the project venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ONI="${1:-$CARGO_TARGET_DIR/release/oni}"
OUT="${BENCH_OUT:-$(mktemp -d)}"
SECONDS_E2E="${SECONDS_E2E:-120}"
UPDATES="${UPDATES:-10}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>/dev/null || echo "unknown" > "$OUT/gpu.txt"
cores=$(nproc)
actors=$(( cores > 2 ? cores - 1 : 1 ))

# 1. learner: burn on cuda vs the PyTorch reference on cuda (the same batch, alternating)
"$ONI" bench learner --config configs/nethack-score.toml --set learner.device=\"cuda\" \
    --updates "$UPDATES" --reference torch --rounds 2 > "$OUT/learner.json"

# 1b. the same on this machine's CPU cores, for scale
"$ONI" bench learner --config configs/nethack-score.toml --updates 3 > "$OUT/learner-cpu.json"

# 2. end to end: learner on the GPU, one actor per remaining core; inference in the actors
#    (local) and in the learner's central service on the GPU (remote). GPU busy from
#    nvidia-smi, sampled every second during each run.
for placement in local remote; do
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -l 1 > "$OUT/busy-$placement.txt" 2>/dev/null &
    smi=$!
    "$ONI" bench e2e --config configs/nethack-score.toml --set learner.device=\"cuda\" \
        --set actor.count="$actors" --set actor.num_envs=64 --set actor.inference=\"$placement\" \
        --seconds "$SECONDS_E2E" > "$OUT/e2e-$placement.json"
    kill "$smi" 2>/dev/null || true
done

python3 - "$OUT" "$cores" <<'EOF'
import json, sys, os
out, cores = sys.argv[1], int(sys.argv[2])
r = lambda f: json.load(open(os.path.join(out, f)))
def busy(placement):
    try:
        v = [float(x) for x in open(os.path.join(out, f"busy-{placement}.txt")) if x.strip()]
    except OSError:
        return None
    return sum(v) / len(v) if v else None
local, remote = r("e2e-local.json"), r("e2e-remote.json")
print(json.dumps({
    "gpu": open(os.path.join(out, "gpu.txt")).read().strip(), "cpu_cores": cores,
    "learner_cuda": r("learner.json"), "learner_cpu": r("learner-cpu.json"),
    "e2e_local": local, "e2e_remote": remote,
    "gpu_busy_percent": {"local": busy("local"), "remote": busy("remote")},
    "remote_over_local": remote["steps_per_sec"] / max(local["steps_per_sec"], 1e-9),
}))
EOF
