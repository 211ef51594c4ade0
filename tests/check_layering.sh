#!/usr/bin/env bash
# The core domain knows no transport or storage; the agent links no server code.
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
fail=0
hits=$(grep -rlE '#include *[<"](grpcpp|grpc/|boost/|sqlite3\.h|libpq|pqxx|muster/v1/)' \
  "$root/src/server/core" "$root/src/model" 2>/dev/null)
if [ -n "$hits" ]; then echo "core/model include a transport or storage header: $hits"; fail=1; fi
hits=$(grep -rlE '#include *"(server|store)/' "$root/src/agent" 2>/dev/null)
if [ -n "$hits" ]; then echo "agent includes server or store code: $hits"; fail=1; fi
hits=$(grep -rlE '#include *"agent/' "$root/src/server" "$root/src/store" 2>/dev/null)
if [ -n "$hits" ]; then echo "server includes agent code: $hits"; fail=1; fi
if [ $fail -eq 0 ]; then echo "1 passed, 0 failed"; fi
exit $fail
