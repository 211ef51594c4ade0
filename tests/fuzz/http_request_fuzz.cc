// Fuzz target: HTTP requests as musterd's REST port reads them. Bytes arrive in pieces of
// arbitrary size into Beast's request parser, configured and driven as connection.cc does
// (header limit, body limit, Content-Length check, chunked bodies, pipelined requests); each
// parsed request then goes through Api (URL and query parsing, routing, authentication) on a
// real ControlPlane, with a viewer token when the first byte says so, so the read-only
// handlers and their query parameters (selector, status, state, limit, cursor, view,
// stream) see the fuzzer's bytes too. Ids nobody can guess are written in the target as @C
// (a finished command with output) and @R (its run).
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/json/parse.hpp>

#include "server/http/api.h"
#include "server/http/http_server.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/plane_fixture.h"

namespace {
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using namespace muster;

constexpr uint32_t kHeaderLimit = 16 * 1024;  // connection.cc's kHeaderLimit
const uint64_t kBodyLimit = server::http::HttpOptions{}.max_body_bytes;
constexpr int kMaxRequestsPerInput = 4;

struct World {
  fuzz::PlaneFixture fixture;
  server::http::Api api;
  std::string viewer_bearer;
  std::string command_id, run_id;
  bool verbose = std::getenv("MUSTER_FUZZ_VERBOSE") != nullptr;

  World()
      : fixture(fuzz::scratchDir("http_request"), server::CoreConfig{}),
        api(fixture.plane(), nullptr) {
    auto& plane = fixture.plane();
    std::string credential = fixture.enroll("web-1", {{"env", "prod"}, {"role", "web"}});
    fixture.enroll("web-2", {{"env", "staging"}});
    // web-1 ran a command with some output (a gap and a split UTF-8 character in it), and has
    // one queued; web-2 has one queued.
    std::string done = fixture.runOn("web-1");
    command_id = done;
    fixture.runOn("web-1");
    fixture.runOn("web-2");
    auto session = std::make_shared<fuzz::CountingSession>("web-1", "s1");
    fuzz::fixtureCheck(plane.openStream(session, credential), "opening a stream");
    server::HelloInfo hello;
    hello.agent_id = "web-1";
    fuzz::fixtureCheck(plane.onAgentMessage(session, hello), "hello");
    for (auto [offset, data] : {std::pair<uint64_t, std::string>{0, "hello \xE2\x82"},
                                {8, "\xAC world\n"},
                                {4096, "tail\n"}}) {
      server::OutputMsg output{{done, model::OutputStream::kStdout, offset, data}};
      fuzz::fixtureCheck(plane.onAgentMessage(session, output), "output");
    }
    server::ResultMsg result;
    result.result.command_id = done;
    result.result.state = model::CommandState::kSucceeded;
    result.result.exit_code = 0;
    fuzz::fixtureCheck(plane.onAgentMessage(session, result), "result");
    fuzz::fixtureCheck(fixture.store().flush(), "flushing the store");
    plane.onStreamClosed(session, absl::OkStatus());
    auto command = plane.commands().get(done);
    fuzz::fixtureCheck(command.status(), "reading the finished command");
    run_id = command->run_id;
    auto token = plane.auth().create(server::Role::kViewer, "fuzz", 0, "fuzz");
    fuzz::fixtureCheck(token.status(), "creating a viewer token");
    viewer_bearer = "Bearer " + token->secret;
  }
};

World& world() {
  static World* w = [] {
    fuzz::quietLogs();
    return new World();  // never destroyed: libFuzzer may exit from any thread
  }();
  return *w;
}

void replaceAll(std::string* text, std::string_view from, const std::string& to) {
  for (size_t at = text->find(from); at != std::string::npos; at = text->find(from, at)) {
    text->replace(at, from.size(), to);
    at += to.size();
  }
}

// The bytes received from the socket and not yet consumed by the parser (the connection's
// flat_buffer), and those still to arrive.
struct Wire {
  std::string buffered;
  fuzz::Splitter pending;
  bool receive() {
    if (pending.done()) return false;
    buffered.append(pending.next());
    return true;
  }
};

// beast::http::read_some's loop (boost/beast/http/impl/read.hpp), on the fuzzer's pieces:
// parse what is buffered; on need_more receive another piece; at the end of input, EOF.
bool readUntil(bhttp::request_parser<bhttp::string_body>& parser, Wire& wire, bool header_only,
               beast::error_code& ec) {
  parser.eager(!header_only);  // what read_header and read set
  auto done = [&] { return header_only ? parser.is_header_done() : parser.is_done(); };
  while (!done()) {
    if (wire.buffered.empty() && !wire.receive()) {
      if (!parser.got_some()) return false;  // end_of_stream: the client left
      parser.put_eof(ec);
      return !ec && done();
    }
    size_t used = parser.put(boost::asio::buffer(wire.buffered), ec);
    wire.buffered.erase(0, used);
    if (ec == bhttp::error::need_more) {
      ec = {};
      if (!wire.receive()) {
        if (!parser.got_some()) return false;
        parser.put_eof(ec);
        return !ec && done();
      }
      continue;
    }
    if (ec) return false;  // the server answers 400, 413 or 431 and closes
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  fuzz::FuzzInput in(data, size);
  uint8_t flags = in.byte();
  uint8_t seed = in.byte();
  size_t max_piece = 1 + (flags >> 1) * 8;
  Wire wire{{}, fuzz::Splitter(in.rest(), seed, max_piece)};

  for (int n = 0; n < kMaxRequestsPerInput; ++n) {
    if (wire.buffered.empty() && !wire.receive()) break;
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(kBodyLimit);
    beast::error_code ec;
    if (!readUntil(parser, wire, true, ec)) break;
    auto& req = parser.get();
    if (auto length = parser.content_length(); length && *length > kBodyLimit) break;  // 413
    if (!parser.is_done()) {
      (void)beast::iequals(req[bhttp::field::expect], "100-continue");
      if (!readUntil(parser, wire, false, ec)) break;
    }
    MUSTER_FUZZ_CHECK(req.body().size() <= kBodyLimit);

    server::http::ApiRequest request;
    request.method = std::string(req.method_string());
    request.target = std::string(req.target());
    replaceAll(&request.target, "@C", w.command_id);
    replaceAll(&request.target, "@R", w.run_id);
    request.authorization = std::string(req[bhttp::field::authorization]);
    request.idempotency_key = std::string(req["Idempotency-Key"]);
    request.accept = std::string(req[bhttp::field::accept]);
    request.body = std::move(req.body());
    if (flags & 1) request.authorization = w.viewer_bearer;
    bool keep_alive = req.keep_alive();

    server::http::Route route = server::http::Route::kUnknown;
    server::http::ApiReply reply;
    if (auto inline_reply = w.api.tryInline(request, &route)) {
      reply = *std::move(inline_reply);
    } else {
      reply = w.api.handle(request, &route);
    }
    if (w.verbose) {  // MUSTER_FUZZ_VERBOSE=1: what each seed reaches, for seed writers
      std::fprintf(stderr, "  %s %s -> %d %s\n", request.method.c_str(),
                   request.target.substr(0, 100).c_str(), reply.status,
                   std::string(server::http::routeName(route)).c_str());
    }
    // 500 is what Api::handle makes of an exception: a handler choked on the input.
    MUSTER_FUZZ_CHECK(reply.status != 500);
    MUSTER_FUZZ_CHECK(reply.status >= 200 && reply.status < 600);
    MUSTER_FUZZ_CHECK(route != server::http::Route::kCount);
    if (!reply.follow && reply.content_type == "application/json") {
      boost::system::error_code json_ec;
      boost::json::parse(reply.body, json_ec);
      MUSTER_FUZZ_CHECK(!json_ec);  // clients parse every reply, errors included
    }
    if (!keep_alive) break;
  }
  // Audit events of the requests are written by the store's thread: done before the next
  // input (and before exit), so nothing of this input runs on after it.
  fuzz::fixtureCheck(w.fixture.store().flush(), "flushing the store");
  return 0;
}
