// The fsyncs that follow a single-phase commit's apply (FsRmOptions::sync_in_background): a
// thread syncs what several applied commits changed at once, logs their APPLIED records, and
// lets their staging go once a flush has made the records durable (the next commit's, or the
// daemon's housekeeping when none follows); whatever must not land on their changes before they are
// durable waits for it (WaitAppliedDurable).
#include "fs/tx/fs_resource_manager.h"
#include "fs/tx/sync_together.h"

namespace ktmfs::fstx {

Status FsResourceManager::Applied(const Guid& tx) {
  fstx::Record r;
  r.type = RecordType::kApplied;
  r.tx = tx;
  auto lsn = Append(r);
  if (!lsn.ok()) return lsn.status();
  // APPLIED is not flushed here: the backing directory is already fsynced, and until the record
  // is durable a crash only means redoing this apply over its own result. A later transaction
  // on the same objects can only commit after this point, with a flush that covers the
  // record, so a redo never lands on top of a later transaction's changes. Staging may go only
  // once the record is durable: until then a redo needs it.
  std::lock_guard l(mu_);
  unclean_.push_back({*lsn, Target(tx)});
  return Status::Ok();
}

void FsResourceManager::NoteUnflushedApplied() {
  // Covers the records appended so far however the newest moves meanwhile.
  const log::Lsn appended = o_.stream->last_lsn();
  log::Lsn seen = unflushed_applied_.load(std::memory_order_acquire);
  while ((seen == log::kInvalidLsn || seen < appended) &&
         !unflushed_applied_.compare_exchange_weak(seen, appended, std::memory_order_acq_rel)) {
  }
}

Status FsResourceManager::WaitSynced() {
  return syncs_ && syncs_->Unsynced() ? syncs_->WaitSynced() : Status::Ok();
}

Status FsResourceManager::WaitAppliedDurable() {
  KTMFS_RETURN_IF_ERROR(WaitSynced());
  log::Lsn applied = unflushed_applied_.load(std::memory_order_acquire);
  if (applied == log::kInvalidLsn) return Status::Ok();
  if (applied >= o_.log->flushed_lsn()) {  // flushed_lsn() is the end of what is durable
    KTMFS_RETURN_IF_ERROR(
        o_.stream->Flush(applied).Annotate("fs RM " + o_.name + ": making the APPLIED record at " +
                                           log::LsnToString(applied) + " durable"));
  }
  // A newer one appended meanwhile stays for the next caller.
  unflushed_applied_.compare_exchange_strong(applied, log::kInvalidLsn, std::memory_order_acq_rel);
  return Status::Ok();
}

Status FsResourceManager::SyncBatch(const std::vector<AppliedSyncQueue::Item>& batch) {
  std::vector<const AppliedChanges*> all;
  for (const auto& item : batch)
    all.push_back(&item.changes);
  Status s = together_->Sync(all);
  for (const auto& item : batch)
    if (s.ok()) s = Applied(item.tx);
  // Not flushed here: the next commit's flush covers these records (the log is one sequence),
  // and a change made outside transactions, which is not logged, flushes them first
  // (WaitAppliedDurable), or a crash would redo these commits over it. When no commit follows,
  // the daemon's housekeeping flushes them within a fifth of a second, so that their staging
  // can go (DropDurableStaging). In a loop of small commits this spares a log write and a
  // device flush per commit.
  if (s.ok()) {
    NoteUnflushedApplied();
    return s;
  }
  Report(true, "fs RM " + o_.name + ": " + s.message() +
                   "; the log keeps the commits for recovery at the next mount, and "
                   "changes here fail until then");
  {
    std::lock_guard ml(mu_);
    keep_log_ = true;
  }
  return s.Annotate("fs RM " + o_.name + ": making applied commits durable");
}

void FsResourceManager::DropDurableStaging(bool flush) {
  if (flush) {
    log::Lsn newest = log::kInvalidLsn;
    {
      std::lock_guard l(mu_);
      for (const auto& u : unclean_)
        newest = std::max(newest, u.applied_lsn);
    }
    if (newest == log::kInvalidLsn) return;
    if (newest >= o_.log->flushed_lsn()) {
      // Said once per run of failures: the housekeeping retries five times a second, and until
      // it succeeds every change outside transactions fails too (WaitAppliedDurable).
      Status s = o_.stream->Flush(newest);
      if (!s.ok() && !housekeeping_flush_failed_.exchange(true)) {
        Report(true, "fs RM " + o_.name + ": making the APPLIED record at " +
                         log::LsnToString(newest) + " durable: " + s.message() +
                         "; changes outside transactions fail (EIO) until it is");
      } else if (s.ok()) {
        housekeeping_flush_failed_.store(false);
      }
    }
  }
  const log::Lsn durable = o_.log->flushed_lsn();
  std::vector<ApplyTarget> done;
  {
    std::lock_guard l(mu_);
    for (auto it = unclean_.begin(); it != unclean_.end();) {
      if (it->applied_lsn < durable) {  // flushed_lsn() is the end of what is durable
        done.push_back(std::move(it->target));
        it = unclean_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& t : done) {
    Status s = CleanupAppliedTransaction(t);
    if (!s.ok()) Report(false, "fs RM " + o_.name + ": " + s.message());
  }
}

}  // namespace ktmfs::fstx
