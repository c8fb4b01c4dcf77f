#include "fs/tx/applied_sync_queue.h"

#include <cassert>
#include <utility>

namespace ktmfs::fstx {

AppliedSyncQueue::AppliedSyncQueue(SyncBatch sync_batch, AfterBatch after_batch)
    : sync_batch_(std::move(sync_batch)),
      after_batch_(std::move(after_batch)),
      thread_([this] { Loop(); }) {}

AppliedSyncQueue::~AppliedSyncQueue() {
  {
    std::lock_guard l(mu_);
    stop_ = true;  // the thread syncs what is queued first
  }
  wake_.notify_all();
  thread_.join();
}

void AppliedSyncQueue::Push(Item item) {
  {
    std::lock_guard l(mu_);
    assert(!stop_ && "pushed while stopping");
    queued_.push_back(std::move(item));
    queued_count_++;
    unsynced_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_one();
}

Status AppliedSyncQueue::WaitSynced() {
  std::unique_lock l(mu_);
  const uint64_t target = queued_count_;
  waiters_++;
  done_.wait(l, [&] { return synced_count_ >= target || !error_.ok(); });
  waiters_--;
  return error_;
}

log::Lsn AppliedSyncQueue::OldestNeeded() const {
  log::Lsn oldest = log::kInvalidLsn;
  std::lock_guard l(mu_);
  for (const auto* batch : {&queued_, &syncing_})
    for (const Item& i : *batch)
      if (i.first_lsn != log::kInvalidLsn && (oldest == log::kInvalidLsn || i.first_lsn < oldest))
        oldest = i.first_lsn;
  return oldest;
}

void AppliedSyncQueue::Loop() {
  std::unique_lock l(mu_);
  for (;;) {
    wake_.wait(l, [&] { return stop_ || !queued_.empty(); });
    if (queued_.empty()) return;  // stopping, and nothing left
    assert(syncing_.empty());
    syncing_ = std::move(queued_);
    queued_.clear();
    l.unlock();
    if (hook_) hook_();
    // syncing_ is the thread's alone until it is cleared under mu_ (OldestNeeded only reads it).
    Status s = sync_batch_(syncing_);
    l.lock();
    if (!s.ok() && error_.ok()) {
      error_ = s;
      failed_.store(true, std::memory_order_release);
    }
    synced_count_ += syncing_.size();
    assert(synced_count_ <= queued_count_);
    unsynced_.fetch_sub(syncing_.size(), std::memory_order_release);
    syncing_.clear();
    done_.notify_all();
    if (s.ok() && after_batch_) {
      // Nobody waits for this part.
      l.unlock();
      after_batch_();
      l.lock();
    }
  }
}

}  // namespace ktmfs::fstx
