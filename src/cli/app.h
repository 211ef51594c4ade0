// Entry point of the `muster` CLI (apps/muster/main.cc only calls this).
#pragma once

namespace muster::cli {

// Parses the command line, runs one subcommand and returns the process exit status:
// 0 success, 1 failure (or a command that did not succeed), 2 usage error.
int runMuster(int argc, char** argv);

}  // namespace muster::cli
