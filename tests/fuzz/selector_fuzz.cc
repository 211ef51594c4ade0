// Fuzz target: label selectors (model::Selector) as API clients send them (?selector=,
// "selector" of a run), parsed, matched against label sets and printed back.
#include "model/selector.h"
#include "tests/fuzz/fuzz_support.h"

namespace {
using muster::model::Requirement;
using muster::model::Selector;
using muster::model::StringMap;

const StringMap kLabelSets[] = {
    {},
    {{"env", "prod"}, {"role", "web"}},
    {{"env", "staging"}, {"role", "db"}, {"canary", "true"}},
    {{"region", "eu"}, {"k8s.io/zone", "a"}, {"", ""}},
};

// Labels that satisfy every requirement of `s` on their own: the selector must match them
// unless two requirements on one key contradict each other.
StringMap labelsSatisfying(const Selector& s, bool* consistent) {
  StringMap labels;
  *consistent = true;
  for (const Requirement& r : s.requirements()) {
    if (r.op == Requirement::Op::kEquals || r.op == Requirement::Op::kIn) {
      auto [it, inserted] = labels.emplace(r.key, r.values.front());
      if (!inserted && it->second != r.values.front()) *consistent = false;
    } else if (r.op == Requirement::Op::kExists) {
      labels.emplace(r.key, "x");
    }
  }
  for (const Requirement& r : s.requirements()) {
    auto it = labels.find(r.key);
    bool has = it != labels.end();
    bool listed = has && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end();
    switch (r.op) {
      case Requirement::Op::kEquals:
      case Requirement::Op::kIn:
        if (!listed) *consistent = false;
        break;
      case Requirement::Op::kNotEquals:
      case Requirement::Op::kNotIn:
        if (listed) *consistent = false;
        break;
      case Requirement::Op::kExists:
        if (!has) *consistent = false;
        break;
      case Requirement::Op::kNotExists:
        if (has) *consistent = false;
        break;
    }
  }
  return labels;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string error;
  std::optional<Selector> selector = Selector::parse(text, &error);
  if (!selector) {
    MUSTER_FUZZ_CHECK(!error.empty());  // a refusal always says why
    return 0;
  }
  MUSTER_FUZZ_CHECK(!selector->empty());
  for (const Requirement& r : selector->requirements()) {
    MUSTER_FUZZ_CHECK(!r.key.empty() && r.key.size() <= 63);
    bool has_values = r.op != Requirement::Op::kExists && r.op != Requirement::Op::kNotExists;
    MUSTER_FUZZ_CHECK(has_values == !r.values.empty());
  }
  for (const StringMap& labels : kLabelSets) selector->matches(labels);
  bool consistent = false;
  StringMap own = labelsSatisfying(*selector, &consistent);
  if (consistent) MUSTER_FUZZ_CHECK(selector->matches(own));

  // What toString prints (run records, logs) must parse back to the same selector.
  std::string printed = selector->toString();
  std::string again_error;
  std::optional<Selector> again = Selector::parse(printed, &again_error);
  MUSTER_FUZZ_CHECK(again.has_value());
  MUSTER_FUZZ_CHECK(again->toString() == printed);
  MUSTER_FUZZ_CHECK(again->requirements().size() == selector->requirements().size());
  return 0;
}
