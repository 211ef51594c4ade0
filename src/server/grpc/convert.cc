// Proto <-> core conversions for the agent link.
#include "server/grpc/convert.h"

#include <algorithm>
#include <cstdint>

namespace muster::server::grpcadapter {
namespace {
template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

// The wire carries these as uint32 milliseconds (49 days); the core keeps them far below
// (timeouts at most 7 days), and a value out of range is clamped, never wrapped.
uint32_t toU32Ms(int64_t ms) {
  return static_cast<uint32_t>(std::clamp<int64_t>(ms, 0, UINT32_MAX));
}

void toProto(const model::Command& c, muster::v1::Command* out) {
  out->set_command_id(c.id);
  out->set_run_id(c.run_id);
  out->set_expires_at_ms(c.expires_at_ms);
  auto* exec = out->mutable_exec();
  for (const auto& a : c.exec.argv) exec->add_argv(a);
  exec->set_script(c.exec.script);
  for (const auto& [k, v] : c.exec.env) (*exec->mutable_env())[k] = v;
  for (const auto& [k, v] : c.exec.secret_env) (*exec->mutable_secret_env())[k] = v;
  exec->set_cwd(c.exec.cwd);
  exec->set_timeout_ms(toU32Ms(c.exec.timeout_ms));
  exec->set_kill_grace_ms(toU32Ms(c.exec.kill_grace_ms));
  for (const auto& e : c.artifacts) {
    auto* x = out->add_artifacts();
    x->set_direction(e.direction == model::TransferDirection::kUpload
                         ? muster::v1::TRANSFER_DIRECTION_UPLOAD
                         : muster::v1::TRANSFER_DIRECTION_DOWNLOAD);
    x->set_purpose(static_cast<muster::v1::ArtifactPurpose>(e.purpose));
    x->set_artifact_id(e.artifact_id);
    x->set_device(e.device);
    x->set_max_bytes(e.max_bytes);
    x->set_sha256(e.sha256);
    x->set_size(e.size);
  }
}
}  // namespace

void toProto(const model::Artifact& a, muster::v1::ArtifactRef* out) {
  out->set_artifact_id(a.id);
  out->set_name(a.name);
  out->set_size(a.size);
  out->set_sha256(a.sha256);
  out->set_purpose(static_cast<muster::v1::ArtifactPurpose>(a.purpose));
}

model::ArtifactPurpose fromProto(muster::v1::ArtifactPurpose purpose) {
  int v = static_cast<int>(purpose);
  if (v < 1 || v > static_cast<int>(model::ArtifactPurpose::kShipment)) {
    return model::ArtifactPurpose::kUnspecified;
  }
  return static_cast<model::ArtifactPurpose>(v);
}

void toProto(const ServerEvent& event, muster::v1::ServerMessage* out) {
  std::visit(Overloaded{
                 [&](const WelcomeMsg& m) {
                   auto* w = out->mutable_welcome();
                   w->set_session_id(m.session_id);
                   w->set_heartbeat_interval_ms(toU32Ms(m.heartbeat_interval_ms));
                   w->set_server_time_ms(m.server_time_ms);
                   w->set_reconnect_window_ms(toU32Ms(m.reconnect_window_ms));
                 },
                 [&](const DispatchMsg& m) { toProto(m.command, out->mutable_command()); },
                 [&](const CancelMsg& m) {
                   auto* c = out->mutable_cancel();
                   c->set_command_id(m.command_id);
                   c->set_reason(m.reason);
                 },
                 [&](const ResultAckMsg& m) {
                   auto* a = out->mutable_result_ack();
                   a->set_command_id(m.command_id);
                   a->set_rejected(m.rejected);
                   a->set_reason(m.reason);
                 },
             },
             event);
}

HelloInfo fromProto(const muster::v1::Hello& hello) {
  HelloInfo info;
  info.agent_id = hello.agent_id();
  info.version = hello.version();
  info.facts.insert(hello.facts().begin(), hello.facts().end());
  info.labels.insert(hello.labels().begin(), hello.labels().end());
  info.in_flight_command_ids.assign(hello.in_flight_command_ids().begin(),
                                    hello.in_flight_command_ids().end());
  info.unacked_command_ids.assign(hello.unacked_command_ids().begin(),
                                  hello.unacked_command_ids().end());
  return info;
}

model::Metrics fromProto(const muster::v1::Metrics& m) {
  model::Metrics out;
  out.load1 = m.load1();
  out.load5 = m.load5();
  out.load15 = m.load15();
  out.mem_total_bytes = m.mem_total_bytes();
  out.mem_available_bytes = m.mem_available_bytes();
  out.disk_total_bytes = m.disk_total_bytes();
  out.disk_free_bytes = m.disk_free_bytes();
  out.uptime_seconds = m.uptime_seconds();
  return out;
}

bool fromProto(const muster::v1::CommandOutput& o, model::OutputChunk* out) {
  if (o.command_id().empty()) return false;
  if (o.stream() == muster::v1::OUTPUT_STREAM_STDOUT) {
    out->stream = model::OutputStream::kStdout;
  } else if (o.stream() == muster::v1::OUTPUT_STREAM_STDERR) {
    out->stream = model::OutputStream::kStderr;
  } else {
    return false;
  }
  out->command_id = o.command_id();
  out->offset = o.offset();
  out->data = o.data();
  return true;
}

bool fromProto(const muster::v1::CommandResult& r, model::CommandResult* out) {
  using model::CommandState;
  switch (r.outcome()) {
    case muster::v1::COMMAND_OUTCOME_SUCCEEDED: out->state = CommandState::kSucceeded; break;
    case muster::v1::COMMAND_OUTCOME_FAILED: out->state = CommandState::kFailed; break;
    case muster::v1::COMMAND_OUTCOME_TIMED_OUT: out->state = CommandState::kTimedOut; break;
    case muster::v1::COMMAND_OUTCOME_CANCELLED: out->state = CommandState::kCancelled; break;
    case muster::v1::COMMAND_OUTCOME_REJECTED: out->state = CommandState::kFailed; break;
    default: return false;
  }
  if (r.command_id().empty()) return false;
  out->command_id = r.command_id();
  if (r.has_exit_code()) out->exit_code = r.exit_code();
  out->signal = r.signal();
  out->error = r.error();
  out->stdout_bytes = r.stdout_bytes();
  out->stderr_bytes = r.stderr_bytes();
  out->output_truncated = r.output_truncated();
  out->started_at_ms = r.started_at_ms();
  out->finished_at_ms = r.finished_at_ms();
  return true;
}

absl::StatusOr<AgentEvent> toAgentEvent(const muster::v1::AgentMessage& in) {
  using K = muster::v1::AgentMessage::KindCase;
  switch (in.kind_case()) {
    case K::kHello: return AgentEvent{fromProto(in.hello())};
    case K::kHeartbeat: return AgentEvent{HeartbeatMsg{fromProto(in.heartbeat().metrics())}};
    case K::kAccepted:
      return AgentEvent{AcceptedMsg{in.accepted().command_id(), in.accepted().started_at_ms()}};
    case K::kOutput: {
      OutputMsg m;
      if (!fromProto(in.output(), &m.chunk)) {
        return absl::InvalidArgumentError("CommandOutput without command id or stream");
      }
      return AgentEvent{std::move(m)};
    }
    case K::kResult: {
      ResultMsg m;
      if (!fromProto(in.result(), &m.result)) {
        return absl::InvalidArgumentError("CommandResult without command id or outcome");
      }
      return AgentEvent{std::move(m)};
    }
    default: return absl::InvalidArgumentError("unknown agent message kind (newer agent?)");
  }
}

}  // namespace muster::server::grpcadapter
