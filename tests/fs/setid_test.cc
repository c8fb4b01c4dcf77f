// The set-id rule the daemon applies where the kernel's FUSE code leaves bits set (fs/ops/setid.h),
// against what ext4 did on Linux 6.18 (measured as root and as an unprivileged user; regress
// generic/005 and 006 run the same cases through a mount).
#include "fs/ops/setid.h"

#include <gtest/gtest.h>

namespace ktmfs::fs {
namespace {

constexpr gid_t kFileGroup = 0;

SetidCaller Stranger() {
  return SetidCaller{false, 65534, {}};
}  // not in the group, no caps
SetidCaller Member() {
  return SetidCaller{false, 65534, {kFileGroup}};
}
SetidCaller Root() {
  return SetidCaller{true, 0, {}};
}

mode_t After(mode_t mode, const SetidCaller& c, SetidChange change) {
  return (mode & ~SetidBitsToDrop(S_IFREG | mode, kFileGroup, c, change)) & 07777;
}

TEST(SetidTest, WriteByAnotherUserDropsBothWhateverGroupExecute) {
  EXPECT_EQ(After(06666, Stranger(), SetidChange::kWrite), 0666u);
  EXPECT_EQ(After(02666, Stranger(), SetidChange::kWrite), 0666u);
  EXPECT_EQ(After(02676, Stranger(), SetidChange::kWrite), 0676u);
  EXPECT_EQ(After(04666, Stranger(), SetidChange::kWrite), 0666u);
  EXPECT_EQ(After(06777, Stranger(), SetidChange::kWrite), 0777u);
}

TEST(SetidTest, GroupMemberKeepsSetgidWithoutGroupExecute) {
  EXPECT_EQ(After(06666, Member(), SetidChange::kWrite), 02666u);
  EXPECT_EQ(After(02666, Member(), SetidChange::kWrite), 02666u);
  EXPECT_EQ(After(02676, Member(), SetidChange::kWrite), 0676u);
}

TEST(SetidTest, CapFsetidKeepsBothOnWriteButNotOnChown) {
  EXPECT_EQ(After(06666, Root(), SetidChange::kWrite), 06666u);
  EXPECT_EQ(After(06777, Root(), SetidChange::kWrite), 06777u);
  EXPECT_EQ(After(06777, Root(), SetidChange::kChown), 0777u);
  EXPECT_EQ(After(02666, Root(), SetidChange::kChown), 02666u);
}

TEST(SetidTest, ChownByOwnerOutsideTheGroup) {
  EXPECT_EQ(After(06777, Stranger(), SetidChange::kChown), 0777u);
  EXPECT_EQ(After(02666, Stranger(), SetidChange::kChown), 0666u);
  EXPECT_EQ(After(02676, Stranger(), SetidChange::kChown), 0676u);
  EXPECT_EQ(After(02666, Member(), SetidChange::kChown), 02666u);
}

TEST(SetidTest, ChmodKeepsSetgidOnlyInTheGroupOrPrivileged) {
  EXPECT_EQ(SetidBitsToDrop(02755, kFileGroup, Stranger(), SetidChange::kChmod), mode_t{S_ISGID});
  EXPECT_EQ(SetidBitsToDrop(02755, kFileGroup, Member(), SetidChange::kChmod), 0u);
  EXPECT_EQ(SetidBitsToDrop(02755, kFileGroup, Root(), SetidChange::kChmod), 0u);
  EXPECT_EQ(SetidBitsToDrop(04755, kFileGroup, Stranger(), SetidChange::kChmod), 0u);
}

TEST(SetidTest, OnlyRegularFilesLoseBitsOnWriteAndChown) {
  EXPECT_EQ(SetidBitsToDrop(S_IFDIR | 02775, kFileGroup, Stranger(), SetidChange::kChown), 0u);
  EXPECT_EQ(SetidBitsToDrop(S_IFDIR | 02775, kFileGroup, Stranger(), SetidChange::kWrite), 0u);
}

}  // namespace
}  // namespace ktmfs::fs
