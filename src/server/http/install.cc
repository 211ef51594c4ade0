// The agent installer: the binary's fingerprint, the script and the one-liner.
#include "server/http/install.h"

#include <openssl/evp.h>
#include <sys/stat.h>

#include <fstream>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace muster::server::http {
namespace {

// What a Host header may hold here (it ends up in a shell script): a name or an address,
// with a port; anything else is not used.
bool plainHost(std::string_view host) {
  if (host.empty() || host.size() > 255) return false;
  for (char c : host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
    if (!ok) return false;
  }
  return true;
}

struct HostPort {
  std::string host;  // brackets kept for IPv6
  std::string port;
};

HostPort splitHeader(std::string_view header) {
  HostPort out;
  size_t colon = header.rfind(':');
  size_t bracket = header.rfind(']');
  if (colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket)) {
    out.host = std::string(header.substr(0, colon));
    out.port = std::string(header.substr(colon + 1));
  } else {
    out.host = std::string(header);
  }
  return out;
}

bool loopback(std::string_view host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "[::1]";
}

// Where hosts reach musterd's REST port and agent port, seen from a caller at `header`.
HostPort reachable(const AgentInstall& install, std::string_view header) {
  HostPort hp = plainHost(header) ? splitHeader(header) : HostPort{};
  if (hp.host.empty() || loopback(hp.host)) {
    // Not a name other hosts can use (nor, maybe, a tunnel's port): musterd's own.
    hp.host =
        install.public_name.find(':') != std::string::npos && install.public_name.front() != '['
            ? absl::StrCat("[", install.public_name, "]")
            : install.public_name;
    if (install.http_port > 0) hp.port = std::to_string(install.http_port);
  }
  if (hp.port.empty()) hp.port = install.tls ? "443" : "80";  // the client used the default
  return hp;
}

}  // namespace

struct AgentInstall::Cache {
  std::mutex mu;
  int64_t mtime_ns = -1;
  Fingerprint fingerprint;
};

AgentInstall::AgentInstall() : cache_(std::make_shared<Cache>()) {}

absl::StatusOr<AgentInstall::Fingerprint> AgentInstall::fingerprint() const {
  struct stat st {};
  if (binary_path.empty() || ::stat(binary_path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat("musterd has no agent binary to serve (",
                                            binary_path.empty() ? "none set" : binary_path,
                                            "): start musterd with --agent-binary PATH"));
  }
  const int64_t mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  std::lock_guard lock(cache_->mu);
  if (cache_->mtime_ns == mtime_ns && cache_->fingerprint.size == uint64_t(st.st_size)) {
    return cache_->fingerprint;
  }
  std::ifstream in(binary_path, std::ios::binary);
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!in || !md || EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) != 1) {
    return absl::NotFoundError(absl::StrCat("cannot read the agent binary ", binary_path));
  }
  Fingerprint out;
  std::vector<char> chunk(1 << 20);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    size_t n = static_cast<size_t>(in.gcount());
    EVP_DigestUpdate(md.get(), chunk.data(), n);
    out.size += n;
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(md.get(), digest, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned int i = 0; i < len; ++i) {
    out.sha256 += kHex[digest[i] >> 4];
    out.sha256 += kHex[digest[i] & 15];
  }
  cache_->mtime_ns = mtime_ns;
  cache_->fingerprint = out;
  return out;
}

std::string AgentInstall::command(std::string_view host_header, std::string_view enroll_token,
                                  std::string_view agent_id) const {
  HostPort hp = reachable(*this, host_header);
  std::string curl_tls;
  if (tls) curl_tls = absl::StrCat(" -k --pinnedpubkey 'sha256//", tls->current()->key_pin, "'");
  return absl::StrCat(
      "curl -fsS", curl_tls, " '", tls ? "https" : "http", "://", hp.host, ":", hp.port,
      "/install/agent.sh' | sudo MUSTER_ENROLL_TOKEN='", std::string(enroll_token), "'",
      agent_id.empty() ? "" : absl::StrCat(" MUSTER_AGENT_ID='", std::string(agent_id), "'"),
      " sh");
}

absl::StatusOr<std::string> AgentInstall::script(std::string_view host_header) const {
  auto binary = fingerprint();
  if (!binary.ok()) return binary.status();
  HostPort hp = reachable(*this, host_header);
  std::string curl_tls =
      tls ? absl::StrCat("-k --pinnedpubkey sha256//", tls->current()->key_pin) : std::string();
  // Values are plain (hex, base64, checked host names): safe inside single quotes.
  return absl::StrReplaceAll(
      R"SH(#!/bin/sh
# Installs muster-agent from musterd and enrolls this host (served by musterd; run as root).
#   MUSTER_ENROLL_TOKEN  the token `muster token create --enroll` printed (required)
#   MUSTER_AGENT_ID      the host's id (default: its host name)
#   MUSTER_PREFIX        where bin/muster-agent goes (default /usr/local)
#   MUSTER_STATE_DIR     the agent's state: credential, CA, keys (default /var/lib/muster-agent)
#   MUSTER_NO_SERVICE=1  install only, and print how to start it
#   MUSTER_FOREGROUND=1  install, then run the agent here instead of as a service
set -eu
base='@SCHEME@://@HOST@:@HTTP_PORT@'
server='@HOST@:@AGENT_PORT@'
size='@SIZE@'
sha256='@SHA256@'
say() { echo "muster-install: $*" >&2; }
token="${MUSTER_ENROLL_TOKEN:-}"
[ -n "$token" ] || { say "set MUSTER_ENROLL_TOKEN to the token 'muster token create --enroll' printed"; exit 2; }
prefix="${MUSTER_PREFIX:-/usr/local}"
state="${MUSTER_STATE_DIR:-/var/lib/muster-agent}"
command -v curl >/dev/null 2>&1 || { say "needs curl (apt-get install curl)"; exit 1; }
umask 077
mkdir -p "$prefix/bin" "$state"
tmp="$prefix/bin/.muster-agent.$$"
trap 'rm -f "$tmp"' EXIT
# The same pinned key as the line that fetched this script: nobody in between can swap it.
curl -fsS @CURL_TLS@ -o "$tmp" "$base/install/muster-agent"
got=$(wc -c < "$tmp" | tr -d ' ')
[ "$got" = "$size" ] || { say "downloaded $got bytes of muster-agent, expected $size"; exit 1; }
if command -v sha256sum >/dev/null 2>&1; then
  got=$(sha256sum "$tmp" | cut -d' ' -f1)
  [ "$got" = "$sha256" ] || { say "muster-agent's SHA-256 is $got, expected $sha256"; exit 1; }
else
  say "no sha256sum here: only the size was checked"
fi
chmod 0755 "$tmp"
mv -f "$tmp" "$prefix/bin/muster-agent"
printf '%s\n' "$token" > "$state/enroll.token"
set -- --server "$server" --state-dir "$state" --enroll-token-file "$state/enroll.token" @PLAINTEXT@
[ -z "${MUSTER_AGENT_ID:-}" ] || set -- "$@" --id "$MUSTER_AGENT_ID"
if [ -n "${MUSTER_FOREGROUND:-}" ]; then exec "$prefix/bin/muster-agent" "$@"; fi
if [ -z "${MUSTER_NO_SERVICE:-}" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  cat > /etc/systemd/system/muster-agent.service <<EOF
[Unit]
Description=Muster agent
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$prefix/bin/muster-agent $*
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
EOF
  chmod 0644 /etc/systemd/system/muster-agent.service
  systemctl daemon-reload
  systemctl enable --now muster-agent
  say "muster-agent installed and started: systemctl status muster-agent"
else
  say "installed $prefix/bin/muster-agent; start it with: $prefix/bin/muster-agent $*"
fi
)SH",
      {{"@SCHEME@", tls ? "https" : "http"},
       {"@HOST@", hp.host},
       {"@HTTP_PORT@", hp.port},
       {"@AGENT_PORT@", absl::StrCat(agent_port)},
       {"@SIZE@", absl::StrCat(binary->size)},
       {"@SHA256@", binary->sha256},
       {"@CURL_TLS@", curl_tls},
       {"@PLAINTEXT@", tls ? "" : "--insecure-plaintext"}});
}

}  // namespace muster::server::http
