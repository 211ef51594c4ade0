// String forms and name rules of artifacts.
#include "model/artifact.h"

namespace muster::model {

std::string_view toString(ArtifactPurpose purpose) {
  switch (purpose) {
    case ArtifactPurpose::kUnspecified: return "unspecified";
    case ArtifactPurpose::kLogs: return "logs";
    case ArtifactPurpose::kBundle: return "bundle";
    case ArtifactPurpose::kFile: return "file";
    case ArtifactPurpose::kPackage: return "package";
    case ArtifactPurpose::kShipment: return "shipment";
  }
  return "unspecified";
}

bool parseArtifactPurpose(std::string_view text, ArtifactPurpose* out) {
  for (int i = 1; i <= static_cast<int>(ArtifactPurpose::kShipment); ++i) {
    auto p = static_cast<ArtifactPurpose>(i);
    if (toString(p) == text) {
      *out = p;
      return true;
    }
  }
  return false;
}

std::string_view toString(TransferDirection direction) {
  return direction == TransferDirection::kDownload ? "download" : "upload";
}

bool parseTransferDirection(std::string_view text, TransferDirection* out) {
  if (text == "upload") {
    *out = TransferDirection::kUpload;
  } else if (text == "download") {
    *out = TransferDirection::kDownload;
  } else {
    return false;
  }
  return true;
}

std::string sanitizeArtifactName(std::string_view name, std::string_view fallback) {
  if (size_t slash = name.find_last_of("/\\"); slash != std::string_view::npos) {
    name.remove_prefix(slash + 1);
  }
  std::string out;
  out.reserve(name.size());
  for (char ch : name) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) continue;
    out.push_back(ch);
  }
  if (out.size() > 255) out.resize(255);
  if (out.empty() || out == "." || out == ".." || out == "meta.json") return std::string(fallback);
  return out;
}

}  // namespace muster::model
