// Fuzz target: what muster-agent reads back from its state dir after a restart or a crash
// (a disk error, a truncated write, someone's editor): the credential file (loadIdentity)
// and a command's outbox directory (journal, head and tail of each stream, result) through
// lookup, recoverInterrupted, unacked/inFlight and replay.
#include <google/protobuf/stubs/logging.h>

#include <filesystem>
#include <fstream>

#include "agent/identity.h"
#include "agent/outbox.h"
#include "common/clock.h"
#include "common/ids.h"
#include "tests/fuzz/fuzz_support.h"

namespace {
using namespace muster;

constexpr char kId[] = "01FUZZCOMMAND";

void put(const std::string& path, std::string_view bytes, bool present) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
  if (!present) return;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static common::FakeClock clock;
  static const std::string dir = fuzz::scratchDir("agent_state");
  static std::unique_ptr<agent::Outbox> outbox = [] {
    fuzz::quietLogs();
    google::protobuf::SetLogHandler(nullptr);  // result.pb with invalid UTF-8 is logged
    auto opened = agent::Outbox::open(dir + "/commands", clock);
    MUSTER_FUZZ_CHECK(opened.ok());
    return *std::move(opened);
  }();

  fuzz::FuzzInput in(data, size);
  uint8_t present = in.byte();  // which files exist
  size_t chunk_bytes = 1 + in.byte() * 64;
  std::string cmd = outbox->dirFor(kId);
  std::filesystem::create_directories(cmd);
  put(dir + "/credential", in.piece(), present & 1);
  put(cmd + "/spec.pb", in.piece(), present & 2);
  put(cmd + "/result.pb", in.piece(), present & 4);
  put(cmd + "/acked", "", present & 8);
  put(cmd + "/stdout", in.longPiece(), present & 16);
  put(cmd + "/stdout.tail", in.piece(), present & 32);
  put(cmd + "/stderr", in.piece(), present & 64);
  put(cmd + "/stderr.tail", in.rest(), present & 128);

  auto identity = agent::loadIdentity(dir);
  if (identity.ok() && identity->has_value()) {
    MUSTER_FUZZ_CHECK(common::isValidAgentId((*identity)->agent_id));
    MUSTER_FUZZ_CHECK(!(*identity)->credential.empty());
  }
  (void)outbox->lookup(kId);
  (void)outbox->unacked();
  (void)outbox->inFlight();
  bool with_result = present & 1;
  for (const auto& m : outbox->replay(kId, with_result, chunk_bytes)) {
    if (m.has_output()) {
      MUSTER_FUZZ_CHECK(m.output().command_id() == kId);
      MUSTER_FUZZ_CHECK(m.output().data().size() <= chunk_bytes);
    }
  }
  // A journal without a result becomes a failed result (written to result.pb).
  if ((present & 2) && !(present & 4)) (void)outbox->recoverInterrupted();
  return 0;
}
