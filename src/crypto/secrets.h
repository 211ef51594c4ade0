// Secrets: random tokens, SHA-256, constant-time comparison (OpenSSL).
#pragma once

#include <string>
#include <string_view>

namespace muster::crypto {

// `bytes` of CSPRNG output, URL-safe base32 (lowercase), with an optional prefix.
std::string randomToken(std::string_view prefix, int bytes = 32);
std::string sha256Hex(std::string_view data);
// `bytes` bytes from the CSPRNG (key material).
std::string randomBytes(int bytes);
bool constantTimeEquals(std::string_view a, std::string_view b);

}  // namespace muster::crypto
