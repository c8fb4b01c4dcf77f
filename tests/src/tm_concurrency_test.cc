// Many threads committing and rolling back at once, with RMs replying from their own threads;
// run under ASan/UBSan in CI. Afterwards every acknowledged commit is at its RMs, and stays
// there after a power loss.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
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

// Timeouts expire on the TM's thread while commits are under way and RMs reply from their own
// threads: every transaction ends committed everywhere or rolled back everywhere.
TEST(TmConcurrencyTest, TimeoutsRaceWithCommits) {
  constexpr int kThreads = 6, kPerThread = 60, kRms = 3;
  World w(kRms, /*dedicated=*/false);
  ASSERT_TRUE(w.Start(ReplyMode::kWorker).ok());
  struct Outcome {
    std::string key;
    std::vector<int> rms;
    bool committed;
  };
  std::vector<Outcome> outcomes;
  std::mutex mu;
  std::atomic<int> unexpected{0}, timed_out{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      for (int i = 0; i < kPerThread; ++i) {
        std::string key = "t" + std::to_string(t) + "-" + std::to_string(i);
        Result<Guid> tx = w.tm().Begin(TxOptions(0, key, std::chrono::milliseconds(rng() % 3)));
        if (!tx.ok()) {
          ++unexpected;
          continue;
        }
        std::vector<int> rms;
        bool write_failed = false;
        for (int r = 0; r < kRms; ++r) {
          if (rng() % 2 == 0 && !(r == kRms - 1 && rms.empty())) continue;
          Status s = w.rm(r).Write(*tx, key, "v");
          if (s.ok()) {
            rms.push_back(r);
          } else {
            write_failed = true;  // the timeout won before the enlistment
            if (s.code() != ETIMEDOUT && s.code() != EINVAL) ++unexpected;
          }
        }
        Status s = w.tm().Commit(*tx);
        if (!s.ok() && s.code() != ETIMEDOUT) ++unexpected;
        if (s.code() == ETIMEDOUT) ++timed_out;
        if (write_failed && s.ok()) ++unexpected;
        std::lock_guard l(mu);
        outcomes.push_back({key, rms, s.ok()});
      }
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(unexpected.load(), 0);
  std::printf("[          ] %d of %d transactions timed out\n", timed_out.load(),
              kThreads * kPerThread);
  auto check = [&](World& world) {
    for (const Outcome& o : outcomes)
      for (int r : o.rms)
        EXPECT_EQ(world.rm(r).data().count(o.key), o.committed ? 1u : 0u) << o.key << " rm" << r;
  };
  check(w);
  EXPECT_TRUE(w.tm().List().empty());
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
