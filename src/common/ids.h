// Identifiers: ULIDs for everything the server creates, validation of agent-supplied ids.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace muster::common {

// 26-character Crockford base32 ULID: sortable by creation time, 80 random bits.
std::string newUlid(int64_t now_ms);

// Agent ids are chosen by the agent: [A-Za-z0-9._-]{1,128}.
bool isValidAgentId(std::string_view id);

// Label keys and values: keys [A-Za-z0-9._/-]{1,63}, values printable, up to 255 bytes.
bool isValidLabelKey(std::string_view key);
bool isValidLabelValue(std::string_view value);

}  // namespace muster::common
