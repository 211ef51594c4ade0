// Fuzz target: command output reassembled into text. Chunks as agents send them (repeated,
// overlapping, with holes, at any offset) are stored by the rules of SqliteStore (one chunk
// per offset, the longer kept; offsets past INT64_MAX refused by the CHECK) and read back by
// the real reader of GET .../output (assembleStoredOutput) in pages of any size, and by the
// event stream's logic (StreamCursor + Utf8Splitter, as sse_follow.cc's addChunk), both from
// the store and live in arrival order.
#include <limits>
#include <map>

#include "server/core/output_text.h"
#include "server/core/queries.h"
#include "store/store.h"
#include "tests/fuzz/fuzz_support.h"

namespace {
using namespace muster;
using server::StreamCursor;
using server::Utf8Splitter;

constexpr char kCommand[] = "01FUZZ";
constexpr size_t kMaxChunks = 64;

// SqliteStore's output table and its readOutput query (sqlite_store.cc), in memory. Nothing
// else of the Store is used by the reader.
class OutputStore final : public store::Store {
 public:
  void append(const model::OutputChunk& chunk) {
    if (chunk.offset > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return;
    auto& rows = streams_[chunk.stream];
    auto [it, inserted] = rows.emplace(chunk.offset, chunk.data);
    if (!inserted && chunk.data.size() > it->second.size()) it->second = chunk.data;
  }
  const std::map<uint64_t, std::string>& rows(model::OutputStream stream) {
    return streams_[stream];
  }

  absl::StatusOr<std::vector<model::OutputChunk>> readOutput(const std::string& command_id,
                                                             model::OutputStream stream,
                                                             uint64_t from_offset,
                                                             uint64_t max_bytes) override {
    const auto& rows = streams_[stream];
    uint64_t from = std::min<uint64_t>(from_offset, std::numeric_limits<int64_t>::max());
    // Start at the first chunk that covers `from` (nested chunks: not always the last one
    // at or below it), else at `from`.
    uint64_t start = from;
    for (auto it = rows.begin(); it != rows.end() && it->first <= from; ++it) {
      if (static_cast<unsigned __int128>(it->first) + it->second.size() > from) {
        start = it->first;
        break;
      }
    }
    std::vector<model::OutputChunk> out;
    uint64_t gathered = 0;
    for (auto it = rows.lower_bound(start); it != rows.end(); ++it) {
      if (!out.empty() && gathered >= max_bytes) break;
      out.push_back({command_id, stream, it->first, it->second});
      gathered += it->second.size();
    }
    return out;
  }

  absl::StatusOr<uint64_t> outputBytes(const std::string&, model::OutputStream) override {
    return unused();
  }
  void write(store::Mutation, store::WriteDone) override { std::abort(); }
  absl::Status flush() override { return absl::OkStatus(); }
  absl::StatusOr<std::vector<model::Host>> loadHosts() override { return unused(); }
  absl::StatusOr<std::optional<model::Command>> getCommand(const std::string&) override {
    return unused();
  }
  absl::StatusOr<std::vector<model::Command>> loadOpenCommands() override { return unused(); }
  absl::StatusOr<std::vector<model::Command>> listCommands(const store::CommandFilter&) override {
    return unused();
  }
  absl::StatusOr<std::optional<store::Run>> getRun(const std::string&) override { return unused(); }
  absl::StatusOr<std::optional<store::Run>> findRunByIdempotencyKey(const std::string&) override {
    return unused();
  }
  absl::StatusOr<std::vector<store::Run>> loadIncompleteRuns() override { return unused(); }
  absl::StatusOr<std::vector<std::string>> runHostIds(const std::string&) override {
    return unused();
  }
  absl::StatusOr<std::optional<store::EnrollToken>> findEnrollTokenByHash(
      const std::string&) override {
    return unused();
  }
  absl::StatusOr<std::vector<store::EnrollToken>> listEnrollTokens() override { return unused(); }
  absl::StatusOr<std::optional<store::ApiToken>> findApiTokenByHash(const std::string&) override {
    return unused();
  }
  absl::StatusOr<std::vector<store::ApiToken>> listApiTokens() override { return unused(); }
  absl::StatusOr<std::vector<model::Event>> listEvents(const model::EventQuery&) override {
    return unused();
  }
  absl::Status ping() override { return absl::OkStatus(); }
  store::StoreStats stats() const override { return {}; }

 private:
  static absl::Status unused() { return absl::UnimplementedError("not used by the reader"); }
  std::map<model::OutputStream, std::map<uint64_t, std::string>> streams_;
};

bool validUtf8(const std::string& text) { return server::sanitizeUtf8(text) == text; }

// sse_follow.cc's addChunk and the flush at the end, keeping only the text of the events.
class EventText {
 public:
  void add(uint64_t offset, std::string_view data) {
    auto piece = cursor_.accept(offset, data);
    if (!piece) return;
    if (piece->gap_bytes > 0) {
      event(utf8_.flush());
      event(server::truncationMarker(piece->gap_bytes));
    }
    event(utf8_.take(piece->data));
  }
  std::string finish() {
    event(utf8_.flush());
    return text_;
  }

 private:
  void event(std::string text) {
    MUSTER_FUZZ_CHECK(validUtf8(text));  // each event's data is a JSON string
    text_ += text;
  }
  StreamCursor cursor_;
  Utf8Splitter utf8_;
  std::string text_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  uint8_t flags = in.byte();
  // Consistent: every chunk is a slice of one true output, as a real agent's chunks are.
  bool consistent = flags & 1;
  uint64_t page_bytes = 1 + in.byte() * 3ull;
  std::string truth = consistent ? std::string(in.longPiece()) : std::string();

  OutputStore store;
  std::vector<model::OutputChunk> arrivals;
  while (!in.empty() && arrivals.size() < kMaxChunks) {
    uint8_t b = in.byte();
    model::OutputChunk chunk;
    chunk.command_id = kCommand;
    chunk.stream = (b & 1) ? model::OutputStream::kStderr : model::OutputStream::kStdout;
    if (consistent) {
      chunk.offset = in.u16() % (truth.size() + 1);
      chunk.data = truth.substr(chunk.offset, in.byte());
    } else {
      chunk.offset = (b & 0x80) ? in.u64() : in.u16();
      chunk.data = std::string(in.piece());
    }
    store.append(chunk);
    arrivals.push_back(std::move(chunk));
  }

  for (auto stream : {model::OutputStream::kStdout, model::OutputStream::kStderr}) {
    auto whole =
        server::assembleStoredOutput(store, kCommand, stream, std::numeric_limits<uint64_t>::max());
    auto paged = server::assembleStoredOutput(store, kCommand, stream, page_bytes);
    MUSTER_FUZZ_CHECK(whole.ok() && paged.ok());
    MUSTER_FUZZ_CHECK(validUtf8(whole->text) && validUtf8(paged->text));
    const auto& rows = store.rows(stream);
    if (consistent) {  // paging never changes the text, nested chunks included
      MUSTER_FUZZ_CHECK(paged->text == whole->text);
      MUSTER_FUZZ_CHECK(paged->truncated == whole->truncated);
    }
    // The event stream reading the same chunks shows the same text as GET.
    EventText stored;
    for (const auto& [offset, bytes] : rows) stored.add(offset, bytes);
    MUSTER_FUZZ_CHECK(stored.finish() == whole->text);
    // Live chunks come from the bus in arrival order, before the store has refused any.
    EventText live;
    for (const auto& chunk : arrivals) {
      if (chunk.stream == stream) live.add(chunk.offset, chunk.data);
    }
    live.finish();
  }
  return 0;
}
