// The live transactions: attribution of tasks to them, their control (begin, commit, rollback),
// what they may hold of the daemon, and the reaper that ends what their owners left. Starting
// the service is tx_service_start.cc.
#include "fs/service/tx_service.h"

#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>

#include "fs/mount/daemon_log.h"
#include "fs/tx/staging.h"
#include "log/io.h"
#include "log/sync_fault_storage.h"

namespace ktmfs::fs {

TxGuard::TxGuard(std::shared_ptr<TxContext> tx, std::shared_mutex* visibility)
    : tx_(std::move(tx)) {
  lock_ = std::shared_lock(tx_->live);
  if (tx_->ended) {
    lock_ = {};
    tx_.reset();
    return;
  }
  visible_ = std::shared_lock(*visibility);
}

std::shared_ptr<TxContext> TxService::Find(const Guid& id) const {
  std::lock_guard l(mu_);
  auto it = txs_.find(id);
  return it == txs_.end() ? nullptr : it->second;
}

TxGuard TxService::Enter(pid_t tid) {
  // The common case: no transaction, so no /proc lookups and no lock.
  if (tid == 0 || live_count_.load(std::memory_order_acquire) == 0) return {};
  auto id = bindings_.Lookup(tid);
  if (!id) return {};
  return EnterById(*id);
}

TxGuard TxService::EnterById(const Guid& id) {
  auto tx = Find(id);
  if (!tx) return {};
  return TxGuard(std::move(tx), &visibility_);
}

Status TxService::ChargeMemory(TxContext& tx, uint64_t bytes) {
  KTMFS_RETURN_IF_ERROR(quota_->TakeMemory(tx.owner, bytes));
  tx.memory_charged += bytes;
  return Status::Ok();
}

Result<uint64_t> TxService::ChargeFor(TxContext& tx, const fstx::Op& op) {
  const uint64_t kept = fstx::FsResourceManager::MemoryKept(op);
  KTMFS_RETURN_IF_ERROR(ChargeMemory(tx, kept));
  return kept;
}

void TxService::Refund(TxContext& tx, uint64_t bytes) {
  if (bytes == 0) return;
  tx.memory_charged -= bytes;
  quota_->GiveMemory(tx.owner, bytes);
}

Status TxService::LogOp(TxContext& tx, int source, const fstx::Op& op, uint64_t prepaid) {
  const uint64_t kept = fstx::FsResourceManager::MemoryKept(op);
  const uint64_t more = kept > prepaid ? kept - prepaid : 0;
  if (Status s = ChargeMemory(tx, more); !s.ok()) {
    Refund(tx, prepaid);
    return s;
  }
  // Root's transactions may grow past what can be carried forward; a user's may not (ktmfs(8)).
  Status s =
      rm(source).LogOp(tx.id, op, tx.owner != 0 ? std::optional<uid_t>(tx.owner) : std::nullopt);
  if (!s.ok()) Refund(tx, prepaid + more);
  return s;
}

Status TxService::RoomInLog(const TxContext& tx, int source, const fstx::Op& op) {
  return tx.owner == 0 ? Status::Ok() : rm(source).RoomFor(tx.id, op, tx.owner);
}

Status TxService::ChargeDescriptor(TxContext& tx) {
  KTMFS_RETURN_IF_ERROR(quota_->TakeDescriptor(tx.owner));
  tx.descriptors_charged++;
  return Status::Ok();
}

std::optional<Guid> TxService::Current(pid_t tid) {
  if (tid == 0) return std::nullopt;
  return bindings_.Lookup(tid);
}

bool TxService::IsTouched(dev_t dev, ino_t ino) const {
  return coherence_.IsTouched(dev, ino);
}

bool TxService::IsUnsettled(int source, dev_t dev, ino_t ino) {
  if (!rms_[static_cast<size_t>(source)]->locks().empty() &&
      rms_[static_cast<size_t>(source)]->locks().Holder(fstx::ObjectKey{dev, ino}))
    return true;
  return coherence_.IsSettling(dev, ino);
}

void TxService::MarkTouched(const Guid& tx, dev_t dev, ino_t ino) {
  coherence_.MarkTouched(tx, dev, ino);
}

// Root, as ptrace's rule has it: uid 0 with CAP_SYS_PTRACE in the daemon's user namespace. A
// root process with its capabilities dropped (a sandboxed service) cannot ptrace or signal
// another user's processes natively; it bound them, and rolled back their transactions.
bool TxService::ActsForOthers(const CallerContext& caller) {
  if (caller.uid != 0 || caller.pid <= 0) return false;
  auto c = proc_.Credentials(caller.pid);
  return c.ok() && c->in_daemon_user_namespace && ((c->cap_eff >> kCapSysPtrace) & 1) != 0;
}

Result<Guid> TxService::Begin(const CallerContext& caller, Scope scope, pid_t pid,
                              uint32_t timeout_sec, const std::string& name) {
  pid_t target = pid != 0 ? pid : caller.pid;
  if (target == 0) {
    return Status::Error(EPERM,
                         "the caller is outside the daemon's pid namespace: it cannot be "
                         "bound to a transaction");
  }
  KTMFS_RETURN_IF_ERROR(quota_->TakeTransaction(caller.uid));
  tm::BeginOptions bo;
  bo.owner = caller.uid;
  bo.description = name;
  auto id = tm_->Begin(bo);
  if (!id.ok()) {
    quota_->GiveTransaction(caller.uid);
    return id.status();
  }
  auto ctx = std::make_shared<TxContext>();
  ctx->id = *id;
  ctx->owner = caller.uid;
  ctx->owner_gid = caller.gid;
  ctx->name = name;
  ctx->scope = scope;
  ctx->pid = target;
  ctx->timeout_sec = timeout_sec;
  if (timeout_sec != 0)
    ctx->deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_sec);
  ctx->begin_time_ns = RealtimeNs();
  {
    // In the table before the binding exists, so no request of the bound task finds a binding
    // without its context.
    std::lock_guard l(mu_);
    txs_[*id] = ctx;
    live_count_.store(txs_.size(), std::memory_order_release);
  }
  Status s =
      bindings_.Bind(*id, scope, target, Binder{caller.uid, caller.gid, ActsForOthers(caller)});
  if (!s.ok()) {
    {
      std::lock_guard l(mu_);
      txs_.erase(*id);
      live_count_.store(txs_.size(), std::memory_order_release);
    }
    (void)tm_->Rollback(*id);
    quota_->GiveTransaction(caller.uid);
    return s;
  }
  if (timeout_sec != 0) reaper_cv_.notify_all();
  return *id;
}

std::shared_ptr<TxContext> TxService::Authorize(const CallerContext& caller, const Guid& id,
                                                Status* err) {
  Guid which = id;
  if (which.IsNil()) {
    auto cur = Current(caller.pid);
    if (!cur) {
      const std::string ending = EndingOfCaller(caller.pid, caller.uid);
      *err = Status::Error(ENODATA, "no transaction is bound to the caller" +
                                        (ending.empty() ? "" : ": its " + ending));
      return nullptr;
    }
    which = *cur;
  }
  auto tx = Find(which);
  if (!tx) {
    const std::string ending = endings_.SentenceFor(which);
    *err = Status::NotFound(ending.empty() ? "no live transaction " + which.ToString()
                                           : "the " + ending);
    return nullptr;
  }
  if (caller.uid != tx->owner && !ActsForOthers(caller)) {
    *err = Status::Error(EPERM, "transaction " + which.ToString() + " belongs to another user");
    return nullptr;
  }
  return tx;
}

Status TxService::Commit(const CallerContext& caller, const Guid& id, std::string* apply_pending) {
  Status err;
  auto tx = Authorize(caller, id, &err);
  if (!tx) return err;
  Status s = End(tx, true);
  if (apply_pending == nullptr) return s;
  apply_pending->clear();
  if (!s.ok()) return s;
  for (const auto& rm : rms_)
    for (const auto& p : rm->PendingApplies())
      if (p.tx == tx->id) {
        *apply_pending = "transaction " + tx->id.ToString() +
                         " is committed, but applying it failed: " + p.error;
      }
  return s;
}

Status TxService::Rollback(const CallerContext& caller, const Guid& id) {
  Status err;
  auto tx = Authorize(caller, id, &err);
  if (!tx) return err;
  return End(tx, false);
}

std::string TxService::EndingOfCaller(pid_t pid, uid_t uid) {
  // The caller and its ancestors: txcommit runs as a child of the shell that was bound.
  std::vector<pid_t> chain;
  for (pid_t p = pid; p > 1 && chain.size() < 32;) {
    chain.push_back(p);
    auto info = proc_.ReadStat(p);
    if (!info.ok()) break;
    p = info->ppid;
  }
  return endings_.SentenceForChain(chain, uid);
}

std::vector<TxService::Ending> TxService::Recent() const {
  std::vector<Ending> out = endings_.NewestFirst();
  std::set<Guid> pending;
  for (const auto& rm : rms_)
    for (const auto& p : rm->PendingApplies())
      pending.insert(p.tx);
  for (auto& e : out)
    e.apply_pending = e.outcome == Ending::Outcome::kCommitted && pending.count(e.id) != 0;
  return out;
}

Status TxService::End(const std::shared_ptr<TxContext>& tx, bool commit, const char* why) {
  if (before_end_) before_end_(tx->id, commit);
  std::unique_lock live(tx->live);  // waits for the operations in flight inside it
  if (tx->ended) return Status::NotFound("transaction " + tx->id.ToString() + " has ended");
  tx->ended = true;
  bindings_.Unbind(tx->id);
  Status s = commit ? tm_->Commit(tx->id) : tm_->Rollback(tx->id);
  // The RMs it enlisted in have dropped their part by now; the others may hold a view of it.
  for (auto& rm : rms_)
    rm->DropUnenlisted(tx->id);
  std::vector<EndedTx> ended;
  {
    std::lock_guard l(mu_);
    Ending e;
    e.id = tx->id;
    e.owner = tx->owner;
    e.pid = tx->pid;
    e.name = tx->name;
    e.begin_time_ns = tx->begin_time_ns;
    e.end_time_ns = RealtimeNs();
    e.when = std::chrono::steady_clock::now();
    if (commit) {
      e.outcome = s.ok() ? Ending::Outcome::kCommitted : Ending::Outcome::kCommitFailed;
      if (!s.ok()) e.reason = s.message();
    } else {
      e.outcome = Ending::Outcome::kRolledBack;
      if (why != nullptr) e.reason = why;
    }
    endings_.Remember(std::move(e));
    txs_.erase(tx->id);
    live_count_.store(txs_.size(), std::memory_order_release);
    quota_->GiveTransaction(tx->owner);
    quota_->GiveMemory(tx->owner, tx->memory_charged.exchange(0));
    quota_->GiveDescriptors(tx->owner, tx->descriptors_charged.exchange(0));
    ended = coherence_.TakeEnded(tx->id);
  }
  live.unlock();
  if (on_ended_) {
    for (const auto& e : ended)
      on_ended_(e);
  }
  coherence_.Settled(ended);
  return s;
}

void TxService::Reap() {
  std::unique_lock l(reaper_mu_);
  uint64_t rounds = 0;
  while (!stopping_) {
    // Exits are noticed by polling /proc: a bound process may exit at any moment and nothing
    // tells the daemon. A fifth of a second keeps a rolled-back transaction's locks short.
    reaper_cv_.wait_for(l, std::chrono::milliseconds(200));
    if (stopping_) break;
    l.unlock();
    std::vector<std::pair<std::shared_ptr<TxContext>, const char*>> to_end;
    for (const Guid& id : bindings_.FindOrphans()) {
      if (auto tx = Find(id)) to_end.emplace_back(tx, "its bound process exited");
    }
    const auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard g(mu_);
      for (auto& [id, tx] : txs_)
        if (tx->deadline <= now) to_end.emplace_back(tx, "its timeout expired");
    }
    // Staging of applied transactions goes once their APPLIED records are durable.
    for (auto& rm : rms_)
      rm->DropDurableStaging(true);
    // Committed transactions whose apply failed are tried again now and then (every 5 s).
    if (++rounds % 25 == 0) {
      for (auto& rm : rms_)
        if (!rm->PendingApplies().empty()) rm->RetryPendingApplies();
    }
    for (auto& [tx, why] : to_end) {
      Status s = End(tx, false, why);
      if (s.code() == ENOENT) continue;  // ended meanwhile
      DaemonLog(LogLevel::kNotice, "transaction " + tx->id.ToString() + " rolled back: " + why +
                                       (s.ok() ? "" : ": " + s.message()));
    }
    l.lock();
  }
}

void TxService::RememberedByTm(const Guid& tx, Info* i) const {
  auto q = tm_->Query(tx);
  if (!q.ok()) return;
  i->owner = q->owner;
  i->name = q->description;
  const uint64_t now_ns = RealtimeNs();
  const uint64_t age_ns = static_cast<uint64_t>(q->age.count()) * 1000000ull;
  i->begin_time_ns = now_ns > age_ns ? now_ns - age_ns : 0;
}

std::vector<TxService::Info> TxService::List() const {
  std::vector<std::shared_ptr<TxContext>> live;
  {
    std::lock_guard l(mu_);
    for (auto& [id, tx] : txs_)
      live.push_back(tx);
  }
  std::vector<Info> out;
  for (auto& tx : live) {
    Info i{};
    i.id = tx->id;
    i.owner = tx->owner;
    i.pid = tx->pid;
    i.scope = tx->scope;
    i.begin_time_ns = tx->begin_time_ns;
    i.timeout_sec = tx->timeout_sec;
    i.name = tx->name;
    auto q = tm_->Query(tx->id);
    if (!q.ok()) continue;  // ended meanwhile
    i.state = q->state;
    i.rm_count = static_cast<uint32_t>(q->resource_managers.size());
    for (const auto& rm : rms_) {
      i.bytes_logged += rm->BytesLogged(tx->id);
      i.objects_locked += static_cast<uint32_t>(rm->locks().CountHeldBy(tx->id));
      // One RM's single-phase commit: decided by its record, not by the TM.
      if (i.state == tm::TxState::kPreparing && rm->CommitDecided(tx->id))
        i.state = tm::TxState::kCommitting;
    }
    out.push_back(std::move(i));
  }
  // Committed, applied by nobody yet: listed until their retry succeeds, so an administrator
  // sees what holds their files (contract: a pending apply is shown, not only logged).
  const size_t live_count = out.size();
  for (const auto& rm : rms_) {
    for (const auto& p : rm->PendingApplies()) {
      auto same = std::find_if(out.begin() + static_cast<std::ptrdiff_t>(live_count), out.end(),
                               [&](const Info& i) { return i.id == p.tx; });
      const bool first = same == out.end();
      Info& i = first ? out.emplace_back() : *same;
      if (first) {
        i.id = p.tx;
        i.state = tm::TxState::kCommitted;
        i.apply_pending = true;
        // What the TM still remembers of it; nothing for one recovered at mount.
        RememberedByTm(p.tx, &i);
      }
      i.rm_count++;
      i.objects_locked += static_cast<uint32_t>(rm->locks().CountHeldBy(p.tx));
      i.bytes_logged += rm->BytesLogged(p.tx);
    }
  }
  // Ended, neither live nor pending, and still holding objects: a commit whose outcome only
  // the next mount's recovery will know. Listed, so that whoever meets EBUSY sees the holder
  // (contract: every transaction can be listed).
  for (const auto& rm : rms_) {
    for (const Guid& tx : rm->locks().Holders()) {
      auto same = std::find_if(out.begin(), out.end(), [&](const Info& i) { return i.id == tx; });
      const bool first = same == out.end();
      if (!first && !same->outcome_unknown) continue;
      Info& i = first ? out.emplace_back() : *same;
      if (first) {
        i.id = tx;
        i.state = tm::TxState::kPrepared;
        i.outcome_unknown = true;
        RememberedByTm(tx, &i);
      }
      i.rm_count++;
      i.objects_locked += static_cast<uint32_t>(rm->locks().CountHeldBy(tx));
    }
  }
  return out;
}

}  // namespace ktmfs::fs
