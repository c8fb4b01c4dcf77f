// Giving the RM's stream back to the log (StreamTruncator): the base LSN moves past every record
// no unfinished transaction (live, in doubt, or applied but not yet durable) still needs for
// recovery. A live transaction that has been open while the log filled is carried forward
// first: its ops, logged again at the end in one RELOGGED record, are all recovery needs of it.
#include "fs/tx/fs_resource_manager.h"

namespace ktmfs::fstx {

uint64_t FsResourceManager::CarryLimit() const {
  if (o_.log == nullptr) return 0;
  const log::LogGeometry g = o_.log->geometry();
  return g.container_size * g.max_containers / 16;
}

void FsResourceManager::CarryForwardIdle() {
  if (o_.log == nullptr) return;
  const log::LogGeometry g = o_.log->geometry();
  const uint64_t capacity = g.container_size * g.max_containers;
  const log::Lsn end = o_.log->end_lsn();
  // Every commit comes here: nothing more is asked while half the log is free.
  if (capacity == 0 || end - g.start_lsn < capacity / 2) return;
  std::lock_guard l(mu_);
  for (auto& [id, t] : txs_) {
    // A transaction that prepares or rolls back may log its end at any moment, which no copy
    // of its ops may follow; one that lost an op can only roll back, and keeps its records.
    if (!t.enlisted || t.ending || t.broken || t.first_lsn == log::kInvalidLsn) continue;
    // Copied only when it holds much of the log, and when copying is cheap beside what that
    // frees: a transaction whose own records fill the log still fills it (ktmfs(8)).
    if (end - t.first_lsn < capacity / 4 || t.bytes_logged > CarryLimit() ||
        t.ops.size() > kMaxRecordList)
      continue;
    Record r;
    r.type = RecordType::kRelogged;
    r.tx = id;
    r.ops = t.ops;
    bool loaded = true;
    for (Op& op : r.ops) {
      if (!op.stored_value) continue;
      // Memory keeps only where a big xattr value is (LogOpLocked); the record carries it.
      auto value = t.staging ? t.staging->LoadValue(*op.stored_value)
                             : Result<std::string>(Status::NotFound("no staging"));
      if (!value.ok()) {
        Report(true, "fs RM " + o_.name + ": transaction " + id.ToString() +
                         " cannot be carried forward in the log: " + value.status().message());
        loaded = false;
        break;
      }
      op.value = std::move(*value);
      op.stored_value.reset();
    }
    if (!loaded) continue;
    std::vector<std::byte> payload = EncodeRecord(r);
    log::Stream::AppendArgs args;
    args.type = kFsRecordType;
    args.payload = payload;
    auto lsn = o_.stream->Append(args);
    // A log filled up to its reserve (a commit that ended just short of it) refuses new work:
    // then no commit comes to try again, and the copy is what frees the log. Like a restart
    // area it may use the reserve, if small beside it (the daemon's reserve is about a
    // container, whose quarter this takes at most), so that the reserve still ends the work
    // under way should the copy free nothing.
    if (!lsn.ok() && lsn.status().IsLogFull() && payload.size() <= g.container_size / 4) {
      args.use_reserve = true;
      lsn = o_.stream->Append(args);
    }
    if (!lsn.ok()) return;  // a full log: the next end tries again
    Report(false, "fs RM " + o_.name + ": transaction " + id.ToString() + ", open since LSN " +
                      log::LsnToString(t.first_lsn) + ", carried forward to LSN " +
                      log::LsnToString(*lsn) + " (" + std::to_string(t.ops.size()) +
                      " ops) so the log can be reused behind it");
    t.first_lsn = *lsn;
    if (t.owner) {
      // The copy stands for the records before it: its size is what the owner holds now.
      uint64_t& owners = owner_logged_[*t.owner];
      assert(owners >= t.bytes_logged);
      owners = owners - t.bytes_logged + payload.size();
    }
    t.bytes_logged = payload.size();
  }
}

log::Lsn FsResourceManager::NothingNeededFrom() const {
  // Its own last record would do, but a stream whose last record is old (a source nobody
  // changes: its last is the restart area that moved it) would then keep the log from there,
  // and the ring could not reuse it however much the other streams give back.
  return o_.log != nullptr ? o_.log->end_lsn() : o_.stream->last_lsn();
}

void FsResourceManager::MaybeTruncate(bool force) {
  CarryForwardIdle();
  log::Lsn needed;
  {
    std::lock_guard l(mu_);
    if (keep_log_) return;
    // Read with the transactions' first records under mu_, under which records are appended:
    // a transaction starting after this keeps everything it writes.
    needed = NothingNeededFrom();
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
