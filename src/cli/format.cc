// Tables, times, sizes, JSON pretty printing and error reporting for the CLI.
#include "cli/format.h"

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "cli/http_client.h"

namespace muster::cli {
namespace json = boost::json;

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::add(std::vector<std::string> row) {
  row.resize(headers_.size());
  rows_.push_back(std::move(row));
}

void Table::print(std::ostream& out) const {
  std::vector<size_t> width(headers_.size());
  for (size_t i = 0; i < headers_.size(); ++i) width[i] = headers_[i].size();
  for (const auto& row : rows_) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t i = 0; i < cells.size(); ++i) {
      text += cells[i];
      if (i + 1 < cells.size()) text += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    out << text << "\n";
  };
  line(headers_);
  for (const auto& row : rows_) line(row);
}

const json::value* member(const json::value& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  return object.as_object().if_contains(key);
}

std::string field(const json::value& object, std::string_view key) {
  const json::value* v = member(object, key);
  return v ? scalarText(*v) : "";
}

std::string scalarText(const json::value& value) {
  const json::value* v = &value;
  if (v->is_null()) return "";
  if (v->is_string()) return std::string(v->get_string());
  if (v->is_bool()) return v->get_bool() ? "true" : "false";
  if (v->is_int64()) return std::to_string(v->get_int64());
  if (v->is_uint64()) return std::to_string(v->get_uint64());
  if (v->is_double()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", v->get_double());
    return buf;
  }
  return json::serialize(*v);
}

int64_t intField(const json::value& object, std::string_view key, int64_t fallback) {
  const json::value* v = member(object, key);
  if (!v) return fallback;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<int64_t>(v->get_uint64());
  if (v->is_double()) {
    // Converting a double outside int64's range is undefined; a server could send 1e300.
    double d = v->get_double();
    if (!(d > -9.2e18 && d < 9.2e18)) return fallback;
    return static_cast<int64_t>(d);
  }
  return fallback;
}

double doubleField(const json::value& object, std::string_view key, double fallback) {
  const json::value* v = member(object, key);
  if (!v) return fallback;
  if (v->is_double()) return v->get_double();
  if (v->is_int64()) return static_cast<double>(v->get_int64());
  if (v->is_uint64()) return static_cast<double>(v->get_uint64());
  return fallback;
}

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string ago(int64_t then_ms, int64_t now_ms) {
  if (then_ms <= 0) return "-";
  int64_t s = std::max<int64_t>(0, (now_ms - then_ms) / 1000);
  if (s < 60) return absl::StrCat(s, "s ago");
  if (s < 3600) return absl::StrCat(s / 60, "m ago");
  if (s < 86400) return absl::StrCat(s / 3600, "h ago");
  return absl::StrCat(s / 86400, "d ago");
}

std::string humanBytes(uint64_t bytes) {
  const char* units[] = {"B", "K", "M", "G", "T", "P"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 5) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  if (unit == 0) {
    std::snprintf(buf, sizeof buf, "%lluB", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, value < 10 ? "%.1f%s" : "%.0f%s", value, units[unit]);
  }
  return buf;
}

namespace {

void prettyPrint(std::ostream& out, const json::value& v, int indent) {
  std::string pad(indent * 2, ' ');
  std::string inner((indent + 1) * 2, ' ');
  if (v.is_object()) {
    const auto& o = v.get_object();
    if (o.empty()) {
      out << "{}";
      return;
    }
    out << "{\n";
    size_t i = 0;
    for (const auto& kv : o) {
      out << inner << json::serialize(json::string(kv.key())) << ": ";
      prettyPrint(out, kv.value(), indent + 1);
      out << (++i < o.size() ? ",\n" : "\n");
    }
    out << pad << "}";
  } else if (v.is_array()) {
    const auto& a = v.get_array();
    if (a.empty()) {
      out << "[]";
      return;
    }
    out << "[\n";
    for (size_t i = 0; i < a.size(); ++i) {
      out << inner;
      prettyPrint(out, a[i], indent + 1);
      out << (i + 1 < a.size() ? ",\n" : "\n");
    }
    out << pad << "]";
  } else {
    out << json::serialize(v);
  }
}

std::string hintFor(const absl::Status& status) {
  std::string message(status.message());
  if (status.code() == absl::StatusCode::kUnauthenticated) {
    return "musterd writes the first admin token to <data-dir>/admin.token; pass it (or one an "
           "admin created) with --token or MUSTER_TOKEN";
  }
  // The server's message already says what to do next.
  if (message.find("`muster ") != std::string::npos) return "";
  if (serverErrorCode(status) == "invalid_selector") {
    return "selectors look like `env=prod,role in (web,db),!canary,region!=eu`; `muster hosts -l "
           "SELECTOR` shows which hosts one matches";
  }
  switch (status.code()) {
    case absl::StatusCode::kPermissionDenied:
      return "this token may not do that; ask an admin for a token with a stronger role";
    case absl::StatusCode::kNotFound:
      return "`muster hosts`, `muster commands` and `muster token ls` list what exists";
    case absl::StatusCode::kInvalidArgument:
      return "see `muster --help` or `muster <command> --help`";
    case absl::StatusCode::kAlreadyExists:
      return "retry with a new idempotency key, or repeat the original request exactly";
    case absl::StatusCode::kResourceExhausted: return "send less, or try again later";
    default: return "";
  }
}

}  // namespace

void printJson(std::ostream& out, const json::value& value) {
  prettyPrint(out, value, 0);
  out << "\n";
}

int reportError(const absl::Status& status) {
  std::cerr << "muster: " << status.message() << "\n";
  std::string hint = hintFor(status);
  if (!hint.empty()) std::cerr << "hint: " << hint << "\n";
  return kExitFailure;
}

int reportUsage(const std::string& message) {
  std::cerr << "muster: " << message << "\n"
            << "Run with --help for more information.\n";
  return kExitUsage;
}

}  // namespace muster::cli
