#include "fs/control/task_bindings.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <string>

#include "fs/control/fork_events.h"
#include "fs/mount/daemon_log.h"

namespace ktmfs::fs {
namespace {

// Deeper process trees than this are not walked: the request is then outside any transaction.
constexpr int kMaxAncestors = 64;
constexpr size_t kMaxCacheEntries = 4096;

}  // namespace

const Binding* TaskBindings::FindBinding(Scope scope, pid_t pid, uint64_t start_time) const {
  for (const Binding& b : bindings_)
    if (b.scope == scope && b.pid == pid && b.start_time == start_time) return &b;
  return nullptr;
}

std::optional<Guid> TaskBindings::LookupLocked(const TaskInfo& task) {
  mu_.AssertHeld();
  if (const Binding* b = FindBinding(Scope::kThread, task.tid, task.start_time)) return b->tx;

  // The process and its ancestors are identified by their own start times, read on the way up.
  TaskInfo proc = task;
  if (task.tgid != task.tid) {
    auto leader = Identify(task.tgid);
    if (!leader.ok()) return std::nullopt;
    proc = *leader;
  }
  if (const Binding* b = FindBinding(Scope::kProcess, proc.tgid, proc.start_time)) return b->tx;

  // Trees are walked through parents, which change when one exits: only then is the fresh
  // parent needed, so without tree bindings nothing more is read.
  if (std::none_of(bindings_.begin(), bindings_.end(),
                   [](const Binding& b) { return b.scope == Scope::kTree; })) {
    return std::nullopt;
  }
  // Forked into a tree: inside, wherever it has been reparented since.
  if (forks_ != nullptr) {
    if (auto tx = forks_->Lookup(proc.tgid, proc.start_time)) return tx;
  }
  auto fresh = Current(proc.tgid);
  if (!fresh.ok() || fresh->start_time != proc.start_time) return std::nullopt;
  proc = *fresh;

  // `child` is the ancestor just below `proc` on the way up: it (and so everything below it)
  // must have started after the binding for `proc`'s tree to take it in.
  std::optional<TaskInfo> child;
  for (int depth = 0; depth < kMaxAncestors; ++depth) {
    if (const Binding* b = FindBinding(Scope::kTree, proc.tgid, proc.start_time)) {
      if (!child) return b->tx;
      if (child->start_time < b->bound_at) return std::nullopt;
      for (const auto& [pid, start] : b->earlier_children)
        if (pid == child->tgid && start == child->start_time) return std::nullopt;
      return b->tx;
    }
    if (proc.ppid <= 1) break;
    auto parent = Current(proc.ppid);
    if (!parent.ok()) break;
    child = proc;
    proc = *parent;
  }
  return std::nullopt;
}

Result<TaskInfo> TaskBindings::ReadAfresh(pid_t pid) {
  mu_.AssertHeld();
  auto task = proc_->Read(pid);
  if (!task.ok()) return task.status();
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_[pid] = CacheEntry{*task, kUnknown, std::nullopt};
  return task;
}

Result<TaskInfo> TaskBindings::Identify(pid_t pid) {
  mu_.AssertHeld();
  auto it = cache_.find(pid);
  if (it != cache_.end() && proc_->SameTask(pid, it->second.info.start_time))
    return it->second.info;
  return ReadAfresh(pid);
}

Result<TaskInfo> TaskBindings::Current(pid_t pid) {
  mu_.AssertHeld();
  auto stat = proc_->ReadStat(pid);
  if (!stat.ok()) return stat.status();
  auto it = cache_.find(pid);
  if (it != cache_.end() && it->second.info.start_time == stat->start_time) {
    // The same task: what only /proc/PID/stat says may have changed (a new parent when the old
    // one exits, its state), the rest is its own for life.
    it->second.info.ppid = stat->ppid;
    it->second.info.state = stat->state;
    return it->second.info;
  }
  return ReadAfresh(pid);
}

std::optional<Guid> TaskBindings::Lookup(pid_t tid) {
  if (tid <= 0) return std::nullopt;
  std::lock_guard lock(mu_);
  if (bindings_.empty()) return std::nullopt;  // the common case costs no /proc read
  // The answer for this very task since the last bind or unbind: only its identity to check.
  if (auto it = cache_.find(tid); it != cache_.end() && it->second.generation == generation_ &&
                                  proc_->SameTask(tid, it->second.info.start_time)) {
    return it->second.tx;
  }
  auto task = Identify(tid);
  if (!task.ok()) return std::nullopt;
  auto it = cache_.find(tid);
  if (it != cache_.end() && it->second.generation == generation_) return it->second.tx;
  // Worked out afresh after every bind and unbind (the walk may refill the cache).
  std::optional<Guid> tx = LookupLocked(*task);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_[tid] = CacheEntry{*task, generation_, tx};
  return tx;
}

Status MayBind(pid_t pid, const TaskCredentials& target, const Binder& binder) {
  if (binder.privileged) return Status::Ok();
  const std::string who = "process " + std::to_string(pid);
  const std::string why = ": only a process its binder could ptrace can be bound";
  if (target.uid[0] != binder.uid)
    return Status::Error(EPERM, who + " belongs to uid " + std::to_string(target.uid[0]) +
                                    ", not to uid " + std::to_string(binder.uid));
  for (int i = 1; i < 3; ++i) {
    if (target.uid[i] != binder.uid)
      return Status::Error(EPERM, who + " runs with " + (i == 1 ? "effective" : "saved") + " uid " +
                                      std::to_string(target.uid[i]) + " (set-id?)" + why);
  }
  for (int i = 0; i < 3; ++i) {
    if (target.gid[i] != binder.gid)
      return Status::Error(EPERM, who + " runs with " +
                                      (i == 0   ? "real"
                                       : i == 1 ? "effective"
                                                : "saved") +
                                      " gid " + std::to_string(target.gid[i]) + ", not gid " +
                                      std::to_string(binder.gid) + why);
  }
  if (!target.dumpable)
    return Status::Error(EPERM,
                         who + " is not dumpable (it ran a set-id program or changed ids)" + why);
  return Status::Ok();
}

Status TaskBindings::Bind(const Guid& tx, Scope scope, pid_t pid, const Binder& binder) {
  // A process that begins one transaction after another is known from the last: only its
  // stat is read again (for its state), not its status.
  auto current = [&](pid_t p) {
    std::lock_guard lock(mu_);
    return Current(p);
  };
  auto task = current(pid);
  if (!task.ok() || task->exited())
    return Status::Error(ESRCH, "no such process " + std::to_string(pid));
  // The ids of the task named, and for a process of its leader too: binding a process binds
  // every thread of it.
  auto may_bind = [&](pid_t tid) {
    if (binder.privileged) return Status::Ok();
    auto creds = proc_->Credentials(tid);
    if (!creds.ok()) return Status::Error(ESRCH, "no such process " + std::to_string(tid));
    return MayBind(tid, *creds, binder);
  };
  if (Status s = may_bind(pid); !s.ok()) return s;
  Binding binding{tx, scope, task->tid, task->start_time, task->uid, proc_->NowTicks(), {}};
  if (scope != Scope::kThread && task->tgid != task->tid) {
    auto leader = current(task->tgid);
    if (!leader.ok()) return Status::Error(ESRCH, "no such process " + std::to_string(pid));
    if (Status s = may_bind(task->tgid); !s.ok()) return s;
    binding.pid = leader->tid;
    binding.start_time = leader->start_time;
  }

  auto read_children = [&] {
    for (pid_t c : proc_->Children(binding.pid)) {
      auto info = proc_->Read(c);
      if (info.ok()) binding.earlier_children.emplace_back(info->tgid, info->start_time);
    }
  };
  if (scope == Scope::kTree && forks_ == nullptr) read_children();

  std::lock_guard lock(mu_);
  if (auto current = LookupLocked(*task))
    return Status::Busy("process " + std::to_string(pid) + " is already in transaction " +
                        current->ToString());
  for (const Binding& b : bindings_)
    if (b.tx == tx) return Status::Busy("transaction " + tx.ToString() + " is already bound");
  if (scope == Scope::kTree && forks_ != nullptr) {
    // The record reads the children itself, between the forks it saw before and those it
    // records, so that it and the walk leave out the same ones.
    Status s = forks_->AddTree(tx, binding.pid, binding.start_time, binding.bound_at,
                               &binding.earlier_children);
    if (!s.ok()) {
      DaemonLog(LogLevel::kWarning, "transaction " + tx.ToString() + ": " + s.ToString() +
                                        "; its tree follows the current parents only, so a "
                                        "process reparented away from it leaves it");
      read_children();
    }
  }
  bindings_.push_back(binding);
  ++generation_;
  return Status::Ok();
}

void TaskBindings::Unbind(const Guid& tx) {
  std::lock_guard lock(mu_);
  auto it = std::remove_if(bindings_.begin(), bindings_.end(),
                           [&](const Binding& b) { return b.tx == tx; });
  if (it == bindings_.end()) return;
  const bool tree =
      std::any_of(it, bindings_.end(), [](const Binding& b) { return b.scope == Scope::kTree; });
  bindings_.erase(it, bindings_.end());
  ++generation_;
  if (tree && forks_ != nullptr) forks_->RemoveTree(tx);
}

std::vector<Guid> TaskBindings::FindOrphans() {
  std::vector<Binding> snapshot;
  {
    std::lock_guard lock(mu_);
    snapshot = bindings_;
  }
  std::vector<Guid> orphans;
  for (const Binding& b : snapshot) {
    auto task = proc_->Read(b.pid);
    // Only a task that is not there is gone: a read the daemon could not make (EMFILE with its
    // descriptors used up, ENOMEM) says nothing of it, and is tried again next round. Before,
    // such a failure rolled back every bound transaction.
    if (!task.ok()) {
      if (task.status().code() == ENOENT || task.status().code() == ESRCH) orphans.push_back(b.tx);
      continue;
    }
    if (task->start_time != b.start_time || task->exited()) orphans.push_back(b.tx);
  }
  return orphans;
}

std::optional<Binding> TaskBindings::Get(const Guid& tx) const {
  std::lock_guard lock(mu_);
  for (const Binding& b : bindings_)
    if (b.tx == tx) return b;
  return std::nullopt;
}

bool TaskBindings::empty() const {
  std::lock_guard lock(mu_);
  return bindings_.empty();
}

}  // namespace ktmfs::fs
