// Label selectors, Kubernetes-style: `env=prod,role in (web,db),!canary,region!=eu`.
// Requirements are ANDed. Forms: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
// `k` (has the label), `!k` (does not have it).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/host.h"

namespace muster::model {

struct Requirement {
  enum class Op { kEquals, kNotEquals, kIn, kNotIn, kExists, kNotExists };
  std::string key;
  Op op = Op::kExists;
  std::vector<std::string> values;
};

class Selector {
 public:
  // On error returns nullopt and sets `error` to a message naming the offending part.
  static std::optional<Selector> parse(std::string_view text, std::string* error);

  bool matches(const StringMap& labels) const;
  bool empty() const { return requirements_.empty(); }
  const std::vector<Requirement>& requirements() const { return requirements_; }
  std::string toString() const;

 private:
  std::vector<Requirement> requirements_;
};

}  // namespace muster::model
