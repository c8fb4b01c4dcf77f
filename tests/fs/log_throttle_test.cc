// LogThrottle: the first message of a flood goes through, the rest of its interval are held
// back and counted, and the next one logged says how many.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>

#include "fs/mount/daemon_log.h"

namespace ktmfs::fs {
namespace {

using std::chrono::seconds;

TEST(LogThrottle, LetsOneThroughPerIntervalAndCountsTheRest) {
  LogThrottle throttle(seconds(10));
  const auto t0 = std::chrono::steady_clock::time_point{} + seconds(1000);
  EXPECT_EQ(throttle.Take(t0), std::optional<uint64_t>(0));
  EXPECT_EQ(throttle.Take(t0 + seconds(1)), std::nullopt);
  EXPECT_EQ(throttle.Take(t0 + seconds(9)), std::nullopt);
  EXPECT_EQ(throttle.Take(t0 + seconds(10)), std::optional<uint64_t>(2));
  // The interval runs from the last one logged.
  EXPECT_EQ(throttle.Take(t0 + seconds(19)), std::nullopt);
  EXPECT_EQ(throttle.Take(t0 + seconds(20)), std::optional<uint64_t>(1));
}

}  // namespace
}  // namespace ktmfs::fs
