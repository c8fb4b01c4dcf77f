#include "src/transaction_manager.h"

#include <algorithm>
#include <cassert>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "src/tm_records.h"

namespace ktmfs::tm {
namespace {

using Clock = std::chrono::steady_clock;

std::string TxName(const Guid& id) {
  return "transaction " + id.ToString();
}

struct Rm {
  std::string name;
  ResourceManager* callbacks = nullptr;
  log::Log* log = nullptr;
};

struct Enlistment {
  Guid rm;
  std::string rm_name;
  std::vector<std::byte> info;
  ResourceManager* callbacks = nullptr;  // null for enlistments found by recovery
  log::Log* log = nullptr;
  NotificationKind awaiting = NotificationKind::kPrepare;  // the last one queued, if notified
  bool notified = false;
  bool awaiting_reply = false;
  log::Lsn durable_at = log::kInvalidLsn;
  bool resolved = false;  // recovered enlistments: the RM has redone or discarded it
  // Notifications queued for delivery; one thread delivers at a time so the RM sees them in
  // order even when replies and timeouts race.
  std::deque<NotificationKind> outbox;
  bool delivering = false;
};

struct Transaction {
  Guid id;
  uint32_t owner = 0;
  std::string description;
  std::optional<std::chrono::milliseconds> timeout;
  Clock::time_point begin;
  std::optional<Clock::time_point> deadline;
  TxState state = TxState::kActive;
  std::vector<std::unique_ptr<Enlistment>> enlistments;
  bool logged = false;  // a record of it is in the log, so its end must be logged too
  bool recovered = false;
  Decision decision = Decision::kNone;  // the decision appended to the log (maybe not durable)
  bool single_phase = false;  // the one RM decides: neither timeout nor rollback can interrupt
  Status reason;              // why it rolls back
  bool finished = false;
  Status failure;  // set when the outcome could not be decided (the TM has failed)
  std::condition_variable done;

  Enlistment* Find(const Guid& rm) {
    for (auto& e : enlistments)
      if (e->rm == rm) return e.get();
    return nullptr;
  }
};

using TxPtr = std::shared_ptr<Transaction>;

}  // namespace

class TransactionManagerImpl final : public TransactionManager {
 public:
  TransactionManagerImpl(log::Log* log, log::Stream* stream, TmOptions options)
      : log_(log), stream_(stream), options_(std::move(options)) {
    if (options_.timeout_thread) timer_ = std::thread([this] { TimerLoop(); });
  }

  ~TransactionManagerImpl() override {
    {
      std::lock_guard l(mu_);
      stop_ = true;
    }
    timer_cv_.notify_all();
    if (timer_.joinable()) timer_.join();
  }

  Status Recover() override;
  Status RegisterResourceManager(const ResourceManagerOptions& o) override;
  Status RecoverResourceManager(
      const Guid& rm, const std::function<Status(const InDoubtEnlistment&)>& resolve) override;
  Result<Guid> Begin(const BeginOptions& o) override;
  Status Enlist(const Guid& id, const Guid& rm) override;
  Status SetEnlistmentInfo(const Guid& id, const Guid& rm,
                           std::span<const std::byte> info) override;
  Status Commit(const Guid& id) override;
  Status Rollback(const Guid& id) override;
  Status PrepareComplete(const Guid& id, const Guid& rm, const Status& result,
                         log::Lsn lsn) override;
  Status SinglePhaseCommitComplete(const Guid& id, const Guid& rm, const Status& result) override;
  Status CommitComplete(const Guid& id, const Guid& rm, log::Lsn lsn) override;
  Status RollbackComplete(const Guid& id, const Guid& rm) override;
  Outcome QueryOutcome(const Guid& id) const override;
  std::vector<TransactionInfo> List() const override;
  Result<TransactionInfo> Query(const Guid& id) const override;
  void ExpireTimeouts(Clock::time_point now) override;
  Status WriteRestartArea() override {
    std::lock_guard l(mu_);
    KTMFS_RETURN_IF_ERROR(Usable());
    return WriteRestartAreaLocked();
  }
  Status Checkpoint() override {
    std::lock_guard l(mu_);
    KTMFS_RETURN_IF_ERROR(Usable());
    // The first moves the base to the previous restart area, which may be far back (written
    // long ago, or by the last session); the second moves it to the first, just behind itself.
    KTMFS_RETURN_IF_ERROR(WriteRestartAreaLocked());
    return WriteRestartAreaLocked();
  }
  TmStats stats() const override {
    std::lock_guard l(mu_);
    return stats_;
  }
  log::Stream* stream() const override { return stream_; }

 private:
  using Deliveries = std::vector<std::pair<TxPtr, Enlistment*>>;

  Status Usable() const;  // mu_ held
  Result<TxPtr> FindTx(const Guid& id) const;
  Result<Enlistment*> FindReplier(const TxPtr& tx, const Guid& rm, NotificationKind kind,
                                  bool* ignore);
  // The start of every *Complete reply (mu_ held): the TM is usable, the transaction exists and
  // `rm` owes a reply to `kind`. Sets *tx and *ignore as FindReplier does.
  Result<Enlistment*> FindReplyLocked(const Guid& id, const Guid& rm, NotificationKind kind,
                                      TxPtr* tx, bool* ignore);
  static bool AllRepliedLocked(const TxPtr& tx);
  Result<log::Lsn> AppendLocked(TmRecordType type, const std::vector<std::byte>& payload);
  void Queue(const TxPtr& tx, Enlistment* e, NotificationKind kind, Deliveries* out);
  void Deliver(const Deliveries& d);
  Deliveries StartRollbackLocked(const TxPtr& tx, Status reason);
  void FinishLocked(const TxPtr& tx, TxState final_state);
  // Every change of a transaction's state goes here (mu_ held).
  void SetStateLocked(Transaction& tx, TxState to);
  void Decide(const TxPtr& tx);
  Status WaitLocked(std::unique_lock<std::mutex>& l, const TxPtr& tx);
  std::vector<TxImage> SnapshotLocked() const;
  Status WriteRestartAreaLocked();
  void MaybeWriteRestartAreaLocked();
  void RetirePendingEndsLocked(bool flush);
  TransactionInfo InfoLocked(const Transaction& tx) const;
  void RememberLocked(const Transaction& tx);
  const std::pair<TransactionInfo, Status>* RecentLocked(const Guid& id) const;
  static bool CanRollBack(const Transaction& tx) {
    return tx.state == TxState::kActive || (tx.state == TxState::kPreparing && !tx.single_phase);
  }
  void TimerLoop();

  log::Log* const log_;
  log::Stream* const stream_;
  const TmOptions options_;

  mutable std::mutex mu_;
  bool recovered_ = false;
  Status failed_;  // once set, the TM refuses everything: an outcome is unknown until recovery
  std::unordered_map<Guid, TxPtr, GuidHash> txs_;
  std::unordered_map<Guid, Rm, GuidHash> rms_;
  // Committed transactions whose end record must wait until the commit records of their RMs in
  // other logs are durable (an end durable before them would let recovery presume an abort).
  // Kept in restart areas, so recovery hands their commit outcome out again if need be.
  struct PendingEnd {
    TxImage image;
    std::vector<std::pair<log::Log*, log::Lsn>> needs;
  };
  std::vector<PendingEnd> pending_ends_;
  // The last finished transactions, so that a late Commit or Query can say what became of them.
  std::deque<std::pair<TransactionInfo, Status>> recent_;
  log::Lsn last_restart_lsn_ = log::kInvalidLsn;
  log::Lsn log_mark_ = 0;  // the log's end at the last restart area (or at recovery)
  uint32_t commits_since_restart_ = 0;
  uint64_t bytes_since_restart_ = 0;
  TmStats stats_;

  std::thread timer_;
  std::condition_variable timer_cv_;
  bool stop_ = false;
};

// ---- helpers

namespace {

// The transaction state machine (tm_types.h): a debug-build check at every change of state.
bool LegalTransition(TxState from, TxState to) {
  switch (from) {
    case TxState::kActive:  // commit, rollback, or a commit with no enlistment
      return to == TxState::kPreparing || to == TxState::kRollingBack || to == TxState::kCommitted;
    case TxState::kPreparing:  // every RM prepared, one refused, or single-phase replied
      return to == TxState::kPrepared || to == TxState::kRollingBack || to == TxState::kCommitted ||
             to == TxState::kRolledBack;
    case TxState::kPrepared:  // the decision durable, or not
      return to == TxState::kCommitting || to == TxState::kRollingBack;
    case TxState::kCommitting:
      return to == TxState::kCommitted;
    case TxState::kRollingBack:
      return to == TxState::kRolledBack;
    case TxState::kCommitted:
    case TxState::kRolledBack:
      return false;
  }
  return false;
}

// The enlistment's side of the protocol, as KTM's: prepare, single-phase commit or rollback
// first; after prepare, commit or rollback; after those, nothing. A debug-build check at every
// notification queued.
bool LegalNotification(const Enlistment& e, NotificationKind next) {
  if (!e.notified) return next != NotificationKind::kCommit;
  return e.awaiting == NotificationKind::kPrepare &&
         (next == NotificationKind::kCommit || next == NotificationKind::kRollback);
}

}  // namespace

void TransactionManagerImpl::SetStateLocked(Transaction& tx, TxState to) {
  assert(LegalTransition(tx.state, to) && "illegal transaction state transition");
  tx.state = to;
}

Status TransactionManagerImpl::Usable() const {
  if (!failed_.ok()) return failed_;
  if (!recovered_)
    return Status::InvalidArgument("stream " + stream_->name() +
                                   ": Recover() must run before the TM is used");
  return Status::Ok();
}

Result<TxPtr> TransactionManagerImpl::FindTx(const Guid& id) const {
  auto it = txs_.find(id);
  if (it != txs_.end()) return it->second;
  if (const auto* recent = RecentLocked(id)) {
    const Status& why = recent->second;
    std::string what = TxName(id) + " has finished: " + ToString(recent->first.state);
    if (!why.ok()) what += " (" + why.message() + ")";
    return Status::Error(why.ok() ? EINVAL : why.code(), what);
  }
  return Status::NotFound(TxName(id) + ": no such transaction");
}

void TransactionManagerImpl::RememberLocked(const Transaction& tx) {
  constexpr size_t kRecent = 4096;
  if (recent_.size() == kRecent) recent_.pop_front();
  recent_.emplace_back(InfoLocked(tx), tx.failure.ok() ? tx.reason : tx.failure);
}

const std::pair<TransactionInfo, Status>* TransactionManagerImpl::RecentLocked(
    const Guid& id) const {
  for (auto it = recent_.rbegin(); it != recent_.rend(); ++it)
    if (it->first.id == id) return &*it;
  return nullptr;
}

Result<Enlistment*> TransactionManagerImpl::FindReplier(const TxPtr& tx, const Guid& rm,
                                                        NotificationKind kind, bool* ignore) {
  *ignore = false;
  Enlistment* e = tx->Find(rm);
  if (e == nullptr)
    return Status::NotFound(TxName(tx->id) + ": resource manager " + rm.ToString() +
                            " is not enlisted");
  if (e->awaiting_reply && e->awaiting == kind) return e;
  // A prepare overtaken by a rollback (timeout, another RM refused) is answered late: harmless.
  if (kind == NotificationKind::kPrepare && tx->state == TxState::kRollingBack) {
    *ignore = true;
    return e;
  }
  return Status::InvalidArgument(TxName(tx->id) + ": resource manager " + e->rm_name +
                                 " replied to " + ToString(kind) + " but was not asked (state " +
                                 ToString(tx->state) + ")");
}

Result<log::Lsn> TransactionManagerImpl::AppendLocked(TmRecordType type,
                                                      const std::vector<std::byte>& payload) {
  log::Stream::AppendArgs args;
  args.type = static_cast<uint16_t>(type);
  args.payload = payload;
  // Records that end a transaction may use the log's reserve: a full log must never keep a
  // transaction from committing or rolling back. Enlistments are new work and may not.
  args.use_reserve =
      type == TmRecordType::kCommit || type == TmRecordType::kAbort || type == TmRecordType::kEnd;
  Result<log::Lsn> lsn = stream_->Append(args);
  if (lsn.ok()) bytes_since_restart_ += payload.size();
  return lsn;
}

void TransactionManagerImpl::Queue(const TxPtr& tx, Enlistment* e, NotificationKind kind,
                                   Deliveries* out) {
  assert(LegalNotification(*e, kind) && "illegal notification for the enlistment's state");
  if (kind == NotificationKind::kRollback) e->outbox.clear();  // supersedes anything queued
  e->notified = true;
  e->awaiting = kind;
  e->awaiting_reply = true;
  e->outbox.push_back(kind);
  out->emplace_back(tx, e);
}

void TransactionManagerImpl::Deliver(const Deliveries& deliveries) {
  std::unique_lock l(mu_);
  for (const auto& [tx, e] : deliveries) {
    if (e->delivering) continue;  // the thread already delivering will send it, in order
    e->delivering = true;
    while (!e->outbox.empty()) {
      NotificationKind kind = e->outbox.front();
      e->outbox.pop_front();
      ResourceManager* rm = e->callbacks;
      l.unlock();
      rm->Notify(Notification{kind, tx->id});
      l.lock();
    }
    e->delivering = false;
  }
}

TransactionManagerImpl::Deliveries TransactionManagerImpl::StartRollbackLocked(const TxPtr& tx,
                                                                               Status reason) {
  Deliveries d;
  SetStateLocked(*tx, TxState::kRollingBack);
  tx->reason = std::move(reason);
  for (auto& e : tx->enlistments)
    Queue(tx, e.get(), NotificationKind::kRollback, &d);
  if (tx->enlistments.empty()) FinishLocked(tx, TxState::kRolledBack);
  return d;
}

void TransactionManagerImpl::FinishLocked(const TxPtr& tx, TxState final_state) {
  SetStateLocked(*tx, final_state);
  PendingEnd pending;
  if (tx->logged && final_state == TxState::kCommitted) {
    for (auto& e : tx->enlistments)
      if (e->log != nullptr && e->log != log_ && e->durable_at != log::kInvalidLsn &&
          e->log->flushed_lsn() <= e->durable_at)  // flushed_lsn is the durable end
        pending.needs.emplace_back(e->log, e->durable_at);
  }
  if (tx->logged) {
    if (!pending.needs.empty()) {
      pending.image = {tx->id, tx->owner, tx->description, Decision::kCommit, {}};
      for (auto& e : tx->enlistments)
        pending.image.enlistments.push_back({e->rm, e->rm_name, e->info});
      pending_ends_.push_back(std::move(pending));
    } else {
      // Not flushed: if it is lost, recovery merely hands the outcome out once more. An append
      // failure (log full) has the same harmless effect.
      (void)AppendLocked(TmRecordType::kEnd, EncodeTxId(tx->id));
    }
  }
  if (final_state == TxState::kCommitted) {
    ++stats_.commits;
    ++commits_since_restart_;
  } else {
    ++stats_.rollbacks;
  }
  tx->finished = true;
  tx->done.notify_all();
  RememberLocked(*tx);
  txs_.erase(tx->id);
  RetirePendingEndsLocked(/*flush=*/false);
  MaybeWriteRestartAreaLocked();
}

Status TransactionManagerImpl::WaitLocked(std::unique_lock<std::mutex>& l, const TxPtr& tx) {
  tx->done.wait(l, [&] { return tx->finished; });
  if (!tx->failure.ok()) return tx->failure;
  if (tx->state == TxState::kCommitted) return Status::Ok();
  return tx->reason.ok() ? Status::Error(ECANCELED, TxName(tx->id) + ": rolled back") : tx->reason;
}

// ---- recovery

Status TransactionManagerImpl::Recover() {
  std::lock_guard l(mu_);
  if (!failed_.ok()) return failed_;
  if (recovered_)
    return Status::InvalidArgument("stream " + stream_->name() + ": already recovered");
  const std::string& sname = stream_->name();

  std::map<Guid, TxImage> live;
  log::Lsn from = stream_->base_lsn();
  log::Lsn restart_lsn = log::kInvalidLsn;
  Result<log::Record> restart = stream_->ReadRestartArea();
  if (!restart.ok() && restart.status().IsCorruption()) {
    // The newest restart area is damaged: fall back to the one before it.
    for (const log::StreamInfo& s : log_->Streams())
      if (s.id == stream_->id()) restart_lsn = s.restart_lsn;
    restart = stream_->ReadPreviousRestartArea(restart_lsn);
  }
  if (restart.ok()) {
    Result<std::vector<TxImage>> images = DecodeRestartArea(*restart, sname);
    if (!images.ok()) return images.status();
    for (TxImage& tx : *images)
      live[tx.id] = std::move(tx);
    from = restart_lsn = restart->lsn;
    last_restart_lsn_ = restart->lsn;
  } else if (!restart.status().IsNotFound()) {
    return restart.status().Annotate("stream " + sname + ": reading the restart area");
  }

  std::unique_ptr<log::Cursor> cursor = stream_->ReadForward(from);
  log::Record rec;
  for (;;) {
    Result<bool> more = cursor->Next(&rec);
    if (!more.ok()) return more.status().Annotate("stream " + sname + ": recovery");
    if (!*more) break;
    if (rec.lsn == restart_lsn || !IsTmRecordType(rec.type)) continue;
    Result<TmRecord> r = DecodeTmRecord(rec, sname);
    if (!r.ok()) return r.status();
    TxImage& tx = r->tx;
    switch (r->type) {
      case TmRecordType::kEnlist: {
        TxImage& t = live[tx.id];
        if (t.id.IsNil()) {
          t.id = tx.id;
          t.owner = tx.owner;
          t.description = tx.description;
        }
        bool known =
            std::any_of(t.enlistments.begin(), t.enlistments.end(),
                        [&](const EnlistmentImage& e) { return e.rm == r->enlistment.rm; });
        if (!known) t.enlistments.push_back(r->enlistment);
        break;
      }
      case TmRecordType::kEnlistInfo: {
        auto it = live.find(tx.id);
        if (it == live.end()) break;
        for (EnlistmentImage& e : it->second.enlistments)
          if (e.rm == r->enlistment.rm) e.info = r->enlistment.info;
        break;
      }
      case TmRecordType::kCommit:
        live[tx.id] = std::move(tx);
        break;
      case TmRecordType::kAbort: {
        auto it = live.find(tx.id);
        if (it != live.end()) it->second.decision = Decision::kAbort;
        break;
      }
      case TmRecordType::kEnd:
        live.erase(tx.id);
        break;
    }
  }

  Clock::time_point now = Clock::now();
  for (auto& [id, image] : live) {
    if (image.enlistments.empty()) continue;
    auto tx = std::make_shared<Transaction>();
    tx->id = id;
    tx->owner = image.owner;
    tx->description = image.description;
    tx->begin = now;
    tx->logged = true;
    tx->recovered = true;
    tx->decision = image.decision;
    // Presumed abort: without a commit decision in the log, the transaction rolls back.
    tx->state = image.decision == Decision::kCommit ? TxState::kCommitting : TxState::kRollingBack;
    for (EnlistmentImage& e : image.enlistments) {
      auto en = std::make_unique<Enlistment>();
      en->rm = e.rm;
      en->rm_name = e.rm_name;
      en->info = std::move(e.info);
      tx->enlistments.push_back(std::move(en));
    }
    txs_[id] = std::move(tx);
  }
  recovered_ = true;
  log_mark_ = log_->end_lsn();
  return Status::Ok();
}

Status TransactionManagerImpl::RegisterResourceManager(const ResourceManagerOptions& o) {
  std::lock_guard l(mu_);
  if (!failed_.ok()) return failed_;
  if (o.callbacks == nullptr || o.name.empty() || o.id.IsNil())
    return Status::InvalidArgument("resource manager '" + o.name +
                                   "': a name, an id and callbacks are required");
  if (rms_.count(o.id))
    return Status::Busy("resource manager " + o.id.ToString() + " is already registered");
  for (const auto& [id, rm] : rms_)
    if (rm.name == o.name)
      return Status::Busy("resource manager name '" + o.name + "' is already registered");
  rms_[o.id] = Rm{o.name, o.callbacks, o.log};
  return Status::Ok();
}

Status TransactionManagerImpl::RecoverResourceManager(
    const Guid& rm, const std::function<Status(const InDoubtEnlistment&)>& resolve) {
  std::vector<std::pair<TxPtr, InDoubtEnlistment>> work;
  {
    std::lock_guard l(mu_);
    KTMFS_RETURN_IF_ERROR(Usable());
    if (!rms_.count(rm))
      return Status::NotFound("resource manager " + rm.ToString() + " is not registered");
    for (const auto& [id, tx] : txs_) {
      if (!tx->recovered) continue;
      Enlistment* e = tx->Find(rm);
      if (e == nullptr || e->resolved) continue;
      Outcome outcome = tx->state == TxState::kCommitting ? Outcome::kCommit : Outcome::kRollback;
      work.push_back({tx, InDoubtEnlistment{id, outcome, e->info}});
    }
  }
  for (auto& [tx, item] : work) {
    Status s = resolve(item);
    if (!s.ok())
      return s.Annotate(TxName(tx->id) + ": resource manager " + rm.ToString() + ": " +
                        ToString(item.outcome));
    std::lock_guard l(mu_);
    tx->Find(rm)->resolved = true;
    bool all = std::all_of(tx->enlistments.begin(), tx->enlistments.end(),
                           [](const auto& e) { return e->resolved; });
    if (all && !tx->finished)
      FinishLocked(tx,
                   item.outcome == Outcome::kCommit ? TxState::kCommitted : TxState::kRolledBack);
  }
  return Status::Ok();
}

// ---- transactions

Result<Guid> TransactionManagerImpl::Begin(const BeginOptions& o) {
  std::lock_guard l(mu_);
  KTMFS_RETURN_IF_ERROR(Usable());
  auto tx = std::make_shared<Transaction>();
  tx->id = Guid::Random();
  tx->owner = o.owner;
  tx->description = o.description;
  tx->timeout = o.timeout;
  tx->begin = Clock::now();
  if (o.timeout) tx->deadline = tx->begin + *o.timeout;
  txs_[tx->id] = tx;
  if (o.timeout) timer_cv_.notify_all();
  return tx->id;
}

Status TransactionManagerImpl::Enlist(const Guid& id, const Guid& rm) {
  std::lock_guard l(mu_);
  KTMFS_RETURN_IF_ERROR(Usable());
  auto rit = rms_.find(rm);
  if (rit == rms_.end())
    return Status::NotFound("resource manager " + rm.ToString() + " is not registered");
  Result<TxPtr> tx = FindTx(id);
  if (!tx.ok()) return tx.status();
  TxPtr t = *tx;
  if (t->state != TxState::kActive)
    return Status::InvalidArgument(TxName(id) + " is " + ToString(t->state) + ": cannot enlist " +
                                   rit->second.name);
  if (t->Find(rm) != nullptr) return Status::Ok();
  TxImage image{id, t->owner, t->description, Decision::kNone, {}};
  EnlistmentImage ei{rm, rit->second.name, {}};
  Result<log::Lsn> lsn = AppendLocked(TmRecordType::kEnlist, EncodeEnlist(image, ei));
  if (!lsn.ok()) return lsn.status().Annotate(TxName(id) + ": enlisting " + rit->second.name);
  auto e = std::make_unique<Enlistment>();
  e->rm = rm;
  e->rm_name = rit->second.name;
  e->callbacks = rit->second.callbacks;
  e->log = rit->second.log;
  t->enlistments.push_back(std::move(e));
  t->logged = true;
  return Status::Ok();
}

Status TransactionManagerImpl::SetEnlistmentInfo(const Guid& id, const Guid& rm,
                                                 std::span<const std::byte> info) {
  std::lock_guard l(mu_);
  KTMFS_RETURN_IF_ERROR(Usable());
  Result<TxPtr> tx = FindTx(id);
  if (!tx.ok()) return tx.status();
  Enlistment* e = (*tx)->Find(rm);
  if (e == nullptr)
    return Status::NotFound(TxName(id) + ": resource manager " + rm.ToString() +
                            " is not enlisted");
  TxState s = (*tx)->state;
  if (s != TxState::kActive && s != TxState::kPreparing)
    return Status::InvalidArgument(TxName(id) + " is " + ToString(s) +
                                   ": recovery information can no longer change");
  Result<log::Lsn> lsn = AppendLocked(TmRecordType::kEnlistInfo, EncodeEnlistInfo(id, rm, info));
  if (!lsn.ok()) return lsn.status().Annotate(TxName(id) + ": recovery information");
  e->info.assign(info.begin(), info.end());
  return Status::Ok();
}

Status TransactionManagerImpl::Commit(const Guid& id) {
  std::unique_lock l(mu_);
  KTMFS_RETURN_IF_ERROR(Usable());
  Result<TxPtr> found = FindTx(id);
  if (!found.ok()) return found.status();
  TxPtr tx = *found;
  if (tx->state == TxState::kRollingBack && !tx->reason.ok())
    return tx->reason.Annotate(TxName(id) + ": cannot commit");
  if (tx->state != TxState::kActive || tx->recovered)
    return Status::InvalidArgument(TxName(id) + " is " + ToString(tx->state) + ": cannot commit");
  Deliveries d;
  if (tx->enlistments.empty()) {
    FinishLocked(tx, TxState::kCommitted);
    return Status::Ok();
  }
  SetStateLocked(*tx, TxState::kPreparing);
  tx->single_phase = tx->enlistments.size() == 1;
  NotificationKind kind =
      tx->single_phase ? NotificationKind::kSinglePhaseCommit : NotificationKind::kPrepare;
  for (auto& e : tx->enlistments)
    Queue(tx, e.get(), kind, &d);
  l.unlock();
  Deliver(d);
  l.lock();
  return WaitLocked(l, tx);
}

Status TransactionManagerImpl::Rollback(const Guid& id) {
  std::unique_lock l(mu_);
  KTMFS_RETURN_IF_ERROR(Usable());
  Result<TxPtr> found = FindTx(id);
  if (!found.ok()) return found.status();
  TxPtr tx = *found;
  if (tx->recovered)
    return Status::InvalidArgument(TxName(id) + " was recovered (" + ToString(tx->state) +
                                   "): it finishes when its resource managers recover");
  if (CanRollBack(*tx)) {
    Deliveries d =
        StartRollbackLocked(tx, Status::Error(ECANCELED, TxName(id) + ": rolled back by request"));
    l.unlock();
    Deliver(d);
    l.lock();
  } else if (tx->state != TxState::kRollingBack) {
    return Status::InvalidArgument(TxName(id) + " is " + ToString(tx->state) +
                                   ": too late to roll back");
  }
  Status s = WaitLocked(l, tx);
  if (tx->state == TxState::kRolledBack && tx->failure.ok()) return Status::Ok();
  return s.ok() ? Status::InvalidArgument(TxName(id) + " committed before the rollback") : s;
}

// ---- replies

Result<Enlistment*> TransactionManagerImpl::FindReplyLocked(const Guid& id, const Guid& rm,
                                                            NotificationKind kind, TxPtr* tx,
                                                            bool* ignore) {
  if (!failed_.ok()) return failed_;
  Result<TxPtr> found = FindTx(id);
  if (!found.ok()) return found.status();
  *tx = *found;
  return FindReplier(*tx, rm, kind, ignore);
}

bool TransactionManagerImpl::AllRepliedLocked(const TxPtr& tx) {
  for (auto& e : tx->enlistments)
    if (e->awaiting_reply) return false;
  return true;
}

Status TransactionManagerImpl::PrepareComplete(const Guid& id, const Guid& rm, const Status& result,
                                               log::Lsn lsn) {
  std::unique_lock l(mu_);
  TxPtr tx;
  bool ignore;
  Result<Enlistment*> e = FindReplyLocked(id, rm, NotificationKind::kPrepare, &tx, &ignore);
  if (!e.ok() || ignore) return e.status();
  (*e)->awaiting_reply = false;
  (*e)->durable_at = lsn;
  if (!result.ok()) {
    Deliveries d = StartRollbackLocked(tx, result.Annotate(TxName(id) + ": resource manager " +
                                                           (*e)->rm_name + " refused to prepare"));
    l.unlock();
    Deliver(d);
    return Status::Ok();
  }
  if (!AllRepliedLocked(tx)) return Status::Ok();
  SetStateLocked(*tx, TxState::kPrepared);
  l.unlock();
  Decide(tx);
  return Status::Ok();
}

// Every RM is prepared: make their prepared state and then the decision durable, then tell them.
void TransactionManagerImpl::Decide(const TxPtr& tx) {
  auto rollback = [&](Status why) {
    std::unique_lock l(mu_);
    Deliveries d = StartRollbackLocked(tx, std::move(why));
    l.unlock();
    Deliver(d);
  };
  // RMs in other logs: flush them to their prepared records (the TM's flush covers the rest).
  for (auto& e : tx->enlistments) {
    if (e->log == nullptr || e->log == log_ || e->durable_at == log::kInvalidLsn) continue;
    Status s = e->log->Flush(e->durable_at);
    if (!s.ok())
      return rollback(s.Annotate(TxName(tx->id) + ": making " + e->rm_name + "'s prepare durable"));
  }
  std::unique_lock l(mu_);
  if (!failed_.ok()) {
    l.unlock();
    return rollback(failed_);
  }
  TxImage image{tx->id, tx->owner, tx->description, Decision::kCommit, {}};
  for (auto& e : tx->enlistments)
    image.enlistments.push_back({e->rm, e->rm_name, e->info});
  Result<log::Lsn> commit_lsn = AppendLocked(TmRecordType::kCommit, EncodeCommit(image));
  if (!commit_lsn.ok()) {
    l.unlock();
    return rollback(commit_lsn.status().Annotate(TxName(tx->id) + ": logging the commit"));
  }
  tx->decision = Decision::kCommit;
  l.unlock();
  // Group commit: concurrent deciders' flushes are coalesced by the log.
  Status flushed = stream_->Flush(*commit_lsn);
  l.lock();
  if (!flushed.ok()) {
    // The decision may or may not have reached the disk. A later abort record overrides it; if
    // even that cannot be made durable, nobody can know the outcome until recovery.
    Status why = flushed.Annotate(TxName(tx->id) + ": commit record at LSN " +
                                  log::LsnToString(*commit_lsn) + " not durable");
    Result<log::Lsn> abort_lsn = AppendLocked(TmRecordType::kAbort, EncodeTxId(tx->id));
    // From here a restart area must say "abort": it would otherwise hide the abort record.
    if (abort_lsn.ok()) tx->decision = Decision::kAbort;
    l.unlock();
    Status aborted = abort_lsn.ok() ? stream_->Flush(*abort_lsn) : abort_lsn.status();
    if (aborted.ok()) return rollback(why);
    l.lock();
    const std::string unknown = why.message() + "; the outcome of " + TxName(tx->id) +
                                " is unknown until the log is recovered";
    if (failed_.ok()) failed_ = Status::IoError(unknown);
    tx->failure = Status::Error(kOutcomeUnknownErrno, unknown);
    tx->finished = true;
    tx->done.notify_all();
    RememberLocked(*tx);
    txs_.erase(tx->id);
    return;
  }
  SetStateLocked(*tx, TxState::kCommitting);
  Deliveries d;
  for (auto& e : tx->enlistments)
    Queue(tx, e.get(), NotificationKind::kCommit, &d);
  l.unlock();
  Deliver(d);
}

Status TransactionManagerImpl::SinglePhaseCommitComplete(const Guid& id, const Guid& rm,
                                                         const Status& result) {
  std::lock_guard l(mu_);
  TxPtr tx;
  bool ignore;
  Result<Enlistment*> e =
      FindReplyLocked(id, rm, NotificationKind::kSinglePhaseCommit, &tx, &ignore);
  if (!e.ok()) return e.status();
  (*e)->awaiting_reply = false;
  if (result.ok()) {
    FinishLocked(tx, TxState::kCommitted);
  } else if (result.code() == kOutcomeUnknownErrno) {
    // The RM's own COMMITTED record is the decision, and it may be on disk: the RM keeps what
    // recovery needs, and the caller learns that nobody knows yet.
    tx->failure = result;
    FinishLocked(tx, TxState::kRolledBack);
  } else {
    tx->reason = result.Annotate(TxName(id) + ": resource manager " + (*e)->rm_name +
                                 " rolled back in single-phase commit");
    FinishLocked(tx, TxState::kRolledBack);
  }
  return Status::Ok();
}

Status TransactionManagerImpl::CommitComplete(const Guid& id, const Guid& rm, log::Lsn lsn) {
  std::lock_guard l(mu_);
  TxPtr tx;
  bool ignore;
  Result<Enlistment*> e = FindReplyLocked(id, rm, NotificationKind::kCommit, &tx, &ignore);
  if (!e.ok()) return e.status();
  (*e)->awaiting_reply = false;
  (*e)->durable_at = lsn;  // the end record waits until this commit record is durable
  if (!AllRepliedLocked(tx)) return Status::Ok();
  FinishLocked(tx, TxState::kCommitted);
  return Status::Ok();
}

Status TransactionManagerImpl::RollbackComplete(const Guid& id, const Guid& rm) {
  std::lock_guard l(mu_);
  TxPtr tx;
  bool ignore;
  Result<Enlistment*> e = FindReplyLocked(id, rm, NotificationKind::kRollback, &tx, &ignore);
  if (!e.ok()) return e.status();
  (*e)->awaiting_reply = false;
  if (!AllRepliedLocked(tx)) return Status::Ok();
  FinishLocked(tx, TxState::kRolledBack);
  return Status::Ok();
}

// ---- queries

Outcome TransactionManagerImpl::QueryOutcome(const Guid& id) const {
  std::lock_guard l(mu_);
  auto it = txs_.find(id);
  if (it != txs_.end() && it->second->state == TxState::kCommitting) return Outcome::kCommit;
  for (const PendingEnd& p : pending_ends_)
    if (p.image.id == id) return Outcome::kCommit;
  return Outcome::kRollback;
}

TransactionInfo TransactionManagerImpl::InfoLocked(const Transaction& tx) const {
  TransactionInfo info;
  info.id = tx.id;
  info.owner = tx.owner;
  info.state = tx.state;
  info.age = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - tx.begin);
  info.timeout = tx.timeout;
  info.description = tx.description;
  info.recovered = tx.recovered;
  for (const auto& e : tx.enlistments)
    info.resource_managers.push_back(e->rm_name);
  return info;
}

std::vector<TransactionInfo> TransactionManagerImpl::List() const {
  std::lock_guard l(mu_);
  std::vector<TransactionInfo> out;
  for (const auto& [id, tx] : txs_)
    out.push_back(InfoLocked(*tx));
  std::sort(out.begin(), out.end(),
            [](const TransactionInfo& a, const TransactionInfo& b) { return a.age > b.age; });
  return out;
}

Result<TransactionInfo> TransactionManagerImpl::Query(const Guid& id) const {
  std::lock_guard l(mu_);
  auto it = txs_.find(id);
  if (it != txs_.end()) return InfoLocked(*it->second);
  if (const auto* recent = RecentLocked(id)) return recent->first;
  return Status::NotFound(TxName(id) + ": no such transaction");
}

// ---- timeouts

void TransactionManagerImpl::ExpireTimeouts(Clock::time_point now) {
  std::vector<Guid> expired;
  Deliveries d;
  {
    std::lock_guard l(mu_);
    std::vector<TxPtr> due;
    for (const auto& [id, tx] : txs_)
      if (tx->deadline && *tx->deadline <= now && CanRollBack(*tx)) due.push_back(tx);
    for (const TxPtr& tx : due) {
      expired.push_back(tx->id);
      Deliveries more = StartRollbackLocked(
          tx, Status::Error(ETIMEDOUT, TxName(tx->id) + ": timeout of " +
                                           std::to_string(tx->timeout->count()) + " ms expired"));
      d.insert(d.end(), more.begin(), more.end());
    }
  }
  Deliver(d);
  if (options_.on_timeout)
    for (const Guid& id : expired)
      options_.on_timeout(id);
}

void TransactionManagerImpl::TimerLoop() {
  std::unique_lock l(mu_);
  while (!stop_) {
    std::optional<Clock::time_point> next;
    for (const auto& [id, tx] : txs_)
      if (tx->deadline && CanRollBack(*tx))
        if (!next || *tx->deadline < *next) next = tx->deadline;
    if (!next) {
      timer_cv_.wait(l);
      continue;
    }
    if (Clock::now() < *next) {
      timer_cv_.wait_until(l, *next);
      continue;
    }
    l.unlock();
    ExpireTimeouts(Clock::now());
    l.lock();
  }
}

// ---- restart areas

std::vector<TxImage> TransactionManagerImpl::SnapshotLocked() const {
  std::vector<TxImage> live;
  for (const PendingEnd& p : pending_ends_)
    live.push_back(p.image);
  for (const auto& [id, tx] : txs_) {
    if (!tx->logged) continue;
    TxImage image{id, tx->owner, tx->description, tx->decision, {}};
    for (const auto& e : tx->enlistments)
      if (!e->resolved) image.enlistments.push_back({e->rm, e->rm_name, e->info});
    live.push_back(std::move(image));
  }
  return live;
}

// Runs with mu_ held, so no record can slip in between the snapshot and the restart area: the
// records after the restart area are exactly what the snapshot does not contain. Everything
// before the previous restart area is then no longer needed (that one stays as a fallback).
Status TransactionManagerImpl::WriteRestartAreaLocked() {
  std::vector<std::byte> payload = EncodeRestartArea(SnapshotLocked());
  Result<log::Lsn> lsn = stream_->WriteRestartArea(payload, last_restart_lsn_);
  if (!lsn.ok()) return lsn.status().Annotate("stream " + stream_->name() + ": restart area");
  last_restart_lsn_ = *lsn;
  log_mark_ = *lsn;
  commits_since_restart_ = 0;
  bytes_since_restart_ = 0;
  ++stats_.restart_areas;
  return Status::Ok();
}

// Logs the end of every pending transaction whose RMs' commit records have become durable since
// (usually by the next commit's flushes); with `flush`, makes them durable first.
void TransactionManagerImpl::RetirePendingEndsLocked(bool flush) {
  std::erase_if(pending_ends_, [&](PendingEnd& p) {
    std::erase_if(p.needs, [&](const std::pair<log::Log*, log::Lsn>& n) {
      return n.first->flushed_lsn() > n.second || (flush && n.first->Flush(n.second).ok());
    });
    if (!p.needs.empty()) return false;
    (void)AppendLocked(TmRecordType::kEnd, EncodeTxId(p.image.id));
    return true;
  });
}

void TransactionManagerImpl::MaybeWriteRestartAreaLocked() {
  // An idle RM's log may never be flushed by anyone else: bound the list.
  constexpr size_t kMaxPendingEnds = 256;
  if (pending_ends_.size() >= kMaxPendingEnds) RetirePendingEndsLocked(/*flush=*/true);
  // The whole log's growth counts too: with one RM single-phase commits log almost nothing in the
  // TM's stream, yet its base, until it moves, holds every other stream's records after it.
  const bool log_grew = log_->end_lsn() - log_mark_ >= options_.restart_every_log_bytes;
  if (commits_since_restart_ < options_.restart_every_commits &&
      bytes_since_restart_ < options_.restart_every_bytes && !log_grew)
    return;
  // A failure here leaves the stream longer, nothing worse; the next attempt retries.
  const log::Lsn base = last_restart_lsn_;  // the stream's base until this one is written
  if (!WriteRestartAreaLocked().ok() || !log_grew) return;
  // The new area makes the previous one the base: while that is far back, the stream still
  // holds the log's growth since. A log that work filled meanwhile would then stay full once
  // that work ended, with nothing left to end and write the next area: a second one brings the
  // base up to the first, which stays as the fallback.
  if (log_->end_lsn() - base >= options_.restart_every_log_bytes) (void)WriteRestartAreaLocked();
}

// ---- opening

Result<std::unique_ptr<TransactionManager>> TransactionManager::Open(log::Log* log,
                                                                     TmOptions options) {
  Result<log::Stream*> stream = log->OpenStream(options.stream_name, true);
  if (!stream.ok()) return stream.status().Annotate("opening the TM stream " + options.stream_name);
  return std::unique_ptr<TransactionManager>(
      std::make_unique<TransactionManagerImpl>(log, *stream, std::move(options)));
}

}  // namespace ktmfs::tm
