// Many threads committing and rolling back at once, with RMs replying from their own threads;
// run under ASan/UBSan in CI. Afterwards every acknowledged commit is at its RMs, and stays
// there after a power loss.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "tests/src/tm_world.h"

namespace ktmfs::tm::testing {
namespace {

void Hammer(bool dedicated) {
  constexpr int kThreads = 8, kPerThread = 60, kRms = 3;
  World w(kRms, dedicated);
  ASSERT_TRUE(w.Start(ReplyMode::kWorker).ok());
  std::vector<std::vector<std::string>> committed(kRms);
  std::mutex mu;
  std::atomic<int> failures{0}, rollbacks{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < kPerThread; ++i) {
        std::string key = "t" + std::to_string(t) + "-" + std::to_string(i);
        Result<Guid> tx = w.tm().Begin(TxOptions(static_cast<uint32_t>(t), key));
        if (!tx.ok()) {
          ++failures;
          continue;
        }
        std::vector<int> rms;
        for (int r = 0; r < kRms; ++r)
          if (rng() % 2 || (r == kRms - 1 && rms.empty())) rms.push_back(r);
        for (int r : rms)
          if (!w.rm(r).Write(*tx, key, "v").ok()) ++failures;
        if (rng() % 4 == 0) {
          if (!w.tm().Rollback(*tx).ok()) ++failures;
          ++rollbacks;
          continue;
        }
        if (!w.tm().Commit(*tx).ok()) {
          ++failures;
          continue;
        }
        std::lock_guard l(mu);
        for (int r : rms)
          committed[r].push_back(key);
      }
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(rollbacks.load(), 0);
  EXPECT_TRUE(w.tm().List().empty());
  EXPECT_EQ(w.tm().stats().commits + w.tm().stats().rollbacks,
            static_cast<uint64_t>(kThreads * kPerThread));
  auto check = [&](World& world) {
    for (int r = 0; r < kRms; ++r) {
      auto data = world.rm(r).data();
      EXPECT_EQ(data.size(), committed[r].size()) << "rm" << r;
      for (const std::string& k : committed[r])
        EXPECT_EQ(data.count(k), 1u) << k;
    }
  };
  check(w);
  w.CrashAndRestart(log::CrashMode::kDropUnsynced);
  ASSERT_TRUE(w.Start().ok());
  check(w);
}

TEST(TmConcurrencyTest, ManyThreadsCommitAndRollBackMultiplexed) {
  Hammer(false);
}
TEST(TmConcurrencyTest, ManyThreadsCommitAndRollBackDedicated) {
  Hammer(true);
}

}  // namespace
}  // namespace ktmfs::tm::testing
