// Fuzz target: artifact transfers as an agent drives them (server/core/artifact_service.h on
// a real SQLite store and a real filesystem artifact store): headers with any command,
// purpose, device, name, size, hash and resume offset; chunks of any size in any order;
// finishes, aborts, deadlines and downloads from any offset. A first byte of 0xff feeds the
// artifact sidecar's reader instead (the store's disk). Invariants: every slot comes back
// once its transfers are gone, whatever stored reads back as its SHA-256, and a sidecar that
// parses round-trips.
#include <memory>
#include <string>
#include <vector>

#include "crypto/secrets.h"
#include "server/core/artifact_service.h"
#include "store/fs/fs_artifact_store.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/plane_fixture.h"

namespace {
using namespace muster;

struct World {
  World()
      : dir(fuzz::scratchDir("artifact_transfer")),
        fixture(dir, server::CoreConfig{}),
        store(store::fs::FsArtifactStoreOptions{.dir = dir + "/artifacts", .quota_bytes = 8 << 20},
              fixture.clock()),
        service(store, fixture.plane().commands(), fixture.clock(), config()) {
    fixture.plane().setArtifacts(&service);
    fixture.plane().commands().setArtifactResolver(
        [this](std::vector<model::ArtifactExpectation>& e) { return service.resolve(e); });
    fixture.plane().commands().setResultCheck(
        [this](const std::string& id) { return service.missingUploads(id); });
    fuzz::fixtureCheck(service.start(), "opening the artifact store");
    std::string credential = fixture.enroll("web-1");
    session = std::make_shared<fuzz::CountingSession>("web-1", "s1");
    fuzz::fixtureCheck(fixture.plane().openStream(session, credential), "opening a stream");
    server::HelloInfo hello;
    hello.agent_id = "web-1";
    fuzz::fixtureCheck(fixture.plane().onHello(session, hello), "saying hello");
    // One stored artifact for downloads.
    auto up = store.stage({.key = "seed",
                           .declared_size = 5000,
                           .declared_sha256 = crypto::sha256Hex(std::string(5000, 's'))});
    fuzz::fixtureCheck(up.status(), "staging the seed artifact");
    fuzz::fixtureCheck((*up)->append(std::string(5000, 's')), "writing the seed artifact");
    auto a = (*up)->commit({});
    fuzz::fixtureCheck(a.status(), "storing the seed artifact");
    seed = *a;
  }
  static server::ArtifactConfig config() {
    server::ArtifactConfig c;
    c.max_artifact_bytes = 1 << 20;
    c.max_chunk_bytes = 4096;
    return c;
  }
  std::string dir;
  fuzz::PlaneFixture fixture;
  store::fs::FsArtifactStore store;
  server::ArtifactService service;
  std::shared_ptr<fuzz::CountingSession> session;
  model::Artifact seed;
};

World& world() {
  static World* w = [] {
    fuzz::quietLogs();
    return new World();
  }();
  return *w;
}

void sidecar(std::string_view text) {
  auto meta = store::fs::FsArtifactStore::decodeMeta(text);
  if (!meta.ok()) return;
  auto again =
      store::fs::FsArtifactStore::decodeMeta(store::fs::FsArtifactStore::encodeMeta(*meta));
  MUSTER_FUZZ_CHECK(again.ok());
  MUSTER_FUZZ_CHECK(again->id == meta->id && again->name == meta->name &&
                    again->size == meta->size && again->sha256 == meta->sha256 &&
                    again->pinned == meta->pinned && again->purpose == meta->purpose);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  if (size > 0 && data[0] == 0xff) {
    in.byte();
    sidecar(in.rest());
    return 0;
  }
  World& w = world();
  // This input's command: what it expects is the input's first choice.
  uint8_t shape = in.byte();
  server::CreateRunRequest run;
  run.host_ids = {"web-1"};
  run.exec.argv = {"true"};
  run.created_by = "fuzz";
  model::ArtifactExpectation upload{.direction = model::TransferDirection::kUpload,
                                    .purpose = static_cast<model::ArtifactPurpose>(1 + shape % 5)};
  if (shape & 0x08) upload.device = "sda";
  if (shape & 0x10) upload.max_bytes = 100;
  run.artifacts.push_back(upload);
  if (shape & 0x20) {
    run.artifacts.push_back({.direction = model::TransferDirection::kDownload,
                             .purpose = model::ArtifactPurpose::kFile,
                             .artifact_id = w.seed.id});
  }
  auto created = w.fixture.plane().commands().createRun(run);
  fuzz::fixtureCheck(created.status(), "creating a run");
  const std::string command_id = created->commands[0].id;

  std::vector<std::shared_ptr<server::Transfer>> live;
  std::string payload;  // what a well-behaved upload sends
  size_t sent = 0;
  auto pick = [&]() -> std::shared_ptr<server::Transfer> {
    if (live.empty()) return nullptr;
    return live[in.byte() % live.size()];
  };
  for (int op = 0; op < 64 && !in.empty(); ++op) {
    switch (uint8_t code = in.byte() % 8) {
      case 0:
      case 1: {
        auto d =
            code == 0 ? model::TransferDirection::kUpload : model::TransferDirection::kDownload;
        auto t = w.service.open(d, "web-1", [](absl::Status) {});
        if (t.ok()) live.push_back(*t);
        break;
      }
      case 2: {
        auto t = pick();
        if (!t) break;
        uint8_t flags = in.byte();
        server::UploadHeader h;
        h.command_id = (flags & 1) ? command_id : std::string(in.piece());
        h.purpose = static_cast<model::ArtifactPurpose>(in.byte() % 7);
        if (flags & 2) h.device = std::string(in.piece());
        h.name = std::string(in.piece());
        payload = std::string(in.longPiece());
        sent = 0;
        h.declared_size = (flags & 4) ? in.u16() : payload.size();
        h.declared_sha256 = (flags & 8) ? std::string(in.piece()) : crypto::sha256Hex(payload);
        h.resume_offset = (flags & 16) ? in.u16() : 0;
        auto offset = t->beginUpload(h);
        if (offset.ok()) sent = std::min<size_t>(*offset, payload.size());
        break;
      }
      case 3: {
        auto t = pick();
        if (!t) break;
        if (in.byte() & 1) {
          size_t n = std::min<size_t>(payload.size() - sent, 1 + in.u16() % 5000);
          (void)t->chunk(std::string_view(payload).substr(sent, n));
          sent += n;
        } else {
          (void)t->chunk(in.longPiece());
        }
        break;
      }
      case 4: {
        auto t = pick();
        if (!t) break;
        auto stored = t->finishUpload();
        if (stored.ok()) {
          auto reader = w.store.openRead(stored->id);
          MUSTER_FUZZ_CHECK(reader.ok());
          std::string all, part;
          crypto::Sha256Stream hash;
          do {
            MUSTER_FUZZ_CHECK((*reader)->read(all.size(), 4096, &part).ok());
            all += part;
          } while (!part.empty());
          MUSTER_FUZZ_CHECK(all.size() == stored->size);
          MUSTER_FUZZ_CHECK(crypto::sha256Hex(all) == stored->sha256);
        }
        break;
      }
      case 5: {
        auto t = pick();
        if (!t) break;
        uint8_t flags = in.byte();
        server::DownloadRequest r;
        r.command_id = (flags & 1) ? command_id : std::string(in.piece());
        r.artifact_id = (flags & 2) ? w.seed.id : std::string(in.piece());
        r.offset = in.u16();
        auto ref = t->beginDownload(r);
        if (!ref.ok()) break;
        std::string got, part;
        for (int i = 0; i < 8; ++i) {
          if (!t->nextChunk(&part).ok() || part.empty()) break;
          got += part;
        }
        MUSTER_FUZZ_CHECK(got == std::string(got.size(), 's'));
        if (part.empty()) t->finishDownload();
        break;
      }
      case 6: {
        auto t = pick();
        if (t) t->abort(absl::CancelledError("fuzz"));
        break;
      }
      case 7: {
        if (in.byte() & 1) {
          std::erase(live, pick());
        } else {
          w.fixture.clock().advanceMs(in.u16() * 16);
          w.service.tick();
        }
        break;
      }
    }
  }
  live.clear();
  MUSTER_FUZZ_CHECK(w.service.metrics().upload_slots_in_use.load() == 0);
  MUSTER_FUZZ_CHECK(w.service.metrics().download_slots_in_use.load() == 0);
  // The command ends; its expectations and staged bytes go at the next tick.
  model::CommandResult result;
  result.command_id = command_id;
  result.state = model::CommandState::kFailed;
  result.exit_code = 1;
  (void)w.fixture.plane().onAgentMessage(w.session, server::ResultMsg{result});
  w.service.tick();
  if (std::getenv("MUSTER_FUZZ_TRACE") != nullptr) {  // for seed authors: what an input reached
    auto& m = w.service.metrics();
    std::fprintf(stderr, "uploads ok %lu, downloads ok %lu, resumed %lu, retries %lu\n",
                 static_cast<unsigned long>(m.uploads_ok.load()),
                 static_cast<unsigned long>(m.downloads_ok.load()),
                 static_cast<unsigned long>(m.resumed_uploads.load()),
                 static_cast<unsigned long>(m.retries_answered.load()));
  }
  return 0;
}
