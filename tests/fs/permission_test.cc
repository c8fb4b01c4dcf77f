// The daemon's own permission checks before a transaction takes a lock (fs/ops/permission.h): the
// kernel's rules, with made-up callers, so every branch is seen without users and mounts.
#include "fs/ops/permission.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <gtest/gtest.h>
#include <linux/capability.h>

#include "tests/fs/made_up_callers.h"

namespace ktmfs::fs {
namespace {

using made_up::Obj;
using made_up::Root;
using made_up::User;

TEST(Permission, ModeBitsByClass) {
  const struct stat f = Obj(S_IFREG | 0640, 0, 50);
  EXPECT_EQ(MayAccess(User(1000, 1000), f, kMayRead), EACCES);
  EXPECT_EQ(MayAccess(User(1000, 50), f, kMayRead), 0);
  EXPECT_EQ(MayAccess(User(1000, 1000, {50}), f, kMayRead), 0);
  EXPECT_EQ(MayAccess(User(1000, 50), f, kMayWrite), EACCES);
  // The owner class decides for the owner, even when the group bits would allow more.
  EXPECT_EQ(MayAccess(User(0, 50), Obj(S_IFREG | 0070, 0, 50), kMayRead), EACCES);
  EXPECT_EQ(MayAccess(Root(), f, kMayWrite), 0);
  // Execution needs an execute bit even for root; directories are searched with DAC override.
  EXPECT_EQ(MayAccess(Root(), f, kMayExec), EACCES);
  EXPECT_EQ(MayAccess(Root(), Obj(S_IFDIR | 0, 5, 5), kMayWrite | kMayExec), 0);
  // Reading and searching need only CAP_DAC_READ_SEARCH.
  const Requester reader = User(1000, 1000, {}, 1ull << CAP_DAC_READ_SEARCH);
  EXPECT_EQ(MayAccess(reader, f, kMayRead), 0);
  EXPECT_EQ(MayAccess(reader, f, kMayWrite), EACCES);
  EXPECT_EQ(MayAccess(reader, Obj(S_IFDIR | 0700, 0, 0), kMayExec), 0);
}

TEST(Permission, GroupsAreReadOnlyWhenNeeded) {
  int calls = 0;
  Requester who(
      1000, 1000,
      [&] {
        ++calls;
        return std::vector<gid_t>{};
      },
      [&] {
        ++calls;
        return uint64_t{0};
      });
  EXPECT_EQ(MayAccess(who, Obj(S_IFREG | 0600, 1000, 1000), kMayWrite), 0);
  EXPECT_EQ(calls, 0);
}

TEST(Permission, SetattrWithoutFieldsIsAllowedToAnyone) {
  struct stat attr {};
  EXPECT_EQ(MaySetattr(User(1000, 1000), Obj(S_IFREG | 0644, 0, 0), 0, attr, false), 0);
}

TEST(Permission, Chown) {
  const struct stat f = Obj(S_IFREG | 0644, 1000, 1000);
  struct stat attr {};
  attr.st_uid = 1000;
  attr.st_gid = 50;
  // The owner may "change" the uid to itself, and the group to one it is in.
  EXPECT_EQ(MaySetattr(User(1000, 1000), f, FUSE_SET_ATTR_UID, attr, false), 0);
  EXPECT_EQ(MaySetattr(User(1000, 1000), f, FUSE_SET_ATTR_GID, attr, false), EPERM);
  EXPECT_EQ(MaySetattr(User(1000, 1000, {50}), f, FUSE_SET_ATTR_GID, attr, false), 0);
  // Nobody else, not even to the same values, without CAP_CHOWN.
  attr.st_gid = 1000;
  EXPECT_EQ(MaySetattr(User(2000, 1000), f, FUSE_SET_ATTR_UID, attr, false), EPERM);
  EXPECT_EQ(MaySetattr(User(2000, 1000), f, FUSE_SET_ATTR_GID, attr, false), EPERM);
  attr.st_uid = 2000;
  EXPECT_EQ(MaySetattr(User(1000, 1000), f, FUSE_SET_ATTR_UID, attr, false), EPERM);
  EXPECT_EQ(MaySetattr(Root(), f, FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID, attr, false), 0);
}

TEST(Permission, ChmodAndTimes) {
  const struct stat f = Obj(S_IFREG | 0666, 0, 0);
  struct stat attr {};
  const Requester u = User(1000, 1000);
  EXPECT_EQ(MaySetattr(u, f, FUSE_SET_ATTR_MODE, attr, false), EPERM);
  EXPECT_EQ(MaySetattr(u, Obj(S_IFREG | 0, 1000, 1000), FUSE_SET_ATTR_MODE, attr, false), 0);
  // utimes(NULL): anyone who may write; explicit times: the owner only.
  const int touch =
      FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW;
  EXPECT_EQ(MaySetattr(u, f, touch, attr, false), 0);
  EXPECT_EQ(MaySetattr(u, Obj(S_IFREG | 0644, 0, 0), touch, attr, false), EACCES);
  EXPECT_EQ(MaySetattr(u, f, FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME, attr, false), EPERM);
  // One time to now and the other left alone counts as setting times.
  EXPECT_EQ(MaySetattr(u, f, FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW, attr, false), EPERM);
  EXPECT_EQ(MaySetattr(u, f, FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW, attr, true), 0);
  EXPECT_EQ(
      MaySetattr(User(1000, 1000, {}, 1ull << CAP_FOWNER), f, FUSE_SET_ATTR_MODE, attr, false), 0);
}

TEST(Permission, AWriterMayClearTheSetIdBits) {
  // The kernel clears them on a write or truncate by another user, as a chmod from the writer.
  const struct stat f = Obj(S_IFREG | 06777, 0, 0);
  const Requester u = User(1000, 1000);
  struct stat attr {};
  attr.st_mode = S_IFREG | 0777;
  EXPECT_EQ(MaySetattr(u, f, FUSE_SET_ATTR_MODE, attr, false), 0);
  attr.st_mode = S_IFREG | 02777;
  EXPECT_EQ(MaySetattr(u, f, FUSE_SET_ATTR_MODE, attr, false), 0);
  // Not other bits, not setting set-id bits, not without write permission (except through a
  // handle opened for writing), and not the same mode again.
  attr.st_mode = S_IFREG | 0755;
  EXPECT_EQ(MaySetattr(u, f, FUSE_SET_ATTR_MODE, attr, false), EPERM);
  attr.st_mode = S_IFREG | 06777;
  EXPECT_EQ(MaySetattr(u, f, FUSE_SET_ATTR_MODE, attr, false), EPERM);
  attr.st_mode = S_IFREG | 04777;
  EXPECT_EQ(MaySetattr(u, Obj(S_IFREG | 0777, 0, 0), FUSE_SET_ATTR_MODE, attr, false), EPERM);
  attr.st_mode = S_IFREG | 0755;
  EXPECT_EQ(MaySetattr(u, Obj(S_IFREG | 06755, 0, 0), FUSE_SET_ATTR_MODE, attr, false), EPERM);
  EXPECT_EQ(MaySetattr(u, Obj(S_IFREG | 06755, 0, 0), FUSE_SET_ATTR_MODE, attr, true), 0);
}

TEST(Permission, TruncateNeedsWriteUnlessThroughAHandle) {
  struct stat attr {};
  const struct stat f = Obj(S_IFREG | 0444, 1000, 1000);
  EXPECT_EQ(MaySetattr(User(1000, 1000), f, FUSE_SET_ATTR_SIZE, attr, false), EACCES);
  EXPECT_EQ(MaySetattr(User(1000, 1000), f, FUSE_SET_ATTR_SIZE, attr, true), 0);
  EXPECT_EQ(MaySetattr(Root(), f, FUSE_SET_ATTR_SIZE, attr, false), 0);
}

TEST(Permission, EntriesAndTheStickyBit) {
  const struct stat dir = Obj(S_IFDIR | 0755, 0, 0);
  const struct stat sticky = Obj(S_IFDIR | 01777, 0, 0);
  const struct stat roots = Obj(S_IFREG | 0644, 0, 0);
  const struct stat mine = Obj(S_IFREG | 0644, 1000, 1000);
  const Requester u = User(1000, 1000);
  EXPECT_EQ(MayChangeEntry(u, dir, nullptr), EACCES);
  EXPECT_EQ(MayChangeEntry(u, Obj(S_IFDIR | 0777, 0, 0), &roots), 0);
  EXPECT_EQ(MayChangeEntry(u, Obj(S_IFDIR | 0776, 0, 0), nullptr), EACCES);  // no search
  EXPECT_EQ(MayChangeEntry(u, sticky, nullptr), 0);
  EXPECT_EQ(MayChangeEntry(u, sticky, &roots), EPERM);
  EXPECT_EQ(MayChangeEntry(u, sticky, &mine), 0);
  EXPECT_EQ(MayChangeEntry(u, Obj(S_IFDIR | 01777, 1000, 1000), &roots), 0);  // its directory
  EXPECT_EQ(MayChangeEntry(Root(), sticky, &mine), 0);
}

TEST(Permission, ProtectedHardlinks) {
  const Requester u = User(1000, 1000);
  EXPECT_EQ(MayLink(u, Obj(S_IFREG | 0644, 0, 0), false), 0);
  EXPECT_EQ(MayLink(u, Obj(S_IFREG | 0644, 0, 0), true), EPERM);
  EXPECT_EQ(MayLink(u, Obj(S_IFREG | 0666, 0, 0), true), 0);
  EXPECT_EQ(MayLink(u, Obj(S_IFREG | 04777, 0, 0), true), EPERM);
  EXPECT_EQ(MayLink(u, Obj(S_IFREG | 02777, 0, 0), true), EPERM);
  EXPECT_EQ(MayLink(u, Obj(S_IFREG | 02767, 0, 0), true), 0);  // setgid without group exec
  EXPECT_EQ(MayLink(u, Obj(S_IFCHR | 0666, 0, 0), true), EPERM);
  EXPECT_EQ(MayLink(u, Obj(S_IFREG | 0, 1000, 1000), true), 0);
}

TEST(Permission, XattrNamespaces) {
  const Requester u = User(1000, 1000);
  const struct stat mine = Obj(S_IFREG | 0644, 1000, 1000);
  const struct stat roots = Obj(S_IFREG | 0644, 0, 0);
  EXPECT_EQ(MayChangeXattr(u, mine, "user.x"), 0);
  EXPECT_EQ(MayChangeXattr(u, roots, "user.x"), EACCES);
  EXPECT_EQ(MayChangeXattr(u, Obj(S_IFREG | 0666, 0, 0), "user.x"), 0);
  EXPECT_EQ(MayChangeXattr(u, Obj(S_IFLNK | 0777, 1000, 1000), "user.x"), EPERM);
  EXPECT_EQ(MayChangeXattr(u, Obj(S_IFDIR | 01777, 0, 0), "user.x"), EPERM);
  EXPECT_EQ(MayChangeXattr(u, Obj(S_IFDIR | 01777, 1000, 0), "user.x"), 0);
  EXPECT_EQ(MayChangeXattr(u, mine, "trusted.x"), EPERM);
  EXPECT_EQ(MayChangeXattr(u, mine, "security.x"), EPERM);
  EXPECT_EQ(MayChangeXattr(u, mine, "security.capability"), EPERM);
  EXPECT_EQ(MayChangeXattr(Root(), roots, "trusted.x"), 0);
  EXPECT_EQ(MayChangeXattr(User(0, 0, {}, 1ull << CAP_SETFCAP), roots, "security.capability"), 0);
  EXPECT_EQ(MayChangeXattr(User(0, 0, {}, 1ull << CAP_SETFCAP), roots, "security.x"), EPERM);
}

TEST(Permission, ParseCapEff) {
  EXPECT_EQ(ParseCapEff("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n"),
            std::optional<uint64_t>(0x1ffffffffffull));
  EXPECT_EQ(ParseCapEff("Name:\tx\nCapEff:\t0000000000000000\n"), std::optional<uint64_t>(0));
  EXPECT_EQ(ParseCapEff("Name:\tx\n"), std::nullopt);
}

}  // namespace
}  // namespace ktmfs::fs
