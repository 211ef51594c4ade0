// Fuzz target: what an enrolled agent can send on its link. Each input is one stream, driven
// as agent_link_server.cc's LinkStream does: ControlPlane::openStream with the host's
// credential, then length-prefixed protobuf muster.v1.AgentMessage payloads, each parsed,
// converted (convert.cc's toAgentEvent) and given to ControlPlane::onAgentMessage, then
// onStreamClosed; on one ControlPlane kept across inputs, for a host that always has a few
// open commands. A byte before each message may swap its command id for a known one (open,
// finished, another host's), so Accepted, Output and Result reach real commands rather than
// only unknown ids.
#include <google/protobuf/stubs/logging.h>

#include <filesystem>

#include "muster/v1/agent.pb.h"
#include "server/grpc/convert.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/plane_fixture.h"

namespace {
using namespace muster;
using K = muster::v1::AgentMessage::KindCase;
namespace convert = server::grpcadapter;

constexpr char kHost[] = "web-1";
constexpr char kOther[] = "web-2";
constexpr size_t kOpenCommands = 3;
constexpr int kMaxMessagesPerInput = 32;
// Past this the store is thrown away and started afresh (output of finished commands is
// stored without a cap, so a long run would fill the disk).
constexpr uintmax_t kMaxStoreBytes = 256ull << 20;

server::CoreConfig coreConfig() {
  server::CoreConfig config;
  // Small limits, so that inputs of a few KB reach them.
  config.max_output_bytes = 4096;
  config.max_output_chunk_bytes = 2048;
  return config;
}

class World {
 public:
  World() { reset(); }

  // Before each input: a host with kOpenCommands open commands, one finished, and an open
  // command of another host.
  void prepare() {
    if (++inputs_ % 1024 == 0 && storeBytes() > kMaxStoreBytes) reset();
    auto still_open = [this](const std::string& id) {
      auto c = fixture_->plane().commands().get(id);
      return c.ok() && !model::isTerminal(c->state);
    };
    std::vector<std::string> open;
    for (auto& id : open_) {
      if (still_open(id)) {
        open.push_back(std::move(id));
      } else {
        finished_ = std::move(id);
      }
    }
    open_ = std::move(open);
    while (open_.size() < kOpenCommands) open_.push_back(fixture_->runOn(kHost));
    if (!still_open(foreign_)) foreign_ = fixture_->runOn(kOther);
  }

  // The command id a message carries: its own, or one picked from the known set.
  std::string pickId(uint8_t choice, const std::string& own) const {
    switch (choice % 8) {
      case 2:
      case 3:
      case 4: return open_[choice % open_.size()];
      case 5: return finished_.empty() ? own : finished_;
      case 6: return foreign_;
      case 7: return "";
      default: return own;
    }
  }

  fuzz::PlaneFixture& fixture() { return *fixture_; }
  const std::string& credential() const { return credential_; }
  uint64_t nextSession() { return ++sessions_; }

 private:
  void reset() {
    open_.clear();
    finished_.clear();
    fixture_.reset();
    dir_ = fuzz::scratchDir("agent_message") + "/store-" + std::to_string(++generation_);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    fixture_ = std::make_unique<fuzz::PlaneFixture>(dir_, coreConfig());
    credential_ = fixture_->enroll(kHost, {{"env", "prod"}});
    fixture_->enroll(kOther);
    foreign_ = fixture_->runOn(kOther);
  }
  uintmax_t storeBytes() const {
    uintmax_t total = 0;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
      total += e.is_regular_file(ec) ? e.file_size(ec) : 0;
    }
    return total;
  }

  std::unique_ptr<fuzz::PlaneFixture> fixture_;
  std::string dir_;
  int generation_ = 0;
  uint64_t inputs_ = 0;
  uint64_t sessions_ = 0;
  std::vector<std::string> open_;
  std::string finished_;
  std::string foreign_;
  std::string credential_;
};

World& world() {
  static World* w = [] {
    fuzz::quietLogs();
    google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 in a string field is logged
    return new World();                        // never destroyed: libFuzzer exits anywhere
  }();
  return *w;
}

void substituteIds(const World& w, uint8_t choice, muster::v1::AgentMessage* m) {
  switch (m->kind_case()) {
    case K::kHello: {
      auto* hello = m->mutable_hello();
      if (choice & 8) hello->set_agent_id(kHost);
      if (choice % 8 >= 2) {
        hello->add_in_flight_command_ids(w.pickId(choice, ""));
        hello->add_unacked_command_ids(w.pickId(choice + 1, ""));
      }
      break;
    }
    case K::kAccepted:
      m->mutable_accepted()->set_command_id(w.pickId(choice, m->accepted().command_id()));
      break;
    case K::kOutput:
      m->mutable_output()->set_command_id(w.pickId(choice, m->output().command_id()));
      break;
    case K::kResult:
      m->mutable_result()->set_command_id(w.pickId(choice, m->result().command_id()));
      break;
    default: break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  w.prepare();
  server::ControlPlane& plane = w.fixture().plane();
  fuzz::FuzzInput in(data, size);
  uint8_t flags = in.byte();

  // LinkStream's constructor: the stream presents the host's credential (or, when the
  // flags say so, bytes of the input, which must be refused).
  auto session =
      std::make_shared<fuzz::CountingSession>(kHost, "s" + std::to_string(w.nextSession()));
  if (flags & 0x10) {
    std::string wrong(in.piece());
    absl::Status st = plane.openStream(session, wrong);
    MUSTER_FUZZ_CHECK(!st.ok() || wrong == w.credential());
    plane.onStreamClosed(session, absl::UnavailableError("stream closed"));
    return 0;
  }
  fuzz::fixtureCheck(plane.openStream(session, w.credential()), "opening a stream");
  // LinkStream::OnReadDone and handle(), message for message, until the link ends.
  auto deliver = [&](const muster::v1::AgentMessage& message) {
    absl::StatusOr<server::AgentEvent> event = convert::toAgentEvent(message);
    absl::Status st =
        event.ok() ? plane.onAgentMessage(session, *std::move(event)) : event.status();
    if (!st.ok()) session->close(st);
    return st.ok();
  };
  bool ok = true;
  if (flags & 1) {  // a well-formed Hello first, so the rest need not guess one
    muster::v1::AgentMessage hello;
    hello.mutable_hello()->set_agent_id(kHost);
    hello.mutable_hello()->set_version("fuzz");
    ok = deliver(hello);
  }
  for (int n = 0; ok && n < kMaxMessagesPerInput && !in.empty() && !session->closed(); ++n) {
    uint8_t choice = in.byte();
    std::string_view bytes = in.longPiece();
    muster::v1::AgentMessage message;
    // gRPC fails the stream on a message it cannot parse.
    if (!message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) break;
    substituteIds(w, choice, &message);
    ok = deliver(message);
  }
  // Results are acknowledged once stored; let that happen before the stream ends.
  fuzz::fixtureCheck(w.fixture().store().flush(), "flushing the store");
  plane.onStreamClosed(session, absl::UnavailableError("stream closed"));
  if (int step = (flags >> 1) & 7; step > 0) {  // time passes: liveness, expiry, timeouts
    w.fixture().clock().advanceMs(1000LL << (2 * step));
  }
  plane.tick();
  return 0;
}
