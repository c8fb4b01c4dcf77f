// Giving the RM's stream back to the log (StreamTruncator): the base LSN moves past every record
// no unfinished transaction (live, in doubt, or applied but not yet durable) still needs for
// recovery.
#include "fs/tx/fs_resource_manager.h"

namespace ktmfs::fstx {

void FsResourceManager::MaybeTruncate(bool force) {
  log::Lsn needed;
  {
    std::lock_guard l(mu_);
    if (keep_log_) return;
    // Read with the transactions' first records under mu_, under which records are appended:
    // a transaction starting after this keeps everything it writes.
    needed = o_.stream->last_lsn();
    if (needed == log::kInvalidLsn) return;
    for (const auto& [id, t] : txs_) {
      if (t.first_lsn != log::kInvalidLsn && t.first_lsn < needed) needed = t.first_lsn;
    }
    for (const auto& p : pending_) {
      if (p.first_lsn != log::kInvalidLsn && p.first_lsn < needed) needed = p.first_lsn;
    }
    // Commits not yet synced may need a redo from their records.
    if (syncs_) {
      const log::Lsn unsynced = syncs_->OldestNeeded();
      if (unsynced != log::kInvalidLsn && unsynced < needed) needed = unsynced;
    }
  }
  auto moved = truncator_.Offer(needed, force);
  if (!moved.ok()) Report(true, moved.status().message());
}

}  // namespace ktmfs::fstx
