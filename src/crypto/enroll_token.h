// The enrollment token as operators pass it around: the secret musterd checks, and the
// SHA-256 pin of musterd's CA that lets an agent trust the server before it has the CA.
//   mst_enroll_<secret>.<64 hex digits>   pinned (what musterd hands out over TLS)
//   mst_enroll_<secret>                   unpinned (--insecure-plaintext, or --ca given)
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace muster::crypto {

struct EnrollToken {
  std::string secret;     // sent to musterd
  std::string ca_sha256;  // lower-case hex; empty when unpinned
};

std::string formatEnrollToken(std::string_view secret, std::string_view ca_sha256);
// Surrounding whitespace (a token file's newline) is ignored; anything else malformed is
// InvalidArgument saying what is wrong.
absl::StatusOr<EnrollToken> parseEnrollToken(std::string_view text);

}  // namespace muster::crypto
