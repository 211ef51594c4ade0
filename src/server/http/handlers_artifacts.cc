// /api/v1/artifacts: list, show, delete, pin/unpin and the content (with Range).
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/core/artifact_service.h"
#include "server/http/api_json.h"
#include "server/http/handlers.h"

namespace muster::server::http {
namespace {

ApiReply noArtifacts() { return errorReply(404, "not_found", "this musterd stores no artifacts"); }

absl::Status paramError(std::string_view key, std::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("query parameter ", toAbsl(key), ": ", toAbsl(message)));
}

// "bytes=A-B", "bytes=A-" or "bytes=-N" against `size`: [offset, offset + length). One range
// only; nullopt (416) when unsatisfiable or malformed.
std::optional<std::pair<uint64_t, uint64_t>> parseRange(std::string_view header, uint64_t size) {
  constexpr std::string_view kPrefix = "bytes=";
  if (size == 0) return std::nullopt;  // nothing to give a part of
  if (header.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  std::string_view spec = header.substr(kPrefix.size());
  size_t dash = spec.find('-');
  if (dash == std::string_view::npos || spec.find(',') != std::string_view::npos) {
    return std::nullopt;
  }
  std::string_view first = spec.substr(0, dash), last = spec.substr(dash + 1);
  uint64_t a = 0, b = 0;
  if (first.empty()) {  // the last N bytes
    if (!absl::SimpleAtoi(toAbsl(last), &b) || b == 0) return std::nullopt;
    b = std::min(b, size);
    return std::make_pair(size - b, b);
  }
  if (!absl::SimpleAtoi(toAbsl(first), &a) || a >= size) return std::nullopt;
  if (last.empty()) return std::make_pair(a, size - a);
  if (!absl::SimpleAtoi(toAbsl(last), &b) || b < a) return std::nullopt;
  b = std::min(b, size - 1);
  return std::make_pair(a, b - a + 1);
}

}  // namespace

ApiReply listArtifacts(Context& ctx) {
  ArtifactService* artifacts = ctx.plane.artifacts();
  if (artifacts == nullptr) return noArtifacts();
  model::ArtifactQuery q;
  auto limit = limitParam(ctx, 100, 1000);
  if (!limit.ok()) return errorReply(limit.status());
  q.limit = *limit;
  if (const std::string* host = ctx.param("host"); host && !host->empty()) {
    if (auto st = checkId("host", *host); !st.ok()) return errorReply(st);
    q.host_id = *host;
  }
  if (const std::string* command = ctx.param("command"); command && !command->empty()) {
    if (auto st = checkId("command", *command); !st.ok()) return errorReply(st);
    q.command_id = *command;
  }
  if (const std::string* purpose = ctx.param("purpose"); purpose && !purpose->empty()) {
    model::ArtifactPurpose p{};
    if (!model::parseArtifactPurpose(*purpose, &p)) {
      return errorReply(paramError("purpose", "one of logs, bundle, file, package, shipment"));
    }
    q.purpose = p;
  }
  for (const char* key : {"since", "until"}) {
    if (const std::string* t = ctx.param(key); t && !t->empty()) {
      auto at = parseRfc3339Ms(*t);
      if (!at.ok()) {
        return errorReply(paramError(key, "a time like 2026-11-23T20:00:00Z"));
      }
      (std::string_view(key) == "since" ? q.since_ms : q.until_ms) = *at;
    }
  }
  if (const std::string* before = ctx.param("before"); before && !before->empty()) {
    if (auto st = checkId("artifact", *before); !st.ok()) return errorReply(st);
    q.before_id = *before;
  }
  auto list = artifacts->store().list(q);
  if (!list.ok()) return errorReply(list.status());
  boost::json::array items;
  for (const auto& a : *list) items.emplace_back(artifactJson(a));
  boost::json::object body;
  body["artifacts"] = std::move(items);
  if (static_cast<int>(list->size()) == q.limit && !list->empty()) {
    body["next_before"] = list->back().id;
  } else {
    body["next_before"] = nullptr;
  }
  return jsonReply(200, body);
}

ApiReply getArtifact(Context& ctx, const std::string& id) {
  ArtifactService* artifacts = ctx.plane.artifacts();
  if (artifacts == nullptr) return noArtifacts();
  auto a = artifacts->store().get(id);
  if (!a.ok()) return errorReply(a.status());
  return jsonReply(200, artifactJson(*a));
}

ApiReply deleteArtifact(Context& ctx, const std::string& id) {
  ArtifactService* artifacts = ctx.plane.artifacts();
  if (artifacts == nullptr) return noArtifacts();
  auto a = artifacts->store().get(id);
  if (!a.ok()) return errorReply(a.status());
  if (artifacts->neededByOpenCommand(*a)) {
    return errorReply(absl::FailedPreconditionError(
        absl::StrCat("artifact ", id,
                     " belongs to a command that is still open: cancel it or wait for it "
                     "to end, then delete")));
  }
  if (auto st = artifacts->store().remove(id); !st.ok()) return errorReply(st);
  ApiReply reply = jsonReply(200, artifactJson(*a));
  reply.audit_target = id;
  reply.audit_host = a->host_id;
  return reply;
}

ApiReply pinArtifact(Context& ctx, const std::string& id, bool pinned) {
  ArtifactService* artifacts = ctx.plane.artifacts();
  if (artifacts == nullptr) return noArtifacts();
  if (auto st = artifacts->store().setPinned(id, pinned); !st.ok()) return errorReply(st);
  auto a = artifacts->store().get(id);
  if (!a.ok()) return errorReply(a.status());
  ApiReply reply = jsonReply(200, artifactJson(*a));
  reply.audit_target = id;
  reply.audit_host = a->host_id;
  return reply;
}

ApiReply artifactContent(Context& ctx, const std::string& id) {
  ArtifactService* artifacts = ctx.plane.artifacts();
  if (artifacts == nullptr) return noArtifacts();
  auto a = artifacts->store().get(id);
  if (!a.ok()) return errorReply(a.status());
  std::string path = artifacts->store().localPath(id);
  if (path.empty()) {
    return errorReply(501, "unimplemented", "this artifact store cannot serve content over HTTP");
  }
  ApiReply reply;
  reply.file_path = std::move(path);
  reply.content_type = "application/octet-stream";
  reply.headers.emplace_back("X-Muster-Sha256", a->sha256);
  reply.headers.emplace_back("Accept-Ranges", "bytes");
  // The stored name, quoted; a name with quotes or non-ASCII goes percent-encoded as well.
  std::string ascii;
  for (char c : a->name) ascii.push_back((c == '"' || c == '\\' || (c & 0x80)) ? '_' : c);
  reply.headers.emplace_back("Content-Disposition",
                             absl::StrCat("attachment; filename=\"", ascii, "\""));
  if (!ctx.request.range.empty()) {
    auto range = parseRange(ctx.request.range, a->size);
    if (!range) {
      ApiReply bad = errorReply(
          416, "out_of_range",
          absl::StrCat("Range '", ctx.request.range.substr(0, 64), "' does not fit artifact ", id,
                       " (", a->size, " bytes); give one range like bytes=1024-"));
      bad.headers.emplace_back("Content-Range", absl::StrCat("bytes */", a->size));
      return bad;
    }
    reply.status = 206;
    reply.file_offset = range->first;
    reply.file_length = range->second;
    reply.headers.emplace_back(
        "Content-Range",
        absl::StrCat("bytes ", range->first, "-", range->first + range->second - 1, "/", a->size));
  }
  return reply;
}

}  // namespace muster::server::http
