// Command-scoped artifacts: what a command expects to move, and what the store keeps.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace muster::model {

// Why the bytes move; the wire enum's values (0 is refused).
enum class ArtifactPurpose {
  kUnspecified = 0,
  kLogs = 1,
  kBundle = 2,
  kFile = 3,
  kPackage = 4,
  kShipment = 5
};
std::string_view toString(ArtifactPurpose purpose);
bool parseArtifactPurpose(std::string_view text, ArtifactPurpose* out);

enum class TransferDirection { kUpload = 1, kDownload = 2 };  // seen from the agent
std::string_view toString(TransferDirection direction);
bool parseTransferDirection(std::string_view text, TransferDirection* out);

// A transfer a command allows while it is in flight. Optional fields left empty (or 0)
// match anything.
struct ArtifactExpectation {
  TransferDirection direction = TransferDirection::kUpload;
  ArtifactPurpose purpose = ArtifactPurpose::kUnspecified;
  std::string artifact_id;  // a download's artifact (required); an upload's id, if set
  std::string device;       // a device on the host (a disk, a BMC), if the transfer names one
  uint64_t max_bytes = 0;   // 0: the server's limit for the purpose
  // A download's artifact as it was when the command was made: checked against the store
  // before the first byte, so a changed artifact is never sent in its place.
  std::string sha256;
  uint64_t size = 0;
  bool operator==(const ArtifactExpectation&) const = default;
};

// A finalized artifact: the metadata sidecar, enough to serve it without rehashing.
struct Artifact {
  std::string id;  // server-generated ULID
  std::string name;
  uint64_t size = 0;
  std::string sha256;  // lower-case hex; also the content's address in the store
  ArtifactPurpose purpose = ArtifactPurpose::kUnspecified;
  std::string host_id;     // the uploading host; empty for an operator's upload
  std::string command_id;  // the command it belongs to; empty for an operator's upload
  std::string created_by;  // an operator token's name, or the agent id
  int64_t created_at_ms = 0;
  bool pinned = false;  // kept by retention until unpinned
  // The command's expectation it completed (its index in Command::artifacts); -1: none.
  int expectation = -1;
};

struct ArtifactQuery {
  std::string host_id;
  std::string command_id;
  std::optional<ArtifactPurpose> purpose;
  int64_t since_ms = 0;   // created_at_ms >= (0: no bound)
  int64_t until_ms = 0;   // created_at_ms < (0: no bound)
  std::string before_id;  // newest first, ids below this (the cursor)
  int limit = 100;
};

// The name an artifact is stored and served under: the base name of `name`, with control
// characters dropped; empty, ".", ".." or a reserved name becomes `fallback`.
std::string sanitizeArtifactName(std::string_view name, std::string_view fallback = "artifact");

}  // namespace muster::model
