#!/usr/bin/env bash
# Installs, builds and runs the whole test suite through ctest. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR="${MUSTER_BUILD_DIR:-build}"
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 300 -j "$(nproc)" "$@"
