#include "fs/tx/applied_sync_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace ktmfs::fstx {
namespace {

using Item = AppliedSyncQueue::Item;

Item At(log::Lsn first) {
  return Item{Guid::Random(), first, {}};
}

// Holds the queue's thread before its next batch until Open().
class Gate {
 public:
  void Wait() {
    std::unique_lock l(mu_);
    waiting_ = true;
    cv_.notify_all();
    cv_.wait(l, [&] { return open_; });
  }
  void AwaitWaiting() {
    std::unique_lock l(mu_);
    cv_.wait(l, [&] { return waiting_; });
  }
  void Open() {
    std::lock_guard l(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool waiting_ = false, open_ = false;
};

TEST(AppliedSyncQueue, WhatIsQueuedMeanwhileIsSyncedAsOneBatch) {
  std::mutex mu;
  std::vector<size_t> batches;
  int after = 0;
  Gate gate;
  AppliedSyncQueue q(
      [&](const std::vector<Item>& batch) {
        std::lock_guard l(mu);
        batches.push_back(batch.size());
        return Status::Ok();
      },
      [&] { after++; });
  q.SetHook([&] { gate.Wait(); });
  EXPECT_FALSE(q.Unsynced());
  EXPECT_EQ(q.OldestNeeded(), log::kInvalidLsn);
  q.Push(At(300));
  gate.AwaitWaiting();  // the thread took the first commit and waits before syncing it
  q.Push(At(500));
  q.Push(At(400));
  EXPECT_TRUE(q.Unsynced());
  EXPECT_EQ(q.OldestNeeded(), 300u);  // the batch being synced counts too
  std::thread waiter([&] { EXPECT_TRUE(q.WaitSynced().ok()); });
  while (q.waiters() == 0)
    std::this_thread::yield();
  gate.Open();
  waiter.join();
  // The waiter came after all three: it returned only once every one was synced.
  EXPECT_FALSE(q.Unsynced());
  EXPECT_EQ(q.OldestNeeded(), log::kInvalidLsn);
  std::lock_guard l(mu);
  EXPECT_EQ(batches, (std::vector<size_t>{1, 2}));
}

TEST(AppliedSyncQueue, AFailedBatchFailsEveryLaterWait) {
  std::atomic<int> calls{0}, after{0};
  {
    AppliedSyncQueue q(
        [&](const std::vector<Item>&) {
          return ++calls == 1 ? Status::IoError("fsync of d: EIO") : Status::Ok();
        },
        [&] { after++; });
    q.Push(At(100));
    Status s = q.WaitSynced();
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.ToString().find("EIO"), std::string::npos) << s.ToString();
    // Nothing is left to sync, yet callers that test first must still be sent to the error.
    EXPECT_TRUE(q.Unsynced());
    q.Push(At(200));
    // At once: the backing directory is only known to be right after recovery.
    EXPECT_FALSE(q.WaitSynced().ok());
  }  // the queue's thread syncs the second batch before it stops
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(after.load(), 1);  // only the batch that succeeded
}

TEST(AppliedSyncQueue, StoppingSyncsWhatIsQueuedFirst) {
  std::vector<log::Lsn> synced;
  Gate gate;
  {
    AppliedSyncQueue q(
        [&](const std::vector<Item>& batch) {
          for (const Item& i : batch)
            synced.push_back(i.first_lsn);
          return Status::Ok();
        },
        nullptr);
    q.SetHook([&] { gate.Wait(); });
    q.Push(At(1));
    gate.AwaitWaiting();
    q.Push(At(2));
    gate.Open();
  }
  EXPECT_EQ(synced, (std::vector<log::Lsn>{1, 2}));
}

}  // namespace
}  // namespace ktmfs::fstx
