#include "fs/tx/reserve_space.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "tests/fstx/temp_dir.h"

namespace ktmfs::fstx {
namespace {

ObjectId IdOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return ObjectId::Existing(st.st_dev, st.st_ino);
}

struct stat StatOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st;
}

TEST(ReserveApplySpace, AllocatesWhatApplyWritesWithoutChangingSizes) {
  TempDir dir;
  WriteFile(dir.path() + "/f", "x");
  const ObjectId f = IdOf(dir.path() + "/f");
  std::vector<Op> ops = {
      {.kind = OpKind::kWriteExtent, .object = f, .path = "f", .offset = 0, .length = 1 << 20},
      {.kind = OpKind::kWriteData, .object = f, .path = "f", .offset = 2 << 20, .data = "y"},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const blkcnt_t before = StatOf(dir.path() + "/f").st_blocks;
  Status s = ReserveApplySpace(dir.path(), *plan);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const struct stat after = StatOf(dir.path() + "/f");
  EXPECT_EQ(after.st_size, 1);
  // tmpfs and ext4 both allocate; a filesystem without fallocate reserves nothing.
  if (after.st_blocks == before) GTEST_SKIP() << "this filesystem does not allocate ahead";
  EXPECT_GE(after.st_blocks * 512, 1 << 20);
}

TEST(ReserveApplySpace, LeavesAnotherObjectAtTheNameAlone) {
  TempDir dir;
  WriteFile(dir.path() + "/f", "x");
  const ObjectId f = IdOf(dir.path() + "/f");
  // Another file now holds the name: not the object the transaction changed.
  ASSERT_EQ(::rename((dir.path() + "/f").c_str(), (dir.path() + "/g").c_str()), 0);
  WriteFile(dir.path() + "/f", "z");
  std::vector<Op> ops = {
      {.kind = OpKind::kWriteExtent, .object = f, .path = "f", .offset = 0, .length = 1 << 20},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const blkcnt_t before = StatOf(dir.path() + "/f").st_blocks;
  EXPECT_TRUE(ReserveApplySpace(dir.path(), *plan).ok());
  EXPECT_EQ(StatOf(dir.path() + "/f").st_blocks, before);
}

TEST(ReserveApplySpace, NewFilesNeedNothing) {
  TempDir dir;
  std::vector<Op> ops = {
      {.kind = OpKind::kCreate, .object = ObjectId::New(1), .path = "n", .staged_file = "n1"},
      {.kind = OpKind::kWriteExtent,
       .object = ObjectId::New(1),
       .path = "n",
       .offset = 0,
       .length = 1 << 30},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_TRUE(ReserveApplySpace(dir.path(), *plan).ok());
}

}  // namespace
}  // namespace ktmfs::fstx
