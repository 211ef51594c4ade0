#!/usr/bin/env bash
# The core domain knows no transport or storage; the agent runtime knows no gRPC (only its
# link implementation does); the agent links no server code, the server no agent code.
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
fail=0
for d in src/server/core src/model src/agent src/server src/store src/store/sqlite src/server/grpc src/server/http; do
  if [ ! -d "$root/$d" ]; then
    echo "FAIL: $d is missing; update tests/check_layering.sh to the new layout"
    fail=1
  fi
done
hits=$(grep -rlE '#include *[<"](grpcpp|grpc/|boost/|sqlite3\.h|libpq|pqxx|muster/v1/)' \
  "$root/src/server/core" "$root/src/model" 2>/dev/null)
if [ -n "$hits" ]; then echo "FAIL: core/model include a transport or storage header: $hits"; fail=1; fi
hits=$(grep -rlE '#include *"(server/grpc|server/http|store/sqlite|store/postgres)/' \
  "$root/src/server/core" "$root/src/model" 2>/dev/null)
if [ -n "$hits" ]; then echo "FAIL: core/model include an adapter: $hits"; fail=1; fi
# The REST adapter reads through the core's query types (server/core/queries.h), never the store.
hits=$(grep -rlE '#include *"store/|store::|\.store\(\)' "$root/src/server/http" 2>/dev/null)
if [ -n "$hits" ]; then echo "FAIL: the HTTP adapter reaches into the store: $hits"; fail=1; fi
hits=$(grep -rlE '#include *"(server|store)/' "$root/src/agent" 2>/dev/null)
if [ -n "$hits" ]; then echo "FAIL: agent includes server or store code: $hits"; fail=1; fi
hits=$(grep -rlE '#include *[<"](grpcpp|grpc/)|"agent/link_client\.h"' "$root/src/agent" 2>/dev/null |
  grep -v '/link_client\.\(h\|cc\)$')
if [ -n "$hits" ]; then echo "FAIL: the agent runtime uses gRPC outside its link: $hits"; fail=1; fi
hits=$(grep -rlE '#include *"agent/' "$root/src/server" "$root/src/store" 2>/dev/null)
if [ -n "$hits" ]; then echo "FAIL: server includes agent code: $hits"; fail=1; fi
if [ $fail -eq 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
exit $fail
