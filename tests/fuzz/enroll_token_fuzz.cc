// Fuzz target: the enrollment token as an operator pastes it (crypto::parseEnrollToken:
// --enroll-token, --enroll-token-file, MUSTER_ENROLL_TOKEN), and formatEnrollToken's round
// trip: whatever parses prints back to itself, and any valid secret and pin come back whole.
#include <string>

#include "absl/strings/ascii.h"
#include "crypto/enroll_token.h"
#include "tests/fuzz/fuzz_support.h"

namespace {
using namespace muster;

bool secretChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
}

bool lowerHex64(const std::string& pin) {
  if (pin.size() != 64) return false;
  for (char c : pin) {
    if (!(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

std::string_view trimmed(std::string_view text) {
  while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return text;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto token = crypto::parseEnrollToken(text);
  if (token.ok()) {
    MUSTER_FUZZ_CHECK(!token->secret.empty());
    for (char c : token->secret) MUSTER_FUZZ_CHECK(secretChar(c));
    MUSTER_FUZZ_CHECK(token->ca_sha256.empty() || lowerHex64(token->ca_sha256));
    // Lossless but for surrounding whitespace and the pin's case.
    std::string printed = crypto::formatEnrollToken(token->secret, token->ca_sha256);
    MUSTER_FUZZ_CHECK(absl::AsciiStrToLower(printed) ==
                      absl::AsciiStrToLower(std::string(trimmed(text))));
    MUSTER_FUZZ_CHECK(printed.size() <= 512);
    auto again = crypto::parseEnrollToken(printed);
    MUSTER_FUZZ_CHECK(again.ok());
    MUSTER_FUZZ_CHECK(again->secret == token->secret && again->ca_sha256 == token->ca_sha256);
  } else {
    MUSTER_FUZZ_CHECK(absl::IsInvalidArgument(token.status()));
    // Fixed sentences: a token (a secret) is never echoed into a log line.
    MUSTER_FUZZ_CHECK(token.status().message().size() < 160);
  }

  // The round trip from the other side: a secret and a pin made of the input's bytes.
  fuzz::FuzzInput in(data, size);
  std::string secret;
  for (char c : in.bytes(in.byte() % 128)) {
    if (secretChar(c)) secret.push_back(c);
  }
  std::string pin;
  bool pinned = in.byte() % 4 != 0;
  bool upper = in.byte() % 2 == 1;
  if (pinned) {
    static const char* kDigits = "0123456789abcdef";
    for (int i = 0; i < 32; ++i) {
      uint8_t b = in.byte();
      pin.push_back(kDigits[b >> 4]);
      pin.push_back(kDigits[b & 15]);
    }
  }
  if (secret.empty()) return 0;
  std::string printed = crypto::formatEnrollToken(secret, upper ? absl::AsciiStrToUpper(pin) : pin);
  auto back = crypto::parseEnrollToken(in.byte() % 2 ? " \t" + printed + "\r\n" : printed);
  MUSTER_FUZZ_CHECK(back.ok());
  MUSTER_FUZZ_CHECK(back->secret == secret);
  MUSTER_FUZZ_CHECK(back->ca_sha256 == pin);
  return 0;
}
