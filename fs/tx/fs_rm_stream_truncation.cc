// Giving the RM's stream back to the log: the base LSN moves past every record no unfinished
// transaction (live, in doubt, or applied but not yet durable) still needs for recovery.
#include "fs/tx/fs_resource_manager.h"

namespace ktmfs::fstx {

void FsResourceManager::MaybeTruncate(bool force) {
  // Bytes of log between restart areas: a MiB, or a sixteenth of a smaller log, so that what the
  // stream holds behind its oldest live transaction stays a small part of the log.
  const log::LogGeometry g = o_.log->geometry();
  const uint64_t every =
      force ? 1 : std::min<uint64_t>(1 << 20, g.container_size * g.max_containers / 16);
  log::Lsn last;
  {
    std::lock_guard l(mu_);
    if (keep_log_) return;
    last = o_.stream->last_lsn();
    if (last == log::kInvalidLsn) return;
    for (const auto& [id, t] : txs_) {
      if (t.first_lsn != log::kInvalidLsn && t.first_lsn < last) last = t.first_lsn;
    }
    for (const auto& p : pending_) {
      if (p.first_lsn != log::kInvalidLsn && p.first_lsn < last) last = p.first_lsn;
    }
    // Commits not yet synced may need a redo from their records.
    std::lock_guard sl(sync_mu_);
    for (const auto* batch : {&queued_, &syncing_})
      for (const auto& u : *batch)
        if (u.first_lsn != log::kInvalidLsn && u.first_lsn < last) last = u.first_lsn;
    // LSNs are byte positions in the log's address space: close enough to bytes appended.
    log::Lsn from = truncated_at_ == log::kInvalidLsn ? o_.stream->base_lsn() : truncated_at_;
    if (last < from + every) return;
    truncated_at_ = last;
  }
  // Records appended from now on come after `last`: a transaction starting meanwhile keeps
  // everything it writes, and live ones start at or after it.
  auto r = o_.stream->WriteRestartArea({}, last);
  if (!r.ok())
    Report(true, r.status().Annotate("fs RM " + o_.name + ": truncating its stream").message());
}

}  // namespace ktmfs::fstx
