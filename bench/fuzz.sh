#!/usr/bin/env bash
# Fuzzes every target in tests/fuzz with libFuzzer (clang, ASan + UBSan) for MINUTES each, one
# after another in one process at a time, and prints per target: executions, corpus growth and
# whether it crashed. Not part of the test suite (the seeds run there as fuzz_corpus.*).
# Usage: bench/fuzz.sh [MINUTES] [TARGET ...]     (default: 10 minutes, every target)
# Env:   MUSTER_FUZZ_BUILD_DIR (build-fuzz), MUSTER_FUZZ_OUT (results; default
#        /tmp/muster-fuzz/<time>), MUSTER_FUZZ_KEEP_GOING=1 (fork mode: go on after a crash),
#        MUSTER_BUILD_LOCK (/tmp/muster-build.lock: builds on a shared machine take turns).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-10}"
shift || true
BUILD_DIR="${MUSTER_FUZZ_BUILD_DIR:-build-fuzz}"
OUT="${MUSTER_FUZZ_OUT:-/tmp/muster-fuzz/$(date +%Y%m%d-%H%M%S)}"
LOCK="${MUSTER_BUILD_LOCK:-/tmp/muster-build.lock}"
DEPS_DIR="${MUSTER_DEPS_DIR:-$HOME/.cache/muster-deps}"
ROOT="$(pwd)"

log() { printf '[fuzz] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
locked() { if command -v flock >/dev/null; then flock "$LOCK" "$@"; else "$@"; fi; }

# clang and the runtime with libclang_rt.fuzzer (Debian 12: libclang-rt-14-dev); the normal
# build needs neither, so scripts/install-deps.sh does not install them.
PACKAGES=(clang libclang-rt-14-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
bash scripts/install-deps.sh  # gRPC and the rest, as the normal build (idempotent)

TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  for f in tests/fuzz/*_fuzz.cc; do TARGETS+=("$(basename "$f" _fuzz.cc)"); done
fi

export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
export CCACHE_BASEDIR="$(pwd)" CCACHE_NOHASHDIR=1
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  CC=clang CXX=clang++ locked cmake -S . -B "$BUILD_DIR" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMUSTER_FUZZ=ON -DMUSTER_DEPS_DIR="$DEPS_DIR"
fi
build_targets=()
for t in "${TARGETS[@]}"; do build_targets+=("${t}_fuzz"); done
log "building ${build_targets[*]} in $BUILD_DIR"
locked cmake --build "$BUILD_DIR" --parallel "$(nproc)" --target "${build_targets[@]}"

mkdir -p "$OUT"
log "fuzzing ${#TARGETS[@]} target(s) for $MINUTES min each; results in $OUT"
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
summary=()
for t in "${TARGETS[@]}"; do
  bin="$ROOT/$BUILD_DIR/tests/fuzz/${t}_fuzz"
  work="$OUT/$t"
  # The seeds are copied: libFuzzer adds what it finds to the first corpus directory.
  mkdir -p "$work/corpus" "$work/artifacts"
  cp -n tests/fuzz/corpus/"$t"/* "$work/corpus/" 2>/dev/null || true
  seeds=$(find "$work/corpus" -type f | wc -l)
  keep_going=()
  if [ "${MUSTER_FUZZ_KEEP_GOING:-0}" = 1 ]; then
    keep_going=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  fi
  log "$t: $seeds seed(s), $MINUTES min"
  set +e
  (cd "$work" && "$bin" -max_total_time=$((MINUTES * 60)) -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
    "${keep_going[@]}" "$work/corpus") > "$work/fuzz.log" 2>&1
  rc=$?
  set -e
  rm -rf /dev/shm/muster-fuzz-"$t"-* 2>/dev/null || true
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log" | tail -1)
  [ -n "$execs" ] || execs=$(grep -o '#[0-9]*' "$work/fuzz.log" | tail -1 | tr -d '#')
  corpus=$(find "$work/corpus" -type f | wc -l)
  crashes=$(find "$work/artifacts" -type f | wc -l)
  if [ "$crashes" -gt 0 ]; then
    verdict="FOUND $crashes: $(ls "$work/artifacts" | tr '\n' ' ')"
  elif [ "$rc" -ne 0 ]; then
    verdict="exit $rc, see $work/fuzz.log"
  else
    verdict="no crash"
  fi
  line="$(printf '%-18s execs %-10s corpus %5s -> %-6s %s' "$t" "${execs:-?}" "$seeds" "$corpus" "$verdict")"
  log "$line"
  summary+=("$line")
done
echo
echo "fuzzing summary ($MINUTES min per target; logs, corpora and crashes in $OUT):"
printf '  %s\n' "${summary[@]}"
