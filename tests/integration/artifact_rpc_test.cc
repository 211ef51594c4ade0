// UploadArtifact / DownloadArtifact against a real musterd over TLS, from a plain gRPC client
// (no Muster agent code on the transfer path): refusals, end to end, deadlines, resume after
// musterd is killed, and the REST view of what was stored.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <future>
#include <string>
#include <thread>

#include "agent/link_client.h"
#include "crypto/secrets.h"
#include "muster/v1/agent.grpc.pb.h"
#include "tests/integration/harness.h"

namespace muster::itest {
namespace {

using muster::v1::AgentLink;

// Keeps a link open (Hello, then reads what comes) so commands are dispatched to this id.
class LiveLink final
    : public grpc::ClientBidiReactor<muster::v1::AgentMessage, muster::v1::ServerMessage> {
 public:
  LiveLink(AgentLink::Stub* stub, const std::string& id, const std::string& credential) {
    ctx_.AddMetadata("x-muster-agent-id", id);
    ctx_.AddMetadata("authorization", "Bearer " + credential);
    hello_.mutable_hello()->set_agent_id(id);
    hello_.mutable_hello()->set_version("artifact-test");
    stub->async()->Connect(&ctx_, this);
    StartWrite(&hello_);
    StartRead(&in_);
    StartCall();
  }
  ~LiveLink() override {
    ctx_.TryCancel();
    done_future_.wait_for(std::chrono::seconds(10));
  }
  void OnWriteDone(bool) override {}
  void OnReadDone(bool ok) override {
    if (ok) StartRead(&in_);
  }
  void OnDone(const grpc::Status&) override { done_.set_value(); }

 private:
  grpc::ClientContext ctx_;
  muster::v1::AgentMessage hello_;
  muster::v1::ServerMessage in_;
  std::promise<void> done_;
  std::future<void> done_future_ = done_.get_future();
};

class ArtifactRpcTest : public ::testing::Test {
 protected:
  void start(std::vector<std::string> flags = {}) {
    flags_ = flags;
    server_ = std::make_unique<Musterd>(dir_, std::move(flags));
    connect();
    muster::v1::EnrollRequest request;
    request.set_token(server_->enrollToken());
    request.set_agent_id("box");
    auto response = agent::enroll(channel_, request, 10'000);
    ASSERT_TRUE(response.ok()) << response.status();
    credential_ = response->credential();
  }
  void connect() {
    agent::ChannelOptions options;
    options.target = server_->grpcTarget();
    options.own_connection = true;
    options.security.plaintext = server_->plaintext();
    options.security.ca_pem = server_->caPem();
    channel_ = agent::makeChannel(options);
    stub_ = AgentLink::NewStub(channel_);
  }
  void link() {
    link_.reset();
    link_ = std::make_unique<LiveLink>(stub_.get(), "box", credential_);
    ASSERT_TRUE(waitFor([&] { return server_->hostStatus("box") == "online"; }));
  }
  void auth(grpc::ClientContext& ctx) {
    ctx.AddMetadata("x-muster-agent-id", "box");
    ctx.AddMetadata("authorization", "Bearer " + credential_);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  }
  // A command on "box" allowing `artifacts` (a JSON list), once it is dispatched.
  std::string command(const std::string& artifacts) {
    auto r = server_->post("/api/v1/commands", R"({"hosts":["box"],"script":"sleep 60",)"
                                               R"("artifacts":)" +
                                                   artifacts + "}");
    EXPECT_EQ(r.status, 201) << r.body;
    std::string id(r.json().at("commands").as_array()[0].at("id").as_string());
    EXPECT_TRUE(waitFor([&] { return server_->commandState(id) == "dispatched"; }));
    return id;
  }
  static muster::v1::UploadRequest headerMsg(const std::string& command_id,
                                             const std::string& bytes, uint64_t resume = 0) {
    muster::v1::UploadRequest m;
    auto* h = m.mutable_header();
    h->set_command_id(command_id);
    h->set_purpose(muster::v1::ARTIFACT_PURPOSE_LOGS);
    h->set_name("../../etc/host.log");
    h->set_size(bytes.size());
    h->set_sha256(crypto::sha256Hex(bytes));
    h->set_resume_offset(resume);
    return m;
  }
  struct UploadOutcome {
    grpc::Status status;
    muster::v1::ArtifactRef ref;
    uint64_t offset = 0;  // what musterd said to continue at
  };
  // Header, then `bytes` from the offset musterd names, in 64 KB chunks.
  UploadOutcome upload(const std::string& command_id, const std::string& bytes,
                       uint64_t resume = 0) {
    UploadOutcome out;
    grpc::ClientContext ctx;
    auth(ctx);
    auto writer = stub_->UploadArtifact(&ctx, &out.ref);
    if (writer->Write(headerMsg(command_id, bytes, resume))) {
      writer->WaitForInitialMetadata();
      auto md = ctx.GetServerInitialMetadata();
      if (auto it = md.find("x-muster-upload-offset"); it != md.end()) {
        out.offset = std::stoull(std::string(it->second.data(), it->second.size()));
        for (uint64_t at = out.offset; at < bytes.size(); at += 65536) {
          muster::v1::UploadRequest chunk;
          chunk.set_chunk(bytes.substr(at, 65536));
          if (!writer->Write(chunk)) break;
        }
      }
    }
    writer->WritesDone();
    out.status = writer->Finish();
    return out;
  }
  std::string download(const std::string& command_id, const std::string& artifact_id,
                       uint64_t offset, grpc::Status* status) {
    grpc::ClientContext ctx;
    auth(ctx);
    muster::v1::DownloadRequest req;
    req.set_command_id(command_id);
    req.set_artifact_id(artifact_id);
    req.set_offset(offset);
    auto reader = stub_->DownloadArtifact(&ctx, req);
    muster::v1::DownloadResponse msg;
    std::string got;
    bool header = false;
    while (reader->Read(&msg)) {
      if (msg.has_header()) header = true;
      if (msg.has_chunk()) got += msg.chunk();
    }
    *status = reader->Finish();
    if (status->ok() && !header) *status = grpc::Status(grpc::StatusCode::INTERNAL, "no header");
    return got;
  }
  std::string metric(const std::string& line_prefix) {
    std::string text = server_->get("/metrics").body;
    size_t at = text.find(line_prefix);
    if (at == std::string::npos) return "";
    size_t end = text.find('\n', at);
    return text.substr(at + line_prefix.size(), end - at - line_prefix.size());
  }

  TempDir dir_;
  std::vector<std::string> flags_;
  std::unique_ptr<Musterd> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<AgentLink::Stub> stub_;
  std::string credential_;
  std::unique_ptr<LiveLink> link_;
};

TEST_F(ArtifactRpcTest, ThirdPartyClientIsRefusedWithoutAnExpectation) {
  start();
  link();
  auto none = upload("01JNOSUCHCOMMAND0000000000", "bytes");
  EXPECT_EQ(none.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << none.status.error_message();
  EXPECT_NE(none.status.error_message().find("not in flight"), std::string::npos);
  // A command without expectations: still refused, saying so.
  auto r = server_->run({"box"}, "sleep 60");
  std::string id(r.at("commands").as_array()[0].at("id").as_string());
  ASSERT_TRUE(waitFor([&] { return server_->commandState(id) == "dispatched"; }));
  auto refused = upload(id, "bytes");
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.status.error_message().find("expects no upload"), std::string::npos)
      << refused.status.error_message();
  // Without a credential, nothing at all.
  grpc::ClientContext ctx;
  muster::v1::ArtifactRef ref;
  auto writer = stub_->UploadArtifact(&ctx, &ref);
  writer->WritesDone();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(ArtifactRpcTest, UploadThenDownloadEndToEndAndOverRest) {
  start();
  link();
  std::string bytes;
  for (int i = 0; i < 300'000; ++i) bytes.push_back(static_cast<char>('a' + i % 26));
  std::string up = command(R"([{"direction":"upload","purpose":"logs"}])");
  auto stored = upload(up, bytes);
  ASSERT_TRUE(stored.status.ok()) << stored.status.error_message();
  EXPECT_EQ(stored.ref.size(), bytes.size());
  EXPECT_EQ(stored.ref.sha256(), crypto::sha256Hex(bytes));
  EXPECT_EQ(stored.ref.name(), "host.log");
  const std::string id = stored.ref.artifact_id();

  auto listed = server_->get("/api/v1/artifacts?command=" + up);
  ASSERT_EQ(listed.status, 200);
  ASSERT_EQ(listed.json().at("artifacts").as_array().size(), 1u) << listed.body;
  EXPECT_EQ(server_->get("/api/v1/artifacts/" + id + "/content").body, bytes);
  auto part = server_->get("/api/v1/artifacts/" + id + "/content", {"Range: bytes=10-19"});
  EXPECT_EQ(part.status, 206);
  EXPECT_EQ(part.body, bytes.substr(10, 10));
  EXPECT_EQ(server_->get("/api/v1/artifacts/" + id + "/content", {"Range: bytes=999999-"}).status,
            416);

  std::string down =
      command(R"([{"direction":"download","purpose":"file","artifact_id":")" + id + R"("}])");
  grpc::Status st;
  EXPECT_EQ(download(down, id, 0, &st), bytes);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(download(down, id, 299'990, &st), bytes.substr(299'990));
  EXPECT_TRUE(st.ok()) << st.error_message();
  // Another command's id, or an artifact it does not expect: refused.
  download(up, id, 0, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  // An open command needs it: not deletable yet.
  EXPECT_EQ(server_->del("/api/v1/artifacts/" + id).status, 409);
  EXPECT_EQ(metric("muster_artifact_transfers_total{direction=\"upload\",outcome=\"ok\"} "), "1");
}

TEST_F(ArtifactRpcTest, FirstMessageMustBeTheHeader) {
  start();
  link();
  grpc::ClientContext ctx;
  auth(ctx);
  muster::v1::ArtifactRef ref;
  auto writer = stub_->UploadArtifact(&ctx, &ref);
  muster::v1::UploadRequest chunk;
  chunk.set_chunk("data first");
  writer->Write(chunk);
  writer->WritesDone();
  auto st = writer->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_EQ(metric("muster_artifact_slots_in_use{direction=\"upload\"} "), "0");
}

TEST_F(ArtifactRpcTest, SilentClientIsCutOffAndItsSlotFreed) {
  start({"--artifact-header-timeout", "1s", "--artifact-upload-slots", "1"});
  link();
  grpc::ClientContext ctx;
  auth(ctx);
  muster::v1::ArtifactRef ref;
  auto writer = stub_->UploadArtifact(&ctx, &ref);  // and then nothing
  auto st = writer->Finish();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(server_->process().err().find("no transfer header within"), std::string::npos);
  EXPECT_TRUE(waitFor(
      [&] { return metric("muster_artifact_slots_in_use{direction=\"upload\"} ") == "0"; }));
  // The slot is back: an upload goes through.
  std::string up = command(R"([{"direction":"upload","purpose":"logs"}])");
  EXPECT_TRUE(upload(up, "after the silent one").status.ok());
}

TEST_F(ArtifactRpcTest, UploadResumesAfterMusterdIsKilled) {
  start();
  link();
  std::string bytes(2 << 20, 'z');
  for (size_t i = 0; i < bytes.size(); i += 4096) bytes[i] = static_cast<char>(i / 4096);
  std::string up = command(R"([{"direction":"upload","purpose":"logs"}])");
  {
    // Half of it, then musterd dies under the transfer.
    grpc::ClientContext ctx;
    auth(ctx);
    muster::v1::ArtifactRef ref;
    auto writer = stub_->UploadArtifact(&ctx, &ref);
    ASSERT_TRUE(writer->Write(headerMsg(up, bytes)));
    writer->WaitForInitialMetadata();
    for (size_t at = 0; at < bytes.size() / 2; at += 65536) {
      muster::v1::UploadRequest chunk;
      chunk.set_chunk(bytes.substr(at, 65536));
      ASSERT_TRUE(writer->Write(chunk));
    }
    // Until musterd has them staged.
    ASSERT_TRUE(waitFor([&] {
      return metric("muster_artifact_bytes_total{direction=\"in\"} ") ==
             std::to_string(bytes.size() / 2);
    }));
    link_.reset();
    server_->kill9();
    ctx.TryCancel();
    writer->Finish();
  }
  server_->start();
  connect();
  link();
  auto resumed = upload(up, bytes, bytes.size());
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  EXPECT_EQ(resumed.offset, bytes.size() / 2);  // no restart from zero
  EXPECT_EQ(resumed.ref.sha256(), crypto::sha256Hex(bytes));
  EXPECT_EQ(server_->get("/api/v1/artifacts/" + resumed.ref.artifact_id() + "/content").body,
            bytes);
  EXPECT_EQ(metric("muster_artifact_resumed_total{direction=\"upload\"} "), "1");
}

}  // namespace
}  // namespace muster::itest
