#include "src/guid.h"

#include <gtest/gtest.h>

#include <set>

namespace ktmfs {
namespace {

TEST(GuidTest, RoundTripsThroughText) {
  Guid g = Guid::Random();
  std::string text = g.ToString();
  ASSERT_EQ(text.size(), 36u);
  auto parsed = Guid::Parse(text);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(*parsed, g);
}

TEST(GuidTest, RandomGuidsDiffer) {
  std::set<Guid> seen;
  for (int i = 0; i < 1000; ++i)
    EXPECT_TRUE(seen.insert(Guid::Random()).second);
}

TEST(GuidTest, RejectsMalformedText) {
  EXPECT_FALSE(Guid::Parse("").has_value());
  EXPECT_FALSE(Guid::Parse("not-a-guid").has_value());
  EXPECT_FALSE(Guid::Parse("0123456789abcdef0123456789abcdef0123").has_value());
  EXPECT_FALSE(Guid::Parse("01234567-89ab-cdef-0123-456789abcdeg").has_value());
  EXPECT_TRUE(Guid::Parse("01234567-89ab-cdef-0123-456789abcdef").has_value());
}

TEST(GuidTest, NilIsNil) {
  EXPECT_TRUE(Guid{}.IsNil());
  EXPECT_FALSE(Guid::Random().IsNil());
}

}  // namespace
}  // namespace ktmfs
