#!/usr/bin/env bash
# Installs, builds and starts the embedded demo: musterd on SQLite in ./muster-data plus one
# local agent enrolled automatically. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BIN="$(pwd)/${MUSTER_BUILD_DIR:-build}/apps"
DATA="$(pwd)/muster-data"
HTTP="${MUSTER_DEMO_HTTP:-127.0.0.1:7080}"
GRPC="${MUSTER_DEMO_GRPC:-127.0.0.1:7443}"
mkdir -p "$DATA"

"$BIN/musterd/musterd" --data-dir "$DATA" --http-listen "$HTTP" --grpc-listen "$GRPC" \
  2>>"$DATA/musterd.log" >/dev/null &
SERVER=$!
AGENT=""
cleanup() {
  trap - INT TERM EXIT
  [ -n "$AGENT" ] && kill -TERM "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null || true
  kill -TERM "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  echo "demo stopped (data kept in $DATA)"
}
trap cleanup INT TERM EXIT

export MUSTER_SERVER="https://$HTTP" MUSTER_CA="$DATA/tls/ca.crt"  # TLS: musterd's own CA
for _ in $(seq 1 100); do
  [ -s "$DATA/admin.token" ] && "$BIN/muster/muster" --token "$(cat "$DATA/admin.token")" \
    hosts >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { echo "musterd failed to start:"; tail -20 "$DATA/musterd.log"; exit 1; }
  sleep 0.1
done
export MUSTER_TOKEN="$(cat "$DATA/admin.token")"

AGENT_ID="$( (cat /etc/machine-id 2>/dev/null || hostname) | tr -cd 'A-Za-z0-9._-' | cut -c1-128)"
ENROLL=""
if [ ! -f "$DATA/agent/credential" ]; then
  ENROLL="$("$BIN/muster/muster" token create --enroll --uses 1 --ttl 10m --json |
            sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p')"
fi
"$BIN/muster-agent/muster-agent" --server "$GRPC" --state-dir "$DATA/agent" --id "$AGENT_ID" \
  ${ENROLL:+--enroll-token "$ENROLL"} --label role=demo 2>>"$DATA/agent.log" &
AGENT=$!

cat <<MSG

Muster demo is running.
  API:          https://$HTTP/api/v1 (CA $DATA/tls/ca.crt)   (agents connect to $GRPC)
  admin token:  $DATA/admin.token
  logs:         $DATA/musterd.log, $DATA/agent.log

Try, in another shell:
  export MUSTER_SERVER=https://$HTTP MUSTER_CA=$DATA/tls/ca.crt MUSTER_TOKEN=\$(cat $DATA/admin.token)
  $BIN/muster/muster hosts
  $BIN/muster/muster run -H $AGENT_ID -- sh -c 'echo hello; echo oops >&2; exit 3'

Ctrl-C stops musterd and the agent.
MSG
wait "$SERVER"
