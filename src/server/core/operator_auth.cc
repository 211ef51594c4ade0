// OperatorAuth implementation.
#include "server/core/operator_auth.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/fmt_absl.h"
#include "common/fs.h"
#include "common/ids.h"
#include "crypto/secrets.h"

namespace muster::server {

std::string_view toString(Role role) {
  switch (role) {
    case Role::kViewer: return "viewer";
    case Role::kOperator: return "operator";
    case Role::kAdmin: return "admin";
  }
  return "viewer";
}

bool parseRole(std::string_view text, Role* out) {
  for (Role r : {Role::kViewer, Role::kOperator, Role::kAdmin}) {
    if (toString(r) == text) {
      *out = r;
      return true;
    }
  }
  return false;
}

OperatorAuth::OperatorAuth(store::Store& store, const common::Clock& clock)
    : store_(store), clock_(clock) {}

absl::Status OperatorAuth::bootstrapAdmin(const std::string& path) {
  std::string secret;
  if (common::fileExists(path)) {
    auto raw = common::readFile(path);
    if (!raw.ok()) return raw.status();
    secret = *raw;
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == ' ')) secret.pop_back();
    if (secret.empty()) return absl::DataLossError(path + " is empty: delete it and restart");
  } else {
    secret = crypto::randomToken("mst_admin_");
    if (auto st = common::writeFileAtomic(path, secret + "\n", 0600); !st.ok()) return st;
    spdlog::info("admin token written to {} (mode 0600)", path);
  }
  std::string hash = crypto::sha256Hex(secret);
  auto existing = store_.findApiTokenByHash(hash);
  if (!existing.ok()) return existing.status();
  if (existing->has_value()) return absl::OkStatus();
  store::ApiToken token;
  token.id = common::newUlid(clock_.nowMs());
  token.token_hash = hash;
  token.role = "admin";
  token.name = "admin";
  token.created_by = "musterd";
  token.created_at_ms = clock_.nowMs();
  return store_.writeAndWait(store::InsertApiToken{token}).status;
}

absl::StatusOr<Principal> OperatorAuth::authenticate(std::string_view bearer) {
  const char* kHint =
      ": pass a token with --token or MUSTER_TOKEN (an admin creates one with "
      "`muster token create --role ROLE`)";
  if (bearer.empty()) return absl::UnauthenticatedError(absl::StrCat("missing API token", kHint));
  auto token = store_.findApiTokenByHash(crypto::sha256Hex(bearer));
  if (!token.ok()) return token.status();
  if (!token->has_value())
    return absl::UnauthenticatedError(absl::StrCat("invalid API token", kHint));
  const auto& t = **token;
  if (t.revoked) return absl::UnauthenticatedError(absl::StrCat("API token revoked", kHint));
  if (t.expires_at_ms > 0 && clock_.nowMs() >= t.expires_at_ms) {
    return absl::UnauthenticatedError(absl::StrCat("API token expired", kHint));
  }
  Principal p;
  p.token_id = t.id;
  p.name = t.name.empty() ? t.id : t.name;
  if (!parseRole(t.role, &p.role)) p.role = Role::kViewer;
  return p;
}

absl::StatusOr<NewApiToken> OperatorAuth::create(Role role, std::string name, int64_t ttl_ms,
                                                 std::string created_by) {
  if (ttl_ms < 0) return absl::InvalidArgumentError("ttl must not be negative");
  if (name.size() > 128) return absl::InvalidArgumentError("token name longer than 128 bytes");
  int64_t now = clock_.nowMs();
  NewApiToken out;
  out.secret = crypto::randomToken(absl::StrCat("mst_", std::string(toString(role)), "_"));
  out.record.id = common::newUlid(now);
  out.record.token_hash = crypto::sha256Hex(out.secret);
  out.record.role = std::string(toString(role));
  out.record.name = name.empty()
                        ? absl::StrCat(std::string(toString(role)), "-", out.record.id.substr(20))
                        : std::move(name);
  out.record.created_by = std::move(created_by);
  out.record.created_at_ms = now;
  out.record.expires_at_ms = ttl_ms > 0 ? now + ttl_ms : 0;
  auto r = store_.writeAndWait(store::InsertApiToken{out.record});
  if (!r.status.ok()) return r.status;
  return out;
}

absl::StatusOr<std::vector<store::ApiToken>> OperatorAuth::list() { return store_.listApiTokens(); }

absl::Status OperatorAuth::revoke(const std::string& id) {
  auto r = store_.writeAndWait(store::RevokeApiToken{id});
  if (!r.status.ok()) return r.status;
  if (r.rows == 0) {
    return absl::NotFoundError(absl::StrCat("no API token with id '", id.substr(0, 140), "'"));
  }
  return absl::OkStatus();
}

absl::Status OperatorAuth::require(const Principal& principal, Role needed,
                                   std::string_view action) {
  if (principal.role >= needed) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "this token has role ", std::string(toString(principal.role)), "; ", std::string(action),
      " needs ", std::string(toString(needed)), ": ask an admin for `muster token create --role ",
      std::string(toString(needed)), "`"));
}

}  // namespace muster::server
