// Artifact transfer throughput: a file of --size-mib uploaded through musterd (TLS, a real
// process) and downloaded again on loopback, beside sha256sum and cp of the same file in the
// same run. The client does what an agent does: reads the file in 1 MiB chunks and sends them;
// receives, writes and hashes (verifies) what comes back. Prints MB/s and musterd's CPU.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "agent/link_client.h"
#include "bench/loadgen/proc.h"
#include "crypto/secrets.h"
#include "muster/v1/agent.grpc.pb.h"

namespace {
using namespace muster;
using Clock = std::chrono::steady_clock;
namespace json = boost::json;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double timed(const std::string& shell) {
  auto t = Clock::now();
  if (std::system(shell.c_str()) != 0) std::cerr << "failed: " << shell << "\n";
  return secondsSince(t);
}

double cpuSeconds(pid_t pid) {
  return static_cast<double>(bench::sampleProc(pid).cpu_ticks) / bench::ticksPerSecond();
}

int fail(const std::string& what) {
  std::cerr << "artifact-bench: " << what << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"muster-artifact-bench: artifact upload/download through musterd"};
  std::string musterd, work_dir = "/tmp/muster-artifact-bench";
  int size_mib = 1024;
  app.add_option("--musterd", musterd, "musterd binary")->required();
  app.add_option("--size-mib", size_mib, "file size")->capture_default_str();
  app.add_option("--work-dir", work_dir, "scratch directory (emptied)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  std::filesystem::remove_all(work_dir);
  std::filesystem::create_directories(work_dir);
  const std::string file = work_dir + "/payload.bin";
  const uint64_t size = static_cast<uint64_t>(size_mib) << 20;
  {
    // Incompressible, and written once (so the page cache holds it for every reader below).
    std::string block = crypto::randomBytes(1 << 20);
    std::ofstream out(file, std::ios::binary);
    for (int i = 0; i < size_mib; ++i) {
      block[0] = static_cast<char>(i);
      out.write(block.data(), static_cast<std::streamsize>(block.size()));
    }
  }
  double sha_s = timed("sha256sum " + file + " > /dev/null");
  double cp_s = timed("cp " + file + " " + work_dir + "/copy.bin && rm " + work_dir + "/copy.bin");
  std::string sha256;
  {
    crypto::Sha256Stream hash;
    std::ifstream in(file, std::ios::binary);
    std::string block(1 << 20, '\0');
    while (in.read(block.data(), static_cast<std::streamsize>(block.size())) || in.gcount() > 0) {
      hash.update(std::string_view(block.data(), static_cast<size_t>(in.gcount())));
    }
    sha256 = hash.finishHex();
  }

  bench::ServerProcess server(musterd, work_dir + "/server", bench::freeTcpPort(),
                              bench::freeTcpPort(), {"--artifact-max-bytes", "64GiB"});
  server.setTls(true);
  bench::setHttpCaFile(server.caFile());  // read per request: the health check uses it
  server.start();
  const std::string token = server.adminToken();
  auto r = bench::httpRequest("POST", server.http() + "/api/v1/tokens", token,
                              R"({"kind":"enroll","ttl":"1h"})");
  if (r.status != 201) return fail("cannot create an enrollment token: " + r.body);
  std::string enroll_token(json::parse(r.body).at("token").as_string());
  agent::ChannelOptions copt;
  copt.target = server.grpc();
  copt.own_connection = true;
  copt.security.ca_pem = [&] {
    std::ifstream in(server.caFile());
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  auto channel = agent::makeChannel(copt);
  muster::v1::EnrollRequest req;
  req.set_token(enroll_token);
  req.set_agent_id("bench");
  auto enrolled = agent::enroll(channel, req, 30'000);
  if (!enrolled.ok()) return fail("cannot enroll: " + std::string(enrolled.status().message()));
  const std::string credential = enrolled->credential();
  auto link = agent::openStream(channel, "bench", credential, {});
  muster::v1::AgentMessage hello;
  hello.mutable_hello()->set_agent_id("bench");
  link->send(hello);
  auto stub = muster::v1::AgentLink::NewStub(channel);
  auto command = [&](const std::string& artifacts) -> std::string {
    for (int i = 0; i < 200; ++i) {  // until the link is up and the command dispatched
      auto c = bench::httpRequest(
          "POST", server.http() + "/api/v1/commands", token,
          R"({"hosts":["bench"],"script":"sleep 600","artifacts":)" + artifacts + "}");
      if (c.status == 201) {
        std::string id(json::parse(c.body).at("commands").as_array()[0].at("id").as_string());
        for (int j = 0; j < 200; ++j) {
          auto got = bench::httpRequest("GET", server.http() + "/api/v1/commands/" + id, token);
          if (got.body.find("\"dispatched\"") != std::string::npos) return id;
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return "";
  };
  auto meta = [&](grpc::ClientContext& ctx) {
    ctx.AddMetadata("x-muster-agent-id", "bench");
    ctx.AddMetadata("authorization", "Bearer " + credential);
  };

  // Upload.
  std::string up = command(R"([{"direction":"upload","purpose":"bundle"}])");
  if (up.empty()) return fail("no upload command dispatched");
  std::fprintf(stderr, "[upload] musterd pid %d\n", static_cast<int>(server.pid()));
  double cpu0 = cpuSeconds(server.pid());
  auto t0 = Clock::now();
  muster::v1::ArtifactRef ref;
  {
    grpc::ClientContext ctx;
    meta(ctx);
    auto writer = stub->UploadArtifact(&ctx, &ref);
    muster::v1::UploadRequest h;
    h.mutable_header()->set_command_id(up);
    h.mutable_header()->set_purpose(muster::v1::ARTIFACT_PURPOSE_BUNDLE);
    h.mutable_header()->set_name("payload.bin");
    h.mutable_header()->set_size(size);
    h.mutable_header()->set_sha256(sha256);
    writer->Write(h);
    int fd = ::open(file.c_str(), O_RDONLY);
    muster::v1::UploadRequest chunk;
    std::string* buf = chunk.mutable_chunk();
    for (uint64_t at = 0; at < size;) {
      buf->resize(1 << 20);
      ssize_t n = ::pread(fd, buf->data(), buf->size(), static_cast<off_t>(at));
      if (n <= 0) break;
      buf->resize(static_cast<size_t>(n));
      if (!writer->Write(chunk)) break;
      at += static_cast<uint64_t>(n);
    }
    ::close(fd);
    writer->WritesDone();
    auto st = writer->Finish();
    if (!st.ok()) return fail("upload failed: " + st.error_message());
  }
  double up_s = secondsSince(t0);
  double up_cpu = cpuSeconds(server.pid()) - cpu0;

  // Download, written to a file and verified as an agent does.
  std::string down = command(R"([{"direction":"download","purpose":"bundle","artifact_id":")" +
                             ref.artifact_id() + R"("}])");
  if (down.empty()) return fail("no download command dispatched");
  std::fprintf(stderr, "[download]\n");
  cpu0 = cpuSeconds(server.pid());
  t0 = Clock::now();
  uint64_t received = 0;
  std::string got_sha;
  {
    grpc::ClientContext ctx;
    meta(ctx);
    muster::v1::DownloadRequest dreq;
    dreq.set_command_id(down);
    dreq.set_artifact_id(ref.artifact_id());
    auto reader = stub->DownloadArtifact(&ctx, dreq);
    int fd = ::open((work_dir + "/downloaded.bin").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    crypto::Sha256Stream hash;
    muster::v1::DownloadResponse msg;
    while (reader->Read(&msg)) {
      if (!msg.has_chunk()) continue;
      hash.update(msg.chunk());
      if (::write(fd, msg.chunk().data(), msg.chunk().size()) < 0) break;
      received += msg.chunk().size();
    }
    ::close(fd);
    got_sha = hash.finishHex();
    auto st = reader->Finish();
    if (!st.ok()) return fail("download failed: " + st.error_message());
  }
  double down_s = secondsSince(t0);
  double down_cpu = cpuSeconds(server.pid()) - cpu0;
  if (received != size || got_sha != sha256) return fail("downloaded bytes differ");
  link->close();
  server.stop();

  const double mb = static_cast<double>(size) / 1e6;
  const double floor_mbs = std::min(mb / sha_s, mb / cp_s);
  std::printf("size_mib=%d\n", size_mib);
  std::printf("sha256sum_mb_s=%.0f\ncp_mb_s=%.0f\n", mb / sha_s, mb / cp_s);
  std::printf("upload_mb_s=%.0f upload_s=%.2f musterd_cpu_s=%.2f ratio_to_slower=%.2f\n", mb / up_s,
              up_s, up_cpu, (mb / up_s) / floor_mbs);
  std::printf("download_mb_s=%.0f download_s=%.2f musterd_cpu_s=%.2f ratio_to_slower=%.2f\n",
              mb / down_s, down_s, down_cpu, (mb / down_s) / floor_mbs);
  std::filesystem::remove_all(work_dir);
  return 0;
}
