#include "fs/begin_options.h"

#include <gtest/gtest.h>

namespace ktmfs::fs {
namespace {

TEST(BeginOptionsTest, EmptyMeansDefaults) {
  const std::string_view values[] = {"", " ", "\n", std::string_view("\0", 1)};
  for (std::string_view v : values) {
    auto o = ParseBeginOptions(v);
    ASSERT_TRUE(o.ok()) << o.status().ToString();
    EXPECT_EQ(o->scope, Scope::kProcess);
    EXPECT_EQ(o->pid, 0);
    EXPECT_EQ(o->timeout_sec, 0u);
    EXPECT_EQ(o->name, "");
  }
}

TEST(BeginOptionsTest, AllKeys) {
  auto o = ParseBeginOptions("scope=tree pid=1234 timeout=30 name=deploy\n");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->scope, Scope::kTree);
  EXPECT_EQ(o->pid, 1234);
  EXPECT_EQ(o->timeout_sec, 30u);
  EXPECT_EQ(o->name, "deploy");
}

TEST(BeginOptionsTest, QuotedValuesKeepSpacesAndEscapes) {
  auto o = ParseBeginOptions(R"(name="nightly \"big\" deploy \\ 2"  scope=thread)");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->name, R"(nightly "big" deploy \ 2)");
  EXPECT_EQ(o->scope, Scope::kThread);
}

TEST(BeginOptionsTest, RejectsMalformedInput) {
  for (const char* bad :
       {"scope=forest", "pid=0", "pid=-1", "pid=12x", "pid=99999999999", "timeout=0",
        "timeout=4294967296", "colour=red", "scope", "=tree", "scope=tree scope=process",
        "name=\"unterminated", "name=\"a\"b", "pid=+5"}) {
    auto o = ParseBeginOptions(bad);
    EXPECT_FALSE(o.ok()) << bad;
    if (!o.ok()) {
      EXPECT_EQ(o.status().code(), EINVAL) << bad;
      EXPECT_NE(o.status().message().find("user.ktmfs.tx.begin"), std::string::npos);
    }
  }
  EXPECT_FALSE(ParseBeginOptions(std::string_view("name=a\0b x", 10)).ok());
  EXPECT_FALSE(ParseBeginOptions("name=" + std::string(kMaxBeginNameBytes + 1, 'n')).ok());
  EXPECT_TRUE(ParseBeginOptions("name=" + std::string(kMaxBeginNameBytes, 'n')).ok());
}

}  // namespace
}  // namespace ktmfs::fs
