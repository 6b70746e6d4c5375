#!/usr/bin/env bash
# Builds the stack's images on a Docker engine that reaches no image registry:
#   oni/debian:bookworm   a Debian base made with debootstrap and `docker import`
#   oni/oni:latest        the `oni` binary (built here, on the host) + NLE's libnethack
#   oni/redis:latest      Debian's redis-server
#   oni/llama-server:latest  llama-server built by scripts/llm-server.sh (model mounted)
# With a registry, `docker-compose build` builds oni/oni from source instead (see the
# Dockerfile's `runtime` target) and the stock redis image works as well.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="$ONI_CACHE/images"
mkdir -p "$CACHE"

base() {
    docker image inspect oni/debian:bookworm >/dev/null 2>&1 && return
    local tarball="$CACHE/debian-bookworm.tar"
    if [ ! -s "$tarball" ]; then
        command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
        local root; root=$(mktemp -d)
        echo "debootstrap bookworm into $root (a few minutes, once; cached in $tarball)"
        # the runtime libraries every image needs; redis-server for the redis image
        debootstrap --variant=minbase --include=ca-certificates,libgomp1,redis-server,redis-tools bookworm "$root" "$MIRROR" >/dev/null
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
    fi
    docker import "$tarball" oni/debian:bookworm >/dev/null
    echo "imported oni/debian:bookworm"
}

oni_image() {
    local stage=deploy/.build
    rm -rf "$stage" && mkdir -p "$stage"
    [ -x "$CARGO_TARGET_DIR/release/oni" ] || cargo build --release -p oni
    cp "$CARGO_TARGET_DIR/release/oni" "$stage/oni"
    local nle; nle=$("$ONI_CACHE/venv/bin/python" -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('nle').origin))")
    cp -r "$nle" "$stage/nle"
    rm -rf "$stage/nle/__pycache__" "$stage"/nle/*/__pycache__
    cp "$ONI_CACHE/bin/llama-server" "$stage/llama-server"
    docker build -q -f deploy/Dockerfile --target runtime-prebuilt --build-arg BASE_IMAGE=oni/debian:bookworm -t oni/oni:latest . >/dev/null
    docker build -q -f deploy/Dockerfile --target redis --build-arg BASE_IMAGE=oni/debian:bookworm -t oni/redis:latest . >/dev/null
    docker build -q -f deploy/Dockerfile --target llama-server --build-arg BASE_IMAGE=oni/debian:bookworm -t oni/llama-server:latest . >/dev/null
    echo "built oni/oni:latest, oni/redis:latest, oni/llama-server:latest"
}

base
oni_image
