// Recovery at mount: the RM reads its stream from its base. Transactions it committed and did
// not apply are applied again from their ops, in commit order (one that cannot be applied stays
// pending and the mount goes on); the TM resolves the ones in doubt; the rest roll back. Staging
// no transaction needs is removed, and the stream is truncated behind what is finished.
#include <dirent.h>

#include <chrono>
#include <map>
#include <vector>

#include "fs/tx/fs_resource_manager.h"

namespace ktmfs::fstx {

Status FsResourceManager::Recover() {
  struct Seen {
    std::vector<Op> ops;
    log::Lsn first_lsn = log::kInvalidLsn;
    bool committed = false, applied = false, aborted = false, pending = false;
  };
  std::map<Guid, Seen> seen;
  std::vector<Guid> commit_order;
  auto cursor = o_.stream->ReadForward(o_.stream->base_lsn());
  log::Record rec;
  for (;;) {
    Result<bool> more = cursor->Next(&rec);
    if (!more.ok()) return more.status().Annotate("fs RM " + o_.name + ": reading its stream");
    if (!*more) break;
    if (rec.type != kFsRecordType) continue;  // restart areas
    auto r = DecodeRecord(rec.payload, rec.lsn);
    if (!r.ok()) return r.status().Annotate("fs RM " + o_.name);
    Seen& s = seen[r->tx];
    if (s.first_lsn == log::kInvalidLsn) s.first_lsn = rec.lsn;
    switch (r->type) {
      case RecordType::kOp:
        s.ops.push_back(r->op);
        break;
      case RecordType::kPrepared:
        break;
      case RecordType::kCommitted:
        s.committed = true;
        commit_order.push_back(r->tx);
        break;
      case RecordType::kApplied:
        s.applied = true;
        break;
      case RecordType::kAborted:
        s.aborted = true;
        break;
      case RecordType::kRelogged:
        // The ops carried forward are all of them: any copy read before is superseded.
        s.ops = std::move(r->ops);
        break;
    }
  }
  // A committed transaction that cannot be applied now stays pending: the mount goes on.
  auto apply = [&](const Guid& tx, Seen& s, bool log_committed) {
    log::Lsn lsn = log::kInvalidLsn;
    Status a = CommitAndApply(tx, s.ops, log_committed, &lsn);
    s.committed = true;
    if (a.ok()) {
      s.applied = true;
      report_.redone++;
      report_.redone_txs.push_back(tx);
      return;
    }
    KeepPending(tx, s.ops, s.first_lsn, a);
    LockPending(tx, s.ops);
    s.pending = true;
    report_.pending++;
    report_.pending_txs.push_back(tx);
  };
  // Our own COMMITTED decides: redo in commit order, so later transactions apply over earlier.
  // A long redo says how far it got, every few seconds, so a slow mount is not a silent one.
  auto last_progress = std::chrono::steady_clock::now();
  for (size_t i = 0; i < commit_order.size(); i++) {
    Seen& s = seen[commit_order[i]];
    if (s.applied) continue;
    apply(commit_order[i], s, false);
    if (o_.report && std::chrono::steady_clock::now() - last_progress > std::chrono::seconds(2)) {
      last_progress = std::chrono::steady_clock::now();
      o_.report(false, "recovery of " + o_.name + ": " + std::to_string(i + 1) + " of " +
                           std::to_string(commit_order.size()) +
                           " committed transaction(s) of its stream looked at");
    }
  }
  auto resolve = [&](const Guid& tx, tm::Outcome outcome) -> Status {
    Seen& s = seen[tx];
    if (s.committed || s.applied) return Status::Ok();
    if (outcome == tm::Outcome::kCommit) {
      if (o_.stream_is_new && s.first_lsn == log::kInvalidLsn) {
        return Status::Error(
            ENODATA, "fs RM " + o_.name + ": the transaction manager says transaction " +
                         tx.ToString() + " committed with " + o_.name +
                         " taking part, but its log stream was made at this mount, so the "
                         "changes it logged are not there: is the filesystem of " +
                         o_.backing_root +
                         " mounted (or was the source renamed)? The mount is refused rather than "
                         "call the transaction applied");
      }
      if (s.aborted)
        return Status::Corruption("fs RM " + o_.name + ": told to commit " + tx.ToString() +
                                  " which it rolled back");
      apply(tx, s, true);
      return Status::Ok();
    }
    KTMFS_RETURN_IF_ERROR(Abort(tx));
    s.aborted = true;
    report_.rolled_back++;
    report_.rolled_back_txs.push_back(tx);
    return o_.stream->Flush(o_.stream->last_lsn());
  };
  KTMFS_RETURN_IF_ERROR(o_.tm->RecoverResourceManager(
      o_.id, [&](const tm::InDoubtEnlistment& d) { return resolve(d.transaction, d.outcome); }));
  for (auto& [tx, s] : seen)
    if (!s.committed && !s.applied && !s.aborted)
      KTMFS_RETURN_IF_ERROR(resolve(tx, o_.tm->QueryOutcome(tx)));
  // Whatever staging is left belongs to no live transaction once the APPLIED records of the
  // redone ones are durable; a transaction whose records never became durable left only its
  // staging.
  KTMFS_RETURN_IF_ERROR(o_.stream->Flush(o_.stream->last_lsn()));
  {
    std::lock_guard l(mu_);
    unclean_.clear();
  }
  DIR* d = ::opendir(o_.staging_root.c_str());
  if (d) {
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
    for (const auto& name : names) {
      auto tx = Guid::Parse(name);
      if (tx && seen.count(*tx) && seen[*tx].pending) continue;  // a pending apply's
      // Housekeeping only: what cannot go now (an immutable directory, an I/O error) is said
      // and left for the next mount, which tries again; the mount comes up.
      if (Status removed = RemoveTree(o_.staging_root + "/" + name); !removed.ok()) {
        Report(false, "recovery of " + o_.name + ": leftover staging area " + name +
                          " stays for now: " + removed.message());
        continue;
      }
      report_.leftovers++;
    }
  }
  {
    std::lock_guard l(mu_);
    txs_.clear();
  }
  // Every transaction the stream knew is finished: nothing before its end is needed again,
  // except the records of pending applies.
  log::Lsn last = NothingNeededFrom();
  for (const auto& [tx, s] : seen)
    if (s.pending && s.first_lsn != log::kInvalidLsn && s.first_lsn < last) last = s.first_lsn;
  if (last != log::kInvalidLsn && last != o_.stream->base_lsn()) {
    auto restart = o_.stream->WriteRestartArea({}, last);
    if (!restart.ok()) return restart.status().Annotate("fs RM " + o_.name + ": truncating");
  }
  recovered_ = true;
  return Status::Ok();
}

}  // namespace ktmfs::fstx
