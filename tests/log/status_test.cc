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

// A failure's code is what the kernel gets: an errno of 0 (a call that failed without setting
// errno) must not turn an error into OK, and liburing's negative errnos come out positive.
TEST(StatusTest, ErrorCodeIsAlwaysAPositiveErrno) {
  Status zero = Status::Error(0, "read of log.blf failed");
  EXPECT_FALSE(zero.ok());
  EXPECT_EQ(zero.code(), EIO);
  EXPECT_EQ(zero.message(), "read of log.blf failed");
  EXPECT_EQ(Status::Error(-ENOSPC, "fallocate").code(), ENOSPC);
  EXPECT_EQ(Status::Error(EROFS, "commit").code(), EROFS);
}

TEST(StatusTest, AnnotatePrefixesContextOnlyOnError) {
  EXPECT_TRUE(Status::Ok().Annotate("ctx").ok());
  Status s = Status::IoError("short read").Annotate("container 3");
  EXPECT_EQ(s.message(), "container 3: short read");
  EXPECT_EQ(s.code(), EIO);
}

// A full log and a full filesystem both reach the kernel as ENOSPC, but the daemon tells them
// apart (which transaction to end, which message to throttle): only the log's says so, also
// once annotated. Before, every ENOSPC counted as a full log.
TEST(StatusTest, OnlyTheLogsOwnENOSPCIsLogFull) {
  Status full = Status::LogFull("log full: 40 of 64 KiB").Annotate("stream fs1");
  EXPECT_TRUE(full.IsLogFull());
  EXPECT_EQ(full.code(), ENOSPC);
  EXPECT_EQ(full.message(), "stream fs1: log full: 40 of 64 KiB");
  Status disk = Status::FromErrno(ENOSPC, "write staged file").Annotate("tx 1");
  EXPECT_EQ(disk.code(), ENOSPC);
  EXPECT_FALSE(disk.IsLogFull());
  EXPECT_FALSE(Status::Ok().IsLogFull());
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
