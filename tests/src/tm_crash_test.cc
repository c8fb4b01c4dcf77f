// Crash recovery, driven by fault-injecting storage: a reference run counts the workload's write
// and sync events, then for every event n and every crash mode the workload runs again and the
// machine "loses power" when event n is about to happen. After the restart and recovery:
// acknowledged commits are at every RM, transactions never committed are at none, everything
// else is all-or-nothing across its RMs; and a crash during recovery, recovered again, ends the
// same way.
#include <gtest/gtest.h>

#include <cstdio>

#include "tests/src/tm_world.h"

namespace ktmfs::tm::testing {
namespace {

enum class End { kCommit, kRollback, kRefused, kLeaveOpen };  // kRefused: the last RM refuses

struct PlannedTx {
  std::string key;
  std::vector<int> rms;
  End end;
  bool with_info = false;
  bool attempted = false;  // Commit or Rollback was called
  bool acked = false;      // Commit returned OK
};

std::vector<PlannedTx> Plan(int rm_count) {
  std::vector<int> all;
  for (int i = 0; i < rm_count; ++i)
    all.push_back(i);
  std::vector<PlannedTx> plan = {
      {"t0", all, End::kCommit},
      {"t1", {0}, End::kCommit},
      {"t2", all, End::kRollback},
      {"t3", all, End::kCommit, /*with_info=*/true},
      {"t4", {rm_count - 1}, End::kCommit},
      {"t5", all, End::kLeaveOpen},
  };
  // Others prepared durably, then the last RM refuses: rolled back everywhere, no decision.
  if (rm_count >= 2) plan.insert(plan.begin() + 3, PlannedTx{"t7", all, End::kRefused});
  // Two-phase among all RMs but the first, so the TM's log is flushed while the first RM's
  // commit record of t0 may still be unflushed in a log of its own.
  if (rm_count >= 3) plan.insert(plan.begin() + 1, PlannedTx{"t6", {1, 2}, End::kCommit});
  return plan;
}

// Stops at the first failure: after a crash every call fails.
void RunWorkload(World& w, std::vector<PlannedTx>& plan) {
  for (PlannedTx& p : plan) {
    Result<Guid> tx = w.tm().Begin(TxOptions(7, p.key));
    if (!tx.ok()) return;
    for (int r : p.rms)
      if (!w.rm(r).Write(*tx, p.key, "v" + p.key).ok()) return;
    if (p.with_info) {
      std::string info = "info-" + p.key;
      if (!w.tm().SetEnlistmentInfo(*tx, w.rm(0).id(), std::as_bytes(std::span(info))).ok()) return;
    }
    if (p.end == End::kLeaveOpen) continue;
    p.attempted = true;
    if (p.end == End::kRollback) {
      if (!w.tm().Rollback(*tx).ok()) return;
      continue;
    }
    if (p.end == End::kRefused) {
      TestRm& last = w.rm(p.rms.back());
      last.RefusePrepare(Status::Error(EROFS, "refused by the test"));
      Status s = w.tm().Commit(*tx);
      last.RefusePrepare(Status::Ok());
      if (s.code() != EROFS) return;  // a crash came first
      continue;
    }
    Status s = w.tm().Commit(*tx);
    if (!s.ok()) return;
    p.acked = true;
  }
}

void Check(World& w, const std::vector<PlannedTx>& plan, const std::string& where) {
  SCOPED_TRACE(where);
  std::vector<size_t> expected_keys(w.rm_count());
  for (const PlannedTx& p : plan) {
    int present = 0;
    for (int r : p.rms) {
      auto data = w.rm(r).data();
      auto it = data.find(p.key);
      if (it != data.end()) {
        EXPECT_EQ(it->second, "v" + p.key);
        ++present;
        ++expected_keys[r];
      }
    }
    if (p.acked) {
      EXPECT_EQ(present, static_cast<int>(p.rms.size())) << p.key << " was acknowledged";
    } else if (p.end != End::kCommit || !p.attempted) {
      EXPECT_EQ(present, 0) << p.key << " was never committed";
    } else {
      EXPECT_TRUE(present == 0 || present == static_cast<int>(p.rms.size()))
          << p.key << " is at " << present << " of " << p.rms.size() << " RMs";
    }
  }
  for (int r = 0; r < w.rm_count(); ++r)
    EXPECT_EQ(w.rm(r).data().size(), expected_keys[r]) << "rm" << r << " has unplanned data";
  EXPECT_TRUE(w.tm().List().empty()) << "recovery left transactions unresolved";
}

struct Config {
  int rms;
  bool dedicated;
};

class TmCrashTest : public ::testing::TestWithParam<Config> {};

constexpr log::CrashMode kModes[] = {log::CrashMode::kDropUnsynced, log::CrashMode::kTearLastWrite,
                                     log::CrashMode::kKeepRandomUnsynced};

TEST_P(TmCrashTest, CrashAtEveryEventThenRecover) {
  const Config c = GetParam();
  // The reference run: how many events each storage sees during the workload.
  std::vector<uint64_t> workload_events;
  {
    World w(c.rms, c.dedicated);
    ASSERT_TRUE(w.Start().ok());
    std::vector<uint64_t> before;
    for (size_t s = 0; s < w.storage_count(); ++s)
      before.push_back(w.storage(s).events());
    auto plan = Plan(c.rms);
    RunWorkload(w, plan);
    for (const PlannedTx& p : plan) {
      if (p.end == End::kCommit) {
        ASSERT_TRUE(p.acked) << p.key;
      }
    }
    for (size_t s = 0; s < w.storage_count(); ++s)
      workload_events.push_back(w.storage(s).events() - before[s]);
  }

  int runs = 0;
  for (size_t s = 0; s < workload_events.size(); ++s) {
    for (uint64_t n = 1; n <= workload_events[s]; ++n) {
      for (log::CrashMode mode : kModes) {
        std::string where = "storage " + std::to_string(s) + ", crash at workload event " +
                            std::to_string(n) + ", mode " + std::to_string(static_cast<int>(mode));
        World w(c.rms, c.dedicated, /*seed=*/n);
        ASSERT_TRUE(w.Start().ok()) << where;
        w.storage(s).CrashAtEvent(w.storage(s).events() + n, mode);
        auto plan = Plan(c.rms);
        RunWorkload(w, plan);
        ASSERT_TRUE(w.storage(s).crashed()) << where;
        w.CrashAndRestart(mode);
        Status st = w.Start();
        ASSERT_TRUE(st.ok()) << where << ": " << st.ToString();
        Check(w, plan, where);
        ++runs;
      }
    }
  }
  EXPECT_GT(runs, 10);
  std::printf("[          ] %d crash points recovered\n", runs);
}

// Recovery itself is interrupted at each of its events, then run again to the end.
TEST_P(TmCrashTest, CrashDuringRecoveryThenRecoverAgain) {
  const Config c = GetParam();
  std::vector<uint64_t> workload_events;
  {
    World w(c.rms, c.dedicated);
    ASSERT_TRUE(w.Start().ok());
    std::vector<uint64_t> before;
    for (size_t s = 0; s < w.storage_count(); ++s)
      before.push_back(w.storage(s).events());
    auto plan = Plan(c.rms);
    RunWorkload(w, plan);
    for (size_t s = 0; s < w.storage_count(); ++s)
      workload_events.push_back(w.storage(s).events() - before[s]);
  }
  int interrupted = 0;
  // Crash at every workload event of every storage; then at each recovery event of each storage.
  for (size_t s = 0; s < workload_events.size(); ++s) {
    for (uint64_t n = 1; n <= workload_events[s]; ++n) {
      log::CrashMode mode = kModes[n % 3];
      for (size_t s2 = 0; s2 < workload_events.size(); ++s2) {
        for (uint64_t m = 1;; ++m) {
          std::string where = "crash at event " + std::to_string(n) + " of storage " +
                              std::to_string(s) + ", then at recovery event " + std::to_string(m) +
                              " of storage " + std::to_string(s2);
          World w(c.rms, c.dedicated, /*seed=*/n);
          ASSERT_TRUE(w.Start().ok()) << where;
          w.storage(s).CrashAtEvent(w.storage(s).events() + n, mode);
          auto plan = Plan(c.rms);
          RunWorkload(w, plan);
          w.CrashAndRestart(mode);
          w.storage(s2).CrashAtEvent(w.storage(s2).events() + m, mode);
          Status first = w.Start();
          if (!w.storage(s2).crashed()) {
            ASSERT_TRUE(first.ok()) << where << ": " << first.ToString();
            Check(w, plan, where);
            break;  // recovery needed fewer than m events
          }
          ++interrupted;
          w.CrashAndRestart(mode);
          Status second = w.Start();
          ASSERT_TRUE(second.ok()) << where << ": " << second.ToString();
          Check(w, plan, where);
          ASSERT_LT(m, 1000u) << "recovery never finishes";
        }
      }
    }
  }
  EXPECT_GT(interrupted, 0);
  std::printf("[          ] %d recoveries interrupted and redone\n", interrupted);
}

INSTANTIATE_TEST_SUITE_P(Logs, TmCrashTest,
                         ::testing::Values(Config{1, false}, Config{2, false}, Config{3, false},
                                           Config{1, true}, Config{2, true}, Config{3, true}),
                         [](const auto& info) {
                           return std::to_string(info.param.rms) + "Rm" +
                                  (info.param.dedicated ? "Dedicated" : "Multiplexed");
                         });

}  // namespace
}  // namespace ktmfs::tm::testing
