# Sourced by the project's scripts: one shared build directory and cache outside the clone,
# so a fresh clone (CI) reuses earlier builds.
export ONI_CACHE="${ONI_CACHE:-$HOME/.cache/oni}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ONI_CACHE/target}"
mkdir -p "$ONI_CACHE"
