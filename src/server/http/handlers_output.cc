// GET /api/v1/commands/{id}/output: the whole stored output, or the hand-over to SSE.
#include "absl/strings/str_cat.h"
#include "server/http/api_json.h"
#include "server/http/handlers.h"
#include "server/http/output_text.h"

namespace muster::server::http {
namespace {

constexpr uint64_t kPageBytes = 4ull << 20;
// A well-behaved agent stores at most CoreConfig::max_output_bytes per stream; this bounds
// the reply if a store holds more.
constexpr uint64_t kMaxReplyBytesPerStream = 64ull << 20;

absl::StatusOr<std::string> assembleStream(store::Store& store, const std::string& id,
                                           model::OutputStream stream, bool* truncated) {
  StreamCursor cursor;
  std::string raw;
  uint64_t from = 0;
  while (true) {
    auto chunks = store.readOutput(id, stream, from, kPageBytes);
    if (!chunks.ok()) return chunks.status();
    if (chunks->empty()) break;
    for (const auto& chunk : *chunks) {
      auto piece = cursor.accept(chunk.offset, chunk.data);
      if (!piece) continue;
      if (piece->gap_bytes > 0) {
        raw += truncationMarker(piece->gap_bytes);
        *truncated = true;
      }
      raw.append(piece->data);
    }
    if (raw.size() > kMaxReplyBytesPerStream) {
      raw += "\n[... output too large for one reply; follow it with ?follow=1 ...]\n";
      *truncated = true;
      break;
    }
    if (cursor.next() <= from) break;
    from = cursor.next();
  }
  return sanitizeUtf8(raw);
}

}  // namespace

ApiReply commandOutput(Context& ctx, const std::string& id, bool follow) {
  bool want_stdout = true, want_stderr = true;
  if (const std::string* s = ctx.param("stream"); s && !s->empty() && *s != "both") {
    if (*s == "stdout") {
      want_stderr = false;
    } else if (*s == "stderr") {
      want_stdout = false;
    } else {
      return errorReply(absl::InvalidArgumentError(
          absl::StrCat("invalid stream '", s->substr(0, 32), "': use stdout, stderr or both")));
    }
  }
  auto command = ctx.plane.commands().get(id);
  if (!command.ok()) return errorReply(command.status());
  if (follow) {
    ApiReply reply;
    reply.follow = FollowSpec{*std::move(command), want_stdout, want_stderr};
    return reply;
  }
  bool truncated = command->output_truncated;
  boost::json::object body;
  body["command_id"] = command->id;
  body["state"] = std::string(model::toString(command->state));
  for (auto [want, stream] : {std::pair{want_stdout, model::OutputStream::kStdout},
                              std::pair{want_stderr, model::OutputStream::kStderr}}) {
    if (!want) continue;
    auto text = assembleStream(ctx.plane.store(), id, stream, &truncated);
    if (!text.ok()) return errorReply(text.status());
    body[model::toString(stream)] = *std::move(text);
  }
  body["truncated"] = truncated;
  return jsonReply(200, body);
}

}  // namespace muster::server::http
