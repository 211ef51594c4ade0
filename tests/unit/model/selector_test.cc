// Label selector parsing and matching.
#include "model/selector.h"

#include <gtest/gtest.h>

namespace muster::model {
namespace {

Selector parseOk(std::string_view text) {
  std::string error;
  auto s = Selector::parse(text, &error);
  EXPECT_TRUE(s.has_value()) << text << ": " << error;
  return s.value_or(Selector());
}

TEST(SelectorTest, MatchesTheDocumentedExample) {
  auto s = parseOk("env=prod,role in (web,db),!canary,region!=eu");
  EXPECT_TRUE(s.matches({{"env", "prod"}, {"role", "web"}, {"region", "us"}}));
  EXPECT_TRUE(s.matches({{"env", "prod"}, {"role", "db"}}));
  EXPECT_FALSE(s.matches({{"env", "prod"}, {"role", "db"}, {"canary", "yes"}}));
  EXPECT_FALSE(s.matches({{"env", "prod"}, {"role", "cache"}}));
  EXPECT_FALSE(s.matches({{"env", "prod"}, {"role", "web"}, {"region", "eu"}}));
  EXPECT_FALSE(s.matches({{"env", "dev"}, {"role", "web"}}));
}

TEST(SelectorTest, ExistsNotInAndDoubleEquals) {
  auto s = parseOk("gpu, zone notin (a, b), os==linux");
  EXPECT_TRUE(s.matches({{"gpu", ""}, {"zone", "c"}, {"os", "linux"}}));
  EXPECT_TRUE(s.matches({{"gpu", "1"}, {"os", "linux"}}));
  EXPECT_FALSE(s.matches({{"zone", "c"}, {"os", "linux"}}));
  EXPECT_FALSE(s.matches({{"gpu", "1"}, {"zone", "a"}, {"os", "linux"}}));
  EXPECT_EQ(s.toString(), "gpu,zone notin (a,b),os=linux");
}

TEST(SelectorTest, RejectsMalformedSelectorsWithPosition) {
  for (const char* bad : {"", "env=", "=prod", "role in web", "role in (web", "a,,b", "a b",
                          "role inn (x)", "env=prod;rm"}) {
    std::string error;
    auto s = Selector::parse(bad, &error);
    if (std::string_view(bad) == "env=") {
      // An empty value is allowed: `env=` matches hosts whose env label is empty.
      EXPECT_TRUE(s.has_value());
      continue;
    }
    EXPECT_FALSE(s.has_value()) << bad;
    EXPECT_NE(error.find("invalid selector"), std::string::npos) << bad;
  }
}

}  // namespace
}  // namespace muster::model
