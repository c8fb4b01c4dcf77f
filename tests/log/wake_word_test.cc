// WakeWord: sleepers are released by a change of the word and WakeAll, never miss a change made
// before they sleep, and a deadline ends a sleep.
#include "log/wake_word.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace ktmfs::log {
namespace {

TEST(WakeWord, WakeAllReleasesEverySleeper) {
  WakeWord word;
  const uint32_t seen = word.value();
  std::atomic<int> asleep{0};
  std::atomic<int> released{0};
  std::atomic<bool> changed{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      asleep++;
      // A wake may come before the sleep; the word's value says so and Wait returns at once.
      while (!changed.load())
        word.Wait(seen);
      released++;
    });
  }
  while (asleep.load() < 4)
    std::this_thread::yield();
  changed = true;
  word.Bump();
  word.WakeAll();
  for (auto& t : threads)
    t.join();  // hangs (and the test times out) if a sleeper was not released
  EXPECT_EQ(released.load(), 4);
  EXPECT_NE(word.value(), seen);
}

TEST(WakeWord, AChangeBeforeTheSleepIsNotMissed) {
  WakeWord word;
  const uint32_t seen = word.value();
  word.Bump();
  word.Wait(seen);  // returns: the word no longer holds `seen`
  word.WaitUntil(seen, std::chrono::steady_clock::now() + std::chrono::hours(1));
  SUCCEED();
}

TEST(WakeWord, ADeadlineEndsTheSleep) {
  WakeWord word;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
  word.WaitUntil(word.value(), deadline);
  // It may return early (callers check again), but a sleep that ignored the deadline would never
  // return here: nothing else changes the word.
  while (std::chrono::steady_clock::now() < deadline)
    word.WaitUntil(word.value(), deadline);
  EXPECT_GE(std::chrono::steady_clock::now(), deadline);
}

}  // namespace
}  // namespace ktmfs::log
