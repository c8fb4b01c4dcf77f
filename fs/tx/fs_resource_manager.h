// The filesystem resource manager for one backing directory: takes part in transactions for
// the changes made under it. Changes are staged (TxStaging) and logged as op records in the
// RM's own stream as they happen; prepare makes staging durable and logs PREPARED; commit logs
// COMMITTED, applies (apply.h), logs APPLIED and drops staging; rollback drops staging.
// Recovery reads the stream and redoes or discards every unfinished transaction.
//
// The protocol is fs_resource_manager.cc; the background fsyncs after apply, queued in an
// AppliedSyncQueue (applied_sync_queue.h), fs_rm_background_sync.cc; giving the stream back to
// the log, fs_rm_stream_truncation.cc; recovery, fs_rm_recovery.cc.
//
// Replies are made synchronously from Notify. Apply runs before the commit is acknowledged, so
// Commit returns with the backing directory updated; with sync_in_background, the fsyncs of
// a single-phase commit's apply (and its APPLIED record) follow in a background thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "fs/tx/applied_sync_queue.h"
#include "fs/tx/apply.h"
#include "fs/tx/apply_targets_check.h"
#include "fs/tx/lock_table.h"
#include "fs/tx/overlay.h"
#include "fs/tx/records.h"
#include "fs/tx/staging.h"
#include "fs/tx/stream_truncator.h"
#include "fs/tx/visibility_gate.h"
#include "fs/tx/writer_identity.h"
#include "log/log.h"
#include "log/owned_mutex.h"
#include "src/transaction_manager.h"

namespace ktmfs::fstx {

class SyncTogether;

struct FsRmOptions {
  std::string name;          // the RM's name in listings, e.g. the mount's backing name
  Guid id;                   // stable across restarts
  std::string backing_root;  // the backing directory
  std::string staging_root;  // <state>/staging/<rm>: same mount as backing_root
  tm::TransactionManager* tm = nullptr;
  log::Log* log = nullptr;
  log::Stream* stream = nullptr;  // the RM's own stream in `log`
  // `stream` was made at this mount: nothing the RM ever logged is in it. A transaction the TM
  // says it took part in then cannot be told applied (its log is elsewhere: a source
  // directory whose filesystem is not mounted, a source renamed on the command line), and
  // recovery refuses the mount instead.
  bool stream_is_new = false;
  // Held exclusively while apply changes the backing directory, so a reader holding it shared
  // sees a commit either not at all or whole. Optional.
  std::shared_mutex* visibility = nullptr;
  // Closed, for the objects a transaction holds and the directories whose entries it holds,
  // while apply changes them (visibility_gate.h), for the readers of the committed view outside
  // transactions. Optional.
  VisibilityGate* gate = nullptr;
  // Called once a transaction this RM took part in has ended here (committed and applied, or
  // rolled back), before its overlay is dropped, so the daemon can invalidate what it touched.
  // `replaced`: the (directory, name) pairs apply gave a new file (whole rewrites, apply.h),
  // whose old file the kernel may still hold under that name.
  std::function<void(const Guid& tx, bool committed, const TxOverlay& overlay,
                     const std::vector<std::pair<std::string, std::string>>& replaced)>
      on_end;
  // A single-phase commit is acknowledged once its COMMITTED record is durable and apply has
  // made the backing directory show it; fsyncing what apply changed and logging APPLIED follow
  // in a background thread, for several commits at once. The log keeps such a commit for redo
  // until then. What must not land on its changes before they are durable waits for them: every
  // later Prepare here (for the syncs; its own decision flush covers the APPLIED records), and
  // the daemon's non-transactional changes (WaitAppliedDurable).
  bool sync_in_background = false;
  // Called when a pending apply (see PendingApply) has finally been done, with the existing
  // objects it changed and the (directory, name) pairs whose entries it changed, so the daemon
  // can drop what the kernel cached of them meanwhile.
  std::function<void(const Guid& tx, const std::vector<ObjectId>& objects,
                     const std::vector<std::pair<std::string, std::string>>& entries)>
      on_late_apply;
  // When apply replaces an object the committing transaction rewrote whole (apply.h,
  // replacement.h) rather than write it in place. Asked while the object is closed at the gate.
  // Optional: without it, every whole rewrite is replaced.
  std::function<ReplaceWhen(const Guid& tx, const ObjectId& id)> replace_when;
  // Called when apply lets readers in with the data of `objects` still to be copied in place,
  // served from staging meanwhile (those it cannot serve are not named): what the kernel cached
  // of them from before the commit is stale from then on, not only once the copy is done.
  std::function<void(const Guid& tx, const std::vector<ObjectId>& objects)> on_let_in;
  // Whether a program runs from the existing file `id` (an exec(2) holds it open). Prepare
  // refuses, with ETXTBSY as a write to it would be natively, a commit that writes or truncates
  // such a file: apply would change the program's code under it. Optional.
  std::function<bool(const ObjectId& id)> executing;
  // Whose space the small writes a transaction's records carry take (writer_identity.h):
  // prepare reserves their blocks as these ids, so a user's commit is refused where the user's
  // own writes would be (its staged data took its writers' space already). Nullopt (root, a
  // transaction recovery finds, or no callback): as the daemon.
  std::function<std::optional<WriterIds>(const Guid& tx)> space_owner;
  // Called when a transaction's end here has given back what it held of the stream
  // (MaybeTruncate), so the daemon can offer the other RMs that share the log the same
  // (GiveBackLog): one whose own transactions never end (a source nobody changes) would
  // otherwise keep the log from its stream's base for ever. Optional.
  std::function<void()> after_end;
  // What happens in the background that someone must hear of (an apply that failed and stays
  // pending, a pending apply done, a failed sync): the daemon logs it. `error` for failures.
  std::function<void(bool error, const std::string& message)> report;
};

class FsResourceManager : public tm::ResourceManager {
 public:
  explicit FsResourceManager(FsRmOptions options);
  ~FsResourceManager() override;

  // Start-up, in KTM order, after the TM recovered: Register, then Recover.
  Status Register();
  Status Recover();
  // What the last Recover did, for the daemon's report.
  struct RecoveryReport {
    size_t redone = 0;       // committed transactions applied again (or for the first time)
    size_t rolled_back = 0;  // unfinished transactions discarded
    size_t leftovers = 0;    // staging directories of no transaction, removed
    size_t pending = 0;      // committed transactions whose apply failed again: still pending
    // Which transactions recovery settled, for the daemon's log: a commit whose outcome the
    // caller was told is unknown is found here by its id.
    std::vector<Guid> redone_txs, rolled_back_txs, pending_txs;
  };
  const RecoveryReport& recovery_report() const { return report_; }

  // --- What the filesystem operations call, for a request bound to transaction `tx`. ---
  // Takes the locks the change needs (EBUSY naming the holder, nothing logged, on conflict).
  Status Lock(const Guid& tx, const std::vector<LockKey>& keys);
  // One key, with where it is in the backing tree (see LockTable::HeldUnder).
  Status LockAt(const Guid& tx, const LockKey& key, const std::string& backing_path);
  // The handle of the existing object (dev, ino) the transaction changes, as it is now (the
  // first one given is kept): prepare refuses the commit if another object has taken its
  // number at its name by then (CheckApplyTargets). Nothing else keeps its number from reuse.
  void Identify(const Guid& tx, dev_t dev, ino_t ino, ObjectHandle handle);
  // The mount the backing directory is reached through (mount_id.h). Apply renames between
  // staging and the backing directory, and no rename crosses a mount, so a transaction may
  // change names only in directories on this one. nullopt if the kernel gives no mount ids.
  std::optional<uint64_t> backing_mount() const { return backing_mount_; }
  // The transaction's staging, created (and the RM enlisted) on first use.
  Result<TxStaging*> Staging(const Guid& tx);
  // The transaction's staging if it has any yet (reads must not enlist).
  TxStaging* FindStaging(const Guid& tx);
  // A number for an object the transaction creates (staged as StagedNameForNew(number)).
  Result<uint64_t> NewObjectNumber(const Guid& tx);
  // Records one operation in the transaction's overlay (which validates it against the view:
  // an error there changes nothing) and logs it; enlists on the first one. Call after its
  // staging work is done. `bounded_owner` (a user's transaction, not root's): ENOSPC, changing
  // nothing, if the transaction's records would then take more than CarryLimit, or those of all
  // that user's live transactions here more than twice that: transactions left open must never
  // keep the log from everyone.
  Status LogOp(const Guid& tx, const Op& op, std::optional<uid_t> bounded_owner = std::nullopt);
  // The most a live transaction's records may take and still be carried forward
  // (CarryForwardIdle): a sixteenth of the log. 0 without a log.
  uint64_t CarryLimit() const;
  // ENOSPC if logging `op` as a LogOp bounded for `owner` would refuse it: asked before a
  // change stages anything, so that the refusal leaves nothing to undo.
  Status RoomFor(const Guid& tx, const Op& op, uid_t owner);
  // An estimate of what the RM keeps in memory for `op` until its transaction ends (the op
  // and its overlay entry): what its owner's memory cap counts.
  static uint64_t MemoryKept(const Op& op);
  // The transaction's view of this RM's backing directory; nullptr until its first change. Valid
  // until the transaction ends (the caller keeps the transaction from ending meanwhile).
  TxOverlay* Overlay(const Guid& tx);
  // The same, made if it is not there yet, without enlisting: for a change that logs nothing but
  // shows in the view (chown(f, -1, -1) still stamps the file's ctime), and must cost the
  // commit nothing. The daemon drops it with DropUnenlisted when the transaction ends, unless
  // a later change enlisted the RM, whose end then drops it.
  TxOverlay* OverlayFor(const Guid& tx);
  // The transaction has ended: drops what it kept here without enlisting (OverlayFor).
  void DropUnenlisted(const Guid& tx);
  // Moves the stream's base past what no unfinished transaction needs (see MaybeTruncate), as a
  // transaction's end here does: for an RM whose own transactions do not end, when another's
  // on the same log do (FsRmOptions::after_end).
  void GiveBackLog() { MaybeTruncate(); }
  log::Log* log() const { return o_.log; }
  // Bytes of op records logged for the transaction (txstat).
  uint64_t BytesLogged(const Guid& tx);
  // Whether this RM's COMMITTED record for the transaction is durable while it still applies:
  // a single-phase commit is decided here, and the TM, which only waits, still calls it
  // preparing (txstat).
  bool CommitDecided(const Guid& tx);
  LockTable& locks() { return locks_; }

  // --- Committed transactions whose apply failed after the decision ---
  // Apply can fail for reasons outside ktmfs (EIO, an administrator's change behind the
  // daemon's back). Such a transaction stays committed, with its apply pending: it keeps its
  // locks (so nothing lands on its objects that a later apply would overwrite), its staging and
  // its records (the stream is not truncated past its first one), and it is applied again by
  // RetryPendingApplies and at every mount. A mount never fails because of it.
  struct PendingApply {
    Guid tx;
    std::string error;  // why the last attempt failed
    size_t attempts = 0;
  };
  std::vector<PendingApply> PendingApplies();
  // Tries every pending apply again; returns how many are still pending.
  size_t RetryPendingApplies();
  // Drops the staging of applied transactions whose APPLIED record is durable by now (done
  // after every apply). `flush`: make them durable first if they are not (the daemon's idle
  // housekeeping), so staging does not wait for the next commit.
  void DropDurableStaging(bool flush = false);

  // Returns once every commit applied so far is synced and its APPLIED record appended (not
  // necessarily durable: the next flush of the log covers it); an error if a background sync
  // failed. What Prepare waits for.
  Status WaitSynced();
  // ETXTBSY if `plan` writes or truncates a file a program runs from (FsRmOptions::executing).
  Status RefuseRunningPrograms(const ApplyPlan& plan) const;
  // Returns once every commit applied so far is durable in the backing directory (see
  // FsRmOptions::sync_in_background); an error if a background sync failed, after which the
  // backing directory is only known to be right after recovery.
  Status WaitAppliedDurable();
  // Whether some applied commit is not durable yet, in the backing directory or (its APPLIED
  // record) in the log (cheap: callers test it first).
  bool AppliedPending() const {
    return (syncs_ != nullptr && syncs_->Unsynced()) ||
           unflushed_applied_.load(std::memory_order_acquire) != log::kInvalidLsn;
  }

  void Notify(const tm::Notification& n) override;

  // Tests: called before each change apply makes (see MutationHook).
  void SetApplyHook(MutationHook hook) { apply_hook_ = std::move(hook); }
  // Tests: called by Prepare once it has let go of the RM's mutex, before it syncs staging.
  void SetPrepareHook(std::function<void(const Guid& tx)> hook) { prepare_hook_ = std::move(hook); }
  // Tests: whether some thread holds the RM's mutex now.
  bool MutexHeldForTests() {
    if (!mu_.try_lock()) return true;
    mu_.unlock();
    return false;
  }
  // Tests: called by the sync thread before it syncs a batch. Set before the first commit.
  void SetSyncHook(std::function<void()> hook) {
    if (syncs_) syncs_->SetHook(std::move(hook));
  }
  // Tests: how many callers are inside WaitAppliedDurable.
  int sync_waiters() const { return syncs_ ? syncs_->waiters() : 0; }

 private:
  struct Tx {
    std::unique_ptr<TxStaging> staging;
    std::unique_ptr<TxOverlay> overlay;
    std::vector<Op> ops;
    uint64_t bytes_logged = 0;
    std::optional<uid_t> owner;             // a user's, whose records count in owner_logged_
    log::Lsn first_lsn = log::kInvalidLsn;  // its first record: the stream is needed from here
    uint64_t next_object = 0;
    bool enlisted = false;
    bool broken = false;   // an op reached the overlay but not the log
    bool decided = false;  // COMMITTED is durable; apply under way (CommitDecided)
    // Prepare or rollback has begun: its ops are final, and PREPARED or ABORTED may follow them
    // at any moment, so they are no longer carried forward (CarryForwardIdle).
    bool ending = false;
    std::vector<std::pair<std::string, std::string>> replaced;  // see FsRmOptions::on_end
    ObjectIdentities identities;                                // see Identify
  };
  // Records beyond the durable end that one op flushes out of the log's memory.
  static constexpr uint64_t kMaxUnflushedBytes = 4 << 20;
  Result<Tx*> Enlisted(const Guid& tx);  // mu_ held
  // Enlisted, with mu_ held through `l`; refused by a full log, lets go of mu_ to wait for the
  // commits still syncing and give the stream back (MaybeTruncate), then tries once more.
  Result<Tx*> EnlistedFreeingLog(std::unique_lock<OwnedMutex>& l, const Guid& tx);
  TxOverlay* OverlayLocked(Tx& t);  // mu_ held
  // LogOp's work under mu_: the LSN of the op's record.
  Result<log::Lsn> LogOpLocked(const Guid& tx, const Op& op, std::optional<uid_t> bounded_owner);
  // ENOSPC, naming the transaction or its owner and the bound, if `bytes` more records would
  // take the transaction (which has logged `logged`) past CarryLimit, or its owner's live
  // transactions past twice that; OK otherwise. mu_ held.
  Status CheckRecordBoundsLocked(const Guid& tx, uint64_t logged, uid_t owner,
                                 uint64_t bytes) const;
  Result<log::Lsn> Append(const fstx::Record& r);
  Status Prepare(const Guid& tx, log::Lsn* lsn);
  // Logs COMMITTED (unless already), applies, logs and flushes APPLIED, drops staging.
  Status CommitAndApply(const Guid& tx, const std::vector<Op>& ops, bool log_committed,
                        log::Lsn* committed_lsn);
  // Applies, then logs APPLIED and drops staging once durable; *applied says whether the
  // backing directory got to match (even if logging APPLIED then failed). `background`: the
  // sync and APPLIED are left to the sync thread.
  Status ApplyAndFinish(const Guid& tx, const std::vector<Op>& ops, bool* applied,
                        bool background = false);
  // What readers of `objects`, which apply writes in place after letting readers into the
  // rest, are served meanwhile: each one's staged file, where the transaction's staging has it.
  VisibilityGate::Closed::ServedObjects ServedWhileApplied(const Guid& tx,
                                                           const std::vector<ObjectId>& objects);
  // What apply closes to readers (FsRmOptions::gate): what tx holds.
  std::vector<VisibilityGate::Key> GateKeys(const Guid& tx) const;
  // Logs APPLIED for a transaction whose apply is durable; DropDurableStaging drops its
  // staging once the record is durable.
  Status Applied(const Guid& tx);
  // After APPLIED records are appended and not flushed: WaitAppliedDurable is to flush up to
  // the stream's end as it is now.
  void NoteUnflushedApplied();
  // The background sync thread's work: syncs what a batch of applied commits changed, all at
  // once, and logs their APPLIED records (AppliedSyncQueue::SyncBatch).
  Status SyncBatch(const std::vector<AppliedSyncQueue::Item>& batch);
  Status Abort(const Guid& tx);
  // A committed transaction whose apply did not finish keeps its locks until recovery redoes
  // it: another transaction changing those objects first would be overwritten by the redo.
  void Forget(const Guid& tx, bool release_locks, bool committed);
  // Passes a background event to FsRmOptions::report, if any.
  void Report(bool error, const std::string& message) const;
  // Records a committed transaction whose apply failed (see PendingApply) and says so loudly.
  void KeepPending(const Guid& tx, std::vector<Op> ops, log::Lsn first_lsn, const Status& why,
                   bool owes_commit_reply = false);
  // At recovery, where no lock survived: takes the locks of a pending transaction's objects
  // and names again, from its plan.
  void LockPending(const Guid& tx, const std::vector<Op>& ops);
  // A pending apply that already exchanged a whole rewrite's names makes that file again on
  // every retry: it holds the new file too (ReplacementsMade), so nobody changes it meanwhile
  // and readers meet it closed at the gate.
  void LockReplacements(const Guid& tx, const std::vector<Op>& ops);
  // Nothing before the first record of the oldest live transaction is needed again: moves the
  // stream's base there (with a restart area, so it is durable) once enough has been appended
  // since the last time. Carries idle transactions forward first (CarryForwardIdle).
  // `force`: however little was appended (a clean shutdown).
  void MaybeTruncate(bool force = false);
  // Once half the log is in use, a live transaction whose first record lies a quarter of the
  // log or more behind its end, and whose own records are a small part of the log, has its ops
  // logged again, whole, in one RELOGGED record at the end: the stream's base may then pass its
  // earlier records. A transaction left open while others work so no longer fills the log for
  // everyone (CLFS moves a log's tail the same way); one whose own records fill it still does.
  void CarryForwardIdle();
  // Where the stream is needed from when no transaction needs anything: the log's end.
  log::Lsn NothingNeededFrom() const;
  // `s`, and if it is "log full" and a live transaction here holds the stream's base, its name.
  Status NamePinnerLocked(const Status& s) const;  // mu_ held
  ApplyTarget Target(const Guid& tx) const;

  const FsRmOptions o_;
  const std::optional<uint64_t> backing_mount_;  // see backing_mount
  RecoveryReport report_;
  bool recovered_ = false;  // Recover() finished: the stream may be truncated at shutdown
  LockTable locks_;
  MutationHook apply_hook_;
  std::function<void(const Guid& tx)> prepare_hook_;
  mutable OwnedMutex mu_;
  std::map<Guid, Tx> txs_;
  std::map<uid_t, uint64_t> owner_logged_;  // records of each user's live transactions (mu_)
  struct Unclean {
    log::Lsn applied_lsn;
    ApplyTarget target;
  };
  std::vector<Unclean> unclean_;  // applied, staging kept until APPLIED is durable
  // A commit whose outcome is in doubt (its COMMITTED flush failed) needs its records at the
  // next recovery: the stream is not truncated until then.
  bool keep_log_ = false;
  struct Pending {
    PendingApply info;
    std::vector<Op> ops;
    log::Lsn first_lsn = log::kInvalidLsn;  // the stream is needed from here
    // Two-phase commit whose COMMITTED append failed too: the TM still waits for the reply.
    bool owes_commit_reply = false;
  };
  std::vector<Pending> pending_;  // mu_
  StreamTruncator truncator_;

  // The background syncs (sync_in_background; null without). Lock order: mu_ before the
  // queue's own; its thread calls back with nothing held.
  std::unique_ptr<SyncTogether> together_;   // made at the start; used by the queue's thread
  std::unique_ptr<AppliedSyncQueue> syncs_;  // after together_, which its thread uses
  // The newest APPLIED record appended by a commit applied in the foreground (two-phase) that
  // no flush may have covered yet; kInvalidLsn when none. A change outside transactions flushes
  // it first: until it is durable, recovery would redo that commit over the change.
  std::atomic<log::Lsn> unflushed_applied_{log::kInvalidLsn};
  // DropDurableStaging's flush failed and said so; cleared by its next success.
  std::atomic<bool> housekeeping_flush_failed_{false};
};

}  // namespace ktmfs::fstx
