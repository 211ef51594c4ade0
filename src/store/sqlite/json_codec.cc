// A deliberately small JSON writer/reader for flat string arrays and string objects.
#include "store/sqlite/json_codec.h"

#include <cstdint>

#include "absl/strings/str_cat.h"

namespace muster::store::sqlite {
namespace {

void appendQuoted(std::string& out, std::string_view value) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (char ch : value) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xf]);
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

void appendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

class Reader {
 public:
  explicit Reader(std::string_view text) : text_(text) {}

  void skipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\r' || text_[pos_] == '\t')) {
      ++pos_;
    }
  }
  // Consumes `c` (after whitespace) when it is next.
  bool consume(char c) {
    skipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  absl::Status expect(char c) {
    if (consume(c)) return absl::OkStatus();
    return error(absl::StrCat("expected '", std::string(1, c), "'"));
  }
  bool atEnd() {
    skipSpace();
    return pos_ == text_.size();
  }
  absl::Status error(const std::string& what) const {
    return absl::DataLossError(absl::StrCat("malformed JSON at byte ", pos_, ": ", what));
  }

  absl::StatusOr<std::string> string() {
    if (!consume('"')) return error("expected a string");
    std::string out;
    while (pos_ < text_.size()) {
      char ch = text_[pos_++];
      if (ch == '"') return out;
      if (static_cast<unsigned char>(ch) < 0x20) return error("raw control character in string");
      if (ch != '\\') {
        out.push_back(ch);
        continue;
      }
      if (pos_ >= text_.size()) break;
      char esc = text_[pos_++];
      switch (esc) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          auto cp = hex4();
          if (!cp.ok()) return cp.status();
          uint32_t code = *cp;
          // A surrogate pair; a lone surrogate is kept as its 3-byte form rather than refused.
          if (code >= 0xd800 && code < 0xdc00 && text_.substr(pos_, 2) == "\\u") {
            size_t save = pos_;
            pos_ += 2;
            auto low = hex4();
            if (low.ok() && *low >= 0xdc00 && *low < 0xe000) {
              code = 0x10000 + ((code - 0xd800) << 10) + (*low - 0xdc00);
            } else {
              pos_ = save;
            }
          }
          appendUtf8(out, code);
          break;
        }
        default: return error("unknown escape");
      }
    }
    return error("unterminated string");
  }

 private:
  absl::StatusOr<uint32_t> hex4() {
    if (pos_ + 4 > text_.size()) return error("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char h = text_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') {
        v |= static_cast<uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        v |= static_cast<uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        v |= static_cast<uint32_t>(h - 'A' + 10);
      } else {
        return error("bad hex digit in \\u escape");
      }
    }
    return v;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

std::string encodeStringList(const std::vector<std::string>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out.push_back(',');
    appendQuoted(out, values[i]);
  }
  out.push_back(']');
  return out;
}

std::string encodeStringMap(const model::StringMap& values) {
  std::string out = "{";
  bool first = true;
  for (const auto& [key, value] : values) {
    if (!first) out.push_back(',');
    first = false;
    appendQuoted(out, key);
    out.push_back(':');
    appendQuoted(out, value);
  }
  out.push_back('}');
  return out;
}

absl::StatusOr<std::vector<std::string>> decodeStringList(std::string_view text) {
  Reader in(text);
  std::vector<std::string> out;
  if (auto st = in.expect('['); !st.ok()) return st;
  if (!in.consume(']')) {
    do {
      auto value = in.string();
      if (!value.ok()) return value.status();
      out.push_back(std::move(*value));
    } while (in.consume(','));
    if (auto st = in.expect(']'); !st.ok()) return st;
  }
  if (!in.atEnd()) return in.error("trailing characters");
  return out;
}

absl::StatusOr<model::StringMap> decodeStringMap(std::string_view text) {
  Reader in(text);
  model::StringMap out;
  if (auto st = in.expect('{'); !st.ok()) return st;
  if (!in.consume('}')) {
    do {
      auto key = in.string();
      if (!key.ok()) return key.status();
      if (auto st = in.expect(':'); !st.ok()) return st;
      auto value = in.string();
      if (!value.ok()) return value.status();
      out[std::move(*key)] = std::move(*value);
    } while (in.consume(','));
    if (auto st = in.expect('}'); !st.ok()) return st;
  }
  if (!in.atEnd()) return in.error("trailing characters");
  return out;
}

}  // namespace muster::store::sqlite
