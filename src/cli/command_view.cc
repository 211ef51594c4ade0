// Presentation helpers for command records.
#include "cli/command_view.h"

#include "absl/strings/str_cat.h"
#include "cli/format.h"

namespace muster::cli {
namespace json = boost::json;

std::string exitText(const json::value& c) {
  const json::value* code = member(c, "exit_code");
  if (code && !code->is_null()) return scalarText(*code);
  int64_t signal = intField(c, "signal");
  if (signal > 0) return absl::StrCat("sig ", signal);
  return "-";
}

std::string outcomeText(const json::value& c) {
  std::string state = field(c, "state");
  std::string exit = exitText(c);
  if (exit == "-") return state;
  if (exit.rfind("sig ", 0) == 0) return absl::StrCat(state, " (signal ", exit.substr(4), ")");
  return absl::StrCat(state, " (exit ", exit, ")");
}

std::string commandText(const json::value& c) {
  const json::value* argv = member(c, "argv");
  if (!argv || !argv->is_array()) return field(c, "script");
  std::string out;
  for (const auto& a : argv->as_array()) {
    std::string arg = scalarText(a);
    if (!out.empty()) out += ' ';
    bool plain =
        !arg.empty() && arg.find_first_of(" \t\n'\"\\$`*?;&|<>()[]{}!#~") == std::string::npos;
    if (plain) {
      out += arg;
    } else {
      out += '\'';
      for (char ch : arg) {
        if (ch == '\'') {
          out += "'\\''";
        } else {
          out += ch;
        }
      }
      out += '\'';
    }
  }
  return out;
}

bool succeeded(const json::value& c) { return field(c, "state") == "succeeded"; }

}  // namespace muster::cli
