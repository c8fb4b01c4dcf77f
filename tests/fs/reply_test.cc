// The replies operations return (fs/fuse/reply.h): the rules they carry for the caller's buffer.
#include "fs/fuse/reply.h"

#include <errno.h>
#include <gtest/gtest.h>

namespace ktmfs::fs {
namespace {

TEST(ReplyTest, XattrBytesFollowWhatTheCallerAskedFor) {
  const std::vector<char> value = {'a', 'b', 'c'};
  // Asked with 0: the size, no error; with room: the bytes; with too little: ERANGE.
  EXPECT_EQ(Reply::XattrBytes(value, 0).error(), 0);
  EXPECT_EQ(Reply::XattrBytes(value, 3).error(), 0);
  EXPECT_EQ(Reply::XattrBytes(value, 2).error(), ERANGE);
  EXPECT_EQ(Reply::XattrBytes(std::string("abc"), 2).error(), ERANGE);
  EXPECT_EQ(Reply::XattrBytes(std::vector<char>{}, 0).error(), 0);
}

TEST(ReplyTest, ErrorCarriesItsErrnoAndOkNone) {
  EXPECT_EQ(Reply::Error(ESTALE).error(), ESTALE);
  EXPECT_EQ(Reply::Ok().error(), 0);
  struct stat st {};
  EXPECT_EQ(Reply::Attr(st, 1.0).error(), 0);
  EXPECT_EQ(Reply::Readlink("target").error(), 0);
}

}  // namespace
}  // namespace ktmfs::fs
