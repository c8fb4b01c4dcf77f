#include "log/status.h"

#include <gtest/gtest.h>

namespace ktmfs {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(StatusTest, ErrorKeepsCodeAndMessage) {
  Status s = Status::Corruption("stream tm: LSN 0x1000: checksum mismatch");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_EQ(s.code(), EUCLEAN);
  EXPECT_NE(s.ToString().find("LSN 0x1000"), std::string::npos);
}

TEST(StatusTest, AnnotatePrefixesContextOnlyOnError) {
  EXPECT_TRUE(Status::Ok().Annotate("ctx").ok());
  Status s = Status::IoError("short read").Annotate("container 3");
  EXPECT_EQ(s.message(), "container 3: short read");
  EXPECT_EQ(s.code(), EIO);
}

Result<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument("odd");
  return x / 2;
}

Status UseHalf(int x, int* out) {
  Result<int> r = Half(x);
  KTMFS_RETURN_IF_ERROR(r.status());
  *out = *r;
  return Status::Ok();
}

TEST(ResultTest, ValueOrStatus) {
  int out = 0;
  EXPECT_TRUE(UseHalf(8, &out).ok());
  EXPECT_EQ(out, 4);
  Status s = UseHalf(3, &out);
  EXPECT_EQ(s.code(), EINVAL);
  EXPECT_EQ(out, 4);
}

}  // namespace
}  // namespace ktmfs
