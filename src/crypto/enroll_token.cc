#include "crypto/enroll_token.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace muster::crypto {

std::string formatEnrollToken(std::string_view secret, std::string_view ca_sha256) {
  std::string out(secret);
  if (!ca_sha256.empty()) absl::StrAppend(&out, ".", std::string(ca_sha256));
  return out;
}

absl::StatusOr<EnrollToken> parseEnrollToken(std::string_view text) {
  while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  if (text.empty()) return absl::InvalidArgumentError("the enrollment token is empty");
  if (text.size() > 512) {
    return absl::InvalidArgumentError("the enrollment token is longer than 512 characters");
  }
  EnrollToken token;
  std::string_view secret = text, pin;
  if (size_t dot = text.find('.'); dot != std::string_view::npos) {
    secret = text.substr(0, dot);
    pin = text.substr(dot + 1);
    if (pin.size() != 64) {
      return absl::InvalidArgumentError(
          "the enrollment token's CA pin (after the '.') must be 64 hex digits: copy the whole "
          "token `muster token create --enroll` printed");
    }
    for (char c : pin) {
      if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError(
            "the enrollment token's CA pin (after the '.') must be hex digits only");
      }
      token.ca_sha256.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
    }
  }
  if (secret.empty()) return absl::InvalidArgumentError("the enrollment token has no secret");
  for (char c : secret) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') {
      return absl::InvalidArgumentError(
          "the enrollment token holds characters no token has: copy it again as printed");
    }
  }
  token.secret = std::string(secret);
  return token;
}

}  // namespace muster::crypto
