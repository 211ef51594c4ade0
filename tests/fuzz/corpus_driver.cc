// The normal build's stand-in for libFuzzer: runs every file of the given directories (and
// files) through LLVMFuzzerTestOneInput once, so each seed corpus is a regression test.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_support.h"

namespace {

std::vector<std::filesystem::path> inputsOf(const char* arg) {
  std::vector<std::filesystem::path> out;
  std::filesystem::path path(arg);
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
      if (entry.is_regular_file()) out.push_back(entry.path());
    }
    std::sort(out.begin(), out.end());  // the same order on every machine
  } else if (std::filesystem::is_regular_file(path, ec)) {
    out.push_back(path);
  } else {
    std::fprintf(stderr, "corpus_driver: %s is neither a file nor a directory\n", arg);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  size_t ran = 0;
  for (int i = 1; i < argc; ++i) {
    if (argv[i][0] == '-') continue;  // libFuzzer flags (-runs=0, ...): nothing to do here
    for (const auto& path : inputsOf(argv[i])) {
      std::ifstream in(path, std::ios::binary);
      std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::fprintf(stderr, "corpus_driver: %s (%zu bytes)\n", path.c_str(), bytes.size());
      // An exact-size heap copy, as libFuzzer passes it: a read past the end is caught by
      // AddressSanitizer when the build has it.
      std::unique_ptr<uint8_t[]> copy(new uint8_t[bytes.size()]);
      std::copy(bytes.begin(), bytes.end(), copy.get());
      LLVMFuzzerTestOneInput(copy.get(), bytes.size());
      ++ran;
    }
  }
  std::printf("corpus_driver: ran %zu inputs\n", ran);
  if (ran == 0) {
    std::fprintf(stderr, "corpus_driver: no inputs: pass corpus directories or files\n");
    return 1;
  }
  return 0;
}
