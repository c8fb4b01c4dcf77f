#include "fs/control/user_quota.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>

namespace ktmfs::fs {
namespace {

TEST(UserQuota, TransactionsPastTheCapAreRefusedForThatUserOnly) {
  UserQuota q(UserCaps{2, 0});
  EXPECT_TRUE(q.TakeTransaction(1000).ok());
  EXPECT_TRUE(q.TakeTransaction(1000).ok());
  Status third = q.TakeTransaction(1000);
  EXPECT_EQ(third.code(), EMFILE);
  EXPECT_NE(third.message().find("max_user_transactions"), std::string::npos);
  EXPECT_EQ(q.UsageOf(1000).transactions, 2u);
  EXPECT_TRUE(q.TakeTransaction(1001).ok());  // another user goes on
  q.GiveTransaction(1000);
  EXPECT_TRUE(q.TakeTransaction(1000).ok());
}

TEST(UserQuota, RootIsNotCapped) {
  UserQuota q(UserCaps{1, 10});
  EXPECT_TRUE(q.TakeTransaction(0).ok());
  EXPECT_TRUE(q.TakeTransaction(0).ok());
  EXPECT_TRUE(q.TakeMemory(0, 1000).ok());
}

TEST(UserQuota, MemoryPastTheCapIsRefusedAndNothingCounted) {
  UserQuota q(UserCaps{0, 100});
  EXPECT_TRUE(q.TakeMemory(7, 60).ok());
  Status s = q.TakeMemory(7, 41);
  EXPECT_EQ(s.code(), ENOSPC);
  EXPECT_EQ(q.UsageOf(7).memory, 60u);
  EXPECT_TRUE(q.TakeMemory(7, 40).ok());
  q.GiveMemory(7, 100);
  EXPECT_EQ(q.UsageOf(7).memory, 0u);
  EXPECT_TRUE(q.TakeMemory(8, 100).ok());
}

TEST(UserQuota, ZeroMeansNoCap) {
  UserQuota q(UserCaps{0, 0, 0});
  for (int i = 0; i < 1000; i++) {
    ASSERT_TRUE(q.TakeTransaction(5).ok());
    ASSERT_TRUE(q.TakeDescriptor(5).ok());
  }
  EXPECT_TRUE(q.TakeMemory(5, 1ull << 40).ok());
}

TEST(UserQuota, DescriptorsPastTheCapAreRefusedForThatUserOnly) {
  UserQuota q(UserCaps{0, 0, 2});
  EXPECT_TRUE(q.TakeDescriptor(1000).ok());
  EXPECT_TRUE(q.TakeDescriptor(1000).ok());
  Status third = q.TakeDescriptor(1000);
  EXPECT_EQ(third.code(), EMFILE);
  EXPECT_NE(third.message().find("max_user_descriptors"), std::string::npos);
  EXPECT_EQ(q.UsageOf(1000).descriptors, 2u);
  EXPECT_TRUE(q.TakeDescriptor(1001).ok());
  EXPECT_TRUE(q.TakeDescriptor(0).ok());
  EXPECT_TRUE(q.TakeDescriptor(0).ok());
  EXPECT_TRUE(q.TakeDescriptor(0).ok());
  q.GiveDescriptors(1000, 2);
  EXPECT_EQ(q.UsageOf(1000).descriptors, 0u);
  EXPECT_TRUE(q.TakeDescriptor(1000).ok());
}

TEST(UserQuota, TheDefaultDescriptorCapIsAQuarterOfTheFileLimit) {
  struct rlimit rl;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  UserQuota q(UserCaps{0, 0, UserCaps::kQuarterOfFileLimit});
  EXPECT_EQ(q.caps().descriptors, std::max<uint64_t>(rl.rlim_cur / 4, 16));
  EXPECT_EQ(q.caps().all_users_descriptors, std::max<uint64_t>(rl.rlim_cur / 2, 16));
}

TEST(UserQuota, UsersTogetherLeaveRootRoom) {
  UserCaps caps{0, 0, 10};
  caps.all_users_descriptors = 15;
  UserQuota q(caps);
  for (int i = 0; i < 10; i++)
    ASSERT_TRUE(q.TakeDescriptor(1000).ok());
  for (int i = 0; i < 5; i++)
    ASSERT_TRUE(q.TakeDescriptor(1001).ok());
  Status s = q.TakeDescriptor(1001);
  EXPECT_EQ(s.code(), EMFILE);
  EXPECT_NE(s.message().find("together"), std::string::npos);
  EXPECT_TRUE(q.TakeDescriptor(0).ok());
  EXPECT_EQ(q.TotalDescriptors(), 16u);
  q.GiveDescriptors(1000, 1);
  EXPECT_TRUE(q.TakeDescriptor(1001).ok());
}

}  // namespace
}  // namespace ktmfs::fs
