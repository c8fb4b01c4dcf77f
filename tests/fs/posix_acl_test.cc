// The kernel's ACL rules as the daemon applies them inside a transaction (fs/ops/posix_acl.h),
// checked against what ext4 does for the same ACLs (getfacl output noted beside each case).
#include "fs/ops/posix_acl.h"

#include <errno.h>
#include <gtest/gtest.h>
#include <linux/capability.h>

#include "fs/ops/permission.h"
#include "tests/fs/made_up_callers.h"

namespace ktmfs::fs {
namespace {

using E = PosixAcl::Entry;
constexpr uint32_t kNone = 0xffffffffu;

std::string Xattr(std::vector<E> entries) {
  std::string v = {2, 0, 0, 0};
  for (const E& e : entries) {
    for (int i = 0; i < 2; ++i)
      v.push_back(static_cast<char>((e.tag >> (8 * i)) & 0xff));
    for (int i = 0; i < 2; ++i)
      v.push_back(static_cast<char>((e.perm >> (8 * i)) & 0xff));
    for (int i = 0; i < 4; ++i)
      v.push_back(static_cast<char>((e.id >> (8 * i)) & 0xff));
  }
  return v;
}

// user::rwx user:1001:rw- group::r-x mask::rwx other::r--
std::vector<E> NamedUser() {
  return {{PosixAcl::kUserObj, 7, kNone},
          {PosixAcl::kUser, 6, 1001},
          {PosixAcl::kGroupObj, 5, kNone},
          {PosixAcl::kMask, 7, kNone},
          {PosixAcl::kOther, 4, kNone}};
}

using made_up::Obj;
using made_up::User;

TEST(PosixAcl, ParsesAndSerializesTheXattrFormat) {
  const std::string v = Xattr(NamedUser());
  auto acl = PosixAcl::Parse(v);
  ASSERT_TRUE(acl);
  EXPECT_EQ(acl->entries().size(), 5u);
  EXPECT_EQ(acl->Serialize(), v);
  // A header alone is an ACL of nothing: removal.
  auto none = PosixAcl::Parse(Xattr({}));
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
}

TEST(PosixAcl, RefusesWhatTheKernelRefuses) {
  EXPECT_FALSE(PosixAcl::Parse(""));
  EXPECT_FALSE(PosixAcl::Parse(std::string("\1\0\0\0", 4)));        // version 1
  EXPECT_FALSE(PosixAcl::Parse(Xattr(NamedUser()).substr(0, 10)));  // torn entry
  auto no_mask = NamedUser();
  no_mask.erase(no_mask.begin() + 3);  // a named user needs a mask
  EXPECT_FALSE(PosixAcl::Parse(Xattr(no_mask)));
  auto unsorted = NamedUser();
  std::swap(unsorted[0], unsorted[1]);
  EXPECT_FALSE(PosixAcl::Parse(Xattr(unsorted)));
  auto bad_perm = NamedUser();
  bad_perm[4].perm = 8;
  EXPECT_FALSE(PosixAcl::Parse(Xattr(bad_perm)));
  // Named entries need not be sorted among themselves: the kernel stores such ACLs too.
  std::vector<E> two_users = NamedUser();
  two_users.insert(two_users.begin() + 1, E{PosixAcl::kUser, 4, 1005});
  EXPECT_TRUE(PosixAcl::Parse(Xattr(two_users)));
  // The minimal ACL needs no mask.
  EXPECT_TRUE(PosixAcl::Parse(Xattr({{PosixAcl::kUserObj, 6, kNone},
                                     {PosixAcl::kGroupObj, 4, kNone},
                                     {PosixAcl::kOther, 0, kNone}})));
}

TEST(PosixAcl, EquivalentModeTakesTheMaskAsGroupBits) {
  mode_t perms = 0;
  EXPECT_FALSE(PosixAcl::Parse(Xattr(NamedUser()))->EquivalentToMode(&perms));
  EXPECT_EQ(perms, 0774u);
  EXPECT_TRUE(PosixAcl::Parse(Xattr({{PosixAcl::kUserObj, 6, kNone},
                                     {PosixAcl::kGroupObj, 4, kNone},
                                     {PosixAcl::kOther, 0, kNone}}))
                  ->EquivalentToMode(&perms));
  EXPECT_EQ(perms, 0640u);
}

TEST(PosixAcl, CreateNarrowsTheDefaultByTheRequestedMode) {
  // open(O_CREAT, 0666) under default "user::rwx user:1001:rw- group::r-x mask::rwx
  // other::r--": ext4 gives mode 0664 and "user::rw- user:1001:rw- group::r-x mask::rw-
  // other::r--" (umask ignored).
  auto acl = *PosixAcl::Parse(Xattr(NamedUser()));
  mode_t mode = S_IFREG | 0666;
  EXPECT_TRUE(acl.CreateMasq(&mode));
  EXPECT_EQ(mode, S_IFREG | 0664u);
  const auto& e = acl.entries();
  EXPECT_EQ(e[0].perm, 6);
  EXPECT_EQ(e[1].perm, 6);
  EXPECT_EQ(e[2].perm, 5);
  EXPECT_EQ(e[3].perm, 6);
  EXPECT_EQ(e[4].perm, 4);
  // A default that says no more than a mode leaves no access ACL behind.
  auto minimal = *PosixAcl::Parse(Xattr({{PosixAcl::kUserObj, 7, kNone},
                                         {PosixAcl::kGroupObj, 0, kNone},
                                         {PosixAcl::kOther, 0, kNone}}));
  mode = S_IFDIR | 0777;
  EXPECT_FALSE(minimal.CreateMasq(&mode));
  EXPECT_EQ(mode, S_IFDIR | 0700u);
}

TEST(PosixAcl, ChmodSetsTheMaskNotTheOwningGroup) {
  auto acl = *PosixAcl::Parse(Xattr(NamedUser()));
  acl.Chmod(0750);
  const auto& e = acl.entries();
  EXPECT_EQ(e[0].perm, 7);
  EXPECT_EQ(e[1].perm, 6);  // named entries stay
  EXPECT_EQ(e[2].perm, 5);  // the owning group stays
  EXPECT_EQ(e[3].perm, 5);  // the mask takes the group bits
  EXPECT_EQ(e[4].perm, 0);
}

TEST(PosixAcl, PermissionFollowsNamedEntriesAndTheMask) {
  const auto acl = *PosixAcl::Parse(Xattr(NamedUser()));
  const struct stat f = Obj(S_IFREG | 0774, 1000, 50);
  EXPECT_EQ(acl.Permission(User(1001, 1001), f, kMayWrite), 0);
  EXPECT_EQ(acl.Permission(User(1001, 1001), f, kMayExec), EACCES);
  EXPECT_EQ(acl.Permission(User(1002, 50), f, kMayWrite), EACCES);  // group r-x
  EXPECT_EQ(acl.Permission(User(1002, 1002), f, kMayRead), 0);      // other r--
  // Through MayAccess: the ACL grants the named user what the mode's other bits do not.
  EXPECT_EQ(MayAccess(User(1001, 1001), f, kMayWrite, &acl), 0);
  EXPECT_EQ(MayAccess(User(1001, 1001), f, kMayWrite), EACCES);
  // A mask of nothing (group bits 0) shuts the named entries out, as the kernel skips the ACL.
  auto masked = acl;
  masked.Chmod(0704);
  const struct stat g = Obj(S_IFREG | 0704, 1000, 50);
  EXPECT_EQ(MayAccess(User(1001, 1001), g, kMayWrite, &masked), EACCES);
  EXPECT_EQ(MayAccess(User(1001, 1001), g, kMayRead, &masked), 0);
}

TEST(PosixAcl, SettingAnAclClearsSetgidForANonMember) {
  const auto acl = *PosixAcl::Parse(Xattr(NamedUser()));
  const struct stat f = Obj(S_IFREG | 02755, 1000, 50);
  bool equivalent = true;
  EXPECT_EQ(ModeAfterAclSet(User(1000, 1000), f, acl, &equivalent), 0774u);
  EXPECT_FALSE(equivalent);
  EXPECT_EQ(ModeAfterAclSet(User(1000, 1000, {50}), f, acl, &equivalent), 02774u);
  EXPECT_EQ(ModeAfterAclSet(User(1000, 1000, {}, uint64_t{1} << CAP_FSETID), f, acl, &equivalent),
            02774u);
}

TEST(PosixAcl, OnlyTheOwnerSetsAnAcl) {
  const struct stat f = Obj(S_IFREG | 0666, 1000, 50);
  EXPECT_EQ(MayChangeXattr(User(1000, 1000), f, kAclAccessXattr), 0);
  EXPECT_EQ(MayChangeXattr(User(1001, 50), f, kAclAccessXattr), EPERM);
  EXPECT_EQ(MayChangeXattr(User(1001, 50, {}, uint64_t{1} << CAP_FOWNER), f, kAclDefaultXattr), 0);
}

}  // namespace
}  // namespace ktmfs::fs
