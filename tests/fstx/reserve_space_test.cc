#include "fs/tx/reserve_space.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/xattr.h>

#include <cstring>

#include "fs/tx/overwrite_in_place.h"
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

TEST(ReserveApplySpace, LeavesTheFilesMtimeAlone) {
  TempDir dir;
  const std::string path = dir.path() + "/f";
  WriteFile(path, "x");
  const timespec old[2] = {{1000, 0}, {2000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), old, 0), 0);
  std::vector<Op> ops = {
      {.kind = OpKind::kWriteExtent,
       .object = IdOf(path),
       .path = "f",
       .offset = 0,
       .length = 1 << 20},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_TRUE(ReserveApplySpace(dir.path(), *plan).ok());
  // The commit may yet be refused: nothing of it may show (ext4 stamps mtime at fallocate).
  EXPECT_EQ(StatOf(path).st_mtim.tv_sec, 2000);
}

TEST(ReserveApplySpace, ReservesAHoleInsideTheFile) {
  TempDir dir;
  const std::string path = dir.path() + "/f";
  WriteFile(path, "x");
  ASSERT_EQ(::truncate(path.c_str(), 1 << 20), 0);
  std::vector<Op> ops = {
      {.kind = OpKind::kWriteExtent,
       .object = IdOf(path),
       .path = "f",
       .offset = 4096,
       .length = 64 << 10},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const blkcnt_t before = StatOf(path).st_blocks;
  ASSERT_TRUE(ReserveApplySpace(dir.path(), *plan).ok());
  const blkcnt_t after = StatOf(path).st_blocks;
  if (after == before) GTEST_SKIP() << "this filesystem does not allocate ahead";
  EXPECT_GE((after - before) * 512, 64 << 10);
}

TEST(ReserveApplySpace, LeavesAnOverwriteOfBlocksTheFileHasUntouched) {
  TempDir dir;
  const std::string path = dir.path() + "/f";
  WriteFile(path, std::string(8192, 'x'));
  std::vector<Op> ops = {
      {.kind = OpKind::kWriteData,
       .object = IdOf(path),
       .path = "f",
       .offset = 0,
       .data = std::string(4096, 'y')},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  if (!OverwritesInPlace(dir.path()))
    GTEST_SKIP() << dir.path() << " may copy on write: every overwrite is reserved there";
  // Read first: with fine-grained timestamps (ext4 and tmpfs since Linux 6.13) any change
  // after this stat shows in the ctime, and fallocate or futimens would be one.
  const struct stat before = StatOf(path);
  ASSERT_TRUE(ReserveApplySpace(dir.path(), *plan).ok());
  const struct stat after = StatOf(path);
  EXPECT_EQ(after.st_ctim.tv_sec, before.st_ctim.tv_sec);
  EXPECT_EQ(after.st_ctim.tv_nsec, before.st_ctim.tv_nsec);
  EXPECT_EQ(after.st_blocks, before.st_blocks);
}

TEST(OverwritesInPlace, OnlyForFilesystemsKnownToDoSo) {
  EXPECT_FALSE(OverwritesInPlace("/proc"));
  EXPECT_FALSE(OverwritesInPlace("/nonexistent/ktmfs"));
  struct statfs shm {};
  if (::statfs("/dev/shm", &shm) == 0 && shm.f_type == TMPFS_MAGIC) {
    EXPECT_TRUE(OverwritesInPlace("/dev/shm"));
  }
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

TEST(ReserveMetadataSpace, SetsAsideRoomForGrowingDirectoriesAndTheXattrsUntilApplyRemovesIt) {
  TempDir dir;
  ASSERT_EQ(::mkdir((dir.path() + "/d").c_str(), 0755), 0);
  WriteFile(dir.path() + "/f", "x");
  const ObjectId f = IdOf(dir.path() + "/f");
  std::vector<Op> ops = {
      {.kind = OpKind::kLink, .object = f, .path = "f", .path2 = "d/f2"},
      {.kind = OpKind::kSetxattr,
       .object = f,
       .path = "f",
       .name = "user.a",
       .value = std::string(5000, 'v')},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const std::string staging = dir.path() + "/staging";
  Status s = ReserveMetadataSpace(dir.path(), staging, *plan);
  ASSERT_TRUE(s.ok()) << s.ToString();
  // d, one block long, gains a name: full, it would become hashed, an index root and two
  // leaves (two blocks more); f's xattrs round up to two blocks.
  EXPECT_EQ(StatOf(staging + "/space").st_size, 4 * 4096);
  EXPECT_TRUE(RemovePlaceholder(staging).ok());
  struct stat st;
  EXPECT_NE(::stat((staging + "/space").c_str(), &st), 0);
  EXPECT_TRUE(RemovePlaceholder(staging).ok()) << "a second removal (a redo) is harmless";
}

// A block per directory was reserved, whatever the number of names: 1,500 creates in one
// directory, or 1,500 removals (each parked by apply), on a nearly full filesystem were decided,
// then applied in part and left pending on ENOSPC.
TEST(ReserveMetadataSpace, ManyNamesInOneDirectoryOrManyRemovalsTakeRoomForEveryEntry) {
  TempDir dir;
  ASSERT_EQ(::mkdir((dir.path() + "/d").c_str(), 0755), 0);
  std::vector<Op> creates;
  const std::string long_name(150, 'x');
  for (uint64_t i = 0; i < 1500; i++) {
    creates.push_back({.kind = OpKind::kCreate,
                       .object = ObjectId::New(i + 1),
                       .path = "d/" + long_name + std::to_string(i),
                       .staged_file = "n" + std::to_string(i + 1)});
  }
  auto plan = PlanApply(creates);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const std::string staging = dir.path() + "/staging";
  ASSERT_TRUE(ReserveMetadataSpace(dir.path(), staging, *plan).ok());
  // Each entry: 8 bytes and a name of about 154: at least that much, for every one.
  EXPECT_GE(StatOf(staging + "/space").st_size, 1500 * (8 + 154));
  ASSERT_TRUE(RemovePlaceholder(staging).ok());

  std::vector<Op> removals;
  for (int i = 0; i < 300; i++) {
    const std::string name = "f" + std::to_string(i);
    WriteFile(dir.path() + "/" + name, "x");
    removals.push_back(
        {.kind = OpKind::kUnlink, .object = IdOf(dir.path() + "/" + name), .path = name});
  }
  plan = PlanApply(removals);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_TRUE(ReserveMetadataSpace(dir.path(), staging, *plan).ok());
  // Parking names p<dev>.<ino>: 8 bytes and at least 4 of name each.
  EXPECT_GE(StatOf(staging + "/space").st_size, 300 * 12);
  EXPECT_GT(StatOf(staging + "/space").st_size, 4096);
}

// Each new name may land in another full leaf of a hashed directory, which then splits: a
// block per name, whatever their bytes. Reserving twice the entries' bytes left a commit of 193
// such names acknowledged and applied in part.
TEST(ReserveMetadataSpace, NamesThatMaySplitAFullLeafEachTakeABlock) {
  TempDir dir;
  ASSERT_EQ(::mkdir((dir.path() + "/e").c_str(), 0755), 0);
  const std::string long_name(240, 'y');
  for (int i = 0; i < 2000; i++)
    WriteFile(dir.path() + "/e/" + long_name + std::to_string(i), "");
  const uint64_t blocks = static_cast<uint64_t>(StatOf(dir.path() + "/e").st_size) / 4096;
  if (blocks < 150) GTEST_SKIP() << "directories here are not ext4's (" << blocks << " blocks)";
  std::vector<Op> creates;
  for (uint64_t i = 0; i < 193; i++) {
    creates.push_back({.kind = OpKind::kCreate,
                       .object = ObjectId::New(i + 1),
                       .path = "e/" + long_name + "new" + std::to_string(i),
                       .staged_file = "n" + std::to_string(i + 1)});
  }
  auto plan = PlanApply(creates);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const std::string staging = dir.path() + "/staging";
  ASSERT_TRUE(ReserveMetadataSpace(dir.path(), staging, *plan).ok());
  EXPECT_GE(StatOf(staging + "/space").st_size, 193 * 4096);
}

TEST(ReserveMetadataSpace, ContentOnlyTransactionsNeedNothing) {
  TempDir dir;
  WriteFile(dir.path() + "/f", "x");
  const ObjectId f = IdOf(dir.path() + "/f");
  std::vector<Op> ops = {
      {.kind = OpKind::kWriteData, .object = f, .path = "f", .offset = 0, .data = "y"},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_TRUE(ReserveMetadataSpace(dir.path(), dir.path() + "/staging", *plan).ok());
  struct stat st;
  EXPECT_NE(::stat((dir.path() + "/staging").c_str(), &st), 0) << "no staging made for nothing";
}

TEST(ProbeXattrs, RefusesWhatTheFilesystemCannotHoldAndLeavesNoProbe) {
  TempDir dir;
  WriteFile(dir.path() + "/f", "x");
  const ObjectId f = IdOf(dir.path() + "/f");
  if (::setxattr((dir.path() + "/f").c_str(), "user.probe", "1", 1, 0) != 0)
    GTEST_SKIP() << "no user xattrs on this filesystem: " << std::strerror(errno);
  std::vector<Op> ops = {
      {.kind = OpKind::kSetxattr, .object = f, .path = "f", .name = "user.small", .value = "v"},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const std::string staging = dir.path() + "/staging";
  Status s = ProbeXattrs(dir.path(), staging, *plan);
  EXPECT_TRUE(s.ok()) << s.ToString();
  // Bigger than any xattr value Linux allows (XATTR_SIZE_MAX is 64 KiB).
  ops.push_back({.kind = OpKind::kSetxattr,
                 .object = f,
                 .path = "f",
                 .name = "user.big",
                 .value = std::string(70000, 'v')});
  plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  s = ProbeXattrs(dir.path(), staging, *plan);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("user.big"), std::string::npos) << s.ToString();
  struct stat st;
  EXPECT_NE(::stat((staging + "/xattr-probe").c_str(), &st), 0);
}

}  // namespace
}  // namespace ktmfs::fstx
