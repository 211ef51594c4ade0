#!/usr/bin/env bash
# Every gRPC library that Muster's binaries and gRPC's own plugin load comes from the gRPC
# prefix that scripts/install-deps.sh built (never a system libgrpc of the same soname, which
# Debian's libgrpc29 would provide), and no library at all is missing.
# Usage: check_grpc_libs.sh PREFIX BINARY...
set -u
prefix="$(cd "$1" && pwd -P)"
shift
fail=0
checked=0
for bin in "$@"; do
  if [ ! -x "$bin" ]; then echo "FAIL $bin: not built"; fail=1; continue; fi
  out="$(ldd "$bin" 2>&1)" || { echo "FAIL $bin: ldd failed: $out"; fail=1; continue; }
  if grep -q "not found" <<<"$out"; then
    echo "FAIL $bin: missing libraries:"; grep "not found" <<<"$out"; fail=1
  fi
  # gRPC's own libraries (libgrpc*, libgpr, libaddress_sorting, libupb, the plugin support).
  while read -r name _ path _; do
    [ -n "$path" ] || continue
    real="$(readlink -f "$path")"
    case "$real" in
      "$prefix"/lib/*) ;;
      *) echo "FAIL $bin: $name resolves to $real, outside $prefix/lib"; fail=1 ;;
    esac
  done < <(grep -E '^\s*lib(grpc|gpr|address_sorting|upb)[^ ]*\.so' <<<"$out")
  checked=$((checked + 1))
done
if [ $fail -eq 0 ]; then
  echo "$checked passed, 0 failed"
else
  echo "0 passed, 1 failed"
fi
exit $fail
