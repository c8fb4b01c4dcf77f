// The daemon's transaction service: the log, the transaction manager and one filesystem
// resource manager per backing directory, opened and recovered before the mount appears; the
// table of live transactions (owner, binding, timeout); begin, commit, rollback, query, holder
// and list for the control interface; and the reaper that rolls back transactions whose bound
// process exited or whose timeout expired.
//
// Lifetime of a transaction as the operations see it: `Enter` finds the caller's transaction
// and holds it live (shared) until the returned guard goes; commit and rollback wait for the
// operations in flight and then end it, so an operation never sees a transaction end midway.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "fs/control/fork_events.h"
#include "fs/control/task_bindings.h"
#include "fs/control/user_quota.h"
#include "fs/fuse/caller.h"
#include "fs/mount/layout.h"
#include "fs/mount/options.h"
#include "fs/service/cache_coherence.h"
#include "fs/service/ending_history.h"
#include "fs/tx/fs_resource_manager.h"
#include "log/log.h"
#include "src/transaction_manager.h"

namespace ktmfs::fs {

// What the daemon keeps about one live transaction beyond what the TM and RMs hold.
struct TxContext {
  Guid id;
  uid_t owner = 0;
  gid_t owner_gid = 0;  // the group it began with: whose space its data takes (writer_identity.h)
  std::string name;
  Scope scope = Scope::kProcess;
  pid_t pid = 0;
  uint32_t timeout_sec = 0;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  uint64_t begin_time_ns = 0;
  // Shared by every operation working inside the transaction, exclusive to end it.
  std::shared_mutex live;
  bool ended = false;  // under `live` (exclusive to set)

  // Bytes of writes logged with their data; the RM keeps those ops in memory until the end,
  // so past a budget writes are staged instead (a transaction may be larger than memory). A
  // budget over all sources, not part of any view: what the transaction sees is in its overlays.
  std::atomic<uint64_t> inline_bytes{0};
  // Bytes counted against the owner's -o max_user_memory (TxService::ChargeMemory), given
  // back when the transaction ends.
  std::atomic<uint64_t> memory_charged{0};
  // Descriptors counted against the owner's -o max_user_descriptors (ChargeDescriptor), given
  // back when the transaction ends.
  std::atomic<uint64_t> descriptors_charged{0};
};

// A transaction held live for one operation; empty if the caller is in none.
class TxGuard {
 public:
  TxGuard() = default;
  // Holds the transaction live, then `visibility` shared: an operation inside a transaction
  // reads the backing directory too, and must not see another commit's apply half done.
  TxGuard(std::shared_ptr<TxContext> tx, std::shared_mutex* visibility);
  // The pass read through belongs to the operation's scope: a moved-from guard keeps none.
  TxGuard(TxGuard&& other) noexcept
      : tx_(std::move(other.tx_)),
        lock_(std::move(other.lock_)),
        visible_(std::move(other.visible_)),
        reading_(std::exchange(other.reading_, nullptr)) {}
  // The locks go before the context that owns the mutex they hold.
  TxGuard& operator=(TxGuard&& other) noexcept {
    reading_ = std::exchange(other.reading_, nullptr);
    visible_ = std::move(other.visible_);
    lock_ = std::move(other.lock_);
    tx_ = std::move(other.tx_);
    return *this;
  }
  explicit operator bool() const { return tx_ != nullptr; }
  TxContext* operator->() const { return tx_.get(); }
  TxContext& operator*() const { return *tx_; }
  const Guid& id() const { return tx_->id; }

  // The operation reads through `pass`, its hold at the visibility gate (null: none), which may
  // count objects an apply serves from staging while it writes them in place
  // (VisibilityGate::Pass::AddOrServe): what the operation reads of those comes from
  // ServedFrom. Set by whoever holds the pass, for as long as it does (ReadingThrough).
  void ReadThrough(const fstx::VisibilityGate::Pass* pass) const { reading_ = pass; }
  const fstx::VisibilityGate::Pass* reading() const { return reading_; }
  // What the operation reads `key` from instead of the backing object; null: the object.
  const fstx::ServedObject* ServedFrom(fstx::VisibilityGate::Key key) const {
    return reading_ != nullptr ? reading_->ServedFrom(key) : nullptr;
  }

 private:
  std::shared_ptr<TxContext> tx_;
  std::shared_lock<std::shared_mutex> lock_;
  std::shared_lock<std::shared_mutex> visible_;
  // Per operation, like the guard itself; set through const references, as the operations
  // take their guard so.
  mutable const fstx::VisibilityGate::Pass* reading_ = nullptr;
};

// Sets the pass an operation reads through for this scope, and puts the one before back after.
class ReadingThrough {
 public:
  ReadingThrough(const TxGuard& tx, const fstx::VisibilityGate::Pass* pass)
      : tx_(tx), before_(tx.reading()) {
    tx.ReadThrough(pass);
  }
  ~ReadingThrough() { tx_.ReadThrough(before_); }
  ReadingThrough(const ReadingThrough&) = delete;
  ReadingThrough& operator=(const ReadingThrough&) = delete;

 private:
  const TxGuard& tx_;
  const fstx::VisibilityGate::Pass* const before_;
};

class TxService {
 public:
  // Opens the log (state_dir/log), the TM and an RM per source, and recovers them, printing
  // what recovery did on stderr. An error stops the mount.
  static Result<std::unique_ptr<TxService>> Start(const Options& options, const Layout& layout);
  // Rolls back every live transaction (unmount) and closes the log.
  ~TxService();

  // --- Attribution ---
  // The transaction the calling task is bound to, held live; empty if none.
  TxGuard Enter(pid_t tid);
  // The same by id (handles opened inside a transaction); empty if it has ended.
  TxGuard EnterById(const Guid& id);
  // Whether the transaction has not ended yet (its end, a commit with its apply say, may be
  // under way). Waits for nothing: a request that holds a guard of its own must not wait for
  // another transaction's `live`, which its end holds while it waits for the visibility lock.
  bool IsLive(const Guid& id) const { return Find(id) != nullptr; }
  fstx::FsResourceManager& rm(int source) { return *rms_[source]; }
  // Operations inside transactions hold this shared, apply holds it exclusive.
  std::shared_mutex& visibility() { return visibility_; }
  // Readers outside transactions pass here, object by object; apply closes what it changes.
  fstx::VisibilityGate& gate() { return gate_; }
  // Whether a live transaction changed names in, or attributes of, this committed object: its
  // attributes and entries are then served with zero timeouts to everyone.
  bool IsTouched(dev_t dev, ino_t ino) const;
  // Whether a transaction changes (dev, ino) or just ended with a change to it that the kernel
  // has not yet been told about: a file opened now must not keep pages cached before.
  bool IsUnsettled(int source, dev_t dev, ino_t ino);
  void MarkTouched(const Guid& tx, dev_t dev, ino_t ino);

  // --- Control ---
  Result<Guid> Begin(const CallerContext& caller, Scope scope, pid_t pid, uint32_t timeout_sec,
                     const std::string& name);
  // `id` nil: the caller's transaction. EPERM unless the caller owns it or is root.
  // `apply_pending`, if given, gets a sentence saying why applying a commit that succeeded
  // failed (its apply is then pending: not all of it is visible yet), or is cleared.
  Status Commit(const CallerContext& caller, const Guid& id, std::string* apply_pending = nullptr);
  Status Rollback(const CallerContext& caller, const Guid& id);
  std::optional<Guid> Current(pid_t tid);
  // Counts `bytes` the daemon now holds in memory for `tx` (data kept with its ops until the
  // end) against its owner's cap; ENOSPC, with nothing counted, past it.
  Status ChargeMemory(TxContext& tx, uint64_t bytes);
  // Counts what the RM will keep of `op` until the end (FsResourceManager::MemoryKept) against
  // the owner's cap, before the work the op needs (staging) is done, so that a change refused
  // for the cap leaves nothing behind: ENOSPC past it. The count goes to LogOp as `prepaid`,
  // or back through Refund if the op goes no further.
  Result<uint64_t> ChargeFor(TxContext& tx, const fstx::Op& op);
  void Refund(TxContext& tx, uint64_t bytes);
  // Logs `op` for `tx` in `source`'s RM, counting what ChargeFor would, less `prepaid`, first
  // (ENOSPC, with nothing logged, past the cap). If it fails, all the op was charged, `prepaid`
  // included, is given back.
  Status LogOp(TxContext& tx, int source, const fstx::Op& op, uint64_t prepaid = 0);
  // For a change that stages before it logs: ENOSPC, before anything is staged, if LogOp would
  // refuse `op` for the bound on a user's records (FsResourceManager::CarryLimit).
  Status RoomInLog(const TxContext& tx, int source, const fstx::Op& op);
  // One more descriptor the transaction keeps open until it ends; EMFILE past its owner's cap.
  Status ChargeDescriptor(TxContext& tx);
  // Descriptors kept open that grow with use: live transactions' changed files (all users'
  // together) and what is known of recent tasks.
  uint64_t DescriptorsHeld() { return quota_->TotalDescriptors() + proc_.KeptDescriptors(); }
  struct Info {
    Guid id;
    uid_t owner;
    pid_t pid;
    Scope scope;
    tm::TxState state;
    uint64_t begin_time_ns;
    uint64_t bytes_logged;
    uint32_t objects_locked;
    uint32_t rm_count;
    uint32_t timeout_sec;
    std::string name;
    bool apply_pending = false;  // committed; its apply failed and is retried
    // Its commit's outcome is unknown until the next mount recovers the log (a log write
    // failed at the decision): it holds its objects until then.
    bool outcome_unknown = false;
  };
  // The live transactions, then the committed ones whose apply is pending, then those whose
  // commit's outcome is unknown and which hold objects meanwhile.
  std::vector<Info> List() const;

  // A transaction that ended since the mount, or that recovery settled at it.
  using Ending = TxEnding;
  // The last few hundred endings, newest first.
  std::vector<Ending> Recent() const;

  // Called with what each ended transaction touched, on the thread that ended it, once the
  // transaction no longer holds back its own operations.
  void SetOnEnded(std::function<void(const EndedTx&)> f) { on_ended_ = std::move(f); }
  // Called before a transaction ends (`commit`: by a commit), while its operations still run:
  // the kernel's dirty pages of its files (mmap writes) must reach it through its handles now,
  // and the releases of handles closed just before a commit reach the daemon.
  void SetBeforeEnd(std::function<void(const Guid&, bool commit)> f) { before_end_ = std::move(f); }
  // Called when a commit of source `source` lets readers in while it still copies the data of
  // `objects` in place (FsRmOptions::on_let_in). Set before the first commit.
  void SetOnLetIn(
      std::function<void(const Guid&, int source, const std::vector<fstx::ObjectId>&)> f) {
    on_let_in_ = std::move(f);
  }
  // When a commit replaces an object of source `source` (FsRmOptions::replace_when). Set before
  // the first transaction begins; without it, every whole rewrite is replaced.
  void SetReplaceWhen(
      std::function<fstx::ReplaceWhen(const Guid&, int source, const fstx::ObjectId&)> f) {
    replace_when_ = std::move(f);
  }
  // Whether a program runs from an object of source `source` (FsRmOptions::executing). Set
  // before the first transaction begins; without it, nothing is.
  void SetExecuting(std::function<bool(int source, const fstx::ObjectId&)> f) {
    executing_ = std::move(f);
  }

 private:
  TxService() = default;
  Status Open(const Options& options, const Layout& layout);
  // Lets tree scope follow forks rather than current parents, where the kernel tells them.
  void StartForkEvents();
  std::shared_ptr<TxContext> Find(const Guid& id) const;
  std::shared_ptr<TxContext> Authorize(const CallerContext& caller, const Guid& id, Status* err);
  // The owner, description and begin time the TM remembers of an ended transaction, if any.
  void RememberedByTm(const Guid& tx, Info* i) const;
  // Whether `caller` may bind another user's task and end another user's transaction.
  bool ActsForOthers(const CallerContext& caller);
  static constexpr int kCapSysPtrace = 19;  // linux/capability.h
  // Ends a transaction: waits for its operations, then commits or rolls it back. `why`: the
  // reason for a rollback nobody asked for, remembered with the ending.
  Status End(const std::shared_ptr<TxContext>& tx, bool commit, const char* why = nullptr);
  // What became of a transaction that ended lately ("was rolled back 40 s ago: its timeout
  // expired"); empty if it is not remembered. By id, or the latest one bound to the calling
  // process or one of its ancestors and visible to `uid`.
  std::string EndingOfCaller(pid_t pid, uid_t uid);
  void Reap();

  bool opened_ = false;  // Open succeeded: recovery ran
  std::vector<std::unique_ptr<log::Storage>> storages_;
  std::vector<std::unique_ptr<log::Log>> logs_;
  fstx::VisibilityGate gate_;  // before the RMs, which use it
  std::unique_ptr<tm::TransactionManager> tm_;
  std::vector<std::unique_ptr<fstx::FsResourceManager>> rms_;
  std::atomic<bool> rms_closing_{false};  // rms_ is being cleared (see FsRmOptions::after_end)
  SystemProcReader proc_;
  // Fork events, where the kernel lets the daemon listen: they outlive the bindings using them.
  std::unique_ptr<ProcConnector> proc_events_;
  std::unique_ptr<ForkTracker> forks_;
  TaskBindings bindings_{&proc_};
  std::unique_ptr<UserQuota> quota_;  // made by Start from the options
  std::shared_mutex visibility_;

  mutable std::mutex mu_;
  std::map<Guid, std::shared_ptr<TxContext>> txs_;
  std::atomic<size_t> live_count_{0};  // txs_.size(), read without the mutex on every request
  EndingHistory endings_;
  CacheCoherence coherence_;
  std::function<void(const EndedTx&)> on_ended_;
  std::function<void(const Guid&, bool commit)> before_end_;
  std::function<fstx::ReplaceWhen(const Guid&, int source, const fstx::ObjectId&)> replace_when_;
  std::function<bool(int source, const fstx::ObjectId&)> executing_;
  std::function<void(const Guid&, int source, const std::vector<fstx::ObjectId>&)> on_let_in_;

  std::mutex reaper_mu_;
  std::condition_variable reaper_cv_;
  bool stopping_ = false;
  std::thread reaper_;
};

}  // namespace ktmfs::fs
