#include "fs/control/begin_options.h"

#include <gtest/gtest.h>

#include <climits>
#include <cstdint>

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

TEST(BeginOptionsTest, NumbersAtTheirLimits) {
  auto o = ParseBeginOptions("pid=2147483647 timeout=4294967295");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->pid, INT32_MAX);
  EXPECT_EQ(o->timeout_sec, UINT32_MAX);
  EXPECT_EQ(ParseBeginOptions("pid=007")->pid, 7);
  for (const char* bad :
       {"pid=2147483648", "pid=18446744073709551616", "timeout=99999999999999999999999",
        "pid=", "timeout=", "pid=0x10", "pid= 5", "pid=5.0", "timeout=1e3",
        "pid="
        ""}) {
    EXPECT_EQ(ParseBeginOptions(bad).status().code(), EINVAL) << bad;
  }
}

TEST(BeginOptionsTest, KeysAreExact) {
  for (const char* bad :
       {"Scope=tree", "scope =tree", "scope= tree", "name", "name=a b", "scope=tree,pid=5",
        "\"scope\"=tree", "scope=\"tree\"x", "=", "==", "scope=tree\npid=5"}) {
    EXPECT_EQ(ParseBeginOptions(bad).status().code(), EINVAL) << bad;
  }
  // Quoting a value changes nothing but what it may hold.
  EXPECT_EQ(ParseBeginOptions("scope=\"tree\"")->scope, Scope::kTree);
  EXPECT_EQ(ParseBeginOptions("name=")->name, "");
  EXPECT_EQ(ParseBeginOptions("name=\"\"")->name, "");
}

TEST(BeginOptionsTest, OnlyTrailingNulsAndNewlinesAreDropped) {
  auto o = ParseBeginOptions(std::string_view("scope=tree\n\0\n\0\0", 15));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->scope, Scope::kTree);
  EXPECT_FALSE(ParseBeginOptions(std::string_view("\0scope=tree", 11)).ok());
  EXPECT_FALSE(ParseBeginOptions(std::string_view("name=\"a\0b\"", 10)).ok());
  // Inside quotes a newline is part of the name; only an unquoted end is trimmed.
  EXPECT_EQ(ParseBeginOptions("name=\"a\n\"\n")->name, "a\n");
  // A backslash at the very end escapes nothing: the quote stays open.
  EXPECT_FALSE(ParseBeginOptions("name=\"a\\").ok());
}

TEST(BeginOptionsTest, FormatParsesBack) {
  BeginOptions none;
  EXPECT_EQ(FormatBeginOptions(none), "");
  BeginOptions all;
  all.scope = Scope::kThread;
  all.pid = 12;
  all.timeout_sec = UINT32_MAX;
  all.name = "a \"b\" \\c\td\n" + std::string(kMaxBeginNameBytes - 11, 'e');
  ASSERT_EQ(all.name.size(), kMaxBeginNameBytes);
  for (const BeginOptions& o : {none, all}) {
    auto back = ParseBeginOptions(FormatBeginOptions(o));
    ASSERT_TRUE(back.ok()) << FormatBeginOptions(o) << ": " << back.status().ToString();
    EXPECT_EQ(back->scope, o.scope);
    EXPECT_EQ(back->pid, o.pid);
    EXPECT_EQ(back->timeout_sec, o.timeout_sec);
    EXPECT_EQ(back->name, o.name);
  }
}

}  // namespace
}  // namespace ktmfs::fs
