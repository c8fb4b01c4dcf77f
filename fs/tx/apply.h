// Apply: makes the backing directory match a committed transaction, as redo that may be
// interrupted at any point and run again from the start (fs/TRANSACTIONS.md, "Apply and
// recovery"). Each step checks by (device, inode) whether an earlier run already did it:
//   1. park  existing objects that lose their original name, deepest first, to
//            <staging>/park/p<dev>.<ino> (done if the parking name holds the object);
//   2. place new objects (from staging) and parked ones at their first final name, shallowest
//            first (done if the staged or parking name is gone), then link extra names;
//   3. content: modes, owners, times, sizes, xattrs and staged extents, absolute values in log
//            order (repeating is harmless); a deleted file's through its parking name, since
//            it may live on under names the transaction never saw; then the parking names of
//            deleted files go (done if gone);
//   4. fsync every file written and every directory whose entries changed.
// The caller then logs APPLIED and only after that calls Cleanup: the staged data must
// survive until no re-run can need it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "fs/tx/apply_plan.h"
#include "fs/tx/replacement.h"
#include "log/status.h"

namespace ktmfs::fstx {

struct ApplyTarget {
  std::string backing_root;  // the backing directory
  std::string staging_dir;   // the transaction's staging directory (TxStaging::dir())
};

// Called before every change to the backing or staging tree with a description; an error
// stops apply there, as a crash would. Tests use it to stop after k changes.
using MutationHook = std::function<Status(const std::string& what)>;

// What step 4 makes durable: the files written and the directories whose entries may have
// changed, in this run or an interrupted earlier one.
struct AppliedChanges {
  std::string backing_root;
  std::vector<std::string> files;
  std::vector<std::string> dirs;
  // Names (relative to the backing root) that now hold a new file: whole rewrites, whose old
  // file anyone who resolved the name before still holds.
  std::vector<std::string> replaced;
};

// Called once by apply when every change a reader could see is made but the content of the
// objects it names (big files written in place, whose data is still to be written): a caller
// may then let readers into everything else.
using LetReadersIn = std::function<void(const std::vector<ObjectId>& still_changing)>;

// Steps 1-3: afterwards the backing directory shows the transaction, not yet durably.
// `replace_when`: when a file the transaction rewrote whole is replaced (replacement.h) rather
// than written in place. Null: always (ReplaceWhen::kIfWhole). `close_gate`, if given, is
// called once, before the first change a reader could see: before it apply plans, and writes in
// staging the data of the files it will replace whose data the records carry, so that a caller
// that closes the visibility gate there keeps it closed for the changes alone. `let_in`, if
// given, is called once the rest is done and only those files' content is left (LetReadersIn);
// without it, content goes in log order.
Result<AppliedChanges> ApplyChanges(
    const ApplyTarget& target, const std::vector<Op>& ops, const MutationHook& hook = nullptr,
    const std::function<ReplaceWhen(const ObjectId&)>& replace_when = nullptr,
    const std::function<void()>& close_gate = nullptr, const LetReadersIn& let_in = nullptr);
// The files a run of apply that did not finish put in place of objects of `ops` (whole
// rewrites whose names it exchanged, replacement.h), with their names: a pending apply holds
// them as it holds the objects, since every retry makes them again.
std::vector<std::pair<ObjectId, std::string>> ReplacementsMade(const ApplyTarget& target,
                                                               const std::vector<Op>& ops);
// Step 4. Separate so that a caller can let readers in before it (syncing changes nothing
// they can see).
Status SyncApplied(const AppliedChanges& changes);
// All four steps.
Status ApplyTransaction(const ApplyTarget& target, const std::vector<Op>& ops,
                        const MutationHook& hook = nullptr);

// Makes, durably, the directories step 1 parks objects in, if the plan parks any: they take
// space, so a full backing filesystem must refuse the commit at prepare, not stop apply after
// the decision (regress tx/034).
Status PrepareParking(const ApplyTarget& target, const ApplyPlan& plan);

// Drops staging and parking (deleted objects go with their parking names).
Status CleanupAppliedTransaction(const ApplyTarget& target);

}  // namespace ktmfs::fstx
