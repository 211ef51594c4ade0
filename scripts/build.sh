#!/usr/bin/env bash
# Installs dependencies (idempotent) and builds Muster with CMake + Ninja + ccache into
# ./build (override with MUSTER_BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR="${MUSTER_BUILD_DIR:-build}"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
# Cache hits across checkouts at different paths (CI clones afresh): paths relative to the
# checkout, and the working directory left out of the hash of -g builds.
export CCACHE_BASEDIR="$(pwd)" CCACHE_NOHASHDIR=1
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${MUSTER_BUILD_TYPE:-RelWithDebInfo}"
fi
cmake --build "$BUILD_DIR" --parallel "$(nproc)"
