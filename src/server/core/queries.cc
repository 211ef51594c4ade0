// Reads for operator-facing adapters.
#include "server/core/queries.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/core/command_service.h"
#include "server/core/output_text.h"
#include "store/store.h"

namespace muster::server {
namespace {

// Commands of a run are read in pages of this many.
constexpr int kRunPage = 1000;

}  // namespace

EnrollTokenView tokenView(const store::EnrollToken& t) {
  return EnrollTokenView{t.id,         t.uses_left,     t.expires_at_ms, t.labels,
                         t.created_by, t.created_at_ms, t.revoked,       t.host_id};
}

ApiTokenView tokenView(const store::ApiToken& t) {
  return ApiTokenView{t.id,     t.role, t.name, t.created_by, t.created_at_ms, t.expires_at_ms,
                      t.revoked};
}

absl::StatusOr<StoredOutput> assembleStoredOutput(store::Store& store,
                                                  const std::string& command_id,
                                                  model::OutputStream stream, uint64_t page_bytes,
                                                  uint64_t max_bytes) {
  StoredOutput out;
  StreamCursor cursor;
  std::string raw;
  uint64_t from = 0;
  while (true) {
    auto chunks = store.readOutput(command_id, stream, from, page_bytes);
    if (!chunks.ok()) return chunks.status();
    if (chunks->empty()) break;
    for (const auto& chunk : *chunks) {
      auto piece = cursor.accept(chunk.offset, chunk.data);
      if (!piece) continue;
      if (piece->gap_bytes > 0) {
        raw += truncationMarker(piece->gap_bytes);
        out.truncated = true;
      }
      raw.append(piece->data);
    }
    if (raw.size() > max_bytes) {
      raw += "\n[... output too large for one reply; follow it with ?follow=1 ...]\n";
      out.truncated = true;
      break;
    }
    if (cursor.next() <= from) break;
    from = cursor.next();
  }
  out.text = sanitizeUtf8(raw);
  return out;
}

Queries::Queries(store::Store& store, CommandService& commands)
    : store_(store), commands_(commands) {}

absl::StatusOr<std::vector<model::Command>> Queries::commands(const CommandQuery& query) {
  return commands_.list(query);
}

absl::StatusOr<RunView> Queries::run(const std::string& id) {
  auto run = store_.getRun(id);
  if (!run.ok()) return run.status();
  if (!run->has_value()) {
    return absl::NotFoundError(absl::StrCat("no run with id '", id.substr(0, 140), "'"));
  }
  RunView view;
  view.id = (*run)->id;
  view.created_by = (*run)->created_by;
  view.created_at_ms = (*run)->created_at_ms;
  view.complete = (*run)->pending_targets.empty();
  view.targets = (*run)->pending_targets.size();
  store::CommandFilter filter;
  filter.run_id = id;
  filter.limit = kRunPage;
  while (true) {
    auto page = commands_.list(filter);
    if (!page.ok()) return page.status();
    for (auto& c : *page) view.commands.push_back(std::move(c));
    if (static_cast<int>(page->size()) < kRunPage) break;
    filter.before_id = view.commands.back().id;
  }
  std::sort(view.commands.begin(), view.commands.end(),
            [](const model::Command& a, const model::Command& b) { return a.host_id < b.host_id; });
  return view;
}

absl::StatusOr<StoredOutput> Queries::output(const std::string& command_id,
                                             model::OutputStream stream) {
  return assembleStoredOutput(store_, command_id, stream);
}

absl::StatusOr<std::vector<model::OutputChunk>> Queries::outputPage(const std::string& command_id,
                                                                    model::OutputStream stream,
                                                                    uint64_t from_offset,
                                                                    uint64_t max_bytes) {
  return store_.readOutput(command_id, stream, from_offset, max_bytes);
}

absl::Status Queries::settle() { return store_.flush(); }

namespace {
// The views of stored tokens (never their hashes).
template <class View, class Token>
absl::StatusOr<std::vector<View>> viewsOf(absl::StatusOr<std::vector<Token>> tokens) {
  if (!tokens.ok()) return tokens.status();
  std::vector<View> out;
  out.reserve(tokens->size());
  for (const auto& t : *tokens) out.push_back(tokenView(t));
  return out;
}
}  // namespace

absl::StatusOr<std::vector<EnrollTokenView>> Queries::enrollTokens() {
  return viewsOf<EnrollTokenView>(store_.listEnrollTokens());
}

absl::StatusOr<std::vector<ApiTokenView>> Queries::apiTokens() {
  return viewsOf<ApiTokenView>(store_.listApiTokens());
}

absl::Status Queries::ready() { return store_.ping(); }

StoreHealth Queries::storeHealth() const {
  store::StoreStats s = store_.stats();
  return StoreHealth{s.transactions,   s.mutations,       s.failed_transactions,
                     s.last_commit_ms, s.last_batch_size, store_.pendingWrites()};
}

absl::StatusOr<std::vector<model::Event>> Queries::events(const model::EventQuery& query) {
  return store_.listEvents(query);
}

}  // namespace muster::server
