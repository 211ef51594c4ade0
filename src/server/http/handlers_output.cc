// GET /api/v1/commands/{id}/output: the whole stored output, or the hand-over to SSE.
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/http/api_json.h"
#include "server/http/handlers.h"

namespace muster::server::http {
namespace {

// Offsets in JSON stay exact up to 2^53 (JavaScript clients); no output comes near it.
constexpr uint64_t kMaxOffset = uint64_t{1} << 53;

absl::Status offsetError(std::string_view what, std::string_view text) {
  return fieldRangeError(
      absl::StrCat("invalid ", toAbsl(what), " '", toAbsl(text.substr(0, 32)),
                   "': use a byte offset from 0 to ", kMaxOffset,
                   " (the \"offset\" of an output event plus the length of its data, or the "
                   "\"resume\" of an error event)"),
      what, 0, static_cast<int64_t>(kMaxOffset));
}

absl::StatusOr<uint64_t> parseOffset(std::string_view what, std::string_view text) {
  uint64_t value = 0;
  if (text.empty() || text.size() > 20 || !absl::SimpleAtoi(toAbsl(text), &value) ||
      value > kMaxOffset || !absl::ascii_isdigit(static_cast<unsigned char>(text[0]))) {
    return offsetError(what, text);
  }
  return value;
}

// Where a follower resumes: Last-Event-ID ("STDOUT,STDERR", what an EventSource sends when
// it reconnects) wins over stdout_offset / stderr_offset in the query.
absl::Status readResume(const Context& ctx, FollowSpec* spec) {
  for (auto [key, out] : {std::pair{"stdout_offset", &spec->stdout_offset},
                          std::pair{"stderr_offset", &spec->stderr_offset}}) {
    const std::string* text = ctx.param(key);
    if (!text) continue;
    auto value = parseOffset(key, *text);
    if (!value.ok()) return value.status();
    *out = *value;
  }
  const std::string& id = ctx.request.last_event_id;
  if (id.empty()) return absl::OkStatus();
  size_t comma = id.find(',');
  if (comma == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid Last-Event-ID '", id.substr(0, 64),
        "': send back the id of the last event received, like 1024,0 (stdout and stderr "
        "offsets)"));
  }
  auto out = parseOffset("Last-Event-ID stdout offset", std::string_view(id).substr(0, comma));
  if (!out.ok()) return out.status();
  auto err = parseOffset("Last-Event-ID stderr offset", std::string_view(id).substr(comma + 1));
  if (!err.ok()) return err.status();
  spec->stdout_offset = *out;
  spec->stderr_offset = *err;
  return absl::OkStatus();
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
  if (!follow) {
    for (const char* key : {"stdout_offset", "stderr_offset"}) {
      if (ctx.param(key)) {
        return errorReply(absl::InvalidArgumentError(
            absl::StrCat(key, " resumes an event stream: add follow=1")));
      }
    }
  }
  FollowSpec spec;
  if (follow) {
    if (auto st = readResume(ctx, &spec); !st.ok()) return errorReply(st);
  }
  auto command = ctx.plane.commands().get(id);
  if (!command.ok()) return errorReply(command.status());
  if (follow) {
    spec.command = *std::move(command);
    spec.want_stdout = want_stdout;
    spec.want_stderr = want_stderr;
    ApiReply reply;
    reply.follow = std::move(spec);
    return reply;
  }
  bool truncated = command->output_truncated;
  boost::json::object body;
  body["command_id"] = command->id;
  body["state"] = std::string(model::toString(command->state));
  for (auto [want, stream] : {std::pair{want_stdout, model::OutputStream::kStdout},
                              std::pair{want_stderr, model::OutputStream::kStderr}}) {
    if (!want) continue;
    auto text = ctx.plane.queries().output(id, stream);
    if (!text.ok()) return errorReply(text.status());
    truncated = truncated || text->truncated;
    body[model::toString(stream)] = std::move(text->text);
  }
  body["truncated"] = truncated;
  return jsonReply(200, body);
}

}  // namespace muster::server::http
