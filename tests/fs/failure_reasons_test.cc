#include "fs/control/failure_reasons.h"

#include <gtest/gtest.h>

namespace ktmfs::fs {
namespace {

TEST(FailureReasons, GivenOnceToTheSameCallerAndUser) {
  FailureReasons r;
  r.Remember(100, 1000, "transaction X was rolled back: its timeout expired");
  EXPECT_EQ(r.Take(100, 2000), "");  // another user asking through a reused pid
  EXPECT_EQ(r.Take(101, 1000), "");
  EXPECT_EQ(r.Take(100, 1000), "transaction X was rolled back: its timeout expired");
  EXPECT_EQ(r.Take(100, 1000), "");  // once
}

TEST(FailureReasons, TheLatestCountsAndOldOnesExpire) {
  FailureReasons r;
  const auto t0 = FailureReasons::Clock::now();
  r.SetNowForTesting(t0);
  r.Remember(7, 0, "first");
  r.Remember(7, 0, "second");
  EXPECT_EQ(r.Take(7, 0), "second");
  r.Remember(8, 0, "old");
  r.SetNowForTesting(t0 + FailureReasons::kLifetime + std::chrono::seconds(1));
  EXPECT_EQ(r.Take(8, 0), "");
  r.Remember(0, 0, "no pid");  // a caller outside the daemon's pid namespace
  EXPECT_EQ(r.Take(0, 0), "");
}

TEST(FailureReasons, BoundedByDroppingTheOldest) {
  FailureReasons r;
  auto t = FailureReasons::Clock::now();
  for (pid_t pid = 1; pid <= static_cast<pid_t>(FailureReasons::kMaxEntries) + 1; ++pid) {
    r.SetNowForTesting(t + std::chrono::milliseconds(pid));
    r.Remember(pid, 0, "m" + std::to_string(pid));
  }
  EXPECT_EQ(r.Take(1, 0), "");  // the oldest made room
  EXPECT_EQ(r.Take(2, 0), "m2");
  EXPECT_EQ(r.Take(static_cast<pid_t>(FailureReasons::kMaxEntries) + 1, 0),
            "m" + std::to_string(FailureReasons::kMaxEntries + 1));
}

}  // namespace
}  // namespace ktmfs::fs
