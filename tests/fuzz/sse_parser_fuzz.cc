// Fuzz target: the CLI's event-stream reader (SseParser) on bytes from the server, split into
// pieces as curl delivers them, and what `muster run` does with each event (cmd_run.cc's
// followRun: the JSON data read with field/member, the final record summarized).
#include <boost/json/parse.hpp>

#include "cli/command_view.h"
#include "cli/format.h"
#include "cli/http_client.h"
#include "tests/fuzz/fuzz_support.h"

namespace {
namespace json = boost::json;
using namespace muster::cli;

void onEvent(const SseEvent& event) {
  boost::system::error_code ec;
  json::value data = json::parse(event.data, ec);
  if (ec) return;
  if (event.event == "output") {
    (void)field(data, "stream");
    (void)field(data, "data");
  } else if (event.event == "end") {
    (void)outcomeText(data);
    (void)commandText(data);
    (void)succeeded(data);
    (void)field(data, "host_id");
  } else if (event.event == "error") {
    if (const json::value* error = member(data, "error")) (void)field(*error, "message");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  muster::fuzz::FuzzInput in(data, size);
  uint8_t seed = in.byte();
  size_t max_piece = 1 + in.byte();
  std::string_view stream = in.rest();

  std::vector<std::pair<std::string, std::string>> split_events, whole_events;
  // A small bound, so that inputs reach it: where the network splits the stream must not
  // change where it is refused either.
  constexpr size_t kMax = 4096;
  SseParser split(kMax);
  bool split_ok = true;
  muster::fuzz::Splitter pieces(stream, seed, max_piece);
  while (!pieces.done() && split_ok) {
    split_ok = split
                   .feed(pieces.next(),
                         [&](const SseEvent& e) {
                           split_events.emplace_back(e.event, e.data);
                           onEvent(e);
                         })
                   .ok();
  }
  SseParser whole(kMax);
  bool whole_ok =
      whole.feed(stream, [&](const SseEvent& e) { whole_events.emplace_back(e.event, e.data); })
          .ok();
  // Where the network splits the stream must not change the events.
  MUSTER_FUZZ_CHECK(split_events == whole_events);
  MUSTER_FUZZ_CHECK(split_ok == whole_ok);
  return 0;
}
