#!/usr/bin/env bash
# Installs dependencies (idempotent) and builds Muster with CMake + Ninja + ccache into
# ./build (override with MUSTER_BUILD_DIR). MUSTER_SANITIZE=address,undefined or thread builds
# an instrumented copy into build-asan-ubsan / build-tsan instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
SANITIZE="${MUSTER_SANITIZE:-}"
case "$SANITIZE" in
  "") default_dir=build ;;
  address,undefined | undefined,address) default_dir=build-asan-ubsan ;;
  address) default_dir=build-asan ;;
  thread) default_dir=build-tsan ;;
  *) echo "MUSTER_SANITIZE=$SANITIZE: use address,undefined or thread" >&2; exit 2 ;;
esac
BUILD_DIR="${MUSTER_BUILD_DIR:-$default_dir}"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
# Cache hits across checkouts at different paths (CI clones afresh): paths relative to the
# checkout, and the working directory left out of the hash of -g builds.
export CCACHE_BASEDIR="$(pwd)" CCACHE_NOHASHDIR=1
if [ ! -f "$BUILD_DIR/build.ninja" ] ||
   [ "$(sed -n 's/^MUSTER_SANITIZE:STRING=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null)" != "$SANITIZE" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${MUSTER_BUILD_TYPE:-RelWithDebInfo}" \
    -DMUSTER_SANITIZE="$SANITIZE"
fi
cmake --build "$BUILD_DIR" --parallel "$(nproc)"
