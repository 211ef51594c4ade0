// Facts and metrics from /proc, uname and statvfs.
#include "agent/system_info.h"

#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/fs.h"

namespace muster::agent {
namespace {
std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

std::string osPrettyName() {
  std::ifstream in("/etc/os-release");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("PRETTY_NAME=", 0) == 0) {
      std::string v = line.substr(12);
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      return v;
    }
  }
  return "";
}

uint64_t meminfoKb(const std::string& text, const std::string& key) {
  auto pos = text.find(key + ":");
  if (pos == std::string::npos) return 0;
  std::istringstream in(text.substr(pos + key.size() + 1));
  uint64_t kb = 0;
  in >> kb;
  return kb;
}
}  // namespace

std::map<std::string, std::string> collectFacts(const std::string& agent_version) {
  std::map<std::string, std::string> facts;
  struct utsname u;
  if (::uname(&u) == 0) {
    facts["kernel"] = u.release;
    facts["arch"] = u.machine;
    facts["os"] = u.sysname;
  }
  char host[256] = {0};
  if (::gethostname(host, sizeof host - 1) == 0) facts["hostname"] = host;
  if (auto pretty = osPrettyName(); !pretty.empty()) facts["os_release"] = pretty;
  facts["cpus"] = absl::StrCat(std::thread::hardware_concurrency());
  facts["agent_version"] = agent_version;
  return facts;
}

muster::v1::Metrics collectMetrics(const std::string& disk_path) {
  muster::v1::Metrics m;
  if (auto load = common::readFile("/proc/loadavg"); load.ok()) {
    std::istringstream in(*load);
    double l1 = 0, l5 = 0, l15 = 0;
    in >> l1 >> l5 >> l15;
    m.set_load1(l1);
    m.set_load5(l5);
    m.set_load15(l15);
  }
  if (auto mem = common::readFile("/proc/meminfo"); mem.ok()) {
    m.set_mem_total_bytes(meminfoKb(*mem, "MemTotal") * 1024);
    m.set_mem_available_bytes(meminfoKb(*mem, "MemAvailable") * 1024);
  }
  struct statvfs vfs;
  if (::statvfs(disk_path.c_str(), &vfs) == 0) {
    m.set_disk_total_bytes(static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize);
    m.set_disk_free_bytes(static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize);
  }
  if (auto up = common::readFile("/proc/uptime"); up.ok()) {
    std::istringstream in(*up);
    double s = 0;
    in >> s;
    m.set_uptime_seconds(static_cast<uint64_t>(s));
  }
  return m;
}

std::string machineId() {
  for (const char* p : {"/etc/machine-id", "/var/lib/dbus/machine-id"}) {
    if (auto id = common::readFile(p); id.ok()) {
      auto t = trim(*id);
      if (!t.empty()) return t;
    }
  }
  return "";
}

}  // namespace muster::agent
