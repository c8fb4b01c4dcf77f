// The filesystem resource manager for one backing directory: takes part in transactions for
// the changes made under it. Changes are staged (TxStaging) and logged as op records in the
// RM's own stream as they happen; prepare makes staging durable and logs PREPARED; commit logs
// COMMITTED, applies (apply.h), logs APPLIED and drops staging; rollback drops staging.
// Recovery reads the stream and redoes or discards every unfinished transaction.
//
// Replies are made synchronously from Notify. Apply runs before the commit is acknowledged, so
// Commit returns with the backing directory updated.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "fs/tx/apply.h"
#include "fs/tx/lock_table.h"
#include "fs/tx/overlay.h"
#include "fs/tx/records.h"
#include "fs/tx/staging.h"
#include "log/log.h"
#include "src/transaction_manager.h"

namespace ktmfs::fstx {

struct FsRmOptions {
  std::string name;          // the RM's name in listings, e.g. the mount's backing name
  Guid id;                   // stable across restarts
  std::string backing_root;  // the backing directory
  std::string staging_root;  // <state>/staging/<rm>: same filesystem as backing_root
  tm::TransactionManager* tm = nullptr;
  log::Log* log = nullptr;
  log::Stream* stream = nullptr;  // the RM's own stream in `log`
  // Held exclusively while apply changes the backing directory, so a reader holding it shared
  // sees a commit either not at all or whole. Optional.
  std::shared_mutex* visibility = nullptr;
  // Called once a transaction this RM took part in has ended here (committed and applied, or
  // rolled back), before its overlay is dropped, so the daemon can invalidate what it touched.
  std::function<void(const Guid& tx, bool committed, const TxOverlay& overlay)> on_end;
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
  };
  const RecoveryReport& recovery_report() const { return report_; }

  // --- What the filesystem operations call, for a request bound to transaction `tx`. ---
  // Takes the locks the change needs (EBUSY naming the holder, nothing logged, on conflict).
  Status Lock(const Guid& tx, const std::vector<LockKey>& keys);
  // The transaction's staging, created (and the RM enlisted) on first use.
  Result<TxStaging*> Staging(const Guid& tx);
  // The transaction's staging if it has any yet (reads must not enlist).
  TxStaging* FindStaging(const Guid& tx);
  // A number for an object the transaction creates (staged as StagedNameForNew(number)).
  Result<uint64_t> NewObjectNumber(const Guid& tx);
  // Records one operation in the transaction's overlay (which validates it against the view:
  // an error there changes nothing) and logs it; enlists on the first one. Call after its
  // staging work is done.
  Status LogOp(const Guid& tx, const Op& op);
  // The transaction's view of this RM's backing directory; nullptr until its first change. Valid
  // until the transaction ends (the caller keeps the transaction from ending meanwhile).
  TxOverlay* Overlay(const Guid& tx);
  // Bytes of op records logged for the transaction (txstat).
  uint64_t BytesLogged(const Guid& tx);
  LockTable& locks() { return locks_; }
  // Drops the staging of applied transactions whose APPLIED record is durable by now (done
  // after every apply). `flush`: make them durable first if they are not (the daemon's idle
  // housekeeping), so staging does not wait for the next commit.
  void DropDurableStaging(bool flush = false);

  void Notify(const tm::Notification& n) override;

  // Tests: called before each change apply makes (see MutationHook).
  void SetApplyHook(MutationHook hook) { apply_hook_ = std::move(hook); }

 private:
  struct Tx {
    std::unique_ptr<TxStaging> staging;
    std::unique_ptr<TxOverlay> overlay;
    std::vector<Op> ops;
    uint64_t bytes_logged = 0;
    log::Lsn first_lsn = log::kInvalidLsn;  // its first record: the stream is needed from here
    uint64_t next_object = 0;
    bool enlisted = false;
    bool broken = false;  // an op reached the overlay but not the log
  };
  Result<Tx*> Enlisted(const Guid& tx);  // mu_ held
  Result<log::Lsn> Append(const fstx::Record& r);
  Status Prepare(const Guid& tx, log::Lsn* lsn);
  // Logs COMMITTED (unless already), applies, logs and flushes APPLIED, drops staging.
  Status CommitAndApply(const Guid& tx, const std::vector<Op>& ops, bool log_committed,
                        log::Lsn* committed_lsn);
  // Applies, then logs and flushes APPLIED and drops staging; *applied says whether the
  // backing directory got to match (even if logging APPLIED then failed).
  Status ApplyAndFinish(const Guid& tx, const std::vector<Op>& ops, bool* applied);
  Status Abort(const Guid& tx);
  // A committed transaction whose apply did not finish keeps its locks until recovery redoes
  // it: another transaction changing those objects first would be overwritten by the redo.
  void Forget(const Guid& tx, bool release_locks, bool committed);
  // Nothing before the first record of the oldest live transaction is needed again: moves the
  // stream's base there (with a restart area, so it is durable) once enough has been appended
  // since the last time.
  void MaybeTruncate();
  ApplyTarget Target(const Guid& tx) const;

  const FsRmOptions o_;
  RecoveryReport report_;
  LockTable locks_;
  MutationHook apply_hook_;
  std::mutex mu_;
  std::map<Guid, Tx> txs_;
  struct Unclean {
    log::Lsn applied_lsn;
    ApplyTarget target;
  };
  std::vector<Unclean> unclean_;  // applied, staging kept until APPLIED is durable
  // A committed transaction whose apply failed needs its records at the next recovery: the
  // stream is not truncated until then.
  bool keep_log_ = false;
  log::Lsn truncated_at_ = log::kInvalidLsn;
};

}  // namespace ktmfs::fstx
