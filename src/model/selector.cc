// Label selector parsing and matching.
#include "model/selector.h"

#include <algorithm>
#include <cctype>

namespace muster::model {
namespace {

bool isKeyChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ||
         c == '/';
}
bool isValueChar(char c) { return isKeyChar(c) || c == ':' || c == '+' || c == '@'; }

class Parser {
 public:
  Parser(std::string_view text, std::string* error) : text_(text), error_(error) {}

  std::optional<Selector> run(std::vector<Requirement>* out) {
    skipSpace();
    if (pos_ == text_.size()) return fail("empty selector: give at least one requirement");
    while (true) {
      Requirement r;
      if (!requirement(&r)) return std::nullopt;
      out->push_back(std::move(r));
      skipSpace();
      if (pos_ == text_.size()) return Selector();
      if (text_[pos_] != ',') return fail("expected ',' between requirements");
      ++pos_;
    }
  }

 private:
  std::nullopt_t fail(const std::string& what) {
    *error_ = "invalid selector at position " + std::to_string(pos_ + 1) + ": " + what;
    return std::nullopt;
  }
  void skipSpace() {
    while (pos_ < text_.size() && text_[pos_] == ' ') ++pos_;
  }
  std::string word(bool (*ok)(char)) {
    size_t start = pos_;
    while (pos_ < text_.size() && ok(text_[pos_])) ++pos_;
    return std::string(text_.substr(start, pos_ - start));
  }
  bool keyword(std::string_view kw) {
    if (text_.substr(pos_, kw.size()) != kw) return false;
    size_t end = pos_ + kw.size();
    if (end < text_.size() && isKeyChar(text_[end])) return false;
    pos_ = end;
    return true;
  }
  bool requirement(Requirement* r) {
    skipSpace();
    bool negated = false;
    if (pos_ < text_.size() && text_[pos_] == '!') {
      negated = true;
      ++pos_;
      skipSpace();
    }
    r->key = word(isKeyChar);
    if (r->key.empty()) return fail("expected a label key"), false;
    if (r->key.size() > 63) return fail("label key longer than 63 characters"), false;
    skipSpace();
    if (negated) {
      r->op = Requirement::Op::kNotExists;
      return true;
    }
    if (pos_ == text_.size() || text_[pos_] == ',') {
      r->op = Requirement::Op::kExists;
      return true;
    }
    if (text_.substr(pos_, 2) == "!=") {
      pos_ += 2;
      r->op = Requirement::Op::kNotEquals;
    } else if (text_.substr(pos_, 2) == "==") {
      pos_ += 2;
      r->op = Requirement::Op::kEquals;
    } else if (text_[pos_] == '=') {
      ++pos_;
      r->op = Requirement::Op::kEquals;
    } else if (keyword("notin")) {
      r->op = Requirement::Op::kNotIn;
      return valueList(r);
    } else if (keyword("in")) {
      r->op = Requirement::Op::kIn;
      return valueList(r);
    } else {
      return fail("expected =, !=, in or notin after '" + r->key + "'"), false;
    }
    skipSpace();
    r->values.push_back(word(isValueChar));
    return true;
  }
  bool valueList(Requirement* r) {
    skipSpace();
    if (pos_ == text_.size() || text_[pos_] != '(')
      return fail("expected '(' after in/notin"), false;
    ++pos_;
    while (true) {
      skipSpace();
      r->values.push_back(word(isValueChar));
      skipSpace();
      if (pos_ == text_.size()) return fail("missing ')'"), false;
      if (text_[pos_] == ')') {
        ++pos_;
        return true;
      }
      if (text_[pos_] != ',') return fail("expected ',' or ')' in value list"), false;
      ++pos_;
    }
  }

  std::string_view text_;
  std::string* error_;
  size_t pos_ = 0;
};

}  // namespace

std::optional<Selector> Selector::parse(std::string_view text, std::string* error) {
  std::vector<Requirement> requirements;
  Parser parser(text, error);
  auto selector = parser.run(&requirements);
  if (!selector) return std::nullopt;
  selector->requirements_ = std::move(requirements);
  return selector;
}

bool Selector::matches(const StringMap& labels) const {
  for (const auto& r : requirements_) {
    auto it = labels.find(r.key);
    bool has = it != labels.end();
    auto in = [&] {
      return has && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end();
    };
    switch (r.op) {
      case Requirement::Op::kEquals:
      case Requirement::Op::kIn:
        if (!in()) return false;
        break;
      case Requirement::Op::kNotEquals:
      case Requirement::Op::kNotIn:
        if (in()) return false;
        break;
      case Requirement::Op::kExists:
        if (!has) return false;
        break;
      case Requirement::Op::kNotExists:
        if (has) return false;
        break;
    }
  }
  return true;
}

std::string Selector::toString() const {
  std::string out;
  for (const auto& r : requirements_) {
    if (!out.empty()) out += ",";
    auto list = [&] {
      std::string s = "(";
      for (size_t i = 0; i < r.values.size(); ++i) s += (i ? "," : "") + r.values[i];
      return s + ")";
    };
    switch (r.op) {
      case Requirement::Op::kEquals: out += r.key + "=" + r.values[0]; break;
      case Requirement::Op::kNotEquals: out += r.key + "!=" + r.values[0]; break;
      case Requirement::Op::kIn: out += r.key + " in " + list(); break;
      case Requirement::Op::kNotIn: out += r.key + " notin " + list(); break;
      case Requirement::Op::kExists: out += r.key; break;
      case Requirement::Op::kNotExists: out += "!" + r.key; break;
    }
  }
  return out;
}

}  // namespace muster::model
