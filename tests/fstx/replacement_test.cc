#include "fs/tx/replacement.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "tests/fstx/temp_dir.h"

namespace ktmfs::fstx {
namespace {

const ObjectId kFile = ObjectId::Existing(1, 2);
const ObjectId kOther = ObjectId::Existing(1, 3);

Op Data(const ObjectId& id, uint64_t offset, const std::string& data) {
  return {.kind = OpKind::kWriteData, .object = id, .offset = offset, .data = data};
}
Op Extent(const ObjectId& id, uint64_t offset, uint64_t length, const std::string& file = "e1.2") {
  return {.kind = OpKind::kWriteExtent,
          .object = id,
          .staged_file = file,
          .offset = offset,
          .length = length};
}
Op Size(const ObjectId& id, uint64_t size) {
  return {.kind = OpKind::kSetattr, .object = id, .set_mask = kSetSize, .size = size};
}

TEST(FindReplacement, TruncatedAndWrittenAgainIsWhole) {
  std::vector<Op> ops{Size(kFile, 0), Data(kFile, 0, "new"), Data(kOther, 0, "x")};
  auto r = FindReplacement(ops, kFile, 100);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->data_ops.size(), 2u);  // its own only, in order
  EXPECT_EQ(r->data_ops[0]->kind, OpKind::kSetattr);
  EXPECT_TRUE(r->staged_file.empty());
}

TEST(FindReplacement, AnOverwriteOfEveryOldByteIsWhole) {
  EXPECT_TRUE(FindReplacement({Data(kFile, 0, "abc"), Data(kFile, 3, "de")}, kFile, 5));
  // With a staged extent, the staged file is the content.
  auto r = FindReplacement({Extent(kFile, 0, 70000), Data(kFile, 70000, "tail")}, kFile, 70004);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->staged_file, "e1.2");
}

TEST(FindReplacement, AnOldByteLeftMeansInPlace) {
  EXPECT_FALSE(FindReplacement({Data(kFile, 1, "abcd")}, kFile, 5));  // byte 0
  EXPECT_FALSE(FindReplacement({Data(kFile, 0, "ab"), Data(kFile, 10, "x")}, kFile, 5));
  // Truncated below the gap first: bytes 3.. are no longer the old ones.
  EXPECT_TRUE(
      FindReplacement({Size(kFile, 3), Data(kFile, 0, "abc"), Data(kFile, 10, "x")}, kFile, 5));
  // A size grown by an earlier run only makes it stricter.
  EXPECT_FALSE(FindReplacement({Data(kFile, 0, "abcde")}, kFile, 9));
}

TEST(FindReplacement, NothingChangedOrTwoStagedFilesIsNone) {
  EXPECT_FALSE(FindReplacement({Data(kOther, 0, "x")}, kFile, 0));
  EXPECT_FALSE(
      FindReplacement({Extent(kFile, 0, 70000, "e1.2"), Extent(kFile, 70000, 10, "x")}, kFile, 10));
}

TEST(CopyOwnerModeXattrs, CarriesModeAndXattrsAndDropsTheRest) {
  TempDir tmp;
  const std::string from = tmp.path() + "/old", to = tmp.path() + "/new";
  WriteFile(from, "old");
  WriteFile(to, "new");
  ASSERT_EQ(::chmod(from.c_str(), 0640), 0);
  if (::setxattr(from.c_str(), "user.kept", "1", 1, 0) != 0) GTEST_SKIP() << "no user xattrs here";
  ASSERT_EQ(::setxattr(to.c_str(), "user.stale", "2", 1, 0), 0);
  struct stat st;
  ASSERT_EQ(::stat(from.c_str(), &st), 0);
  int fd = ::open(to.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  Status s = CopyOwnerModeXattrs(from.c_str(), st, fd, from);
  ::close(fd);
  ASSERT_TRUE(s.ok()) << s.ToString();
  struct stat after;
  ASSERT_EQ(::stat(to.c_str(), &after), 0);
  EXPECT_EQ(after.st_mode & 07777, 0640u);
  EXPECT_EQ(after.st_atim.tv_sec, st.st_atim.tv_sec);
  EXPECT_EQ(::getxattr(to.c_str(), "user.kept", nullptr, 0), 1);
  EXPECT_LT(::getxattr(to.c_str(), "user.stale", nullptr, 0), 0);
}

}  // namespace
}  // namespace ktmfs::fstx
