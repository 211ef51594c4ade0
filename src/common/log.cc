// Logging set-up and MUSTER_BUG.
#include "common/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdlib>

#include "common/fmt_absl.h"

namespace muster::common {
namespace {
std::atomic<uint64_t> g_bugs{0};

// %j: the message escaped for a JSON string, so every log line stays valid JSON.
class JsonMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    std::string escaped = jsonEscape(std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(escaped.data(), escaped.data() + escaped.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessageFlag>();
  }
};
}  // namespace

std::string jsonEscape(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20) {
      out += "\\u00";
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

absl::Status setupLogging(const std::string& format, const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError("invalid --log-level '" + level +
                                      "': use trace, debug, info, warn or error");
  }
  auto logger = spdlog::stderr_logger_mt("muster");
  spdlog::set_default_logger(logger);
  spdlog::set_level(lvl);
  if (format == "json") {
    spdlog::set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","thread":%t,"msg":"%v"})",
                        spdlog::pattern_time_type::utc);
  } else if (format == "text") {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ %v");
  } else {
    return absl::InvalidArgumentError("invalid --log-format '" + format + "': use text or json");
  }
  spdlog::flush_on(spdlog::level::info);
  return absl::OkStatus();
}

void reportBug(const char* file, int line, const std::string& what) {
  g_bugs.fetch_add(1);
  spdlog::critical("BUG at {}:{}: {}", file, line, what);
#ifndef NDEBUG
  std::abort();
#endif
}

uint64_t bugCount() { return g_bugs.load(); }

bool RateLimitedLog::allow(int64_t now_ms, uint64_t* suppressed) {
  std::lock_guard lock(mu_);
  if (started_ && now_ms - last_ms_ < interval_ms_) {
    ++suppressed_;
    return false;
  }
  started_ = true;
  last_ms_ = now_ms;
  *suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

bool RateLimitedLog::allow(uint64_t* suppressed) {
  auto now = std::chrono::steady_clock::now().time_since_epoch();
  return allow(std::chrono::duration_cast<std::chrono::milliseconds>(now).count(), suppressed);
}

}  // namespace muster::common
