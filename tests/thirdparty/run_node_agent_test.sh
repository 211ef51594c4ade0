#!/usr/bin/env bash
# An agent on another gRPC stack: tests/thirdparty/node_agent/agent.js (Node.js, pure-JS
# @grpc/grpc-js, written from proto/muster/v1/agent.proto alone) enrolls with a real musterd
# over TLS with a pinned CA and runs commands sent with the muster CLI. It also checks that
# the agent refuses a token whose pin is not the CA's.
#
#   bash tests/thirdparty/run_node_agent_test.sh MUSTERD_BIN MUSTER_CLI_BIN
#
# Needs node and npm (installed from Debian if missing). The npm packages are installed once,
# from the lock file, into ${MUSTER_DEPS_DIR:-~/.cache/muster-deps}/node-agent-<hash>; a warm
# run reuses them and reaches no registry. MUSTER_KEEP_TEST_DIRS=1 keeps the temp dir.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 MUSTERD_BIN MUSTER_CLI_BIN" >&2; exit 2; }
MUSTERD="$(realpath "$1")"
MUSTER="$(realpath "$2")"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
AGENT_SRC="$HERE/node_agent"
PROTO="$(cd "$HERE/../.." && pwd)/proto/muster/v1/agent.proto"
DEPS_DIR="${MUSTER_DEPS_DIR:-$HOME/.cache/muster-deps}"
AGENT_ID="node-agent"

log() { printf '[node-agent-test] %s\n' "$*" >&2; }
TMP=""
fail() {
  log "FAIL: $*"
  if [ -n "$TMP" ]; then
    for f in "$TMP"/*.log; do
      [ -s "$f" ] && { log "--- last lines of $f"; tail -n 25 "$f" >&2; }
    done
  fi
  exit 1
}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

[ -x "$MUSTERD" ] || fail "musterd not found at $1"
[ -x "$MUSTER" ] || fail "muster CLI not found at $2"

# --- node and npm (Debian's packages, as scripts/install-deps.sh installs the rest) ---------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing nodejs and npm from Debian"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q
  as_root apt-get install -y -q --no-install-recommends nodejs npm
fi
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
[ "$NODE_MAJOR" -ge 18 ] || fail "node $(node --version) is too old (agent.js needs 18 or later)"

# --- the npm packages, once per lock file ---------------------------------------------------
DEPS_HASH="$(cat "$AGENT_SRC/package.json" "$AGENT_SRC/package-lock.json" | sha256sum | cut -c1-16)"
MODULES="$DEPS_DIR/node-agent-$DEPS_HASH"
if [ ! -f "$MODULES/.complete" ]; then
  log "installing @grpc/grpc-js and @grpc/proto-loader (npm ci) into $MODULES"
  mkdir -p "$DEPS_DIR"
  staging="$(mktemp -d "$DEPS_DIR/.node-agent-$DEPS_HASH.XXXXXX")"
  cp "$AGENT_SRC/package.json" "$AGENT_SRC/package-lock.json" "$staging/"
  if ! (cd "$staging" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2); then
    rm -rf "$staging"
    fail "npm ci failed (is the npm registry reachable?)"
  fi
  touch "$staging/.complete"
  # Renamed into place whole; a concurrent run that got there first wins.
  mv -T "$staging" "$MODULES" 2>/dev/null || rm -rf "$staging"
  [ -f "$MODULES/.complete" ] || fail "$MODULES exists but is incomplete: remove it"
fi
export NODE_PATH="$MODULES/node_modules"

# --- a real musterd on free ports, with a data dir of its own -------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/muster-node-agent.XXXXXX")"
SERVER_PID="" AGENT_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  for pid in $AGENT_PID $SERVER_PID; do
    kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  if [ -n "${MUSTER_KEEP_TEST_DIRS:-}" ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_ports() {  # two ports the kernel handed out and that are free again right now
  node -e 'const net = require("net"); const s = [0, 1].map(() => net.createServer());
    let n = 0; s.forEach((x) => x.listen(0, "127.0.0.1", () => { if (++n < 2) return;
    console.log(s.map((y) => y.address().port).join(" ")); s.forEach((y) => y.close()); }));'
}
DATA="$TMP/data"
CA="$DATA/tls/ca.crt"
started=""
for attempt in 1 2 3; do  # a port taken between free_ports and musterd's bind: pick again
  read -r HTTP_PORT GRPC_PORT < <(free_ports)
  rm -rf "$DATA"
  "$MUSTERD" --data-dir "$DATA" --http-listen "127.0.0.1:$HTTP_PORT" \
    --grpc-listen "127.0.0.1:$GRPC_PORT" >"$TMP/musterd.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    if [ -s "$DATA/admin.token" ] && [ -s "$CA" ] &&
       "$MUSTER" --server "https://127.0.0.1:$HTTP_PORT" --ca "$CA" \
         --token-file "$DATA/admin.token" hosts >/dev/null 2>&1; then
      started=1; break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$started" ] && break
  kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  log "musterd did not come up on ports $HTTP_PORT/$GRPC_PORT (attempt $attempt)"
done
[ -n "$started" ] || fail "musterd did not start"
log "musterd up: https://127.0.0.1:$HTTP_PORT (API), 127.0.0.1:$GRPC_PORT (agents), CA $CA"

muster() { "$MUSTER" --server "https://127.0.0.1:$HTTP_PORT" --ca "$CA" "$@"; }

# An operator token for the commands, an enrollment token (one use) for the agent.
muster --token-file "$DATA/admin.token" token create --role operator \
  >"$TMP/operator.token" 2>>"$TMP/tokens.log" ||
  fail "muster token create --role operator failed"
chmod 600 "$TMP/operator.token"
ENROLL="$(muster --token-file "$DATA/admin.token" token create --enroll --uses 1 --ttl 10m \
  2>>"$TMP/tokens.log")" ||
  fail "muster token create --enroll failed"
[[ "$ENROLL" =~ ^mst_enroll_[A-Za-z0-9_-]+\.[0-9a-f]{64}$ ]] ||
  fail "the enrollment token is not mst_enroll_<secret>.<pin>: $ENROLL"
op() { muster --token-file "$TMP/operator.token" "$@"; }

agent() { node "$AGENT_SRC/agent.js" --server "127.0.0.1:$GRPC_PORT" --ca "$CA" --proto "$PROTO" "$@"; }

# 1. A pin that is not the CA's: refused before anything is sent (and the token's one use
# stays for step 2).
WRONG_PIN="$(printf 'not musterd'"'"'s CA' | sha256sum | cut -c1-64)"
set +e
agent --token "${ENROLL%.*}.$WRONG_PIN" --id "$AGENT_ID-wrong-pin" >"$TMP/wrong-pin.log" 2>&1
rc=$?
set -e
[ "$rc" -eq 3 ] || fail "agent.js with a wrong pin exited $rc, not 3 (refused)"
grep -q "refusing $CA: its SHA-256 is [0-9a-f]\{64\}, the token pins $WRONG_PIN" "$TMP/wrong-pin.log" ||
  fail "agent.js did not say why it refused the wrong pin: $(cat "$TMP/wrong-pin.log")"
if op host show "$AGENT_ID-wrong-pin" >/dev/null 2>&1; then
  fail "the agent with the wrong pin got enrolled"
fi
log "ok: a wrong pin is refused"

# 2. The right pin: enroll, connect, and answer three commands.
agent --token "$ENROLL" --id "$AGENT_ID" --exit-after 3 >"$TMP/agent.log" 2>&1 &
AGENT_PID=$!
online=""
for _ in $(seq 1 300); do
  if op host show "$AGENT_ID" --json 2>/dev/null | grep -Eq '"status" *: *"online"'; then
    online=1; break
  fi
  kill -0 "$AGENT_PID" 2>/dev/null || fail "agent.js exited before it came online"
  sleep 0.1
done
[ -n "$online" ] || fail "the node agent did not come online within 30 s"
op host show "$AGENT_ID" --json >"$TMP/host.json"
grep -Eq '"grpc_stack" *: *"grpc-js/' "$TMP/host.json" ||
  fail "the host's facts do not name the grpc-js stack: $(cat "$TMP/host.json")"
log "ok: enrolled over TLS and online"

set +e
op run -H "$AGENT_ID" --timeout 30s -- echo third-party-ok >"$TMP/run1.out" 2>"$TMP/run1.err"
rc=$?
set -e
[ "$rc" -eq 0 ] || fail "muster run echo exited $rc: $(cat "$TMP/run1.out" "$TMP/run1.err")"
grep -Eq "^$AGENT_ID \| third-party-ok$" "$TMP/run1.out" ||
  fail "the output did not come back: $(cat "$TMP/run1.out")"
grep -Eq "^$AGENT_ID +succeeded +0( |$)" "$TMP/run1.out" ||
  fail "the summary does not say succeeded with exit 0: $(cat "$TMP/run1.out")"
log "ok: echo third-party-ok ran, its output and exit code 0 came back"

set +e
op run -H "$AGENT_ID" --timeout 30s -- sh -c 'echo to-stderr >&2; exit 3' \
  >"$TMP/run2.out" 2>"$TMP/run2.err"
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "muster run of a failing command exited $rc, not 1: $(cat "$TMP/run2.out" "$TMP/run2.err")"
grep -Eq "^$AGENT_ID \| to-stderr$" "$TMP/run2.err" ||
  fail "the stderr output did not come back: $(cat "$TMP/run2.err")"
grep -Eq "^$AGENT_ID +failed +3( |$)" "$TMP/run2.out" ||
  fail "the summary does not say failed with exit 3: $(cat "$TMP/run2.out")"
log "ok: a failing command's stderr and exit code 3 came back"

set +e
op run -H "$AGENT_ID" --timeout 30s -- no-such-command-here >"$TMP/run3.out" 2>"$TMP/run3.err"
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "muster run of a missing program exited $rc, not 1: $(cat "$TMP/run3.out" "$TMP/run3.err")"
grep -Eq "^$AGENT_ID +failed +- +cannot start no-such-command-here" "$TMP/run3.out" ||
  fail "the summary does not say the program could not start: $(cat "$TMP/run3.out")"
log "ok: a program that cannot start is reported failed, with the reason"

# 3. Three results acknowledged: the agent half-closes the stream and exits 0.
for _ in $(seq 1 100); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$AGENT_PID" 2>/dev/null && fail "agent.js still runs 10 s after its results were acknowledged"
set +e
wait "$AGENT_PID"
rc=$?
set -e
AGENT_PID=""
[ "$rc" -eq 0 ] || fail "agent.js exited $rc"
log "PASS: a @grpc/grpc-js agent ($(node -p 'require("@grpc/grpc-js/package.json").version'), node $(node --version)) enrolled with a pinned CA and ran commands"
