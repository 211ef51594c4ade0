#!/usr/bin/env bash
# A/B of musterd at two commits in one run: builds BASE (a git revision) beside this checkout,
# then runs the same load generator (this checkout's) against each musterd in turn, PAIRS
# times, alternating which goes first (A B, B A, A B, ...), and prints medians and ratios of
# fan-out p99, RSS per agent and the reconnect storm. Not part of the test suite.
# Usage: bench/ab.sh BASE [N] [PAIRS]        (default: N=10000, PAIRS=3)
# Env:   MUSTER_AB_DIR (where BASE is built; default /tmp/muster-ab-<BASE>),
#        MUSTER_AB_OUT (results; default /tmp/muster-ab-out/<time>),
#        MUSTER_AB_SCENARIO (default fanout,reconnect-storm; "connect" for memory only),
#        MUSTER_AB_HEAD_ARGS (extra musterd flags for the head, e.g. to isolate one feature),
#        MUSTER_AB_BASE_LIBS (a directory of older gRPC libraries for the base run, load tool
#        included: A/B of a change to scripts/patches/ with `cp -a` of the old prefix's lib/),
#        MUSTER_AB_BASE_LINK / MUSTER_AB_HEAD_LINK (the loadgen's --link for each: old for a
#        musterd from before TLS, plaintext, or tls; default old / plaintext). TLS against
#        plaintext of the same code: MUSTER_AB_BASE_LINK=plaintext MUSTER_AB_HEAD_LINK=tls
#        bench/ab.sh HEAD
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${1:?usage: bench/ab.sh BASE [N] [PAIRS]}"
N="${2:-10000}"
PAIRS="${3:-3}"
base_rev="$(git rev-parse --short "$BASE")"
head_rev="$(git rev-parse --short HEAD)"
BASE_DIR="${MUSTER_AB_DIR:-/tmp/muster-ab-$base_rev}"
OUT="${MUSTER_AB_OUT:-/tmp/muster-ab-out/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

log() { printf '[ab] %s\n' "$*" >&2; }

export MUSTER_BUILD_DIR=build
bash scripts/build.sh >/dev/null
if [ ! -x "$BASE_DIR/build/apps/musterd/musterd" ]; then
  log "building $base_rev in $BASE_DIR"
  rm -rf "$BASE_DIR"
  mkdir -p "$BASE_DIR"
  git archive "$base_rev" | tar -x -C "$BASE_DIR"
  # With this checkout's dependencies (BASE's install-deps could rebuild the shared gRPC
  # prefix to its own recipe); only musterd is needed, the load generator is this one.
  export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}" CCACHE_BASEDIR="$BASE_DIR" CCACHE_NOHASHDIR=1
  cmake -S "$BASE_DIR" -B "$BASE_DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMUSTER_DEPS_DIR="${MUSTER_DEPS_DIR:-$HOME/.cache/muster-deps}" >/dev/null
  cmake --build "$BASE_DIR/build" --parallel "$(nproc)" --target musterd >/dev/null
fi
declare -A musterd=([base]="$BASE_DIR/build/apps/musterd/musterd"
                    [head]="$(pwd)/build/apps/musterd/musterd")
loadgen="$(pwd)/build/bench/muster-loadgen"

for ((pair = 1; pair <= PAIRS; pair++)); do
  if ((pair % 2)); then order=(base head); else order=(head base); fi
  for v in "${order[@]}"; do
    log "pair $pair: $v (${musterd[$v]})"
    extra=()
    if [ "$v" = head ]; then
      extra+=("--link=${MUSTER_AB_HEAD_LINK:-plaintext}")
    else
      extra+=("--link=${MUSTER_AB_BASE_LINK:-old}")
    fi
    if [ "$v" = head ] && [ -n "${MUSTER_AB_HEAD_ARGS:-}" ]; then
      for a in $MUSTER_AB_HEAD_ARGS; do extra+=("--musterd-arg=$a"); done
    fi
    sleep 5  # TIME_WAIT sockets of the previous run drain
    # Each variant keeps its own data dir (enrolled once, reused by later pairs).
    libs=()
    if [ "$v" = base ] && [ -n "${MUSTER_AB_BASE_LIBS:-}" ]; then
      libs=(env "LD_LIBRARY_PATH=$MUSTER_AB_BASE_LIBS")
    fi
    "${libs[@]}" "$loadgen" --musterd "${musterd[$v]}" --agents "$N" --addresses $((N / 8000 + 1)) \
      --scenario "${MUSTER_AB_SCENARIO:-fanout,reconnect-storm}" --work-dir "/tmp/muster-ab-$v-$N" \
      --heartbeat-seconds 30 "${extra[@]}" > "$OUT/$v-$pair.jsonl" ||
      log "$v pair $pair: loadgen reported a failure"
  done
done
python3 bench/ab_report.py "$OUT" "$base_rev" "$head_rev" "$N"
