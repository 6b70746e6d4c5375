#!/usr/bin/env bash
# Installs PyTorch into its own venv, ~/.cache/oni/torch-venv, for the reference benchmarks
# (`oni bench learner --reference torch`). Never run by the tests or CI: PyPI's torch wheel
# pulls several GB of CUDA libraries. Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
VENV="$ONI_CACHE/torch-venv"
if ! "$VENV/bin/python" -c "import torch, numpy" 2>/dev/null; then
    echo "installing torch into $VENV (a few GB, once)" >&2
    "${ONI_PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check torch numpy >&2
fi
# Debian's jemalloc: the reference runs PyTorch with it preloaded, as `oni` runs with its own
# (without it the bench says "glibc malloc" and PyTorch is measured slower than it can be).
if ! ldconfig -p | grep -q 'libjemalloc.so.2 '; then
    echo "installing Debian's libjemalloc2 for the reference" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y -qq --no-install-recommends libjemalloc2 >&2
fi
echo "$VENV/bin/python"
