#include "log/owned_mutex.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

namespace ktmfs {
namespace {

TEST(OwnedMutex, IsALockableForTheStandardLocksAndConditionVariableAny) {
  OwnedMutex mu;
  {
    std::lock_guard l(mu);
    mu.AssertHeld();
  }
  std::unique_lock l(mu);
  std::condition_variable_any cv;
  bool ready = false;
  std::thread t([&] {
    std::lock_guard g(mu);
    mu.AssertHeld();
    ready = true;
    cv.notify_one();
  });
  cv.wait(l, [&] { return ready; });
  mu.AssertHeld();  // held again after the wait
  l.unlock();
  t.join();
  EXPECT_TRUE(mu.try_lock());
  mu.unlock();
}

TEST(OwnedMutexDeathTest, AssertHeldAbortsWhereTheCallerDoesNotHoldIt) {
#ifdef NDEBUG
  GTEST_SKIP() << "asserts are off in this build (NDEBUG)";
#else
  OwnedMutex mu;
  EXPECT_DEATH(mu.AssertHeld(), "must hold this mutex");
  // Held by another thread is not held by this one.
  std::mutex m;
  std::condition_variable cv;
  bool held = false, done = false;
  std::thread holder([&] {
    std::lock_guard g(mu);
    std::unique_lock l(m);
    held = true;
    cv.notify_all();
    cv.wait(l, [&] { return done; });
  });
  {
    std::unique_lock l(m);
    cv.wait(l, [&] { return held; });
  }
  EXPECT_DEATH(mu.AssertHeld(), "must hold this mutex");
  {
    std::lock_guard l(m);
    done = true;
  }
  cv.notify_all();
  holder.join();
#endif
}

}  // namespace
}  // namespace ktmfs
