// The interface a resource manager implements to take part in transactions.
#pragma once

#include "src/tm_types.h"

namespace ktmfs::tm {

// Notifications arrive one at a time per enlistment, in order, on a thread of the TM's choosing
// (the committer's, a replying RM's or the timeout thread), with no TM lock held. An RM replies
// with the matching TransactionManager::*Complete call, from inside Notify or later from any
// thread. A Rollback may arrive while a Prepare is still unanswered (timeout, another RM
// refused); a late reply to that Prepare is then accepted and ignored.
//
// What each notification asks (the RM's log is where its data lives):
// - Prepare: append everything needed to commit or roll back after a crash, plus a "prepared"
//   record; reply PrepareComplete with that record's LSN (the TM makes it durable before the
//   decision, with the decision's own flush when both streams share a log) or with kInvalidLsn
//   if the RM made it durable itself. An error status refuses: everyone rolls back.
// - SinglePhaseCommit: sent instead of Prepare when the RM is the only one enlisted; the RM
//   decides. It appends its commit record, makes it durable (Flush of its stream: one group-
//   committed flush), makes the changes visible and replies; an error means it rolled back.
// - Commit: the decision is durable. Append a commit record, make the changes visible, reply
//   CommitComplete with the record's LSN; the TM forgets the transaction only once that record
//   is durable (it never flushes for this: a later flush of the RM's log does it).
// - Rollback: discard the transaction's changes and reply RollbackComplete.
//
// Recovery rule for the RM's own log: a commit record of its own means committed (it is only
// written after the TM's decision, or as its own single-phase decision); any other unfinished
// transaction takes the outcome RecoverResourceManager gives it or QueryOutcome returns
// (presumed abort: the TM knows no commit decision, so it rolls back).
class ResourceManager {
 public:
  virtual ~ResourceManager() = default;
  virtual void Notify(const Notification& n) = 0;
};

}  // namespace ktmfs::tm
