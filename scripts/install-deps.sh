#!/usr/bin/env bash
# Installs everything Muster builds with, from Debian 12 packages only, and builds
# gRPC 1.51.1 (Debian's own source package) in Release mode into a reusable prefix.
# Idempotent: a second run installs nothing and rebuilds nothing.
set -euo pipefail

DEPS_DIR="${MUSTER_DEPS_DIR:-$HOME/.cache/muster-deps}"
GRPC_PREFIX="$DEPS_DIR/grpc-1.51.1-release"
GRPC_STAMP="$GRPC_PREFIX/.built"
# Muster's own fixes to gRPC, applied on top of Debian's source package (see each file's
# header); the recipe names them, so changing a patch rebuilds gRPC (incrementally).
PATCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/patches"
shopt -s nullglob
GRPC_PATCHES=("$PATCH_DIR"/grpc-1.51.1-*.patch)
shopt -u nullglob
PATCHES_ID="$( (cd "$PATCH_DIR" 2>/dev/null && for p in grpc-1.51.1-*.patch; do
  [ -f "$p" ] && sha256sum "$p"; done) | sha256sum | cut -c1-16)"
# Bump when the gRPC build recipe changes; an existing build dir is then reconfigured.
GRPC_RECIPE="4-rpath-origin-lib-patches-$PATCHES_ID"

log() { printf '[install-deps] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

PACKAGES=(
  build-essential g++ cmake ninja-build ccache pkg-config dpkg-dev ca-certificates
  libprotobuf-dev libprotoc-dev protobuf-compiler libabsl-dev libc-ares-dev libre2-dev libssl-dev zlib1g-dev
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libboost-system1.81-dev
  libsqlite3-dev libspdlog-dev libfmt-dev libcli11-dev libtomlplusplus-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcurl4-openssl-dev libsystemd-dev libjemalloc-dev
  procps python3 patch curl
)

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

if [ -f "$GRPC_STAMP" ] && [ "$(cat "$GRPC_STAMP")" = "$GRPC_RECIPE" ]; then
  log "gRPC 1.51.1 Release already built in $GRPC_PREFIX"
  exit 0
fi

# Libraries and programs find gRPC's libraries through RUNPATH=$ORIGIN/../lib (lib/ for the
# libraries themselves, bin/ -> lib/ for grpc_cpp_plugin), never a system libgrpc of the same
# soname (Debian's libgrpc29 may be installed alongside); tests/check_grpc_libs.sh checks it.
# A private deb-src list, so the machine's own apt configuration stays untouched; its mirror is
# the one the machine's apt already uses for Debian (a local mirror or proxy works the same).
SRC_DIR="$DEPS_DIR/src"
APT_DIR="$DEPS_DIR/apt"
mkdir -p "$SRC_DIR" "$APT_DIR/lists/partial"
debian_mirror_line() {
  local codename="${1}"
  if [ -n "${MUSTER_DEBIAN_MIRROR:-}" ]; then
    printf 'deb-src %s %s main\n' "$MUSTER_DEBIAN_MIRROR" "$codename"; return
  fi
  # deb822 (*.sources): the first enabled "deb" stanza whose Suites name the release itself.
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v want="$codename" 'BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; enabled = "yes"; signed = ""
        for (i = 1; i <= NF; i++) {
          line = $i; sub(/^[ \t]+/, "", line)
          if (line ~ /^#/) continue
          split(line, kv, ":"); key = tolower(kv[1]); val = substr(line, length(kv[1]) + 2)
          gsub(/^[ \t]+|[ \t]+$/, "", val)
          if (key == "types") types = val; else if (key == "uris") uris = val
          else if (key == "suites") suites = val; else if (key == "enabled") enabled = tolower(val)
          else if (key == "signed-by") signed = val
        }
        if (enabled == "no" || (" " types " ") !~ / deb /) next
        if ((" " suites " ") !~ (" " want " ")) next
        split(uris, u, /[ \t]+/)
        opt = (signed != "" && signed !~ /^-----/) ? "[signed-by=" signed "] " : ""
        printf "deb-src %s%s %s main\n", opt, u[1], want; found = 1; exit
      }
      END { exit found ? 0 : 1 }' "$f" && return
  done
  # One-line format (sources.list, *.list): "deb [options] URI SUITE COMPONENTS...".
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v want="$codename" '$1 == "deb" {
        opt = ""; i = 2
        if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) { opt = opt $i " "; i++ }; opt = opt $i " "; i++ }
        if ($(i + 1) == want) { printf "deb-src %s%s %s main\n", opt, $i, want; found = 1; exit }
      }
      END { exit found ? 0 : 1 }' "$f" && return
  done
  return 1
}
CODENAME="$( (. /etc/os-release && echo "${VERSION_CODENAME:-}") 2>/dev/null)"
CODENAME="${CODENAME:-bookworm}"
if ! debian_mirror_line "$CODENAME" >"$APT_DIR/sources.list.new"; then
  log "no Debian mirror for '$CODENAME' found in /etc/apt/sources.list or /etc/apt/sources.list.d/;"
  log "add one to apt's configuration, or set MUSTER_DEBIAN_MIRROR=http://your-mirror/debian"
  exit 1
fi
mv "$APT_DIR/sources.list.new" "$APT_DIR/sources.list"
log "Debian source mirror: $(cat "$APT_DIR/sources.list")"
APT_OPTS=(-o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
          -o "APT::Sandbox::User=root"
          -o "Dir::State::Lists=$APT_DIR/lists")
if ! ls "$SRC_DIR"/grpc_1.51.1*.dsc "$SRC_DIR"/grpc_1.51.1.orig.tar.* \
     "$SRC_DIR"/grpc_1.51.1*.debian.tar.* >/dev/null 2>&1; then
  log "fetching Debian's grpc source package"
  apt-get "${APT_OPTS[@]}" update -q
  (cd "$SRC_DIR" && apt-get "${APT_OPTS[@]}" source --download-only -q grpc=1.51.1-3 >/dev/null 2>&1 ||
     apt-get "${APT_OPTS[@]}" source --download-only -q grpc)
fi
# The tree is extracted afresh (Debian's patches, then ours) whenever our patch set changed,
# and the build directory goes with it: extracted files keep the tarball's old timestamps, so
# Ninja would keep objects built from a patch since removed. ccache makes the rebuild cheap.
GRPC_SRC="$SRC_DIR/grpc-1.51.1"
BUILD="$DEPS_DIR/grpc-build"
if [ "$(cat "$GRPC_SRC/.muster-patches" 2>/dev/null)" != "$PATCHES_ID" ]; then
  log "extracting gRPC's source and applying scripts/patches/grpc-1.51.1-*.patch"
  rm -rf "$GRPC_SRC" "$BUILD"
  dsc=$(ls "$SRC_DIR"/grpc_1.51.1*.dsc | head -1)
  # Checksums are verified; the signature only warns (no Debian keyring here).
  (cd "$SRC_DIR" && dpkg-source -x "$dsc" grpc-1.51.1 >/dev/null 2>&1) ||
    { log "cannot extract $dsc"; exit 1; }
  for p in "${GRPC_PATCHES[@]}"; do
    patch -d "$GRPC_SRC" -p1 --forward --quiet <"$p" || { log "cannot apply $p"; exit 1; }
  done
  echo "$PATCHES_ID" >"$GRPC_SRC/.muster-patches"
fi

log "building gRPC 1.51.1 in Release mode into $GRPC_PREFIX (15–30 minutes on 2 cores, once)"
cmake -S "$GRPC_SRC" -B "$BUILD" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$GRPC_PREFIX" \
  -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
  -DCMAKE_CXX_STANDARD=17 -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
  -DBUILD_SHARED_LIBS=ON -DCMAKE_INSTALL_RPATH='$ORIGIN/../lib' -DgRPC_INSTALL=ON -DgRPC_BUILD_TESTS=OFF \
  -DgRPC_ABSL_PROVIDER=package -DgRPC_CARES_PROVIDER=package -DgRPC_PROTOBUF_PROVIDER=package \
  -DgRPC_RE2_PROVIDER=package -DgRPC_SSL_PROVIDER=package -DgRPC_ZLIB_PROVIDER=package \
  -DgRPC_BUILD_CSHARP_EXT=OFF -DgRPC_BUILD_GRPC_CSHARP_PLUGIN=OFF -DgRPC_BUILD_GRPC_NODE_PLUGIN=OFF \
  -DgRPC_BUILD_GRPC_OBJECTIVE_C_PLUGIN=OFF -DgRPC_BUILD_GRPC_PHP_PLUGIN=OFF \
  -DgRPC_BUILD_GRPC_PYTHON_PLUGIN=OFF -DgRPC_BUILD_GRPC_RUBY_PLUGIN=OFF \
  -DgRPC_BACKWARDS_COMPATIBILITY_MODE=OFF >"$DEPS_DIR/grpc-configure.log" 2>&1 ||
  { tail -40 "$DEPS_DIR/grpc-configure.log"; exit 1; }
cmake --build "$BUILD" --parallel "$(nproc)" >"$DEPS_DIR/grpc-build.log" 2>&1 ||
  { tail -60 "$DEPS_DIR/grpc-build.log"; exit 1; }
cmake --install "$BUILD" >/dev/null
echo "$GRPC_RECIPE" >"$GRPC_STAMP"
log "gRPC ready in $GRPC_PREFIX"
