// Shared presentation of command records (show, list, run summaries).
#pragma once

#include <boost/json/value.hpp>
#include <string>

namespace muster::cli {

// "succeeded", "failed (exit 3)", "cancelled (signal 15)".
std::string outcomeText(const boost::json::value& command);
// The exit code column: the code, "sig N", or "-".
std::string exitText(const boost::json::value& command);
// argv joined with shell-style quoting, or the script.
std::string commandText(const boost::json::value& command);
bool succeeded(const boost::json::value& command);

}  // namespace muster::cli
