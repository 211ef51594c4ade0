// Human output of the CLI: aligned tables, relative times, sizes, pretty JSON, and the
// one-line error messages with a hint of what to do next.
#pragma once

#include <boost/json/value.hpp>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace muster::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

class Table {
 public:
  explicit Table(std::vector<std::string> headers);
  void add(std::vector<std::string> row);
  void print(std::ostream& out) const;
  bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// A JSON value as text: strings unquoted, numbers and bools printed, "" for null.
std::string scalarText(const boost::json::value& value);
// Field of a JSON object as text ("" when missing or null; numbers and bools printed).
std::string field(const boost::json::value& object, std::string_view key);
int64_t intField(const boost::json::value& object, std::string_view key, int64_t fallback = 0);
double doubleField(const boost::json::value& object, std::string_view key, double fallback = 0);
const boost::json::value* member(const boost::json::value& object, std::string_view key);

// "12s ago", "3m ago", "2h ago", "5d ago"; "-" for 0.
std::string ago(int64_t then_ms, int64_t now_ms);
std::string humanBytes(uint64_t bytes);
int64_t nowMs();

// Indented JSON with a trailing newline.
void printJson(std::ostream& out, const boost::json::value& value);

// Prints "muster: <message>" and a hint to stderr; returns the exit status (1).
int reportError(const absl::Status& status);
// Prints "muster: <message>" and the usage hint to stderr; returns 2.
int reportUsage(const std::string& message);

}  // namespace muster::cli
