// Logging set-up and MUSTER_BUG.
#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>

#include "common/fmt_absl.h"

namespace muster::common {
namespace {
std::atomic<uint64_t> g_bugs{0};
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

}  // namespace muster::common
