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
namespace {

// An RM's id must be the same at every mount (the TM's records name RMs by it), so it is
// derived from the source's name, which the mount command fixes.
Guid RmIdFor(const std::string& name) {
  Guid g;
  uint64_t h1 = 1469598103934665603ull, h2 = 0x9e3779b97f4a7c15ull;
  for (unsigned char c : "ktmfs resource manager " + name) {
    h1 = (h1 ^ c) * 1099511628211ull;
    h2 = (h2 ^ c) * 0x100000001b3ull + 0x7f4a7c15;
  }
  std::memcpy(g.bytes.data(), &h1, 8);
  std::memcpy(g.bytes.data() + 8, &h2, 8);
  g.bytes[6] = (g.bytes[6] & 0x0f) | 0x80;  // a name-based GUID (version 8, RFC 9562)
  g.bytes[8] = (g.bytes[8] & 0x3f) | 0x80;
  return g;
}

std::string SourceLabel(const Source& s) {
  return s.name.empty() ? std::string("root") : s.name;
}

// "0.25 s": how long a step of recovery took, for its report.
std::string Seconds(std::chrono::steady_clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", std::chrono::duration<double>(d).count());
  return buf;
}

uint64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// The shape of a log the daemon creates. A small log (-o log_size=) gets smaller containers, so
// that it still has enough of them for the ring to free space a container at a time.
log::LogOptions DaemonLogOptions(uint64_t log_size) {
  log::LogOptions lo;
  // An eighth of the log is kept for the records that end transactions (and for recovery): new
  // work gets ENOSPC first, so commits, rollbacks and the next mount always have room.
  lo.reserve_percent = 12;
  if (log_size != 0) {
    uint64_t container = std::clamp<uint64_t>(log_size / 16, 256 << 10, 4 << 20);
    container -= container % lo.block_size;
    lo.container_size = container;
    lo.max_containers = uint32_t(std::max<uint64_t>(log_size / container, 4));
  }
  return lo;
}

// KTMFS_FAULT_APPLY_PAUSE: lets a test look at the mount while an apply is under way.
fstx::MutationHook PauseApplyWhile(const std::string& file) {
  return [file](const std::string& what) -> Status {
    struct stat st;
    if (stat(file.c_str(), &st) != 0) return Status::Ok();
    DaemonLog(LogLevel::kWarning,
              "fault injection: apply paused before \"" + what + "\" while " + file + " exists");
    while (stat(file.c_str(), &st) == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    DaemonLog(LogLevel::kWarning, "fault injection: apply resumed");
    return Status::Ok();
  };
}

}  // namespace

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

Result<std::unique_ptr<TxService>> TxService::Start(const Options& options, const Layout& layout) {
  std::unique_ptr<TxService> s(new TxService());
  s->quota_ = std::make_unique<UserQuota>(options.user_caps);
  KTMFS_RETURN_IF_ERROR(s->Open(options, layout));
  s->opened_ = true;
  s->StartForkEvents();
  s->reaper_ = std::thread([p = s.get()] { p->Reap(); });
  return s;
}

void TxService::StartForkEvents() {
  auto connector = ProcConnector::Open();
  if (!connector.ok()) {
    // Said once: tree scope is weaker from now on (ktmfs-tx(7) says how).
    DaemonLog(LogLevel::kWarning, "no process events (" + connector.status().ToString() +
                                      "): tree-scoped transactions follow the current parents "
                                      "only, so a process reparented away from the bound one "
                                      "leaves them");
    return;
  }
  auto forks = std::make_unique<ForkTracker>(&proc_, connector->get());
  if (Status s = forks->StartThread(); !s.ok()) {
    DaemonLog(LogLevel::kWarning,
              s.ToString() + ": tree-scoped transactions follow the current parents only");
    return;
  }
  proc_events_ = std::move(*connector);
  forks_ = std::move(forks);
  bindings_.UseForkEvents(forks_.get());
}

Status TxService::Open(const Options& options, const Layout& layout) {
  const std::string& state = layout.state_dir();
  auto open_log = [&](const std::string& dir) -> Result<log::Log*> {
    log::UringStorageOptions so;
    so.direct_io = true;  // see log/io.h; measured with tests/bench/log_bench
    auto storage = log::OpenUringStorage(dir, so);
    if (!storage.ok()) return storage.status().Annotate("log " + dir);
    if (!options.fault_log_sync.empty()) {
      DaemonLog(LogLevel::kWarning, "fault injection armed for log " + dir + ": while " +
                                        options.fault_log_sync +
                                        " exists, the next durable log write fails with EIO "
                                        "after it is done");
      *storage =
          std::make_unique<log::SyncFaultStorage>(std::move(*storage), options.fault_log_sync);
    }
    auto lg = log::Log::Open(storage->get(), DaemonLogOptions(options.log_size), true);
    if (!lg.ok()) return lg.status().Annotate("log " + dir);
    storages_.push_back(std::move(*storage));
    logs_.push_back(std::move(*lg));
    return logs_.back().get();
  };
  auto main_log = open_log(state + "/log");
  if (!main_log.ok()) return main_log.status();
  tm::TmOptions tmo;
  tmo.timeout_thread = false;  // the reaper ends timed-out transactions itself (see End)
  // The TM's stream holds the log from its previous restart area: keep that a small part of it.
  const log::LogGeometry g = (*main_log)->geometry();
  tmo.restart_every_log_bytes =
      std::min<uint64_t>(tmo.restart_every_log_bytes, g.container_size * g.max_containers / 16);
  auto tm = tm::TransactionManager::Open(*main_log, tmo);
  if (!tm.ok()) return tm.status().Annotate("transaction manager");
  tm_ = std::move(*tm);
  const auto recovery_began = std::chrono::steady_clock::now();
  // Recovery errors name the log's directory: what ktmfs-log is pointed at.
  KTMFS_RETURN_IF_ERROR(
      tm_->Recover().Annotate("transaction manager recovery (log " + state + "/log)"));
  // Who began what recovery finds, for its report: the TM logged owner and description.
  std::map<Guid, tm::TransactionInfo> in_doubt;
  for (auto& t : tm_->List())
    if (t.recovered) in_doubt.emplace(t.id, std::move(t));
  const uint64_t mount_ns = RealtimeNs();
  // An ending recovery settled, remembered (txstat --recent) and logged once, whichever of
  // its resource managers settled it first.
  auto settled = [&](const Guid& tx, bool committed, const std::string& label, const char* what) {
    Ending e;
    e.id = tx;
    e.outcome = committed ? Ending::Outcome::kCommitted : Ending::Outcome::kRolledBack;
    if (!committed) e.reason = "it was unfinished when the last daemon stopped";
    e.recovered = true;
    e.end_time_ns = mount_ns;
    e.when = std::chrono::steady_clock::now();
    std::string who = "owner unknown";
    e.owner = static_cast<uid_t>(-1);  // KTMFS_UID_UNKNOWN until the TM's records say
    if (auto it = in_doubt.find(tx); it != in_doubt.end()) {
      e.owner = it->second.owner;
      e.name = it->second.description;
      who = "uid " + std::to_string(e.owner);
      if (!e.name.empty()) who += ", " + QuotedForLog(e.name);
    }
    std::lock_guard l(mu_);
    for (const auto& known : endings_)
      if (known.id == tx) return;
    DaemonLog(LogLevel::kNotice,
              "recovery of " + label + ": transaction " + tx.ToString() + " (" + who + ") " + what);
    RememberLocked(std::move(e));
  };
  // The restart area lists the transactions in doubt, so the log before it is no longer the
  // TM's: the RMs' recovery finds room even if the last session filled the log.
  KTMFS_RETURN_IF_ERROR(tm_->Checkpoint().Annotate("transaction manager restart area"));

  const auto& sources = layout.sources();
  struct stat state_st;
  if (stat(state.c_str(), &state_st) != 0)
    return Status::FromErrno(errno, "state directory " + state);
  for (size_t i = 0; i < sources.size(); i++) {
    const std::string label = SourceLabel(sources[i]);
    struct stat src_st;
    if (stat(sources[i].path.c_str(), &src_st) != 0)
      return Status::FromErrno(errno, "source " + sources[i].path);
    // With dedicated logs each source keeps its log and staging in its own .ktmfs; otherwise
    // both live in the state directory.
    const bool dedicated = options.log_mode == LogMode::kDedicated;
    const std::string own_state = dedicated ? sources[i].path + "/.ktmfs" : state;
    // Apply renames staged files into place: staging must be on the backing filesystem.
    if (!dedicated && src_st.st_dev != state_st.st_dev) {
      return Status::InvalidArgument("source " + sources[i].path + " is on another filesystem " +
                                     "than the state directory " + state +
                                     "; transactions need both on one (use -o state= or "
                                     "-o log=dedicated)");
    }
    log::Log* lg = *main_log;
    const std::string log_dir = dedicated ? own_state + "/log." + label : state + "/log";
    if (dedicated) {
      auto own = open_log(log_dir);
      if (!own.ok()) return own.status();
      lg = *own;
    }
    auto stream = lg->OpenStream("fs." + label);
    if (!stream.ok()) return stream.status().Annotate("resource manager " + label);
    fstx::FsRmOptions o;
    o.name = label;
    o.id = RmIdFor(label);
    o.backing_root = sources[i].path;
    o.staging_root = own_state + "/staging/" + label;
    o.tm = tm_.get();
    o.log = lg;
    o.stream = *stream;
    o.visibility = &visibility_;
    o.gate = &gate_;
    o.sync_in_background = true;
    const int source = static_cast<int>(i);
    o.on_end = [this, source](const Guid& tx, bool committed, const fstx::TxOverlay& overlay,
                              const std::vector<std::pair<std::string, std::string>>& replaced) {
      // Kept until End has let go of the transaction: invalidating the kernel's pages may wait
      // for reads in flight, and reads of its handles wait for End (see End).
      std::lock_guard l(mu_);
      auto entries = overlay.ChangedBackingEntries();
      entries.insert(entries.end(), replaced.begin(), replaced.end());
      ended_.push_back({tx, committed, source, overlay.TouchedObjects(), std::move(entries)});
      // Before the RM lets go of its locks: opens in between must not keep stale pages.
      for (const auto& o : ended_.back().objects)
        if (o.kind == fstx::ObjectId::Kind::kExisting) settling_[{o.dev, o.ino}]++;
    };
    o.replace_when = [this, source](const Guid& tx, const fstx::ObjectId& id) {
      return replace_when_ ? replace_when_(tx, source, id) : fstx::ReplaceWhen::kIfWhole;
    };
    o.report = [](bool error, const std::string& message) {
      DaemonLog(error ? LogLevel::kError : LogLevel::kNotice, message);
    };
    o.on_late_apply = [this, source](
                          const Guid& tx, const std::vector<fstx::ObjectId>& objects,
                          const std::vector<std::pair<std::string, std::string>>& entries) {
      // What readers cached while the apply was pending is stale now.
      if (on_ended_) on_ended_(EndedTx{tx, true, source, objects, entries});
    };
    KTMFS_RETURN_IF_ERROR(fstx::MakeDirs(o.staging_root));
    auto rm = std::make_unique<fstx::FsResourceManager>(std::move(o));
    KTMFS_RETURN_IF_ERROR(rm->Register().Annotate("resource manager " + label));
    const auto rm_began = std::chrono::steady_clock::now();
    KTMFS_RETURN_IF_ERROR(
        rm->Recover().Annotate("recovering resource manager " + label + " (log " + log_dir + ")"));
    const auto& r = rm->recovery_report();
    // Quiet when there was nothing to recover.
    for (const Guid& t : r.redone_txs)
      settled(t, true, label, "was committed: applied");
    for (const Guid& t : r.pending_txs)
      settled(t, true, label, "was committed: its apply failed again and stays pending");
    for (const Guid& t : r.rolled_back_txs)
      settled(t, false, label, "was unfinished: rolled back");
    if (r.redone + r.rolled_back + r.leftovers + r.pending > 0) {
      DaemonLog(LogLevel::kNotice,
                "recovery of " + label + " (" + sources[i].path + "): " + std::to_string(r.redone) +
                    " committed transaction(s) applied, " + std::to_string(r.rolled_back) +
                    " unfinished rolled back, " + std::to_string(r.leftovers) +
                    " leftover staging area(s) removed, " + std::to_string(r.pending) +
                    " committed transaction(s) still to apply, in " +
                    Seconds(std::chrono::steady_clock::now() - rm_began));
    }
    if (!options.fault_apply_pause.empty())
      rm->SetApplyHook(PauseApplyWhile(options.fault_apply_pause));
    rms_.push_back(std::move(rm));
  }
  // Transactions the TM recovered but no RM claimed (none of their RMs exists any more) are
  // rolled back now rather than listed forever.
  for (const auto& t : tm_->List()) {
    if (t.recovered && t.state == tm::TxState::kActive) (void)tm_->Rollback(t.id);
  }
  if (!in_doubt.empty()) {
    DaemonLog(LogLevel::kNotice, "recovery: " + std::to_string(in_doubt.size()) +
                                     " transaction(s) found unfinished, settled in " +
                                     Seconds(std::chrono::steady_clock::now() - recovery_began));
  }
  // Recovery ended the transactions in doubt: the next restart area forgets them.
  return tm_->Checkpoint().Annotate("transaction manager restart area");
}

TxService::~TxService() {
  {
    std::lock_guard l(reaper_mu_);
    stopping_ = true;
  }
  reaper_cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  std::vector<std::shared_ptr<TxContext>> live;
  {
    std::lock_guard l(mu_);
    for (auto& [id, tx] : txs_)
      live.push_back(tx);
  }
  for (auto& tx : live) {
    Status s = End(tx, false, "the filesystem is unmounted");
    DaemonLog(LogLevel::kNotice, "transaction " + tx->id.ToString() +
                                     " rolled back: the filesystem is unmounted" +
                                     (s.ok() ? "" : ": " + s.message()));
  }
  rms_.clear();  // each moves its stream's base to its end
  if (tm_ && opened_) {
    // The next mount then reads nothing of the TM's stream before this point. (Not after a
    // failed start: the TM may not have recovered, and the log must stay as it was found.)
    Status s = tm_->Checkpoint();
    if (!s.ok()) DaemonLog(LogLevel::kError, "unmounting: " + s.message());
  }
  tm_.reset();
  // A clean unmount leaves the log closed: what was appended but never waited for (the
  // transaction manager's END records) made durable and the base file current, so the next
  // mount finds nothing to hand out again.
  for (auto& lg : logs_) {
    Status s = lg->Close();
    if (!s.ok()) DaemonLog(LogLevel::kError, "closing the log: " + s.message());
  }
  logs_.clear();
  storages_.clear();
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
  Status s = rm(source).LogOp(tx.id, op);
  if (!s.ok()) Refund(tx, prepaid + more);
  return s;
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
  std::lock_guard l(mu_);
  return touched_.contains({dev, ino});
}

bool TxService::IsUnsettled(int source, dev_t dev, ino_t ino) {
  if (!rms_[static_cast<size_t>(source)]->locks().empty() &&
      rms_[static_cast<size_t>(source)]->locks().Holder(fstx::ObjectKey{dev, ino}))
    return true;
  std::lock_guard l(mu_);
  return settling_.contains({dev, ino});
}

void TxService::MarkTouched(const Guid& tx, dev_t dev, ino_t ino) {
  std::lock_guard l(mu_);
  auto& v = touched_[{dev, ino}];
  for (const Guid& g : v)
    if (g == tx) return;
  v.push_back(tx);
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
  Status s = bindings_.Bind(*id, scope, target, Binder{caller.uid, caller.gid, caller.uid == 0});
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
    const std::string ending = EndingOf(which);
    *err = Status::NotFound(ending.empty() ? "no live transaction " + which.ToString()
                                           : "the " + ending);
    return nullptr;
  }
  if (caller.uid != 0 && caller.uid != tx->owner) {
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

namespace {

std::string Age(std::chrono::steady_clock::duration d) {
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  return s < 120 ? std::to_string(s) + " s ago" : std::to_string(s / 60) + " min ago";
}

}  // namespace

namespace {

std::string Sentence(const TxService::Ending& e) {
  using Outcome = TxService::Ending::Outcome;
  std::string how;
  switch (e.outcome) {
    case Outcome::kCommitted:
      how = e.recovered ? "was committed before the last daemon stopped (recovered at mount)"
                        : "was committed";
      break;
    case Outcome::kRolledBack:
      how = e.reason.empty() ? "was rolled back by request" : "was rolled back: " + e.reason;
      break;
    case Outcome::kCommitFailed:
      how = "failed to commit: " + e.reason;
      break;
  }
  return "transaction " + e.id.ToString() + " " + how + " (" +
         Age(std::chrono::steady_clock::now() - e.when) + ")";
}

}  // namespace

std::string TxService::EndingOf(const Guid& id) const {
  std::lock_guard l(mu_);
  for (auto it = endings_.rbegin(); it != endings_.rend(); ++it)
    if (it->id == id) return Sentence(*it);
  return {};
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
  std::lock_guard l(mu_);
  for (auto it = endings_.rbegin(); it != endings_.rend(); ++it) {
    if (uid != 0 && uid != it->owner) continue;
    if (it->pid == 0 || std::find(chain.begin(), chain.end(), it->pid) == chain.end()) continue;
    return Sentence(*it);
  }
  return {};
}

void TxService::RememberLocked(Ending e) {
  endings_.push_back(std::move(e));
  if (endings_.size() > kRecentEndings) endings_.pop_front();
}

std::vector<TxService::Ending> TxService::Recent() const {
  std::vector<Ending> out;
  {
    std::lock_guard l(mu_);
    out.assign(endings_.rbegin(), endings_.rend());
  }
  std::set<Guid> pending;
  for (const auto& rm : rms_)
    for (const auto& p : rm->PendingApplies())
      pending.insert(p.tx);
  for (auto& e : out)
    e.apply_pending = e.outcome == Ending::Outcome::kCommitted && pending.count(e.id) != 0;
  return out;
}

Status TxService::End(const std::shared_ptr<TxContext>& tx, bool commit, const char* why) {
  if (before_end_) before_end_(tx->id);
  std::unique_lock live(tx->live);  // waits for the operations in flight inside it
  if (tx->ended) return Status::NotFound("transaction " + tx->id.ToString() + " has ended");
  tx->ended = true;
  bindings_.Unbind(tx->id);
  Status s = commit ? tm_->Commit(tx->id) : tm_->Rollback(tx->id);
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
    RememberLocked(std::move(e));
    txs_.erase(tx->id);
    live_count_.store(txs_.size(), std::memory_order_release);
    quota_->GiveTransaction(tx->owner);
    quota_->GiveMemory(tx->owner, tx->memory_charged.exchange(0));
    quota_->GiveDescriptors(tx->owner, tx->descriptors_charged.exchange(0));
    for (auto it = touched_.begin(); it != touched_.end();) {
      std::erase(it->second, tx->id);
      it = it->second.empty() ? touched_.erase(it) : std::next(it);
    }
    for (auto it = ended_.begin(); it != ended_.end();) {
      if (it->id == tx->id) {
        ended.push_back(std::move(*it));
        it = ended_.erase(it);
      } else {
        ++it;
      }
    }
  }
  live.unlock();
  if (on_ended_) {
    for (const auto& e : ended)
      on_ended_(e);
  }
  std::lock_guard l(mu_);
  for (const auto& e : ended) {
    for (const auto& o : e.objects) {
      if (o.kind != fstx::ObjectId::Kind::kExisting) continue;
      auto it = settling_.find({o.dev, o.ino});
      if (it != settling_.end() && --it->second == 0) settling_.erase(it);
    }
  }
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
        if (auto q = tm_->Query(p.tx); q.ok()) {
          i.owner = q->owner;
          i.name = q->description;
          const uint64_t now_ns = RealtimeNs();
          const uint64_t age_ns = static_cast<uint64_t>(q->age.count()) * 1000000ull;
          i.begin_time_ns = now_ns > age_ns ? now_ns - age_ns : 0;
        }
      }
      i.rm_count++;
      i.objects_locked += static_cast<uint32_t>(rm->locks().CountHeldBy(p.tx));
      i.bytes_logged += rm->BytesLogged(p.tx);
    }
  }
  return out;
}

}  // namespace ktmfs::fs
