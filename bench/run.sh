#!/usr/bin/env bash
# Runs the load scenarios for N = 1,000, 10,000 and 19,000 simulated agents against a
# Release musterd and writes docs/benchmarks.md. Not part of the test suite (takes minutes).
# Usage: bench/run.sh [N ...]     (default: 1000 10000 19000)
set -euo pipefail
cd "$(dirname "$0")/.."
export MUSTER_BUILD_DIR="${MUSTER_BUILD_DIR:-build}"
bash scripts/build.sh >/dev/null
BIN="$MUSTER_BUILD_DIR"
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1000 10000 19000)
OUT="$(mktemp -d)"
for n in "${SIZES[@]}"; do
  echo "== N=$n" >&2
  # Let TIME_WAIT sockets of the previous run drain before the next one connects.
  sleep 5
  # One more destination address per 8,000 agents: the TIME_WAIT sockets of the previous
  # size's run still hold ephemeral ports towards 127.0.0.1.
  "$BIN/bench/muster-loadgen" --musterd "$BIN/apps/musterd/musterd" --agents "$n" \
    --addresses $(( n / 8000 + 1 )) \
    --scenario all --work-dir "/tmp/muster-bench-$n" --idle-seconds 60 \
    --heartbeat-seconds 30 > "$OUT/$n.jsonl" || echo "N=$n: loadgen reported a failure" >&2
done
python3 bench/report.py "$OUT" "${SIZES[@]}" > docs/benchmarks.md
echo "wrote docs/benchmarks.md" >&2
