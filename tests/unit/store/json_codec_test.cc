// Tests of the JSON text the SQLite store keeps for string maps and lists.
#include "store/sqlite/json_codec.h"

#include <gtest/gtest.h>

#include <string>

namespace muster::store::sqlite {
namespace {

std::string allBytes() {
  std::string s;
  for (int c = 0; c < 256; ++c) s.push_back(static_cast<char>(c));
  return s;
}

TEST(JsonCodecTest, StringListRoundTripsEveryByte) {
  std::vector<std::string> values = {"", "plain", allBytes(), "\"\\/", "日本語 🚀"};
  auto decoded = decodeStringList(encodeStringList(values));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, values);
  EXPECT_EQ(*decodeStringList("[]"), std::vector<std::string>{});
}

TEST(JsonCodecTest, StringMapRoundTripsEveryByte) {
  model::StringMap values = {{"", "empty key"}, {allBytes(), allBytes()}, {"k", ""}};
  auto decoded = decodeStringMap(encodeStringMap(values));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, values);
}

TEST(JsonCodecTest, EncodeEscapesQuotesBackslashesAndControls) {
  EXPECT_EQ(encodeStringList({"a\"b\\c\n\x01\x7f"}), R"(["a\"b\\c\n\u0001\u007f"])");
  EXPECT_EQ(encodeStringMap({{"k", "v"}, {"a", "b"}}), R"({"a":"b","k":"v"})");
}

TEST(JsonCodecTest, DecodeAcceptsStandardJson) {
  auto list = decodeStringList(R"( [ "a\u00e9\ud83d\ude80" , "\/\b\f\r\t" ] )");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(*list, (std::vector<std::string>{"aé🚀", "/\b\f\r\t"}));
  auto map = decodeStringMap(" { \"x\" : \"1\" , \"x\" : \"2\" } ");
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->at("x"), "2");
}

TEST(JsonCodecTest, DecodeRejectsMalformedTextWithDataLoss) {
  for (const char* bad : {"", "[", "[\"a\"", "[\"a\",]", "[1]", "[\"a\"] x", "{}", "[\"\\u12\"]",
                          "[\"\\q\"]", "[\"a\nb\"]", "[\"a\\"}) {
    auto list = decodeStringList(bad);
    ASSERT_FALSE(list.ok()) << bad;
    EXPECT_EQ(list.status().code(), absl::StatusCode::kDataLoss);
  }
  for (const char* bad : {"", "{", "{\"a\"}", "{\"a\":1}", "{\"a\":\"b\",}", "[]", "{} {}"}) {
    auto map = decodeStringMap(bad);
    ASSERT_FALSE(map.ok()) << bad;
    EXPECT_EQ(map.status().code(), absl::StatusCode::kDataLoss);
  }
}

}  // namespace
}  // namespace muster::store::sqlite
