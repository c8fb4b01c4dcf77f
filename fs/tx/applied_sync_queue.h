// The fsyncs that follow single-phase commits' applies (FsRmOptions::sync_in_background). A
// commit is acknowledged once apply has made the backing directory show it; its changes are
// queued here, and one thread hands every commit queued so far, as one batch, to the RM's
// `sync_batch` (which syncs what they changed all at once and logs their APPLIED records).
// Whatever must not land on those changes before they are durable waits for them (WaitSynced).
//
// A batch that fails fails every later wait: the backing directory is then only known to be
// right after recovery, which redoes the commits from the log (the RM keeps their records: see
// OldestNeeded).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "fs/tx/apply.h"
#include "log/log.h"
#include "log/status.h"
#include "src/guid.h"

namespace ktmfs::fstx {

class AppliedSyncQueue {
 public:
  struct Item {
    Guid tx;
    log::Lsn first_lsn;  // the stream is needed from here until the commit is synced
    AppliedChanges changes;
  };
  // Called on the queue's thread, with nothing locked: makes a batch durable.
  using SyncBatch = std::function<Status(const std::vector<Item>& batch)>;
  // Called on the queue's thread after a batch that succeeded, once its waiters are let go.
  using AfterBatch = std::function<void()>;

  AppliedSyncQueue(SyncBatch sync_batch, AfterBatch after_batch);
  // Syncs what is queued, then stops the thread.
  ~AppliedSyncQueue();
  AppliedSyncQueue(const AppliedSyncQueue&) = delete;
  AppliedSyncQueue& operator=(const AppliedSyncQueue&) = delete;

  void Push(Item item);
  // Returns once every commit queued before the call is synced; the first failure, if any.
  Status WaitSynced();
  // Whether some queued commit is not synced yet, or a batch failed (cheap: callers test it
  // first, and then WaitSynced says which).
  bool Unsynced() const {
    return unsynced_.load(std::memory_order_acquire) > 0 || failed_.load(std::memory_order_acquire);
  }
  // The first LSN of the oldest commit not yet synced; kInvalidLsn if there is none.
  log::Lsn OldestNeeded() const;

  // Tests: called by the thread before it syncs a batch. Set before the first Push.
  void SetHook(std::function<void()> hook) { hook_ = std::move(hook); }
  // Tests: how many callers are inside WaitSynced.
  int waiters() const {
    std::lock_guard l(mu_);
    return waiters_;
  }

 private:
  void Loop();

  const SyncBatch sync_batch_;
  const AfterBatch after_batch_;
  std::function<void()> hook_;
  mutable std::mutex mu_;
  std::condition_variable wake_;  // the thread: work queued, or stop
  std::condition_variable done_;  // waiters: synced_ moved, or an error
  std::vector<Item> queued_;      // waiting for the thread
  std::vector<Item> syncing_;     // the thread's current batch
  uint64_t queued_count_ = 0;     // ever queued
  uint64_t synced_count_ = 0;     // ever synced (or failed)
  Status error_;
  bool stop_ = false;
  int waiters_ = 0;
  std::atomic<uint64_t> unsynced_{0};
  std::atomic<bool> failed_{false};  // error_ is set
  std::thread thread_;               // last: started once everything above is
};

}  // namespace ktmfs::fstx
