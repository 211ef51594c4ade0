// Helpers shared by the fuzz targets: a reader of the input bytes, scratch directories and
// quiet logs.
#pragma once

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

// The entry point every target defines; libFuzzer or tests/fuzz/corpus_driver.cc calls it.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace muster::fuzz {

// Takes typed values off the front of the input, like clang's FuzzedDataProvider (whose
// header the g++ build does not have). Exhausted input yields zeros and empty strings, so
// every input is a valid sequence of decisions.
class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size)
      : data_(reinterpret_cast<const char*>(data)), size_(size) {}

  bool empty() const { return pos_ == size_; }
  size_t remaining() const { return size_ - pos_; }
  uint8_t byte() { return empty() ? 0 : static_cast<uint8_t>(data_[pos_++]); }
  uint16_t u16() { return static_cast<uint16_t>(byte() | (byte() << 8)); }
  uint64_t u64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(byte()) << (8 * i);
    return v;
  }
  // Up to `n` bytes.
  std::string_view bytes(size_t n) {
    n = std::min(n, remaining());
    std::string_view out(data_ + pos_, n);
    pos_ += n;
    return out;
  }
  // A piece whose length (up to 255) is the next byte.
  std::string_view piece() { return bytes(byte()); }
  // A piece whose length (up to 65535) is the next two bytes.
  std::string_view longPiece() { return bytes(u16()); }
  std::string_view rest() { return bytes(remaining()); }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Splits bytes into pieces of pseudo-random sizes (1..max) chosen by `seed`, the way a
// socket hands a stream over in reads of arbitrary length; the same seed, the same split.
class Splitter {
 public:
  Splitter(std::string_view bytes, uint32_t seed, size_t max) : bytes_(bytes), state_(seed | 1) {
    max_ = std::max<size_t>(max, 1);
  }
  bool done() const { return bytes_.empty(); }
  std::string_view next() {
    state_ ^= state_ << 13;  // xorshift32: deterministic, no global state
    state_ ^= state_ >> 17;
    state_ ^= state_ << 5;
    size_t n = std::min<size_t>(1 + state_ % max_, bytes_.size());
    std::string_view out = bytes_.substr(0, n);
    bytes_.remove_prefix(n);
    return out;
  }

 private:
  std::string_view bytes_;
  uint32_t state_;
  size_t max_;
};

// A fresh directory for one process's scratch files, removed at exit. On tmpfs when there is
// one: targets that keep a SQLite store would otherwise wait on fsync for every input.
inline std::string scratchDir(const std::string& target) {
  std::filesystem::path base = std::filesystem::exists("/dev/shm")
                                   ? std::filesystem::path("/dev/shm")
                                   : std::filesystem::temp_directory_path();
  static std::string* dir = nullptr;  // one per process; leaked on purpose, see atexit below
  if (dir) return *dir;
  dir = new std::string(
      (base / ("muster-fuzz-" + target + "-" + std::to_string(::getpid()))).string());
  std::filesystem::remove_all(*dir);
  std::filesystem::create_directories(*dir);
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(*dir, ec);
  });
  return *dir;
}

// Muster logs warnings for much of what fuzzers send; printing them slows every input.
inline void quietLogs() { spdlog::set_level(spdlog::level::off); }

// A broken invariant: abort so libFuzzer (or the corpus driver under ctest) reports it with
// the input that caused it.
#define MUSTER_FUZZ_CHECK(cond)                                                              \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

}  // namespace muster::fuzz
