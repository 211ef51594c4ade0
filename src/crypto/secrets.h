// Secrets: random tokens, SHA-256, constant-time comparison (OpenSSL).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace muster::crypto {

// `bytes` of CSPRNG output, URL-safe base32 (lowercase), with an optional prefix.
std::string randomToken(std::string_view prefix, int bytes = 32);
std::string sha256Hex(std::string_view data);
// `bytes` bytes from the CSPRNG (key material).
std::string randomBytes(int bytes);
bool constantTimeEquals(std::string_view a, std::string_view b);

// SHA-256 over bytes that arrive in pieces (artifact transfers); hex like sha256Hex.
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void update(std::string_view data);
  // The digest of everything so far; the stream starts afresh after it.
  std::string finishHex();
  uint64_t bytes() const { return bytes_; }

 private:
  void* ctx_;  // EVP_MD_CTX
  uint64_t bytes_ = 0;
};

// True for 64 lower-case hex digits.
bool isSha256Hex(std::string_view text);

}  // namespace muster::crypto
